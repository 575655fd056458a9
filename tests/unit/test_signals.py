"""Cached and reasoning tokens priced right, streaming latency, workflow runs and quality scores:
exact values through prometheus_client's parsers, and the spans behind them."""

import asyncio

import pytest
from opentelemetry.trace import StatusCode
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import catalog, tracing, usage
from agent_exporter.config import Config, MetricsConfig, ModelPrice, TracingConfig
from agent_exporter.telemetry import Telemetry

# USD per million tokens, as the providers list them.
PRICES = {
    "gpt-4o": ModelPrice(input=2.50, output=10.00, cache_read=1.25),
    "o3": ModelPrice(input=2.00, output=8.00, cache_read=0.50, reasoning=8.00),
    "claude-sonnet": ModelPrice(input=3.00, output=15.00, cache_read=0.30, cache_write=3.75),
}

TOKENS = catalog.LLM_TOKENS.name
COST = catalog.LLM_COST.name
UNKNOWN = catalog.USAGE_UNKNOWN.name
TTFT = catalog.LLM_TIME_TO_FIRST_TOKEN.name
RUNS = catalog.WORKFLOW_RUNS.name
WORKFLOW_DURATION = catalog.WORKFLOW_DURATION.name
SCORE = catalog.EVALUATION_SCORE.name


def samples(tel: Telemetry) -> dict:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parse_text(tel.render().decode()) for s in family.samples}


def value(tel: Telemetry, name: str, **labels) -> float:
    return samples(tel)[(name, frozenset(labels.items()))]


def tokens_by_type(tel: Telemetry, agent: str, model: str) -> dict:
    return {dict(labels)["type"]: v for (name, labels), v in samples(tel).items()
            if name == TOKENS and dict(labels)["agent"] == agent and dict(labels)["model"] == model}


@pytest.fixture
def tel(spans):
    return Telemetry(Config(metrics=MetricsConfig(prices=PRICES)), tracer_provider=spans[0])


def finished(exporter, name: str):
    matches = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(matches) == 1, [s.name for s in exporter.get_finished_spans()]
    return matches[0]


# -- tokens and cost ----------------------------------------------------------------------


def test_openai_style_usage_counts_cached_tokens_inside_prompt_tokens(tel, spans):
    # OpenAI: prompt_tokens includes the cached tokens.
    openai_usage = {"prompt_tokens": 10_000, "completion_tokens": 500,
                    "prompt_tokens_details": {"cached_tokens": 8_000},
                    "completion_tokens_details": {"reasoning_tokens": 0}}
    with tel.agent_execution("planner", model="gpt-4o") as run:
        run.usage(**usage.from_openai(openai_usage))
    assert tokens_by_type(tel, "planner", "gpt-4o") == {
        "input": 2_000, "cache_read": 8_000, "output": 500, "reasoning": 0}
    # 2000 x $2.50 + 8000 x $1.25 + 500 x $10.00, per million
    assert value(tel, COST, agent="planner", model="gpt-4o") == pytest.approx(0.020)
    span = finished(spans[1], "invoke_agent planner")
    assert span.attributes["gen_ai.usage.input_tokens"] == 10_000       # the conventions' totals
    assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == 8_000
    assert span.attributes["gen_ai.usage.output_tokens"] == 500
    assert span.attributes["orchestrator.cost_usd"] == pytest.approx(0.020)


def test_openai_reasoning_tokens_are_billed_at_the_reasoning_price(tel, spans):
    openai_usage = {"prompt_tokens": 5_000, "completion_tokens": 3_000,
                    "prompt_tokens_details": {"cached_tokens": 1_000},
                    "completion_tokens_details": {"reasoning_tokens": 2_000}}
    with tel.agent_execution("solver", model="o3") as run:
        run.usage(**usage.from_openai(openai_usage))
    assert tokens_by_type(tel, "solver", "o3") == {
        "input": 4_000, "cache_read": 1_000, "output": 1_000, "reasoning": 2_000}
    # 4000 x $2 + 1000 x $0.50 + 1000 x $8 + 2000 x $8, per million
    assert value(tel, COST, agent="solver", model="o3") == pytest.approx(0.0325)
    usage_attributes = {k: v for k, v in finished(spans[1], "invoke_agent solver").attributes.items()
                        if k.startswith("gen_ai.usage.")}
    assert usage_attributes == {      # the conventions' totals, and no cache writes where there were none
        "gen_ai.usage.input_tokens": 5_000, "gen_ai.usage.cache_read.input_tokens": 1_000,
        "gen_ai.usage.output_tokens": 3_000, "gen_ai.usage.reasoning.output_tokens": 2_000}


