"""Real instrumentation libraries export OTLP to the exporter; /metrics shows their agents, tokens and cost.

Two families: the OpenTelemetry contrib OpenAI instrumentation (opentelemetry-instrumentation-openai-v2)
under an agent span the application writes itself, and OpenInference's LangChain instrumentation
around a small LangChain agent (a model call, a tool, a second model call) on langchain-openai.
Both clients call a fake OpenAI-compatible server on loopback; the SDK's OTLP exporter sends the
spans to the exporter's service, over OTLP/HTTP (POST /v1/traces) and over OTLP/gRPC; the test
scrapes the service's /metrics.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from agent_exporter import catalog
from agent_exporter.config import Config, MetricsConfig, ModelPrice
from agent_exporter.otlp import OTLPReceiver
from agent_exporter.server import Service, start_server
from agent_exporter.telemetry import Telemetry
from loopback import LoopbackServer, QuietHandler

pytestmark = pytest.mark.integration

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PRICES = {
    "gpt-4o": ModelPrice(input=2.50, output=10.00),
    # OpenInference reports the model that answered (llm.model_name), so its versioned name is priced.
    "gpt-4o-mini-2024-07-18": ModelPrice(input=0.15, output=0.60, cache_read=0.075, reasoning=0.60),
}


class FakeOpenAI(LoopbackServer):
    """POST /v1/chat/completions answers "ok" with the given usage and the model's versioned name."""

    def __init__(self, usage: dict, versions: dict):
        fake = self
        self.requests: list[dict] = []

        class Handler(QuietHandler):
            def do_POST(self):
                body = json.loads(self.read_body())
                fake.requests.append(body)
                reply = json.dumps({
                    "id": f"chatcmpl-{len(fake.requests)}", "object": "chat.completion", "created": 1760000000,
                    "model": versions.get(body["model"], body["model"]),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok"}}],
                    "usage": usage,
                }).encode()
                self.reply(200, reply, "application/json")

        super().__init__(Handler)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


class Exporter:
    """The exporter under test: its HTTP service with OTLP in (and the gRPC receiver), prices configured."""

    def __init__(self, transport: str):
        config = Config(metrics=MetricsConfig(prices=PRICES))
        self.transport = transport
        self.telemetry = Telemetry(config)
        self.receiver = OTLPReceiver(self.telemetry, config)
        self.service = start_server(Service(self.telemetry, otlp=self.receiver), "127.0.0.1:0")
        self.url = self.service.url
        self.grpc = self.receiver.start_grpc("127.0.0.1:0") if transport == "grpc" else None

    def tracer_provider(self, service: str) -> TracerProvider:
        """What an instrumented application sets up: its resource and the SDK's OTLP exporter."""
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = (HttpSpanExporter(endpoint=f"{self.url}/v1/traces") if self.grpc is None
                    else GrpcSpanExporter(endpoint=f"http://127.0.0.1:{self.grpc.port}", insecure=True))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return provider

    def metrics(self) -> dict:
        """(name, labels) -> (value, exemplar trace id) from a scrape of /metrics."""
        reply = requests.get(f"{self.url}/metrics", headers={"Accept": OPENMETRICS}, timeout=10)
        reply.raise_for_status()
        return {(s.name, frozenset(s.labels.items())): (s.value, s.exemplar and s.exemplar.labels["trace_id"])
                for family in parse_openmetrics(reply.text) for s in family.samples}

    def close(self):
        self.service.stop()
        self.receiver.close()
        self.telemetry.shutdown()


@pytest.fixture(params=["http", "grpc"])
def exporter(request):
    started = Exporter(request.param)
    yield started
    started.close()


def value(metrics, name, **labels) -> float:
    return metrics.get((name, frozenset(labels.items())), (0.0, None))[0]


def tokens(metrics, agent, model) -> dict:
    return {dict(labels)["type"]: v for (name, labels), (v, _) in metrics.items()
            if name == catalog.LLM_TOKENS.name and dict(labels)["agent"] == agent and dict(labels)["model"] == model}


def executions(metrics) -> dict:
    """Counted executions by (agent, status); each label set's other status is there at 0 too."""
    return {(dict(labels)["agent"], dict(labels)["status"]): v for (name, labels), (v, _) in metrics.items()
            if name == catalog.AGENT_EXECUTIONS.name and v}


def exemplars(metrics, agent) -> set:
    name = catalog.AGENT_EXECUTION_DURATION.name + "_bucket"
    return {trace_id for (n, labels), (_, trace_id) in metrics.items()
            if n == name and dict(labels)["agent"] == agent and trace_id}


def spans_counted(metrics) -> dict:
    return {dict(labels)["outcome"]: v for (name, labels), (v, _) in metrics.items()
            if name == catalog.EXPORTER_OTLP_SPANS.name and v}


