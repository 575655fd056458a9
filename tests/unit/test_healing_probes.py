"""Half-open probes: only a probe's outcome decides, and a probe that ends without one is handed back."""

import asyncio
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent_exporter import tracing
from agent_exporter.healing import CircuitBreakers, Healer, RetryPolicy

from clocks import Clock


class AgentDown(Exception):
    pass


class BadTask(Exception):
    """The task's own fault: not retried, not held against the agent."""


def half_open_healer():
    """A Healer whose one agent's breaker (one probe, 10 s cool-down) is half-open; and its clock."""
    clock = Clock()
    breakers = CircuitBreakers(min_calls=2, error_ratio=0.5, cooldown_seconds=10, half_open_probes=1, clock=clock)
    policy = RetryPolicy(1, retryable=AgentDown, sleep=lambda seconds: None)
    healer = Healer(policy=policy, breakers=breakers, clock=clock)
    for _ in range(2):
        breakers.get("coder").record_failure()
    clock.now = 10.0
    assert breakers.get("coder").state == "half_open"
    return healer, clock


def test_a_probe_ended_by_a_non_retryable_error_goes_to_the_next_call():
    healer, clock = half_open_healer()

    def bad_task(agent):
        raise BadTask("the prompt is malformed")

    with pytest.raises(BadTask):
        healer.run("coding", ("coder",), bad_task)
    clock.now = 1000.0
    # The probe was handed back: the next task probes the agent, and its success closes the breaker.
    assert healer.run("coding", ("coder",), lambda agent: "done") == "done"
    assert healer.breakers.get("coder").state == "closed"


async def cancel_in_flight(healer: Healer) -> None:
    """A task's run cancelled while its agent's call awaits (a lost hedge, asyncio.wait_for's timeout)."""
    entered = asyncio.Event()

    async def hangs(agent):
        entered.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(healer.run_async("coding", ("coder",), hangs))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_probe_whose_await_is_cancelled_goes_to_the_next_call():
    healer, _ = half_open_healer()

    async def scenario():
        await cancel_in_flight(healer)

        async def answers(agent):
            return "done"

        return await healer.run_async("coding", ("coder",), answers)

    assert asyncio.run(scenario()) == "done"
    assert healer.breakers.get("coder").state == "closed"


def test_a_call_admitted_before_the_breaker_opened_is_not_a_probe():
    clock = Clock()
    breakers = CircuitBreakers(min_calls=2, error_ratio=0.5, cooldown_seconds=10, half_open_probes=1, clock=clock)
    healer = Healer(policy=RetryPolicy(1, retryable=AgentDown), breakers=breakers, clock=clock)
    breaker = breakers.get("coder")
    started, finish = threading.Event(), threading.Event()

    def slow_success(agent):
        started.set()
        finish.wait(10)
        return "late answer"

    slow = threading.Thread(target=healer.run, args=("coding", ("coder",), slow_success))
    slow.start()
    started.wait(10)
    for _ in range(2):                  # meanwhile the agent fails: the breaker opens, then cools down
        breaker.record_failure()
    clock.now = 10.0
    assert breaker.state == "half_open"
    finish.set()
    slow.join(10)
    # That success was of a call made while closed: the breaker waits for its probe.
    assert breaker.state == "half_open"

    def down(agent):
        raise AgentDown(agent)

    with pytest.raises(AgentDown):
        healer.run("coding", ("coder",), down)
    assert breaker.state == "open" and breaker.reason == "probe_failed"


def test_an_outcome_without_a_permit_still_counts_as_a_probe():
    clock = Clock()
    breaker = CircuitBreakers(min_calls=2, cooldown_seconds=10, half_open_probes=1, clock=clock).get("coder")
    for _ in range(2):
        breaker.record_failure()
    clock.now = 10.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"


def test_an_attempt_admitted_as_a_probe_says_so_on_its_span():
    healer, clock = half_open_healer()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    healer.tracer = provider.get_tracer("test")
    healer.run("coding", ("coder",), lambda agent: "done")      # the probe: it closes the breaker
    healer.run("coding", ("coder",), lambda agent: "done")      # an ordinary call
    attempts = [dict(s.attributes) for s in exporter.get_finished_spans() if s.name == "attempt coder"]
    assert [a.get(tracing.PROBE) for a in attempts] == [True, None]


def test_a_cancelled_run_ends_its_spans_without_an_error_status():
    """A lost hedge is no failure of the agent: its heal and attempt spans end as the agent run's own
    span does (telemetry: no outcome), not as errors a trace view or tail sampler would flag."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    healer = Healer(tracer=provider.get_tracer("test"))
    asyncio.run(cancel_in_flight(healer))
    ended = exporter.get_finished_spans()
    assert len(ended) == 2 and {span.status.status_code.name for span in ended} == {"UNSET"}


async def awaits_a_job_somebody_else_cancelled(agent):
    """An agent call whose awaited job its executor dropped: nobody cancelled the run's task."""
    if agent == "coder":
        job = asyncio.get_running_loop().create_future()
        job.cancel()
        await job
    return f"done by {agent}"


def test_a_future_cancelled_by_somebody_else_is_the_calls_failure_not_an_interruption():
    """Telemetry counts such a CancelledError as the run's error; the healer sees the same failure:
    error spans, and a policy that retries it falls back to the next agent."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    healer = Healer(tracer=provider.get_tracer("test"))
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(healer.run_async("coding", ("coder",), awaits_a_job_somebody_else_cancelled))
    assert {s.name: s.status.status_code.name for s in exporter.get_finished_spans()} == {
        "attempt coder": "ERROR", "heal coding": "ERROR"}

    policy = RetryPolicy(1, retryable=(AgentDown, asyncio.CancelledError))
    healer = Healer(policy=policy, tracer=provider.get_tracer("test"))
    assert asyncio.run(healer.run_async("coding", ("coder", "coder-lite"),
                                        awaits_a_job_somebody_else_cancelled)) == "done by coder-lite"
