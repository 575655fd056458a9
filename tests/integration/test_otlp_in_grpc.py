"""The OTLP/gRPC receiver over a real channel: answers and span counts for good and bad requests,
the bearer token, the web config's TLS, the message size limit, calls that never send their request,
and the listen address."""

import base64
import gzip
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import bcrypt
import grpc
import pytest
import requests
from certificates import client_certificate, self_signed
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_spans import agent_span, request, span
from process_output import lines_of, until
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import catalog, otlp_grpc, stack
from agent_exporter.config import Config, OTLPConfig, ServerConfig
from agent_exporter.credentials import TokenFile
from agent_exporter.otlp import OTLPReceiver
from agent_exporter.server import parse_listen_address
from agent_exporter.telemetry import Telemetry

pytestmark = pytest.mark.integration


def spans_counted(tel) -> dict:
    return {s.labels["outcome"]: s.value for family in parse_text(tel.render().decode()) for s in family.samples
            if s.name == catalog.EXPORTER_OTLP_SPANS.name and s.value}


def executions(tel) -> dict:
    """Counted executions by (agent, status); each label set's other status is there at 0 too."""
    return {(s.labels["agent"], s.labels["status"]): s.value
            for family in parse_text(tel.render().decode()) for s in family.samples
            if s.name == catalog.AGENT_EXECUTIONS.name and s.value}


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
    export_bytes = channel.unary_unary(otlp_grpc.EXPORT_METHOD)     # sends the bytes as they are
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


def test_bearer_token_is_required_when_set(tel, caplog):
    caplog.set_level(logging.DEBUG, logger="agent_exporter.otlp_grpc")
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
    # At debug level, as the HTTP service says of its refusals; never the credentials sent.
    refused = [r.getMessage() for r in caplog.records if r.name == "agent_exporter.otlp_grpc"]
    assert refused == [f"{otlp_grpc.EXPORT_METHOD} answered UNAUTHENTICATED: valid credentials are required"] * 2
    assert "wrong" not in caplog.text


