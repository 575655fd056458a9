"""Spans reach a real OTLP receiver over gRPC and HTTP/protobuf; a dead or stuck one costs nothing."""

import json
import threading
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from otlp_receiver import GrpcReceiver, HttpReceiver
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import catalog, events, stack, tracing
from agent_exporter.config import Config, MetricsConfig, ModelPrice, TracingConfig
from agent_exporter.telemetry import Telemetry

pytestmark = pytest.mark.integration

PROTOCOLS = ["grpc", "http/protobuf"]
ORCHESTRATOR_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ORCHESTRATOR_SPAN = "00f067aa0ba902b7"


def otlp_telemetry(endpoint: str, protocol: str, **tracing_fields) -> Telemetry:
    config = Config(
        service_name="orders-orchestrator", service_version="2.0.1", environment="staging",
        tracing=TracingConfig(**{"export_to_otlp": True, "otlp_endpoint": endpoint,
                                 "otlp_protocol": protocol, "otlp_timeout_seconds": 2.0, **tracing_fields}),
        metrics=MetricsConfig(prices={"gpt-4o": ModelPrice(input=2.5, output=10.0)}))
    return Telemetry(config)


def executions(tel: Telemetry) -> float:
    return sum(s.value for family in parse_text(tel.render().decode()) for s in family.samples
               if s.name == catalog.AGENT_EXECUTIONS.name)


@pytest.fixture(params=PROTOCOLS)
def receiver(request):
    with (GrpcReceiver() if request.param == "grpc" else HttpReceiver()) as started:
        yield request.param, started


def test_genai_spans_reach_the_receiver(receiver):
    protocol, rx = receiver
    tel = otlp_telemetry(rx.endpoint, protocol)
    try:
        with tel.agent_execution("planner", model="gpt-4o", request_id="req-42") as run:
            run.usage(input_tokens=1200, output_tokens=300)
            with tel.tool_call("web_search"):
                pass
            tel.state_transition("planning", "coding", workflow="feature")
        with pytest.raises(TimeoutError):
            with tel.agent_execution("coder", model="gpt-4o"):
                raise TimeoutError("model did not answer")
    finally:
        tel.shutdown()  # flushes the batch processor

    rx.wait_for_spans(3)
    agent = rx.by_name("invoke_agent planner")
    tool = rx.by_name("execute_tool web_search")
    failed = rx.by_name("invoke_agent coder")

    assert agent.kind == "INTERNAL" and agent.status == "UNSET"
    assert agent.attributes == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "planner",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "orchestrator.request_id": "req-42",
        "orchestrator.cost_usd": pytest.approx((1200 * 2.5 + 300 * 10.0) / 1e6),
    }
    assert agent.events == [("orchestrator.state_transition", {
        "orchestrator.state.from": "planning", "orchestrator.state.to": "coding",
        "orchestrator.workflow": "feature", "gen_ai.agent.name": "planner"})]
    assert agent.resource["service.name"] == "orders-orchestrator"
    assert agent.resource["service.version"] == "2.0.1"
    assert agent.resource["deployment.environment.name"] == "staging"
    assert agent.resource["deployment.environment"] == "staging"
    assert agent.scope == tracing.INSTRUMENTATION_NAME
    assert agent.scope_schema_url == f"https://opentelemetry.io/schemas/{tracing.SEMCONV_VERSION}"

    assert tool.kind == "INTERNAL"
    assert tool.attributes == {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "web_search",
                               "gen_ai.agent.name": "planner"}
    assert (tool.trace_id, tool.parent_span_id) == (agent.trace_id, agent.span_id)

    assert failed.status == "ERROR"
    assert failed.attributes["error.type"] == "TimeoutError"
    assert [name for name, _ in failed.events] == ["exception"]
    assert failed.events[0][1]["exception.type"] == "TimeoutError"

    if protocol == "http/protobuf":  # a bare collector address gets the signal path
        assert set(rx.paths) == {"/v1/traces"}