def test_anthropic_style_usage_reports_cache_tokens_beside_input(tel, spans):
    # Anthropic: input_tokens excludes cache reads and writes.
    anthropic_usage = {"input_tokens": 1_200, "cache_creation_input_tokens": 10_000,
                       "cache_read_input_tokens": 50_000, "output_tokens": 800}
    with tel.agent_execution("coder", model="claude-sonnet") as run:
        run.usage(**usage.from_anthropic(anthropic_usage))
    assert tokens_by_type(tel, "coder", "claude-sonnet") == {
        "input": 1_200, "cache_write": 10_000, "cache_read": 50_000, "output": 800}
    # 1200 x $3 + 10000 x $3.75 + 50000 x $0.30 + 800 x $15, per million
    assert value(tel, COST, agent="coder", model="claude-sonnet") == pytest.approx(0.0681)
    span = finished(spans[1], "invoke_agent coder")
    assert span.attributes["gen_ai.usage.input_tokens"] == 61_200
    assert span.attributes["gen_ai.usage.cache_creation.input_tokens"] == 10_000


def test_a_sum_over_token_types_is_every_token_processed(tel):
    with tel.agent_execution("coder", model="claude-sonnet") as run:
        run.usage(input_tokens=100, output_tokens=20, cache_read_tokens=1000, cache_write_tokens=50,
                  reasoning_tokens=7)
    assert sum(tokens_by_type(tel, "coder", "claude-sonnet").values()) == 1177


def test_a_token_type_without_its_price_makes_the_cost_unknown(tel):
    with tel.agent_execution("coder", model="gpt-4o") as run:      # gpt-4o has no cache_write price
        run.usage(input_tokens=100, output_tokens=10, cache_write_tokens=500)
    with tel.agent_execution("coder", model="claude-sonnet") as run:   # ... nor claude-sonnet a reasoning one
        run.usage(input_tokens=100, output_tokens=10, reasoning_tokens=1)
    assert value(tel, UNKNOWN, agent="coder") == 2
    assert not [key for key in samples(tel) if key[0] == COST]
    assert tokens_by_type(tel, "coder", "gpt-4o")["cache_write"] == 500


def test_zero_tokens_of_an_unpriced_type_cost_nothing_and_keep_the_cost_known(tel):
    with tel.agent_execution("coder", model="gpt-4o") as run:
        run.usage(input_tokens=1000, output_tokens=0, cache_write_tokens=0)
    assert value(tel, COST, agent="coder", model="gpt-4o") == pytest.approx(0.0025)


def test_posted_events_are_priced_the_same_way(tel):
    tel.record({"type": "agent_execution", "agent": "coder", "status": "success", "duration_seconds": 2,
                "model": "claude-sonnet", "input_tokens": 1_200, "cache_write_tokens": 10_000,
                "cache_read_tokens": 50_000, "output_tokens": 800})
    assert value(tel, COST, agent="coder", model="claude-sonnet") == pytest.approx(0.0681)


def test_a_part_larger_than_its_total_leaves_zero_not_a_negative_count():
    """A provider's rounding can report more cached tokens than prompt tokens: run.usage() refuses
    a negative count, so the user's call would raise."""
    assert usage.from_openai({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 12}}) == {
        "input_tokens": 0, "cache_read_tokens": 12}
    assert usage.from_semconv(10, 5, cache_read=12, reasoning=7) == {
        "input_tokens": 0, "cache_read_tokens": 12, "output_tokens": 0, "reasoning_tokens": 7}


def test_semconv_usage_subtracts_the_cache_and_the_reasoning():
    assert usage.from_semconv(61_200, 900, cache_read=50_000, cache_creation=10_000, reasoning=100) == {
        "input_tokens": 1_200, "cache_read_tokens": 50_000, "cache_write_tokens": 10_000,
        "output_tokens": 800, "reasoning_tokens": 100}
    assert usage.from_semconv(10, None) == {"input_tokens": 10}


