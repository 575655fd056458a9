"""HTTP ingest over loopback, driven by wrk: `agent-exporter serve` against a stdlib + json +
prometheus_client baseline, at batches of 10, 100 and 1000 events.

Both servers run as subprocesses on this box and get the same load: wrk (the
Debian package, a C client) with 8 keep-alive connections on 2 threads, each
posting the same pre-encoded batch as fast as the server answers, for a
bounded time after a warm-up run.  Exactly the events answered 200 count:
wrk reports requests and non-2xx answers, and for agent-exporter the count is
checked against the exporter's own orchestrator_exporter_events_total.  The
ratio is printed in the same run because machines are noisy.

    python bench/bench_ingest.py [--duration 10] [--batch-sizes 10,100,1000]

The baseline is what one writes without this project: http.server with
HTTP/1.1 keep-alive, json.loads, and prometheus_client metrics updated with
`.labels()` per event (the same metrics and labels as the catalog).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from prometheus_client.parser import text_string_to_metric_families

from agent_exporter import catalog, stack

AGENTS = ("planner", "coder", "reviewer", "tester")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku")
TOOLS = ("web_search", "code_exec", "file_read", "file_write")
STATES = ("queued", "planning", "coding", "reviewing", "testing", "done")


def make_batch(size: int, seed: int = 7) -> list[dict]:
    """A realistic mix: 60 % agent executions (with usage and a trace id), 30 % tool calls, 10 % transitions."""
    rng = random.Random(seed)
    batch = []
    for _ in range(size):
        roll = rng.random()
        if roll < 0.6:
            ok = rng.random() < 0.95
            batch.append({
                "type": "agent_execution", "agent": rng.choice(AGENTS), "model": rng.choice(MODELS),
                "status": "success" if ok else "error", "error_type": None if ok else "TimeoutError",
                "duration_seconds": round(rng.lognormvariate(0.5, 0.8), 4),
                "input_tokens": rng.randint(200, 4000), "output_tokens": rng.randint(50, 1500),
                "cost_usd": round(rng.uniform(0.0005, 0.05), 6), "trace_id": f"{rng.getrandbits(128):032x}",
            })
        elif roll < 0.9:
            batch.append({
                "type": "tool_call", "tool": rng.choice(TOOLS), "agent": rng.choice(AGENTS),
                "status": "success" if rng.random() < 0.97 else "error",
                "duration_seconds": round(rng.lognormvariate(-2.0, 1.0), 5),
            })
        else:
            i = rng.randrange(len(STATES) - 1)
            batch.append({"type": "state_transition", "workflow": "feature",
                          "from_state": STATES[i], "to_state": STATES[i + 1]})
    return [{k: v for k, v in event.items() if v is not None} for event in batch]


# -- the baseline server (runs in its own process: `python bench_ingest.py --baseline-server PORT`) --------

def run_baseline_server(port: int) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    registry = CollectorRegistry()
    executions = Counter(catalog.AGENT_EXECUTIONS.name, "h", ["agent", "status"], registry=registry)
    durations = Histogram(catalog.AGENT_EXECUTION_DURATION.name, "h", ["agent"],
                          buckets=catalog.EXECUTION_BUCKETS, registry=registry)
    errors = Counter(catalog.AGENT_ERRORS.name, "h", ["agent", "error_type"], registry=registry)
    tokens = Counter(catalog.LLM_TOKENS.name, "h", ["agent", "model", "type"], registry=registry)
    cost = Counter(catalog.LLM_COST.name, "h", ["agent", "model"], registry=registry)
    tool_calls = Counter(catalog.TOOL_CALLS.name, "h", ["tool", "status"], registry=registry)
    tool_durations = Histogram(catalog.TOOL_CALL_DURATION.name, "h", ["tool"],
                               buckets=catalog.TOOL_BUCKETS, registry=registry)
    transitions = Counter(catalog.STATE_TRANSITIONS.name, "h", ["workflow", "from_state", "to_state"],
                          registry=registry)
    accepted = Counter(catalog.EXPORTER_EVENTS.name, "h", ["type"], registry=registry)

    def apply(event: dict) -> None:
        kind = event["type"]
        if kind == "agent_execution":
            agent, model = event["agent"], event.get("model", "unknown")
            executions.labels(agent, event["status"]).inc()
            durations.labels(agent).observe(event["duration_seconds"])
            if event["status"] == "error":
                errors.labels(agent, event.get("error_type", "unknown")).inc()
            tokens.labels(agent, model, "input").inc(event.get("input_tokens", 0))
            tokens.labels(agent, model, "output").inc(event.get("output_tokens", 0))
            cost.labels(agent, model).inc(event.get("cost_usd", 0.0))
        elif kind == "tool_call":
            tool_calls.labels(event["tool"], event["status"]).inc()
            tool_durations.labels(event["tool"]).observe(event["duration_seconds"])
        elif kind == "state_transition":
            transitions.labels(event.get("workflow", "default"), event["from_state"], event["to_state"]).inc()
        else:
            raise ValueError(kind)
        accepted.labels(kind).inc()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            n = 0
            for event in json.loads(body):
                apply(event)
                n += 1
            self._answer(json.dumps({"accepted": n, "rejected": []}).encode(), "application/json")

        def do_GET(self):
            self._answer(generate_latest(registry), "text/plain; version=0.0.4")

        def _answer(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


# -- the load: wrk ------------------------------------------------------------------

CONNECTIONS, THREADS = 8, 2

# Posts the body of BODY_FILE as CONTENT_TYPE; at the end prints what wrk counted, as JSON on the last line.
WRK_SCRIPT = """
local file = io.open(os.getenv("BODY_FILE"), "rb")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE")
function done(summary, latency, requests)
  io.write(string.format('{"requests": %d, "non_2xx": %d, "socket_errors": %d, "duration_us": %d}\\n',
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout, summary.duration))
end
"""


class Load(NamedTuple):
    """One kind of request wrk repeats: `events` events per request of `body_file`, POSTed to `path`."""
    name: str
    path: str
    content_type: str
    body_file: Path
    events: int


def wrk(url: str, load: Load, script: Path, seconds: float) -> dict:
    result = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
        env={**os.environ, "BODY_FILE": str(load.body_file), "CONTENT_TYPE": load.content_type})
    return json.loads(result.stdout.strip().splitlines()[-1])


def wrk_script(directory: Path) -> Path:
    script = directory / "post.lua"
    script.write_text(WRK_SCRIPT)
    return script


def _wait_ready(port: int, process: subprocess.Popen, timeout: float = 20.0) -> None:
    def serving() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("GET", "/metrics")
            connection.getresponse().read()
        finally:
            connection.close()
        return True
    stack.wait_for(serving, timeout=timeout, interval=0.05, what="the server did not come up")


def events_total(port: int) -> float:
    """orchestrator_exporter_events_total, summed over types, from the server's /metrics."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == catalog.EXPORTER_EVENTS.name)


