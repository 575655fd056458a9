"""Memory per 100k series, through a real scrape: ours against prometheus_client, each in a fresh process.

Each child imports its library and starts serving /metrics over HTTP on
loopback (ours with `Telemetry.serve()`, the embedded server as an orchestrator
runs it; prometheus_client with its `start_http_server`), notes its RSS, then
creates 100k counter series (labels agent, error_type).  The parent reads the child's
RSS from /proc ("steady": the growth after creating the series), resets the
child's peak (/proc/PID/clear_refs), scrapes /metrics once, and reads the peak
again ("peak": the high-water mark during the scrape, over the same start).

    python bench/bench_memory.py
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request

N = 100_000

CHILD = r"""
import sys

def rss_kb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

which, n = sys.argv[1], int(sys.argv[2])
if which == "ours":
    from agent_exporter import Telemetry, events
    from agent_exporter.config import Config, MetricsConfig, TracingConfig
    tel = Telemetry(Config(metrics=MetricsConfig(max_series=n + 1), tracing=TracingConfig(enabled=False)))
    port = tel.serve("127.0.0.1:0").port
    before = rss_kb()
    tel.store.apply_batch(events.Retry(agent=f"agent-{i:06d}", attempt=1, error_type="Timeout") for i in range(n))
else:
    from prometheus_client import CollectorRegistry, Counter, start_http_server
    registry = CollectorRegistry()
    retries = Counter("orchestrator_retries_total", "h", ["agent", "error_type"], registry=registry)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_port
    before = rss_kb()
    for i in range(n):
        retries.labels(f"agent-{i:06d}", "Timeout").inc()
print(before, port, flush=True)
sys.stdin.read()     # serve until the parent closes stdin
"""


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measure(which: str) -> tuple[float, float, int]:
    """(steady MB, peak MB, bytes scraped) for one library, in a child process stopped afterwards."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, which, str(N)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        before, port = map(int, child.stdout.readline().split())
        steady = _status_kb(child.pid, "VmRSS") - before
        with open(f"/proc/{child.pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")           # the peak starts again from the current RSS
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as response:
            size = len(response.read())
        peak = _status_kb(child.pid, "VmHWM") - before
    finally:
        child.stdin.close()
        child.wait(30)
    return steady / 1024, peak / 1024, size


def main() -> None:
    theirs = measure("prometheus_client")
    ours = measure("ours")
    print(f"memory for {N:,} counter series, RSS growth in MB over the process before them "
          "(steady after creating them; peak during one scrape over HTTP)")
    print(f"  {'':<28} {'steady':>8} {'peak':>8} {'scraped':>10}")
    print(f"  {'prometheus_client':<28} {theirs[0]:8.1f} {theirs[1]:8.1f} {theirs[2] / 1e6:8.1f} MB")
    print(f"  {'agent-exporter':<28} {ours[0]:8.1f} {ours[1]:8.1f} {ours[2] / 1e6:8.1f} MB   "
          f"{theirs[0] / ours[0]:.1f}x / {theirs[1] / ours[1]:.1f}x less")


if __name__ == "__main__":
    main()
