"""The in-process API: exact series through prometheus_client's own parsers, and the spans behind them."""

import asyncio
import contextvars
import enum
import functools
import inspect
import logging
import math
import subprocess
import sys
import textwrap

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import catalog, events, tracing
from agent_exporter.config import Config, MetricsConfig, ModelPrice, TracingConfig
from agent_exporter.healing import Healer
from agent_exporter.telemetry import Telemetry

PRICES = {"gpt-4o": ModelPrice(input=2.5, output=10.0)}
ORCHESTRATOR_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ORCHESTRATOR_SPAN = "00f067aa0ba902b7"

EXECUTIONS = catalog.AGENT_EXECUTIONS.name
DURATION = catalog.AGENT_EXECUTION_DURATION.name
ERRORS = catalog.AGENT_ERRORS.name
TOKENS = catalog.LLM_TOKENS.name
COST = catalog.LLM_COST.name
UNKNOWN = catalog.USAGE_UNKNOWN.name
TOOL_CALLS = catalog.TOOL_CALLS.name
RUNTIME = ("process_", "python_")       # the process's own metrics, as prometheus_client's default registry's
TOOL_DURATION = catalog.TOOL_CALL_DURATION.name
TRANSITIONS = catalog.STATE_TRANSITIONS.name


def samples(tel: Telemetry, openmetrics: bool = False) -> dict:
    """{(sample name, frozenset(labels)): value}, parsed by prometheus_client; the process's own
    (process_*, python_*), which move between two renders, left out."""
    parse = parse_openmetrics if openmetrics else parse_text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parse(tel.render(openmetrics).decode()) if not family.name.startswith(RUNTIME)
            for s in family.samples}


def value(tel: Telemetry, name: str, **labels) -> float:
    return samples(tel)[(name, frozenset(labels.items()))]


def names(tel: Telemetry) -> set:
    return {name for name, _ in samples(tel)}


def exemplars(tel: Telemetry, name: str) -> list:
    """(labels, exemplar) for every bucket of `name` that carries an exemplar, from OpenMetrics."""
    return [(s.labels, s.exemplar) for family in parse_openmetrics(tel.render(True).decode())
            for s in family.samples if s.name == name + "_bucket" and s.exemplar is not None]


@pytest.fixture
def tel(spans):
    provider, _ = spans
    return Telemetry(Config(metrics=MetricsConfig(prices=PRICES)), tracer_provider=provider)


def finished(exporter, name: str):
    matches = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(matches) == 1, [s.name for s in exporter.get_finished_spans()]
    return matches[0]


# -- every event type, exact values ---------------------------------------------


def test_agent_execution_with_priced_usage(tel, spans):
    with tel.agent_execution("planner", model="gpt-4o") as run:
        run.usage(input_tokens=1000, output_tokens=200)
        run.usage(input_tokens=200, output_tokens=100)   # usage adds up over LLM calls
    assert value(tel, EXECUTIONS, agent="planner", status="success") == 1
    assert value(tel, DURATION + "_count", agent="planner") == 1
    assert value(tel, TOKENS, agent="planner", model="gpt-4o", type="input") == 1200
    assert value(tel, TOKENS, agent="planner", model="gpt-4o", type="output") == 300
    assert value(tel, COST, agent="planner", model="gpt-4o") == pytest.approx((1200 * 2.5 + 300 * 10) / 1e6)
    assert UNKNOWN not in names(tel)
    span = finished(spans[1], "invoke_agent planner")
    assert span.kind == trace.SpanKind.INTERNAL
    assert dict(span.attributes) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
        "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "orchestrator.cost_usd": pytest.approx((1200 * 2.5 + 300 * 10) / 1e6)}


def test_every_metric_of_an_execution_carries_the_extra_labels():
    """metrics.extra_labels: a team slicing tokens, errors or time to first token by feature gets
    them on every execution metric, not only on the count, duration and cost."""
    tel = Telemetry(Config(metrics=MetricsConfig(extra_labels=("feature",), prices=PRICES)))
    with tel.agent_execution("coder", model="gpt-4o", feature="login") as run:
        run.first_token()
        run.usage(input_tokens=100, output_tokens=20)
    with pytest.raises(TimeoutError), tel.agent_execution("coder", model="unpriced", feature="login"):
        raise TimeoutError
    login = {"agent": "coder", "feature": "login"}
    assert value(tel, catalog.LLM_TOKENS.name, model="gpt-4o", type="input", **login) == 100
    assert value(tel, catalog.AGENT_ERRORS.name, error_type="TimeoutError", **login) == 1
    assert value(tel, catalog.LLM_TIME_TO_FIRST_TOKEN.name + "_count", model="gpt-4o", **login) == 1
    assert value(tel, catalog.USAGE_UNKNOWN.name, **login) == 1
    tel.shutdown()


def test_set_model_names_the_model_that_answered_on_the_running_span(tel, spans):
    with tel.agent_execution("planner", model="gpt-4o") as run:
        run.set_model("gpt-4o-2024-08-06")
        run.usage(input_tokens=10, output_tokens=5)
    with tel.agent_execution("coder") as run:
        run.set_model("llama-local")
    planner = finished(spans[1], "invoke_agent planner").attributes
    coder = finished(spans[1], "invoke_agent coder").attributes
    assert (planner["gen_ai.request.model"], planner["gen_ai.response.model"]) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert ("gen_ai.request.model" not in coder, coder["gen_ai.response.model"]) == (True, "llama-local")
    assert value(tel, TOKENS, agent="planner", model="gpt-4o-2024-08-06", type="input") == 10


