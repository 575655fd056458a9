"""Byte-level fuzzing of OTLP in, over real HTTP and gRPC: mutated and arbitrary export requests get an
OTLP answer (200 with a partial success, or 400), never a 5xx or a dropped call, and the span outcomes
counted are exactly those of the answer and of the spans in the request."""

from __future__ import annotations

import gzip

import grpc
import pytest
import requests
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)
from byte_mutations import flip, insert, truncate
from otlp_spans import agent_span, request, span
from prometheus_client.parser import text_string_to_metric_families

from agent_exporter import Telemetry, catalog, otlp_grpc
from agent_exporter.config import Config, OTLPConfig
from agent_exporter.otlp import JSON, PROTOBUF, OTLPReceiver
from agent_exporter.server import Service, start_server

pytestmark = pytest.mark.integration

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Root spans of every kind the mapping knows but inference (which may wait for an agent span that a
# mutation could invent): each is mapped, ignored or rejected within its own request.
VALID = request(
    agent_span(1, "planner", **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1200,
                                "gen_ai.usage.output_tokens": 300}),
    span(2, {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "web_search"}, error=True),
    span(3, {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "feature"}),
    span(4, {"http.request.method": "GET"}),
)
VALID_PROTOBUF = VALID.SerializeToString()
VALID_JSON = json_format.MessageToJson(VALID, indent=None).encode()


@pytest.fixture(scope="module")
def receiving():
    """(the service's handle, its OTLP receiver, a channel to its gRPC receiver).  Attribution waits
    longer than the test runs, so no span is recorded behind a request's back."""
    telemetry = Telemetry(Config(otlp=OTLPConfig(attribution_wait_seconds=3600.0)))
    receiver = OTLPReceiver(telemetry)
    handle = start_server(Service(telemetry, otlp=receiver), "127.0.0.1:0")
    grpc_handle = receiver.start_grpc("127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_handle.port}")
    yield handle, receiver, channel
    channel.close()
    handle.stop()
    receiver.close()
    telemetry.shutdown()


def outcomes(url: str) -> dict:
    """The span outcomes on /metrics (a scrape that fails to parse fails the test)."""
    response = requests.get(url + "/metrics", timeout=30)
    assert response.status_code == 200
    return {s.labels["outcome"]: s.value for family in text_string_to_metric_families(response.text)
            for s in family.samples if s.name == catalog.EXPORTER_OTLP_SPANS.name}


def spans_in(data: bytes) -> int | None:
    """The spans of a serialized request as opentelemetry-proto reads it; None when it does not parse."""
    try:
        parsed = ExportTraceServiceRequest.FromString(data)
    except DecodeError:
        return None
    return sum(len(scope.spans) for resource in parsed.resource_spans for scope in resource.scope_spans)


def check_counts(url: str, receiver, before: dict, waiting_before: int, accepted: bool, rejected: int,
                 sent: int | None) -> None:
    """Nothing counted for a refused request; for an accepted one, the rejected spans of the answer, and
    every span of the request (when opentelemetry-proto can count them) mapped, ignored or rejected."""
    after = outcomes(url)
    delta = {outcome: after[outcome] - before[outcome] for outcome in catalog.OTLP_SPAN_OUTCOMES}
    if not accepted:
        assert delta == dict.fromkeys(catalog.OTLP_SPAN_OUTCOMES, 0)
        return
    assert delta["rejected"] == rejected
    if sent is not None and receiver.waiting_spans == waiting_before:
        assert sum(delta.values()) == sent


# -- mutations of a valid request ---------------------------------------------------------------

mutations = st.one_of(
    st.integers(0, 10_000).map(lambda at: lambda b: truncate(b, at)),
    st.tuples(st.integers(0, 10_000), st.integers(0, 7)).map(lambda m: lambda b: flip(b, *m)),
    st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=8)).map(lambda m: lambda b: insert(b, *m)),
    st.binary(max_size=64).map(lambda junk: lambda b: b + junk),
)


