"""OTLP traces in: the GenAI spans that instrumentation libraries already emit become events.

`OTLPReceiver.export()` takes one OTLP export request (from OTLP/HTTP, protobuf
or JSON, or from OTLP/gRPC), maps its GenAI spans onto schema-v1 events and
hands them to `Telemetry.record_batch` in one batch; everything else in the
request is counted as ignored.  docs/otlp.md has the whole mapping as a table.

* ``invoke_agent`` spans (and OpenInference ``AGENT``, OpenLLMetry ``agent``
  spans) become agent executions; ``execute_tool`` spans tool calls;
  ``invoke_workflow`` spans workflow runs.
* Inference spans (``chat``, ``text_completion``, ``generate_content``,
  ``embeddings``; OpenInference ``LLM``/``EMBEDDING``; OpenLLMetry's
  ``llm.request.type``) carry the tokens.  Their usage goes to the execution of
  the nearest enclosing agent span.  When an agent's inference spans report
  usage, the agent span's own usage attributes are not added (they count the
  same tokens again); an agent span whose inference spans report none (a remote
  agent, say) counts its own.  An inference span inside another inference span
  (two instrumentations of one call) is ignored: the outer one counts, unless
  only the inner one reports usage.
* An inference span without an enclosing agent span is an execution of its
  own, of the agent its attributes name (``gen_ai.agent.name``,
  ``agent.name``), else of the resource's ``service.name``.
* Spans end, and so are exported, children first, so an inference span usually
  arrives before its agent span: it waits in a bounded per-trace buffer
  (`_AttributionBuffer`) for at most ``otlp.attribution_wait_seconds``, then
  falls back as above.
* Span times give the durations, the span status and ``error.type`` the
  outcome, and the trace and span ids become the events' ids, hence the
  histogram exemplars that link a bucket to the original trace.

Decoding is the hot path.  The request is parsed (protobuf's upb backend) into
a *view* of the OTLP schema that declares span and resource attributes as
``map<string, bytes>``: the wire format of a map is that of the repeated
``KeyValue`` in the official schema, so the bytes are the same, but a map lets
us read the few keys we know without touching every attribute from Python, and
a value stays its encoded ``AnyValue`` until read (`_value`).  Which of the
known names a span carries (its `_Shape`) is worked out once per distinct set,
names and kinds are decoded once per distinct encoding, and a span's status
and events stay bytes until needed.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from collections import OrderedDict
from typing import NamedTuple
from urllib.parse import urlsplit

import msgspec
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse)

from . import catalog, events, usage
from .config import Config
from .tracing import otlp_headers, otlp_http_endpoint

_log = logging.getLogger(__name__)

# -- the view of the OTLP trace schema -------------------------------------------

_VIEW_PACKAGE = "agent_exporter.otlp_view"
_F = descriptor_pb2.FieldDescriptorProto
# message -> fields (name, number, kind), the numbers those of opentelemetry-proto; a kind is a scalar type,
# "map" (attributes: map<string, bytes>, the values encoded AnyValues), "bytes*" (repeated bytes, read later)
# or a message of the view ("*": repeated).  Fields not declared are skipped by the parser.
_VIEW_SCHEMA = {
    "AnyValue": [("string_value", 1, _F.TYPE_STRING), ("bool_value", 2, _F.TYPE_BOOL),
                 ("int_value", 3, _F.TYPE_INT64), ("double_value", 4, _F.TYPE_DOUBLE)],
    "Status": [("message", 2, _F.TYPE_STRING), ("code", 3, _F.TYPE_ENUM)],
    "Event": [("name", 2, _F.TYPE_STRING), ("attributes", 3, "map")],
    "Span": [("trace_id", 1, _F.TYPE_BYTES), ("span_id", 2, _F.TYPE_BYTES), ("parent_span_id", 4, _F.TYPE_BYTES),
             ("name", 5, _F.TYPE_STRING), ("start_time_unix_nano", 7, _F.TYPE_FIXED64),
             ("end_time_unix_nano", 8, _F.TYPE_FIXED64), ("attributes", 9, "map"),
             ("events", 11, "bytes*"), ("status", 15, _F.TYPE_BYTES)],
    "Resource": [("attributes", 1, "map")],
    "InstrumentationScope": [("name", 1, _F.TYPE_STRING)],
    "ScopeSpans": [("scope", 1, "InstrumentationScope"), ("spans", 2, "Span*")],
    "ResourceSpans": [("resource", 1, "Resource"), ("scope_spans", 2, "ScopeSpans*")],
    "Request": [("resource_spans", 1, "ResourceSpans*")],
}


def _view_classes():
    """Message classes of the view, built in a private descriptor pool."""
    file = descriptor_pb2.FileDescriptorProto(name="agent_exporter/otlp_view.proto", package=_VIEW_PACKAGE,
                                              syntax="proto3")
    status_code = file.enum_type.add(name="StatusCode")
    for name, number in (("UNSET", 0), ("OK", 1), ("ERROR", 2)):
        status_code.value.add(name=name, number=number)
    for message_name, fields in _VIEW_SCHEMA.items():
        message = file.message_type.add(name=message_name)
        if message_name == "AnyValue":
            message.oneof_decl.add(name="value")
        for name, number, kind in fields:
            field = message.field.add(name=name, number=number, label=_F.LABEL_OPTIONAL)
            if kind == "map":
                entry = message.nested_type.add(name="AttributesEntry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
                entry.field.add(name="value", number=2, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
                field.type, field.label = _F.TYPE_MESSAGE, _F.LABEL_REPEATED
                field.type_name = f".{_VIEW_PACKAGE}.{message_name}.AttributesEntry"
            elif kind == "bytes*":      # span events: read only for failed spans (_error_type)
                field.type, field.label = _F.TYPE_BYTES, _F.LABEL_REPEATED
            elif isinstance(kind, str):
                field.type = _F.TYPE_MESSAGE
                if kind.endswith("*"):
                    field.label, kind = _F.LABEL_REPEATED, kind[:-1]
                field.type_name = f".{_VIEW_PACKAGE}.{kind}"
            else:
                field.type = kind
                if kind == _F.TYPE_ENUM:
                    field.type_name = f".{_VIEW_PACKAGE}.StatusCode"
                if message_name == "AnyValue":
                    field.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_VIEW_PACKAGE}.{name}"))
                 for name in ("Request", "Event", "AnyValue", "Status"))


# Span status and events stay bytes in the view: most spans have no status and no events,
# and those that do are read only as far as needed (_failed, _error_type).
_Request, _Event, _AnyValue, _Status = _view_classes()
_STATUS_ERROR = 2
_ZERO_TRACE_ID, _ZERO_SPAN_ID = bytes(16), bytes(8)


# -- attribute names, each read from the instrumentation families' sources --------
#
# Within a tuple the first present name wins: the current GenAI semantic
# conventions (v1.41.0) first, then the older or vendor names still emitted.

OPERATION = "gen_ai.operation.name"
OPENINFERENCE_KIND = "openinference.span.kind"     # OpenInference
TRACELOOP_KIND = "traceloop.span.kind"             # OpenLLMetry (traceloop-sdk decorators)
LLM_REQUEST_TYPE = "llm.request.type"              # OpenLLMetry before gen_ai.operation.name
TRACELOOP_ENTITY = "traceloop.entity.name"
AGENT_NAMES = ("gen_ai.agent.name", "agent.name", "gen_ai.agent.id")   # an id names an agent sent unnamed
TOOL_NAMES = ("gen_ai.tool.name", "tool.name")
WORKFLOW_NAMES = ("gen_ai.workflow.name", "traceloop.workflow.name")
MODELS = ("gen_ai.request.model", "llm.request.model_name", "llm.model_name", "embedding.model_name",
          "gen_ai.response.model", "llm.response.model_name")
# Token counts: every family counts input with the cache and output with the
# reasoning, as the conventions do; usage.from_semconv makes them disjoint.
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
CACHE_READ_TOKENS = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
                     "llm.token_count.prompt_details.cache_read")
CACHE_WRITE_TOKENS = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_write.input_tokens",
                      "gen_ai.usage.cache_creation_input_tokens", "llm.token_count.prompt_details.cache_write")
REASONING_TOKENS = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
                    "llm.usage.reasoning_tokens", "llm.token_count.completion_details.reasoning",
                    "gen_ai.usage.completion_tokens_details.reasoning_tokens")
TOTAL_TOKENS = ("gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total")
# OpenLIT passes Anthropic's and Bedrock's input count on as the provider reports it, without the
# cache reads and writes (its prompt_tokens_include_cache=False); its spans are known by the scope
# of OpenLIT's tracer, the provider by the conventions' attribute or the older one.
OPENLIT_SCOPE = "openlit.otel.tracing"
PROVIDER_NAMES = ("gen_ai.provider.name", "gen_ai.system")
OPENLIT_INPUT_WITHOUT_CACHE = frozenset(("anthropic", "aws.bedrock"))
TIME_TO_FIRST_TOKEN = ("gen_ai.response.time_to_first_chunk", "gen_ai.server.time_to_first_token")
ERROR_TYPE = "error.type"
EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"
SERVICE_NAME = "service.name"
UNKNOWN_SERVICE = "unknown_service"                # the SDKs' default service.name

AGENT, TOOL, WORKFLOW, INFERENCE = "agent", "tool", "workflow", "inference"
_OPERATIONS = {"invoke_agent": AGENT, "execute_tool": TOOL, "invoke_workflow": WORKFLOW, "chat": INFERENCE,
               "text_completion": INFERENCE, "generate_content": INFERENCE, "embeddings": INFERENCE}
_OPENINFERENCE_KINDS = {"AGENT": AGENT, "TOOL": TOOL, "LLM": INFERENCE, "EMBEDDING": INFERENCE}
_TRACELOOP_KINDS = {"agent": AGENT, "tool": TOOL, "workflow": WORKFLOW}
_LLM_REQUEST_TYPES = {"chat": INFERENCE, "completion": INFERENCE, "embedding": INFERENCE}
_KINDS = ((OPERATION, _OPERATIONS), (OPENINFERENCE_KIND, _OPENINFERENCE_KINDS),
          (TRACELOOP_KIND, _TRACELOOP_KINDS), (LLM_REQUEST_TYPE, _LLM_REQUEST_TYPES))
# Span name prefixes the conventions give, stripped when a name comes from the span name.
_NAME_PREFIXES = {AGENT: "invoke_agent ", TOOL: "execute_tool ", WORKFLOW: "invoke_workflow "}
_TRACELOOP_SUFFIXES = {AGENT: ".agent", TOOL: ".tool", WORKFLOW: ".workflow"}

_COUNTS = (INPUT_TOKENS, OUTPUT_TOKENS, CACHE_READ_TOKENS, CACHE_WRITE_TOKENS, REASONING_TOKENS, TOTAL_TOKENS)
_COUNT_NAMES = frozenset(name for names in _COUNTS for name in names)
_DISCRIMINATORS = frozenset(name for name, _ in _KINDS)
# Every name we read: one set intersection per span finds the ones present.
_KNOWN = frozenset((*_DISCRIMINATORS, TRACELOOP_ENTITY, *AGENT_NAMES, *TOOL_NAMES, *WORKFLOW_NAMES, *MODELS,
                    *(name for names in _COUNTS for name in names), *TIME_TO_FIRST_TOKEN, ERROR_TYPE))

MAX_ANCESTORS = 64          # a parent chain longer than this is treated as ending at a root


class SpanError(ValueError):
    """A GenAI span whose values cannot be mapped (it is rejected, the rest of the request is not)."""


def _name(value: str) -> str:
    return value[: events.MAX_NAME_LENGTH]


def _value(raw: bytes):
    """The value of an encoded AnyValue: str, int, float, bool, or None for another kind.

    Most attribute values are short strings and small integers; those two encodings
    (field 1 with a one-byte length, field 3 as a varint of up to three bytes) are read
    here directly, which is four times cheaper than a message object per value.  Every
    other encoding goes through upb.
    """
    n = len(raw)
    if n > 2 and raw[0] == 0x0A and raw[1] == n - 2:
        try:
            return raw[2:].decode()
        except UnicodeDecodeError:
            raise SpanError("an attribute value is not valid UTF-8") from None
    if raw and raw[0] == 0x18 and raw[-1] < 0x80:
        if n == 2:
            return raw[1]
        if n == 3 and raw[1] & 0x80:
            return raw[1] & 0x7F | raw[2] << 7
        if n == 4 and raw[1] & 0x80 and raw[2] & 0x80:
            return raw[1] & 0x7F | (raw[2] & 0x7F) << 7 | raw[3] << 14
    try:
        value = _AnyValue.FromString(raw)
    except DecodeError:
        raise SpanError("an attribute value is not an OTLP AnyValue") from None
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


_TEXTS: dict[bytes, str] = {}
MAX_TEXTS = 4096
# The longest encoding cached: a name of MAX_NAME_LENGTH characters of up to 4 UTF-8 bytes each,
# with its AnyValue tag and length.  A longer value is decoded each time: cached under its whole
# encoding, a few hundred spans of megabyte values held gigabytes (4096 of them).
MAX_CACHED_TEXT_BYTES = 4 * events.MAX_NAME_LENGTH + 3


def _text(raw: bytes) -> str:
    """An attribute's string ("" for another kind), cut to the schema's name length.

    Names, models and kinds repeat from span to span: each encoding is decoded once
    (a bounded cache of short encodings, emptied when full), and equal names share one str object.
    """
    text = _TEXTS.get(raw)
    if text is None:
        value = _value(raw)
        text = value[: events.MAX_NAME_LENGTH] if type(value) is str else ""
        if len(raw) <= MAX_CACHED_TEXT_BYTES:
            if len(_TEXTS) >= MAX_TEXTS:
                _TEXTS.clear()
            _TEXTS[raw] = text
    return text


def _string(attributes, names) -> str | None:
    """The first non-empty string among `names` (present ones, in precedence order)."""
    for name in names:
        value = _text(attributes[name])
        if value:
            return value
    return None


def _count(name: str, raw: bytes) -> int:
    """A token count; one that is not a whole number in range is an error."""
    if len(raw) == 3 and raw[0] == 0x18 and raw[1] & 0x80 and raw[2] < 0x80:    # 128 to 16383, the usual size
        return raw[1] & 0x7F | raw[2] << 7
    count = _value(raw)
    if type(count) is not int:
        if type(count) is not float or not count.is_integer():
            raise SpanError(f"{name}: expected a whole number of tokens")
        count = int(count)
    if not 0 <= count <= events.MAX_TOKENS:
        raise SpanError(f"{name}: expected a token count between 0 and {events.MAX_TOKENS}, got {count}")
    return count


def _seconds(attributes, names) -> float | None:
    """The first positive duration in seconds among `names` (OpenLIT writes 0 when it did not stream)."""
    for name in names:
        seconds = _value(attributes[name])
        if type(seconds) not in (int, float) or not 0 <= seconds <= events.MAX_SECONDS:
            raise SpanError(f"{name}: expected seconds between 0 and {events.MAX_SECONDS:g}")
        if seconds > 0:
            return float(seconds)
    return None


def _kind(attributes, shape: "_Shape") -> str | None:
    for name, kinds in shape.kinds:
        kind = kinds.get(_text(attributes[name]))
        if kind is not None:
            return kind
    return None


def _failed(span) -> bool:
    """Whether the span's status is ERROR."""
    status = span.status
    if not status:      # unset, as on most spans
        return False
    try:
        return _Status.FromString(status).code == _STATUS_ERROR
    except DecodeError:
        raise SpanError("status: not an OTLP span status") from None


