"""OTLP spans to events (agent_exporter.otlp): the mapping of every attribute name we read, attribution
to the enclosing agent, the bounded buffer, and the OTLP/HTTP answers.

Spans here are built by hand, one attribute name at a time, so that each name in docs/otlp.md has a
test; tests/integration/test_otlp_in*.py feed spans of real instrumentation libraries.
"""

import json
import time

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)
from otlp_spans import START, TRACE, agent_span, chat_span, request, span
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import catalog, otlp, stack
from agent_exporter.config import Config, MetricsConfig, ModelPrice, OTLPConfig
from agent_exporter.otlp import OTLPDecodeError, OTLPReceiver
from agent_exporter.telemetry import Telemetry

PRICES = {
    "gpt-4o": ModelPrice(input=2.50, output=10.00, cache_read=1.25),
    "o3": ModelPrice(input=2.00, output=8.00, cache_read=0.50, reasoning=8.00),
    "claude-sonnet": ModelPrice(input=3.00, output=15.00, cache_read=0.30, cache_write=3.75),
}


# -- reading the metrics ---------------------------------------------------------------

def samples(tel: Telemetry) -> dict:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parse_text(tel.render().decode()) for s in family.samples}


def value(tel, name, **labels) -> float:
    return samples(tel).get((name, frozenset(labels.items())), 0.0)


def tokens(tel, agent, model) -> dict:
    return {dict(labels)["type"]: v for (name, labels), v in samples(tel).items()
            if name == catalog.LLM_TOKENS.name and dict(labels)["agent"] == agent and dict(labels)["model"] == model}


def executions(tel) -> dict:
    """Counted executions by (agent, status); each label set's other status is there at 0 too."""
    return {(dict(labels)["agent"], dict(labels)["status"]): v for (name, labels), v in samples(tel).items()
            if name == catalog.AGENT_EXECUTIONS.name and v}


def spans_counted(tel) -> dict:
    return {dict(labels)["outcome"]: v for (name, labels), v in samples(tel).items()
            if name == catalog.EXPORTER_OTLP_SPANS.name and v}


def exemplar_trace_ids(tel, metric: str) -> set:
    families = parse_openmetrics(tel.render(openmetrics=True).decode())
    return {s.exemplar.labels["trace_id"] for f in families if f.name == metric for s in f.samples if s.exemplar}


@pytest.fixture
def tel():
    telemetry = Telemetry(Config(metrics=MetricsConfig(prices=PRICES)))
    yield telemetry
    telemetry.shutdown()


def receiver_for(tel, **otlp) -> OTLPReceiver:
    return OTLPReceiver(tel, Config(metrics=tel.config.metrics, otlp=OTLPConfig(**otlp)))


@pytest.fixture
def rx(tel):
    receiver = receiver_for(tel, attribution_wait_seconds=3600)
    yield receiver
    receiver.close()


def test_every_span_outcome_is_exposed_at_0_before_the_first_span(tel, rx):
    # A series that first appears at 1 shows no increase to rate(): the first rejected span would be missed.
    assert {dict(labels)["outcome"]: v for (name, labels), v in samples(tel).items()
            if name == catalog.EXPORTER_OTLP_SPANS.name} == {"mapped": 0, "ignored": 0, "rejected": 0}


# -- agent spans, with every token type ---------------------------------------------------

def test_invoke_agent_span_becomes_an_execution_with_disjoint_tokens_cost_and_exemplar(tel, rx):
    response = rx.export(request(agent_span(
        1, "coder", **{"gen_ai.request.model": "claude-sonnet", "gen_ai.response.model": "claude-sonnet-20250929",
                       "gen_ai.usage.input_tokens": 12_900, "gen_ai.usage.output_tokens": 300,
                       "gen_ai.usage.cache_read.input_tokens": 12_000,
                       "gen_ai.usage.cache_creation.input_tokens": 500,
                       "gen_ai.response.time_to_first_chunk": 0.42})))

    assert response == ExportTraceServiceResponse()
    assert executions(tel) == {("coder", "success"): 1}
    # The conventions' input includes the cache reads and writes: 12 900 - 12 000 - 500.
    assert tokens(tel, "coder", "claude-sonnet") == {"input": 400, "output": 300, "cache_read": 12_000,
                                                     "cache_write": 500}
    cost = (400 * 3.00 + 300 * 15.00 + 12_000 * 0.30 + 500 * 3.75) / 1e6
    assert value(tel, catalog.LLM_COST.name, agent="coder", model="claude-sonnet") == pytest.approx(cost)
    assert value(tel, catalog.AGENT_EXECUTION_DURATION.name + "_sum", agent="coder") == pytest.approx(1.5)
    assert value(tel, catalog.LLM_TIME_TO_FIRST_TOKEN.name + "_sum", agent="coder",
                 model="claude-sonnet") == pytest.approx(0.42)
    assert exemplar_trace_ids(tel, catalog.AGENT_EXECUTION_DURATION.name) == {TRACE.hex()}
    assert spans_counted(tel) == {"mapped": 1}


