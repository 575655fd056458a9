"""Which ASGI server carries the exporter: uvicorn (httptools, uvloop) against granian, measured.

The same application (Telemetry().asgi_app(), the service `agent-exporter serve`
runs) on each server, one process, loaded by wrk (8 keep-alive connections, 2
threads) posting batches of 10 and 1000 events: small batches show the cost of
the HTTP layer, large ones that of decoding and aggregation, which the servers
share.  granian comes from the `bench` extra (pip install 'agent-exporter[bench]').

    python bench/bench_http_servers.py [--duration 10]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from bench_ingest import SERVE, event_loads, measure, wrk_script

HERE = Path(__file__).resolve().parent


def asgi_app():
    """The factory granian imports: the exporter's service with the default config."""
    from agent_exporter import Telemetry
    return Telemetry().asgi_app()


UVICORN = SERVE      # what `agent-exporter serve` runs: uvicorn with httptools and uvloop
GRANIAN = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}",
           "--workers", "1", "--runtime-mode", "st", "--loop", "uvloop", "--no-log", "--factory",
           "--working-dir", str(HERE), "bench_http_servers:asgi_app"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required: apt-get install wrk")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        script, loads = wrk_script(scratch), event_loads(scratch, (10, 1000))
        results = {name: measure(command, loads, script, warmup=args.warmup, duration=args.duration)
                   for name, command in (("uvicorn + httptools + uvloop", UVICORN),
                                         ("granian (single-threaded runtime)", GRANIAN))}
    print(f"the exporter's ASGI app, wrk 2 threads x 8 connections, {args.duration:g}s per figure (events/s)")
    print(f"  {'server':<36} {'batch 10':>12} {'batch 1000':>12}")
    for name, rates in results.items():
        print(f"  {name:<36} {rates['10']:>12,.0f} {rates['1000']:>12,.0f}")


if __name__ == "__main__":
    main()
