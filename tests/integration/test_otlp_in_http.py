"""OTLP/HTTP against the real service (POST /v1/traces): encodings, gzip, the OTLP answers, auth, limits."""

import gzip
import json

import pytest
import requests
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from otlp_spans import TRACE, agent_span, request, span
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import catalog
from agent_exporter.config import Config
from agent_exporter.otlp import OTLPReceiver
from agent_exporter.server import Service, start_server
from agent_exporter.telemetry import Telemetry

pytestmark = pytest.mark.integration

PROTOBUF = {"Content-Type": "application/x-protobuf"}


class Served:
    def __init__(self, **service_options):
        self.telemetry = Telemetry(Config())
        self.receiver = OTLPReceiver(self.telemetry)
        self.handle = start_server(Service(self.telemetry, otlp=self.receiver, **service_options), "127.0.0.1:0")
        self.url = self.handle.url

    def post(self, body: bytes, headers: dict) -> requests.Response:
        return requests.post(f"{self.url}/v1/traces", data=body, headers=headers, timeout=10)

    def samples(self) -> dict:
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        return {(s.name, frozenset(s.labels.items())): s.value for f in parse_text(text) for s in f.samples}

    def executions(self) -> dict:
        """Counted executions by agent (each agent's other status is there at 0 too)."""
        return {dict(labels)["agent"]: v for (name, labels), v in self.samples().items()
                if name == catalog.AGENT_EXECUTIONS.name and v}

    def spans_counted(self) -> dict:
        return {dict(labels)["outcome"]: v for (name, labels), v in self.samples().items()
                if name == catalog.EXPORTER_OTLP_SPANS.name and v}

    def close(self):
        self.handle.stop()
        self.receiver.close()
        self.telemetry.shutdown()


@pytest.fixture
def served():
    started = Served()
    yield started
    started.close()


def test_protobuf_gzipped_and_a_partial_success(served):
    body = request(agent_span(1, "planner"),
                   span(2, {"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": -4})).SerializeToString()
    reply = served.post(gzip.compress(body), {**PROTOBUF, "Content-Encoding": "gzip"})
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(reply.content)
    assert answer.partial_success.rejected_spans == 1
    assert "gen_ai.usage.output_tokens" in answer.partial_success.error_message
    assert served.executions() == {"planner": 1}
    assert served.spans_counted() == {"mapped": 1, "rejected": 1}


def test_json_with_hex_ids(served):
    document = json_format.MessageToDict(request(agent_span(1, "planner")))
    document_span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    document_span["traceId"], document_span["spanId"] = TRACE.hex(), "0000000000000001"
    reply = served.post(json.dumps(document).encode(), {"Content-Type": "application/json"})
    assert reply.status_code == 200 and reply.json() == {}
    assert served.executions() == {"planner": 1}


def test_body_that_does_not_decode_is_400_with_a_status(served):
    reply = served.post(b"\x0a\x05\xff\xff", PROTOBUF)
    assert reply.status_code == 400
    assert "ExportTraceServiceRequest" in status_pb2.Status.FromString(reply.content).message
    assert served.spans_counted() == {}


def test_other_content_type_is_415(served):
    reply = served.post(b"hello", {"Content-Type": "text/plain"})
    assert reply.status_code == 415


def test_json_in_another_charset_is_415_as_on_v1_events(served):
    """It is read as UTF-8: latin-1 text was taken, then failed as 'not UTF-8' or read wrong."""
    for charset, status in (("latin-1", 415), ("utf-16", 415), ("UTF-8", 200), ("us-ascii", 200)):
        reply = served.post(b'{"resourceSpans": []}', {"Content-Type": f"application/json; charset={charset}"})
        assert reply.status_code == status, charset
    assert "(in UTF-8)" in status_pb2.Status.FromString(
        served.post(b"{}", {"Content-Type": "application/json; charset=latin-1"}).content).message


def test_every_refusal_is_a_status_in_the_request_s_encoding():
    """OTLP/HTTP answers every 4xx and 5xx with a google.rpc.Status, encoded as the request was."""
    served = Served(bearer_token="s3cret", max_body_bytes=1000)
    try:
        body = request(agent_span(1)).SerializeToString()
        bearer = {"Authorization": "Bearer s3cret"}
        for headers, data, status, code, says in [
            (PROTOBUF, body, 401, 16, "Unauthorized"),
            ({**PROTOBUF, **bearer}, b"x" * 2000, 413, 3, "over the limit"),
            ({**PROTOBUF, **bearer, "Content-Encoding": "gzip"}, b"not gzip", 400, 3, "invalid gzip body"),
            ({**PROTOBUF, **bearer, "Content-Encoding": "br"}, body, 415, 3, "unsupported Content-Encoding"),
        ]:
            reply = served.post(data, headers)
            assert reply.status_code == status and reply.headers["Content-Type"] == "application/x-protobuf"
            answer = status_pb2.Status.FromString(reply.content)
            assert answer.code == code and says in answer.message, (status, answer)
        reply = served.post(b"{}", {"Content-Type": "application/json"})
        assert reply.status_code == 401 and reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {"code": 16, "message": "Unauthorized"}
    finally:
        served.close()


def test_the_sdk_exporter_with_gzip_and_a_bearer_token():
    served = Served(bearer_token="s3cret")
    try:
        assert served.post(request(agent_span(1)).SerializeToString(), PROTOBUF).status_code == 401
        provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=f"{served.url}/v1/traces", headers={"Authorization": "Bearer s3cret"},
            compression=Compression.Gzip)))
        with provider.get_tracer("app").start_as_current_span("invoke_agent triage", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"}):
            pass
        provider.shutdown()
        assert served.executions() == {"triage": 1}
    finally:
        served.close()


def test_body_over_the_limit_is_413():
    served = Served(max_body_bytes=1000)
    try:
        body = request(*(agent_span(i, "planner") for i in range(1, 40))).SerializeToString()
        assert len(body) > 1000
        assert served.post(body, PROTOBUF).status_code == 413
        assert served.spans_counted() == {}
    finally:
        served.close()