def test_ingested_events_join_the_orchestrators_trace(receiver):
    protocol, rx = receiver
    tel = otlp_telemetry(rx.endpoint, protocol)
    body = json.dumps([
        {"type": "agent_execution", "agent": "reviewer", "status": "error", "error_type": "RateLimited",
         "duration_seconds": 2.5, "timestamp": 1700000010.0,
         "trace_id": ORCHESTRATOR_TRACE, "span_id": ORCHESTRATOR_SPAN},
        {"type": "tool_call", "tool": "git_diff", "status": "success", "duration_seconds": 0.5,
         "timestamp": 1700000005.0},
        {"type": "state_transition", "from_state": "review", "to_state": "done", "workflow": "pr",
         "trace_id": ORCHESTRATOR_TRACE, "span_id": ORCHESTRATOR_SPAN},
    ]).encode()
    batch = events.decode_body(body, "application/json")
    assert batch.rejected == []
    try:
        tel.record_batch(batch.events)
    finally:
        tel.shutdown()

    rx.wait_for_spans(3)
    agent = rx.by_name("invoke_agent reviewer")
    assert (agent.trace_id, agent.parent_span_id) == (ORCHESTRATOR_TRACE, ORCHESTRATOR_SPAN)
    assert (agent.start_ns, agent.end_ns) == (1_700_000_007_500_000_000, 1_700_000_010_000_000_000)
    assert agent.status == "ERROR" and agent.attributes["error.type"] == "RateLimited"

    tool = rx.by_name("execute_tool git_diff")
    assert tool.parent_span_id == "" and tool.trace_id != ORCHESTRATOR_TRACE   # no ids: a trace of its own
    assert (tool.start_ns, tool.end_ns) == (1_700_000_004_500_000_000, 1_700_000_005_000_000_000)

    transition = rx.by_name("state_transition pr")
    assert (transition.trace_id, transition.parent_span_id) == (ORCHESTRATOR_TRACE, ORCHESTRATOR_SPAN)
    assert transition.events == [("orchestrator.state_transition", {
        "orchestrator.state.from": "review", "orchestrator.state.to": "done", "orchestrator.workflow": "pr"})]


def test_the_largest_numbers_accepted_reach_the_receiver_and_larger_ones_are_refused(receiver):
    # OTLP holds an int64: one attribute beyond it fails the export of every span in its batch.
    protocol, rx = receiver
    tel = otlp_telemetry(rx.endpoint, protocol)
    try:
        with tel.agent_execution("coder", model="gpt-4o") as run:
            run.usage(input_tokens=events.MAX_TOKENS, output_tokens=events.MAX_TOKENS)
            tel.record({"type": "retry", "agent": "coder", "attempt": events.MAX_ATTEMPT})
            with pytest.raises(ValueError, match="attempt"):
                tel.record({"type": "retry", "agent": "coder", "attempt": 2**63})
        with tel.agent_execution("planner"):
            pass
    finally:
        tel.shutdown()

    rx.wait_for_spans(2)
    coder = rx.by_name("invoke_agent coder")
    assert coder.attributes["gen_ai.usage.input_tokens"] == events.MAX_TOKENS
    assert coder.events == [(tracing.RETRY_EVENT, {"gen_ai.agent.name": "coder",
                                                   tracing.ATTEMPT: events.MAX_ATTEMPT})]
    assert rx.by_name("invoke_agent planner")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dead_endpoint_neither_raises_nor_loses_metrics(protocol):
    tel = otlp_telemetry(f"http://127.0.0.1:{stack.free_port()}", protocol,
                         max_queue_size=4, otlp_timeout_seconds=0.2)
    recorded = 200
    for i in range(recorded):
        with tel.agent_execution("planner") as run:
            run.usage(input_tokens=i, output_tokens=1)
        tel.record({"type": "agent_execution", "agent": "planner", "status": "success",
                    "duration_seconds": 0.01})
    tel.shutdown()
    assert executions(tel) == 2 * recorded


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shutdown_waits_for_a_dead_endpoint_at_most_its_timeout(protocol, caplog):
    # 2048 queued spans are four batches, each retried for up to the whole timeout: unbounded, the
    # shutdown took 2.6 times the timeout here.
    tel = otlp_telemetry(f"http://127.0.0.1:{stack.free_port()}", protocol, max_queue_size=2048,
                         otlp_timeout_seconds=3)
    for _ in range(3000):
        with tel.agent_execution("planner"):
            pass
    started = time.monotonic()
    tel.shutdown()
    assert time.monotonic() - started < 5.5
    assert "the tracing backend did not take the queued spans within 3s" in caplog.text
    assert executions(tel) == 3000


class GatedExporter(SpanExporter):
    """An exporter stuck (as on a hung collector) until the gate opens; counts what it got."""

    def __init__(self):
        self.gate = threading.Event()
        self.exported = 0
        self.calls = 0

    def export(self, spans):
        self.calls += 1
        self.gate.wait()
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        self.gate.set()


def test_stuck_exporter_never_blocks_the_caller_and_the_queue_stays_bounded():
    exporter = GatedExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=4, max_export_batch_size=2,
                                                   schedule_delay_millis=1))
    tel = Telemetry(tracer_provider=provider)
    recorded = 500
    done = []

    def orchestrator():
        for _ in range(recorded):
            with tel.agent_execution("planner"):
                pass
        done.append(True)

    worker = threading.Thread(target=orchestrator)
    worker.start()
    worker.join(60)  # a deadline, not a timing: a caller waiting on the exporter would never finish
    exporter.gate.set()
    assert done == [True] and not worker.is_alive()
    assert executions(tel) == recorded
    provider.shutdown()
    # The exporter got at most what fit in the queue plus the batch in flight; the rest were dropped.
    assert exporter.calls >= 1
    assert exporter.exported <= 4 + 2
