"""Pass-through: received spans reach the tracing backend unchanged; a dead or stuck backend costs
ingestion nothing (requests are dropped and counted, never waited for)."""

import json
import logging
import re
import socket
import threading

import pytest
from google.protobuf import json_format
from otlp_receiver import GrpcReceiver, HttpReceiver, spans_of
from otlp_spans import agent_span, chat_span, request, span
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import catalog, otlp, stack
from agent_exporter.config import Config, OTLPConfig, TracingConfig
from agent_exporter.otlp import OTLPReceiver
from agent_exporter.telemetry import Telemetry

pytestmark = pytest.mark.integration


def forwarding(endpoint: str, protocol: str, *, timeout: float = 5.0, queue_size: int = 64) -> Config:
    return Config(tracing=TracingConfig(otlp_endpoint=endpoint, otlp_protocol=protocol, otlp_timeout_seconds=timeout),
                  otlp=OTLPConfig(forward_spans=True, forward_queue_size=queue_size))


def executions(tel) -> float:
    return sum(s.value for family in parse_text(tel.render().decode()) for s in family.samples
               if s.name == catalog.AGENT_EXECUTIONS.name)


def forwarded(tel) -> dict[str, float]:
    """orchestrator_exporter_otlp_forwarded_spans_total by outcome, as /metrics exposes it."""
    return {s.labels["outcome"]: s.value for family in parse_text(tel.render().decode()) for s in family.samples
            if s.name == catalog.EXPORTER_OTLP_FORWARDED_SPANS.name}


