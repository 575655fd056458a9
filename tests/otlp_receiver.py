"""OTLP receivers for tests: gRPC (TraceService, LogsService) and HTTP/protobuf (POST /v1/traces, /v1/logs).

Both bind 127.0.0.1 on an ephemeral port, decode the export requests with
opentelemetry-proto's generated classes, and keep the spans they receive as
`ReceivedSpan`s and the log records as `ReceivedLog`s.  Use them as context
managers (started on enter, stopped on exit) and wait with `wait_for_spans(n)`
or `wait_for_logs(n)`, which have a deadline.
"""

from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from loopback import LoopbackServer, QuietHandler


def _value(v: AnyValue):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def _attributes(key_values) -> dict:
    return {kv.key: _value(kv.value) for kv in key_values}


@dataclass
class ReceivedSpan:
    name: str
    kind: str                      # "INTERNAL", "CLIENT", ...
    trace_id: str                  # hex
    span_id: str
    parent_span_id: str            # "" for a root span
    start_ns: int
    end_ns: int
    attributes: dict
    status: str                    # "UNSET", "OK", "ERROR"
    status_message: str
    events: list[tuple[str, dict]]
    resource: dict
    scope: str
    scope_schema_url: str


def spans_of(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    received = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                received.append(ReceivedSpan(
                    name=s.name,
                    kind=Span.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                    trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(),
                    parent_span_id=s.parent_span_id.hex(),
                    start_ns=s.start_time_unix_nano,
                    end_ns=s.end_time_unix_nano,
                    attributes=_attributes(s.attributes),
                    status=Status.StatusCode.Name(s.status.code).removeprefix("STATUS_CODE_"),
                    status_message=s.status.message,
                    events=[(e.name, _attributes(e.attributes)) for e in s.events],
                    resource=resource,
                    scope=scope_spans.scope.name,
                    scope_schema_url=scope_spans.schema_url,
                ))
    return received


@dataclass
class ReceivedLog:
    body: str
    severity: str                  # severity_text, e.g. "INFO"
    trace_id: str                  # hex, "" without one
    span_id: str
    attributes: dict
    resource: dict


def logs_of(request: logs_service_pb2.ExportLogsServiceRequest) -> list[ReceivedLog]:
    return [ReceivedLog(body=_value(record.body), severity=record.severity_text, trace_id=record.trace_id.hex(),
                        span_id=record.span_id.hex(), attributes=_attributes(record.attributes),
                        resource=_attributes(resource_logs.resource.attributes))
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records]


class _Receiver:
    def __init__(self):
        self.spans: list[ReceivedSpan] = []
        self.logs: list[ReceivedLog] = []
        self.requests = 0
        self.headers: list[dict[str, str]] = []     # of each trace export, names lower-cased
        self._cond = threading.Condition()

    def _accept(self, request: trace_service_pb2.ExportTraceServiceRequest, headers) -> None:
        spans = spans_of(request)
        with self._cond:
            self.requests += 1
            self.spans.extend(spans)
            self.headers.append({name.lower(): value for name, value in headers})
            self._cond.notify_all()

    def _accept_logs(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        records = logs_of(request)
        with self._cond:
            self.logs.extend(records)
            self._cond.notify_all()

    def _wait(self, received: list, count: int, what: str, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} {what}, received {len(received)}")
                self._cond.wait(left)
            return list(received)

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until at least `count` spans arrived (AssertionError after `timeout` seconds)."""
        return self._wait(self.spans, count, "spans", timeout)

    def wait_for_logs(self, count: int, timeout: float = 10.0) -> list[ReceivedLog]:
        """Wait until at least `count` log records arrived (AssertionError after `timeout` seconds)."""
        return self._wait(self.logs, count, "log records", timeout)

    def by_name(self, name: str) -> ReceivedSpan:
        matches = [s for s in self.spans if s.name == name]
        assert len(matches) == 1, f"{len(matches)} spans named {name!r} in {[s.name for s in self.spans]}"
        return matches[0]

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


class GrpcReceiver(_Receiver):
    """A TraceService and LogsService gRPC server; `endpoint` is its http:// address (insecure)."""

    def __init__(self):
        super().__init__()
        self._server = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        receiver = self

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                receiver._accept(request, context.invocation_metadata())
                return trace_service_pb2.ExportTraceServiceResponse()

        class LogsService(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):
                receiver._accept_logs(request)
                return logs_service_pb2.ExportLogsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsService(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None


class HttpReceiver(_Receiver):
    """OTLP/HTTP with protobuf bodies on POST /v1/traces and /v1/logs; `endpoint` is the server's base URL."""

    def __init__(self):
        super().__init__()
        self._server: LoopbackServer | None = None
        self.paths: list[str] = []

    @property
    def endpoint(self) -> str:
        return self._server.url

    def start(self) -> None:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = self.read_body()
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.paths.append(self.path)
                services = {"/v1/traces": (trace_service_pb2.ExportTraceServiceRequest,
                                           lambda request: receiver._accept(request, self.headers.items()),
                                           trace_service_pb2.ExportTraceServiceResponse),
                            "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest, receiver._accept_logs,
                                         logs_service_pb2.ExportLogsServiceResponse)}
                if self.path not in services or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(404 if self.path not in services else 415)
                    return
                request_type, accept, response_type = services[self.path]
                request = request_type()
                request.ParseFromString(body)
                accept(request)
                self.reply(200, response_type().SerializeToString(), "application/x-protobuf")

        self._server = LoopbackServer(Handler).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