def test_failed_agent_span_gives_its_error_type(tel, rx):
    rx.export(request(
        span(1, {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "coder", "error.type": "timeout"},
             error=True),
        span(2, {"openinference.span.kind": "AGENT"}, name="reviewer_agent", error=True, exception="RateLimitError"),
        span(3, {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "tester"}, error=True)))

    assert executions(tel) == {("coder", "error"): 1, ("reviewer_agent", "error"): 1, ("tester", "error"): 1}
    errors = {dict(labels)["agent"]: dict(labels)["error_type"]
              for (name, labels), v in samples(tel).items() if name == catalog.AGENT_ERRORS.name}
    assert errors == {"coder": "timeout", "reviewer_agent": "RateLimitError", "tester": "unknown"}


def test_agent_name_comes_from_attributes_then_span_name_then_service(tel, rx):
    rx.export(request(
        span(1, {"gen_ai.operation.name": "invoke_agent"}, name="invoke_agent researcher"),
        span(2, {"gen_ai.operation.name": "invoke_agent"}, name="invoke_agent"),
        span(3, {"openinference.span.kind": "AGENT", "agent.name": "oi-named"}, name="AgentExecutor"),
        span(4, {"traceloop.span.kind": "agent", "traceloop.entity.name": "tl-agent"}, name="tl-agent.agent"),
        span(5, {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "asst_5j66UpCp"}, name="invoke_agent"),
        service="orders-service"))
    assert executions(tel) == {("researcher", "success"): 1, ("orders-service", "success"): 1,
                               ("oi-named", "success"): 1, ("tl-agent", "success"): 1, ("asst_5j66UpCp", "success"): 1}


# -- every usage attribute name, one family at a time -------------------------------------

USAGE_NAMES = [
    # (family, attributes, expected disjoint tokens)
    ("semconv v1.41.0", {"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 500,
                         "gen_ai.usage.cache_read.input_tokens": 600,
                         "gen_ai.usage.cache_creation.input_tokens": 100,
                         "gen_ai.usage.reasoning.output_tokens": 200},
     {"input": 300, "cache_read": 600, "cache_write": 100, "output": 300, "reasoning": 200}),
    ("semconv deprecated prompt/completion", {"gen_ai.usage.prompt_tokens": 1000, "gen_ai.usage.completion_tokens": 500},
     {"input": 1000, "output": 500}),
    ("opentelemetry-util-genai cache_write", {"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 500,
                                              "gen_ai.usage.cache_write.input_tokens": 250},
     {"input": 750, "cache_write": 250, "output": 500}),
    ("OpenLLMetry", {"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 500,
                     "gen_ai.usage.cache_read_input_tokens": 400, "gen_ai.usage.cache_creation_input_tokens": 100,
                     "gen_ai.usage.reasoning_tokens": 50},
     {"input": 500, "cache_read": 400, "cache_write": 100, "output": 450, "reasoning": 50}),
    ("OpenLLMetry llm.usage", {"gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": 5,
                               "llm.usage.reasoning_tokens": 3, "llm.usage.total_tokens": 15},
     {"input": 10, "output": 2, "reasoning": 3}),
    ("OpenInference", {"llm.token_count.prompt": 1000, "llm.token_count.completion": 500,
                       "llm.token_count.prompt_details.cache_read": 300,
                       "llm.token_count.prompt_details.cache_write": 200,
                       "llm.token_count.completion_details.reasoning": 100, "llm.token_count.total": 1500},
     {"input": 500, "cache_read": 300, "cache_write": 200, "output": 400, "reasoning": 100}),
    ("OpenLIT", {"gen_ai.usage.input_tokens": 80, "gen_ai.usage.output_tokens": 40,
                 "gen_ai.usage.completion_tokens_details.reasoning_tokens": 10},
     {"input": 80, "output": 30, "reasoning": 10}),
    ("total only", {"gen_ai.usage.total_tokens": 77}, {"unsplit": 77}),
    ("OpenLLMetry total only", {"llm.usage.total_tokens": 78}, {"unsplit": 78}),
    ("OpenInference total only", {"llm.token_count.total": 79}, {"unsplit": 79}),
]