@pytest.mark.parametrize("mapped, field", [
    (lambda: usage.from_openai({"prompt_tokens": -5, "completion_tokens": 1}), "input_tokens"),
    (lambda: usage.from_openai({"prompt_tokens": "5", "completion_tokens": 1}), "input_tokens"),
    (lambda: usage.from_openai({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": "2"}}),
     "cache_read_tokens"),
    (lambda: usage.from_semconv("5", 3), "input_tokens"),
    (lambda: usage.from_semconv(5, 3, cache_read="2"), "cache_read_tokens"),
])
def test_a_providers_usage_that_is_not_counts_is_refused_naming_its_field(tel, mapped, field):
    """Not made into a plausible number (a negative count into 0) nor a TypeError naming nothing."""
    with tel.agent_execution("coder") as run:
        with pytest.raises(ValueError) as raised:
            run.usage(**mapped())
        assert raised.value.field == field
    assert run.input_tokens is None


def test_openai_responses_api_names():
    assert usage.from_openai({"input_tokens": 300, "output_tokens": 50,
                              "input_tokens_details": {"cached_tokens": 100},
                              "output_tokens_details": {"reasoning_tokens": 20}}) == {
        "input_tokens": 200, "cache_read_tokens": 100, "output_tokens": 30, "reasoning_tokens": 20}


# -- streaming --------------------------------------------------------------------------------


def test_first_token_feeds_the_time_to_first_token_histogram(tel, spans):
    with tel.agent_execution("writer", model="gpt-4o") as run:
        run.first_token()
        first = run.first_token_at
        run.first_token()                         # only the first call counts
    assert run.first_token_at == first
    ttft = first - run.started
    assert value(tel, TTFT + "_count", agent="writer", model="gpt-4o") == 1
    assert value(tel, TTFT + "_sum", agent="writer", model="gpt-4o") == pytest.approx(ttft)
    assert value(tel, TTFT + "_bucket", agent="writer", model="gpt-4o", le="0.05") == 1
    span = finished(spans[1], "invoke_agent writer")
    assert span.attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(ttft)


def test_time_to_first_token_from_an_event(tel):
    tel.record({"type": "agent_execution", "agent": "writer", "model": "gpt-4o", "status": "success",
                "duration_seconds": 4.0, "time_to_first_token_seconds": 1.2})
    assert value(tel, TTFT + "_bucket", agent="writer", model="gpt-4o", le="1.0") == 0
    assert value(tel, TTFT + "_bucket", agent="writer", model="gpt-4o", le="1.5") == 1
    assert value(tel, TTFT + "_sum", agent="writer", model="gpt-4o") == 1.2


# -- workflow runs ------------------------------------------------------------------------------


def test_workflow_parents_its_agents_and_counts_runs(tel, spans):
    with tel.workflow("feature") as wf:
        with tel.agent_execution("planner"):
            tel.state_transition("queued", "planning")
    with pytest.raises(TimeoutError):
        with tel.workflow("feature"):
            raise TimeoutError
    assert value(tel, RUNS, workflow="feature", status="success") == 1
    assert value(tel, RUNS, workflow="feature", status="error") == 1
    assert value(tel, WORKFLOW_DURATION + "_count", workflow="feature") == 2
    assert value(tel, catalog.STATE_TRANSITIONS.name, workflow="feature", from_state="queued",
                 to_state="planning") == 1
    workflows = [s for s in spans[1].get_finished_spans() if s.name == "invoke_workflow feature"]
    assert len(workflows) == 2
    ok, failed = workflows
    assert dict(ok.attributes) == {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "feature"}
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "TimeoutError"
    agent = finished(spans[1], "invoke_agent planner")
    assert agent.parent.span_id == ok.context.span_id
    assert wf.trace_id == f"{ok.context.trace_id:032x}"
    exemplar_traces = {s.exemplar.labels["trace_id"] for f in parse_openmetrics(tel.render(True).decode())
                       for s in f.samples if s.name == WORKFLOW_DURATION + "_bucket" and s.exemplar}
    assert exemplar_traces == {f"{failed.context.trace_id:032x}"}     # the bucket keeps its latest


def test_workflow_as_async_scope_and_decorator(tel):
    @tel.workflow("bugfix")
    async def fix():
        await asyncio.sleep(0)

    @tel.workflow("bugfix")
    def triage():
        return "ok"

    asyncio.run(fix())
    assert triage() == "ok"
    assert value(tel, RUNS, workflow="bugfix", status="success") == 2


def test_workflow_run_event_over_the_schema(tel, spans):
    tel.record({"type": "workflow_run", "workflow": "feature", "status": "error", "duration_seconds": 75.0,
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
                "timestamp": 1_700_000_000.0})
    assert value(tel, RUNS, workflow="feature", status="error") == 1
    assert value(tel, WORKFLOW_DURATION + "_bucket", workflow="feature", le="60.0") == 0
    assert value(tel, WORKFLOW_DURATION + "_bucket", workflow="feature", le="120.0") == 1
    span = finished(spans[1], "invoke_workflow feature")
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert span.end_time - span.start_time == 75 * 10**9


# -- quality ------------------------------------------------------------------------------------


def test_evaluate_records_a_score_and_a_span_event(tel, spans):
    with tel.agent_execution("coder") as run:
        run.evaluate("tests_pass", 0.8)
        run.evaluate("tests_pass", 0.35, label="fail")
    assert value(tel, SCORE + "_count", agent="coder", evaluator="tests_pass") == 2
    assert value(tel, SCORE + "_sum", agent="coder", evaluator="tests_pass") == pytest.approx(1.15)
    assert value(tel, SCORE + "_bucket", agent="coder", evaluator="tests_pass", le="0.3") == 0
    assert value(tel, SCORE + "_bucket", agent="coder", evaluator="tests_pass", le="0.4") == 1
    assert value(tel, SCORE + "_bucket", agent="coder", evaluator="tests_pass", le="0.8") == 2
    span = finished(spans[1], "invoke_agent coder")
    assert [(e.name, dict(e.attributes)) for e in span.events] == [
        (tracing.EVALUATION_RESULT_EVENT, {"gen_ai.evaluation.name": "tests_pass",
                                            "gen_ai.evaluation.score.value": 0.8}),
        (tracing.EVALUATION_RESULT_EVENT, {"gen_ai.evaluation.name": "tests_pass",
                                            "gen_ai.evaluation.score.value": 0.35,
                                            "gen_ai.evaluation.score.label": "fail"})]


def test_evaluation_event_with_ids_lands_in_that_trace(tel, spans):
    tel.record({"type": "evaluation", "agent": "coder", "evaluator": "judge", "score": 1.0,
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"})
    assert value(tel, SCORE + "_bucket", agent="coder", evaluator="judge", le="0.9") == 0
    assert value(tel, SCORE + "_bucket", agent="coder", evaluator="judge", le="1.0") == 1
    carrier = finished(spans[1], "evaluation judge")
    assert f"{carrier.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert [e.name for e in carrier.events] == [tracing.EVALUATION_RESULT_EVENT]


@pytest.mark.parametrize("score", [-0.1, 1.5, float("nan"), "high"])
def test_scores_outside_zero_to_one_are_refused(tel, score):
    with tel.agent_execution("coder") as run:
        with pytest.raises(ValueError) as raised:
            run.evaluate("judge", score)
    assert raised.value.field == "score"
    assert not [key for key in samples(tel) if key[0].startswith(SCORE)]


# -- switches ------------------------------------------------------------------------------------


def test_metrics_disabled_serves_no_catalog_metrics_but_keeps_spans(spans):
    tel = Telemetry(Config(metrics=MetricsConfig(enabled=False)), tracer_provider=spans[0])
    with tel.agent_execution("planner") as run:
        run.usage(input_tokens=1)
    tel.record({"type": "tool_call", "tool": "t", "status": "success", "duration_seconds": 1})
    assert tel.render() == b""
    assert tel.render(True) == b"# EOF\n"
    assert finished(spans[1], "invoke_agent planner")


def test_disabled_telemetry_is_a_no_op_that_still_checks_arguments():
    tel = Telemetry(Config(enabled=False))
    with tel.workflow("w"):
        with tel.agent_execution("planner") as run:
            run.usage(input_tokens=10)
            with tel.tool_call("t"):
                pass
    tel.record({"type": "retry", "agent": "a", "attempt": 2})
    assert tel.render() == b"" and tel.tracer_provider is None and run.trace_id is None
    with tel.serve("127.0.0.1:0") as handle:          # nothing is served
        assert handle.url is None
    with pytest.raises(ValueError):
        tel.agent_execution("")
    with pytest.raises(ValueError):
        tel.record({"type": "retry", "agent": "a"})


def test_tracing_disabled_still_takes_the_callers_trace_for_exemplars():
    from opentelemetry.sdk.trace import TracerProvider
    tel = Telemetry(Config(tracing=TracingConfig(enabled=False)))
    with TracerProvider().get_tracer("app").start_as_current_span("request") as outer:
        with tel.agent_execution("planner") as run:
            pass
    assert run.span is None and run.trace_id is None
    (exemplar,) = [s.exemplar for f in parse_openmetrics(tel.render(True).decode()) for s in f.samples
                   if s.exemplar is not None]
    assert exemplar.labels == {"trace_id": f"{outer.get_span_context().trace_id:032x}"}