def _error_type(span, attributes, shape: "_Shape") -> str | None:
    """error.type, else the type of the span's first recorded exception (OpenInference records those)."""
    if shape.error_type:
        value = _text(attributes[ERROR_TYPE])
        if value:
            return _name(value)
    for raw in span.events:
        try:
            event = _Event.FromString(raw)
        except DecodeError:
            raise SpanError("events: not OTLP span events") from None
        if event.name == EXCEPTION_EVENT and EXCEPTION_TYPE in event.attributes:
            value = _text(event.attributes[EXCEPTION_TYPE])
            if value:
                return _name(value)
    return None


def _service_name(resource) -> str:
    """The resource's service.name (a broken one is as good as none)."""
    try:
        service = _text(resource[SERVICE_NAME]) if SERVICE_NAME in resource else ""
    except SpanError:
        service = ""
    return _name(service) if service else UNKNOWN_SERVICE


def _own_name(span, attributes, shape: "_Shape", kind: str) -> str | None:
    """The agent, tool or workflow a span names: its attributes, else its span name."""
    value = _string(attributes, shape.agent_names if kind is AGENT else shape.tool_names if kind is TOOL
                    else shape.workflow_names)
    if value:
        return value
    traceloop = shape.traceloop_kind and _TRACELOOP_KINDS.get(_text(attributes[TRACELOOP_KIND])) == kind
    if traceloop and shape.traceloop_entity:
        entity = _text(attributes[TRACELOOP_ENTITY])
        if entity:
            return _name(entity)
    name = span.name.removeprefix(_NAME_PREFIXES[kind])
    if traceloop:
        name = name.removesuffix(_TRACELOOP_SUFFIXES[kind])
    return _name(name) if name and name != _NAME_PREFIXES[kind].strip() else None