def test_contrib_openai_instrumentation_under_an_agent_span(exporter):
    from openai import OpenAI
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    provider = exporter.tracer_provider("support-bot")
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with FakeOpenAI({"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500}, {}) as fake:
            client = OpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
            tracer = provider.get_tracer("support-bot")
            # The application's own agent, spelled as the GenAI conventions ask.
            with tracer.start_as_current_span("invoke_agent triage", kind=SpanKind.INTERNAL, attributes={
                    "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"}) as agent:
                for question in ("where is my order?", "and the invoice?"):
                    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": question}])
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
            assert len(fake.requests) == 3
    finally:
        instrumentor.uninstrument()
        provider.shutdown()     # exports every span, and the exporter has answered by then

    metrics = exporter.metrics()
    # Both chat calls inside the agent span are one execution of "triage"; the call outside any
    # agent is an execution of the service.
    assert executions(metrics) == {("triage", "success"): 1, ("support-bot", "success"): 1}
    assert tokens(metrics, "triage", "gpt-4o") == {"input": 2400, "output": 600}
    assert tokens(metrics, "support-bot", "gpt-4o") == {"input": 1200, "output": 300}
    assert value(metrics, catalog.LLM_COST.name, agent="triage", model="gpt-4o") == pytest.approx(
        (2400 * 2.50 + 600 * 10.00) / 1e6)
    assert value(metrics, catalog.USAGE_UNKNOWN.name, agent="triage") == 0
    assert exemplars(metrics, "triage") == {f"{agent.get_span_context().trace_id:032x}"}
    assert spans_counted(metrics) == {"mapped": 4}


def test_openinference_langchain_agent(exporter):
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from openinference.instrumentation.langchain import LangChainInstrumentor

    provider = exporter.tracer_provider("support-bot")
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    usage = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
             "prompt_tokens_details": {"cached_tokens": 1000}, "completion_tokens_details": {"reasoning_tokens": 120}}
    try:
        with FakeOpenAI(usage, {"gpt-4o-mini": "gpt-4o-mini-2024-07-18"}) as fake:
            model = ChatOpenAI(model="gpt-4o-mini", base_url=fake.base_url, api_key="test", max_retries=0)

            @tool
            def lookup_order(order_id: str) -> str:
                """The shipping status of an order."""
                return "shipped"

            def answer(question: str) -> str:
                draft = model.invoke(question)
                status = lookup_order.invoke({"order_id": "42"})
                return model.invoke(f"{question} {draft.content} {status}").content

            # OpenInference marks a run whose name contains "agent" as an AGENT span.
            support_agent = RunnableLambda(answer).with_config(run_name="support_agent")
            assert support_agent.invoke("where is my order?") == "ok"
            assert len(fake.requests) == 2
    finally:
        instrumentor.uninstrument()
        provider.shutdown()

    metrics = exporter.metrics()
    assert executions(metrics) == {("support_agent", "success"): 1}
    # Per call: 1200 prompt tokens of which 1000 cached, 300 completion tokens of which 120 reasoning.
    assert tokens(metrics, "support_agent", "gpt-4o-mini-2024-07-18") == {
        "input": 400, "cache_read": 2000, "output": 360, "reasoning": 240}
    assert value(metrics, catalog.LLM_COST.name, agent="support_agent", model="gpt-4o-mini-2024-07-18") == \
        pytest.approx((400 * 0.15 + 2000 * 0.075 + 360 * 0.60 + 240 * 0.60) / 1e6)
    assert value(metrics, catalog.TOOL_CALLS.name, tool="lookup_order", status="success") == 1
    (trace_id,) = exemplars(metrics, "support_agent")
    assert len(trace_id) == 32
    tool_exemplars = {t for (n, labels), (_, t) in metrics.items()
                      if n == catalog.TOOL_CALL_DURATION.name + "_bucket" and t}
    assert tool_exemplars == {trace_id}     # the tool ran in the agent's trace
    assert spans_counted(metrics) == {"mapped": 4}


def test_the_example_shows_the_metrics():
    example = Path(__file__).resolve().parents[2] / "examples" / "otlp_openai_agent.py"
    result = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = {line.strip() for line in result.stdout.splitlines()}
    assert 'orchestrator_agent_executions_total{agent="triage",status="success"} 3.0' in lines
    assert 'orchestrator_llm_tokens_total{agent="triage",model="gpt-4o-mini",type="input"} 5100.0' in lines
    assert 'orchestrator_llm_tokens_total{agent="triage",model="gpt-4o-mini",type="output"} 720.0' in lines
    assert 'orchestrator_exporter_otlp_spans_total{outcome="mapped"} 9.0' in lines
