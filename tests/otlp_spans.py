"""OTLP export requests built by hand, one attribute at a time, with opentelemetry-proto's classes."""

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

START = 1_760_000_000_000_000_000      # ns
TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")


def _value(kv: KeyValue, value) -> None:
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value


def span(span_id: int, attributes: dict | None = None, *, parent: int = 0, name: str = "span",
         trace: bytes = TRACE, seconds: float = 1.5, error: bool = False, exception: str | None = None) -> Span:
    """A finished span START .. START + seconds; `exception` adds an exception event of that type."""
    s = Span(trace_id=trace, span_id=span_id.to_bytes(8, "big"),
             parent_span_id=parent.to_bytes(8, "big") if parent else b"", name=name,
             start_time_unix_nano=START, end_time_unix_nano=START + int(seconds * 1e9))
    for key, value in (attributes or {}).items():
        _value(s.attributes.add(key=key), value)
    if error:
        s.status.code = Status.STATUS_CODE_ERROR
    if exception:
        event = s.events.add(name="exception", time_unix_nano=s.end_time_unix_nano)
        _value(event.attributes.add(key="exception.type"), exception)
    return s


def request(*spans: Span, service: str | None = "orders-service", scope: str = "") -> ExportTraceServiceRequest:
    """One resource (with `service` as service.name, when given) and one scope (named `scope`) holding `spans`."""
    req = ExportTraceServiceRequest()
    resource_spans = req.resource_spans.add()
    if service is not None:
        _value(resource_spans.resource.attributes.add(key="service.name"), service)
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = scope
    scope_spans.spans.extend(spans)
    return req


def agent_span(span_id: int, name: str = "planner", parent: int = 0, **attributes) -> Span:
    return span(span_id, {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name, **attributes},
                parent=parent, name=f"invoke_agent {name}")


def chat_span(span_id: int, parent: int = 0, model: str = "gpt-4o", input_tokens: int = 100,
              output_tokens: int = 20, **attributes) -> Span:
    return span(span_id, {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                          "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
                          **attributes}, parent=parent, name=f"chat {model}", seconds=0.5)
