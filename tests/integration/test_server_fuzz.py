"""Byte-level fuzzing of the service over real HTTP: every request gets an answer, no input makes a 5xx,
exactly the events answered as accepted are counted, and /metrics renders after every one of them."""

from __future__ import annotations

import gzip
import json
import logging
import socket
from collections import Counter

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from google.protobuf import json_format
from google.rpc import status_pb2
from hypothesis import strategies as st
from byte_mutations import flip, insert, truncate
from otlp_spans import agent_span, request
from prometheus_client.parser import text_string_to_metric_families

from agent_exporter import Telemetry, catalog, events
from agent_exporter.config import Config
from agent_exporter.healing import AlertRemediator
from agent_exporter.otlp import OTLPReceiver
from agent_exporter.server import Service, start_server

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

VALID_BATCH = [
    {"type": "agent_execution", "agent": "planner", "status": "success", "duration_seconds": 1.5,
     "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200, "cost_usd": 0.0045,
     "trace_id": "0af7651916cd43dd8448eb211c80319c"},
    {"type": "tool_call", "tool": "web_search", "status": "error", "duration_seconds": 0.2, "agent": "planner"},
    {"type": "state_transition", "from_state": "planning", "to_state": "coding", "workflow": "feature"},
    {"type": "workflow_run", "workflow": "feature", "status": "success", "duration_seconds": 42.0},
    {"type": "evaluation", "agent": "planner", "evaluator": "judge", "score": 0.75},
]


@pytest.fixture(scope="module")
def server():
    telemetry = Telemetry(Config())
    handle = start_server(Service(telemetry, max_body_bytes=256 * 1024), "127.0.0.1:0")
    yield handle
    handle.stop()
    telemetry.shutdown()


def scrape(url: str) -> dict:
    """Every sample of /metrics, parsed by prometheus_client (a scrape that fails to parse fails the test)."""
    response = requests.get(url + "/metrics", timeout=30)
    assert response.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def accepted_events(metrics: dict) -> float:
    return sum(v for (name, _), v in metrics.items() if name == catalog.EXPORTER_EVENTS.name)


def post(url: str, body: bytes, content_type: str = "application/json", gzipped: bool = False):
    headers = {"Content-Type": content_type}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return requests.post(url + "/v1/events", data=body, headers=headers, timeout=30)


def check_exact(server, response, before: float) -> None:
    """A 4xx or a 200 with its count, never a 5xx, and exactly the accepted events counted."""
    assert response.status_code in (200, 400, 413, 415), response.text
    answer = response.json()
    accepted = answer.get("accepted", 0)
    if response.status_code != 200:
        assert accepted == 0 and answer.get("error")
    metrics = scrape(server.url)
    assert accepted_events(metrics) - before == accepted
    # Every reason is one the catalog names, each there from the start (at 0) for rate() to see.
    assert {dict(labels)["reason"] for name, labels in metrics
            if name == catalog.EXPORTER_EVENTS_REJECTED.name} == set(catalog.REJECTION_REASONS)


# -- mutations of a valid body --------------------------------------------------------------------

VALID_JSON = json.dumps(VALID_BATCH).encode()
VALID_NDJSON = b"\n".join(json.dumps(e).encode() for e in VALID_BATCH)

INVALID_UTF8 = st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
mutations = st.one_of(
    st.integers(0, 10_000).map(lambda at: lambda b: truncate(b, at)),
    st.tuples(st.integers(0, 10_000), st.integers(0, 7)).map(lambda m: lambda b: flip(b, *m)),
    st.tuples(st.integers(0, 10_000), INVALID_UTF8).map(lambda m: lambda b: insert(b, *m)),
    st.integers(1, 100_000).map(lambda depth: lambda b: b"[" * depth + b + b"]" * depth),
    st.integers(1, 100_000).map(lambda depth: lambda b: b'{"a":' * depth + b + b"}" * depth),
    st.just(lambda b: b"\xef\xbb\xbf" + b),
    st.just(lambda b: b.replace(b"1.5", b"1e400")),
    st.just(lambda b: b.replace(b"1000", b"1" + b"0" * 400)),
    st.just(lambda b: b.replace(b"0.2", b"NaN")),
    st.just(lambda b: b.replace(b"0.2", b"Infinity")),
    st.binary(max_size=64).map(lambda junk: lambda b: b + junk),
)


@SETTINGS
@given(mutate=st.lists(mutations, min_size=1, max_size=3), ndjson=st.booleans(), gzipped=st.booleans(),
       cut_gzip=st.integers(0, 64))
