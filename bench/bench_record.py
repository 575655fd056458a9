"""Recording one agent execution that touches 5 series (executions, duration, 2x tokens, cost),
through the API the README documents, against prometheus_client and the OpenTelemetry SDK.

    with tel.agent_execution("planner", model="gpt-4o") as run:
        run.usage(input_tokens=100, output_tokens=50, cost_usd=0.001)

Baselines in the same run: prometheus_client with `.labels()` on every call (what one
writes without this project), with cached children, and the OpenTelemetry SDK metrics
API.  Ours: the context manager, `async with`, the decorator, and `Telemetry.record(dict)`,
with tracing off, and for scale the floor of this API's shape in Python (a bare context
manager that checks nothing); then, with tracing on, what the API adds beyond the OpenTelemetry SDK's
own span (the same span, attributes and context handling, written by hand), beside that
span followed by the untraced recording: what doing both costs with no glue between them.

    python bench/bench_record.py
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextvars
import inspect
import re
import shutil
import subprocess
import sys
import threading
import time

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from timing import interleaved_us, per_call_us, row

from agent_exporter import Telemetry, catalog
from agent_exporter.config import Config, TracingConfig

CALLS = 100_000


class _Discard(SpanExporter):
    """Spans go through a real BatchSpanProcessor and are dropped at export: no I/O in the figures."""

    def export(self, spans):
        return SpanExportResult.SUCCESS


def _traced_provider(simple: bool = False) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_Discard()) if simple
                                else BatchSpanProcessor(_Discard(), max_queue_size=CALLS * 2))
    return provider


def prometheus_client_baselines():
    from prometheus_client import CollectorRegistry, Counter, Histogram
    registry = CollectorRegistry()
    executions = Counter(catalog.AGENT_EXECUTIONS.name, "h", ["agent", "status"], registry=registry)
    duration = Histogram(catalog.AGENT_EXECUTION_DURATION.name, "h", ["agent"], registry=registry,
                         buckets=catalog.EXECUTION_BUCKETS)
    tokens = Counter(catalog.LLM_TOKENS.name, "h", ["agent", "model", "type"], registry=registry)
    cost = Counter(catalog.LLM_COST.name, "h", ["agent", "model"], registry=registry)

    def with_labels():
        started = time.perf_counter()
        executions.labels("planner", "success").inc()
        duration.labels("planner").observe(time.perf_counter() - started)
        tokens.labels("planner", "gpt-4o", "input").inc(100)
        tokens.labels("planner", "gpt-4o", "output").inc(50)
        cost.labels("planner", "gpt-4o").inc(0.001)

    children = (executions.labels("planner", "success"), duration.labels("planner"),
                tokens.labels("planner", "gpt-4o", "input"), tokens.labels("planner", "gpt-4o", "output"),
                cost.labels("planner", "gpt-4o"))

    def cached_children():
        e, d, ti, to, c = children
        started = time.perf_counter()
        e.inc()
        d.observe(time.perf_counter() - started)
        ti.inc(100)
        to.inc(50)
        c.inc(0.001)

    return with_labels, cached_children


def otel_sdk_metrics():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    executions, duration = meter.create_counter("executions"), meter.create_histogram("duration", unit="s")
    tokens, cost = meter.create_counter("tokens"), meter.create_counter("cost")

    def record():
        started = time.perf_counter()
        executions.add(1, {"agent": "planner", "status": "success"})
        duration.record(time.perf_counter() - started, {"agent": "planner"})
        tokens.add(100, {"agent": "planner", "model": "gpt-4o", "type": "input"})
        tokens.add(50, {"agent": "planner", "model": "gpt-4o", "type": "output"})
        cost.add(0.001, {"agent": "planner", "model": "gpt-4o"})
    return record


def api_calls(tel: Telemetry):
    def context_manager():
        with tel.agent_execution("planner", model="gpt-4o") as run:
            run.usage(input_tokens=100, output_tokens=50, cost_usd=0.001)

    @tel.agent_execution("planner", model="gpt-4o")
    def decorated():
        Telemetry.current_run().usage(input_tokens=100, output_tokens=50, cost_usd=0.001)

    async def async_with():
        async with tel.agent_execution("planner", model="gpt-4o") as run:
            run.usage(input_tokens=100, output_tokens=50, cost_usd=0.001)

    def record_dict():
        tel.record({"type": "agent_execution", "agent": "planner", "status": "success", "duration_seconds": 0.001,
                    "model": "gpt-4o", "input_tokens": 100, "output_tokens": 50, "cost_usd": 0.001})
    return context_manager, decorated, async_with, record_dict


def floor_of_this_api():
    """The least a Python context manager recording these five series can do, for scale: the
    current run in a contextvar, two clock reads, a lock and five additions (the duration into
    its bucket by bisect).  No check of names or numbers, no exemplar, no event, no overflow."""
    current = contextvars.ContextVar("run")
    lock = threading.Lock()
    bounds = catalog.EXECUTION_BUCKETS
    series: dict[tuple[str, str], list] = {}

    class Run:
        __slots__ = ("values", "token", "started", "input_tokens", "output_tokens", "cost_usd")

        def __init__(self, values):
            self.values = values
            self.input_tokens = self.output_tokens = 0
            self.cost_usd = 0.0

        def __enter__(self):
            self.token = current.set(self)
            self.started = time.perf_counter()
            return self

        def usage(self, input_tokens=0, output_tokens=0, cost_usd=0.0):
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens
            self.cost_usd += cost_usd

        def __exit__(self, *exc):
            elapsed = time.perf_counter() - self.started
            current.reset(self.token)
            executions, buckets, totals = self.values
            lock.acquire()
            executions[0] += 1
            buckets[bisect.bisect_left(bounds, elapsed)] += 1
            totals[0] += elapsed
            totals[1] += self.input_tokens
            totals[2] += self.output_tokens
            totals[3] += self.cost_usd
            lock.release()

    def agent_execution(agent, model):
        values = series.get((agent, model))
        if values is None:
            values = series[agent, model] = ([0], [0] * (len(bounds) + 1), [0.0] * 4)
        return Run(values)

    def context_manager():
        with agent_execution("planner", model="gpt-4o") as run:
            run.usage(input_tokens=100, output_tokens=50, cost_usd=0.001)
    return context_manager


def per_call_async_us(coroutine_function, calls: int) -> float:
    """Like per_call_us for `async with`: the calls run inside one event loop, as in an async orchestrator."""
    async def loop_of(n):
        for _ in range(n):
            await coroutine_function()

    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        asyncio.run(loop_of(calls))
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def sdk_span(tracer: trace.Tracer):
    """The OpenTelemetry SDK's own span for one agent run, as the API makes it (current while the body runs)."""
    def run():
        with tracer.start_as_current_span("invoke_agent planner", kind=trace.SpanKind.INTERNAL, attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
                "gen_ai.request.model": "gpt-4o"}) as span:
            span.set_attributes({"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 50,
                                 "orchestrator.cost_usd": 0.001})
    return run


