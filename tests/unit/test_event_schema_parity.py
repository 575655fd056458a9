"""The published event schema and the decoder of POST /v1/events say the same thing.

Teams in other languages validate their events against schemas/events.v1.schema.json before
posting them, so an event the schema admits must be accepted, and an event it refuses must be
refused: instances generated from the schema go through the decoder, and near-valid events
(values at and beyond each bound, wrong types, 1.0 for 1, extra and missing keys) get the same
answer from both.  Every event goes through events.decode_body, as the service calls it, in
each body form it takes (one object, an array, NDJSON), and the forms must agree.
"""

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator

from agent_exporter import events

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "schemas" / "events.v1.schema.json"
SCHEMA = json.loads(PUBLISHED.read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
DEFS = sorted(SCHEMA["$defs"])
# Built once: from_schema canonicalises its schema, which costs more than drawing from it.
KINDS = {name: from_schema({"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{name}"}) for name in DEFS}
EVENTS = from_schema(SCHEMA)

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def answers(instance) -> list[bool]:
    """Whether /v1/events takes `instance` as one event: as an object, in an array, as NDJSON."""
    text = json.dumps(instance, ensure_ascii=False).encode()
    result = []
    for body, content_type in ((text, "application/json"), (b"[" + text + b"]", "application/json"),
                               (text + b"\n", "application/x-ndjson")):
        try:
            batch = events.decode_body(body, content_type)
        except events.BodyError:
            result.append(False)
        else:
            result.append(len(batch.events) == 1 and not batch.rejected)
    return result


def accepted(instance) -> bool:
    result = answers(instance)
    assert len(set(result)) == 1, f"the body forms disagree (object, array, NDJSON): {result}"
    return result[0]


def schema_valid(instance) -> bool:
    return VALIDATOR.is_valid(instance)


def test_the_published_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(SCHEMA)


# The keywords of JSON Schema 2020-12 the published schema may use.  Another (OpenAPI's
# `discriminator`) is refused by validators in strict mode, as Ajv is by default.
KEYWORDS = {"$schema", "$id", "$ref", "$defs", "title", "description", "default", "type", "properties",
            "required", "anyOf", "not", "enum", "const", "minimum", "maximum", "minLength", "maxLength", "pattern"}


def _keywords(schema: dict) -> set[str]:
    found = set(schema)
    for key in ("properties", "$defs"):
        for sub in schema.get(key, {}).values():
            found |= _keywords(sub)
    for sub in schema.get("anyOf", []):
        found |= _keywords(sub)
    if "not" in schema:
        found |= _keywords(schema["not"])
    return found


def test_the_schema_uses_only_json_schema_keywords():
    assert _keywords(SCHEMA) - KEYWORDS == set()


def test_the_published_file_is_exactly_what_the_code_generates():
    """Byte for byte, so a regenerated file never shows as a diff: `python -m agent_exporter.events`."""
    assert PUBLISHED.read_text() == events.json_schema_text()


# -- from the schema to the decoder -----------------------------------------------------------


@pytest.mark.parametrize("name", DEFS)
@SETTINGS
@given(data=st.data())
def test_every_event_the_schema_admits_is_accepted(name, data):
    instance = data.draw(KINDS[name])
    assert schema_valid(instance)
    assert accepted(instance), instance


@SETTINGS
@given(EVENTS)
def test_every_instance_of_the_whole_schema_is_accepted(instance):
    assert accepted(instance), instance


# -- near-valid events: the decoder accepts exactly when the schema validates -----------------

EXAMPLES = [
    {"type": "agent_execution", "agent": "planner", "status": "success", "duration_seconds": 1.5,
     "model": "gpt-4o", "input_tokens": 10, "output_tokens": 3, "cache_read_tokens": 0, "cache_write_tokens": 1,
     "reasoning_tokens": 2, "total_tokens": 16, "cost_usd": 0.01, "time_to_first_token_seconds": 0.2,
     "error_type": "Timeout", "feature": "login", "priority": "high", "request_id": "r-1",
     "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331", "timestamp": 1.7e9},
    {"type": "tool_call", "tool": "web_search", "status": "error", "duration_seconds": 0, "agent": "coder",
     "error_type": "Timeout", "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
     "timestamp": 1.7e9},
    {"type": "state_transition", "from_state": "queued", "to_state": "planning", "workflow": "feature",
     "agent": "planner", "timestamp": 0},
    {"type": "retry", "agent": "coder", "attempt": 2, "error_type": "RateLimited"},
    {"type": "fallback", "from_agent": "coder", "to_agent": "coder-mini", "reason": "circuit_open"},
    {"type": "circuit_state", "agent": "coder", "state": "half_open"},
    {"type": "workflow_run", "workflow": "feature", "status": "success", "duration_seconds": 75.5,
     "request_id": "r-1", "timestamp": 1.7e9},
    {"type": "evaluation", "agent": "coder", "evaluator": "tests_pass", "score": 0.8, "label": "pass",
     "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"},
    # The legacy collector's record (DESIGN §2), as its record_agent_execution wrote it.
    {"timestamp": "2024-05-01T12:34:56.789012", "agent_name": "planner", "duration_ms": 1500.0,
     "success": True, "tokens_used": 120, "cost": 0.002},
    {"agent_name": "planner", "duration_ms": 0, "success": False},
]

_UP = math.inf
# The bounds the decoder enforces, read from the decoder, not from the schema under test.
NUMBERS = [
    0, -0.0, 1, 1.0, 2, 2.0, -1, -1.0, 0.5, 1.5, 1e-9, -1e-300, 1.0000000000000002, 0.9999999999999999,
    events.MAX_TOKENS, events.MAX_TOKENS + 1, float(events.MAX_TOKENS), math.nextafter(events.MAX_TOKENS, _UP),
    events.MAX_SECONDS, math.nextafter(events.MAX_SECONDS, _UP), int(events.MAX_SECONDS) + 1,
    events.MAX_SECONDS * 1000, math.nextafter(events.MAX_SECONDS * 1000, _UP),
    events.MAX_USD, math.nextafter(events.MAX_USD, _UP), events.MAX_TIMESTAMP, math.nextafter(events.MAX_TIMESTAMP, _UP),
    1e20, 10**20, 2**63, 2**64, 1e300, -1e300,
]
STRINGS = [
    "", "a", "é", "日本", "a" * events.MAX_NAME_LENGTH, "a" * (events.MAX_NAME_LENGTH + 1), "é" * events.MAX_NAME_LENGTH,
    "é" * (events.MAX_NAME_LENGTH + 1), "r" * 256, "r" * 257, "0" * 16, "0" * 32, "aB" * 8, "Fa" * 16, "0" * 15,
    "0" * 17, "0" * 31, "0" * 33, "g" * 16, "g" * 32, "0" * 15 + "\n", "0" * 31 + "\n", "０" * 16,
    "success", "error", "ok", "closed", "half_open", "open", "Closed",
    "agent_execution", "tool_call", "retry", "evaluation", "unknown",
    "2024-05-01T12:34:56", "2024-05-01T12:34:56.789012", "2024-05-01 12:34", "2024-05-01", "2024-05-01T12:34:56Z",
    "2024-05-01T12:34:56+02:00", "2024-02-29T00:00:00", "2023-02-29T00:00:00", "2024-02-30T00:00:00",
    "2024-04-31T00:00:00", "2024-13-01T00:00:00", "2024-05-01T24:00:00", "1969-12-31T23:59:59", "9999-12-31T00:00:00",
    "2024-05-01T12:34:56.1234567", "20240501T123456", "2024-W18-3", "2024-05-01t12:34:56", "yesterday",
    "２０２４-05-01T12:34:56",
]
OTHERS = [None, True, False, [], {}, [1], {"a": 1}]
VALUES = st.sampled_from(NUMBERS) | st.sampled_from(STRINGS) | st.sampled_from(OTHERS)

FIELDS = sorted({key for d in SCHEMA["$defs"].values() for key in d.get("properties", {})}
                | {key for e in EXAMPLES for key in e}
                | {"agent_name", "duration_ms", "success", "tokens_used", "cost", "type", "extra", "Type"})


@st.composite
def near_valid(draw):
    """A valid event with one to three keys changed, removed or added."""
    event = dict(draw(st.sampled_from(EXAMPLES) | EVENTS))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(event)) | st.sampled_from(FIELDS))
        if draw(st.integers(0, 4)) == 0:
            event.pop(key, None)
        else:
            event[key] = draw(VALUES)
    return event


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(near_valid())
def test_the_decoder_accepts_a_near_valid_event_exactly_when_the_schema_validates_it(event):
    assert accepted(event) == schema_valid(event), event