class StuckBackend:
    """Accepts connections on loopback and never answers."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return          # the listener was closed
            self._accepted.append(connection)

    def stop(self):
        # shutdown() (not just close()) wakes the blocked accept() and sends the clients EOF.
        for sock in (self._listener, *self._accepted):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._thread.join(5)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_received_spans_reach_the_backend_unchanged(protocol):
    backend_class = GrpcReceiver if protocol == "grpc" else HttpReceiver
    sent = request(chat_span(2, parent=1), agent_span(1, "planner"), span(3, {"http.route": "/orders"}))
    with backend_class() as backend:
        config = forwarding(backend.endpoint, protocol)
        tel = Telemetry(config)
        receiver = OTLPReceiver(tel, config)
        try:
            receiver.export(sent)
            # OTLP/JSON in, forwarded as the protobuf encoding of the same request.
            document = json_format.MessageToDict(request(span(4, {"db.system": "postgresql"})))
            document_span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
            document_span["traceId"] = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736").hex()
            document_span["spanId"] = (4).to_bytes(8, "big").hex()
            status, _, _ = receiver.handle_http(json.dumps(document).encode(), "application/json")
            assert status == 200
        finally:
            receiver.close()
            tel.shutdown()
        received = backend.wait_for_spans(4)
    assert received == spans_of(sent) + spans_of(request(span(4, {"db.system": "postgresql"})))
    assert forwarded(tel) == {"sent": 4, "dropped": 0, "failed": 0}
    assert executions(tel) == 1


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_forwarded_requests_carry_the_sdks_environment_headers_under_the_configured_ones(protocol, monkeypatch):
    """A backend's API key may stay in OTEL_EXPORTER_OTLP_HEADERS, out of the config file, as the
    SDK's exporters read it: forwarding used to send only tracing.otlp_headers, and was refused."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=from-env,x-team=env")
    backend_class = GrpcReceiver if protocol == "grpc" else HttpReceiver
    with backend_class() as backend:
        config = Config(tracing=TracingConfig(otlp_endpoint=backend.endpoint, otlp_protocol=protocol,
                                              otlp_headers={"X-Team": "config"}), otlp=OTLPConfig(forward_spans=True))
        tel = Telemetry(config)
        receiver = OTLPReceiver(tel, config)
        try:
            receiver.export(request(agent_span(1, "planner")))
            backend.wait_for_spans(1)
        finally:
            receiver.close()
            tel.shutdown()
    assert backend.headers[0]["x-api-key"] == "from-env"
    assert backend.headers[0]["x-team"] == "config"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_exporters_own_spans_carry_the_same_headers(protocol, monkeypatch):
    """Over gRPC, a capitalised tracing.otlp_headers name failed every export (gRPC metadata is
    lowercase), and the SDK's gRPC exporter dropped OTEL_EXPORTER_OTLP_HEADERS once the config set any."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=from-env,x-team=env")
    backend_class = GrpcReceiver if protocol == "grpc" else HttpReceiver
    with backend_class() as backend:
        tel = Telemetry(Config(tracing=TracingConfig(export_to_otlp=True, otlp_endpoint=backend.endpoint,
                                                     otlp_protocol=protocol, otlp_headers={"X-Team": "config"})))
        try:
            with tel.agent_execution("planner"):
                pass
        finally:
            tel.shutdown()
        backend.wait_for_spans(1)
    assert backend.headers[0]["x-api-key"] == "from-env"
    assert backend.headers[0]["x-team"] == "config"


def test_an_environment_header_no_request_could_carry_is_an_error_that_hides_it(monkeypatch):
    from agent_exporter.tracing import otlp_headers
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-api-key=SECRET%0AKEY")
    with pytest.raises(ValueError) as raised:
        otlp_headers({})
    assert str(raised.value) == ("OTEL_EXPORTER_OTLP_TRACES_HEADERS: the header 'x-api-key' cannot be sent: "
                                 "a header value is printable ASCII")
    assert otlp_headers({}, "logs") == {}       # logs read their own variable, then the common one


@pytest.mark.parametrize("path", ["/", "/v1/traces"])
def test_grpc_endpoint_with_a_path_forwards_to_its_host_and_port(path):
    """As the SDK's OTLP/gRPC exporter does with the same tracing.otlp_endpoint (the exporter's own traces)."""
    with GrpcReceiver() as backend:
        config = forwarding(backend.endpoint + path, "grpc")
        tel = Telemetry(config)
        receiver = OTLPReceiver(tel, config)
        try:
            receiver.export(request(agent_span(1, "planner")))
        finally:
            receiver.close()
            tel.shutdown()
        assert [s.span_id for s in backend.wait_for_spans(1)] == [(1).to_bytes(8, "big").hex()]
    assert forwarded(tel) == {"sent": 1, "dropped": 0, "failed": 0}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_dead_backend_fails_forwarding_not_ingestion(protocol, caplog):
    port = stack.free_port()
    config = forwarding(f"http://127.0.0.1:{port}", protocol, timeout=2.0)
    tel = Telemetry(config)
    receiver = OTLPReceiver(tel, config)
    try:
        for i in range(1, 6):
            response = receiver.export(request(agent_span(i, "planner")))
            assert not response.HasField("partial_success")
    finally:
        receiver.close()
        tel.shutdown()
    assert executions(tel) == 5
    assert forwarded(tel) == {"sent": 0, "dropped": 0, "failed": 5}
    # Logged once, when forwarding starts failing, on one line that says why.
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "agent_exporter.otlp"]
    assert warning.startswith("forwarding spans to the tracing backend fails (dropping them): ")
    assert "\n" not in warning and str(port) in warning
    if protocol == "grpc":
        assert "gRPC UNAVAILABLE: " in warning


def test_stuck_backend_never_holds_up_ingestion(caplog):
    backend = StuckBackend()
    # The backend timeout is far longer than the test: only a full queue can keep exports moving.
    config = forwarding(f"http://127.0.0.1:{backend.port}", "http/protobuf", timeout=3600.0, queue_size=2)
    tel = Telemetry(config)
    receiver = OTLPReceiver(tel, config)
    exporting = threading.Thread(target=lambda: [receiver.export(request(agent_span(i, "planner")))
                                                 for i in range(1, 21)])
    try:
        exporting.start()
        exporting.join(60)
        assert not exporting.is_alive(), "export waited for the stuck backend"
        assert executions(tel) == 20
        # One request in flight, at most two queued: the rest were dropped, and that is said once.
        assert forwarded(tel)["dropped"] >= 17
        full = [r for r in caplog.records if r.levelno == logging.WARNING and "queue" in r.getMessage()]
        assert [r.getMessage() for r in full] == [
            "the forwarding queue (otlp.forward_queue_size=2) is full: the tracing backend takes spans slower "
            "than they arrive; dropping requests until it catches up"]
    finally:
        backend.stop()          # the request in flight fails; the queued ones fail fast
        receiver.close()
        tel.shutdown()
    spans = forwarded(tel)
    assert spans["sent"] == 0 and spans["dropped"] + spans["failed"] == 20


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_close_gives_up_on_a_stuck_backend_and_its_thread_then_ends_quietly(protocol, caplog):
    backend = StuckBackend()
    config = forwarding(f"http://127.0.0.1:{backend.port}", protocol, timeout=3600.0, queue_size=2)
    tel = Telemetry(config)
    before = set(threading.enumerate())
    receiver = OTLPReceiver(tel, config)
    (sending,) = [t for t in threading.enumerate() if t not in before and t.name == "otlp-forward"]
    try:
        for i in range(1, 6):
            receiver.export(request(agent_span(i, "planner")))
        receiver.close()            # bounded: gives up on the call in flight
        assert forwarded(tel) == {"sent": 0, "dropped": 5, "failed": 0}
    finally:
        backend.stop()              # the abandoned call returns
        tel.shutdown()
    sending.join(10)
    assert not sending.is_alive(), "the forwarding thread outlived its backend"
    assert forwarded(tel) == {"sent": 0, "dropped": 5, "failed": 0}
    # Its call failed as close() gave it up (gRPC: CANCELLED, "Channel closed!"): that is not the backend failing.
    # What close() gave up on (the rest were dropped as the queue was full) is said once: the count goes
    # with the process.
    (message,) = [r.getMessage() for r in caplog.records
                  if r.name == "agent_exporter.otlp" and "forwarding queue" not in r.getMessage()]
    assert re.fullmatch(rf"the tracing backend did not take [1-5] forwarded span\(s\) within "
                        rf"{otlp.CLOSE_SECONDS + 1:g}s; dropped them", message), message


def test_forwarded_spans_are_exposed_at_0_from_the_start_and_only_while_forwarding():
    """Every outcome exists before the first span, so rate() sees the first drop or failure."""
    config = forwarding(f"http://127.0.0.1:{stack.free_port()}", "http/protobuf")
    tel = Telemetry(config)
    receiver = OTLPReceiver(tel, config)
    try:
        assert forwarded(tel) == {"sent": 0, "dropped": 0, "failed": 0}
    finally:
        receiver.close()
        tel.shutdown()
    tel = Telemetry(Config())
    receiver = OTLPReceiver(tel)
    try:
        receiver.export(request(agent_span(1, "planner")))
        assert forwarded(tel) == {}
    finally:
        receiver.close()
        tel.shutdown()