def variants(simple_span_processor: bool = False) -> tuple[dict, TracerProvider]:
    """Every measured call, by name: the baselines, the API's forms, and the traced trio (and its provider)."""
    with_labels, cached_children = prometheus_client_baselines()
    untraced = Telemetry(Config(tracing=TracingConfig(enabled=False)))
    context_manager, decorated, async_with, record_dict = api_calls(untraced)
    provider = _traced_provider(simple_span_processor)
    sdk_span_alone = sdk_span(provider.get_tracer("bench"))

    def span_then_recording():
        sdk_span_alone()
        context_manager()
    return {
        "prometheus_client .labels()": with_labels,
        "prometheus_client cached children": cached_children,
        "OpenTelemetry SDK metrics API": otel_sdk_metrics(),
        "with tel.agent_execution() + run.usage()": context_manager,
        "async with tel.agent_execution()": async_with,
        "@tel.agent_execution() decorator": decorated,
        "tel.record(dict)": record_dict,
        "floor: a bare context manager, no checks": floor_of_this_api(),
        "traced: OpenTelemetry SDK span alone": sdk_span_alone,
        "traced: SDK span, then the untraced recording": span_then_recording,
        "traced: with tel.agent_execution() + run.usage()": api_calls(Telemetry(tracer_provider=provider))[0],
    }, provider


def run_variant(name: str, calls: int, simple_span_processor: bool) -> None:
    """`calls` calls of one variant (the child of --instructions, under callgrind)."""
    call = variants(simple_span_processor)[0][name]
    if inspect.iscoroutinefunction(call):
        async def loop():
            for _ in range(calls):
                await call()
        asyncio.run(loop())
    else:
        for _ in range(calls):
            call()