def test_set_model_after_the_run_leaves_its_ended_span_alone(tel, spans, caplog):
    with tel.agent_execution("planner", model="gpt-4o") as run:
        pass
    with pytest.warns(RuntimeWarning, match=r"run.set_model\(\) after the run of 'planner' ended: not recorded"):
        run.set_model("gpt-4o-mini")
    assert finished(spans[1], "invoke_agent planner").attributes["gen_ai.request.model"] == "gpt-4o"
    assert "gen_ai.response.model" not in finished(spans[1], "invoke_agent planner").attributes
    assert "ended span" not in caplog.text


def test_usage_reported_after_the_run_ended_is_a_warning_not_a_silent_loss(tel):
    with tel.agent_execution("planner", model="gpt-4o") as run:
        pass
    with pytest.warns(RuntimeWarning, match=r"run.usage\(\) after the run of 'planner' ended: not recorded"):
        run.usage(input_tokens=5)
    with pytest.warns(RuntimeWarning, match=r"run.first_token\(\)"):
        run.first_token()
    with pytest.raises(ValueError):         # a bad argument is still refused first
        run.usage(input_tokens=-1)
    assert value(tel, UNKNOWN, agent="planner") == 1
    assert (TOKENS, frozenset({"agent": "planner", "model": "gpt-4o", "type": "input"}.items())) not in samples(tel)


def test_given_cost_wins_and_unpriced_or_missing_usage_is_unknown_not_free(tel):
    with tel.agent_execution("planner", model="gpt-4o") as run:
        run.usage(input_tokens=10, output_tokens=10, cost_usd=0.5)
    with tel.agent_execution("coder") as run:
        run.set_model("llama-local")          # no price configured
        run.usage(input_tokens=50, output_tokens=5)
    with tel.agent_execution("idle"):
        pass
    assert value(tel, COST, agent="planner", model="gpt-4o") == 0.5
    assert value(tel, TOKENS, agent="coder", model="llama-local", type="input") == 50
    assert ((COST, frozenset({"agent": "coder", "model": "llama-local"}.items()))) not in samples(tel)
    assert value(tel, UNKNOWN, agent="coder") == 1
    assert value(tel, UNKNOWN, agent="idle") == 1


def test_str_valued_enums_are_their_values_as_json_sends_them(tel):
    # States and agents are often a `class State(str, Enum)`: since 3.11 their str() is
    # "State.PLANNING", which made series of their own beside those of the posted events.
    class State(str, enum.Enum):
        PLANNING = "planning"
        CODING = "coding"

    class Agent(str, enum.Enum):
        PLANNER = "planner"

    tel.state_transition(State.PLANNING, State.CODING, workflow="feature")
    tel.record({"type": "state_transition", "from_state": "planning", "to_state": "coding", "workflow": "feature"})
    with tel.agent_execution(Agent.PLANNER):
        with tel.tool_call("web_search", agent=Agent.PLANNER):
            pass
    with tel.agent_execution("planner"):
        pass
    assert value(tel, TRANSITIONS, workflow="feature", from_state="planning", to_state="coding") == 2
    assert value(tel, EXECUTIONS, agent="planner", status="success") == 2
    assert {labels for name, labels in samples(tel) if name == TOOL_CALLS} == {   # error: at 0, from the start
        frozenset({("tool", "web_search"), ("status", "success")}),
        frozenset({("tool", "web_search"), ("status", "error")})}
    assert "State." not in tel.render().decode() and "Agent." not in tel.render().decode()


def test_tool_calls_know_their_agent_and_transitions_count(tel, spans):
    with tel.agent_execution("planner"):
        with tel.tool_call("web_search") as call:
            assert call.agent == "planner"
        tel.state_transition("planning", "coding", workflow="feature")
    tel.state_transition("coding", "review")
    assert value(tel, TOOL_CALLS, tool="web_search", status="success") == 1
    assert value(tel, TOOL_DURATION + "_count", tool="web_search") == 1
    assert value(tel, TRANSITIONS, workflow="feature", from_state="planning", to_state="coding") == 1
    assert value(tel, TRANSITIONS, workflow="default", from_state="coding", to_state="review") == 1

    exporter = spans[1]
    agent = finished(exporter, "invoke_agent planner")
    tool = finished(exporter, "execute_tool web_search")
    assert tool.parent.span_id == agent.context.span_id
    assert dict(tool.attributes) == {"gen_ai.operation.name": "execute_tool",
                                     "gen_ai.tool.name": "web_search", "gen_ai.agent.name": "planner"}
    assert [(e.name, dict(e.attributes)) for e in agent.events] == [(tracing.STATE_TRANSITION_EVENT, {
        "orchestrator.state.from": "planning", "orchestrator.state.to": "coding",
        "orchestrator.workflow": "feature", "gen_ai.agent.name": "planner"})]
    # Outside any span the transition gets a zero-length span of its own.
    lone = finished(exporter, "state_transition default")
    assert [e.name for e in lone.events] == [tracing.STATE_TRANSITION_EVENT]


