"""The legacy `observability.metrics_collector` API, feeding the Prometheus series.

`record_agent_execution(...)` still keeps the in-memory `metrics` dict, and
`get_summary()` / `save_metrics()` answer exactly as before; every record also
goes to the Telemetry in the legacy record form, so it lands in the same series
as the same record sent to `/v1/events` or replayed.  Like the legacy collector
it makes no span: agent spans come from the tracer shim.
That form maps `tokens_used` to `orchestrator_llm_tokens_total{type="unsplit"}`
with model "unknown", and a record with neither tokens nor cost counts as
unknown usage, never as a free execution (see events.py).

`save_metrics()` writes the legacy JSON (`timestamp`, `summary`,
`detailed_metrics`) plus `agent_executions`, the records themselves, so that
`agent-exporter replay` can send the file to an exporter without loss.
"""

from __future__ import annotations

import json
import statistics
import threading
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from opentelemetry import trace

from .. import events
from ..telemetry import Telemetry
from ..tracing import ids_of
from . import default_telemetry

DEFAULT_STORAGE_DIR = ".claude/orchestrator/metrics"


class MetricsCollector:
    """Collects and aggregates orchestrator metrics (legacy API)."""

    def __init__(self, storage_dir: str = DEFAULT_STORAGE_DIR, *, telemetry: Telemetry | None = None):
        # Created by save_metrics, not here: collecting must not litter the working directory.
        self.storage_dir = Path(storage_dir)
        self.telemetry = telemetry or default_telemetry()
        self._lock = threading.Lock()
        self.metrics: dict[str, Any] = {
            "agent_executions": [],
            "latencies": defaultdict(list),
            "token_usage": defaultdict(int),
            "costs": defaultdict(float),
            "success_counts": defaultdict(int),
            "failure_counts": defaultdict(int),
        }

    def record_agent_execution(self, agent_name: str, duration_ms: float, success: bool,
                               tokens_used: int = 0, cost: float = 0.0) -> None:
        """Record an agent execution; invalid values raise ValueError and record nothing."""
        record = {
            "timestamp": datetime.now().isoformat(),
            "agent_name": agent_name,
            "duration_ms": duration_ms,
            # The legacy collector tested `if success:`, so callers passed 1 and 0 (a database row's
            # column) too; the record keeps a bool, as `agent-exporter replay` reads saved files.
            # Anything else ("yes", None) is a caller's bug, refused.
            "success": bool(success) if type(success) is int and success in (0, 1) else success,
            "tokens_used": tokens_used,
            "cost": cost,
        }
        event = events.decode(record)      # validate before touching either side
        # Metrics only, as the legacy collector: the run's span is the tracer shim's
        # (start_agent_execution), and one made here would show every run twice.
        # The caller's current span still becomes the observation's exemplar.
        trace_id, span_id = ids_of(trace.get_current_span())
        if trace_id is not None:
            event = msgspec.structs.replace(event, trace_id=trace_id, span_id=span_id)
        self.telemetry.record_batch([event], spans=False)
        with self._lock:
            m = self.metrics
            m["agent_executions"].append(record)
            m["latencies"][agent_name].append(duration_ms)
            m["token_usage"][agent_name] += tokens_used
            m["costs"][agent_name] += cost
            if success:
                m["success_counts"][agent_name] += 1
            else:
                m["failure_counts"][agent_name] += 1

    def get_summary(self) -> dict[str, Any]:
        return _summary(*self._snapshot())

    def save_metrics(self) -> Path:
        """Write metrics_<YYYYmmdd_HHMMSS>.json under storage_dir; returns its path."""
        now = datetime.now()
        executions, detailed = self._snapshot()     # one instant: the summary agrees with the rest
        document = {
            "timestamp": now.isoformat(),
            "summary": _summary(executions, detailed),
            "detailed_metrics": detailed,
            "agent_executions": executions,
        }
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        path = self.storage_dir / f"metrics_{now.strftime('%Y%m%d_%H%M%S')}.json"
        path.write_text(json.dumps(document, indent=2))
        return path

    def _snapshot(self) -> tuple[list[dict], dict[str, dict]]:
        """Copies of the records and of the legacy file's detailed_metrics, taken under the lock."""
        with self._lock:
            m = self.metrics
            return list(m["agent_executions"]), {
                "latencies": {k: list(v) for k, v in m["latencies"].items()},
                "token_usage": dict(m["token_usage"]),
                "costs": dict(m["costs"]),
                "success_counts": dict(m["success_counts"]),
                "failure_counts": dict(m["failure_counts"]),
            }


def _summary(executions: list[dict], detailed: dict[str, dict]) -> dict[str, Any]:
    """The legacy get_summary() of these records and their detailed_metrics."""
    if not executions:
        return {"message": "No metrics collected yet"}
    return {
        "total_executions": len(executions),
        "success_rate": sum(detailed["success_counts"].values()) / len(executions),
        "total_cost": sum(detailed["costs"].values()),
        "total_tokens": sum(detailed["token_usage"].values()),
        "average_latency_ms": statistics.mean(e["duration_ms"] for e in executions),
        "agents_used": len({e["agent_name"] for e in executions}),
    }


_lock = threading.Lock()
_collector_instance: MetricsCollector | None = None


def get_metrics_collector() -> MetricsCollector:
    """The singleton collector, recording into compat.default_telemetry()."""
    global _collector_instance
    with _lock:
        if _collector_instance is None:
            _collector_instance = MetricsCollector()
        return _collector_instance


__all__ = ["MetricsCollector", "get_metrics_collector"]
