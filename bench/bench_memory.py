"""Memory per 100k series: ours against prometheus_client, each in a fresh process.

Each child imports its library, notes its RSS, creates 100k counter series
(labels agent, error_type), then renders one scrape.  "steady" is the RSS growth
after creating the series; "peak" includes the scrape (whose output alone is
~7 MB for ours, ~17 MB for prometheus_client, which also writes `_created`).

    python bench/bench_memory.py
"""

from __future__ import annotations

import subprocess
import sys

N = 100_000

CHILD = r"""
import resource, sys

def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

which, n = sys.argv[1], int(sys.argv[2])
if which == "ours":
    from agent_exporter import events
    from agent_exporter.config import MetricsConfig
    from agent_exporter.store import SeriesStore
    store = SeriesStore(MetricsConfig(max_series=n + 1))
    before = rss_mb()
    store.apply_batch(events.Retry(agent=f"agent-{i:06d}", attempt=1, error_type="Timeout") for i in range(n))
    steady = rss_mb() - before
    store.render()
else:
    from prometheus_client import CollectorRegistry, Counter, generate_latest
    registry = CollectorRegistry()
    retries = Counter("orchestrator_retries_total", "h", ["agent", "error_type"], registry=registry)
    before = rss_mb()
    for i in range(n):
        retries.labels(f"agent-{i:06d}", "Timeout").inc()
    steady = rss_mb() - before
    generate_latest(registry)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
print(steady, peak)
"""


def measure(which: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, which, str(N)], capture_output=True, text=True,
                         check=True, timeout=600)
    steady, peak = map(float, out.stdout.split())
    return steady, peak


def main() -> None:
    theirs = measure("prometheus_client")
    ours = measure("ours")
    print(f"memory for {N} counter series, RSS growth in MB (steady after creation; peak incl. one scrape)")
    print(f"  {'':<28} {'steady':>8} {'peak':>8}")
    print(f"  {'prometheus_client':<28} {theirs[0]:8.1f} {theirs[1]:8.1f}")
    print(f"  {'agent-exporter':<28} {ours[0]:8.1f} {ours[1]:8.1f}   "
          f"{theirs[0] / ours[0]:.1f}x / {theirs[1] / ours[1]:.1f}x less")


if __name__ == "__main__":
    main()