def test_record_every_event_type(tel):
    for event in [
        {"type": "agent_execution", "agent": "a", "status": "error", "duration_seconds": 3.0,
         "error_type": "RateLimited", "model": "gpt-4o", "input_tokens": 100, "output_tokens": 10},
        {"type": "tool_call", "tool": "grep", "status": "error", "duration_seconds": 0.02, "agent": "a"},
        {"type": "state_transition", "from_state": "x", "to_state": "y", "workflow": "w"},
        {"type": "retry", "agent": "a", "attempt": 2, "error_type": "RateLimited"},
        {"type": "fallback", "from_agent": "a", "to_agent": "b", "reason": "circuit_open"},
        {"type": "circuit_state", "agent": "a", "state": "half_open"},
    ]:
        tel.record(event)
    tel.set_circuit_state("b", "open")
    tel.set_selector_weight("code_review", "b", 0.75)

    got = samples(tel)
    assert value(tel, EXECUTIONS, agent="a", status="error") == 1
    assert value(tel, ERRORS, agent="a", error_type="RateLimited") == 1
    assert value(tel, DURATION + "_sum", agent="a") == 3.0
    assert value(tel, DURATION + "_bucket", agent="a", le="2.5") == 0
    assert value(tel, DURATION + "_bucket", agent="a", le="5.0") == 1
    assert value(tel, COST, agent="a", model="gpt-4o") == pytest.approx((100 * 2.5 + 10 * 10) / 1e6)
    assert value(tel, TOOL_CALLS, tool="grep", status="error") == 1
    assert value(tel, TRANSITIONS, workflow="w", from_state="x", to_state="y") == 1
    assert value(tel, catalog.RETRIES.name, agent="a", error_type="RateLimited") == 1
    assert value(tel, catalog.FALLBACKS.name, from_agent="a", to_agent="b") == 1
    assert value(tel, catalog.CIRCUIT_BREAKER_STATE.name, agent="a") == 1
    assert value(tel, catalog.CIRCUIT_BREAKER_STATE.name, agent="b") == 2
    assert value(tel, catalog.SELECTOR_WEIGHT.name, task="code_review", agent="b") == 0.75
    by_type = {dict(labels)["type"]: v for (name, labels), v in got.items()
               if name == catalog.EXPORTER_EVENTS.name}
    # Every type's counter exists from the start (at 0), so rate() sees a type's first event.
    assert by_type == {"agent_execution": 1, "tool_call": 1, "state_transition": 1, "retry": 1,
                       "fallback": 1, "circuit_state": 2, "workflow_run": 0, "evaluation": 0}


def test_record_batch_applies_decoded_events(tel):
    batch = events.decode_body(
        b'{"type":"tool_call","tool":"t","status":"success","duration_seconds":0.1}\n'
        b'{"type":"tool_call","tool":"t","status":"success","duration_seconds":0.2}\n',
        "application/x-ndjson")
    tel.record_batch(batch.events)
    assert value(tel, TOOL_CALLS, tool="t", status="success") == 2
    assert value(tel, TOOL_DURATION + "_sum", tool="t") == pytest.approx(0.3)


def test_an_agent_past_the_series_cap_is_counted_as_folded_on_every_execution():
    """The API keeps each label set's series; one folded into __overflow__ must not be kept,
    or only its first execution would count as folded."""
    # Two slots: agent "a" under both statuses.
    tel = Telemetry(Config(metrics=MetricsConfig(max_series=2), tracing=TracingConfig(enabled=False)))
    for agent in ("a", "a", "b", "b", "b"):
        with tel.agent_execution(agent, model="m") as run:
            run.usage(input_tokens=1, output_tokens=1, cost_usd=0.1)
    assert value(tel, EXECUTIONS, agent="a", status="success") == 2
    assert value(tel, EXECUTIONS, agent="__overflow__", status="__overflow__") == 3
    assert value(tel, catalog.EXPORTER_SERIES_OVERFLOW.name, metric=EXECUTIONS) == 3


# -- failures ---------------------------------------------------------------------


def test_exception_records_error_with_its_class_name_then_propagates(tel, spans):
    class QuotaExceeded(RuntimeError):
        pass

    with pytest.raises(QuotaExceeded):
        with tel.agent_execution("planner") as run:
            run.usage(input_tokens=5, output_tokens=1)
            with tel.tool_call("web_search"):
                raise QuotaExceeded("429")
    assert value(tel, EXECUTIONS, agent="planner", status="error") == 1
    assert value(tel, ERRORS, agent="planner", error_type="QuotaExceeded") == 1
    assert value(tel, TOOL_CALLS, tool="web_search", status="error") == 1
    assert value(tel, TOKENS, agent="planner", model="unknown", type="input") == 5
    for name in ("invoke_agent planner", "execute_tool web_search"):
        span = finished(spans[1], name)
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes["error.type"] == "QuotaExceeded"
        assert [e.name for e in span.events] == ["exception"]


def test_a_run_cancelled_from_outside_is_no_outcome_but_its_usage_counts(tel, spans):
    """A hedge that lost, the siblings of a failed TaskGroup task, a timeout around the run: the
    agent did not fail.  No execution, duration or error; the tokens and cost it spent count; the
    spans end without an error status, as opentelemetry's use_span() leaves them."""
    async def hedge(agent: str, seconds: float) -> str:
        async with tel.workflow("answer"), tel.agent_execution(agent, model="gpt-4o") as run:
            run.usage(input_tokens=100, output_tokens=0)
            async with tel.tool_call("web_search"):
                await asyncio.sleep(seconds)
            run.usage(output_tokens=10)
            return agent

    async def race() -> str:
        tasks = [asyncio.create_task(hedge("fast", 0)), asyncio.create_task(hedge("slow", 30))]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return done.pop().result()

    async def timed_out_around_the_run() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await hedge("slow", 30)

    assert asyncio.run(race()) == "fast"
    asyncio.run(timed_out_around_the_run())
    metrics = samples(tel)
    assert metrics[(EXECUTIONS, frozenset({("agent", "fast"), ("status", "success")}))] == 1
    assert not [key for key, count in metrics.items() if count and ("agent", "slow") in key[1]
                and key[0] in (EXECUTIONS, DURATION + "_count", ERRORS)]
    assert value(tel, TOKENS, agent="slow", model="gpt-4o", type="input") == 200      # spent all the same
    assert value(tel, COST, agent="slow", model="gpt-4o") == pytest.approx(2 * 100 * 2.5e-6)
    assert value(tel, TOOL_CALLS, tool="web_search", status="success") == 1
    assert metrics.get((TOOL_CALLS, frozenset({("tool", "web_search"), ("status", "error")})), 0) == 0
    assert value(tel, catalog.WORKFLOW_RUNS.name, workflow="answer", status="success") == 1
    assert metrics.get((catalog.WORKFLOW_RUNS.name, frozenset({("workflow", "answer"), ("status", "error")})), 0) == 0
    ended = spans[1].get_finished_spans()
    assert len(ended) == 9 and {s.status.status_code for s in ended} == {StatusCode.UNSET}
    assert not [s for s in ended if "error.type" in s.attributes or s.events]