def test_mutated_bodies_get_an_answer_and_exact_counts(server, mutate, ndjson, gzipped, cut_gzip):
    body = VALID_NDJSON if ndjson else VALID_JSON
    for mutation in mutate:
        body = mutation(body)
    if gzipped:
        body = gzip.compress(body)
        if cut_gzip:
            body = body[:-cut_gzip]            # truncated gzip
    before = accepted_events(scrape(server.url))
    response = post(server.url, body, "application/x-ndjson" if ndjson else "application/json", gzipped)
    check_exact(server, response, before)


@SETTINGS
@given(body=st.binary(max_size=4096), content_type=st.sampled_from(
    ["application/json", "application/x-ndjson", "text/plain", "", "application/json; charset=latin-1"]),
    gzipped=st.booleans())
def test_arbitrary_bytes_get_a_4xx_or_their_count(server, body, content_type, gzipped):
    before = accepted_events(scrape(server.url))
    check_exact(server, post(server.url, body, content_type, gzipped), before)


# -- the inputs that used to drop the connection, one by one --------------------------------------

DEEP = 100_000


@pytest.mark.parametrize("body, words", [
    (b'[{"type":"tool_call","tool":"\xff\xfe","status":"success","duration_seconds":1}]', "UTF-8"),
    (b'{"type":"tool_call","tool":"caf\xc3","status":"success","duration_seconds":1}', "UTF-8"),
    (b"[" * DEEP + b"]" * DEEP, "nested"),
    (b'{"a":' * (DEEP // 4) + b"1" + b"}" * (DEEP // 4), "nested"),
    (b"\xef\xbb\xbf" + VALID_JSON, "byte order mark"),
    (b'{"type":"tool_call","tool":"t","status":"success","duration_seconds":1e400}', "out of range"),
], ids=["invalid-utf8-array", "truncated-utf8", "deep-arrays", "deep-objects", "bom", "float-overflow"])
def test_bodies_that_used_to_drop_the_connection_get_a_400_with_the_reason(server, body, words):
    before = accepted_events(scrape(server.url))
    response = post(server.url, body)
    assert response.status_code == 400
    assert words in response.json()["error"]
    check_exact(server, response, before)


# -- deep nesting on every POST endpoint: a 400 naming it, never a 5xx -------------------------------

WEBHOOK = {"version": "4", "receiver": "log", "status": "firing", "alerts": [
    {"status": "firing", "labels": {"alertname": "OrchestratorAgentHighErrorRatio", "severity": "info",
                                    "agent": "planner"},
     "annotations": {}, "startsAt": "2025-01-15T10:30:00Z", "endsAt": "0001-01-01T00:00:00Z",
     "fingerprint": "c0ffee"}]}
# A valid JSON body of each POST endpoint; each is a JSON object.
VALID_BODIES = {
    "/v1/events": json.dumps(VALID_BATCH[0]).encode(),
    "/v1/traces": json_format.MessageToJson(request(agent_span(1, "planner")), indent=None).encode(),
    "/v1/alertmanager": json.dumps(WEBHOOK).encode(),
}


@pytest.fixture(scope="module")
def every_endpoint():
    """A server with every POST endpoint: /v1/events, /v1/traces (OTLP in), /v1/alertmanager (the log
    channel and remediation)."""
    telemetry = Telemetry(Config())
    receiver = OTLPReceiver(telemetry)
    remediator = AlertRemediator(telemetry.config, telemetry)
    handle = start_server(Service(telemetry, otlp=receiver, log_alerts=True, remediator=remediator), "127.0.0.1:0")
    yield handle
    handle.stop()
    receiver.close()
    telemetry.shutdown()


def _nested(depth: int, opener: bytes, inner: bytes = b"1") -> bytes:
    closer = b"]" if opener == b"[" else b"}"
    return opener * depth + inner + closer * depth


def _deep_answer_is_a_400(path: str, response) -> str:
    """The error message of a 400 in the endpoint's own error body (on /v1/traces, OTLP's google.rpc.Status
    in JSON, as the request was: code 3, INVALID_ARGUMENT)."""
    assert response.status_code == 400, (path, response.status_code, response.text[:200])
    if path == "/v1/traces":
        status = json_format.Parse(response.content, status_pb2.Status())
        assert status.code == 3
        return status.message
    return response.json()["error"]


@pytest.mark.parametrize("body, reason", [
    (b'{"resourceSpans":[],"zz":' + b"[" * 20_000 + b"]" * 20_000 + b"}", "invalid JSON: nested too deeply"),
    (b'{"version":"caf\xc3","resourceSpans":[]}', "invalid JSON: not UTF-8 at byte 15"),
], ids=["deep", "not-utf8"])
@pytest.mark.parametrize("path", list(VALID_BODIES))
def test_undecodable_json_is_a_400_saying_why_on_every_post_endpoint(every_endpoint, path, body, reason):
    response = requests.post(every_endpoint.url + path, data=body, timeout=30,
                             headers={"Content-Type": "application/json"})
    assert _deep_answer_is_a_400(path, response).endswith(reason)


@SETTINGS
@given(path=st.sampled_from(list(VALID_BODIES)), depth=st.integers(1, 60_000), opener=st.sampled_from([b"[", b'{"a":']),
       where=st.sampled_from(["around", "in-a-field"]), gzipped=st.booleans())
def test_deep_nesting_never_makes_a_5xx_on_any_post_endpoint(every_endpoint, path, depth, opener, where, gzipped):
    valid = VALID_BODIES[path]
    if where == "around":
        body = _nested(depth, opener, valid)
    else:                                       # an unknown field of the (valid) top-level object
        body = valid[:-1] + b',"zz":' + _nested(depth, opener) + b"}"
    headers = {"Content-Type": "application/json"}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    response = requests.post(every_endpoint.url + path, data=body, headers=headers, timeout=30)
    assert response.status_code < 500, (response.status_code, response.text[:200])
    if depth > 10_000:          # past any recursion limit: refused (the reason may come first: a wrong type)
        _deep_answer_is_a_400(path, response)


@SETTINGS
@given(mutate=st.lists(mutations, min_size=1, max_size=3), gzipped=st.booleans())
def test_mutated_alertmanager_webhooks_get_a_200_or_a_400_saying_why(every_endpoint, mutate, gzipped):
    body = VALID_BODIES["/v1/alertmanager"]
    for mutation in mutate:
        body = mutation(body)
    headers = {"Content-Type": "application/json"}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    response = requests.post(every_endpoint.url + "/v1/alertmanager", data=body, headers=headers, timeout=30)
    assert response.status_code in (200, 400), (response.status_code, response.text[:200])
    if response.status_code == 400:
        assert response.json()["error"]


def test_truncated_gzip_is_a_400(server):
    response = post(server.url, gzip.compress(VALID_JSON)[:-9], gzipped=True)
    assert response.status_code == 400 and "gzip" in response.json()["error"]


# -- extreme values: rejected ones leave no trace, accepted ones render exactly ------------------

EXTREMES_REJECTED = [
    {"type": "agent_execution", "agent": "x", "status": "success", "duration_seconds": 1, "input_tokens": 10**400},
    {"type": "agent_execution", "agent": "x", "status": "success", "duration_seconds": 1,
     "output_tokens": 2**53 + 1},
    {"type": "agent_execution", "agent": "x", "status": "success", "duration_seconds": 1e300},
    {"type": "agent_execution", "agent": "x", "status": "success", "duration_seconds": 1, "cost_usd": 1e300},
    {"type": "tool_call", "tool": "x", "status": "success", "duration_seconds": 1, "timestamp": 1e300},
    {"type": "evaluation", "agent": "x", "evaluator": "e", "score": 1.0000001},
    {"type": "agent_execution", "agent": "x", "status": "success", "duration_seconds": 1,
     "trace_id": "zzzz7651916cd43dd8448eb211c80319"},
]
EXTREMES_ACCEPTED = [
    {"type": "agent_execution", "agent": "extreme", "status": "success", "duration_seconds": events.MAX_SECONDS,
     "model": "m", "input_tokens": events.MAX_TOKENS, "output_tokens": 0, "cache_read_tokens": events.MAX_TOKENS,
     "cost_usd": events.MAX_USD, "timestamp": events.MAX_TIMESTAMP},
    {"type": "agent_execution", "agent": "extreme", "status": "success", "duration_seconds": 0.0,
     "model": "m", "input_tokens": 0, "cost_usd": 0.0, "time_to_first_token_seconds": events.MAX_SECONDS},
    {"type": "evaluation", "agent": "extreme", "evaluator": "e", "score": 0.0},
]


def test_metrics_render_with_exact_counts_after_every_extreme_value():
    telemetry = Telemetry(Config())
    with start_server(Service(telemetry), "127.0.0.1:0") as handle:
        for event in EXTREMES_REJECTED:
            response = post(handle.url, json.dumps(event).encode())
            assert response.status_code == 400, event
            metrics = scrape(handle.url)
            assert accepted_events(metrics) == 0
        for event in EXTREMES_ACCEPTED:
            assert post(handle.url, json.dumps(event).encode()).json()["accepted"] == 1
            scrape(handle.url)
        metrics = scrape(handle.url)
        openmetrics = requests.get(handle.url + "/metrics", timeout=30,
                                   headers={"Accept": "application/openmetrics-text"}).text

    def v(name, **labels):
        return metrics[(name, tuple(sorted(labels.items())))]

    tokens = catalog.LLM_TOKENS.name
    assert v(tokens, agent="extreme", model="m", type="input") == 2**53
    assert v(tokens, agent="extreme", model="m", type="cache_read") == 2**53
    assert v(catalog.LLM_COST.name, agent="extreme", model="m") == 1e9
    assert v(catalog.AGENT_EXECUTION_DURATION.name + "_sum", agent="extreme") == 1e9
    assert v(catalog.AGENT_EXECUTION_DURATION.name + "_bucket", agent="extreme", le="+Inf") == 2
    assert v(catalog.LLM_TIME_TO_FIRST_TOKEN.name + "_sum", agent="extreme", model="m") == 1e9
    assert v(catalog.EVALUATION_SCORE.name + "_bucket", agent="extreme", evaluator="e", le="0.1") == 1
    rejected = sum(value for (name, _), value in metrics.items() if name == catalog.EXPORTER_EVENTS_REJECTED.name)
    assert rejected == len(EXTREMES_REJECTED)
    assert openmetrics.endswith("# EOF\n")
    telemetry.shutdown()


# -- an unexpected fault: a 500 with a JSON body, a logged traceback, a count -------------------

class FaultyTelemetry(Telemetry):
    def record_batch(self, batch):
        raise RuntimeError("a bug in a handler")


def test_an_unexpected_exception_is_a_500_logged_and_counted(caplog):
    telemetry = FaultyTelemetry(Config())
    with caplog.at_level(logging.ERROR, logger="agent_exporter.server"):
        with start_server(Service(telemetry), "127.0.0.1:0") as handle:
            response = post(handle.url, VALID_JSON)
            assert response.status_code == 500
            assert response.json() == {"error": "internal error; see the exporter's log"}
            assert requests.get(handle.url + "/-/healthy", timeout=10).status_code == 200
            metrics = scrape(handle.url)
    faults = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert faults and "a bug in a handler" in str(faults[0].exc_info[1])
    requests_total = catalog.EXPORTER_HTTP_REQUESTS.name
    assert metrics[(requests_total, (("code", "500"), ("handler", "/v1/events")))] == 1
    assert metrics[(requests_total, (("code", "200"), ("handler", "/-/healthy")))] == 1
    telemetry.shutdown()


def test_requests_are_counted_by_handler_and_code(server):
    before = scrape(server.url)
    requests.get(server.url + "/nowhere/" + "x" * 50, timeout=10)
    post(server.url, b"{}")
    after = scrape(server.url)
    diff = Counter({key: after[key] - before.get(key, 0) for key in after
                    if key[0] == catalog.EXPORTER_HTTP_REQUESTS.name})
    assert diff[(catalog.EXPORTER_HTTP_REQUESTS.name, (("code", "404"), ("handler", "other")))] == 1
    assert diff[(catalog.EXPORTER_HTTP_REQUESTS.name, (("code", "400"), ("handler", "/v1/events")))] == 1


# -- below HTTP: malformed requests get an answer too -----------------------------------------------

# Blank lines before a request are allowed (RFC 9112, 2.2): the server rightly waits for the request.
REQUEST_LINES = st.one_of(
    st.binary(min_size=1, max_size=200).filter(lambda b: b"\r\n\r\n" not in b and b.strip()),
    st.sampled_from([b"GET / HTTP/9.9", b"POST /v1/events HTTP/1.1\r\nContent-Length: -5",
                     b"POST /v1/events HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7",
                     b"GET /metrics HTTP/1.1\r\nHost: \xff\xfe", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                     b"POST /v1/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]))


@SETTINGS
@given(head=REQUEST_LINES)
def test_malformed_http_gets_an_answer_not_a_silent_close(server, head):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + b"\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):   # the status line and headers
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    status = int(answer[9:12])
    assert 200 <= status < 500, answer[:200]