class _Shape:
    """Which attribute each field of a span is read from, for spans carrying one set of known attributes.

    An instrumentation writes the same attributes on every span of a kind, so a
    stream has few shapes; each is worked out once (`_shape`) instead of per span.
    """

    __slots__ = ("kinds", "agent_names", "tool_names", "workflow_names", "models", "ttft", "error_type",
                 "traceloop_kind", "traceloop_entity", "counts", "plain_counts")

    def __init__(self, present: frozenset):
        def among(names):
            return tuple(name for name in names if name in present)

        self.kinds = tuple((name, kinds) for name, kinds in _KINDS if name in present)
        self.agent_names, self.tool_names = among(AGENT_NAMES), among(TOOL_NAMES)
        self.workflow_names, self.models, self.ttft = among(WORKFLOW_NAMES), among(MODELS), among(TIME_TO_FIRST_TOKEN)
        self.error_type = ERROR_TYPE in present
        self.traceloop_kind, self.traceloop_entity = TRACELOOP_KIND in present, TRACELOOP_ENTITY in present
        # Per token count, the name to read (or None); the conventions' input and output alone need no arithmetic.
        self.counts = tuple(next(iter(among(names)), None) for names in _COUNTS)
        self.plain_counts = present & _COUNT_NAMES <= _INPUT_OUTPUT


