"""Rendering /metrics, scraped over HTTP: ours against prometheus_client, same series, same run.

Ours is `Telemetry.serve()` (the embedded server), theirs `start_http_server`,
each holding the same counters or histograms; the figure is the time of one
scrape (GET /metrics over loopback, the whole body read) per exposed sample line
(what Prometheus counts as a series: a counter child is one line, a histogram
child len(buckets) + 3), best of 3, in text 0.0.4 and, for ours, OpenMetrics too.

    python bench/bench_render.py
"""

from __future__ import annotations

import time
import urllib.request

from timing import row

from agent_exporter import Telemetry, catalog, events
from agent_exporter.config import Config, MetricsConfig, TracingConfig


def scrape_us(url: str, accept: str = "text/plain", rounds: int = 3) -> float:
    """Best-of-`rounds` time of one scrape, in µs."""
    best = float("inf")
    for _ in range(rounds):
        request = urllib.request.Request(url, headers={"Accept": accept})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
        best = min(best, time.perf_counter() - started)
    return best * 1e6


def serve_both(fill_ours, fill_theirs, n: int):
    from prometheus_client import CollectorRegistry, start_http_server
    tel = Telemetry(Config(metrics=MetricsConfig(max_series=n + 1), tracing=TracingConfig(enabled=False)))
    tel.store.apply_batch(fill_ours(n))
    registry = CollectorRegistry()
    fill_theirs(registry, n)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    return tel, tel.serve("127.0.0.1:0"), server


def counters(registry, n):
    from prometheus_client import Counter
    counter = Counter(catalog.RETRIES.name, "h", ["agent", "error_type"], registry=registry)
    for i in range(n):
        counter.labels(f"agent-{i}", "Timeout").inc()


def histograms(registry, n):
    from prometheus_client import Histogram
    histogram = Histogram(catalog.TOOL_CALL_DURATION.name, "h", ["tool"], registry=registry,
                          buckets=catalog.TOOL_BUCKETS)
    for i in range(n):
        histogram.labels(f"tool-{i}").observe(0.3)


CASES = (
    ("counters", lambda n: (events.Retry(agent=f"agent-{i}", attempt=1, error_type="Timeout") for i in range(n)),
     counters, 1),
    ("histograms", lambda n: (events.ToolCall(tool=f"tool-{i}", status="success", duration_seconds=0.3)
                              for i in range(n)), histograms, len(catalog.TOOL_BUCKETS) + 3),
)


def main() -> None:
    print("scrape /metrics over HTTP, µs per sample line, best of 3; ratio vs prometheus_client")
    for label, fill_ours, fill_theirs, lines_per_series in CASES:
        for n in (10_000, 100_000):
            tel, ours, theirs = serve_both(fill_ours, fill_theirs, n)
            lines = n * lines_per_series
            try:
                baseline = scrape_us(f"http://127.0.0.1:{theirs.server_port}/metrics") / lines
                text = scrape_us(ours.url + "/metrics") / lines
                openmetrics = scrape_us(ours.url + "/metrics", "application/openmetrics-text") / lines
            finally:
                ours.stop()
                theirs.shutdown()
                theirs.server_close()
            print(f" {n:,} {label} ({lines:,} sample lines)")
            print(row("prometheus_client start_http_server", baseline))
            print(row("agent-exporter text 0.0.4", text, baseline))
            print(row("agent-exporter OpenMetrics", openmetrics, baseline))


if __name__ == "__main__":
    main()