@pytest.mark.parametrize("event", EXAMPLES)
def test_each_example_is_valid_and_accepted(event):
    assert schema_valid(event) and accepted(event)


# -- the cases the reports named, as literals ---------------------------------------------------


def _execution(**changes):
    return {"type": "agent_execution", "agent": "planner", "status": "success", "duration_seconds": 1.5, **changes}


LITERALS = [
    # Counts written as integral floats (Python's json.dumps(1.0), JavaScript and Go do not) are counts.
    (_execution(input_tokens=1.0), True),
    (_execution(output_tokens=1e3), True),
    (_execution(total_tokens=float(events.MAX_TOKENS)), True),
    (_execution(input_tokens=1.5), False),
    (_execution(input_tokens=1e20), False),
    ({"type": "retry", "agent": "coder", "attempt": 2.0}, True),
    ({"type": "retry", "agent": "coder", "attempt": 0.0}, False),
    ({"agent_name": "planner", "duration_ms": 5, "success": True, "tokens_used": 100.0}, True),
    # The legacy record form is part of the schema...
    ({"agent_name": "planner", "duration_ms": 5, "success": True}, True),
    ({"agent_name": "planner", "duration_ms": 5, "success": True, "timestamp": "2024-05-01T12:00:00"}, True),
    ({"agent_name": "planner", "duration_ms": 5, "success": True, "timestamp": 1.7e9}, True),
    ({"agent_name": "planner", "duration_ms": 5, "success": "yes"}, False),
    ({"agent_name": "planner", "success": True}, False),
    # ... with its timestamp a real ISO 8601 time the decoder can read, between 1971 and 5137.
    ({"agent_name": "planner", "duration_ms": 5, "success": True, "timestamp": "yesterday"}, False),
    ({"agent_name": "planner", "duration_ms": 5, "success": True, "timestamp": "2024-02-30T00:00:00"}, False),
    ({"agent_name": "planner", "duration_ms": 5, "success": True, "timestamp": "2023-02-29T00:00:00"}, False),
    ({"agent_name": "planner", "duration_ms": 5, "success": True, "timestamp": "2024-02-29T00:00:00"}, True),
    ({"agent_name": "planner", "duration_ms": 5, "success": True, "timestamp": "9999-12-31T00:00:00"}, False),
    # A record with `type` is a typed event, whatever legacy keys it has.
    ({"type": "agent_execution", "agent_name": "planner", "duration_ms": 5, "success": True}, False),
    ({"type": None, "agent_name": "planner", "duration_ms": 5, "success": True}, False),
]


@pytest.mark.parametrize("event,valid", LITERALS, ids=[json.dumps(e, sort_keys=True)[:90] for e, _ in LITERALS])
def test_schema_and_decoder_agree_on(event, valid):
    assert schema_valid(event) == valid
    assert accepted(event) == valid


def test_an_integral_float_count_decodes_to_an_int():
    body = json.dumps([_execution(input_tokens=1.0, output_tokens=2e3)]).encode()
    batch = events.decode_body(body)
    (event,) = batch.events
    assert not batch.rejected
    assert (event.input_tokens, event.output_tokens) == (1, 2000)
    assert type(event.input_tokens) is int and type(event.output_tokens) is int
    assert events.decode(_execution(reasoning_tokens=7.0)).reasoning_tokens.__class__ is int