def measure(command: list[str], loads: list[Load], script: Path, *, warmup: float,
            duration: float) -> dict[str, float]:
    """Events/s answered 200 per load, by the server `command` starts ({port} in it is replaced by a
    free port) and stops by PID.  Against a server with the catalog's events counter, exactly the
    events answered 200 must have been counted."""
    port = stack.free_port()
    process = subprocess.Popen([arg.format(port=port) for arg in command],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rates = {}
    try:
        _wait_ready(port, process)
        for load in loads:
            url = f"http://127.0.0.1:{port}{load.path}"
            wrk(url, load, script, warmup)
            before = events_total(port)
            run = wrk(url, load, script, duration)
            if run["socket_errors"]:
                raise SystemExit(f"{run['socket_errors']} socket errors: {load.name}")
            answered_200 = run["requests"] - run["non_2xx"]
            counted = events_total(port) - before
            # wrk stops mid-request: a request it gave up on, at the end of the warm-up or of the
            # measured run, may still have been counted, one per connection at most each time.
            assert answered_200 * load.events <= counted <= (answered_200 + 2 * CONNECTIONS) * load.events, (
                load.name, answered_200, counted)
            rates[load.name] = answered_200 * load.events / (run["duration_us"] / 1e6)
    finally:
        stack.stop_process(process)
    return rates


def event_loads(directory: Path, sizes) -> list[Load]:
    """POST /v1/events with JSON arrays of each batch size."""
    loads = []
    for size in sizes:
        body_file = directory / f"batch-{size}.json"
        body_file.write_bytes(json.dumps(make_batch(size)).encode())
        loads.append(Load(str(size), "/v1/events", "application/json", body_file, size))
    return loads


SERVE = [sys.executable, "-m", "agent_exporter", "--log.level=warning", "serve",
         "--web.listen-address=127.0.0.1:{port}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per server and batch size")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--batch-sizes", default="10,100,1000")
    parser.add_argument("--baseline-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline_server(args.baseline_server)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required: apt-get install wrk")

    sizes = [int(size) for size in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        script, loads = wrk_script(scratch), event_loads(scratch, sizes)
        print(f"HTTP ingest, loopback, {os.cpu_count()} CPUs, wrk {THREADS} threads x {CONNECTIONS} keep-alive "
              f"connections, {args.duration:g}s measured per batch size after {args.warmup:g}s of warm-up")
        ours = measure(SERVE, loads, script, warmup=args.warmup, duration=args.duration)
        baseline = measure([sys.executable, str(Path(__file__).resolve()), "--baseline-server={port}"], loads,
                           script, warmup=args.warmup, duration=args.duration)
    print(f"  {'batch':>6} {'agent-exporter':>16} {'baseline':>14} {'ratio':>7}   (events/s answered 200)")
    for size in map(str, sizes):
        print(f"  {size:>6} {ours[size]:>16,.0f} {baseline[size]:>14,.0f} {ours[size] / baseline[size]:>6.1f}x")
    print("  goals: >= 3x the baseline at every batch size, >= 300,000 events/s at 1000")


if __name__ == "__main__":
    main()
