"""The Healer: adaptive selection, retries, circuit breakers and fallbacks around one task function.

    healer = Healer.from_config(config, telemetry)
    result = healer.run("coding", ("coder", "coder-lite"), lambda agent: call(agent))
    result = await healer.run_async("coding", ("coder", "coder-lite"), acall)

For one task the selector picks the first agent among the candidates; then the
agents are tried in fallback order (that agent, its configured alternatives,
the other candidates).  Each agent gets up to `max_attempts` attempts while its
breaker allows, with backoff between them; a retryable failure on the last one
falls back to the next agent.  A non-retryable error propagates at once and is
held against neither breaker nor selector (it is the task's fault, not the
agent's); nor is a run interrupted mid-call (a cancelled await): either way a
half-open probe it held goes to the next call.  When every attempt fails, the
last error propagates; when no breaker let a call through, CircuitOpenError.

Every retry and fallback is one typed event (events.Retry, events.Fallback)
recorded through the telemetry (orchestrator_retries_total,
orchestrator_fallbacks_total) while the run's span is current, so the
`orchestrator.retry`/`orchestrator.fallback` span event tracing.py makes of it
lands on that span.  Spans: one `heal {task}` span per run, one
`attempt {agent}` child span per attempt, each retry's span linked to the first
attempt's; an attempt admitted as a half-open probe carries `orchestrator.probe=true`,
so a trace tells the breaker's probes from the selector's choices.  Without a tracer
provider the OpenTelemetry API makes these no-ops.

`run(..., workflow="name")` records the whole task as one workflow run
(orchestrator_workflow_runs_total, an invoke_workflow span around the heal
span), for orchestrators whose task is one healed call; multi-step tasks wrap
their steps in `telemetry.workflow(name)` themselves.

With `healing.enabled: false` the Healer from the config heals nothing: each
task runs once, on its first candidate, and its failure propagates (a workflow
run is still recorded).  Orchestrator code keeps calling `run()` either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import closing
from typing import TypeVar

from opentelemetry import trace

from .. import events
from ..tracing import ATTEMPT, GEN_AI_AGENT_NAME, PROBE, GenAITracer, interrupted
from .breaker import OPEN, CircuitBreakers, CircuitOpenError
from .fallback import FallbackChain
from .retry import RetryPolicy
from .selector import AdaptiveSelector

_log = logging.getLogger(__name__)
_Result = TypeVar("_Result")


def error_type(exc: BaseException) -> str:
    """The error_type label of a failure: the exception's own `error_type`, else its class name."""
    value = getattr(exc, "error_type", None)
    return value if isinstance(value, str) and value else type(exc).__name__


def _first(task_type: str, candidates: Sequence[str]) -> str:
    if not candidates:
        raise ValueError(f"no candidate agents for task {task_type!r}")
    return candidates[0]


def _current(span):
    """The attempt's span as the current span while the task function runs (the plan records its errors)."""
    return trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False)


