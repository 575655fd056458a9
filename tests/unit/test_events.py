import gzip
import json
from datetime import datetime
from pathlib import Path

import msgspec
import pytest

from agent_exporter import events

ROOT = Path(__file__).resolve().parents[2]

EXECUTION = {"type": "agent_execution", "agent": "planner", "status": "success", "duration_seconds": 1.5}


def with_(base, **changes):
    event = dict(base)
    for key, value in changes.items():
        if value is ...:
            del event[key]
        else:
            event[key] = value
    return event


VALID = [
    EXECUTION,
    with_(EXECUTION, status="error", error_type="Timeout", model="gpt-4o", input_tokens=10,
          output_tokens=0, cost_usd=0.0, feature="login", priority="high", request_id="r-1",
          trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331", timestamp=1.7e9),
    {"type": "tool_call", "tool": "web_search", "status": "error", "duration_seconds": 0, "agent": "coder"},
    {"type": "state_transition", "from_state": "queued", "to_state": "planning", "workflow": "feature"},
    {"type": "retry", "agent": "coder", "attempt": 2, "error_type": "RateLimited"},
    {"type": "fallback", "from_agent": "coder", "to_agent": "coder-mini", "reason": "circuit_open"},
    {"type": "circuit_state", "agent": "coder", "state": "half_open"},
    {"type": "workflow_run", "workflow": "feature", "status": "error", "duration_seconds": 75.5,
     "request_id": "r-1", "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"},
    {"type": "evaluation", "agent": "coder", "evaluator": "tests_pass", "score": 0.8, "label": "pass"},
    with_(EXECUTION, cache_read_tokens=9000, cache_write_tokens=100, reasoning_tokens=50,
          time_to_first_token_seconds=0.4, input_tokens=2**53),
]


@pytest.mark.parametrize("obj", VALID, ids=lambda o: o["type"])
def test_valid_events_decode_to_their_type(obj):
    event = events.decode(obj)
    assert type(event) is events.EVENT_TYPES[obj["type"]]
    for key, value in obj.items():
        if key != "type":
            assert getattr(event, key) == value


def test_unknown_fields_are_ignored():
    event = events.decode(with_(EXECUTION, prompt="secret", nested={"x": 1}))
    assert event.agent == "planner" and not hasattr(event, "prompt")


INVALID = [
    (with_(EXECUTION, agent=...), "agent", "missing_field"),
    (with_(EXECUTION, duration_seconds=...), "duration_seconds", "missing_field"),
    (with_(EXECUTION, type=...), "type", "missing_field"),
    (with_(EXECUTION, type="agent_run"), "type", "unknown_type"),
    (with_(EXECUTION, type=7), "type", "unknown_type"),
    (with_(EXECUTION, status="ok"), "status", "invalid_value"),
    (with_(EXECUTION, duration_seconds=True), "duration_seconds", "invalid_type"),
    (with_(EXECUTION, duration_seconds="1.5"), "duration_seconds", "invalid_type"),
    (with_(EXECUTION, duration_seconds=-0.1), "duration_seconds", "invalid_value"),
    (with_(EXECUTION, duration_seconds=float("nan")), "duration_seconds", "invalid_value"),
    (with_(EXECUTION, duration_seconds=float("inf")), "duration_seconds", "invalid_value"),
    (with_(EXECUTION, input_tokens=-1), "input_tokens", "invalid_value"),
    (with_(EXECUTION, input_tokens=1.5), "input_tokens", "invalid_type"),
    (with_(EXECUTION, output_tokens=False), "output_tokens", "invalid_type"),
    (with_(EXECUTION, cost_usd=-0.01), "cost_usd", "invalid_value"),
    (with_(EXECUTION, cost_usd=float("inf")), "cost_usd", "invalid_value"),
    (with_(EXECUTION, agent=""), "agent", "invalid_value"),
    (with_(EXECUTION, agent="a" * 129), "agent", "invalid_value"),
    (with_(EXECUTION, agent="bad\ud800name"), "agent", "invalid_value"),
    (with_(EXECUTION, agent=42), "agent", "invalid_type"),
    (with_(EXECUTION, trace_id="not-a-trace-id"), "trace_id", "invalid_value"),
    ({"type": "circuit_state", "agent": "a", "state": "broken"}, "state", "invalid_value"),
    ({"type": "retry", "agent": "a", "attempt": 0}, "attempt", "invalid_value"),
    ({"type": "fallback", "from_agent": "a"}, "to_agent", "missing_field"),
    ({"agent_name": "a", "duration_ms": -5, "success": True}, "duration_ms", "invalid_value"),
    # Numbers are bounded where they are decoded: exact in a float counter, finite in a sum.
    (with_(EXECUTION, input_tokens=10**400), "input_tokens", "invalid_value"),
    (with_(EXECUTION, reasoning_tokens=2**53 + 1), "reasoning_tokens", "invalid_value"),
    (with_(EXECUTION, duration_seconds=1e300), "duration_seconds", "invalid_value"),
    (with_(EXECUTION, cost_usd=1e300), "cost_usd", "invalid_value"),
    (with_(EXECUTION, timestamp=1e300), "timestamp", "invalid_value"),
    (with_(EXECUTION, time_to_first_token_seconds=-1), "time_to_first_token_seconds", "invalid_value"),
    ({"type": "retry", "agent": "a", "attempt": 2**63}, "attempt", "invalid_value"),
    ({"type": "evaluation", "agent": "a", "evaluator": "e", "score": 1.01}, "score", "invalid_value"),
    ({"type": "workflow_run", "workflow": "w", "status": "done", "duration_seconds": 1}, "status",
     "invalid_value"),
    ({"agent_name": "a", "duration_ms": 5, "success": True, "timestamp": "9999-12-31T23:59:59"}, "timestamp",
     "invalid_value"),
    ({"agent_name": "a", "duration_ms": 5, "success": "yes"}, "success", "invalid_type"),
]


@pytest.mark.parametrize("obj,field,reason", INVALID, ids=lambda v: v if isinstance(v, str) else None)
def test_invalid_events_name_the_field(obj, field, reason):
    with pytest.raises(ValueError) as info:
        events.decode(obj)
    assert isinstance(info.value, events.EventError)
    assert info.value.field == field
    assert info.value.reason == reason
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize("obj", [5, "x", None, [EXECUTION]])
def test_non_objects_are_rejected(obj):
    with pytest.raises(events.EventError) as info:
        events.decode(obj)
    assert info.value.reason == "not_an_object"


def test_legacy_record_maps_to_agent_execution():
    record = {"timestamp": "2024-05-01T12:00:00", "agent_name": "planner", "duration_ms": 1500.0,
              "success": False, "tokens_used": 1200, "cost": 0.03}
    assert events.decode(record) == events.AgentExecution(
        agent="planner", status="error", duration_seconds=1.5, total_tokens=1200, cost_usd=0.03,
        error_type="unknown", timestamp=datetime(2024, 5, 1, 12).timestamp())


def test_legacy_defaults_mean_unknown_usage_not_free():
    event = events.decode({"agent_name": "planner", "duration_ms": 10, "success": True,
                           "tokens_used": 0, "cost": 0.0})
    assert event.total_tokens is None and event.cost_usd is None


def test_body_json_array_all_valid():
    body = json.dumps(VALID).encode()
    batch = events.decode_body(body, "application/json; charset=utf-8")
    assert [type(e).__name__ for e in batch.events] == [
        "AgentExecution", "AgentExecution", "ToolCall", "StateTransition", "Retry", "Fallback", "CircuitState",
        "WorkflowRun", "Evaluation", "AgentExecution"]
    assert batch.rejected == []


def test_body_mixed_batch_reports_index_and_reason():
    items = [EXECUTION, {"type": "nope"}, with_(EXECUTION, status="ok"), 17,
             {"agent_name": "legacy", "duration_ms": 3, "success": True}, VALID[2]]
    batch = events.decode_body(json.dumps(items).encode())
    assert [type(e).__name__ for e in batch.events] == ["AgentExecution", "AgentExecution", "ToolCall"]
    assert [(r.index, r.reason) for r in batch.rejected] == [
        (1, "unknown_type"), (2, "invalid_value"), (3, "not_an_object")]
    assert batch.rejected[1].error.startswith("status: ")


def test_body_single_object():
    batch = events.decode_body(json.dumps(EXECUTION).encode())
    assert len(batch.events) == 1 and batch.rejected == []


def test_body_ndjson_counts_lines_and_skips_blank_ones():
    lines = [json.dumps(EXECUTION), "", "{not json", json.dumps({"type": "retry", "agent": "a"}),
             json.dumps({"agent_name": "legacy", "duration_ms": 3, "success": True}), json.dumps(VALID[3])]
    batch = events.decode_body("\n".join(lines).encode(), "application/x-ndjson")
    assert len(batch.events) == 3
    assert [(r.index, r.reason) for r in batch.rejected] == [(1, "invalid_json"), (2, "missing_field")]
    assert batch.rejected[1].error == "attempt: required field is missing"


@pytest.mark.parametrize("body", [b"{not json", b"", b"42", b'"text"', b"\xff\xfe"])
def test_unusable_json_body_raises_body_error(body):
    with pytest.raises(events.BodyError):
        events.decode_body(body)


def test_a_string_that_is_not_utf8_is_refused_naming_its_byte_in_the_body_or_line():
    with pytest.raises(events.BodyError, match=r"^invalid JSON: not UTF-8 at byte 21$"):
        events.decode_body(b'[{"type": "retry", "a\xc3gent": "x"}]')
    batch = events.decode_body(json.dumps(EXECUTION).encode() + b'\n{"type": "retry", "agent": "caf\xe9"}', "application/x-ndjson")
    assert [(r.index, r.error) for r in batch.rejected] == [(1, "invalid JSON: not UTF-8 at byte 31")]


@pytest.mark.parametrize("error", [
    UnicodeDecodeError("utf-8", b"ab\xff", 2, 3, "invalid start byte"),   # msgspec before 0.23
    msgspec.DecodeError("Invalid UTF-8 encoded string"),                 # msgspec 0.23: no position
], ids=["unicode-error", "decode-error"])
def test_every_msgspec_says_not_utf8_the_same_way(error):
    assert events.malformed_json_reason(error, b'{"k": "ab\xff"}') == "invalid JSON: not UTF-8 at byte 9"


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_a_batch_lists_the_first_thousand_rejections_and_counts_them_all(content_type):
    items = [json.dumps(EXECUTION)] + ["1"] * 2500 + [json.dumps({"type": "retry", "agent": "a"})]
    body = ("[" + ",".join(items) + "]" if content_type == "application/json" else "\n".join(items)).encode()
    batch = events.decode_body(body, content_type)
    assert len(batch.events) == 1
    assert len(batch.rejected) == events.MAX_LISTED_REJECTIONS == 1000
    assert [r.index for r in batch.rejected] == list(range(1, 1001))
    reason = batch.rejected[0].reason
    assert batch.rejected_by_reason == {reason: 2500, "missing_field": 1}


def test_unsupported_content_type():
    with pytest.raises(events.BodyError, match="content type"):
        events.decode_body(b"{}", "text/plain")
    assert events.body_format("application/x-ndjson") == "ndjson"
    assert events.body_format("Application/JSON; charset=utf-8") == "json"
    assert events.body_format('application/json;Charset="UTF-8"') == "json"
    assert events.body_format("application/x-ndjson; charset=us-ascii") == "ndjson"
    assert events.body_format(None) is None
    # JSON is exchanged in UTF-8 (RFC 8259) and read as that: another charset is refused, not misread.
    assert events.body_format("application/json; charset=utf-16") is None
    assert events.body_format("application/x-ndjson; charset=latin-1") is None


def test_gzip_is_not_this_modules_job():
    # Bodies arrive decompressed (the server bounds decompression); gzip bytes are not JSON.
    with pytest.raises(events.BodyError):
        events.decode_body(gzip.compress(json.dumps(EXECUTION).encode()))


@pytest.mark.parametrize("number", [b"1" + b"0" * 400, b"9007199254740993", b"1" + b"0" * 20])
def test_huge_integers_in_json_are_rejected_with_their_field(number):
    body = b'[{"type":"agent_execution","agent":"a","status":"success","duration_seconds":1,"input_tokens":%s},' \
           b'{"type":"agent_execution","agent":"a","status":"success","duration_seconds":%s}]' % (number, number)
    batch = events.decode_body(body)
    assert batch.events == []
    assert [(r.index, r.reason, r.error.split(":")[0]) for r in batch.rejected] == [
        (0, "invalid_value", "input_tokens"), (1, "invalid_value", "duration_seconds")]


@pytest.mark.parametrize("number", [b"1e400", b"-1e400"])
def test_numbers_beyond_a_float_make_the_body_invalid_json(number):
    with pytest.raises(events.BodyError, match="out of range"):
        events.decode_body(b'{"type":"tool_call","tool":"t","status":"success","duration_seconds":%s}' % number)


def test_published_json_schema_matches_the_code():
    published = json.loads((ROOT / "schemas" / "events.v1.schema.json").read_text())
    assert published == json.loads(json.dumps(events.json_schema()))


def test_json_schema_covers_every_event_type_and_required_field():
    defs = events.json_schema()["$defs"]
    required = {name: set(d.get("required", ())) for name, d in defs.items()}
    assert required["AgentExecution"] == {"type", "agent", "status", "duration_seconds"}
    assert required["ToolCall"] == {"type", "tool", "status", "duration_seconds"}
    assert required["StateTransition"] == {"type", "from_state", "to_state"}
    assert required["Retry"] == {"type", "agent", "attempt"}
    assert required["Fallback"] == {"type", "from_agent", "to_agent"}
    assert required["CircuitState"] == {"type", "agent", "state"}
    assert required["WorkflowRun"] == {"type", "workflow", "status", "duration_seconds"}
    assert required["Evaluation"] == {"type", "agent", "evaluator", "score"}
