"""Event schema v1: the one place events are decoded and validated.

Events arrive as JSON (HTTP ingest, replay) or as Python dicts (the in-process
API).  Both go through msgspec, which decodes and validates typed events in C;
a batch that is entirely valid is decoded in a single call, and only a batch
with an invalid item falls back to item-by-item decoding to report each index.

Legacy records, as the old JSON metrics collector wrote them (`agent_name`,
`duration_ms`, `success`, `tokens_used`, `cost`, `timestamp`), decode to
`AgentExecution`.

json_schema() is the published schema (schemas/events.v1.schema.json, rewritten with
`python -m agent_exporter.events > schemas/events.v1.schema.json`); it says exactly what the
decoder accepts, and tests/unit/test_event_schema_parity.py holds the two to that.
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
# A retry's attempt number goes into a span event: OTLP encodes it as an int64, and one value
# beyond that fails the export of the whole batch of spans it is in.
MAX_ATTEMPT = 2**31 - 1

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
Timestamp = Annotated[float, msgspec.Meta(ge=0, le=MAX_TIMESTAMP)]
# JSON Schema's integer is any number with a zero fraction, so 1.0 and 1e3 are counts too: encoders
# that write every number as a float (Python's json.dumps(1.0)) are not refused.  The JSON decoders
# take only integer literals in C; an item that fails on a float count alone is decoded again with
# its integral floats made ints (_with_integral_counts), off the common path.
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS, description=(
    "An integer; written with a zero fraction (1.0, 1e3) it is the same integer."))]
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


def _iso_time_pattern() -> str:
    """The ISO 8601 times a legacy record's `timestamp` may be: a real calendar date between
    1971 and 5137 (so every offset and the local time zone keep it within 0..MAX_TIMESTAMP),
    an optional time to the microsecond and an optional UTC offset.  Each string it matches,
    datetime.fromisoformat reads.  ECMA 262 and Python read it alike: [0-9], not \\d, and
    `(?!\\n)$`, since Python's $ also matches before a final newline."""
    year = "(?:197[1-9]|19[89][0-9]|[2-4][0-9]{3}|50[0-9]{2}|51[0-2][0-9]|513[0-7])"
    month_day = ("(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
                 "|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)")
    leap_year = ("(?:197[26]|198[048]|199[26]|[2-4][0-9](?:0[48]|[2468][048]|[13579][26])"
                 "|(?:2[048]|3[26]|4[048])00|50(?:0[48]|[2468][048]|[13579][26])"
                 "|51(?:0[48]|1[26]|2[048])|513[26])")
    time = "[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]{1,6})?)?"
    offset = "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
    return f"^(?:{year}-{month_day}|{leap_year}-02-29)(?:{time}{offset}?)?(?!\\n)$"


ISO_TIME_PATTERN = _iso_time_pattern()
_ISO_TIME = re.compile(ISO_TIME_PATTERN)

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
    attempt: Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPT)]
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


class LegacyRecord(msgspec.Struct, frozen=True):
    """A record of the old JSON metrics collector, without `type`: an agent_execution."""
    agent_name: Name
    duration_ms: Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS * 1000)]
    success: bool
    tokens_used: Count = 0
    cost: Usd = 0.0
    # The pattern is checked in _from_legacy, which names the form rather than quoting the regex.
    timestamp: Annotated[str, msgspec.Meta(extra_json_schema={"pattern": ISO_TIME_PATTERN, "description": (
        "ISO 8601, as datetime.isoformat() writes it; without an offset, the exporter's local time.")}
    )] | Timestamp | None = None


def _int_fields(cls) -> frozenset[str]:
    """The fields of `cls` that hold an int (alone or in a union with None)."""
    ints = set()
    for field in msgspec.inspect.type_info(cls).fields:
        types = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,)
        types = [t.type if isinstance(t, msgspec.inspect.Metadata) else t for t in types]
        if any(isinstance(t, msgspec.inspect.IntType) for t in types):
            ints.add(field.encode_name)
    return frozenset(ints)


_INT_FIELDS = {cls: _int_fields(cls) for cls in (*Event.__args__, LegacyRecord)}


def _with_integral_counts(obj: dict, cls) -> dict | None:
    """`obj` with the integral floats (1.0, 1e3) of `cls`'s int fields made ints; None if it has none."""
    fields = _INT_FIELDS[cls]
    counts = {key: int(value) for key, value in obj.items()
              if key in fields and type(value) is float and value.is_integer()}
    return {**obj, **counts} if counts else None


