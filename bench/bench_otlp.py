"""OTLP/HTTP GenAI spans in, against the same agent executions posted to /v1/events, in one run.

`agent-exporter serve` runs as a subprocess; wrk (8 keep-alive connections on
2 threads, as in bench_ingest.py) posts, as fast as the server answers, either
OTLP/HTTP protobuf export requests of 512 `invoke_agent` spans (as the
OpenTelemetry SDK batches them, attributes as GenAI instrumentations set them)
or the same 512 executions as a JSON array to /v1/events.  The figure is executions per second;
the ratio is printed in the same run because machines are noisy (goal: OTLP at
least half the /v1/events rate).  `--inner` adds the in-process cost per span
of OTLPReceiver.handle_http beside decode_body + record_batch, without HTTP.

    python bench/bench_otlp.py [--duration 10] [--batch-size 512] [--inner]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench_ingest import CONNECTIONS, SERVE, THREADS, Load, _wait_ready, measure, wrk_script
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)

from agent_exporter import stack

AGENTS = ("planner", "coder", "reviewer", "tester")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku")


def make_executions(size: int, seed: int = 11) -> list[dict]:
    """Agent executions with usage, ids and times, 5 % failed."""
    rng = random.Random(seed)
    now = time.time()
    executions = []
    for _ in range(size):
        ok = rng.random() < 0.95
        duration = round(rng.lognormvariate(0.5, 0.8), 4)
        executions.append({
            "type": "agent_execution", "agent": rng.choice(AGENTS), "model": rng.choice(MODELS),
            "status": "success" if ok else "error", "duration_seconds": duration,
            "input_tokens": rng.randint(200, 4000), "output_tokens": rng.randint(50, 1500),
            "trace_id": f"{rng.getrandbits(128):032x}", "span_id": f"{rng.getrandbits(64) or 1:016x}",
            "timestamp": now, **({} if ok else {"error_type": "timeout"}),
        })
    return executions


def as_otlp(executions: list[dict]) -> bytes:
    """The same executions as one OTLP export request of invoke_agent spans."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, value in (("service.name", "orchestrator"), ("telemetry.sdk.language", "python"),
                       ("telemetry.sdk.name", "opentelemetry"), ("telemetry.sdk.version", "1.45.2")):
        resource_spans.resource.attributes.add(key=key).value.string_value = value
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "opentelemetry.instrumentation.openai_agents"
    for e in executions:
        end = int(e["timestamp"] * 1e9)
        span = scope_spans.spans.add(
            trace_id=bytes.fromhex(e["trace_id"]), span_id=bytes.fromhex(e["span_id"]),
            name=f"invoke_agent {e['agent']}", kind=1, start_time_unix_nano=end - int(e["duration_seconds"] * 1e9),
            end_time_unix_nano=end)
        for key, value in (("gen_ai.operation.name", "invoke_agent"), ("gen_ai.provider.name", "openai"),
                           ("gen_ai.agent.name", e["agent"]), ("gen_ai.request.model", e["model"]),
                           ("server.address", "api.openai.com")):
            span.attributes.add(key=key).value.string_value = value
        for key, value in (("gen_ai.usage.input_tokens", e["input_tokens"]),
                           ("gen_ai.usage.output_tokens", e["output_tokens"]), ("server.port", 443)):
            span.attributes.add(key=key).value.int_value = value
        if e["status"] == "error":
            span.status.code = 2
            span.attributes.add(key="error.type").value.string_value = e["error_type"]
    return request.SerializeToString()


# -- the load ---------------------------------------------------------------------------

