"""The committed rules, alerts and dashboards work on OTLP-fed data, in a real Prometheus.

An application built on the OpenTelemetry SDK writes GenAI spans (a workflow of agents, their
chat calls and tools, one agent failing) and exports them over OTLP/HTTP to the exporter's
service (POST /v1/traces), which forwards them to a tracing backend; a real Prometheus
scrapes the same service every second and evaluates the rules.  Every recording rule and every committed dashboard query over the
metrics that spans feed returns data, the error-ratio alert fires for the failing agent, and
the latency exemplars are trace ids the application generated.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from otlp_receiver import HttpReceiver
from test_dashboard_queries import query_until_data, substitute, variable_values

from agent_exporter import catalog, stack
from agent_exporter.config import AlertingConfig, Config, MetricsConfig, ModelPrice, OTLPConfig, TracingConfig
from agent_exporter.otlp import OTLPReceiver
from agent_exporter.render import prometheus as render_prometheus
from agent_exporter.render import rules
from agent_exporter.server import Service, start_server
from agent_exporter.telemetry import Telemetry

DASHBOARDS = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"
# The committed rules' thresholds, with windows short enough for a test.
RULES_CONFIG = Config(metrics=MetricsConfig(collection_interval=1.0),      # scraped every second
                      alerting=AlertingConfig(evaluation_interval="1s", rate_window="10s", alert_for="1s"))

pytestmark = pytest.mark.integration

# What GenAI spans never carry: the orchestrator's own state machine, self-healing, evaluations,
# and the event-ingest health of /v1/events; nor spans sent over OTLP/HTTP, as here, the gRPC
# receiver's calls (tests/integration/test_dashboard_queries.py feeds that panel).
UNFED = tuple(spec.name.removesuffix("_total") for spec in (
    catalog.STATE_TRANSITIONS, catalog.RETRIES, catalog.FALLBACKS, catalog.CIRCUIT_BREAKER_STATE,
    catalog.SELECTOR_WEIGHT, catalog.FLEET_SOURCE_UP, catalog.EVALUATION_SCORE, catalog.EXPORTER_EVENTS_REJECTED,
    catalog.EXPORTER_SERIES_OVERFLOW, catalog.EXPORTER_GRPC_REQUESTS))


def fed_by_spans(expr: str) -> bool:
    return not any(name in expr for name in UNFED)


class Application:
    """Rounds of GenAI spans, written with the SDK as the conventions spell them, exported over OTLP."""

    def __init__(self, traces_url: str):
        self.provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
        self.provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=traces_url), schedule_delay_millis=200))
        self.tracer = self.provider.get_tracer("support-bot")
        self.trace_ids: set[str] = set()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.rng = random.Random(3)

    def chat(self, model: str, input_tokens: int, output_tokens: int) -> None:
        with self.tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
                "gen_ai.response.time_to_first_chunk": 0.2 + self.rng.random()}):
            pass

    def agent(self, name: str, *, fail: bool) -> None:
        with self.tracer.start_as_current_span(f"invoke_agent {name}", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name}) as span:
            self.trace_ids.add(f"{span.get_span_context().trace_id:032x}")
            self.chat("gpt-4o", 900, 200)
            with self.tracer.start_as_current_span("execute_tool web_search", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "web_search"}):
                pass
            if fail:
                span.set_attribute("error.type", "Timeout")
                span.set_status(Status(StatusCode.ERROR))

    def round(self) -> None:
        with self.tracer.start_as_current_span("invoke_workflow support", attributes={
                "gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "support"}):
            self.agent("planner", fail=False)
            self.agent("coder", fail=self.rng.random() < 0.5)
        # Outside any agent: an execution of the service, on a model without a price (usage unknown).
        self.chat("llama-3-70b", 100, 10)

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.round()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(10)
        self.provider.shutdown()


@pytest.fixture(scope="module")
def fed_exporter():
    """The exporter's HTTP service with OTLP in, forwarding to a tracing backend, and the application
    exporting to it."""
    with HttpReceiver() as backend:
        config = Config(metrics=MetricsConfig(prices={"gpt-4o": ModelPrice(input=2.5, output=10.0)}),
                        tracing=TracingConfig(otlp_endpoint=backend.endpoint, otlp_protocol="http/protobuf"),
                        otlp=OTLPConfig(attribution_wait_seconds=2.0, forward_spans=True))
        telemetry = Telemetry(config)
        receiver = OTLPReceiver(telemetry, config)
        service = start_server(Service(telemetry, otlp=receiver), "127.0.0.1:0")
        try:
            with Application(f"{service.url}/v1/traces") as app:
                yield service, app
        finally:
            service.stop()
            receiver.close()
            telemetry.shutdown()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, fed_exporter):
    service, _ = fed_exporter
    out = tmp_path_factory.mktemp("render")
    render_prometheus.render_prometheus(RULES_CONFIG, out)
    text = render_prometheus.prometheus_config(
        [f"127.0.0.1:{service.port}"], job=RULES_CONFIG.alerting.job, rule_files=render_prometheus.RULE_FILES,
        scrape_interval="1s", evaluation_interval="1s")
    with stack.start_prometheus(out / "prometheus", text) as process:
        api = stack.PrometheusAPI(process.url)
        api.wait_until('ALERTS{alertname="OrchestratorAgentHighErrorRatio", alertstate="firing"}', bool,
                       timeout=90)
        yield api


def test_error_ratio_alert_fires_for_the_failing_agent_only(prometheus):
    firing = prometheus.query('ALERTS{alertname="OrchestratorAgentHighErrorRatio", alertstate="firing"}')
    assert {row["metric"]["agent"] for row in firing} == {"coder"}
    assert firing[0]["metric"]["severity"] == "critical"


def test_recording_rules_over_span_fed_metrics_return_data(prometheus):
    names = [name for name in dict.fromkeys(rules.recording_rule_names(RULES_CONFIG)) if fed_by_spans(name)]
    assert len(names) >= 5
    empty = [name for name in names if not query_until_data(prometheus, name)]
    assert not empty, f"recording rules without data: {empty}"


def test_committed_dashboard_queries_over_span_fed_metrics_return_data(prometheus):
    empty, checked = [], 0
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        uid = board["uid"]
        values = variable_values(prometheus, board)
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = substitute(target["expr"], values)
                if not fed_by_spans(expr):
                    continue
                checked += 1
                if not query_until_data(prometheus, expr):
                    empty.append(f"{uid} / {panel['title']}: {expr}")
    assert checked > 30
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_latency_exemplars_are_the_applications_trace_ids(prometheus, fed_exporter):
    _, app = fed_exporter
    found = prometheus.query_exemplars(f'{catalog.AGENT_EXECUTION_DURATION.name}_bucket{{agent="planner"}}',
                                       time.time() - 300, time.time() + 60)
    trace_ids = {e["labels"]["trace_id"] for series in found for e in series["exemplars"]}
    assert trace_ids and trace_ids <= app.trace_ids