def test_a_token_rotated_in_its_file_applies_to_the_next_call(tel, tmp_path):
    # The HTTP service's TokenFile, shared: one file, read again when it changes, guards both listeners.
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    receiver = OTLPReceiver(tel)
    handle = receiver.start_grpc("127.0.0.1:0", bearer_token=TokenFile(str(token_file), "bearer_token_file"))

    def code(token: str) -> grpc.StatusCode:
        try:
            stub.Export(request(agent_span(1)), metadata=(("authorization", f"Bearer {token}"),), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    try:
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = TraceServiceStub(channel)
            assert code("first") == grpc.StatusCode.OK
            staged = tmp_path / "token.new"
            staged.write_text("second\n")
            os.replace(staged, token_file)
            assert (code("first"), code("second")) == (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.OK)
            token_file.write_text("two\nlines\n")
            assert code("second") == grpc.StatusCode.UNAVAILABLE      # which OTLP exporters retry
            assert spans_counted(tel) == {"mapped": 2}
    finally:
        receiver.close()


def calls_counted(tel) -> dict:
    return {(s.labels["method"], s.labels["code"]): s.value
            for family in parse_text(tel.render().decode()) for s in family.samples
            if s.name == catalog.EXPORTER_GRPC_REQUESTS.name}


class FaultyReceiver(OTLPReceiver):
    def export_serialized(self, data):
        raise RuntimeError("a bug in the mapping")


def test_every_answered_call_is_counted_by_method_and_code(tel, caplog):
    # As orchestrator_exporter_http_requests_total counts HTTP: refusals, faults and unknown methods too.
    draining = False
    receiver = OTLPReceiver(tel)
    handle = receiver.start_grpc("127.0.0.1:0", bearer_token="s3cret", draining=lambda: draining)
    faulty = FaultyReceiver(tel)
    faulty_handle = faulty.start_grpc("127.0.0.1:0")
    token = (("authorization", "Bearer s3cret"),)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = TraceServiceStub(channel)
            stub.Export(request(agent_span(1)), metadata=token, timeout=10)
            stub.Export(ExportTraceServiceRequest(), metadata=token, timeout=10)
            calls = [lambda: stub.Export(request(agent_span(1)), timeout=10),
                     lambda: channel.unary_unary(otlp_grpc.EXPORT_METHOD)(b"\x0a\x05\xff\xff", metadata=token,
                                                                          timeout=10),
                     lambda: channel.unary_unary("/no.such.Service/Call")(b"", metadata=token, timeout=10)]
            codes = []
            for call in calls:
                with pytest.raises(grpc.RpcError) as info:
                    call()
                codes.append(info.value.code())
            draining = True
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(request(agent_span(1)), metadata=token, timeout=10)
            codes.append(info.value.code())
        with grpc.insecure_channel(f"127.0.0.1:{faulty_handle.port}") as channel:
            with pytest.raises(grpc.RpcError) as info:
                TraceServiceStub(channel).Export(request(agent_span(1)), timeout=10)
            codes.append(info.value.code())
            assert "internal error" in info.value.details()
    finally:
        receiver.close()
        faulty.close()
    assert codes == [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT,
                     grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL]
    export = otlp_grpc.EXPORT_METHOD
    assert calls_counted(tel) == {(export, "OK"): 2, (export, "UNAUTHENTICATED"): 1, (export, "INVALID_ARGUMENT"): 1,
                                  ("other", "UNIMPLEMENTED"): 1, (export, "UNAVAILABLE"): 1, (export, "INTERNAL"): 1}
    faults = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert [r.exc_info[0] for r in faults] == [RuntimeError]


class Serve:
    """`agent-exporter serve` with `web_config` (YAML) and an OTLP/gRPC port, its stderr in a file."""

    def __init__(self, directory: Path, web_config: str):
        (directory / "web.yml").write_text(web_config)
        self.grpc_port, self.http_port = stack.free_port(), stack.free_port()
        self._stderr_path = directory / "stderr.log"
        with self._stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agent_exporter", "serve", f"--web.listen-address=127.0.0.1:{self.http_port}",
                 f"--web.config.file={directory / 'web.yml'}",
                 f"--otlp.grpc-listen-address=127.0.0.1:{self.grpc_port}"],
                stdout=subprocess.DEVNULL, stderr=stderr)

    @property
    def stderr(self) -> str:
        return self._stderr_path.read_text()

    def wait_listening(self) -> "Serve":
        """Until serve logs that it listens (it opens the gRPC port before HTTP): by then uvicorn handles
        SIGTERM (the port takes connections a moment before, and a SIGTERM then was ignored)."""
        def listening() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}: {self.stderr}")
            return "Listening on" in self.stderr
        stack.wait_for(listening, timeout=30, interval=0.1, what="serve not listening")
        return self

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def test_serve_guards_grpc_with_the_web_configs_basic_auth_as_it_guards_http(tmp_path):
    # With basic_auth_users in the web config, /v1/traces answered 401 without credentials while
    # the gRPC receiver beside it took every call.
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    serve = Serve(tmp_path, f"basic_auth_users:\n  alice: '{hashed}'\n")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{serve.grpc_port}") as channel:
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
        metrics = requests.get(f"http://127.0.0.1:{serve.http_port}/metrics", auth=("alice", "s3cret"), timeout=10)
        assert {s.labels["outcome"]: s.value for family in parse_text(metrics.text) for s in family.samples
                if s.name == catalog.EXPORTER_OTLP_SPANS.name and s.value} == {"mapped": 1}
    finally:
        serve.stop()