def post(url: str, body: bytes, media: str, gzipped: bool) -> requests.Response:
    headers = {"Content-Type": media}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    return requests.post(url + "/v1/traces", data=body, headers=headers, timeout=30)


def answer_of(response: requests.Response, media: str) -> tuple[bool, int]:
    """(accepted, rejected spans) from an OTLP/HTTP answer in the request's encoding."""
    assert response.status_code in (200, 400), (response.status_code, response.content[:200])
    assert response.headers["Content-Type"].startswith(media)
    message = ExportTraceServiceResponse() if response.status_code == 200 else status_pb2.Status()
    if media == PROTOBUF:
        message.ParseFromString(response.content)
    else:
        json_format.Parse(response.content, message)
    if response.status_code == 400:
        assert message.code == 3 and message.message      # INVALID_ARGUMENT, saying why
        return False, 0
    return True, message.partial_success.rejected_spans


@SETTINGS
@given(mutate=st.lists(mutations, min_size=1, max_size=3), json_body=st.booleans(), gzipped=st.booleans())
def test_mutated_requests_get_an_otlp_answer_and_exact_counts(receiving, mutate, json_body, gzipped):
    handle, receiver, _ = receiving
    body = VALID_JSON if json_body else VALID_PROTOBUF
    for mutation in mutate:
        body = mutation(body)
    media = JSON if json_body else PROTOBUF
    before, waiting = outcomes(handle.url), receiver.waiting_spans
    response = post(handle.url, body, media, gzipped)
    accepted, rejected = answer_of(response, media)
    check_counts(handle.url, receiver, before, waiting, accepted, rejected, None if json_body else spans_in(body))


@SETTINGS
@given(body=st.binary(max_size=2048), media=st.sampled_from([PROTOBUF, JSON]), gzipped=st.booleans())
def test_arbitrary_bytes_get_an_otlp_answer_and_exact_counts(receiving, body, media, gzipped):
    handle, receiver, _ = receiving
    before, waiting = outcomes(handle.url), receiver.waiting_spans
    accepted, rejected = answer_of(post(handle.url, body, media, gzipped), media)
    check_counts(handle.url, receiver, before, waiting, accepted, rejected,
                 spans_in(body) if media == PROTOBUF else None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutate=st.lists(mutations, min_size=1, max_size=3))
def test_mutated_grpc_requests_get_ok_or_invalid_argument_and_exact_counts(receiving, mutate):
    handle, receiver, channel = receiving
    body = VALID_PROTOBUF
    for mutation in mutate:
        body = mutation(body)
    export_bytes = channel.unary_unary(otlp_grpc.EXPORT_METHOD)     # sends the bytes as they are
    before, waiting = outcomes(handle.url), receiver.waiting_spans
    try:
        answer = ExportTraceServiceResponse.FromString(export_bytes(body, timeout=30))
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
        check_counts(handle.url, receiver, before, waiting, False, 0, None)
    else:
        check_counts(handle.url, receiver, before, waiting, True, answer.partial_success.rejected_spans,
                     spans_in(body))


def test_the_valid_request_maps_every_kind():
    """The request the mutations start from: one span of each outcome the tests above count."""
    telemetry = Telemetry(Config())
    receiver = OTLPReceiver(telemetry)
    with start_server(Service(telemetry, otlp=receiver), "127.0.0.1:0") as handle:
        before = outcomes(handle.url)
        assert answer_of(post(handle.url, VALID_PROTOBUF, PROTOBUF, False), PROTOBUF) == (True, 0)
        after = outcomes(handle.url)
    receiver.close()
    telemetry.shutdown()
    assert {o: after[o] - before[o] for o in catalog.OTLP_SPAN_OUTCOMES} == {"mapped": 3, "ignored": 1, "rejected": 0}
    assert spans_in(VALID_PROTOBUF) == 4
