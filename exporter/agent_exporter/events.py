"""Event schema v1: the one place events are decoded and validated.

Events arrive as JSON (HTTP ingest, replay) or as Python dicts (the in-process
API).  Both go through msgspec, which decodes and validates typed events in C;
a batch that is entirely valid is decoded in a single call, and only a batch
with an invalid item falls back to item-by-item decoding to report each index.

Legacy records, as the old JSON metrics collector wrote them (`agent_name`,
`duration_ms`, `success`, `tokens_used`, `cost`, `timestamp`), decode to
`AgentExecution`.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Annotated, Literal, NamedTuple, Union

import msgspec

SCHEMA_VERSION = 1
MAX_NAME_LENGTH = 128

# Every number is bounded where it is decoded, so nothing in the store can overflow
# a float or lose precision in one: a token count stays exact in a float64 counter
# (2**53), and durations, costs and times are finite and far from float's range.
MAX_TOKENS = 2**53
MAX_SECONDS = 1e9          # about 31 years
MAX_USD = 1e9
MAX_TIMESTAMP = 1e11       # the year 5138, in Unix seconds

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
Timestamp = Annotated[float, msgspec.Meta(ge=0, le=MAX_TIMESTAMP)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
Usd = Annotated[float, msgspec.Meta(ge=0, le=MAX_USD)]
Score = Annotated[float, msgspec.Meta(ge=0, le=1)]
RequestId = Annotated[str, msgspec.Meta(max_length=256)]
# Ids are checked for length here and for hex digits after decoding (_id_error), where one
# regular expression scans a whole batch's ids at once: per-value patterns cost more than
# the rest of an event's decoding.  The published schema still carries the pattern.
TraceId = Annotated[str, msgspec.Meta(min_length=32, max_length=32,
                                      extra_json_schema={"pattern": "^[0-9a-fA-F]{32}$"})]
SpanId = Annotated[str, msgspec.Meta(min_length=16, max_length=16,
                                     extra_json_schema={"pattern": "^[0-9a-fA-F]{16}$"})]
_HEX = re.compile("[0-9a-fA-F]*")
Status = Literal["success", "error"]
CircuitStateValue = Literal["closed", "half_open", "open"]


# gc=False: events hold only strings and numbers, so they can be in no reference cycle.  As objects
# of the collector, each one's allocation counted towards a collection (a batch of a thousand set off
# one or two) and carried a 16-byte header.
class _Event(msgspec.Struct, frozen=True, tag_field="type", gc=False):
    pass


class AgentExecution(_Event, tag="agent_execution"):
    agent: Name
    status: Status
    duration_seconds: Seconds
    model: Name | None = None
    # Token types are disjoint, so their sum is every token processed:
    # input_tokens counts input neither read from nor written to a cache, and
    # output_tokens output that is not reasoning (README: "Tokens and cost").
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    cache_read_tokens: Count | None = None
    cache_write_tokens: Count | None = None
    reasoning_tokens: Count | None = None
    # Tokens whose input/output split is unknown (legacy `tokens_used`); used
    # only when no other token count is given.
    total_tokens: Count | None = None
    cost_usd: Usd | None = None
    time_to_first_token_seconds: Seconds | None = None
    error_type: Name | None = None
    feature: Name | None = None
    priority: Name | None = None
    request_id: RequestId | None = None
    trace_id: TraceId | None = None
    span_id: SpanId | None = None
    timestamp: Timestamp | None = None


# The order of AgentExecution's fields, which the hot paths (the in-process API, OTLP in) build it
# in positionally: a Struct built from many keywords costs several times as much.
EXECUTION_FIELDS = ("agent", "status", "duration_seconds", "model", "input_tokens", "output_tokens",
                    "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "total_tokens", "cost_usd",
                    "time_to_first_token_seconds", "error_type", "feature", "priority", "request_id",
                    "trace_id", "span_id", "timestamp")
assert AgentExecution.__struct_fields__ == EXECUTION_FIELDS


class ToolCall(_Event, tag="tool_call"):
    tool: Name
    status: Status
    duration_seconds: Seconds
    agent: Name | None = None
    error_type: Name | None = None
    trace_id: TraceId | None = None
    span_id: SpanId | None = None
    timestamp: Timestamp | None = None


class StateTransition(_Event, tag="state_transition"):
    from_state: Name
    to_state: Name
    workflow: Name | None = None
    agent: Name | None = None
    trace_id: TraceId | None = None
    span_id: SpanId | None = None
    timestamp: Timestamp | None = None


class Retry(_Event, tag="retry"):
    agent: Name
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    error_type: Name | None = None


class Fallback(_Event, tag="fallback"):
    from_agent: Name
    to_agent: Name
    reason: Name | None = None


class CircuitState(_Event, tag="circuit_state"):
    agent: Name
    state: CircuitStateValue


class WorkflowRun(_Event, tag="workflow_run"):
    """One task through the orchestrator's workflow, end to end."""
    workflow: Name
    status: Status
    duration_seconds: Seconds
    request_id: RequestId | None = None
    trace_id: TraceId | None = None
    span_id: SpanId | None = None
    timestamp: Timestamp | None = None


