"""HTTP ingest over loopback: `agent-exporter serve` against a stdlib + json + prometheus_client baseline.

Both servers run as subprocesses on this box and get the same client: N
keep-alive connections (one client process each), each posting the same
pre-encoded batch of events as fast as the server answers, for a bounded time
after a warm-up.  The figure is events accepted per second, as each server
reports them; the ratio is printed in the same run because machines are noisy.

    python bench/bench_ingest.py [--duration 10] [--connections 2] [--batch-size 1000]

The baseline is what one writes without this project: http.server with
HTTP/1.1 keep-alive, json.loads, and prometheus_client metrics updated with
`.labels()` per event (the same metrics and labels as the catalog).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from agent_exporter import catalog

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


# -- the client ----------------------------------------------------------------

def _client(port: int, body: bytes, warmup: float, duration: float, results) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    accepted, started, deadline = 0, None, time.monotonic() + warmup + duration
    measure_from = time.monotonic() + warmup
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if started is None and now >= measure_from:
            started, accepted = now, 0
        connection.request("POST", "/v1/events", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise SystemExit(f"server answered {response.status}: {answer[:200]!r}")
        accepted += json.loads(answer)["accepted"]
    results.put((accepted, time.monotonic() - started))
    connection.close()


def _wait_ready(port: int, process: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/metrics")
            connection.getresponse().read()
            connection.close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not come up")


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(command: list[str], port: int, body: bytes, *, connections: int, warmup: float,
            duration: float) -> float:
    """Events/s accepted by the server started by `command`, stopped (SIGTERM, by PID) afterwards."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(port, process)
        results = multiprocessing.Queue()
        clients = [multiprocessing.Process(target=_client, args=(port, body, warmup, duration, results))
                   for _ in range(connections)]
        for client in clients:
            client.start()
        outcomes = [results.get(timeout=warmup + duration + 60) for _ in clients]
        for client in clients:
            client.join()
        return sum(accepted / elapsed for accepted, elapsed in outcomes)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per server")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--baseline-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline_server(args.baseline_server)
        return

    body = json.dumps(make_batch(args.batch_size)).encode()
    print(f"HTTP ingest, loopback, {os.cpu_count()} CPUs: {args.connections} keep-alive connection(s), "
          f"batches of {args.batch_size} events ({len(body) / args.batch_size:.0f} B/event), "
          f"{args.duration:g}s measured after {args.warmup:g}s warm-up")
    port = _free_port()
    ours = measure([sys.executable, "-m", "agent_exporter", "--log.level=warning", "serve",
                    f"--web.listen-address=127.0.0.1:{port}"], port, body,
                   connections=args.connections, warmup=args.warmup, duration=args.duration)
    print(f"  agent-exporter serve                          {ours:12,.0f} events/s")
    port = _free_port()
    baseline = measure([sys.executable, str(Path(__file__).resolve()), "--baseline-server", str(port)], port, body,
                       connections=args.connections, warmup=args.warmup, duration=args.duration)
    print(f"  baseline: http.server + json + prometheus_client {baseline:9,.0f} events/s")
    print(f"  ratio: {ours / baseline:.1f}x the baseline (goal: >= 3x and >= 300,000 events/s)")


if __name__ == "__main__":
    main()