def _convert(obj: dict, cls):
    """`obj` as a `cls`, its counts allowed to be written as integral floats."""
    try:
        return msgspec.convert(obj, cls)
    except msgspec.ValidationError as exc:
        counts = _with_integral_counts(obj, cls) if "got `float`" in str(exc) else None
        if counts is None:
            raise
    return msgspec.convert(counts, cls)


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
    rejected: list[Rejection]           # by index; the first MAX_LISTED_REJECTIONS found
    rejected_by_reason: dict[str, int]  # every rejected item


# A body of a million bad items is answered with this many errors and a count, not a million:
# each listed error costs a string, and its answer 40 times the body.
MAX_LISTED_REJECTIONS = 1000


class _Rejected:
    """A batch's rejected items as they are found: all counted, the first ones listed."""

    __slots__ = ("by_reason", "listed")

    def __init__(self) -> None:
        self.listed: list[Rejection] = []
        self.by_reason: dict[str, int] = {}

    def add(self, index: int, reason: str, error: object) -> None:
        """`error`'s message is made (str()) only for an item that is listed."""
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if len(self.listed) < MAX_LISTED_REJECTIONS:
            self.listed.append(Rejection(index, reason, str(error)))

    def batch(self, events: list) -> Batch:
        self.listed.sort()
        return Batch(events, self.listed, self.by_reason)


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
        return EventError("", "not_an_object", NOT_AN_OBJECT)
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
        record = _convert(obj, LegacyRecord)
    except msgspec.ValidationError as exc:
        raise _event_error(exc) from None
    timestamp = record.timestamp
    if isinstance(timestamp, str):
        # Every time the pattern admits, fromisoformat reads, and within 0..MAX_TIMESTAMP.
        if _ISO_TIME.search(timestamp) is None:
            raise EventError("timestamp", "invalid_value",
                             "not an ISO 8601 time from 1971 to 5137 (YYYY-MM-DD[THH:MM[:SS[.ffffff]]][Z|±HH:MM])")
        timestamp = datetime.fromisoformat(timestamp).timestamp()
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


def _decode_object(obj: dict) -> Event:
    """One event from a dict: a typed event or a legacy record (ids not yet checked)."""
    if is_legacy_record(obj):
        return _from_legacy(obj)
    kind = obj.get("type")
    if kind is None:
        raise EventError("type", "missing_field", "required field is missing")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventError("type", "unknown_type",
                         f"unknown event type {kind!r}; known types: {', '.join(EVENT_TYPES)}")
    # Converting to the one class is ~15x faster than to the tagged union.
    try:
        return _convert(obj, cls)
    except msgspec.ValidationError as exc:
        raise _event_error(exc) from None


NOT_AN_OBJECT = "an event must be a JSON object"


def decode(obj) -> Event:
    """Validate one event given as a dict (or pass an already decoded event through)."""
    if isinstance(obj, _Event):
        return obj
    if not isinstance(obj, dict):
        raise EventError("", "not_an_object", NOT_AN_OBJECT)
    event = _decode_object(obj)
    _check_utf8(event)
    error = _id_error(event)
    if error is not None:
        raise error
    return event


def _decode_items(items: list) -> Batch:
    events, rejected = [], _Rejected()
    for index, item in enumerate(items):
        if not isinstance(item, dict):          # no exception made: a body may hold millions of these
            rejected.add(index, "not_an_object", NOT_AN_OBJECT)
            continue
        try:
            events.append(decode(item))
        except EventError as exc:
            rejected.add(index, exc.reason, exc)
    return rejected.batch(events)


def _without_bad_ids(events: list, indexes: list[int], rejected: _Rejected) -> list:
    """`events` less those with non-hex ids, which join `rejected` at their item `indexes`."""
    if _ids_are_hex(events):
        return events
    kept = []
    for event, index in zip(events, indexes):
        error = _id_error(event)
        if error is None:
            kept.append(event)
        else:
            rejected.add(index, error.reason, error)
    return kept


