"""The OTLP/gRPC receiver over a real channel: answers and span counts for good and bad requests,
the bearer token, the message size limit, calls that never send their request, and the listen address."""

import base64
import gzip
import subprocess
import sys
import threading

import bcrypt
import grpc
import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from otlp_spans import agent_span, request, span
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import catalog, otlp_grpc, stack
from agent_exporter.config import Config, OTLPConfig, ServerConfig
from agent_exporter.otlp import GRPC_EXPORT_METHOD, OTLPReceiver
from agent_exporter.server import parse_listen_address
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


def test_serve_guards_grpc_with_the_web_configs_basic_auth_as_it_guards_http(tmp_path):
    # With basic_auth_users in the web config, /v1/traces answered 401 without credentials while
    # the gRPC receiver beside it took every call.
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(f"basic_auth_users:\n  alice: '{hashed}'\n")
    grpc_port, http_port = stack.free_port(), stack.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_exporter", "serve", f"--web.listen-address=127.0.0.1:{http_port}",
         f"--web.config.file={web_config}", f"--otlp.grpc-listen-address=127.0.0.1:{grpc_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = TraceServiceStub(channel)
            wrong = "Basic " + base64.b64encode(b"alice:wrong").decode()
            for metadata in ((), (("authorization", wrong),)):
                with pytest.raises(grpc.RpcError) as info:
                    stub.Export(request(agent_span(1)), metadata=metadata, timeout=10)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            right = "Basic " + base64.b64encode(b"alice:s3cret").decode()
            assert stub.Export(request(agent_span(1)), metadata=(("authorization", right),),
                               timeout=10) == ExportTraceServiceResponse()
        metrics = requests.get(f"http://127.0.0.1:{http_port}/metrics", auth=("alice", "s3cret"), timeout=10)
        assert {s.labels["outcome"]: s.value for family in parse_text(metrics.text) for s in family.samples
                if s.name == catalog.EXPORTER_OTLP_SPANS.name} == {"mapped": 1}
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_bearer_scheme_is_case_insensitive_as_over_http(tel):
    receiver = OTLPReceiver(tel)
    handle = receiver.start_grpc("127.0.0.1:0", bearer_token="s3cret")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            TraceServiceStub(channel).Export(request(agent_span(1)), metadata=(("authorization", "bearer s3cret"),),
                                             timeout=10)
    finally:
        receiver.close()
    assert spans_counted(tel) == {"mapped": 1}


class StalledCalls:
    """Export calls that start and never send their request (no deadline): `count` of them, on
    connections of their own, until `release()`.  They are under way once their channels are ready
    and grpcio, having sent each call's headers, asks for its request."""

    def __init__(self, port: int, count: int, metadata=()):
        self._sent = threading.Event()
        self._asked = threading.Semaphore(0)
        self._channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
                          for _ in range(count)]
        for channel in self._channels:
            grpc.channel_ready_future(channel).result(timeout=10)
        self.calls = [channel.stream_unary(GRPC_EXPORT_METHOD).future(self._never(), metadata=metadata)
                      for channel in self._channels]
        for _ in range(count):
            assert self._asked.acquire(timeout=10), "a call did not start"

    def _never(self):
        self._asked.release()
        self._sent.wait()
        yield b""

    def release(self):
        self._sent.set()
        for channel in self._channels:
            channel.close()


def test_calls_that_never_send_their_request_hold_up_no_other_call(tel, served):
    receiver, channel = served
    stalled = StalledCalls(receiver._grpc_servers[0].port, 2 * otlp_grpc.WORKERS)
    try:
        response = TraceServiceStub(channel).Export(request(agent_span(1, "planner")), timeout=10)
    finally:
        stalled.release()
    assert response == ExportTraceServiceResponse()
    assert spans_counted(tel) == {"mapped": 1}


def test_call_without_the_token_is_refused_before_its_request_arrives(tel):
    receiver = OTLPReceiver(tel)
    handle = receiver.start_grpc("127.0.0.1:0", bearer_token="s3cret")
    stalled = StalledCalls(handle.port, 1, metadata=(("authorization", "Bearer wrong"),))
    try:
        (call,) = stalled.calls
        assert call.exception(timeout=10).code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        stalled.release()
        receiver.close()


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip])
def test_request_over_the_size_limit_is_resource_exhausted(tel, compression):
    config = Config(server=ServerConfig(max_body_bytes=10_000))
    receiver = OTLPReceiver(tel, config)
    handle = receiver.start_grpc("127.0.0.1:0")
    over = request(*(agent_span(i) for i in range(1, 200))).SerializeToString()
    assert len(over) > 10_000 > len(gzip.compress(over))       # over the limit only once decompressed
    try:
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            export_bytes = channel.unary_unary(GRPC_EXPORT_METHOD)
            with pytest.raises(grpc.RpcError) as info:
                export_bytes(over, timeout=10, compression=compression)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            export_bytes(request(agent_span(1)).SerializeToString(), timeout=10, compression=compression)
    finally:
        receiver.close()
    assert spans_counted(tel) == {"mapped": 1}


def test_size_limit_beyond_what_grpc_takes_is_grpcs_own(tel):
    receiver = OTLPReceiver(tel, Config(server=ServerConfig(max_body_bytes=4 * 2**30)))
    try:
        handle = receiver.start_grpc("127.0.0.1:0")
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            TraceServiceStub(channel).Export(request(agent_span(1)), timeout=10)
    finally:
        receiver.close()
    assert spans_counted(tel) == {"mapped": 1}


def test_unknown_method_is_unimplemented(served):
    _, channel = served
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Ingest")(b"", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_close_ends_the_receivers_threads(tel, served):
    receiver, channel = served
    TraceServiceStub(channel).Export(request(agent_span(1)), timeout=10)
    receiver.close()
    assert [t.name for t in threading.enumerate() if t.name.startswith("otlp-grpc")] == []


@pytest.mark.parametrize("address", [":4317", "127.0.0.1:4317", "[::1]:4317", "localhost:4317"])
def test_listen_address_means_what_it_means_over_http(address):
    """Checked on the address grpcio binds: tests listen on loopback only."""
    host, port = parse_listen_address(address)
    assert otlp_grpc.bind_address(address) in (f"{host}:{port}", f"[{host}]:{port}")


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