class Healer:
    """Runs a task function `fn(agent)` with the self-healing policies around it.

    `clock` measures attempt latency for the selector (the simulator passes its
    simulated clock); `cost_of(agent, result_or_exception)` optionally reports
    an attempt's cost in USD to the selector, `score_of(agent, result)` a
    successful answer's evaluation score (0..1); `telemetry` (agent_exporter
    Telemetry) receives retry and fallback events; `tracer` defaults to the
    telemetry's tracer, else the global OpenTelemetry tracer.  With
    `enabled=False` every task is one call of `fn` on its first candidate.
    """

    def __init__(self, *, policy: RetryPolicy | None = None, breakers: CircuitBreakers | None = None,
                 selector: AdaptiveSelector | None = None, fallbacks: FallbackChain | None = None,
                 telemetry=None, tracer: trace.Tracer | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 cost_of: Callable[[str, object], float | None] | None = None,
                 score_of: Callable[[str, object], float | None] | None = None, enabled: bool = True):
        self.enabled = enabled
        self.policy = policy or RetryPolicy()
        self.breakers = breakers or CircuitBreakers(telemetry=telemetry)
        self.selector = selector
        self.fallbacks = fallbacks or FallbackChain()
        self.telemetry = telemetry
        if tracer is None:
            tracer = telemetry.tracer if telemetry is not None else trace.get_tracer("agent_exporter.healing")
        self.tracer = tracer
        self.clock = clock
        self.cost_of = cost_of
        self.score_of = score_of

    @classmethod
    def from_config(cls, config, telemetry=None, *, remediator=None, **kwargs) -> "Healer":
        """From a Config; shares the breakers and selector of `remediator` (AlertRemediator) when given,
        so alert-driven changes and /v1/agents act on the same state."""
        healing = config.healing
        fleet = healing.fleet
        if remediator is None and healing.enabled and (fleet.alertmanager.urls or fleet.prometheus.url):
            # The fleet's pollers belong to a remediator: without one the keys would be silently unheeded.
            _log.warning("healing.fleet names sources this Healer does not poll: pass it "
                         "remediator=AlertRemediator(config, telemetry).start() to act on them")
        if remediator is not None:
            kwargs.setdefault("breakers", remediator.breakers)
            kwargs.setdefault("selector", remediator.selector)
        breakers = kwargs.pop("breakers", None) or CircuitBreakers.from_config(healing, telemetry=telemetry)
        selector = kwargs.pop("selector", None) or AdaptiveSelector.from_config(
            healing, breakers=breakers, telemetry=telemetry)
        return cls(policy=kwargs.pop("policy", None) or RetryPolicy.from_config(healing),
                   breakers=breakers, selector=selector,
                   fallbacks=kwargs.pop("fallbacks", None) or FallbackChain.from_config(healing),
                   telemetry=telemetry, enabled=healing.enabled, **kwargs)

    # -- entry points -------------------------------------------------------------

    def run(self, task_type: str, candidates: Sequence[str], fn: Callable[[str], _Result], *,
            workflow: str | None = None) -> _Result:
        """Run `fn(agent)` for one task of type `task_type`; returns its result.

        With `workflow`, the task is recorded as one run of that workflow."""
        if workflow is not None:
            with self._workflow(workflow):
                return self.run(task_type, candidates, fn)
        if not self.enabled:
            return fn(_first(task_type, candidates))
        # closing(): an interrupted run (KeyboardInterrupt, a cancelled await) ends the plan at once,
        # which hands back the breaker's probe of the attempt in flight.
        with closing(self._plan(task_type, candidates)) as plan:
            step = next(plan)
            while True:
                kind, value, span = step
                if kind == "sleep":
                    self.policy.sleep(value)
                    step = plan.send(None)
                    continue
                try:
                    with _current(span):
                        outcome = (True, fn(value))
                except Exception as exc:  # noqa: BLE001 - the plan decides what a failure means
                    outcome = (False, exc)
                try:
                    step = plan.send(outcome)
                except StopIteration as done:
                    return done.value

    async def run_async(self, task_type: str, candidates: Sequence[str], fn: Callable[[str], Awaitable[_Result]], *,
                        workflow: str | None = None) -> _Result:
        """Like run(), for `async def fn(agent)`; backoff waits with the policy's async_sleep."""
        if workflow is not None:
            async with self._workflow(workflow):
                return await self.run_async(task_type, candidates, fn)
        if not self.enabled:
            return await fn(_first(task_type, candidates))
        with closing(self._plan(task_type, candidates)) as plan:     # as in run()
            step = next(plan)
            while True:
                kind, value, span = step
                if kind == "sleep":
                    await self.policy.async_sleep(value)
                    step = plan.send(None)
                    continue
                try:
                    with _current(span):
                        outcome = (True, await fn(value))
                except Exception as exc:  # noqa: BLE001
                    outcome = (False, exc)
                except asyncio.CancelledError as exc:
                    if interrupted(exc):
                        raise
                    outcome = (False, exc)  # a future somebody else cancelled: the call's failure, as telemetry says
                try:
                    step = plan.send(outcome)
                except StopIteration as done:
                    return done.value

    # -- the policy, as a generator shared by both entry points -------------------
    #
    # Yields ("call", agent, span) and receives (ok, result_or_exception), or
    # yields ("sleep", seconds, None) and receives None; returns the result.

    def _plan(self, task_type: str, candidates: Sequence[str]):
        candidates = tuple(candidates)
        first = _first(task_type, candidates)
        if self.selector is not None:
            first = self.selector.choose(task_type, candidates)
        order = self.fallbacks.order(first, candidates)
        policy = self.policy
        run_span = self.tracer.start_span(f"heal {task_type}", attributes={
            "orchestrator.task_type": task_type, "orchestrator.candidates": list(order)})
        first_attempt = None          # span context every retry links to
        # The hand-off source: the last agent that was called and failed, else the first one refused.
        previous, reason = None, ""
        last_error: BaseException | None = None
        anything_called = False

        def agents():
            yield from ((agent, False) for agent in order)
            # An alert may force open every agent of a task (a fallback carrying all the load
            # crosses the error threshold too).  Alerts route work away; they must not stop it:
            # when nothing else could be called, one alert-opened agent gets a single attempt.
            if not anything_called:
                forced = next((a for a in order if self.breakers.get(a).forced), None)
                if forced is not None:
                    run_span.set_attribute("orchestrator.last_resort", forced)
                    yield forced, True

        try:
            for agent, last_resort in agents():
                breaker = self.breakers.get(agent)
                called = False
                for attempt in range(1, (1 if last_resort else policy.max_attempts) + 1):
                    permit = None if last_resort else breaker.acquire()
                    if permit is None and not last_resort:
                        break
                    called = anything_called = True
                    if attempt > 1:
                        self._retry(run_span, agent, attempt, last_error)
                    elif previous not in (None, agent):     # a hand-off is recorded when the work is taken on
                        self._fallback(run_span, previous, agent, reason)
                    links = [trace.Link(first_attempt)] if first_attempt is not None else []
                    attributes = {GEN_AI_AGENT_NAME: agent, ATTEMPT: attempt}
                    if permit is not None and permit.probe:
                        attributes[PROBE] = True
                    span = self.tracer.start_span(
                        f"attempt {agent}", context=trace.set_span_in_context(run_span), links=links,
                        attributes=attributes)
                    if first_attempt is None:
                        first_attempt = span.get_span_context()
                    started = self.clock()
                    try:
                        ok, value = yield ("call", agent, span)
                    except GeneratorExit:       # the run was interrupted: no outcome to hold against the agent
                        breaker.cancel(permit)
                        span.end()              # no error status, as the agent run's own span (tracing.interrupted)
                        raise
                    latency = self.clock() - started
                    if ok:
                        span.end()
                        breaker.record_success(permit)
                        self._observe(task_type, agent, True, latency, value)
                        run_span.set_attribute(GEN_AI_AGENT_NAME, agent)
                        return value
                    span.record_exception(value)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, error_type(value)))
                    span.end()
                    if not policy.is_retryable(value):
                        breaker.cancel(permit)
                        raise value
                    breaker.record_failure(permit)
                    self._observe(task_type, agent, False, latency, value)
                    last_error = value
                    if attempt < policy.max_attempts and breaker.state != OPEN:
                        yield ("sleep", policy.backoff(attempt), None)
                if called:
                    previous, reason = agent, error_type(last_error)
                elif previous is None:
                    previous, reason = agent, "circuit_open"
            if last_error is not None:
                raise last_error
            raise CircuitOpenError(order)
        except GeneratorExit:       # interrupted: no outcome, no error status (as the attempt's span)
            raise
        except BaseException as exc:
            run_span.set_status(trace.Status(trace.StatusCode.ERROR, error_type(exc)))
            raise
        finally:
            run_span.end()

    def _workflow(self, workflow: str):
        if self.telemetry is None:
            raise ValueError("recording a task as a workflow run needs the Healer's telemetry")
        return self.telemetry.workflow(workflow)

    def _observe(self, task_type: str, agent: str, ok: bool, latency: float, value) -> None:
        if self.selector is None:
            return
        cost = self.cost_of(agent, value) if self.cost_of is not None else None
        score = self.score_of(agent, value) if ok and self.score_of is not None else None
        self.selector.observe(task_type, agent, ok, latency, cost, score)

    def _retry(self, span, agent: str, attempt: int, error: BaseException | None) -> None:
        kind = error_type(error) if error is not None else "unknown"
        self._record(span, events.Retry(agent=agent, attempt=attempt, error_type=kind))

    def _fallback(self, span, from_agent: str, to_agent: str, reason: str) -> None:
        self._record(span, events.Fallback(from_agent=from_agent, to_agent=to_agent, reason=reason))

    def _record(self, span, event) -> None:
        """The event to the telemetry, with the run's span current so its span event lands there;
        without telemetry, the same span event straight from tracing.py."""
        with trace.use_span(span, end_on_exit=False):
            if self.telemetry is not None:
                self.telemetry.record(event)
            else:
                GenAITracer(self.tracer).event_span(event)

