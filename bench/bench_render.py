"""Rendering /metrics: ours against prometheus_client's generate_latest, same series, same run.

"Per series" is per exposed sample line (what Prometheus counts as a series): a
counter child is one line, a histogram child is len(buckets) + 3 lines.

    python bench/bench_render.py
"""

from __future__ import annotations

from timing import per_call_us, row

from agent_exporter import catalog, events
from agent_exporter.config import MetricsConfig
from agent_exporter.store import SeriesStore


def counters(n: int):
    from prometheus_client import CollectorRegistry, Counter, generate_latest
    store = SeriesStore(MetricsConfig(max_series=n + 1))
    store.apply_batch([events.Retry(agent=f"agent-{i}", attempt=1, error_type="Timeout") for i in range(n)])
    registry = CollectorRegistry()
    counter = Counter(catalog.RETRIES.name, "h", ["agent", "error_type"], registry=registry)
    for i in range(n):
        counter.labels(f"agent-{i}", "Timeout").inc()
    return store, lambda: generate_latest(registry), n


def histograms(n: int):
    from prometheus_client import CollectorRegistry, Histogram, generate_latest
    store = SeriesStore(MetricsConfig(max_series=n + 1))
    store.apply_batch([events.ToolCall(tool=f"tool-{i}", status="success", duration_seconds=0.3) for i in range(n)])
    registry = CollectorRegistry()
    histogram = Histogram(catalog.TOOL_CALL_DURATION.name, "h", ["tool"], registry=registry,
                          buckets=catalog.TOOL_BUCKETS)
    for i in range(n):
        histogram.labels(f"tool-{i}").observe(0.3)
    lines = n * (len(catalog.TOOL_BUCKETS) + 3)
    return store, lambda: generate_latest(registry), lines


def main() -> None:
    print("render /metrics, µs per sample line, best of 3; ratio vs prometheus_client generate_latest")
    for label, build, n in (("counters", counters, 10_000), ("counters", counters, 100_000),
                            ("histograms", histograms, 10_000), ("histograms", histograms, 100_000)):
        store, generate_latest, lines = build(n)
        store_lines = store.render().count(b"\n")
        theirs = per_call_us(generate_latest, 1, rounds=3) / lines
        ours = per_call_us(store.render, 1, rounds=3) / lines
        ours_om = per_call_us(lambda: store.render(openmetrics=True), 1, rounds=3) / lines
        print(f" {n} {label} ({lines} sample lines; ours renders {store_lines} lines incl. self-metrics)")
        print(row("prometheus_client generate_latest", theirs))
        print(row("agent-exporter text 0.0.4", ours, theirs))
        print(row("agent-exporter OpenMetrics", ours_om, theirs))


if __name__ == "__main__":
    main()