def test_a_cancelled_future_the_run_awaited_is_the_runs_error(tel):
    """A CancelledError while nobody cancels the run's task (a job its executor dropped): a failure."""
    async def waits_for_a_dropped_job() -> None:
        job = asyncio.get_running_loop().create_future()
        job.cancel()
        async with tel.agent_execution("coder"):
            await job

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(waits_for_a_dropped_job())
    assert value(tel, EXECUTIONS, agent="coder", status="error") == 1
    assert value(tel, ERRORS, agent="coder", error_type="CancelledError") == 1


def test_a_timeout_inside_the_run_is_the_runs_error(tel):
    async def bounded() -> None:
        async with tel.agent_execution("slow"):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(30)

    with pytest.raises(TimeoutError):
        asyncio.run(bounded())
    assert value(tel, EXECUTIONS, agent="slow", status="error") == 1
    assert value(tel, ERRORS, agent="slow", error_type="TimeoutError") == 1


# -- async and decorators -----------------------------------------------------------


def test_async_with_and_decorators(tel, spans):
    @tel.agent_execution("async_agent", model="gpt-4o")
    async def plan():
        Telemetry.current_run().usage(input_tokens=100, output_tokens=0)
        await asyncio.sleep(0)
        async with tel.tool_call("fetch") as call:
            return call.agent

    @tel.tool_call("lookup")
    def lookup():
        return Telemetry.current_run().agent

    @tel.agent_execution("sync_agent")
    def work():
        return lookup()

    @tel.agent_execution("failing")
    async def fail():
        raise ValueError("bad plan")

    async def main():
        async with tel.agent_execution("outer") as run:
            run.usage(output_tokens=7)
        results = await asyncio.gather(plan(), plan())
        with pytest.raises(ValueError):
            await fail()
        return results

    assert asyncio.run(main()) == ["async_agent", "async_agent"]
    assert work() == "sync_agent"
    assert work() == "sync_agent"
    assert value(tel, EXECUTIONS, agent="outer", status="success") == 1
    assert value(tel, EXECUTIONS, agent="async_agent", status="success") == 2
    assert value(tel, TOKENS, agent="async_agent", model="gpt-4o", type="input") == 200
    assert value(tel, EXECUTIONS, agent="sync_agent", status="success") == 2
    assert value(tel, TOOL_CALLS, tool="lookup", status="success") == 2
    assert value(tel, TOOL_CALLS, tool="fetch", status="success") == 2
    assert value(tel, ERRORS, agent="failing", error_type="ValueError") == 1
    assert Telemetry.current_run() is None
    # The concurrent runs each parent their own tool span.
    agents = [s for s in spans[1].get_finished_spans() if s.name == "invoke_agent async_agent"]
    tools = [s for s in spans[1].get_finished_spans() if s.name == "execute_tool fetch"]
    assert {t.parent.span_id for t in tools} == {a.context.span_id for a in agents}


def test_a_decorated_generator_is_one_run_for_its_whole_iteration(tel, spans):
    @tel.agent_execution("streamer")
    def stream(n):
        for i in range(n):
            Telemetry.current_run().usage(output_tokens=1)
            with tel.tool_call("chunk"):
                yield i

    @tel.tool_call("pages")
    def failing_pages():
        yield 1
        raise KeyError("page 2")

    assert inspect.isgeneratorfunction(stream)
    assert list(stream(3)) == [0, 1, 2]
    items = stream(10)
    assert next(items) == 0
    items.close()               # the consumer stops early: the run did not fail
    with pytest.raises(KeyError):
        list(failing_pages())
    assert value(tel, EXECUTIONS, agent="streamer", status="success") == 2
    assert value(tel, TOKENS, agent="streamer", model="unknown", type="output") == 4
    assert value(tel, TOOL_CALLS, tool="chunk", status="success") == 4
    assert value(tel, TOOL_CALLS, tool="pages", status="error") == 1
    assert (ERRORS, frozenset({("agent", "streamer"), ("error_type", "GeneratorExit")})) not in samples(tel)
    # The agent spans parent the tool spans of their iteration and end after them.
    finished_spans = spans[1].get_finished_spans()
    agents = {s.context.span_id: s for s in finished_spans if s.name == "invoke_agent streamer"}
    chunks = [s for s in finished_spans if s.name == "execute_tool chunk"]
    assert all(agents[c.parent.span_id].end_time >= c.end_time for c in chunks)


def test_a_decorated_async_generator_is_one_run_for_its_whole_iteration(tel):
    @tel.agent_execution("streamer")
    async def stream(n):
        for i in range(n):
            Telemetry.current_run().usage(output_tokens=1)
            await asyncio.sleep(0)
            yield i

    @tel.workflow("paging")
    async def failing_pages():
        yield 1
        raise KeyError("page 2")

    async def main():
        assert [i async for i in stream(3)] == [0, 1, 2]
        items = stream(10)
        assert await anext(items) == 0
        await items.aclose()    # the consumer stops early: the run did not fail
        with pytest.raises(KeyError):
            async for _ in failing_pages():
                pass

    assert inspect.isasyncgenfunction(stream)
    asyncio.run(main())
    assert value(tel, EXECUTIONS, agent="streamer", status="success") == 2
    assert value(tel, TOKENS, agent="streamer", model="unknown", type="output") == 4
    assert value(tel, catalog.WORKFLOW_RUNS.name, workflow="paging", status="error") == 1


