"""The HTTP service against real HTTP clients: ingest, limits, auth, TLS, keep-alive, exposition, SIGTERM."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import os
import queue
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import bcrypt
import pytest
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import Telemetry, catalog, events, stack
from agent_exporter.config import Config, HealingConfig, ServerConfig
from agent_exporter.healing import AlertRemediator, Healer
from agent_exporter.healing.alertmanager import decode_webhook
from agent_exporter.otlp import OTLPReceiver
from agent_exporter import server as server_module
from agent_exporter.server import Service, serve, start_server
from agent_exporter.webconfig import WatchedWebConfig

from alertmanager_webhook import notification
from certificates import self_signed
from exporters import running_exporter
from process_output import lines_of, until

PLANNER_OK = {"type": "agent_execution", "agent": "planner", "status": "success", "duration_seconds": 1.5,
              "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200, "cost_usd": 0.0045}
TOOL_OK = {"type": "tool_call", "tool": "web_search", "status": "success", "duration_seconds": 0.2}
TRANSITION = {"type": "state_transition", "from_state": "planning", "to_state": "coding", "workflow": "feature"}
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
ELEVEN_MIB = 11 * 1024 * 1024


def samples(text: str, openmetrics: bool = False) -> dict:
    parse = parse_openmetrics if openmetrics else parse_text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parse(text) for s in family.samples}


def value(url: str, name: str, **labels) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def server():
    with running_exporter() as handle:
        yield handle


def post_events(url, body, content_type="application/json", **headers):
    if not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
    return requests.post(url + "/v1/events", data=body, timeout=30,
                         headers={"Content-Type": content_type, **headers})


# -- ingest --------------------------------------------------------------------

def test_a_valid_batch_is_counted(server):
    response = post_events(server.url, [PLANNER_OK, TOOL_OK, TRANSITION, PLANNER_OK])
    assert response.status_code == 200
    assert response.json() == {"accepted": 4, "rejected": []}
    metrics = samples(requests.get(server.url + "/metrics", timeout=10).text)
    assert metrics[(catalog.AGENT_EXECUTIONS.name, (("agent", "planner"), ("status", "success")))] == 2
    assert metrics[(catalog.LLM_TOKENS.name, (("agent", "planner"), ("model", "gpt-4o"), ("type", "input")))] == 2000
    assert metrics[(catalog.TOOL_CALLS.name, (("status", "success"), ("tool", "web_search")))] == 1
    assert metrics[(catalog.STATE_TRANSITIONS.name,
                    (("from_state", "planning"), ("to_state", "coding"), ("workflow", "feature")))] == 1
    assert metrics[(catalog.EXPORTER_EVENTS.name, (("type", "agent_execution"),))] == 2


def test_a_single_object_is_a_batch_of_one(server):
    response = post_events(server.url, TOOL_OK)
    assert response.json() == {"accepted": 1, "rejected": []}


def test_a_mixed_batch_accepts_the_valid_and_lists_the_rest(server):
    batch = [
        PLANNER_OK,
        {"type": "agent_execution", "agent": "coder", "duration_seconds": 1},     # no status
        "not an object",
        TOOL_OK,
        {"type": "teleport"},
        {"type": "tool_call", "tool": "web_search", "status": "maybe", "duration_seconds": 1},
        {"type": "agent_execution", "agent": "coder", "status": "success", "duration_seconds": -1},
        {"agent_name": "legacy", "duration_ms": 1200, "success": True, "tokens_used": 10, "cost": 0.01},
    ]
    response = post_events(server.url, batch)
    assert response.status_code == 200
    answer = response.json()
    assert answer["accepted"] == 3
    rejected = {r["index"]: r for r in answer["rejected"]}
    assert sorted(rejected) == [1, 2, 4, 5, 6]
    assert {i: r["reason"] for i, r in rejected.items()} == {
        1: "missing_field", 2: "not_an_object", 4: "unknown_type", 5: "invalid_value", 6: "invalid_value"}
    assert "status" in rejected[1]["error"]
    assert "duration_seconds" in rejected[6]["error"]
    url = server.url
    assert value(url, catalog.AGENT_EXECUTIONS.name, agent="planner", status="success") == 1
    assert value(url, catalog.AGENT_EXECUTIONS.name, agent="legacy", status="success") == 1
    assert value(url, catalog.AGENT_EXECUTIONS.name, agent="coder", status="success") == 0
    assert value(url, catalog.EXPORTER_EVENTS_REJECTED.name, reason="invalid_value") == 2
    assert value(url, catalog.EXPORTER_EVENTS_REJECTED.name, reason="missing_field") == 1


def test_ndjson(server):
    lines = [json.dumps(PLANNER_OK), "", json.dumps({"type": "retry", "agent": "coder", "attempt": 0}),
             json.dumps(TOOL_OK), "{not json"]
    response = post_events(server.url, "\n".join(lines).encode(), "application/x-ndjson")
    assert response.status_code == 200
    answer = response.json()
    assert answer["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in answer["rejected"]] == [(1, "invalid_value"), (3, "invalid_json")]


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_gzip_bodies(server, content_type):
    if content_type == "application/json":
        raw = json.dumps([PLANNER_OK, TOOL_OK]).encode()
    else:
        raw = (json.dumps(PLANNER_OK) + "\n" + json.dumps(TOOL_OK) + "\n").encode()
    response = post_events(server.url, gzip.compress(raw), content_type, **{"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.json()["accepted"] == 2


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_a_gzip_body_of_members_split_anywhere_is_one_body(server, content_type):
    """A body may be several gzip members (RFC 1952), as `cat a.gz b.gz` makes; the server reads
    its input in slices, which cut members and their headers at every offset here."""
    raw = (json.dumps([PLANNER_OK, TOOL_OK]) if content_type == "application/json"
           else json.dumps(PLANNER_OK) + "\n" + json.dumps(TOOL_OK) + "\n").encode()
    filler = gzip.compress(b"")                    # empty members, so that members start at every offset
    body = filler * 211 + b"".join(gzip.compress(raw[i:i + 7]) + filler * (i % 5) for i in range(0, len(raw), 7))
    response = post_events(server.url, body, content_type, **{"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2


def test_eight_mib_of_empty_gzip_members_is_answered(server):
    """Decompressing member after member copied the rest of the body each time: 2 MiB of empty
    members took 8.6 s, 8 MiB more than this client waits."""
    filler = gzip.compress(b"")
    body = filler * (8 * 1024 * 1024 // len(filler)) + gzip.compress(json.dumps([PLANNER_OK]).encode())
    response = requests.post(server.url + "/v1/events", data=body, timeout=60,
                             headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status_code == 200 and response.json()["accepted"] == 1


def test_bad_gzip_is_400(server):
    response = post_events(server.url, b"not gzip at all", **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "gzip" in response.json()["error"]


def test_a_gzip_bomb_is_cut_at_the_limit(server):
    # 11 MiB of JSON whitespace compresses to a few KiB: the limit applies to what it expands to.
    bomb = gzip.compress(b"[" + b" " * ELEVEN_MIB + b"]")
    assert len(bomb) < 100_000
    response = post_events(server.url, bomb, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert value(server.url, catalog.EXPORTER_EVENTS_REJECTED.name, reason="body_too_large") == 1


def test_only_refused_event_requests_count_as_rejected_events():
    # OTLP spans and Alertmanager webhooks are not events: refusing them must not feed
    # OrchestratorEventsRejected, whose ratio is of the events sent.
    telemetry = Telemetry(Config(healing=HealingConfig(enabled=True)))
    service = Service(telemetry, otlp=OTLPReceiver(telemetry), remediator=AlertRemediator(telemetry.config, telemetry),
                      max_body_bytes=1000)
    with start_server(service, "127.0.0.1:0") as handle:
        oversize = b"x" * 3000
        for path, content_type in (("/v1/traces", "application/x-protobuf"),
                                   ("/v1/alertmanager", "application/json")):
            response = requests.post(handle.url + path, data=oversize, headers={"Content-Type": content_type},
                                     timeout=10)
            assert response.status_code == 413, path
        response = requests.post(handle.url + "/v1/traces", data=b"x", timeout=10,
                                 headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "br"})
        assert response.status_code == 415
        rejected = {reason: value(handle.url, catalog.EXPORTER_EVENTS_REJECTED.name, reason=reason)
                    for reason in catalog.REJECTION_REASONS}
        assert set(rejected.values()) == {0}
        assert post_events(handle.url, oversize).status_code == 413
        assert value(handle.url, catalog.EXPORTER_EVENTS_REJECTED.name, reason="body_too_large") == 1
    telemetry.shutdown()


@pytest.mark.parametrize("body", [b"{not json", b"42", b'"text"', b""])
def test_unusable_bodies_are_400(server, body):
    response = post_events(server.url, body)
    assert response.status_code == 400
    assert response.json()["error"]
    assert requests.get(server.url + "/-/healthy", timeout=10).status_code == 200


def test_a_batch_with_nothing_valid_is_400_with_the_reasons(server):
    response = post_events(server.url, [{"type": "teleport"}, 7])
    assert response.status_code == 400
    answer = response.json()
    assert answer["accepted"] == 0
    assert [r["index"] for r in answer["rejected"]] == [0, 1]


def test_a_body_of_millions_of_bad_items_is_answered_with_a_thousand_errors_and_counted_whole(server):
    bad_items = 3_000_000                    # 6 MB of `1,`: listing every error answered 250 MB
    response = post_events(server.url, b"[" + b",".join([b"1"] * bad_items) + b"]")
    assert response.status_code == 400
    assert len(response.content) < 200_000
    answer = response.json()
    assert len(answer["rejected"]) == 1000 and answer["rejected_omitted"] == bad_items - 1000
    assert sum(value(server.url, catalog.EXPORTER_EVENTS_REJECTED.name, reason=reason)
               for reason in catalog.REJECTION_REASONS) == bad_items


def test_eleven_mib_is_413_and_a_plain_client_sees_it(server):
    response = post_events(server.url, b"[" + b" " * (ELEVEN_MIB - 2) + b"]")
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    # The server read and dropped the rest of the body: the same connection carries the next request.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("POST", "/v1/events", body=b" " * ELEVEN_MIB, headers={"Content-Type": "application/json"})
    too_large = connection.getresponse()
    too_large.read()
    assert too_large.status == 413 and not too_large.will_close
    connection.request("POST", "/v1/events", body=json.dumps([TOOL_OK]), headers={"Content-Type": "application/json"})
    assert json.loads(connection.getresponse().read()) == {"accepted": 1, "rejected": []}
    connection.close()


def test_eleven_mib_with_expect_100_continue_is_refused_before_the_body(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {ELEVEN_MIB}\r\nExpect: 100-continue\r\n\r\n".encode())
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413 ")


def test_a_chunked_body_is_read(server):
    def chunks():
        yield json.dumps([PLANNER_OK, TOOL_OK]).encode()
    response = requests.post(server.url + "/v1/events", data=chunks(), timeout=30,
                             headers={"Content-Type": "application/json"})
    assert response.json() == {"accepted": 2, "rejected": []}


def test_a_chunked_body_over_the_limit_is_413():
    telemetry = Telemetry(Config())
    with start_server(Service(telemetry, max_body_bytes=64 * 1024), "127.0.0.1:0") as handle:
        def chunks():
            for _ in range(10):
                yield b" " * 16 * 1024
        response = requests.post(handle.url + "/v1/events", data=chunks(), timeout=30,
                                 headers={"Content-Type": "application/json"})
        assert response.status_code == 413


def test_a_url_longer_than_the_parser_takes_is_414_and_counted(server):
    too_long = b"GET /metrics?" + b"a" * server_module.MAX_URL_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = _exchange_raw(server.port, too_long)
    assert answer.startswith(b"HTTP/1.1 414 "), answer[:200]
    assert answer.endswith(b"URI too long: at most 65535 bytes")
    longest = b"GET /metrics?" + b"a" * (server_module.MAX_URL_BYTES - 13) + b" HTTP/1.1\r\nHost: x\r\n"
    assert _exchange_raw(server.port, longest + b"Connection: close\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    assert value(server.url, catalog.EXPORTER_HTTP_REQUESTS.name, handler="other", code="414") == 1


def test_a_request_line_of_an_http_version_other_than_1_is_505(server):
    answer = _exchange_raw(server.port, b"GET /metrics HTTP/2.0\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 505 "), answer[:200]
    assert answer.endswith(b"HTTP/2.0 is not supported: send HTTP/1.1\n")
    assert value(server.url, catalog.EXPORTER_HTTP_REQUESTS.name, handler="/metrics", code="505") == 1


@pytest.mark.parametrize("transfer_encoding", [b"gzip, chunked", b"deflate, chunked"])
def test_a_transfer_coding_other_than_chunked_is_501_not_read_as_the_body(server, transfer_encoding):
    """A gzip transfer coding used to be passed on undone: plain JSON labelled gzip was accepted."""
    event = json.dumps([TOOL_OK]).encode()
    answer = _exchange_raw(server.port, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Transfer-Encoding: " + transfer_encoding + b"\r\nConnection: close\r\n\r\n"
                           b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501 "), answer
    assert b"unsupported Transfer-Encoding" in body
    assert value(server.url, catalog.EXPORTER_EVENTS.name, type="tool_call") == 0
    assert value(server.url, catalog.EXPORTER_EVENTS_REJECTED.name, reason="unsupported_media_type") == 1


@pytest.mark.parametrize("headers", [{"Content-Type": "text/plain"}, {},
                                     {"Content-Type": "application/json", "Content-Encoding": "br"},
                                     {"Content-Type": "application/json; charset=utf-16"}])
def test_other_media_types_are_415(server, headers):
    response = requests.post(server.url + "/v1/events", data=json.dumps([TOOL_OK]), headers=headers, timeout=10)
    assert response.status_code == 415
    assert value(server.url, catalog.EXPORTER_EVENTS.name, type="tool_call") == 0


def test_unknown_paths_and_methods(server):
    unknown = requests.get(server.url + "/nope", timeout=10)
    assert unknown.status_code == 404
    assert unknown.text == "no such endpoint: /nope\n"
    # An endpoint of DESIGN §5 that this service leaves out says why.
    absent = requests.get(server.url + "/v1/agents", timeout=10)
    assert absent.status_code == 404
    assert absent.json() == {"error": "no such endpoint: /v1/agents (served by `agent-exporter serve` "
                                      "with healing.enabled, in process by Telemetry.serve() or asgi_app() "
                                      "given the Healer's AlertRemediator)"}
    response = requests.get(server.url + "/v1/events", timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def _exchange_raw(port: int, request: bytes) -> bytes:
    """What the server answers to `request`, read until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_headers_past_a_mebibyte_are_a_431_and_counted(server):
    """httptools bounds no header: a 100 MiB one was read whole (21 s of CPU), and 655k small ones
    kept 75 MB.  Go's http.Server allows 1 MiB; so does this one, a request cut off where it passes."""
    head = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * server_module.MAX_HEADER_BYTES
    answer = _exchange_raw(server.port, head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 80) for i in range(server_module.MAX_HEADER_BYTES // 100))
    # Just under the limit is served; pipelined after it, a head past the limit (by more than the
    # one read in which the first head ends, which goes uncounted) is refused once the first
    # answer is written.
    head += b"a" * (256 * 1024)
    answer = _exchange_raw(server.port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n" + head)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"Healthy.\nHTTP/1.1 431 " in answer, answer[:300]
    assert value(server.url, catalog.EXPORTER_HTTP_REQUESTS.name, handler="other", code="431") == 2


def test_a_request_the_parser_refuses_is_a_counted_400_not_a_log_line(server, caplog):
    """uvicorn logged a warning per such request: a flood of them filled the disk, and the count says it."""
    caplog.set_level(logging.DEBUG)
    for request in (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
                    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        assert _exchange_raw(server.port, request).startswith(b"HTTP/1.1 400 ")
    assert value(server.url, catalog.EXPORTER_HTTP_REQUESTS.name, handler="other", code="400") == 2
    assert not [r for r in caplog.records if r.name.startswith("uvicorn") and r.levelno >= logging.WARNING]


# -- keep-alive, exposition, health -----------------------------------------------

def test_keep_alive_reuses_one_connection(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.connect()
    first_socket = connection.sock
    for _ in range(5):
        connection.request("POST", "/v1/events", body=json.dumps([TOOL_OK]),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        response.read()
        assert not response.will_close
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    response.read()
    assert connection.sock is first_socket
    connection.close()
    assert value(server.url, catalog.TOOL_CALLS.name, tool="web_search", status="success") == 5


def test_connections_that_never_complete_a_request_are_closed_while_metrics_answer():
    """A silent connection, a partial header and a stalled body are closed after one to two request
    timeouts; a keep-alive connection idle between requests is not (uvicorn's keep-alive timeout is)."""
    timeout = 0.5
    telemetry = Telemetry(Config())
    with start_server(Service(telemetry, request_timeout_seconds=timeout), "127.0.0.1:0") as handle:
        kept = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=10)
        kept.request("GET", "/-/healthy")
        assert kept.getresponse().read() == b"Healthy.\n"
        opened = time.monotonic()
        stuck = {}
        for name, sent in [("silent", b""), ("partial header", b"GET /metrics HTTP/1.1\r\nHost: x"),
                           ("stalled body", b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
                                            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")]:
            stuck[name] = socket.create_connection(("127.0.0.1", handle.port), timeout=10 * timeout)
            stuck[name].sendall(sent)
        assert requests.get(handle.url + "/metrics", timeout=10).status_code == 200
        for name, sock in stuck.items():
            with sock:
                answer = b""
                while chunk := sock.recv(1024):              # until closed by the server (a timeout raises)
                    answer += chunk
            # A request begun is answered; a connection that sent nothing is closed quietly.
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n") if name != "silent" else answer == b"", \
                (name, answer)
        assert timeout <= time.monotonic() - opened < 2 * timeout + 2.0
        assert requests.get(handle.url + "/metrics", timeout=10).status_code == 200
        assert value(handle.url, catalog.EXPORTER_HTTP_REQUESTS.name, handler="other", code="408") == 2
        kept_socket = kept.sock
        kept.request("GET", "/-/healthy")                     # idle all that while, between requests
        assert kept.getresponse().read() == b"Healthy.\n" and kept.sock is kept_socket
        kept.close()
    telemetry.shutdown()


@pytest.fixture(scope="module")
def big_metrics():
    """A server with a /metrics of over 8 MB, more than the socket buffers of both ends hold, whose
    connections time out after 0.5 s of no progress; and the size of that /metrics."""
    telemetry = Telemetry(Config())
    telemetry.record_batch([events.decode({**PLANNER_OK, "agent": f"agent-{n}"}) for n in range(5000)])
    with start_server(Service(telemetry, request_timeout_seconds=0.5), "127.0.0.1:0") as handle:
        whole = len(requests.get(handle.url + "/metrics", timeout=10).content)
        assert whole > 8 * 1024 * 1024
        yield handle, whole
    telemetry.shutdown()


def _ask_for_metrics(handle, version: str, receive_buffer: int = 4096) -> socket.socket:
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    client.settimeout(10)
    client.connect(("127.0.0.1", handle.port))
    client.sendall(f"GET /metrics HTTP/{version}\r\nHost: x\r\n\r\n".encode())
    return client


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_scraper_that_stops_reading_is_cut_off_while_others_are_answered(big_metrics, version):
    """A client that asks for /metrics and never reads the answer is disconnected once its response
    has made no way for one to two request timeouts, like a request that stalls on the way in (an
    HTTP/1.0 answer, written whole and then closed, included)."""
    handle, whole = big_metrics
    stuck = _ask_for_metrics(handle, version)
    time.sleep(2 * 0.5 + 1.0)
    assert requests.get(handle.url + "/-/healthy", timeout=10).status_code == 200
    received = 0
    with stuck:
        while chunk := stuck.recv(1 << 16):     # the buffered part, then the end (a timeout raises)
            received += len(chunk)
    assert 0 < received < whole


def test_a_scraper_that_reads_slowly_gets_the_whole_answer(big_metrics):
    """Slower than the server writes, so its writing is paused at nearly every firing of the timer,
    but always taking some: it is not cut off."""
    handle, whole = big_metrics
    received = b""
    with _ask_for_metrics(handle, "1.1", receive_buffer=1 << 16) as slow:
        while chunk := slow.recv(1 << 16):
            received += chunk
            if received.endswith(b"\r\n0\r\n\r\n"):      # the last chunk of a chunked answer
                break
            time.sleep(0.02)                                # 3 MB/s at most
    assert received.endswith(b"\r\n0\r\n\r\n") and len(received) > whole


def test_metrics_in_openmetrics_with_exemplars_and_gzip(server):
    post_events(server.url, [{**PLANNER_OK, "trace_id": TRACE_ID}])
    response = requests.get(server.url + "/metrics", timeout=10,
                            headers={"Accept": "application/openmetrics-text; version=1.0.0",
                                     "Accept-Encoding": "gzip"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.headers["Content-Encoding"] == "gzip"     # requests has decompressed it
    assert response.text.endswith("# EOF\n")
    exemplars = [s.exemplar for family in parse_openmetrics(response.text) for s in family.samples
                 if s.name == catalog.AGENT_EXECUTION_DURATION.name + "_bucket" and s.exemplar]
    assert [e.labels for e in exemplars] == [{"trace_id": TRACE_ID}]


def test_metrics_text_by_default_and_raw_gzip(server):
    post_events(server.url, [TOOL_OK])
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    assert response.getheader("Content-Encoding") == "gzip"
    text = gzip.decompress(body).decode()
    assert samples(text)[(catalog.TOOL_CALLS.name, (("status", "success"), ("tool", "web_search")))] == 1


PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
                     "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;"
                     "escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1")


@pytest.mark.parametrize("accept, openmetrics", [
    (PROMETHEUS_ACCEPT, True),                      # what Prometheus 3 sends by default
    ("application/openmetrics-text", True),
    ("Application/OpenMetrics-Text; version=1.0.0", True),     # media types are case-insensitive
    ("application/openmetrics-text;q=0, text/plain", False),
    ("application/openmetrics-text; q=0.0", False),
    ("text/plain;q=0.9, application/openmetrics-text;q=0.4", False),
    ("application/openmetrics-text, text/plain", True),        # a tie goes to OpenMetrics
    ("text/plain;q=0.9, application/openmetrics-text;q=5", False),  # a q outside [0, 1] is 0
    ("application/openmetrics-text;q=0, application/openmetrics-text;q=1", True),   # listed twice: its
    ("application/openmetrics-text;q=1, application/openmetrics-text;q=0", True),   # highest q, either order
    ("*/*", False),
])
@pytest.mark.parametrize("accept_encoding, gzipped", [
    ("gzip", True),
    ("gzip, deflate, br", True),
    ("x-gzip", True),                               # gzip's equivalent (RFC 9110, 8.4.1.3)
    ("gzip;q=0, identity", False),
    ("identity, gzip;q=0", False),
    ("gzip;q=0.5, identity", False),
    ("identity", False),
])
def test_q_values_are_honoured(server, accept, openmetrics, accept_encoding, gzipped):
    """q=0 is "not acceptable" (RFC 9110, 12.4.2), and a format weighed lower than the other is not chosen."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/metrics", headers={"Accept": accept, "Accept-Encoding": accept_encoding})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.getheader("Content-Type").startswith(
        "application/openmetrics-text" if openmetrics else "text/plain; version=0.0.4")
    assert response.getheader("Content-Encoding") == ("gzip" if gzipped else None)
    text = (gzip.decompress(body) if gzipped else body).decode()
    assert text.endswith("# EOF\n") == openmetrics


@pytest.mark.parametrize("accept_encoding", [None, "gzip"])
def test_an_http_1_0_client_gets_a_length_not_chunks(server, accept_encoding):
    """Chunked transfer coding is HTTP/1.1 only (RFC 9112, 7.1): /metrics to HTTP/1.0 is sent whole."""
    post_events(server.url, [TOOL_OK])
    request = b"GET /metrics HTTP/1.0\r\n"
    if accept_encoding:
        request += b"Accept-Encoding: " + accept_encoding.encode() + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request + b"\r\n")
        answer = b""
        while chunk := sock.recv(65536):        # HTTP/1.0 without keep-alive: the server closes at the end
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    assert "transfer-encoding" not in headers
    assert int(headers["content-length"]) == len(body)
    if accept_encoding:
        assert headers["content-encoding"] == "gzip"
        body = gzip.decompress(body)
    assert samples(body.decode())[(catalog.TOOL_CALLS.name, (("status", "success"), ("tool", "web_search")))] == 1


def test_each_refusal_is_a_debug_line_saying_why(server, caplog):
    """An operator who turns debug logging on sees why a sender or a scraper is refused."""
    with caplog.at_level(logging.DEBUG, logger="agent_exporter.server"):
        assert post_events(server.url, b"[1,", content_type="application/json").status_code == 400
        assert post_events(server.url, [{"type": "agent_execution", "agent": "planner"}]).status_code == 400
        assert requests.delete(server.url + "/metrics", timeout=10).status_code == 405
    lines = [r.getMessage() for r in caplog.records if r.name == "agent_exporter.server" and r.levelno == logging.DEBUG]
    assert any(line.startswith("POST /v1/events answered 400: ") and "JSON" in line for line in lines), lines
    # Every event refused: an answer, not an HTTPError, says why.
    assert any(line.startswith('POST /v1/events answered 400: {"accepted":0,') for line in lines), lines
    assert "DELETE /metrics answered 405: DELETE is not allowed on /metrics" in lines


def test_a_websocket_handshake_is_refused_and_counted_without_an_error(server, caplog):
    """No endpoint speaks WebSocket: 403 to the upgrade (not a 500 and an error line any client could
    write at will), and the exporter goes on serving."""
    request = (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with caplog.at_level(logging.WARNING), socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert value(server.url, catalog.EXPORTER_HTTP_REQUESTS.name, handler="/metrics", code="403") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("name", ["Authorization", "Content-Type", "Content-Encoding"])
def test_a_header_given_twice_that_is_given_once_is_400(name):
    """The last of two used to win: a proxy that checked the first Authorization passed on the second."""
    tel = Telemetry(Config())
    with start_server(Service(tel, bearer_token="s3cret"), "127.0.0.1:0") as handle:
        values = {"Authorization": (b"Bearer wrong", b"Bearer s3cret"),
                  "Content-Type": (b"text/plain", b"application/json"),
                  "Content-Encoding": (b"br", b"identity")}[name]
        event = json.dumps([TOOL_OK]).encode()
        head = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n" % len(event)
        others = {"Authorization": b"Bearer s3cret", "Content-Type": b"application/json"}
        for other, other_value in others.items():
            if other != name:
                head += other.encode() + b": " + other_value + b"\r\n"
        for given in values:
            head += name.encode() + b": " + given + b"\r\n"
        answer = _exchange_raw(handle.port, head + b"\r\n" + event)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
        assert f"the {name.lower()} header is given more than once".encode() in answer
        assert value(handle.url, catalog.EXPORTER_EVENTS.name, type="tool_call") == 0


@pytest.mark.parametrize("request_head", [
    b"GET /metrics HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: elsewhere\r\n\r\n",
], ids=["no Host", "two Hosts"])
def test_an_http_1_1_request_without_exactly_one_host_is_400(server, request_head):
    """RFC 9112, 3.2: a server MUST answer 400 to an HTTP/1.1 request lacking Host or with more than
    one; HTTP/1.0 needs none."""
    def answer_to(head: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head)
            answer = b""
            while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
                answer += chunk
        return answer

    answer = answer_to(request_head)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert answer_to(b"GET /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert value(server.url, catalog.EXPORTER_HTTP_REQUESTS.name, handler="/metrics", code="400") == 1


def test_landing_page_and_health(server):
    landing = requests.get(server.url + "/", timeout=10)
    assert landing.headers["Content-Type"].startswith("text/html")
    assert 'href="/metrics"' in landing.text
    assert requests.get(server.url + "/-/healthy", timeout=10).status_code == 200
    assert requests.get(server.url + "/-/ready", timeout=10).status_code == 200


def test_embedded_server_serves_metrics_but_no_ingest():
    before = set(threading.enumerate())
    telemetry = Telemetry(Config())
    handle = telemetry.serve("127.0.0.1:0")
    try:
        telemetry.record(TOOL_OK)
        assert value(handle.url, catalog.TOOL_CALLS.name, tool="web_search", status="success") == 1
        refused = post_events(handle.url, [TOOL_OK])
        assert refused.status_code == 404
        assert refused.json() == {"error": "no such endpoint: /v1/events (events are taken by `agent-exporter serve` "
                                           "or Telemetry.asgi_app(), not by Telemetry.serve())"}
        assert requests.get(handle.url + "/v1/agents", timeout=10).status_code == 404
        assert any(t.name.startswith("agent-exporter-worker") for t in set(threading.enumerate()) - before)
    finally:
        handle.stop()
        telemetry.shutdown()
    # The scrapes were rendered in the app's own threads, which end with the server.
    stack.wait_for(lambda: set(threading.enumerate()) <= before, timeout=10, interval=0.01,
                   what="the server's threads ended")


def test_large_and_gzip_bodies_are_decoded_off_the_event_loop(server, monkeypatch):
    """Decoding a batch of megabytes holds the thread doing it for a while: not the event loop, which
    serves every other request (the orchestrator's own, when the app is mounted in its server)."""
    decoded_in = []
    decode_body = events.decode_body

    def spy(body, content_type):
        decoded_in.append(threading.current_thread().name)
        return decode_body(body, content_type)

    monkeypatch.setattr(events, "decode_body", spy)
    big = json.dumps([TOOL_OK] * 5000).encode()
    assert len(big) > server_module.INLINE_BODY_BYTES
    assert post_events(server.url, [TOOL_OK]).status_code == 200
    assert post_events(server.url, big).json()["accepted"] == 5000
    assert post_events(server.url, gzip.compress(json.dumps([TOOL_OK]).encode()),
                       **{"Content-Encoding": "gzip"}).json()["accepted"] == 1
    small, large, gzipped = decoded_in
    assert small == "agent-exporter-http"
    assert large.startswith("agent-exporter-worker") and gzipped.startswith("agent-exporter-worker")
    assert value(server.url, catalog.TOOL_CALLS.name, tool="web_search", status="success") == 5002


def test_stop_waits_for_requests_in_flight_no_longer_than_its_timeout(caplog):
    """Then uvicorn cancels what is left, which is answered 503, without the error line and traceback
    uvicorn writes for each cancelled request (a client's stall is no operator's error)."""
    telemetry = Telemetry(Config())
    handle = start_server(Service(telemetry), "127.0.0.1:0")
    with socket.create_connection(("127.0.0.1", handle.port), timeout=10) as slow:
        slow.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n[")         # in flight: the rest of the body never comes
        time.sleep(0.2)
        asked = time.monotonic()
        handle.stop(timeout=1.0)
        assert 1.0 <= time.monotonic() - asked < 3.0
        assert not handle._thread.is_alive()
        answer = slow.recv(1024)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"the exporter is shutting down" in answer
    # Counted as unfinished, as serve() reports it when it stops.
    assert (handle.service.cancelled, handle.service.in_flight) == (1, 0)
    assert not [r for r in caplog.records if r.exc_info or "Exception in ASGI application" in r.getMessage()]
    telemetry.shutdown()


def test_a_scrape_still_streaming_is_in_flight_and_unfinished_when_cut_off_at_stop():
    telemetry = Telemetry(Config())
    telemetry.record_batch([events.decode({**PLANNER_OK, "agent": f"agent-{n}"}) for n in range(5000)])
    handle = start_server(Service(telemetry), "127.0.0.1:0")
    with _ask_for_metrics(handle, "1.1") as stalled:        # reads nothing of its 8 MB
        stack.wait_for(lambda: handle.service.in_flight, timeout=10, interval=0.01, what="the scrape in flight")
        time.sleep(0.3)
        assert handle.service.in_flight == 1                # sending, not done
        handle.stop(timeout=1.0)
    assert (handle.service.cancelled, handle.service.in_flight) == (1, 0)
    telemetry.shutdown()


def test_embedded_server_takes_alertmanagers_webhook_for_the_healer_in_its_process():
    # An orchestrator running its Healer in process has no `agent-exporter serve` to receive the
    # webhook that opens a breaker: its embedded server does, given the healer's remediator.
    config = Config(healing=HealingConfig(fallbacks={"coder": ("coder-lite",)}))
    telemetry = Telemetry(config)
    remediator = AlertRemediator(config, telemetry)
    healer = Healer.from_config(config, telemetry, remediator=remediator)
    handle = telemetry.serve("127.0.0.1:0", remediator=remediator)
    try:
        opened = requests.post(handle.url + "/v1/alertmanager", json=notification("firing"), timeout=10)
        assert opened.json()["opened"] == ["coder"]
        assert requests.get(handle.url + "/v1/agents", timeout=10).json()["agents"]["coder"]["circuit_state"] == "open"
        assert healer.run("coding", ("coder",), lambda agent: agent) == "coder-lite"
        assert post_events(handle.url, [TOOL_OK]).status_code == 404
    finally:
        handle.stop()
        telemetry.shutdown()


def test_a_port_in_use_is_an_oserror_that_says_so_and_a_stopped_handle_still_says_where(caplog):
    telemetry = Telemetry(Config())
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with caplog.at_level(logging.INFO):
            with pytest.raises(OSError, match=r"^cannot serve on 127\.0\.0\.1:\d+: \[Errno 98\] Address already in use"):
                telemetry.serve(address)
            with pytest.raises(OSError, match=r"^\[Errno 98\] Address already in use"):
                serve(Service(telemetry), address)          # `agent-exporter serve` prefixes the address
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")]     # the exception says it all
    handle = telemetry.serve("127.0.0.1:0")
    url, port = handle.url, handle.port
    handle.stop()
    assert (handle.url, handle.port) == (url, port)        # where it served, after stop() too
    telemetry.shutdown()


def test_our_servers_are_quiet_and_the_orchestrators_own_uvicorn_is_not(caplog):
    """uvicorn's info lines of our server are dropped; another uvicorn in the process logs as before."""
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})

    telemetry = Telemetry(Config())
    caplog.set_level(logging.INFO)
    ours = telemetry.serve("127.0.0.1:0")
    host = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on"))
    host_thread = threading.Thread(target=host.run, name="orchestrator-uvicorn", daemon=True)
    host_thread.start()
    stack.wait_for(lambda: host.started, timeout=30, interval=0.01, what="the orchestrator's uvicorn started")
    ours.stop()
    host.should_exit = True
    host_thread.join(30)
    telemetry.shutdown()
    uvicorn_lines = [(r.threadName, r.getMessage()) for r in caplog.records if r.name == "uvicorn.error"]
    assert ("orchestrator-uvicorn", "Application startup complete.") in uvicorn_lines
    assert any(name == "orchestrator-uvicorn" and line.startswith("Uvicorn running on") for name, line in uvicorn_lines)
    assert not [line for name, line in uvicorn_lines if name == "agent-exporter-http"]
    assert logging.getLogger("uvicorn.error").level == logging.NOTSET


# -- healing endpoints -------------------------------------------------------------------

class RecordingRemediator:
    """Stands in for healing.AlertRemediator: the server's part is routing and status codes."""

    def __init__(self):
        self.payloads = []

    def handle_webhook(self, payload):
        self.payloads.append(payload)          # decoded and validated by the server
        return {"opened": ["coder"], "released": []}

    def agents_status(self):
        return {"agents": {"coder": {"circuit_state": "open"}}}


def test_alertmanager_webhook_and_agents():
    telemetry = Telemetry(Config())
    remediator = RecordingRemediator()
    with start_server(Service(telemetry, remediator=remediator), "127.0.0.1:0") as handle:
        good = requests.post(handle.url + "/v1/alertmanager", json=_webhook("firing", "coder"), timeout=10)
        assert good.status_code == 200
        assert good.json() == {"opened": ["coder"], "released": []}
        # The server validates the payload before any remediator sees it.
        bad = requests.post(handle.url + "/v1/alertmanager", json=[1, 2], timeout=10)
        assert bad.status_code == 400
        assert bad.json()["error"] == "payload: expected `object`, got `array`"
        no_alerts = requests.post(handle.url + "/v1/alertmanager", timeout=10,
                                  json={"version": "4", "receiver": "r", "status": "firing"})
        assert no_alerts.status_code == 400 and "alerts" in no_alerts.json()["error"]
        not_json = requests.post(handle.url + "/v1/alertmanager", data=b"{", timeout=10,
                                 headers={"Content-Type": "application/json"})
        assert not_json.status_code == 400
        assert remediator.payloads == [decode_webhook(_webhook("firing", "coder"))]
        assert requests.get(handle.url + "/v1/agents", timeout=10).json() == remediator.agents_status()


def test_head_answers_like_get_without_a_body():
    """RFC 9110, 9.3.2: HEAD on every GET endpoint, with GET's status and headers; no body is sent,
    so the next request on the same connection reads cleanly."""
    telemetry = Telemetry(Config())
    telemetry.record(TOOL_OK)
    with start_server(Service(telemetry, remediator=RecordingRemediator()), "127.0.0.1:0") as handle:
        connection = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=10)
        for path, accept_encoding in [("/", None), ("/metrics", None), ("/metrics", "gzip"), ("/-/healthy", None),
                                      ("/-/ready", None), ("/v1/agents", None)]:
            headers = {"Accept-Encoding": accept_encoding} if accept_encoding else {}
            connection.request("GET", path, headers=headers)
            get = connection.getresponse()
            assert get.read()
            connection.request("HEAD", path, headers=headers)
            head = connection.getresponse()
            assert head.read() == b""
            assert head.status == get.status == 200
            # GET /metrics streams (chunked); HEAD has no body to frame, so no transfer-encoding.
            skip = {"date", "transfer-encoding"}
            assert ({k: v for k, v in head.getheaders() if k.lower() not in skip}
                    == {k: v for k, v in get.getheaders() if k.lower() not in skip}), path
        connection.request("GET", "/-/healthy")
        assert connection.getresponse().read() == b"Healthy.\n"      # the connection was never out of step
        connection.close()
        refused = requests.post(handle.url + "/metrics", timeout=10)
        assert refused.status_code == 405 and refused.headers["Allow"] == "GET, HEAD"
        assert requests.head(handle.url + "/v1/events", timeout=10).headers["Allow"] == "POST"
    telemetry.shutdown()


# -- auth ----------------------------------------------------------------------------------

def test_bearer_token_guards_v1_only():
    telemetry = Telemetry(Config())
    with start_server(Service(telemetry, bearer_token="t0ken"), "127.0.0.1:0") as handle:
        missing = post_events(handle.url, [TOOL_OK])
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert post_events(handle.url, [TOOL_OK], Authorization="Bearer wrong").status_code == 401
        assert post_events(handle.url, [TOOL_OK], Authorization="Bearer t0ken").json()["accepted"] == 1
        assert requests.get(handle.url + "/metrics", timeout=10).status_code == 200
        assert value(handle.url, catalog.TOOL_CALLS.name, tool="web_search", status="success") == 1


def test_tls_and_basic_auth_from_a_web_config_file(tmp_path):
    cert_path, _ = self_signed(tmp_path)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web_config_path = tmp_path / "web.yml"
    web_config_path.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        f"basic_auth_users:\n  alice: '{hashed}'\n")
    telemetry = Telemetry(Config())
    service = Service(telemetry, web_config=WatchedWebConfig(web_config_path))
    with start_server(service, "127.0.0.1:0") as handle:
        assert handle.url.startswith("https://")
        tls = {"verify": str(cert_path), "timeout": 10}
        anonymous = requests.get(handle.url + "/metrics", **tls)
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == "Basic"
        assert requests.get(handle.url + "/metrics", auth=("alice", "wrong"), **tls).status_code == 401
        assert requests.get(handle.url + "/metrics", auth=("mallory", "s3cret"), **tls).status_code == 401
        ok = requests.get(handle.url + "/metrics", auth=("alice", "s3cret"), **tls)
        assert ok.status_code == 200
        assert ok.headers["X-Content-Type-Options"] == "nosniff"
        posted = requests.post(handle.url + "/v1/events", json=[TOOL_OK], auth=("alice", "s3cret"), **tls)
        assert posted.json()["accepted"] == 1
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(handle.url.replace("https://", "http://") + "/metrics", timeout=10)
        # A client offering HTTP/2 is told HTTP/1.1 over ALPN, as http2: false promises.
        client = ssl.create_default_context(cafile=str(cert_path))
        client.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", int(handle.url.rsplit(":", 1)[1])), timeout=10) as raw, \
                client.wrap_socket(raw, server_hostname="localhost") as conn:
            assert conn.selected_alpn_protocol() == "http/1.1"


def test_known_credentials_are_answered_while_wrong_passwords_queue_for_bcrypt(tmp_path):
    """A flood of new wrong passwords waits for bcrypt, one at a time; a scrape whose credentials
    were checked before must not wait behind it (exporter-toolkit reads its cache first too).
    Here bcrypt is held up for as long as the test needs: the flood's longest possible wait."""
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web_config_path = tmp_path / "web.yml"
    web_config_path.write_text(f"basic_auth_users:\n  alice: '{hashed}'\n")
    telemetry = Telemetry(Config())
    service = Service(telemetry, web_config=WatchedWebConfig(web_config_path))
    with start_server(service, "127.0.0.1:0") as handle:
        assert requests.get(handle.url + "/metrics", auth=("alice", "s3cret"), timeout=10).status_code == 200
        flood = []
        with service.basic_auth._bcrypt_lock:
            for i in range(2 * server_module.WORKER_THREADS):
                wrong = threading.Thread(target=requests.get, args=(handle.url + "/metrics",),
                                         kwargs={"auth": ("alice", f"guess-{i}"), "timeout": 30})
                wrong.start()
                flood.append(wrong)
            time.sleep(0.5)                      # the flood reaches the server first
            scrape = requests.get(handle.url + "/metrics", auth=("alice", "s3cret"), timeout=10)
            assert scrape.status_code == 200 and catalog.EXPORTER_EVENTS_REJECTED.name in scrape.text
        for wrong in flood:
            wrong.join(timeout=30)
    telemetry.shutdown()


# -- the serve command ---------------------------------------------------------------------

def _wait_for_line(lines: queue.Queue, needle: str, timeout: float = 30) -> str:
    line = next((line for line in until(lines, time.monotonic() + timeout) if needle in line), None)
    assert line is not None, f"no log line containing {needle!r}"
    return line


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_finishes_the_in_flight_request_and_exits_0(signum):
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_exporter", "serve", "--web.listen-address=127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = lines_of(process.stderr)
        port = int(re.search(r"Listening on http://127\.0\.0\.1:(\d+)", _wait_for_line(lines, "Listening on")).group(1))
        body = json.dumps([PLANNER_OK, TOOL_OK]).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            # "100 Continue" comes back once the server is inside our request: then it is in flight.
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 100 ")
            process.send_signal(signum)
            _wait_for_line(lines, "waiting for 1 in-flight request")
            sock.sendall(body)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"accepted": 2, "rejected": []}
        assert process.wait(timeout=30) == 0
        _wait_for_line(lines, "bye")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_raises_its_open_files_limit_to_the_hard_limit():
    """Each client connection is a file: at a soft limit of 1024, 1100 idle connections refused
    every scrape.  Go's runtime raises the soft limit at start, so Prometheus's exporters have it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > 256, "this test needs a hard limit of open files above 256"
    process = subprocess.Popen(         # prlimit (util-linux) execs serve with a soft limit of 256
        ["prlimit", f"--nofile=256:{hard}", sys.executable, "-m", "agent_exporter", "serve",
         "--web.listen-address=127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_for_line(lines_of(process.stderr), "Listening on")
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        (line,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
        assert line.split()[3:5] == [str(hard), str(hard)], line
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("section,says", [("enabled: false", "observability.enabled is false"),
                                          ("metrics: {enabled: false}", "observability.metrics.enabled is false")])
def test_serve_says_at_start_that_it_records_nothing(tmp_path, section, says):
    config = tmp_path / "observability.yaml"
    config.write_text(f"observability:\n  {section}\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_exporter", "serve", "--web.listen-address=127.0.0.1:0", f"--config.file={config}"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = lines_of(process.stderr)
        assert '"level":"warning"' in _wait_for_line(lines, says)
        _wait_for_line(lines, "Listening on")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _webhook(status: str, agent: str) -> dict:
    alert = {"status": status, "labels": {"alertname": "OrchestratorAgentHighErrorRatio", "agent": agent,
                                          "severity": "critical"},
             "annotations": {}, "startsAt": "2025-01-15T10:30:00Z", "endsAt": "0001-01-01T00:00:00Z",
             "fingerprint": "c0ffee"}
    return {"version": "4", "receiver": "exporter-remediation", "status": status, "alerts": [alert]}


def test_the_real_remediator_behind_the_webhook():
    from agent_exporter.cli import build_remediator
    config = Config()
    telemetry = Telemetry(config)
    with start_server(Service(telemetry, remediator=build_remediator(config, telemetry)), "127.0.0.1:0") as handle:
        def state(agent):
            return requests.get(handle.url + "/v1/agents", timeout=10).json()["agents"][agent]["circuit_state"]

        malformed = requests.post(handle.url + "/v1/alertmanager", json={"version": "4", "alerts": "x"}, timeout=10)
        assert malformed.status_code == 400
        assert "coder" not in requests.get(handle.url + "/v1/agents", timeout=10).json()["agents"]
        assert requests.post(handle.url + "/v1/alertmanager", json=_webhook("firing", "coder"),
                             timeout=10).json()["opened"] == ["coder"]
        assert state("coder") == "open"
        assert value(handle.url, catalog.CIRCUIT_BREAKER_STATE.name, agent="coder") == 2
        assert requests.post(handle.url + "/v1/alertmanager", json=_webhook("resolved", "coder"),
                             timeout=10).json()["released"] == ["coder"]
        assert state("coder") == "half_open"        # its probe calls decide whether it closes


def test_the_bearer_token_comes_from_the_environment_or_the_file(tmp_path, monkeypatch):
    from agent_exporter.server import BEARER_TOKEN_ENV, read_bearer_token
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.delenv(BEARER_TOKEN_ENV, raising=False)
    assert read_bearer_token("") is None
    assert read_bearer_token(str(token_file)).current() == "from-file"
    monkeypatch.setenv(BEARER_TOKEN_ENV, "from-env")
    assert read_bearer_token(str(token_file)).current() == "from-env"
    monkeypatch.delenv(BEARER_TOKEN_ENV)
    with pytest.raises(ValueError, match="server.bearer_token_file"):
        read_bearer_token(str(tmp_path / "missing"))


def rotate(path: Path, text: str) -> None:
    """Write `text` to `path` as secret tools do: a new file renamed over the old one."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    os.replace(staged, path)


def test_a_token_written_to_the_token_file_applies_to_the_next_request(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("AGENT_EXPORTER_BEARER_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    telemetry = Telemetry(Config(server=ServerConfig(bearer_token_file=str(token_file))))
    with start_server(Service.from_config(telemetry), "127.0.0.1:0") as handle:
        assert post_events(handle.url, [TOOL_OK], Authorization="Bearer first").status_code == 200
        rotate(token_file, "second\n")
        assert post_events(handle.url, [TOOL_OK], Authorization="Bearer first").status_code == 401
        assert post_events(handle.url, [TOOL_OK], Authorization="Bearer second").status_code == 200
        rotate(token_file, "")          # emptied: every token is refused, none lets everything in
        for _ in range(2):
            refused = post_events(handle.url, [TOOL_OK], Authorization="Bearer second")
            assert refused.status_code == 503
            assert refused.json() == {"error": "the exporter cannot read its bearer token; see the exporter's log"}
        assert post_events(handle.url, [TOOL_OK]).status_code == 401
        rotate(token_file, "third\n")
        assert post_events(handle.url, [TOOL_OK], Authorization="Bearer third").status_code == 200
        assert value(handle.url, catalog.TOOL_CALLS.name, tool="web_search", status="success") == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"the bearer token cannot be read, so requests that send one are refused until it is "
                      f"fixed: observability.server.bearer_token_file: {token_file} is empty"]


def test_the_log_channel_writes_each_alert_its_receiver_sends(caplog):
    """alerting.channels [log]: Alertmanager's `exporter-log` receiver posts every alert, firing and resolved."""
    telemetry = Telemetry(Config())
    firing, resolved = _webhook("firing", "coder"), _webhook("resolved", "coder")
    firing["receiver"] = resolved["receiver"] = "exporter-log"
    firing["alerts"][0]["annotations"] = {"summary": "Agent coder fails too often."}
    with caplog.at_level(logging.INFO, logger="agent_exporter.alerts"):
        with start_server(Service(telemetry, log_alerts=True), "127.0.0.1:0") as handle:
            for payload in (firing, resolved, _webhook("firing", "planner")):    # the last: remediation's
                answer = requests.post(handle.url + "/v1/alertmanager", json=payload, timeout=10)
                assert answer.json() == {"status": "ok", "alerts": 1}
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "agent_exporter.alerts"]
    assert lines == [
        (logging.CRITICAL, "ALERT [CRITICAL] [FIRING] OrchestratorAgentHighErrorRatio: Agent coder fails too "
                           "often. (agent=coder)"),
        (logging.INFO, "ALERT [CRITICAL] [RESOLVED] OrchestratorAgentHighErrorRatio (agent=coder)"),
    ]
    telemetry.shutdown()