_SHAPES: dict[frozenset, _Shape] = {}
MAX_SHAPES = 1024           # a stream of ever-new attribute sets cannot grow memory


def _shape(present: frozenset) -> _Shape:
    """A new shape, remembered (callers look in _SHAPES first)."""
    if len(_SHAPES) >= MAX_SHAPES:
        _SHAPES.clear()
    shape = _SHAPES[present] = _Shape(present)
    return shape


# Disjoint token counts of a span: (input, output, cache_read, cache_write, reasoning, unsplit total),
# in the order of events.AgentExecution's fields; None where the span says nothing.
_NO_TOKENS = (None,) * 6
_INPUT, _OUTPUT = INPUT_TOKENS[0], OUTPUT_TOKENS[0]
_INPUT_OUTPUT = frozenset((_INPUT, _OUTPUT))


def _cache_in_input(attributes) -> bool:
    """Whether an OpenLIT span's input count includes the cache, as the conventions' does."""
    for name in PROVIDER_NAMES:
        if name in attributes:
            return _text(attributes[name]) not in OPENLIT_INPUT_WITHOUT_CACHE
    return True


def _tokens(attributes, shape: _Shape, openlit: bool) -> tuple:
    input_name, output_name, cache_read_name, cache_write_name, reasoning_name, total_name = shape.counts
    if shape.plain_counts:          # the conventions' input and output alone are disjoint already
        if input_name is None and output_name is None:
            return _NO_TOKENS
        return (None if input_name is None else _count(input_name, attributes[input_name]),
                None if output_name is None else _count(output_name, attributes[output_name]),
                None, None, None, None)
    input_tokens, output_tokens, cache_read, cache_write, reasoning, total = (
        None if name is None else _count(name, attributes[name]) for name in shape.counts)
    if openlit and input_tokens is not None and not _cache_in_input(attributes):
        input_tokens += (cache_read or 0) + (cache_write or 0)
    split = usage.from_semconv(input_tokens, output_tokens, cache_read=cache_read, cache_creation=cache_write,
                               reasoning=reasoning)
    # A total counts only when nothing says how it splits (it becomes type="unsplit").
    return (split.get("input_tokens"), split.get("output_tokens"), split.get("cache_read_tokens"),
            split.get("cache_write_tokens"), split.get("reasoning_tokens"), None if split else total)


def _add(a: tuple, b: tuple) -> tuple:
    return tuple(x if y is None else y if x is None else x + y for x, y in zip(a, b))


def _ids_and_times(span) -> tuple[bytes, bytes, int, int]:
    trace_id, span_id, start, end = span.trace_id, span.span_id, span.start_time_unix_nano, span.end_time_unix_nano
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID or len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
        raise SpanError("a span needs a 16-byte trace_id and an 8-byte span_id, not all zero")
    if not 0 < start <= end:
        raise SpanError("a span needs start_time_unix_nano > 0 and end_time_unix_nano >= start_time_unix_nano")
    # (An end past events.MAX_TIMESTAMP cannot be: a fixed64 of nanoseconds ends in the year 2554.)
    if end - start > events.MAX_SECONDS * 1e9:
        raise SpanError("span times out of range")
    return trace_id, span_id, start, end


def _agent_execution(span, attributes, shape, trace_id, span_id, start, end, service,
                     openlit: bool) -> events.AgentExecution:
    """The execution of an agent span, with its own usage (calls attributed to it replace that: _merged)."""
    error = _failed(span)
    tokens = _tokens(attributes, shape, openlit)
    # Positional, in the order of events.EXECUTION_FIELDS: the hot path of OTLP in.
    return events.AgentExecution(
        _own_name(span, attributes, shape, AGENT) or service, "error" if error else "success",
        (end - start) / 1e9, _string(attributes, shape.models), *tokens, None,
        _seconds(attributes, shape.ttft) if shape.ttft else None,
        _error_type(span, attributes, shape) if error else None, None, None, None,
        trace_id.hex(), span_id.hex(), end / 1e9)


class _Call:
    """One inference span: an LLM call whose usage goes to its enclosing agent's execution."""

    __slots__ = ("trace_id", "span_id", "parent", "start", "end", "error_type", "error", "model", "tokens", "ttft",
                 "fallback_agent", "superseded")

    def __init__(self, span, attributes, shape, trace_id, span_id, start, end, service, openlit: bool):
        self.trace_id, self.span_id, self.parent, self.start, self.end = (
            trace_id, span_id, span.parent_span_id, start, end)
        self.error = _failed(span)
        self.error_type = _error_type(span, attributes, shape) if self.error else None
        self.model = _string(attributes, shape.models)
        self.tokens = _tokens(attributes, shape, openlit)
        self.ttft = _seconds(attributes, shape.ttft)
        self.fallback_agent = _string(attributes, shape.agent_names) or service
        self.superseded = False     # by an inference span inside it that reports the usage it lacks

    def execution(self) -> events.AgentExecution:
        """The call as an execution of its own (no enclosing agent span)."""
        # Positional, in the order of events.EXECUTION_FIELDS.
        return events.AgentExecution(
            self.fallback_agent, "error" if self.error else "success", (self.end - self.start) / 1e9, self.model,
            *self.tokens, None, self.ttft, self.error_type, None, None, None,
            self.trace_id.hex(), self.span_id.hex(), self.end / 1e9)