def test_a_decorated_generator_takes_what_its_consumer_sends_and_throws(tel):
    # A generator used as a coroutine (an agent fed its next instruction) must behave decorated
    # as it does bare: values sent in reach it, and so do exceptions thrown in, which it may handle.
    def agent(name):
        @tel.agent_execution(name)
        def converse():
            reply = "ready"
            while True:
                try:
                    instruction = yield reply
                except TimeoutError:
                    reply = "retrying"
                else:
                    if instruction == "stop":
                        return
                    reply = f"did {instruction}"
        return converse

    @tel.agent_execution("async-conversation")
    async def converse_async():
        reply = "ready"
        while True:
            try:
                instruction = yield reply
            except TimeoutError:
                reply = "retrying"
            else:
                if instruction == "stop":
                    return
                reply = f"did {instruction}"

    conversation = agent("conversation")()
    assert next(conversation) == "ready"
    assert conversation.send("plan") == "did plan"
    assert conversation.throw(TimeoutError()) == "retrying"
    with pytest.raises(StopIteration):
        conversation.send("stop")

    async def main():
        items = converse_async()
        replies = [await items.asend(None), await items.asend("plan"), await items.athrow(TimeoutError())]
        with pytest.raises(StopAsyncIteration):
            await items.asend("stop")
        unhandled = converse_async()
        await unhandled.asend(None)
        with pytest.raises(KeyError):       # one it does not handle ends the run as an error
            await unhandled.athrow(KeyError("lost"))
        return replies

    assert asyncio.run(main()) == ["ready", "did plan", "retrying"]
    assert value(tel, EXECUTIONS, agent="conversation", status="success") == 1
    assert value(tel, EXECUTIONS, agent="async-conversation", status="success") == 1
    assert value(tel, ERRORS, agent="async-conversation", error_type="KeyError") == 1


def test_callable_objects_and_partials_are_decorated_as_what_they_call(tel):
    class Planner:
        async def __call__(self, task):
            await asyncio.sleep(0.05)
            raise RuntimeError(task)

    class Pages:
        def __call__(self):
            yield from (1, 2)

    async def fetch(url, timeout):
        await asyncio.sleep(0.05)
        return url

    planner = tel.agent_execution("planner")(Planner())
    fetch_one = tel.tool_call("fetch")(functools.partial(fetch, timeout=1))
    pages = tel.workflow("pages")(Pages())

    async def main():
        with pytest.raises(RuntimeError):
            await planner("plan")
        return await fetch_one("https://example.com")

    assert asyncio.run(main()) == "https://example.com"
    assert list(pages()) == [1, 2]
    # Recorded when the coroutine ends, not when the call returns it.
    assert value(tel, ERRORS, agent="planner", error_type="RuntimeError") == 1
    assert value(tel, catalog.AGENT_EXECUTION_DURATION.name + "_sum", agent="planner") >= 0.05
    assert value(tel, catalog.TOOL_CALL_DURATION.name + "_sum", tool="fetch") >= 0.05
    assert value(tel, catalog.WORKFLOW_RUNS.name, workflow="pages", status="success") == 1


def test_decorated_generators_side_by_side_leave_their_consumer_as_it_was(tel, spans):
    @tel.workflow("ingest")
    def read_rows():
        yield from range(3)

    @tel.agent_execution("scorer")
    def scores():
        yield from (0.1, 0.2, 0.3, 0.4)

    with tel.agent_execution("consumer"):
        consumer = Telemetry.current_run()
        for _row, _score in zip(read_rows(), scores(), strict=False):    # read_rows ends first; scores is left open
            # Between two steps the consumer's code is its own, not a generator's run.
            assert Telemetry.current_run() is consumer
            tel.state_transition("row", "scored")
        assert Telemetry.current_run() is consumer
    assert Telemetry.current_run() is None
    tel.state_transition("idle", "done")                      # outside any workflow
    assert value(tel, TRANSITIONS, workflow="default", from_state="row", to_state="scored") == 3
    assert value(tel, TRANSITIONS, workflow="default", from_state="idle", to_state="done") == 1
    # A run started afterwards is a trace of its own, not a child of a generator's span.
    with tel.agent_execution("later"):
        pass
    later = finished(spans[1], "invoke_agent later")
    assert later.parent is None

    @tel.agent_execution("first")
    async def first():
        for i in range(3):
            yield i

    @tel.agent_execution("second")
    async def second():
        for i in range(3):
            yield i

    async def main():
        one, two = first(), second()
        await anext(one)
        await anext(two)
        await one.aclose()                                    # closed in the order they started
        current = Telemetry.current_run()
        await two.aclose()
        return current, Telemetry.current_run()

    assert asyncio.run(main()) == (None, None)
    assert value(tel, EXECUTIONS, agent="first", status="success") == 1
    assert value(tel, EXECUTIONS, agent="second", status="success") == 1