class Evaluation(_Event, tag="evaluation"):
    """A quality score of an agent's answer, from an evaluator (a test suite, a judge model, a user)."""
    agent: Name
    evaluator: Name
    score: Score
    label: Name | None = None
    trace_id: TraceId | None = None
    span_id: SpanId | None = None


Event = Union[AgentExecution, ToolCall, StateTransition, Retry, Fallback, CircuitState, WorkflowRun, Evaluation]
EVENT_TYPES: dict[str, type] = {cls.__struct_config__.tag: cls for cls in Event.__args__}


class _LegacyRecord(msgspec.Struct, frozen=True):
    agent_name: Name
    duration_ms: Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS * 1000)]
    success: bool
    tokens_used: Count = 0
    cost: Usd = 0.0
    timestamp: str | Timestamp | None = None


class EventError(ValueError):
    """An invalid event.  `field` names the offending field ("" for the event as a whole);
    `reason` is a short, low-cardinality code used as a metric label."""

    def __init__(self, field: str, reason: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = reason


class BodyError(ValueError):
    """A request body that cannot be read as events at all."""


class Rejection(NamedTuple):
    index: int
    reason: str
    error: str


class Batch(NamedTuple):
    events: list
    rejected: list[Rejection]


_event_decoder = msgspec.json.Decoder(Event)
_batch_decoder = msgspec.json.Decoder(list[Event])
_any_decoder = msgspec.json.Decoder()

_AT = re.compile(r" - at `\$(?:\[\d+\])?\.?([^`]*)`$")
_MISSING = re.compile(r"Object missing required field `([^`]+)`")


def _event_error(exc: msgspec.ValidationError) -> EventError:
    """Turn msgspec's message into a field name, a reason code and a readable text."""
    text = str(exc)
    at = _AT.search(text)
    message = text[: at.start()] if at else text
    path = at.group(1) if at else ""
    missing = _MISSING.match(message)
    if missing:
        field = f"{path}.{missing.group(1)}" if path else missing.group(1)
        return EventError(field, "missing_field", "required field is missing")
    if path == "type":
        return EventError("type", "unknown_type", f"unknown event type; known types: {', '.join(EVENT_TYPES)}")
    if not path and message.startswith("Expected `object`"):
        return EventError("", "not_an_object", "an event must be a JSON object")
    if message.startswith("Expected `") and ", got `" in message:
        return EventError(path, "invalid_type", message)
    return EventError(path, "invalid_value", message)


def _id_error(event) -> EventError | None:
    """The error of an event whose trace or span id is not hexadecimal, else None."""
    for field, digits in (("trace_id", 32), ("span_id", 16)):
        value = getattr(event, field, None)
        if value is not None and _HEX.fullmatch(value) is None:
            return EventError(field, "invalid_value", f"expected {digits} hexadecimal digits")
    return None


def _ids_are_hex(batch: list) -> bool:
    """Whether every trace and span id of a batch is hexadecimal: one regex scan over all of them."""
    ids = "".join([(getattr(e, "trace_id", None) or "") + (getattr(e, "span_id", None) or "") for e in batch])
    return _HEX.fullmatch(ids) is not None


def _check_utf8(event) -> None:
    """Python strings may hold lone surrogates that no UTF-8 exposition can carry.
    JSON input cannot (msgspec rejects them), so only the in-process path checks."""
    for field, value in zip(event.__struct_fields__, msgspec.structs.astuple(event)):
        if type(value) is str and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise EventError(field, "invalid_value", "not valid UTF-8") from None


def _from_legacy(obj: dict) -> AgentExecution:
    try:
        record = msgspec.convert(obj, _LegacyRecord)
    except msgspec.ValidationError as exc:
        raise _event_error(exc) from None
    timestamp = record.timestamp
    if isinstance(timestamp, str):
        try:
            timestamp = datetime.fromisoformat(timestamp).timestamp()
        except (ValueError, OverflowError):
            raise EventError("timestamp", "invalid_value", "not an ISO 8601 timestamp") from None
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise EventError("timestamp", "invalid_value", f"expected a time between 1970 and {MAX_TIMESTAMP:g}")
    # The old collector defaulted tokens_used=0 and cost=0.0 when the caller
    # knew neither: that is unknown usage, never a free execution.
    usage_known = record.tokens_used > 0 or record.cost > 0
    return AgentExecution(
        agent=record.agent_name,
        status="success" if record.success else "error",
        duration_seconds=record.duration_ms / 1000.0,
        total_tokens=record.tokens_used if usage_known else None,
        cost_usd=record.cost if record.cost > 0 else None,
        error_type=None if record.success else "unknown",
        timestamp=timestamp,
    )


def is_legacy_record(obj) -> bool:
    return isinstance(obj, dict) and "type" not in obj and "agent_name" in obj


def decode(obj) -> Event:
    """Validate one event given as a dict (or pass an already decoded event through)."""
    if isinstance(obj, _Event):
        return obj
    if not isinstance(obj, dict):
        raise EventError("", "not_an_object", "an event must be a JSON object")
    if is_legacy_record(obj):
        event = _from_legacy(obj)
    else:
        kind = obj.get("type")
        if kind is None:
            raise EventError("type", "missing_field", "required field is missing")
        cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise EventError("type", "unknown_type",
                             f"unknown event type {kind!r}; known types: {', '.join(EVENT_TYPES)}")
        # Converting to the one class is ~15x faster than to the tagged union.
        try:
            event = msgspec.convert(obj, cls)
        except msgspec.ValidationError as exc:
            raise _event_error(exc) from None
    _check_utf8(event)
    error = _id_error(event)
    if error is not None:
        raise error
    return event


def _decode_items(items: list) -> Batch:
    events, rejected = [], []
    for index, item in enumerate(items):
        try:
            events.append(decode(item))
        except EventError as exc:
            rejected.append(Rejection(index, exc.reason, str(exc)))
    return Batch(events, rejected)


def _without_bad_ids(events: list, indexes: list[int], rejected: list[Rejection]) -> list:
    """`events` less those with non-hex ids, which join `rejected` at their item `indexes`."""
    if _ids_are_hex(events):
        return events
    kept = []
    for event, index in zip(events, indexes):
        error = _id_error(event)
        if error is None:
            kept.append(event)
        else:
            rejected.append(Rejection(index, error.reason, str(error)))
    rejected.sort()
    return kept


# What a decoder raises for bytes that are not JSON: msgspec's DecodeError, and two errors
# it lets through from Python: a string that is not UTF-8, and nesting deeper than the
# interpreter's recursion limit.  ValidationError (a DecodeError) is caught before these.
# The webhook and OTLP/JSON decoders use these two names too, so every endpoint says the same.
MALFORMED_JSON = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_BOM = b"\xef\xbb\xbf"


def malformed_json_reason(exc: BaseException) -> str:
    """What is wrong with a body that is not JSON, for the client."""
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid JSON: not UTF-8 at byte {exc.start} of a string"
    if isinstance(exc, RecursionError):
        return "invalid JSON: nested too deeply"
    return f"invalid JSON: {exc}"


def _decode_ndjson(body: bytes) -> Batch:
    events, rejected, indexes = [], [], []
    index = 0
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            events.append(_event_decoder.decode(line))
            indexes.append(index)
        except msgspec.ValidationError as exc:
            try:
                obj = _any_decoder.decode(line)
            except MALFORMED_JSON:
                obj = None
            if is_legacy_record(obj):
                try:
                    events.append(_from_legacy(obj))
                    indexes.append(index)
                except EventError as legacy_exc:
                    rejected.append(Rejection(index, legacy_exc.reason, str(legacy_exc)))
            else:
                error = _event_error(exc)
                rejected.append(Rejection(index, error.reason, str(error)))
        except MALFORMED_JSON as exc:
            rejected.append(Rejection(index, "invalid_json", malformed_json_reason(exc)))
        index += 1
    return Batch(_without_bad_ids(events, indexes, rejected), rejected)


NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
JSON_TYPES = frozenset({"application/json"})


@functools.lru_cache(maxsize=64)       # a few content types, on every request
def body_format(content_type: str | None) -> str | None:
    """'json', 'ndjson', or None for a content type we do not take."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in JSON_TYPES:
        return "json"
    if media in NDJSON_TYPES:
        return "ndjson"
    return None


def decode_body(body: bytes, content_type: str = "application/json") -> Batch:
    """Decode a JSON object, a JSON array or NDJSON into events and per-item rejections.

    Raises BodyError when the body as a whole is unusable (unsupported type,
    invalid JSON, or JSON that is neither an object nor an array).
    """
    fmt = body_format(content_type)
    if fmt is None:
        raise BodyError(f"unsupported content type {content_type!r}")
    if body.startswith(_BOM):
        raise BodyError("invalid JSON: a byte order mark (JSON text is UTF-8 without one, RFC 8259)")
    if fmt == "ndjson":
        return _decode_ndjson(body)
    try:
        batch = _batch_decoder.decode(body)
        if _ids_are_hex(batch):
            return Batch(batch, [])
    except msgspec.ValidationError:
        pass  # some item is invalid, or this is a single object: decode generically below
    except MALFORMED_JSON as exc:
        raise BodyError(malformed_json_reason(exc)) from None
    try:
        document = _any_decoder.decode(body)
    except MALFORMED_JSON as exc:
        raise BodyError(malformed_json_reason(exc)) from None
    if isinstance(document, list):
        return _decode_items(document)
    if isinstance(document, dict):
        return _decode_items([document])
    raise BodyError("expected a JSON object, a JSON array of objects, or NDJSON")


def json_schema() -> dict:
    """JSON Schema of schema v1, for orchestrators in other languages (schemas/events.v1.schema.json)."""
    (schema,), components = msgspec.json.schema_components([Event], ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://agent-exporter.dev/schemas/events.v1.schema.json",
        "title": "agent-exporter event (schema v1)",
        "description": "One orchestrator event; `type` selects the kind. Unknown fields are ignored.",
        **schema,
        "$defs": components,
    }
