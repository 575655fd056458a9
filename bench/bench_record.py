"""Recording one agent execution that touches 5 series (executions, duration, 2x tokens, cost).

Ours (the store, and the in-process Telemetry API) against prometheus_client with
.labels() on every call, prometheus_client with cached children, and the
OpenTelemetry SDK metrics API, in the same run.

    python bench/bench_record.py
"""

from __future__ import annotations

from timing import per_call_us, row

from agent_exporter import events
from agent_exporter.config import MetricsConfig, ModelPrice
from agent_exporter.store import SeriesStore

CALLS = 100_000


def prometheus_client_setup():
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from agent_exporter import catalog
    registry = CollectorRegistry()
    executions = Counter(catalog.AGENT_EXECUTIONS.name, "h", ["agent", "status"], registry=registry)
    duration = Histogram(catalog.AGENT_EXECUTION_DURATION.name, "h", ["agent"], registry=registry,
                         buckets=catalog.EXECUTION_BUCKETS)
    tokens = Counter(catalog.LLM_TOKENS.name, "h", ["agent", "model", "type"], registry=registry)
    cost = Counter(catalog.LLM_COST.name, "h", ["agent", "model"], registry=registry)
    return executions, duration, tokens, cost


def main() -> None:
    store = SeriesStore(MetricsConfig(prices={"gpt-4o": ModelPrice(2.5, 10.0)}))
    event = events.AgentExecution(agent="planner", status="success", duration_seconds=1.2, model="gpt-4o",
                                  input_tokens=1200, output_tokens=300, cost_usd=0.0066)

    executions, duration, tokens, cost = prometheus_client_setup()

    def with_labels():
        executions.labels("planner", "success").inc()
        duration.labels("planner").observe(1.2)
        tokens.labels("planner", "gpt-4o", "input").inc(1200)
        tokens.labels("planner", "gpt-4o", "output").inc(300)
        cost.labels("planner", "gpt-4o").inc(0.0066)

    children = (executions.labels("planner", "success"), duration.labels("planner"),
                tokens.labels("planner", "gpt-4o", "input"), tokens.labels("planner", "gpt-4o", "output"),
                cost.labels("planner", "gpt-4o"))

    def cached_children():
        e, d, ti, to, c = children
        e.inc()
        d.observe(1.2)
        ti.inc(1200)
        to.inc(300)
        c.inc(0.0066)

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    o_exec = meter.create_counter("executions")
    o_dur = meter.create_histogram("duration", unit="s")
    o_tok = meter.create_counter("tokens")
    o_cost = meter.create_counter("cost")

    def otel_sdk():
        o_exec.add(1, {"agent": "planner", "status": "success"})
        o_dur.record(1.2, {"agent": "planner"})
        o_tok.add(1200, {"agent": "planner", "model": "gpt-4o", "type": "input"})
        o_tok.add(300, {"agent": "planner", "model": "gpt-4o", "type": "output"})
        o_cost.add(0.0066, {"agent": "planner", "model": "gpt-4o"})

    results = {
        "prometheus_client .labels()": per_call_us(with_labels, CALLS),
        "prometheus_client cached children": per_call_us(cached_children, CALLS),
        "OpenTelemetry SDK metrics API": per_call_us(otel_sdk, CALLS // 4),
        "agent-exporter store.apply(event)": per_call_us(lambda: store.apply(event), CALLS),
    }
    baseline = results["prometheus_client .labels()"]
    print(f"record one agent execution (5 series), {CALLS} calls, best of 5; ratio vs prometheus_client .labels()")
    for name, us in results.items():
        print(row(name, us, baseline))
    try:
        from agent_exporter import Telemetry
    except ImportError:
        return
    tel = Telemetry()

    def api_record():
        tel.record({"type": "agent_execution", "agent": "planner", "status": "success", "duration_seconds": 1.2,
                    "model": "gpt-4o", "input_tokens": 1200, "output_tokens": 300})

    print("  (in-process API, validation included:)")
    print(row("Telemetry.record(dict)", per_call_us(api_record, CALLS // 4), baseline))


if __name__ == "__main__":
    main()