def test_runs_in_an_async_generator_its_consumer_leaves_are_recorded(tel, spans, caplog):
    # The event loop finalizes an abandoned async generator in a task of its own, in another
    # Context than the one its scopes were entered in.
    async def stream():
        async with tel.workflow("streaming"), tel.agent_execution("streamer"), tel.tool_call("search"):
            for i in range(10):
                yield i

    @tel.agent_execution("decorated_streamer")
    async def decorated_stream():
        for i in range(10):
            yield i

    async def main():
        faults = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: faults.append(context))
        for items in (stream(), decorated_stream()):
            async for i in items:
                if i == 2:
                    break
        del items
        for _ in range(100):    # bounded: the finalizing tasks need a few turns of the loop
            if len(spans[1].get_finished_spans()) == 4:
                break
            await asyncio.sleep(0)
        return faults

    assert asyncio.run(main()) == []
    assert sorted(s.name for s in spans[1].get_finished_spans()) == [
        "execute_tool search", "invoke_agent decorated_streamer", "invoke_agent streamer",
        "invoke_workflow streaming"]
    assert value(tel, EXECUTIONS, agent="streamer", status="success") == 1
    assert value(tel, TOOL_CALLS, tool="search", status="success") == 1
    assert value(tel, EXECUTIONS, agent="decorated_streamer", status="success") == 1
    assert value(tel, catalog.WORKFLOW_RUNS.name, workflow="streaming", status="success") == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_scope_exited_in_another_context_still_records(tel, spans):
    for scope in (tel.agent_execution("planner"), tel.workflow("feature")):
        contextvars.copy_context().run(scope.__enter__)
        scope.__exit__(None, None, None)
    assert value(tel, EXECUTIONS, agent="planner", status="success") == 1
    assert value(tel, catalog.WORKFLOW_RUNS.name, workflow="feature", status="success") == 1
    assert len(spans[1].get_finished_spans()) == 2


def test_a_scope_object_cannot_be_entered_twice_at_once(tel):
    scope = tel.agent_execution("planner")
    with scope:
        with pytest.raises(RuntimeError):
            with scope:
                pass
    with scope:   # sequential reuse is fine
        pass
    assert value(tel, EXECUTIONS, agent="planner", status="success") == 2


# -- exemplars ------------------------------------------------------------------------


def test_exemplar_is_the_trace_id_of_the_span(tel, spans):
    with tel.agent_execution("planner") as run:
        with tel.tool_call("web_search") as call:
            pass
    span = finished(spans[1], "invoke_agent planner")
    trace_id = f"{span.context.trace_id:032x}"
    assert run.trace_id == call.trace_id == trace_id
    ((labels, exemplar),) = exemplars(tel, DURATION)
    assert labels["agent"] == "planner" and exemplar.labels == {"trace_id": trace_id}
    ((_, tool_exemplar),) = exemplars(tel, TOOL_DURATION)
    assert tool_exemplar.labels == {"trace_id": trace_id}


def test_recorded_event_with_ids_joins_that_trace(tel, spans):
    tel.record({"type": "agent_execution", "agent": "reviewer", "status": "success",
                "duration_seconds": 1.5, "timestamp": 1700000000.0,
                "trace_id": ORCHESTRATOR_TRACE, "span_id": ORCHESTRATOR_SPAN})
    span = finished(spans[1], "invoke_agent reviewer")
    assert f"{span.context.trace_id:032x}" == ORCHESTRATOR_TRACE
    assert span.parent.is_remote and f"{span.parent.span_id:016x}" == ORCHESTRATOR_SPAN
    assert (span.start_time, span.end_time) == (1_699_999_998_500_000_000, 1_700_000_000_000_000_000)
    ((_, exemplar),) = exemplars(tel, DURATION)
    assert exemplar.labels == {"trace_id": ORCHESTRATOR_TRACE}


def test_recorded_event_without_ids_gets_the_current_trace(tel, spans):
    with tel.tracer.start_as_current_span("orchestrator.execute_request") as outer:
        tel.record({"type": "tool_call", "tool": "grep", "status": "success", "duration_seconds": 0.5})
    tool = finished(spans[1], "execute_tool grep")
    assert tool.parent.span_id == outer.get_span_context().span_id
    ((_, exemplar),) = exemplars(tel, TOOL_DURATION)
    assert exemplar.labels == {"trace_id": f"{outer.get_span_context().trace_id:032x}"}


def test_record_without_span_export_takes_the_callers_trace():
    tel = Telemetry()   # tracing on but exporting nowhere: recorded events make no spans of their own
    app_tracer = TracerProvider().get_tracer("app")
    with app_tracer.start_as_current_span("request") as outer:
        tel.record({"type": "tool_call", "tool": "grep", "status": "success", "duration_seconds": 0.5})
    ((_, exemplar),) = exemplars(tel, TOOL_DURATION)
    assert exemplar.labels == {"trace_id": f"{outer.get_span_context().trace_id:032x}"}


def test_global_tracer_provider_only_when_asked():
    # A process sets the global provider once, so each case runs in a process of its own.
    script = textwrap.dedent("""
        import sys
        from opentelemetry import trace
        from agent_exporter.telemetry import Telemetry
        tel = Telemetry(global_tracer_provider=sys.argv[1] == "global")
        print(trace.get_tracer_provider() is tel.tracer_provider)
    """)
    for flag, expected in (("global", "True"), ("local", "False")):
        run = subprocess.run([sys.executable, "-c", script, flag], capture_output=True, text=True, check=True)
        assert run.stdout.strip() == expected


def test_unsampled_traces_leave_no_exemplar_and_no_spans():
    tel = Telemetry(Config(tracing=TracingConfig(sampling_rate=0.0)))
    with tel.agent_execution("planner") as run:
        pass
    assert run.trace_id is None
    assert exemplars(tel, DURATION) == []
    assert value(tel, EXECUTIONS, agent="planner", status="success") == 1
    tel.shutdown()