def _merged(execution: events.AgentExecution, calls: list[_Call], prices) -> events.AgentExecution:
    """An agent's execution with the usage of the calls attributed to it, which replaces its own."""
    calls = [call for call in calls if call.tokens is not _NO_TOKENS]
    if not calls:
        return execution
    tokens, models = calls[0].tokens, {calls[0].model}
    for call in calls[1:]:
        tokens = _add(tokens, call.tokens)
        models.add(call.model)
    if tokens[5] is not None and any(count is not None for count in tokens[:5]):
        # Some calls say how their tokens split and some give a total only: together they are a
        # total (type="unsplit"), every token counted once, and their cost unknown, not the split part's.
        tokens = (None, None, None, None, None, sum(count for count in tokens if count is not None))
    ttft = execution.time_to_first_token_seconds
    if ttft is None:
        first = min((call for call in calls if call.ttft is not None), key=lambda call: call.start, default=None)
        ttft = None if first is None else first.ttft
    model, cost = calls[0].model, None      # priced once, by Telemetry.record_batch
    if len(models) > 1:
        # One execution has one model label, so it is "unknown"; the cost is the sum of each call's,
        # known only when every call's model has a price.
        model, cost = None, 0.0
        for call in calls:
            t = call.tokens
            part = None if t[5] is not None else prices.cost(
                call.model, input_tokens=t[0], output_tokens=t[1], cache_read_tokens=t[2],
                cache_write_tokens=t[3], reasoning_tokens=t[4])
            if part is None:
                cost = None
                break
            cost += part
    return msgspec.structs.replace(
        execution, model=model, input_tokens=tokens[0], output_tokens=tokens[1], cache_read_tokens=tokens[2],
        cache_write_tokens=tokens[3], reasoning_tokens=tokens[4], total_tokens=tokens[5], cost_usd=cost,
        time_to_first_token_seconds=ttft)


# -- attribution -------------------------------------------------------------------

class _Pending:
    """A trace's inference spans still waiting for their enclosing agent, and the parent links seen."""

    __slots__ = ("calls", "links", "deadline")

    def __init__(self):
        self.calls: list[_Call] = []
        self.links: dict[bytes, bytes] = {}
        self.deadline = 0.0

    def size(self) -> int:
        return len(self.calls) + len(self.links)


class _AttributionBuffer:
    """Bounded: at most `max_spans` calls and links over all traces, each trace until `wait` seconds
    have passed without a span of it arriving.

    An agent's span arrives when the agent ends, which may be minutes after its first call: as
    long as the trace goes on sending spans, its calls wait for it.  Traces stay in the order a
    span of theirs last arrived, which is their deadline order; the oldest go first, on expiry or
    when the bound is reached, and their calls fall back to executions of their own.  Callers hold
    the receiver's lock.
    """

    def __init__(self, wait: float, max_spans: int):
        self.wait = wait
        self.max_spans = max_spans
        self.size = 0
        self._traces: OrderedDict[bytes, _Pending] = OrderedDict()

    def get(self, trace_id: bytes) -> _Pending | None:
        return self._traces.get(trace_id)

    def update(self, trace_id: bytes, pending: _Pending, old_size: int, now: float) -> list[_Call]:
        """Account for `pending` after its calls were re-checked; returns the calls evicted to stay in bounds."""
        if pending.calls:
            pending.deadline = now + self.wait
            self._traces[trace_id] = pending
            self._traces.move_to_end(trace_id)
            self.size += pending.size() - old_size
        elif self._traces.pop(trace_id, None) is not None:
            self.size -= old_size
        evicted = []
        while self.size > self.max_spans:
            _, oldest = self._traces.popitem(last=False)
            self.size -= oldest.size()
            evicted.extend(oldest.calls)
        return evicted

    def expired(self, now: float) -> list[_Call]:
        calls = []
        while self._traces:
            trace_id, oldest = next(iter(self._traces.items()))
            if oldest.deadline > now:
                break
            del self._traces[trace_id]
            self.size -= oldest.size()
            calls.extend(oldest.calls)
        return calls

    def drain(self) -> list[_Call]:
        calls = [call for pending in self._traces.values() for call in pending.calls]
        self._traces.clear()
        self.size = 0
        return calls

    def __len__(self) -> int:
        return len(self._traces)


_ROOT, _UNKNOWN, _NESTED = object(), object(), object()


def _links(view) -> dict[bytes, dict[bytes, bytes]]:
    """Every span's parent, by trace: read only when a request has calls to attribute."""
    links_by_trace: dict[bytes, dict[bytes, bytes]] = {}
    for resource_spans in view.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                trace_id = span.trace_id
                links = links_by_trace.get(trace_id)
                if links is None:
                    links = links_by_trace[trace_id] = {}
                links[span.span_id] = span.parent_span_id
    return links_by_trace


def _enclosing(call: _Call, links: dict, agents: dict, calls: dict):
    """The batch index of the nearest agent span above `call`; _NESTED inside another inference span;
    _ROOT when there is none; _UNKNOWN when an ancestor has not arrived yet.

    Of two nested inference spans (two instrumentations of one call) the outer one counts, unless only
    the inner one reports usage (a framework's span around the client library's): then the inner one
    counts in its place, and the outer one is marked superseded.  `calls` are this request's, and the
    outer span arrives in the same request as the inner one or after it (children end first), so the
    pair is decided when the outer one arrives."""
    trace_id = call.trace_id
    span_id = call.parent
    for _ in range(MAX_ANCESTORS):
        if not span_id:
            return _ROOT
        agent = agents.get(span_id)
        if agent is not None and agent[1] == trace_id:
            return agent[0]
        outer = calls.get(span_id)
        if outer is not None and outer.trace_id == trace_id:
            if outer.tokens is not _NO_TOKENS or call.tokens is _NO_TOKENS:
                return _NESTED
            outer.superseded = True
        span_id = links.get(span_id)
        if span_id is None:
            return _UNKNOWN
    return _ROOT


class Mapped(NamedTuple):
    """What one export request came to: span counts by outcome and why spans were rejected."""
    mapped: int
    ignored: int
    rejected: int
    errors: list[str]


class OTLPDecodeError(ValueError):
    """A request body that is not an OTLP export request (HTTP 400, gRPC INVALID_ARGUMENT)."""


MAX_ERROR_MESSAGES = 5      # distinct reasons quoted in a partial-success answer