def test_serve_applies_the_web_configs_rate_limit_to_grpc_and_http_alike(tmp_path):
    # One token bucket for the exporter, as exporter-toolkit's rate_limit is for its server: a burst of 2
    # refilled once an hour.  The gRPC receiver took every call whatever the limit said.
    serve = Serve(tmp_path, "rate_limit:\n  interval: 1h\n  burst: 2\n")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{serve.grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = TraceServiceStub(channel)
            assert stub.Export(request(agent_span(1)), timeout=10) == ExportTraceServiceResponse()   # token 1
            assert requests.get(f"http://127.0.0.1:{serve.http_port}/-/healthy",
                                timeout=10).status_code == 200      # token 2
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(request(agent_span(2)), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert requests.get(f"http://127.0.0.1:{serve.http_port}/metrics", timeout=10).status_code == 429
    finally:
        serve.stop()


def test_grpc_refuses_new_calls_while_serve_drains(tmp_path):
    # SIGTERM turns readiness 503 and HTTP stops accepting; the gRPC receiver took calls until the drain
    # ended.  UNAVAILABLE is what OTLP exporters retry, so the spans go to another replica or come back.
    grpc_port = stack.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_exporter", "serve", "--web.listen-address=127.0.0.1:0",
         f"--otlp.grpc-listen-address=127.0.0.1:{grpc_port}"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = lines_of(process.stderr)
        listening = next(line for line in until(lines, time.monotonic() + 30) if "Listening on" in line)
        http_port = int(re.search(r"Listening on http://127\.0\.0\.1:(\d+)", listening).group(1))
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel, \
                socket.create_connection(("127.0.0.1", http_port), timeout=30) as sock:
            stub = TraceServiceStub(channel)
            assert stub.Export(request(agent_span(1)), timeout=10) == ExportTraceServiceResponse()
            # An HTTP request in flight holds the drain open ("100 Continue": the server is inside it).
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 100 ")
            process.send_signal(signal.SIGTERM)
            assert any("waiting for 1 in-flight request" in line for line in until(lines, time.monotonic() + 30))
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(request(agent_span(2)), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            sock.sendall(b"[]")
            assert sock.recv(4096).startswith(b"HTTP/1.1 ")
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


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
        self.calls = [channel.stream_unary(otlp_grpc.EXPORT_METHOD).future(self._never(), metadata=metadata)
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
            export_bytes = channel.unary_unary(otlp_grpc.EXPORT_METHOD)
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


def test_a_port_past_65535_is_refused_not_wrapped_around():
    # grpcio would bind 127.0.0.1:19228 for this one.
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        otlp_grpc.bind_address("127.0.0.1:84764")


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


# -- TLS from the web config, through `agent-exporter serve` ---------------------------------------

def sdk_spans() -> list:
    """Two finished GenAI agent spans from the OpenTelemetry SDK, as an instrumented application makes them."""
    finished = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(finished))
    tracer = provider.get_tracer("test")
    for agent in ("planner", "coder"):
        with tracer.start_as_current_span(f"invoke_agent {agent}", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}):
            pass
    provider.shutdown()
    return list(finished.get_finished_spans())


def export_with_the_sdk(port: int, credentials: grpc.ChannelCredentials) -> SpanExportResult:
    exporter = OTLPSpanExporter(endpoint=f"https://localhost:{port}", credentials=credentials, timeout=10)
    try:
        return exporter.export(sdk_spans())
    finally:
        exporter.shutdown()


def refused(channel: grpc.Channel) -> grpc.StatusCode | None:
    """The status of an Export over `channel`, None when it is taken."""
    with channel:
        try:
            TraceServiceStub(channel).Export(request(agent_span(1)), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return None


def scraped_spans(serve: Serve, **tls) -> dict:
    metrics = requests.get(f"https://127.0.0.1:{serve.http_port}/metrics", timeout=10, **tls)
    metrics.raise_for_status()
    return {s.labels["outcome"]: s.value for family in parse_text(metrics.text) for s in family.samples
            if s.name == catalog.EXPORTER_OTLP_SPANS.name and s.value}


@pytest.mark.parametrize("given", ["files", "inline"])
def test_serve_secures_grpc_with_the_web_configs_tls(tmp_path, given):
    # The gRPC port was plaintext whatever the web config said: a bearer token or a password crossed it in clear.
    cert_path, key_path = self_signed(tmp_path)
    if given == "files":
        tls = "  cert_file: server.crt\n  key_file: server.key\n"
    else:
        indent = lambda pem: "".join(f"    {line}\n" for line in pem.read_text().splitlines())
        tls = f"  cert: |\n{indent(cert_path)}  key: |\n{indent(key_path)}"
    serve = Serve(tmp_path, "tls_server_config:\n" + tls).wait_listening()
    try:
        trusted = grpc.ssl_channel_credentials(root_certificates=cert_path.read_bytes())
        assert export_with_the_sdk(serve.grpc_port, trusted) == SpanExportResult.SUCCESS
        assert refused(grpc.insecure_channel(f"127.0.0.1:{serve.grpc_port}")) == grpc.StatusCode.UNAVAILABLE
        (tmp_path / "other").mkdir()
        other_cert, _ = self_signed(tmp_path / "other")
        untrusted = grpc.ssl_channel_credentials(root_certificates=other_cert.read_bytes())
        assert refused(grpc.secure_channel(f"localhost:{serve.grpc_port}", untrusted)) == grpc.StatusCode.UNAVAILABLE
        assert scraped_spans(serve, verify=str(cert_path)) == {"mapped": 2}
    finally:
        serve.stop()


def test_serve_requires_a_client_certificate_from_the_client_ca_with_an_allowed_san(tmp_path):
    ca = self_signed(tmp_path)          # the server's certificate is its own CA, and the clients'
    (tmp_path / "other").mkdir()
    other_ca = self_signed(tmp_path / "other")
    serve = Serve(tmp_path, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.crt\n"
                            "  client_allowed_sans: [collector.example]\n").wait_listening()
    roots = ca[0].read_bytes()

    def channel(client: tuple[bytes, bytes] | None = None) -> grpc.Channel:
        cert, key = client or (None, None)
        return grpc.secure_channel(f"localhost:{serve.grpc_port}", grpc.ssl_channel_credentials(
            root_certificates=roots, private_key=key, certificate_chain=cert))

    try:
        assert refused(channel()) == grpc.StatusCode.UNAVAILABLE            # no certificate: no handshake
        assert refused(channel(client_certificate(tmp_path, other_ca, "collector.example"))) == \
            grpc.StatusCode.UNAVAILABLE                                     # signed by another CA
        assert refused(channel(client_certificate(tmp_path, ca, "intruder.example"))) == \
            grpc.StatusCode.PERMISSION_DENIED                               # the CA's, without an allowed SAN
        cert, key = client_certificate(tmp_path, ca, "collector.example")
        assert export_with_the_sdk(serve.grpc_port, grpc.ssl_channel_credentials(
            root_certificates=roots, private_key=key, certificate_chain=cert)) == SpanExportResult.SUCCESS
        (tmp_path / "client.crt").write_bytes(cert)
        (tmp_path / "client.key").write_bytes(key)
        assert scraped_spans(serve, verify=str(ca[0]),
                             cert=(str(tmp_path / "client.crt"), str(tmp_path / "client.key"))) == {"mapped": 2}
    finally:
        serve.stop()


@pytest.mark.parametrize("setting, key", [
    ("min_version: TLS13", "tls_server_config.min_version"),
    ("max_version: TLS12", "tls_server_config.max_version"),
    ("cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]", "tls_server_config.cipher_suites"),
    ("client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: server.crt", "tls_server_config.client_auth_type"),
    ("client_auth_type: RequireAndVerifyClientCert", "tls_server_config.client_ca_file"),   # the system roots
])
def test_serve_refuses_a_tls_setting_grpc_cannot_enforce(tmp_path, setting, key):
    """The HTTP service could enforce it; serving gRPC with a weaker connection than the config says is refused."""
    self_signed(tmp_path)
    serve = Serve(tmp_path, f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  {setting}\n")
    try:
        assert serve.process.wait(timeout=30) == 1
    finally:
        if serve.process.poll() is None:
            serve.stop()
    assert f"cannot serve OTLP/gRPC on 127.0.0.1:{serve.grpc_port}: {key}:" in serve.stderr


# -- the web config re-read as it changes ----------------------------------------------------------

def replace(path: Path, text: str) -> None:
    """Write `text` to `path` as tools that rotate files do: a new file renamed over the old one."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    os.replace(staged, path)


def trusting(port: int, pem: bytes, **client) -> grpc.Channel:
    """A new channel that trusts `pem` only, on a connection of its own (no subchannel shared with an
    earlier channel); `client` is a client certificate (private_key, certificate_chain)."""
    return grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(root_certificates=pem, **client),
                               options=(("grpc.use_local_subchannel_pool", 1),))


def outcome(channel: grpc.Channel) -> tuple[grpc.StatusCode, str] | None:
    """The status and message of an Export over `channel`, None when it is taken."""
    with channel:
        try:
            TraceServiceStub(channel).Export(request(agent_span(1)), timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return None


def test_serve_serves_a_rotated_certificate_to_new_grpc_connections(tmp_path):
    # The certificate was read once at start: one rotated by cert-manager was not served until a restart.
    cert, key = self_signed(tmp_path)
    first = cert.read_bytes()
    serve = Serve(tmp_path, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n").wait_listening()
    try:
        assert outcome(trusting(serve.grpc_port, first)) is None
        (tmp_path / "second").mkdir()
        second_cert, second_key = self_signed(tmp_path / "second")
        second = second_cert.read_bytes()
        os.replace(second_key, key)
        os.replace(second_cert, cert)
        assert outcome(trusting(serve.grpc_port, second)) is None
        assert outcome(trusting(serve.grpc_port, first))[0] == grpc.StatusCode.UNAVAILABLE   # no handshake
        assert serve.process.poll() is None
    finally:
        serve.stop()


def test_serve_applies_users_added_and_removed_to_grpc_calls(tmp_path):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    serve = Serve(tmp_path, f"basic_auth_users:\n  alice: '{hashed}'\n").wait_listening()
    basic = lambda user: (("authorization", "Basic " + base64.b64encode(f"{user}:s3cret".encode()).decode()),)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{serve.grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(request(agent_span(1)), metadata=basic("bob"), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            replace(tmp_path / "web.yml", f"basic_auth_users:\n  bob: '{hashed}'\n")
            assert stub.Export(request(agent_span(1)), metadata=basic("bob"), timeout=10) == \
                ExportTraceServiceResponse()
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(request(agent_span(1)), metadata=basic("alice"), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        serve.stop()


def test_grpc_fails_closed_while_the_web_config_is_invalid_or_asks_what_grpc_cannot_enforce(tmp_path):
    # grpc core cannot refuse a handshake from its certificate fetcher, so the calls are refused instead:
    # UNAVAILABLE, which OTLP exporters retry, while HTTPS goes on with what it can enforce.
    cert, _ = self_signed(tmp_path)
    pem = cert.read_bytes()
    tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
    serve = Serve(tmp_path, tls).wait_listening()
    refusal = (grpc.StatusCode.UNAVAILABLE, "the exporter's web config is invalid; see the exporter's log")
    https = lambda: requests.get(f"https://127.0.0.1:{serve.http_port}/-/healthy", verify=str(cert),
                                 timeout=10).status_code
    try:
        replace(tmp_path / "web.yml", tls + "  min_version: TLS13\n")
        assert outcome(trusting(serve.grpc_port, pem)) == refusal
        assert https() == 200
        replace(tmp_path / "web.yml", tls + "  min_version: [\n")
        assert outcome(trusting(serve.grpc_port, pem)) == refusal
        with pytest.raises(requests.exceptions.SSLError):      # new TLS connections are refused
            https()
        replace(tmp_path / "web.yml", tls)
        assert outcome(trusting(serve.grpc_port, pem)) is None
        assert https() == 200
        assert serve.process.poll() is None
    finally:
        serve.stop()
    assert serve.stderr.count("tls_server_config.min_version: the OTLP/gRPC receiver cannot enforce this") == 1
    assert serve.stderr.count("invalid YAML") == 1