# What a decoder raises for bytes that are not JSON: msgspec's DecodeError, and two errors
# msgspec before 0.23 lets through from Python: a string that is not UTF-8, and nesting deeper
# than the interpreter's recursion limit.  ValidationError (a DecodeError) is caught before these.
# The webhook and OTLP/JSON decoders use these two names too, so every endpoint says the same.
MALFORMED_JSON = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_BOM = b"\xef\xbb\xbf"


def malformed_json_reason(exc: BaseException, body: bytes | bytearray | memoryview) -> str:
    """What is wrong with `body`, which the decoder refused with `exc`, for the client."""
    if isinstance(exc, RecursionError):
        return "invalid JSON: nested too deeply"
    # msgspec 0.23 says "Invalid UTF-8 encoded string" with no position, and older ones raise
    # Python's error with a position inside the string: the body itself says where, either way.
    if isinstance(exc, UnicodeDecodeError) or "UTF-8" in str(exc):
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError as bad:
            return f"invalid JSON: not UTF-8 at byte {bad.start}"
    return f"invalid JSON: {exc}"


def _decode_ndjson(body: bytes) -> Batch:
    events, rejected, indexes = [], _Rejected(), []
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
            # A legacy record, or an event whose counts may be integral floats: decoded from the dict.
            if is_legacy_record(obj) or (isinstance(obj, dict) and "got `float`" in str(exc)):
                try:
                    events.append(_decode_object(obj))
                    indexes.append(index)
                except EventError as item_exc:
                    rejected.add(index, item_exc.reason, item_exc)
            else:
                error = _event_error(exc)
                rejected.add(index, error.reason, error)
        except MALFORMED_JSON as exc:
            rejected.add(index, "invalid_json", malformed_json_reason(exc, line))
        index += 1
    return rejected.batch(_without_bad_ids(events, indexes, rejected))


NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
JSON_TYPES = frozenset({"application/json"})


@functools.lru_cache(maxsize=64)       # a few content types, on every request
def body_format(content_type: str | None) -> str | None:
    """'json', 'ndjson', or None for a content type we do not take (JSON in a charset other than UTF-8
    among them: RFC 8259 has JSON exchanged in UTF-8, and the body is read as that)."""
    media, _, parameters = (content_type or "").partition(";")
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in _UTF8_CHARSETS:
            return None
    media = media.strip().lower()
    if media in JSON_TYPES:
        return "json"
    if media in NDJSON_TYPES:
        return "ndjson"
    return None


_UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii"})


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
            return Batch(batch, [], {})
    except msgspec.ValidationError:
        pass  # some item is invalid, or this is a single object: decode generically below
    except MALFORMED_JSON as exc:
        raise BodyError(malformed_json_reason(exc, body)) from None
    try:
        document = _any_decoder.decode(body)
    except MALFORMED_JSON as exc:
        raise BodyError(malformed_json_reason(exc, body)) from None
    if isinstance(document, list):
        return _decode_items(document)
    if isinstance(document, dict):
        return _decode_items([document])
    raise BodyError("expected a JSON object, a JSON array of objects, or NDJSON")


def json_schema() -> dict:
    """JSON Schema of schema v1, for orchestrators in other languages (schemas/events.v1.schema.json).

    It admits exactly the events the decoder accepts.  msgspec's OpenAPI `discriminator` is left
    out: it is no JSON Schema keyword, and validators in strict mode (Ajv's default) refuse a
    schema with an unknown keyword.  `type`'s const in each kind selects it all the same."""
    (typed, _), components = msgspec.json.schema_components([Event, LegacyRecord], ref_template="#/$defs/{name}")
    # A legacy record is one without `type` (is_legacy_record): with it, it is a typed event.
    components["LegacyRecord"]["not"] = {"required": ["type"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://agent-exporter.dev/schemas/events.v1.schema.json",
        "title": "agent-exporter event (schema v1)",
        "description": (
            "One orchestrator event; `type` selects the kind, and an object without `type` but with "
            "`agent_name` is a legacy collector record (an agent_execution). Unknown fields are ignored. "
            "Counts are integers, which may be written with a zero fraction (1.0)."),
        "anyOf": [*typed["anyOf"], {"$ref": "#/$defs/LegacyRecord"}],
        "$defs": components,
    }


def json_schema_text() -> str:
    """The published file's text: json_schema() with sorted keys, two-space indents, a final newline."""
    import json
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":      # python -m agent_exporter.events > schemas/events.v1.schema.json
    import sys
    sys.stdout.write(json_schema_text())