class OTLPReceiver:
    """OTLP traces in, for the HTTP service and the gRPC receiver alike.

    `telemetry` records the events (Telemetry.record_batch: priced once, then
    the store); `config` is the whole Config (its `otlp` section, and
    `tracing` for where forwarded spans go).  Thread-safe; `close()` flushes
    the spans still waiting for their agent and the forwarding queue.
    """

    def __init__(self, telemetry, config: Config | None = None):
        self.config = config = config or telemetry.config
        self._telemetry = telemetry
        for outcome in catalog.OTLP_SPAN_OUTCOMES:
            telemetry.store.count_otlp_spans(outcome, 0)
        self._lock = threading.Lock()
        self._buffer = _AttributionBuffer(config.otlp.attribution_wait_seconds, config.otlp.max_buffered_spans)
        self.forwarder = (_Forwarder(config.tracing, config.otlp.forward_queue_size, telemetry.store)
                          if config.otlp.forward_spans else None)
        self._grpc_servers = []
        self._closed = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="otlp-attribution", daemon=True)
        self._sweeper.start()

    # -- the OTLP answers --------------------------------------------------

    def export(self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
        """Map one export request; the answer reports rejected spans as a partial success."""
        return self.export_serialized(request.SerializeToString())

    def export_serialized(self, data: bytes) -> ExportTraceServiceResponse:
        """`export` for a serialized request (OTLP/HTTP protobuf and gRPC bodies, as received)."""
        view = _Request()
        try:
            view.ParseFromString(data)
        except DecodeError as exc:
            raise OTLPDecodeError(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
        result, spans = self._map(view)
        if self.forwarder is not None and spans:
            self.forwarder.submit(data, spans)
        response = ExportTraceServiceResponse()
        if result.rejected:
            response.partial_success.CopyFrom(ExportTracePartialSuccess(
                rejected_spans=result.rejected, error_message="; ".join(result.errors)))
        return response

    def handle_http(self, body: bytes, content_type: str) -> tuple[int, str, bytes]:
        """An OTLP/HTTP request body (already gunzipped and size-limited): (status, content type, body)."""
        media = (content_type or "").split(";", 1)[0].strip().lower()
        # JSON in another charset is refused as /v1/events refuses it: it is read as UTF-8 (RFC 8259).
        if media not in (PROTOBUF, JSON) or (media == JSON and events.body_format(content_type) is None):
            return 415, PROTOBUF, status_pb2.Status(
                code=_INVALID_ARGUMENT,
                message=f"unsupported content type {content_type!r}; OTLP/HTTP takes {PROTOBUF} or {JSON} "
                        "(in UTF-8)",
            ).SerializeToString()
        try:
            response = self.export_serialized(body if media == PROTOBUF else _json_request(body))
        except OTLPDecodeError as exc:
            return 400, media, _encode(status_pb2.Status(code=_INVALID_ARGUMENT, message=str(exc)), media)
        return 200, media, _encode(response, media)

    @staticmethod
    def error_body(status: int, message: str, content_type: str | None) -> tuple[str, bytes]:
        """The body of an HTTP refusal of an export request (auth, size, encoding), as OTLP/HTTP answers
        every 4xx and 5xx: a google.rpc.Status, in the request's encoding (protobuf unless it sent JSON)."""
        media = JSON if (content_type or "").split(";", 1)[0].strip().lower() == JSON else PROTOBUF
        status_message = status_pb2.Status(code=_STATUS_CODES.get(status, _INVALID_ARGUMENT), message=message)
        return media, _encode(status_message, media)

    def start_grpc(self, address: str | None = None, *, bearer_token=None, basic_auth=None,
                   rate_limiter=None, draining=None, web_config=None):
        """The OTLP/gRPC TraceService on `address` (default otlp.grpc_listen_address); a handle with
        .port and .stop().  With `bearer_token` (a string, or the HTTP service's credentials.TokenFile,
        read again when it changes), calls may send `authorization: Bearer <token>`, with
        `basic_auth` (the web config's webconfig.BasicAuth) `Basic <user:password>`; with either, they must.
        With `rate_limiter` (the HTTP service's webconfig.RateLimiter) calls beyond it are RESOURCE_EXHAUSTED,
        counted against the same bucket as HTTP requests; while `draining()` is true, new calls are
        UNAVAILABLE.  `web_config` (a webconfig.WatchedWebConfig, re-read as it changes) adds its users to
        what `basic_auth` checks and, when it sets tls_server_config, makes it serve TLS only; a setting
        grpcio cannot enforce is a webconfig.WebConfigError naming the key."""
        from .otlp_grpc import start_grpc_receiver
        address = self.config.otlp.grpc_listen_address if address is None else address
        if not address:
            raise ValueError("otlp.grpc_listen_address: no address to listen on")
        handle = start_grpc_receiver(self, address, store=self._telemetry.store, invalid=OTLPDecodeError,
                                     max_message_bytes=self.config.server.max_body_bytes, bearer_token=bearer_token,
                                     basic_auth=basic_auth, rate_limiter=rate_limiter,
                                     draining=draining, web_config=web_config)
        self._grpc_servers.append(handle)
        return handle

    def close(self) -> None:
        """Stop the gRPC receivers this receiver started, record every span still waiting, flush forwarding."""
        if self._closed.is_set():
            return
        self._closed.set()
        for handle in self._grpc_servers:
            handle.stop()
        self._sweeper.join()
        with self._lock:
            calls = self._buffer.drain()
        self._record([call.execution() for call in calls], mapped=len(calls))
        if self.forwarder is not None:
            self.forwarder.close()

    @property
    def waiting_spans(self) -> int:
        """Inference spans and parent links held for attribution (bounded by otlp.max_buffered_spans)."""
        return self._buffer.size

    # -- mapping -----------------------------------------------------------

    def _map(self, view) -> tuple[Mapped, int]:
        """Events of one request, recorded; returns the outcome and the number of spans in it."""
        batch = []
        agents: dict[bytes, tuple[int, bytes]] = {}     # span id -> (index in batch, trace id)
        calls: dict[bytes, _Call] = {}
        spans = ignored = rejected = 0
        errors: list[str] = []
        for resource_spans in view.resource_spans:
            resource = resource_spans.resource.attributes
            service = _service_name(resource)
            for scope_spans in resource_spans.scope_spans:
                openlit = scope_spans.scope.name == OPENLIT_SCOPE
                for span in scope_spans.spans:
                    spans += 1
                    attributes = span.attributes
                    present = _KNOWN.intersection(attributes)
                    if not present:
                        ignored += 1
                        continue
                    shape = _SHAPES.get(present) or _shape(present)
                    try:
                        kind = _kind(attributes, shape)
                        if kind is None:
                            ignored += 1
                            continue
                        trace_id, span_id, start, end = _ids_and_times(span)
                        if kind is AGENT:
                            batch.append(_agent_execution(span, attributes, shape, trace_id, span_id, start, end,
                                                          service, openlit))
                            agents[span_id] = (len(batch) - 1, trace_id)
                        elif kind is INFERENCE:
                            calls[span_id] = _Call(span, attributes, shape, trace_id, span_id, start, end, service,
                                                   openlit)
                        else:
                            batch.append(_finished(span, attributes, shape, kind, trace_id, span_id, start, end,
                                                   service))
                    except SpanError as exc:
                        rejected += 1
                        if len(errors) < MAX_ERROR_MESSAGES and str(exc) not in errors:
                            errors.append(str(exc))
        mapped = len(batch)
        if calls or len(self._buffer):
            fallen_back, attributed, nested = self._attribute(_links(view), agents, calls)
            prices = self._telemetry.prices
            for index, agent_calls in attributed.items():
                batch[index] = _merged(batch[index], agent_calls, prices)
                mapped += len(agent_calls)
            batch.extend(call.execution() for call in fallen_back)
            mapped += len(fallen_back)
            ignored += nested
        self._record(batch, mapped=mapped, ignored=ignored, rejected=rejected)
        return Mapped(mapped, ignored, rejected, errors), spans

    def _attribute(self, links_by_trace, agents, calls) -> tuple[list[_Call], dict[int, list[_Call]], int]:
        """Give each call of this request, and each call waiting from earlier ones in the same traces,
        to its enclosing agent; returns (calls that fall back, calls by agent batch index, nested calls)."""
        fallen_back: list[_Call] = []
        attributed: dict[int, list[_Call]] = {}
        nested = 0
        now = time.monotonic()
        with self._lock:
            buffer = self._buffer
            waiting: dict[bytes, tuple[_Pending, int]] = {}
            candidates = list(calls.values())
            for trace_id, links in links_by_trace.items():
                pending = buffer.get(trace_id)
                if pending is not None:
                    waiting[trace_id] = (pending, pending.size())
                    pending.links.update(links)
                    links_by_trace[trace_id] = pending.links
                    candidates.extend(pending.calls)
                    pending.calls = []
            # Every call's place first, then what becomes of it: a call may mark the one around it superseded.
            placed = [(call, _enclosing(call, links_by_trace[call.trace_id], agents, calls)) for call in candidates]
            for call, found in placed:
                trace_id = call.trace_id
                if call.superseded:
                    found = _NESTED
                if found is _UNKNOWN:
                    entry = waiting.get(trace_id)
                    if entry is None:
                        pending = _Pending()
                        pending.links = links_by_trace[trace_id]
                        entry = waiting[trace_id] = (pending, 0)
                    entry[0].calls.append(call)
                elif found is _ROOT:
                    fallen_back.append(call)
                elif found is _NESTED:
                    nested += 1
                else:
                    attributed.setdefault(found, []).append(call)
            for trace_id, (pending, old_size) in waiting.items():
                fallen_back.extend(buffer.update(trace_id, pending, old_size, now))
        return fallen_back, attributed, nested

    def _sweep(self) -> None:
        """Calls whose trace waited its full time fall back to executions of their own."""
        interval = min(1.0, self._buffer.wait / 4)
        while not self._closed.wait(interval):
            with self._lock:
                calls = self._buffer.expired(time.monotonic())
            if calls:
                self._record([call.execution() for call in calls], mapped=len(calls))

    def _record(self, batch: list, *, mapped: int = 0, ignored: int = 0, rejected: int = 0) -> None:
        telemetry = self._telemetry
        if batch:
            telemetry.record_batch(batch, spans=False)     # they are spans already
        store = telemetry.store
        for outcome, count in (("mapped", mapped), ("ignored", ignored), ("rejected", rejected)):
            if count:
                store.count_otlp_spans(outcome, count)


def _finished(span, attributes, shape, kind: str, trace_id, span_id, start, end, service: str):
    """The event of a tool or workflow span."""
    error = _failed(span)
    status = "error" if error else "success"
    name = _own_name(span, attributes, shape, kind)
    if kind is TOOL:
        if name is None:
            raise SpanError("an execute_tool span needs gen_ai.tool.name")
        return events.ToolCall(tool=name, status=status, duration_seconds=(end - start) / 1e9,
                               agent=_string(attributes, shape.agent_names),
                               error_type=_error_type(span, attributes, shape) if error else None,
                               trace_id=trace_id.hex(), span_id=span_id.hex(), timestamp=end / 1e9)
    return events.WorkflowRun(workflow=name or service, status=status, duration_seconds=(end - start) / 1e9,
                              trace_id=trace_id.hex(), span_id=span_id.hex(), timestamp=end / 1e9)


# -- OTLP/HTTP encodings -------------------------------------------------------------

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_INVALID_ARGUMENT = 3       # google.rpc.Code
# OTLP/JSON writes these bytes fields as hex, where protobuf's JSON mapping expects base64.
_HEX_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _items(parent, *keys) -> list:
    for key in keys:
        value = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(value, list):
            return value
    return []


def _base64_ids(item) -> None:
    if not isinstance(item, dict):
        return
    for key in _HEX_ID_FIELDS:
        value = item.get(key)
        if isinstance(value, str):
            try:
                item[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise OTLPDecodeError(f"{key}: expected a hex string, got {value[:64]!r}") from None


def _json_request(body: bytes) -> bytes:
    """An OTLP/JSON request as the protobuf bytes of the same ExportTraceServiceRequest."""
    try:
        document = msgspec.json.decode(body)
    except events.MALFORMED_JSON as exc:    # not JSON, not UTF-8, or nested too deeply: as /v1/events says it
        raise OTLPDecodeError(events.malformed_json_reason(exc, body)) from None
    if not isinstance(document, dict):
        raise OTLPDecodeError("expected a JSON object (an ExportTraceServiceRequest)")
    for resource_spans in _items(document, "resourceSpans", "resource_spans"):
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for span in _items(scope_spans, "spans"):
                _base64_ids(span)
                for link in _items(span, "links"):
                    _base64_ids(link)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OTLPDecodeError(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    return request.SerializeToString()


def _encode(message, media: str) -> bytes:
    if media == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()


# google.rpc.Code of an HTTP refusal, for its Status body.
_STATUS_CODES = {401: 16, 429: 8, 500: 13, 503: 14}     # UNAUTHENTICATED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE


# -- pass-through ---------------------------------------------------------------------

CLOSE_SECONDS = 5.0         # the longest close() waits for the backend to take what is queued


def _one_line(exc: Exception) -> str:
    """A backend fault in one line: a gRPC error's str() is a multi-line repr; its status and details say it."""
    import grpc
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
        return f"gRPC {exc.code().name}: {exc.details()}"
    return str(exc)


class _Forwarder:
    """Received requests, unchanged, to the tracing backend (tracing.otlp_endpoint and protocol).

    A bounded queue and one sending thread: when the backend is slow or down,
    the queue fills and further requests are dropped, never waited for.
    Forwarded spans are counted by outcome in `store`'s
    orchestrator_exporter_otlp_forwarded_spans_total: sent, dropped (queue full, or
    still held when close() gave up) and failed (the backend did not take them).
    """

    def __init__(self, tracing, queue_size: int, store):
        self._timeout = tracing.otlp_timeout_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._store = store
        for outcome in catalog.FORWARDED_SPAN_OUTCOMES:
            store.count_forwarded_spans(outcome, 0)
        self._count_lock = threading.Lock()
        self._in_flight = 0             # spans of the request being sent
        self._abandoned = False
        self._dropped = 0               # spans dropped since the queue was last found full
        headers = otlp_headers(tracing.otlp_headers)
        if tracing.otlp_protocol == "grpc":
            import grpc

            from .otlp_grpc import EXPORT_METHOD
            # HOST:PORT of the URL, any path aside, as the SDK's OTLP/gRPC exporter (the exporter's own traces) takes it.
            endpoint = urlsplit(tracing.otlp_endpoint)
            self._channel = (grpc.insecure_channel(endpoint.netloc) if endpoint.scheme == "http"
                             else grpc.secure_channel(endpoint.netloc, grpc.ssl_channel_credentials()))
            call = self._channel.unary_unary(EXPORT_METHOD)   # bytes in, bytes out
            metadata = list(headers.items())       # lowercase already, as gRPC wants them (otlp_headers)
            self._send = lambda data: call(data, timeout=self._timeout, metadata=metadata)
        else:
            import requests
            session = requests.Session()
            session.headers.update({"Content-Type": PROTOBUF, **headers})
            url = otlp_http_endpoint(tracing.otlp_endpoint)
            self._channel = session
            self._send = lambda data: session.post(url, data=data, timeout=self._timeout).raise_for_status()
        self._thread = threading.Thread(target=self._run, name="otlp-forward", daemon=True)
        self._thread.start()

    def submit(self, data: bytes, spans: int) -> None:
        try:
            self._queue.put_nowait((data, spans))
        except queue.Full:
            self._count("dropped", spans)
            # Said when dropping starts and when it stops, not per request: a backend that answers,
            # but slower than spans arrive, trips no failure.  (Two threads may both say it.)
            if not self._dropped:
                _log.warning("the forwarding queue (otlp.forward_queue_size=%d) is full: the tracing backend "
                             "takes spans slower than they arrive; dropping requests until it catches up",
                             self._queue.maxsize)
            self._dropped += spans
        else:
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                _log.info("the forwarding queue has room again; %d span(s) were dropped meanwhile", dropped)

    def _count(self, outcome: str, spans: int, *, in_flight: bool = False) -> bool:
        """Count `spans` as `outcome`, unless close() gave up on the sending thread (then False).  For the
        request `in_flight`, it is no longer so in the same step, as close() reads both under the lock."""
        with self._count_lock:
            if in_flight:
                self._in_flight = 0
            if self._abandoned:
                return False
            self._store.count_forwarded_spans(outcome, spans)
            return True

    def _run(self) -> None:
        failing = False     # log when forwarding starts failing and when it recovers, not per request
        while (item := self._queue.get()) is not None:
            data, spans = item
            # Under the lock: a close() giving up between the get() and here would count neither.
            with self._count_lock:
                if self._abandoned:
                    self._store.count_forwarded_spans("dropped", spans)
                    continue
                self._in_flight = spans
            try:
                self._send(data)
            except Exception as exc:  # noqa: BLE001 - any backend fault: drop, count, carry on
                # Abandoned by close(), the call fails as its channel closes: not the backend's doing.
                if self._count("failed", spans, in_flight=True) and not failing:
                    _log.warning("forwarding spans to the tracing backend fails (dropping them): %s", _one_line(exc))
                failing = True
            else:
                if self._count("sent", spans, in_flight=True) and failing:
                    _log.info("forwarding spans to the tracing backend works again")
                failing = False

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, for at most `timeout` seconds (default: the backend timeout + 1 s, at most
        CLOSE_SECONDS): a stuck backend does not hold up the exporter's shutdown.  What is not sent by then
        counts as dropped."""
        timeout = min(self._timeout, CLOSE_SECONDS) + 1.0 if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(max(deadline - time.monotonic(), 0))
        if self._thread.is_alive():
            abandoned = self._abandon()
            if abandoned:
                # The dropped count goes with the process: the log is the one place left to say so.
                _log.warning("the tracing backend did not take %d forwarded span(s) within %gs; dropped them",
                             abandoned, timeout)
        self._channel.close()

    def _abandon(self) -> int:
        """The sending thread is stuck on the backend: what it holds and what is queued count as dropped
        (their number is returned), and it stops, counting nothing more, once its call returns."""
        with self._count_lock:
            abandoned = self._in_flight
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    abandoned += item[1]
            if abandoned:
                self._store.count_forwarded_spans("dropped", abandoned)
            self._abandoned = True
            self._queue.put_nowait(None)    # the stop, taken out with the rest
        return abandoned