def instructions_per_call(name: str, simple_span_processor: bool) -> float:
    """Instructions one call executes, counted by callgrind: the difference of two runs, so set-up cancels."""
    counts = []
    for calls in (1000, 6000):
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
             "--run-variant", name, "--calls", str(calls)]
            + (["--simple-span-processor"] if simple_span_processor else []),
            capture_output=True, text=True, check=True, timeout=1800)
        counts.append(int(re.search(r"Collected : (\d+)", result.stderr).group(1)))
    return (counts[1] - counts[0]) / 5000


def instructions(simple_span_processor: bool) -> None:
    """The same comparison in instructions per call: repeatable where timings on a shared box are not."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    # Instructions add up, unlike timings: the side-by-side pair needs no count of its own.
    counts = {name: instructions_per_call(name, simple_span_processor) for name in variants()[0]
              if name != "traced: SDK span, then the untraced recording"}
    baseline = counts["prometheus_client .labels()"]
    print("instructions per call (callgrind), ratio against prometheus_client .labels()")
    for name, count in counts.items():
        if not name.startswith("traced"):
            print(f"  {name:<44} {count:10,.0f}   {baseline / count:5.1f}x fewer")
    span = counts["traced: OpenTelemetry SDK span alone"]
    traced = counts["traced: with tel.agent_execution() + run.usage()"]
    untraced = counts["with tel.agent_execution() + run.usage()"]
    print(f"  tracing on: SDK span {span:,.0f}, ours {traced:,.0f}: added {traced - span:,.0f} "
          f"(the recording, {untraced:,.0f}, and the span glue, {traced - span - untraced:,.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per call with callgrind (repeatable; slow)")
    parser.add_argument("--simple-span-processor", action="store_true",
                        help="trace through a SimpleSpanProcessor (no export thread) instead of a BatchSpanProcessor")
    parser.add_argument("--run-variant", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_variant:
        run_variant(args.run_variant, args.calls, args.simple_span_processor)
        return

    calls, provider = variants(args.simple_span_processor)
    timed = ("prometheus_client .labels()", "prometheus_client cached children", "OpenTelemetry SDK metrics API",
             "with tel.agent_execution() + run.usage()", "async with tel.agent_execution()",
             "@tel.agent_execution() decorator", "tel.record(dict)", "floor: a bare context manager, no checks")
    results = {name: (per_call_async_us(calls[name], CALLS) if inspect.iscoroutinefunction(calls[name])
                      else per_call_us(calls[name], CALLS // 4 if "OpenTelemetry" in name else CALLS))
               for name in timed}
    baseline = results["prometheus_client .labels()"]
    print(f"record one agent execution (5 series), tracing off, {CALLS:,} calls, best of 5;"
          " ratio against prometheus_client .labels()")
    for name, us in results.items():
        print(row(name, us, baseline))

    # The traced figure is a difference of timings on a shared machine: their rounds alternate,
    # so a noisy stretch falls on all three, and each pays the exports of its own spans.
    provider.force_flush()
    traced = interleaved_us({name: calls[name] for name in (
        "traced: OpenTelemetry SDK span alone", "traced: SDK span, then the untraced recording",
        "traced: with tel.agent_execution() + run.usage()")}, CALLS // 20)
    span_only, side_by_side, with_tracing = traced.values()
    untraced = results["with tel.agent_execution() + run.usage()"]
    processor = "SimpleSpanProcessor" if args.simple_span_processor else "BatchSpanProcessor"
    print(f"tracing on (a sampled span per run through a {processor}):")
    print(row("OpenTelemetry SDK span alone", span_only))
    print(row("SDK span, then the untraced recording", side_by_side))
    print(row("with tel.agent_execution() + run.usage()", with_tracing))
    print(f"  {'added beyond the SDK span':<44} {with_tracing - span_only:9.3f} µs"
          f"  (the untraced recording beside the span, no glue: {side_by_side - span_only:.3f} µs"
          f" where alone {untraced:.3f} µs; so the span glue: {with_tracing - side_by_side:.3f} µs)")
    provider.shutdown()
    if args.instructions:
        instructions(args.simple_span_processor)


if __name__ == "__main__":
    main()