def test_switched_off_span_kinds_still_count(spans):
    provider, exporter = spans
    tel = Telemetry(Config(tracing=TracingConfig(trace_tool_calls=False, trace_state_transitions=False)),
                    tracer_provider=provider)
    with tel.agent_execution("planner"):
        with tel.tool_call("web_search") as call:
            pass
        tel.state_transition("a", "b")
    assert value(tel, TOOL_CALLS, tool="web_search", status="success") == 1
    assert value(tel, TRANSITIONS, workflow="default", from_state="a", to_state="b") == 1
    agent = finished(exporter, "invoke_agent planner")
    assert [s.name for s in exporter.get_finished_spans()] == ["invoke_agent planner"]
    assert agent.events == ()
    # With no tool span, the tool's exemplar is the enclosing agent span's trace.
    assert call.trace_id is None
    ((_, exemplar),) = exemplars(tel, TOOL_DURATION)
    assert exemplar.labels == {"trace_id": f"{agent.context.trace_id:032x}"}


@pytest.mark.parametrize("switched_off", ["trace_tool_calls", "trace_all_agents"])
def test_what_runs_inside_an_untraced_scope_keeps_the_nearest_traced_parent(spans, switched_off):
    provider, exporter = spans
    tel = Telemetry(Config(tracing=TracingConfig(**{switched_off: False})), tracer_provider=provider)
    with tel.workflow("feature"):
        with tel.agent_execution("outer"):
            with tel.tool_call("delegate"):
                with tel.agent_execution("inner"):
                    pass
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    assert len({s.context.trace_id for s in by_name.values()}) == 1
    parent = {name: next((p.name for p in by_name.values() if s.parent and p.context.span_id == s.parent.span_id),
                         None) for name, s in by_name.items()}
    if switched_off == "trace_tool_calls":
        assert parent == {"invoke_workflow feature": None, "invoke_agent outer": "invoke_workflow feature",
                          "invoke_agent inner": "invoke_agent outer"}
    else:
        assert parent == {"invoke_workflow feature": None, "execute_tool delegate": "invoke_workflow feature"}


# -- invalid arguments ----------------------------------------------------------------


@pytest.mark.parametrize("call, field", [
    (lambda tel: tel.agent_execution(""), "agent"),
    (lambda tel: tel.agent_execution("a" * 129), "agent"),
    (lambda tel: tel.agent_execution("planner", model=42), "model"),
    (lambda tel: tel.agent_execution(["planner"]), "agent"),               # unhashable: no cache key
    (lambda tel: tel.agent_execution("planner", feature={"a": 1}), "feature"),
    (lambda tel: tel.tool_call("", agent="planner"), "tool"),
    (lambda tel: tel.state_transition("", "b"), "from_state"),
    (lambda tel: tel.state_transition("a", "b", workflow="\ud800"), "workflow"),
    (lambda tel: tel.record({"type": "agent_execution", "agent": "a", "status": "maybe",
                             "duration_seconds": 1}), "status"),
    (lambda tel: tel.record({"type": "agent_execution", "agent": "a", "status": "success",
                             "duration_seconds": -1}), "duration_seconds"),
    (lambda tel: tel.record({"type": "tool_call", "tool": "t", "status": "success"}), "duration_seconds"),
    (lambda tel: tel.record({"type": "agent_execution", "agent": "a", "status": "success",
                             "duration_seconds": 1, "input_tokens": True}), "input_tokens"),
    (lambda tel: tel.set_circuit_state("a", "broken"), "state"),
    (lambda tel: tel.set_selector_weight("task", "a", math.nan), "weight"),
    (lambda tel: tel.set_selector_weight("", "a", 0.5), "task"),
])
def test_invalid_arguments_raise_value_error_naming_the_field_and_record_nothing(tel, spans, call, field):
    before = tel.store.render(True)
    with pytest.raises(ValueError) as raised:
        call(tel)
    assert raised.value.field == field
    assert tel.store.render(True) == before
    assert spans[1].get_finished_spans() == ()


@pytest.mark.parametrize("usage, field", [
    ({"input_tokens": -1}, "input_tokens"),
    ({"output_tokens": 1.5}, "output_tokens"),
    ({"reasoning_tokens": math.nan}, "reasoning_tokens"),
    ({"input_tokens": 1e300}, "input_tokens"),
    ({"cost_usd": math.inf}, "cost_usd"),
    ({"input_tokens": 10, "cost_usd": "free"}, "cost_usd"),
])
def test_invalid_usage_raises_and_adds_nothing(tel, usage, field):
    with tel.agent_execution("planner", model="gpt-4o") as run:
        run.usage(input_tokens=1, output_tokens=1)
        with pytest.raises(ValueError) as raised:
            run.usage(**usage)
        assert raised.value.field == field
        with pytest.raises(ValueError):
            run.set_model("")
    assert (run.input_tokens, run.output_tokens, run.cost_usd, run.model) == (1, 1, None, "gpt-4o")
    assert value(tel, TOKENS, agent="planner", model="gpt-4o", type="input") == 1


@pytest.mark.parametrize("field, limit", [
    ("input_tokens", events.MAX_TOKENS), ("output_tokens", events.MAX_TOKENS),
    ("cache_read_tokens", events.MAX_TOKENS), ("reasoning_tokens", events.MAX_TOKENS), ("cost_usd", events.MAX_USD),
])
def test_the_totals_of_several_usage_calls_are_held_to_one_calls_bounds(tel, field, limit):
    other = "input_tokens" if field != "input_tokens" else "output_tokens"
    with tel.agent_execution("planner", model="gpt-4o") as run:
        run.usage(**{field: limit})
        with pytest.raises(ValueError) as raised:
            run.usage(**{field: limit, other: 5})
        assert raised.value.field == field and "total" in str(raised.value)
    assert getattr(run, field) == limit and getattr(run, other) is None     # the refused call added nothing


