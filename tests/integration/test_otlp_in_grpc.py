"""The OTLP/gRPC receiver over a real channel: answers and span counts for good and bad requests,
the bearer token, and the listen address."""

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from otlp_spans import agent_span, request, span
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import catalog
from agent_exporter.config import Config, OTLPConfig
from agent_exporter.otlp import GRPC_EXPORT_METHOD, OTLPReceiver
from agent_exporter.telemetry import Telemetry

pytestmark = pytest.mark.integration


def spans_counted(tel) -> dict:
    return {s.labels["outcome"]: s.value for family in parse_text(tel.render().decode()) for s in family.samples
            if s.name == catalog.EXPORTER_OTLP_SPANS.name}


def executions(tel) -> dict:
    return {(s.labels["agent"], s.labels["status"]): s.value
            for family in parse_text(tel.render().decode()) for s in family.samples
            if s.name == catalog.AGENT_EXECUTIONS.name}


@pytest.fixture
def tel():
    telemetry = Telemetry()
    yield telemetry
    telemetry.shutdown()


@pytest.fixture
def served(tel):
    """(receiver, channel to its gRPC port)."""
    receiver = OTLPReceiver(tel)
    handle = receiver.start_grpc("127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
    yield receiver, channel
    channel.close()
    receiver.close()


def test_genai_spans_are_mapped(tel, served):
    _, channel = served
    response = TraceServiceStub(channel).Export(request(agent_span(1, "planner")), timeout=10)
    assert response == ExportTraceServiceResponse()
    assert executions(tel) == {("planner", "success"): 1}
    assert spans_counted(tel) == {"mapped": 1}


def test_malformed_body_is_invalid_argument_and_counts_nothing(tel, served):
    _, channel = served
    export_bytes = channel.unary_unary(GRPC_EXPORT_METHOD)     # sends the bytes as they are
    with pytest.raises(grpc.RpcError) as info:
        export_bytes(b"\x0a\x05\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in info.value.details()
    assert spans_counted(tel) == {}


def test_empty_request_is_a_full_success_and_counts_nothing(tel, served):
    _, channel = served
    assert TraceServiceStub(channel).Export(ExportTraceServiceRequest(), timeout=10) == ExportTraceServiceResponse()
    assert spans_counted(tel) == {}


def test_span_without_genai_attributes_is_ignored(tel, served):
    _, channel = served
    response = TraceServiceStub(channel).Export(request(span(1, {"http.request.method": "GET"})), timeout=10)
    assert response == ExportTraceServiceResponse()
    assert spans_counted(tel) == {"ignored": 1}
    assert executions(tel) == {}


def test_bad_span_is_a_partial_success(tel, served):
    _, channel = served
    response = TraceServiceStub(channel).Export(request(
        agent_span(1, "planner"), span(2, {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": -1})),
        timeout=10)
    assert response.partial_success.rejected_spans == 1
    assert "gen_ai.usage.input_tokens" in response.partial_success.error_message
    assert spans_counted(tel) == {"mapped": 1, "rejected": 1}


def test_bearer_token_is_required_when_set(tel):
    receiver = OTLPReceiver(tel)
    handle = receiver.start_grpc("127.0.0.1:0", bearer_token="s3cret")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = TraceServiceStub(channel)
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.RpcError) as info:
                    stub.Export(request(agent_span(1)), metadata=metadata, timeout=10)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert spans_counted(tel) == {}
            stub.Export(request(agent_span(1)), metadata=(("authorization", "Bearer s3cret"),), timeout=10)
            assert spans_counted(tel) == {"mapped": 1}
    finally:
        receiver.close()


def test_listen_address_from_config_and_errors(tel):
    off = OTLPReceiver(tel)
    try:
        with pytest.raises(ValueError, match="otlp.grpc_listen_address"):
            off.start_grpc()
    finally:
        off.close()
    receiver = OTLPReceiver(tel, Config(otlp=OTLPConfig(grpc_listen_address="127.0.0.1:0")))
    try:
        handle = receiver.start_grpc()
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            TraceServiceStub(channel).Export(request(agent_span(1)), timeout=10)
        with pytest.raises(OSError, match="cannot listen"):
            receiver.start_grpc(f"127.0.0.1:{handle.port}")     # taken
    finally:
        receiver.close()
    assert spans_counted(tel) == {"mapped": 1}