@pytest.mark.parametrize("family,attributes,expected", USAGE_NAMES, ids=[u[0] for u in USAGE_NAMES])
def test_usage_names_of_each_family(tel, rx, family, attributes, expected):
    rx.export(request(span(1, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", **attributes})))
    assert tokens(tel, "orders-service", "m") == expected


OPENLIT_CACHED = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 50,
                  "gen_ai.usage.output_tokens": 20, "gen_ai.usage.cache_read.input_tokens": 10_000,
                  "gen_ai.usage.cache_creation.input_tokens": 2_000}


@pytest.mark.parametrize("provider", ["gen_ai.provider.name", "gen_ai.system"])
@pytest.mark.parametrize("name", ["anthropic", "aws.bedrock"])
def test_openlit_anthropic_and_bedrock_input_excludes_the_cache(tel, rx, provider, name):
    rx.export(request(span(1, {**OPENLIT_CACHED, provider: name}), scope=otlp.OPENLIT_SCOPE))
    assert tokens(tel, "orders-service", "m") == {"input": 50, "cache_read": 10_000, "cache_write": 2_000,
                                                  "output": 20}


def test_other_openlit_providers_and_other_scopes_count_input_with_the_cache(tel, rx):
    with_cache = {**OPENLIT_CACHED, "gen_ai.usage.input_tokens": 12_050}
    rx.export(request(span(1, {**with_cache, "gen_ai.provider.name": "openai"}), scope=otlp.OPENLIT_SCOPE))
    rx.export(request(span(2, {**with_cache, "gen_ai.provider.name": "anthropic"}),
                      scope="opentelemetry.instrumentation.anthropic"))
    assert tokens(tel, "orders-service", "m") == {"input": 100, "cache_read": 20_000, "cache_write": 4_000,
                                                  "output": 40}


def test_current_names_win_over_older_ones(tel, rx):
    rx.export(request(span(1, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                               "gen_ai.usage.input_tokens": 100, "gen_ai.usage.prompt_tokens": 999,
                               "gen_ai.usage.output_tokens": 10, "llm.token_count.completion": 999})))
    assert tokens(tel, "orders-service", "m") == {"input": 100, "output": 10}


MODEL_NAMES = [
    ({"gen_ai.request.model": "req", "gen_ai.response.model": "resp"}, "req"),
    ({"gen_ai.response.model": "resp"}, "resp"),
    ({"llm.model_name": "oi", "llm.response.model_name": "oi-resp"}, "oi"),
    ({"llm.request.model_name": "oi-req", "llm.model_name": "oi"}, "oi-req"),
    ({"llm.response.model_name": "oi-resp"}, "oi-resp"),
    ({"embedding.model_name": "text-embedding-3-small"}, "text-embedding-3-small"),     # OpenInference EMBEDDING
]


@pytest.mark.parametrize("attributes,model", MODEL_NAMES)
def test_model_is_the_requested_one_when_known(tel, rx, attributes, model):
    rx.export(request(span(1, {"openinference.span.kind": "LLM", "llm.token_count.prompt": 5, **attributes})))
    assert tokens(tel, "orders-service", model) == {"input": 5}


TTFT_NAMES = [("gen_ai.response.time_to_first_chunk", 0.25), ("gen_ai.server.time_to_first_token", 0.25)]


@pytest.mark.parametrize("name,seconds", TTFT_NAMES)
def test_time_to_first_token_names(tel, rx, name, seconds):
    rx.export(request(chat_span(1, **{name: seconds})))
    assert value(tel, catalog.LLM_TIME_TO_FIRST_TOKEN.name + "_count", agent="orders-service", model="gpt-4o") == 1
    assert value(tel, catalog.LLM_TIME_TO_FIRST_TOKEN.name + "_sum", agent="orders-service",
                 model="gpt-4o") == pytest.approx(seconds)


def test_an_agent_takes_the_time_to_first_token_of_its_earliest_call(tel, rx):
    """OpenLLMetry and OpenInference put it on the chat span under the agent's, not on the agent's."""
    later = chat_span(2, parent=1, **{"gen_ai.response.time_to_first_chunk": 0.5})
    later.start_time_unix_nano += 200_000_000
    earliest = chat_span(3, parent=1, **{"gen_ai.response.time_to_first_chunk": 0.3})
    rx.export(request(later, earliest, agent_span(1, "coder")))
    ttft = catalog.LLM_TIME_TO_FIRST_TOKEN.name
    assert value(tel, ttft + "_count", agent="coder", model="gpt-4o") == 1
    assert value(tel, ttft + "_sum", agent="coder", model="gpt-4o") == pytest.approx(0.3)


def test_a_span_that_starts_and_ends_at_once_is_mapped(tel, rx):
    """Coarse clocks and some SDKs' instant spans give start == end: a zero duration, not a bad span."""
    rx.export(request(span(1, {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "coder"}, seconds=0)))
    assert spans_counted(tel) == {"mapped": 1}
    assert executions(tel) == {("coder", "success"): 1}


def test_openlit_zero_time_to_first_token_means_not_streamed(tel, rx):
    rx.export(request(chat_span(1, **{"gen_ai.server.time_to_first_token": 0.0})))
    assert value(tel, catalog.LLM_TIME_TO_FIRST_TOKEN.name + "_count", agent="orders-service", model="gpt-4o") == 0


KINDS = [
    ({"gen_ai.operation.name": "text_completion"}, "inference"),
    ({"gen_ai.operation.name": "generate_content"}, "inference"),
    ({"gen_ai.operation.name": "embeddings"}, "inference"),
    ({"openinference.span.kind": "LLM"}, "inference"),
    ({"openinference.span.kind": "EMBEDDING"}, "inference"),
    ({"llm.request.type": "chat"}, "inference"),
    ({"llm.request.type": "completion"}, "inference"),
    ({"llm.request.type": "embedding"}, "inference"),
    ({"gen_ai.operation.name": "retrieval"}, "ignored"),
    ({"gen_ai.operation.name": "create_agent"}, "ignored"),
    ({"openinference.span.kind": "CHAIN"}, "ignored"),
    ({"traceloop.span.kind": "task"}, "ignored"),
    ({"http.request.method": "POST"}, "ignored"),
]


@pytest.mark.parametrize("attributes,kind", KINDS, ids=[str(k[0]) for k in KINDS])
def test_what_makes_a_span_an_inference_span(tel, rx, attributes, kind):
    rx.export(request(span(1, {**attributes, "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 7})))
    if kind == "inference":
        assert tokens(tel, "orders-service", "m") == {"input": 7}
        assert spans_counted(tel) == {"mapped": 1}
    else:
        assert tokens(tel, "orders-service", "m") == {}
        assert spans_counted(tel) == {"ignored": 1}


# -- tools and workflows ------------------------------------------------------------------

def test_tool_spans_of_each_family(tel, rx):
    rx.export(request(
        span(1, {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "web_search"}, seconds=0.2),
        span(2, {"openinference.span.kind": "TOOL", "tool.name": "calculator"}, seconds=0.1, error=True),
        span(3, {"traceloop.span.kind": "tool", "traceloop.entity.name": "lookup"}, name="lookup.tool"),
        span(4, {"gen_ai.operation.name": "execute_tool"}, name="execute_tool file_read")))
    calls = {(dict(labels)["tool"], dict(labels)["status"]): v for (name, labels), v in samples(tel).items()
             if name == catalog.TOOL_CALLS.name and v}
    assert calls == {("web_search", "success"): 1, ("calculator", "error"): 1, ("lookup", "success"): 1,
                     ("file_read", "success"): 1}
    assert exemplar_trace_ids(tel, catalog.TOOL_CALL_DURATION.name) == {TRACE.hex()}


def test_tool_span_without_a_name_is_rejected(tel, rx):
    response = rx.export(request(span(1, {"gen_ai.operation.name": "execute_tool"}, name="execute_tool")))
    assert response.partial_success.rejected_spans == 1
    assert "gen_ai.tool.name" in response.partial_success.error_message
    assert spans_counted(tel) == {"rejected": 1}


def test_workflow_spans(tel, rx):
    rx.export(request(
        span(1, {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "support"}, seconds=30),
        span(2, {"traceloop.span.kind": "workflow", "traceloop.entity.name": "triage",
                 "traceloop.workflow.name": "triage"}, name="triage.workflow", error=True)))
    runs = {(dict(labels)["workflow"], dict(labels)["status"]): v for (name, labels), v in samples(tel).items()
            if name == catalog.WORKFLOW_RUNS.name and v}
    assert runs == {("support", "success"): 1, ("triage", "error"): 1}
    assert value(tel, catalog.WORKFLOW_DURATION.name + "_sum", workflow="support") == pytest.approx(30)


# -- attribution -------------------------------------------------------------------------

def test_inference_usage_goes_to_the_enclosing_agent_and_replaces_its_own(tel, rx):
    # The agent span also reports the total of its calls: counted once, from the calls.
    rx.export(request(
        chat_span(2, parent=1, input_tokens=1000, output_tokens=100,
                  **{"gen_ai.usage.cache_read.input_tokens": 400}),
        chat_span(3, parent=1, input_tokens=500, output_tokens=50),
        agent_span(1, "planner", **{"gen_ai.usage.input_tokens": 1500, "gen_ai.usage.output_tokens": 150})))

    assert executions(tel) == {("planner", "success"): 1}
    assert tokens(tel, "planner", "gpt-4o") == {"input": 1100, "cache_read": 400, "output": 150}
    cost = (1100 * 2.5 + 400 * 1.25 + 150 * 10.0) / 1e6
    assert value(tel, catalog.LLM_COST.name, agent="planner", model="gpt-4o") == pytest.approx(cost)
    assert spans_counted(tel) == {"mapped": 3}


def test_agent_span_counts_its_own_usage_when_its_calls_report_none(tel, rx):
    rx.export(request(span(2, {"gen_ai.operation.name": "chat"}, parent=1),
                      agent_span(1, "remote", **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10,
                                                 "gen_ai.usage.output_tokens": 2})))
    assert executions(tel) == {("remote", "success"): 1}
    assert tokens(tel, "remote", "gpt-4o") == {"input": 10, "output": 2}


def test_children_exported_before_their_parent_wait_for_it(tel, rx):
    # OpenInference's shape: AGENT > CHAIN > LLM, each layer in its own export request, children first.
    llm = span(3, {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o",
                   "llm.token_count.prompt": 300, "llm.token_count.completion": 30}, parent=2)
    chain = span(2, {"openinference.span.kind": "CHAIN"}, parent=1, name="RunnableSequence")
    agent = span(1, {"openinference.span.kind": "AGENT"}, name="support_agent")
    rx.export(request(llm))
    assert executions(tel) == {} and rx.waiting_spans > 0
    rx.export(request(chain))
    assert executions(tel) == {}
    rx.export(request(agent))

    assert executions(tel) == {("support_agent", "success"): 1}
    assert tokens(tel, "support_agent", "gpt-4o") == {"input": 300, "output": 30}
    assert rx.waiting_spans == 0
    assert spans_counted(tel) == {"mapped": 2, "ignored": 1}


def test_nearest_enclosing_agent_wins(tel, rx):
    rx.export(request(chat_span(3, parent=2, input_tokens=40, output_tokens=4), agent_span(2, "inner", parent=1),
                      chat_span(4, parent=1, input_tokens=60, output_tokens=6), agent_span(1, "outer")))
    assert tokens(tel, "inner", "gpt-4o") == {"input": 40, "output": 4}
    assert tokens(tel, "outer", "gpt-4o") == {"input": 60, "output": 6}


def test_inference_span_inside_another_counts_once(tel, rx):
    # Two instrumentations of one call (a framework's LLM span around a client library's chat span).
    rx.export(request(chat_span(3, parent=2, input_tokens=100, output_tokens=10)))
    rx.export(request(span(2, {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o",
                               "llm.token_count.prompt": 100, "llm.token_count.completion": 10}, parent=1),
                      agent_span(1, "planner")))
    assert tokens(tel, "planner", "gpt-4o") == {"input": 100, "output": 10}
    assert spans_counted(tel) == {"mapped": 2, "ignored": 1}


@pytest.mark.parametrize("agent", [True, False], ids=["in an agent", "without an agent"])
def test_inference_span_inside_one_without_usage_counts_in_its_place(tel, rx, agent):
    # OpenLIT's llamaindex spans (chat, no usage) around the provider's span, which has the tokens.
    rx.export(request(chat_span(3, parent=2, input_tokens=100, output_tokens=10)))
    framework = span(2, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}, parent=1 if agent else 0,
                     name="llm_chat")
    rx.export(request(framework, *([agent_span(1, "planner")] if agent else [])))
    name = "planner" if agent else "orders-service"
    assert executions(tel) == {(name, "success"): 1}
    assert tokens(tel, name, "gpt-4o") == {"input": 100, "output": 10}
    assert value(tel, catalog.USAGE_UNKNOWN.name, agent=name) == 0
    assert spans_counted(tel) == {"mapped": 2 if agent else 1, "ignored": 1}
    assert rx.waiting_spans == 0


def test_inference_without_an_agent_is_an_execution_of_its_named_agent_or_the_service(tel, rx):
    rx.export(request(chat_span(1, input_tokens=10, output_tokens=1),
                      chat_span(2, input_tokens=20, output_tokens=2, **{"gen_ai.agent.name": "triage"}),
                      span(3, {"openinference.span.kind": "LLM", "agent.name": "oi-agent", "llm.model_name": "gpt-4o",
                               "llm.token_count.prompt": 30}),
                      service="support-bot"))
    rx.export(request(chat_span(4, input_tokens=40, output_tokens=4), service=None))
    assert executions(tel) == {("support-bot", "success"): 1, ("triage", "success"): 1, ("oi-agent", "success"): 1,
                               ("unknown_service", "success"): 1}
    assert tokens(tel, "triage", "gpt-4o") == {"input": 20, "output": 2}
    assert exemplar_trace_ids(tel, catalog.AGENT_EXECUTION_DURATION.name) == {TRACE.hex()}


def test_agent_whose_calls_used_several_models_has_model_unknown_and_the_summed_cost(tel, rx):
    rx.export(request(chat_span(2, parent=1, model="gpt-4o", input_tokens=1000, output_tokens=100),
                      chat_span(3, parent=1, model="o3", input_tokens=2000, output_tokens=300,
                                **{"gen_ai.usage.reasoning.output_tokens": 200}),
                      agent_span(1, "router")))
    assert tokens(tel, "router", "unknown") == {"input": 3000, "output": 200, "reasoning": 200}
    cost = (1000 * 2.5 + 100 * 10.0) / 1e6 + (2000 * 2.0 + 100 * 8.0 + 200 * 8.0) / 1e6
    assert value(tel, catalog.LLM_COST.name, agent="router", model="unknown") == pytest.approx(cost)
    assert value(tel, catalog.USAGE_UNKNOWN.name, agent="router") == 0


@pytest.mark.parametrize("second_model", ["o3", "gpt-4o"], ids=["one model", "two models"])
def test_calls_split_and_total_only_make_one_unsplit_total_and_an_unknown_cost(tel, rx, second_model):
    total_only = span(3, {"gen_ai.operation.name": "chat", "gen_ai.request.model": second_model,
                          "llm.usage.total_tokens": 5000}, parent=1, name="chat", seconds=0.5)
    rx.export(request(chat_span(2, parent=1, model="o3", input_tokens=1000, output_tokens=300), total_only,
                      agent_span(1, "mixer")))
    model = "o3" if second_model == "o3" else "unknown"
    assert tokens(tel, "mixer", model) == {"unsplit": 6300}
    assert value(tel, catalog.LLM_COST.name, agent="mixer", model=model) == 0
    assert value(tel, catalog.USAGE_UNKNOWN.name, agent="mixer") == 1


def test_several_models_one_without_a_price_is_unknown_usage_never_zero(tel, rx):
    rx.export(request(chat_span(2, parent=1, model="gpt-4o"), chat_span(3, parent=1, model="mystery-model"),
                      agent_span(1, "router")))
    assert value(tel, catalog.LLM_COST.name, agent="router", model="unknown") == 0
    assert value(tel, catalog.USAGE_UNKNOWN.name, agent="router") == 1


def test_calls_whose_agent_never_arrives_fall_back_after_the_wait(tel):
    rx = receiver_for(tel, attribution_wait_seconds=0.2)
    try:
        rx.export(request(chat_span(2, parent=1, input_tokens=10, output_tokens=1), service="svc"))
        assert executions(tel) == {}
        stack.wait_for(lambda: executions(tel), timeout=10, interval=0.05, what="the execution after the wait")
        assert executions(tel) == {("svc", "success"): 1}
        assert tokens(tel, "svc", "gpt-4o") == {"input": 10, "output": 1}
        assert rx.waiting_spans == 0
    finally:
        rx.close()


def test_calls_wait_for_their_agent_while_its_trace_goes_on_sending_spans(tel):
    """A long agent run: its first call arrives, then another before the wait is over, then the
    agent's span after the first call's wait would have ended.  Both calls are the agent's."""
    wait = 2.0
    rx = receiver_for(tel, attribution_wait_seconds=wait)
    try:
        rx.export(request(chat_span(2, parent=1, input_tokens=10, output_tokens=1)))
        time.sleep(0.6 * wait)
        rx.export(request(chat_span(3, parent=1, input_tokens=20, output_tokens=2)))
        time.sleep(0.7 * wait)        # the first call's wait, counted from its arrival, is over
        assert executions(tel) == {}
        rx.export(request(agent_span(1, "researcher")))
        assert executions(tel) == {("researcher", "success"): 1}
        assert tokens(tel, "researcher", "gpt-4o") == {"input": 30, "output": 3}
        assert rx.waiting_spans == 0
    finally:
        rx.close()


def test_close_records_every_waiting_call(tel, rx):
    rx.export(request(chat_span(2, parent=1, input_tokens=10, output_tokens=1)))
    assert executions(tel) == {}
    rx.close()
    assert executions(tel) == {("orders-service", "success"): 1}
    assert spans_counted(tel) == {"mapped": 1}


def test_buffer_stays_bounded_under_traces_that_never_send_a_parent_and_counts_stay_exact(tel):
    bound = 50
    rx = receiver_for(tel, attribution_wait_seconds=3600, max_buffered_spans=bound)
    try:
        for i in range(1, 1001):
            trace = i.to_bytes(16, "big")
            rx.export(request(span(2 * i, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                           "gen_ai.usage.input_tokens": 3, "gen_ai.usage.output_tokens": 1},
                                   parent=2 * i + 1, trace=trace),
                              span(2 * i + 7_000_000, {"http.request.method": "GET"}, parent=2 * i + 1, trace=trace)))
            assert rx.waiting_spans <= bound
    finally:
        rx.close()
    assert rx.waiting_spans == 0
    assert executions(tel) == {("orders-service", "success"): 1000}
    assert tokens(tel, "orders-service", "gpt-4o") == {"input": 3000, "output": 1000}
    assert spans_counted(tel) == {"mapped": 1000, "ignored": 1000}


# -- bad input --------------------------------------------------------------------------


BAD_SPANS = [
    (span(1, {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": -5}), "gen_ai.usage.input_tokens"),
    (span(1, {"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": "many"}), "gen_ai.usage.output_tokens"),
    (span(1, {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 2.5}), "gen_ai.usage.input_tokens"),
    (span(1, {"gen_ai.operation.name": "invoke_agent"}, trace=b"\x00" * 16), "trace_id"),
    (span(1, {"gen_ai.operation.name": "invoke_agent"}, seconds=-1), "end_time_unix_nano"),
    (span(1, {"gen_ai.operation.name": "chat", "gen_ai.response.time_to_first_chunk": -1.0}),
     "gen_ai.response.time_to_first_chunk"),
]


@pytest.mark.parametrize("bad,words", BAD_SPANS, ids=[b[1] for b in BAD_SPANS])
def test_a_span_with_bad_values_is_rejected_and_the_rest_is_mapped(tel, rx, bad, words):
    response = rx.export(request(bad, agent_span(9, "fine")))
    assert response.partial_success.rejected_spans == 1
    assert words in response.partial_success.error_message
    assert executions(tel) == {("fine", "success"): 1}
    assert spans_counted(tel) == {"mapped": 1, "rejected": 1}


def test_malformed_span_events_reject_the_failed_span_only(tel, rx):
    bad = span(1, {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "coder"}, error=True)
    bad.events.add(name="exception")
    body = request(bad, agent_span(9, "fine")).SerializeToString()
    # The event's bytes, cut short: a length that runs past the end of the event.
    body = body.replace(b"\x12\texception", b"\x12\x7fexception")
    response = rx.export_serialized(body)
    assert response.partial_success.rejected_spans == 1
    assert "events" in response.partial_success.error_message
    assert executions(tel) == {("fine", "success"): 1}


def test_whole_token_counts_sent_as_doubles_are_taken(tel, rx):
    rx.export(request(span(1, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                               "gen_ai.usage.input_tokens": 12.0})))
    assert tokens(tel, "orders-service", "m") == {"input": 12}


@pytest.mark.parametrize("count", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 10**12])
def test_token_counts_of_every_encoded_size(tel, rx, count):
    rx.export(request(span(1, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                               "gen_ai.usage.input_tokens": count})))
    assert tokens(tel, "orders-service", "m") == {"input": count}


def test_decoding_caches_stay_bounded_under_ever_new_names_and_attribute_sets(tel, rx):
    names = sorted({*otlp.AGENT_NAMES, *otlp.TOOL_NAMES, *otlp.WORKFLOW_NAMES, *otlp.MODELS, otlp.ERROR_TYPE,
                    otlp.TRACELOOP_ENTITY} - {"gen_ai.agent.name"})
    for i in range(1, otlp.MAX_TEXTS + 500):
        # A new agent name every span, and a new set of (empty) known attributes every few.
        extra = {name: "" for bit, name in enumerate(names) if i >> bit & 1}
        rx.export(request(span(i, {**extra, "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": f"a{i}"})))
        assert len(otlp._TEXTS) <= otlp.MAX_TEXTS and len(otlp._SHAPES) <= otlp.MAX_SHAPES
    assert sum(executions(tel).values()) == otlp.MAX_TEXTS + 499


def test_huge_attribute_values_are_not_kept_by_the_decoding_cache(tel, rx):
    """Cached under their whole encoding, a few hundred spans of megabyte names held gigabytes."""
    import tracemalloc
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1, 101):
            rx.export(request(agent_span(i, f"agent-{i}-" + "x" * 200_000)))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert sum(executions(tel).values()) == 100
    assert grown < 4_000_000, f"{grown:,} bytes kept after 100 names of 200 kB"     # 20 MB before


def test_long_names_are_cut_to_the_schema_limit(tel, rx):
    rx.export(request(agent_span(1, "a" * 300)))
    assert executions(tel) == {("a" * 128, "success"): 1}


def test_empty_request_and_spans_without_genai_attributes(tel, rx):
    assert rx.export(ExportTraceServiceRequest()) == ExportTraceServiceResponse()
    assert spans_counted(tel) == {}
    assert rx.export(request(span(1, {"http.route": "/orders"}), span(2))) == ExportTraceServiceResponse()
    assert spans_counted(tel) == {"ignored": 2}
    assert executions(tel) == {}


# -- OTLP/HTTP ---------------------------------------------------------------------------

def test_http_protobuf_and_partial_success(tel, rx):
    body = request(agent_span(1, "planner"), span(2, {"gen_ai.operation.name": "chat",
                                                      "gen_ai.usage.input_tokens": -1})).SerializeToString()
    status, content_type, reply = rx.handle_http(body, "application/x-protobuf")
    assert (status, content_type) == (200, "application/x-protobuf")
    response = ExportTraceServiceResponse.FromString(reply)
    assert response.partial_success.rejected_spans == 1
    assert executions(tel) == {("planner", "success"): 1}


def test_http_json_with_hex_ids(tel, rx):
    document = json_format.MessageToDict(request(agent_span(1, "planner")))
    document_span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    document_span["traceId"], document_span["spanId"] = TRACE.hex(), (1).to_bytes(8, "big").hex()
    status, content_type, reply = rx.handle_http(json.dumps(document).encode(), "application/json; charset=utf-8")
    assert (status, content_type, json.loads(reply)) == (200, "application/json", {})
    assert exemplar_trace_ids(tel, catalog.AGENT_EXECUTION_DURATION.name) == {TRACE.hex()}


def test_http_json_partial_success_uses_lower_camel_case(tel, rx):
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": TRACE.hex(), "spanId": "00f067aa0ba902b7", "name": "chat",
        "startTimeUnixNano": str(START), "endTimeUnixNano": str(START + 10**9),
        "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                       {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "-3"}}]}]}]}]}
    status, _, reply = rx.handle_http(json.dumps(body).encode(), "application/json")
    assert status == 200
    assert json.loads(reply)["partialSuccess"]["rejectedSpans"] in ("1", 1)
    assert "gen_ai.usage.input_tokens" in json.loads(reply)["partialSuccess"]["errorMessage"]


BAD_BODIES = [
    (b"\xff\xff\xff", "application/x-protobuf", "not an OTLP"),
    (b"{not json", "application/json", "invalid JSON"),
    (b"[1, 2]", "application/json", "JSON object"),
    (json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}).encode(),
     "application/json", "traceId"),
    (json.dumps({"resourceSpans": "many"}).encode(), "application/json", "not an OTLP"),
]


@pytest.mark.parametrize("body,content_type,words", BAD_BODIES, ids=[b[2] for b in BAD_BODIES])
def test_http_body_that_does_not_decode_is_400_with_a_status(tel, rx, body, content_type, words):
    status, media, reply = rx.handle_http(body, content_type)
    assert status == 400 and media == content_type.split(";")[0]
    message = (json_format.Parse(reply, status_pb2.Status()) if media == "application/json"
               else status_pb2.Status.FromString(reply)).message
    assert words in message
    assert spans_counted(tel) == {}


def test_http_other_content_type_is_415(tel, rx):
    status, _, reply = rx.handle_http(b"{}", "text/plain")
    assert status == 415
    assert "application/x-protobuf" in status_pb2.Status.FromString(reply).message


def test_export_serialized_raises_on_garbage(rx):
    with pytest.raises(OTLPDecodeError):
        rx.export_serialized(b"\x0a\x05\xff")