@pytest.mark.parametrize("make, message", [
    (lambda: Telemetry(config={"metrics": {"enabled": False}}), "^config: expected a Config"),
    (lambda: Telemetry().serve(9464), "^listen address 9464: expected a HOST:PORT string"),
    (lambda: Telemetry().serve(0), "^listen address 0: expected a HOST:PORT string"),     # not the default
    (lambda: Telemetry().serve("127.0.0.1:0", remediator=Healer()), "^remediator: expected the Healer's "
     "healing.AlertRemediator"),                        # a 500 on every /v1/agents and webhook otherwise
    (lambda: Telemetry().asgi_app(remediator=1), "^remediator: expected"),
])
def test_a_wrong_kind_of_argument_is_a_value_error_saying_what_is_expected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("openmetrics", [False, True])
def test_metrics_include_the_process_s_own_as_prometheus_client_serves_them(openmetrics):
    parse = parse_openmetrics if openmetrics else parse_text
    body = Telemetry().render(openmetrics).decode()
    names = {family.name for family in parse(body)}
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds", "python_info",
            "python_gc_collections"} <= names
    assert catalog.EXPORTER_EVENTS.name.removesuffix("_total") in names
    assert body.count("# EOF") == (1 if openmetrics else 0) and (body.endswith("# EOF\n") or not openmetrics)
    # metrics.enabled: false serves none at all, as enabled: false.
    for config in (Config(metrics=MetricsConfig(enabled=False)), Config(enabled=False)):
        assert Telemetry(config).render(openmetrics) == (b"# EOF\n" if openmetrics else b"")


def test_usage_takes_integral_float_counts_as_the_event_schema_does(tel):
    # A usage object parsed from JSON into floats: 1200.0 is 1200, as tel.record() and /v1/events take it.
    with tel.agent_execution("planner", model="gpt-4o") as run:
        run.usage(input_tokens=1200.0, output_tokens=3e2, cache_read_tokens=0.0, reasoning_tokens=5.0)
    assert (run.input_tokens, run.output_tokens, run.cache_read_tokens, run.reasoning_tokens) == (1200, 300, 0, 5)
    assert all(type(n) is int for n in (run.input_tokens, run.output_tokens, run.cache_read_tokens))
    assert value(tel, TOKENS, agent="planner", model="gpt-4o", type="input") == 1200
    assert value(tel, TOKENS, agent="planner", model="gpt-4o", type="reasoning") == 5


# -- telemetry faults ---------------------------------------------------------------------


class BrokenTracer(trace.Tracer):
    def start_span(self, *args, **kwargs):
        raise RuntimeError("tracer is broken")

    def start_as_current_span(self, *args, **kwargs):
        raise RuntimeError("tracer is broken")


class BrokenTracerProvider(trace.TracerProvider):
    def get_tracer(self, *args, **kwargs):
        return BrokenTracer()


def test_a_broken_tracer_never_reaches_the_caller():
    tel = Telemetry(tracer_provider=BrokenTracerProvider())
    with tel.agent_execution("planner") as run:
        with tel.tool_call("web_search"):
            tel.state_transition("a", "b")
    tel.record({"type": "agent_execution", "agent": "planner", "status": "success", "duration_seconds": 1})
    assert run.trace_id is None
    assert value(tel, EXECUTIONS, agent="planner", status="success") == 2
    assert value(tel, TOOL_CALLS, tool="web_search", status="success") == 1


class FailingProcessor(SpanProcessor):
    """A span processor that raises where the SDK calls it: on a span's start or on its end."""

    def __init__(self, when: str):
        self.when = when

    def on_start(self, span, parent_context=None):
        if self.when == "start":
            raise RuntimeError("processor fails on start")

    def on_end(self, span):
        if self.when == "end":
            raise RuntimeError("processor fails on end")


@pytest.mark.parametrize("when", ["start", "end"])
def test_a_failing_span_processor_never_reaches_the_caller(when, caplog):
    provider = TracerProvider()
    provider.add_span_processor(FailingProcessor(when))
    tel = Telemetry(tracer_provider=provider)
    with tel.agent_execution("planner", model="gpt-4o") as run:
        run.usage(input_tokens=10, output_tokens=5, cost_usd=0.01)
    assert value(tel, EXECUTIONS, agent="planner", status="success") == 1
    assert value(tel, COST, agent="planner", model="gpt-4o") == 0.01
    assert f"span handling failed in GenAITracer.{when}_agent" in caplog.text


# -- provider construction -----------------------------------------------------------------


def test_tracer_provider_from_config():
    config = Config(service_name="svc", environment="dev", tracing=TracingConfig(sampling_rate=0.25))
    provider = tracing.build_tracer_provider(config)
    attributes = provider.resource.attributes
    assert (attributes["service.name"], attributes["deployment.environment.name"]) == ("svc", "dev")
    assert attributes["service.version"] == __import__("agent_exporter").__version__
    description = provider.sampler.get_description()
    assert description.startswith("ParentBased{root:TraceIdRatioBased{0.25}")
    provider.shutdown()


@pytest.mark.parametrize("endpoint, expected", [
    ("http://collector:4318", "http://collector:4318/v1/traces"),
    ("http://collector:4318/", "http://collector:4318/v1/traces"),
    ("https://otlp.example.com/custom/traces", "https://otlp.example.com/custom/traces"),
])
def test_otlp_http_endpoint(endpoint, expected):
    assert tracing.otlp_http_endpoint(endpoint) == expected


def test_unknown_otlp_protocol_is_an_error():
    with pytest.raises(ValueError, match="otlp_protocol"):
        tracing.otlp_exporter(TracingConfig(otlp_protocol="thrift"))


def test_the_registry_carries_the_store(tel):
    from prometheus_client import generate_latest
    with tel.agent_execution("planner"):
        pass
    families = {f.name: f for f in parse_text(generate_latest(tel.registry).decode())}
    assert catalog.AGENT_EXECUTIONS.family in families