def check_answers(port: int, otlp: bytes, events: bytes, size: int) -> None:
    """Both endpoints take the whole batch (a rejected span or event would make the figure a lie)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/v1/traces", body=otlp, headers={"Content-Type": "application/x-protobuf"})
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200 or ExportTraceServiceResponse.FromString(answer).HasField("partial_success"):
        raise SystemExit(f"/v1/traces: {response.status} {answer[:200]!r}")
    connection.request("POST", "/v1/events", body=events, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status != 200 or answer["accepted"] != size:
        raise SystemExit(f"/v1/events: {response.status} {answer}")
    connection.close()


def floor_mapping(telemetry, otlp: bytes) -> None:
    """The least any Python mapping of these spans does, as a bound on what OTLPReceiver can reach:
    parse into the receiver's view, read each span's ids, times, agent, model and two token counts
    into its event, record the batch.  No kind detection, attribute shapes, fallbacks or checks."""
    from agent_exporter import events
    from agent_exporter.otlp import _count, _Request, _text

    batch = []
    for resource_spans in _Request.FromString(otlp).resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes, end = span.attributes, span.end_time_unix_nano
                batch.append(events.AgentExecution(
                    _text(attributes["gen_ai.agent.name"]), "success", (end - span.start_time_unix_nano) / 1e9,
                    _text(attributes["gen_ai.request.model"]),
                    _count("input", attributes["gen_ai.usage.input_tokens"]),
                    _count("output", attributes["gen_ai.usage.output_tokens"]), None, None, None, None, None,
                    None, None, None, None, None, span.trace_id.hex(), span.span_id.hex(), end / 1e9))
    telemetry.record_batch(batch, spans=False)


def inner(otlp: bytes, events_body: bytes, size: int) -> None:
    """µs per execution in process: OTLPReceiver.handle_http against decode_body + record_batch,
    and the floor of any mapping in Python (floor_mapping)."""
    from timing import interleaved_us

    from agent_exporter import events
    from agent_exporter.config import Config
    from agent_exporter.otlp import OTLPReceiver
    from agent_exporter.telemetry import Telemetry

    telemetry = Telemetry()
    receiver = OTLPReceiver(telemetry, Config())
    try:
        us = interleaved_us({
            "otlp": lambda: receiver.handle_http(otlp, "application/x-protobuf"),
            "events": lambda: telemetry.record_batch(events.decode_body(events_body, "application/json").events),
            "floor": lambda: floor_mapping(telemetry, otlp),
        }, 10)
    finally:
        receiver.close()
    otlp_us, events_us, floor_us = (us[name] / size for name in ("otlp", "events", "floor"))
    print(f"  in process, per execution: OTLP {otlp_us:.2f} µs, /v1/events {events_us:.2f} µs "
          f"({events_us / otlp_us:.2f}x)")
    print(f"  floor of a Python mapping (parse, read 6 fields, build, record; no checks): {floor_us:.2f} µs "
          f"({events_us / floor_us:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per endpoint")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--inner", action="store_true", help="also the in-process cost per span")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required: apt-get install wrk")

    executions = make_executions(args.batch_size)
    otlp, events_body = as_otlp(executions), json.dumps(executions).encode()
    print(f"GenAI spans in, loopback, {os.cpu_count()} CPUs, wrk {THREADS} threads x {CONNECTIONS} keep-alive "
          f"connections, batches of {args.batch_size} executions (OTLP {len(otlp) / args.batch_size:.0f} B/span, "
          f"JSON {len(events_body) / args.batch_size:.0f} B/event), {args.duration:g}s measured after "
          f"{args.warmup:g}s warm-up")
    if args.inner:
        inner(otlp, events_body, args.batch_size)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "spans.pb").write_bytes(otlp)
        (scratch / "events.json").write_bytes(events_body)
        loads = [Load("otlp", "/v1/traces", "application/x-protobuf", scratch / "spans.pb", args.batch_size),
                 Load("events", "/v1/events", "application/json", scratch / "events.json", args.batch_size)]
        port = stack.free_port()
        server = subprocess.Popen([arg.format(port=port) for arg in SERVE],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_ready(port, server)
            check_answers(port, otlp, events_body, args.batch_size)
        finally:
            stack.stop_process(server)
        rates = measure(SERVE, loads, wrk_script(scratch), warmup=args.warmup, duration=args.duration)
    print(f"  POST /v1/traces (OTLP/HTTP protobuf)   {rates['otlp']:12,.0f} executions/s")
    print(f"  POST /v1/events (JSON)                 {rates['events']:12,.0f} executions/s")
    print(f"  ratio: OTLP at {rates['otlp'] / rates['events']:.2f}x the /v1/events rate (goal: >= 0.5x)")


if __name__ == "__main__":
    main()
