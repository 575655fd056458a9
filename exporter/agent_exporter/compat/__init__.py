"""Drop-in shims for the legacy observability API (the old `observability` package).

    from agent_exporter.compat.tracer import get_tracer
    from agent_exporter.compat.metrics_collector import get_metrics_collector

The legacy API is made of process-wide singletons, so the shims share one
`Telemetry`: the package's only global, created on first use from the default
config (`Config()`: metrics only, no span export).  An application that wants
its own config, exporters or /metrics server hands its Telemetry to the shims
before first use:

    tel = Telemetry.from_config("observability.yaml")
    agent_exporter.compat.set_default_telemetry(tel)
"""

from __future__ import annotations

import threading

from ..telemetry import Telemetry

_lock = threading.Lock()
_default: Telemetry | None = None


def default_telemetry() -> Telemetry:
    """The Telemetry the legacy singletons record into (created lazily)."""
    global _default
    with _lock:
        if _default is None:
            _default = Telemetry()
        return _default


def set_default_telemetry(telemetry: Telemetry) -> None:
    """Make the legacy singletons record into `telemetry` (call before their first use)."""
    global _default
    with _lock:
        _default = telemetry


__all__ = ["default_telemetry", "set_default_telemetry"]
