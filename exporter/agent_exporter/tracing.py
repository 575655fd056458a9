"""OpenTelemetry tracing: the tracer provider and GenAI semantic-convention spans.

Spans follow the OpenTelemetry semantic conventions for GenAI agent spans,
version 1.41.0 (``SEMCONV_VERSION``; docs/gen-ai/gen-ai-agent-spans.md at that
tag), the last release before the GenAI conventions moved to their own
repository:

* an agent execution is an *invoke agent internal span* (in-process agents):
  name ``invoke_agent {gen_ai.agent.name}``, kind INTERNAL, attributes
  ``gen_ai.operation.name="invoke_agent"``, ``gen_ai.agent.name``,
  ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
  ``gen_ai.usage.output_tokens``;
* a tool call is an *execute tool span*: name ``execute_tool {gen_ai.tool.name}``,
  kind INTERNAL, ``gen_ai.operation.name="execute_tool"``, ``gen_ai.tool.name``;
* a failure sets ``error.type`` (the exception class name, the event's
  ``error_type``, or ``_OTHER``) and status ERROR, as "Recording Errors" asks;
* a workflow state transition is a span event ``orchestrator.state_transition``
  on the current span (or on a zero-length ``state_transition {workflow}`` span
  when nothing is current), as are retries, fallbacks and breaker changes.

``gen_ai.provider.name`` is left out: the orchestrator calls agents, not
providers, and does not know which provider serves a model.  What the
conventions do not cover uses the ``orchestrator.`` namespace (feature,
priority, request id, cost).

Nothing here sets the global tracer provider: `Telemetry` owns the provider it
builds, and tests build their own.  Span export runs on BatchSpanProcessor's
thread behind a bounded queue, so a dead collector costs the orchestrator
nothing but dropped spans; every method that touches spans catches its own
faults (`_guarded`, or inline on the hottest two), since telemetry must never
raise into the caller.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from . import events
from .config import HEADER_NAME, HEADER_VALUE, Config, TracingConfig
from .version import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LoggerProvider

SEMCONV_VERSION = "1.41.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
INSTRUMENTATION_NAME = "agent_exporter"

# GenAI semantic conventions (v1.41.0) and the stable error attribute.
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
# In the conventions input_tokens includes the cache reads and writes, and
# output_tokens the reasoning; our event fields are disjoint, so spans carry sums.
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"
GEN_AI_EVALUATION_NAME = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_VALUE = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL = "gen_ai.evaluation.score.label"
EVALUATION_RESULT_EVENT = "gen_ai.evaluation.result"
ERROR_TYPE = "error.type"
ERROR_TYPE_OTHER = "_OTHER"
INVOKE_AGENT = "invoke_agent"
EXECUTE_TOOL = "execute_tool"
INVOKE_WORKFLOW = "invoke_workflow"

# Our own, for what the conventions leave open.
FEATURE = "orchestrator.feature"
PRIORITY = "orchestrator.priority"
REQUEST_ID = "orchestrator.request_id"
COST_USD = "orchestrator.cost_usd"
UNSPLIT_TOKENS = "orchestrator.usage.unsplit_tokens"
WORKFLOW = "orchestrator.workflow"
STATE_FROM = "orchestrator.state.from"
STATE_TO = "orchestrator.state.to"
STATE_TRANSITION_EVENT = "orchestrator.state_transition"
RETRY_EVENT = "orchestrator.retry"
FALLBACK_EVENT = "orchestrator.fallback"
CIRCUIT_STATE_EVENT = "orchestrator.circuit_state"
ATTEMPT = "orchestrator.attempt"
PROBE = "orchestrator.probe"            # a healer's attempt admitted as a half-open breaker probe
FROM_AGENT = "orchestrator.from_agent"
TO_AGENT = "orchestrator.to_agent"
REASON = "orchestrator.reason"
CIRCUIT_STATE = "orchestrator.circuit_state"

# OTLP/HTTP takes the full signal URL; a bare collector address gets this path.
OTLP_HTTP_TRACES_PATH = "/v1/traces"
# Spans per export request; never more than the queue holds.
MAX_EXPORT_BATCH_SIZE = 512

_log = logging.getLogger(__name__)


def build_resource(config: Config) -> Resource:
    """service.name, service.version (default: the package version) and the environment.

    The environment goes in both `deployment.environment.name` (current
    conventions) and `deployment.environment` (what the legacy tracer wrote and
    older backends group by).
    """
    return Resource.create({
        "service.name": config.service_name,
        "service.version": config.service_version or __version__,
        "deployment.environment.name": config.environment,
        "deployment.environment": config.environment,
    }, schema_url=SCHEMA_URL)


def otlp_http_endpoint(endpoint: str, signal: str = "traces") -> str:
    """The URL of a signal (traces, logs) for OTLP/HTTP.

    A collector address without a path gets /v1/{signal}, as OTEL_EXPORTER_OTLP_ENDPOINT
    does; a full traces URL (.../v1/traces) gives the logs URL beside it; any other path
    is the traces URL as given.
    """
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return urlunsplit(parts._replace(path=f"/v1/{signal}"))
    if signal != "traces" and parts.path.endswith(OTLP_HTTP_TRACES_PATH):
        return urlunsplit(parts._replace(path=parts.path[: -len(OTLP_HTTP_TRACES_PATH)] + f"/v1/{signal}"))
    if signal != "traces":
        raise ValueError(f"tracing.otlp_endpoint: cannot tell where OTLP/HTTP {signal} go from {endpoint!r}; "
                         "give the collector's address or its .../v1/traces URL")
    return endpoint


def otlp_headers(configured, signal: str = "traces") -> dict[str, str]:
    """The headers of an OTLP export of `signal` ("traces" or "logs"), as the SDK's OTLP/HTTP
    exporters make theirs: OTEL_EXPORTER_OTLP_{SIGNAL}_HEADERS (else OTEL_EXPORTER_OTLP_HEADERS),
    then `configured` (tracing.otlp_headers) over them, so a backend's API key can stay in the
    environment, out of the config file.  Names lowercased, as gRPC metadata needs them and HTTP
    does not mind; given to the gRPC exporters too, which would otherwise read the environment only
    without `configured`, and never lowercase it."""
    from opentelemetry.sdk.environment_variables import (
        OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_LOGS_HEADERS, OTEL_EXPORTER_OTLP_TRACES_HEADERS)
    from opentelemetry.util.re import parse_env_headers
    per_signal = {"traces": OTEL_EXPORTER_OTLP_TRACES_HEADERS, "logs": OTEL_EXPORTER_OTLP_LOGS_HEADERS}[signal]
    variable = per_signal if os.environ.get(per_signal) else OTEL_EXPORTER_OTLP_HEADERS
    headers = parse_env_headers(os.environ.get(variable, ""), liberal=True)
    for name, value in headers.items():
        # As config.HeaderValue checks tracing.otlp_headers: sent, a line break is an error that repeats it.
        if not re.fullmatch(HEADER_NAME, name):
            raise ValueError(f"{variable}: a header name is an HTTP token (letters, digits, -, ...)")
        if not re.fullmatch(HEADER_VALUE, value):
            raise ValueError(f"{variable}: the header {name!r} cannot be sent: a header value is printable ASCII")
    headers.update({key.lower(): value for key, value in configured.items()})
    return headers


def otlp_exporter(tracing: TracingConfig) -> SpanExporter:
    """The OTLP span exporter for `otlp_protocol` ("grpc" or "http/protobuf")."""
    headers = otlp_headers(tracing.otlp_headers)
    if tracing.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        return GrpcExporter(
            endpoint=tracing.otlp_endpoint,
            insecure=urlsplit(tracing.otlp_endpoint).scheme == "http",
            headers=headers,
            timeout=tracing.otlp_timeout_seconds,
        )
    if tracing.otlp_protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
        return HttpExporter(
            endpoint=otlp_http_endpoint(tracing.otlp_endpoint),
            headers=headers,
            timeout=tracing.otlp_timeout_seconds,
        )
    raise ValueError(f"tracing.otlp_protocol: expected 'grpc' or 'http/protobuf', got {tracing.otlp_protocol!r}")


def otlp_log_exporter(tracing: TracingConfig):
    """The OTLP log record exporter to the spans' backend (`otlp_endpoint`, `otlp_protocol`)."""
    headers = otlp_headers(tracing.otlp_headers, "logs")
    if tracing.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcExporter
        return GrpcExporter(endpoint=tracing.otlp_endpoint, insecure=urlsplit(tracing.otlp_endpoint).scheme == "http",
                            headers=headers, timeout=tracing.otlp_timeout_seconds)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpExporter
    return HttpExporter(endpoint=otlp_http_endpoint(tracing.otlp_endpoint, "logs"), headers=headers,
                        timeout=tracing.otlp_timeout_seconds)


def build_tracer_provider(config: Config) -> TracerProvider:
    """A TracerProvider for `config`: resource, ParentBased(TraceIdRatioBased) sampling, exporters.

    The console exporter (`export_to_console`) and the OTLP exporter
    (`export_to_otlp`) each sit behind their own BatchSpanProcessor whose queue
    holds `max_queue_size` spans; when it is full, new spans are dropped rather
    than waited for.  The caller owns the provider (shutdown() flushes).
    """
    tracing = config.tracing
    provider = TracerProvider(
        resource=build_resource(config),
        sampler=ParentBased(TraceIdRatioBased(tracing.sampling_rate)),
    )
    exporters = []
    if tracing.export_to_console:
        exporters.append(ConsoleSpanExporter(service_name=config.service_name))
    if tracing.export_to_otlp:
        exporters.append(otlp_exporter(tracing))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(
            exporter,
            max_queue_size=tracing.max_queue_size,
            max_export_batch_size=min(MAX_EXPORT_BATCH_SIZE, tracing.max_queue_size),
        ))
    return provider


def shutdown_within(provider: TracerProvider | LoggerProvider, seconds: float) -> bool:
    """provider.shutdown(), waited for at most `seconds`; False when it did not finish in time.

    The SDK's shutdown exports every queued batch of spans (or log records), each retried
    against a backend that does not answer for the exporter's whole timeout: 2048 queued
    spans took 15 s here.  A dead backend must not hold the process's exit, so the shutdown
    runs in a thread of its own; one that is still retrying when `seconds` are up dies with
    the process.
    """
    def shut_down() -> None:
        try:
            provider.shutdown()
        except Exception:  # noqa: BLE001 - a failing exporter must not fail the caller's shutdown
            _log.warning("%s shutdown failed", type(provider).__name__, exc_info=True)

    worker = threading.Thread(target=shut_down, name="agent-exporter-otlp-shutdown", daemon=True)
    worker.start()
    worker.join(seconds)
    return not worker.is_alive()


def genai_tracer(provider: trace.TracerProvider, tracing: TracingConfig | None = None) -> "GenAITracer":
    """A GenAITracer on `provider`, its spans stamped with our instrumentation scope and schema."""
    return GenAITracer(provider.get_tracer(INSTRUMENTATION_NAME, __version__, schema_url=SCHEMA_URL), tracing)


def ids_of(span: trace.Span) -> tuple[str | None, str | None]:
    """(trace_id, span_id) in hex when the span is sampled (so a backend has it), else (None, None)."""
    if span is trace.INVALID_SPAN:      # nothing current: the common case without tracing
        return None, None
    ctx = span.get_span_context()
    if ctx.is_valid and ctx.trace_flags.sampled:
        return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    return None, None


def remote_parent(trace_id: str | None, span_id: str | None) -> otel_context.Context | None:
    """A context whose parent is the orchestrator's span, when an event names one.

    The ids came with the event, so the orchestrator traced it: the parent is
    taken as sampled.  Without both ids there is nothing to attach to.
    """
    if not (trace_id and span_id):
        return None
    parent = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    if not parent.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(parent))


def event_times(duration_seconds: float, timestamp: float | None) -> tuple[int, int]:
    """(start, end) in ns for an event that ended at `timestamp` (or now) after `duration_seconds`."""
    end = time.time_ns() if timestamp is None else int(timestamp * 1e9)
    return end - int(duration_seconds * 1e9), end


def interrupted(exc: BaseException) -> bool:
    """Whether a scope left by `exc` (not GeneratorExit) was interrupted from outside rather than
    failed: a BaseException that is no Exception, as asyncio's CancelledError (a hedge lost, a
    TaskGroup sibling failed, a timeout around the run, shutdown), KeyboardInterrupt, SystemExit.
    That is no outcome of the agent, tool or workflow, and is not counted as one: an error would
    page about an agent that never failed, and could open its breaker.  The span ends without an
    error status, as opentelemetry's use_span() leaves it; an agent run's usage and cost still
    count, as they were spent.  A timeout inside the run is the run's own TimeoutError: an error.

    A CancelledError counts as such only while the task running the scope is being cancelled: one
    from an awaited future somebody else cancelled (a job an executor dropped at its shutdown) is
    the run's failure."""
    if isinstance(exc, Exception):
        return False
    if isinstance(exc, asyncio.CancelledError):
        try:
            task = asyncio.current_task()
        except RuntimeError:        # no running event loop: no task is being cancelled
            return False
        return task is not None and task.cancelling() > 0
    return True


def _fault(method: str) -> None:
    """Log the fault being handled: telemetry faults are logged, never raised into the orchestrator."""
    _log.warning("span handling failed in %s; metrics are unaffected", method, exc_info=True)


def _guarded(default=None):
    """A method whose faults go to _fault(), returning `default` instead."""
    def wrap(method):
        @functools.wraps(method)
        def guarded(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except Exception:  # noqa: BLE001 - any fault in span handling is a telemetry fault
                _fault(method.__qualname__)
                return default
        return guarded
    return wrap


def _drop_none(attributes: dict) -> dict:
    return {k: v for k, v in attributes.items() if v is not None}


class GenAITracer:
    """Starts and ends the spans of agent runs, tool calls and workflows, and their events.

    The `trace_*` switches of TracingConfig turn kinds of spans off: a switched
    off kind gets a non-recording span, which costs nothing to end.
    """

    def __init__(self, tracer: trace.Tracer, tracing: TracingConfig | None = None):
        self.tracer = tracer
        self._config = tracing or TracingConfig()

    # -- spans around live work -------------------------------------------

    # start_agent() and end_agent() run on every traced agent run: they catch their own faults
    # (@_guarded's forwarding of the arguments costs ~2k instructions a call), and set attributes
    # one by one where a filtered literal (_drop_none) would cost five times as much.

    def start_agent(self, agent: str, *, model: str | None = None, feature: str | None = None,
                    priority: str | None = None, request_id: str | None = None,
                    context: otel_context.Context | None = None, start_time: int | None = None) -> trace.Span:
        try:
            if not self._config.trace_all_agents:
                return trace.INVALID_SPAN
            # Operation and model are set at creation: samplers may look at them.
            attributes = {GEN_AI_OPERATION_NAME: INVOKE_AGENT, GEN_AI_AGENT_NAME: agent}
            if model is not None:
                attributes[GEN_AI_REQUEST_MODEL] = model
            if feature is not None:
                attributes[FEATURE] = feature
            if priority is not None:
                attributes[PRIORITY] = priority
            if request_id is not None:
                attributes[REQUEST_ID] = request_id
            return self.tracer.start_span(
                f"{INVOKE_AGENT} {agent}", context=context, kind=SpanKind.INTERNAL, start_time=start_time,
                record_exception=False, set_status_on_exception=False, attributes=attributes)
        except Exception:  # noqa: BLE001 - any fault in span handling is a telemetry fault
            _fault("GenAITracer.start_agent")
            return trace.INVALID_SPAN

    def end_agent(self, span: trace.Span, e: events.AgentExecution, *, exception: BaseException | None = None,
                  end_time: int | None = None, outcome: bool = True) -> None:
        """End an agent span with what its execution event says (usage, cost, outcome); the models
        are set where they are known (start_agent(), set_model()).  `outcome=False`: the run was
        interrupted (cancelled) before it had one, and the span ends as end_interrupted() ends it."""
        try:
            if not span.is_recording():
                return
            attributes = {}
            input_tokens, output_tokens = e.input_tokens, e.output_tokens
            cache_read, cache_write, reasoning = e.cache_read_tokens, e.cache_write_tokens, e.reasoning_tokens
            if cache_read is not None or cache_write is not None or reasoning is not None:
                input_tokens = _sum(input_tokens, cache_read, cache_write)
                output_tokens = _sum(output_tokens, reasoning)
                attributes.update(_drop_none({GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: cache_read,
                                              GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: cache_write,
                                              GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: reasoning}))
            if input_tokens is not None:
                attributes[GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
            if output_tokens is not None:
                attributes[GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
            if e.time_to_first_token_seconds is not None:
                attributes[GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = e.time_to_first_token_seconds
            if e.total_tokens is not None:
                attributes[UNSPLIT_TOKENS] = e.total_tokens
            if e.cost_usd is not None:
                attributes[COST_USD] = e.cost_usd
            span.set_attributes(attributes)
            if outcome:
                self._end(span, _error_type(e), exception, end_time)
            else:
                span.end(end_time=end_time)
        except Exception:  # noqa: BLE001
            _fault("GenAITracer.end_agent")

    @_guarded()
    def end_interrupted(self, span: trace.Span) -> None:
        """End the span of a tool call or workflow interrupted from outside (cancelled): not an
        error of its own, so no error status, as opentelemetry's use_span() leaves such a span."""
        span.end()

    @_guarded()
    def set_model(self, span: trace.Span, model: str) -> None:
        """The model that answered, on a running agent span (the one asked for stays gen_ai.request.model)."""
        span.set_attribute(GEN_AI_RESPONSE_MODEL, model)

    @_guarded(default=trace.INVALID_SPAN)
    def start_tool(self, tool: str, *, agent: str | None = None, arguments: str | None = None,
                   context: otel_context.Context | None = None, start_time: int | None = None) -> trace.Span:
        if not self._config.trace_tool_calls:
            return trace.INVALID_SPAN
        attributes = {GEN_AI_OPERATION_NAME: EXECUTE_TOOL, GEN_AI_TOOL_NAME: tool, GEN_AI_AGENT_NAME: agent}
        if self._config.capture_content:  # tool arguments may carry user data: opt-in only
            attributes[GEN_AI_TOOL_CALL_ARGUMENTS] = arguments
        return self.tracer.start_span(
            f"{EXECUTE_TOOL} {tool}", context=context, kind=SpanKind.INTERNAL, start_time=start_time,
            record_exception=False, set_status_on_exception=False, attributes=_drop_none(attributes))

    @_guarded()
    def end_tool(self, span: trace.Span, *, error_type: str | None = None,
                 exception: BaseException | None = None, end_time: int | None = None) -> None:
        if span.is_recording():
            self._end(span, error_type, exception, end_time)

    @_guarded(default=trace.INVALID_SPAN)
    def start_workflow(self, workflow: str, *, request_id: str | None = None,
                       context: otel_context.Context | None = None, start_time: int | None = None) -> trace.Span:
        return self.tracer.start_span(
            f"{INVOKE_WORKFLOW} {workflow}", context=context, kind=SpanKind.INTERNAL, start_time=start_time,
            record_exception=False, set_status_on_exception=False,
            attributes=_drop_none({GEN_AI_OPERATION_NAME: INVOKE_WORKFLOW, GEN_AI_WORKFLOW_NAME: workflow,
                                   REQUEST_ID: request_id}))

    @_guarded()
    def end_workflow(self, span: trace.Span, *, error_type: str | None = None,
                     exception: BaseException | None = None, end_time: int | None = None) -> None:
        if span.is_recording():
            self._end(span, error_type, exception, end_time)

    def _end(self, span: trace.Span, error_type: str | None, exception: BaseException | None,
             end_time: int | None) -> None:
        if error_type is not None or exception is not None:
            error_type = error_type or type(exception).__name__
            span.set_attribute(ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
            if exception is not None and self._config.trace_errors:
                span.record_exception(exception, timestamp=end_time)
        span.end(end_time=end_time)

    # -- span events ------------------------------------------------------

    @_guarded()
    def evaluation(self, span: trace.Span, evaluator: str, score: float, label: str | None = None,
                   *, context: otel_context.Context | None = None) -> None:
        """A `gen_ai.evaluation.result` event on `span` (the evaluated agent run).

        Without a recording span of our own, the event goes on a zero-length
        `evaluation {evaluator}` span under `context` (an evaluation posted with
        the trace and span ids of the run it scores).
        """
        attributes = _drop_none({GEN_AI_EVALUATION_NAME: evaluator, GEN_AI_EVALUATION_SCORE_VALUE: score,
                                 GEN_AI_EVALUATION_SCORE_LABEL: label})
        if span.is_recording():
            span.add_event(EVALUATION_RESULT_EVENT, attributes)
            return
        if context is None:
            return
        carrier = self.tracer.start_span(f"evaluation {evaluator}", context=context, kind=SpanKind.INTERNAL)
        carrier.add_event(EVALUATION_RESULT_EVENT, attributes)
        carrier.end()

    @_guarded()
    def state_transition(self, from_state: str, to_state: str, *, workflow: str | None = None,
                         agent: str | None = None, context: otel_context.Context | None = None,
                         timestamp: int | None = None) -> None:
        """An event on the current span, or a zero-length span carrying it when none is current."""
        if not self._config.trace_state_transitions:
            return
        attributes = _drop_none({STATE_FROM: from_state, STATE_TO: to_state,
                                 WORKFLOW: workflow, GEN_AI_AGENT_NAME: agent})
        if context is None:
            current = trace.get_current_span()
            if current.is_recording():
                current.add_event(STATE_TRANSITION_EVENT, attributes, timestamp=timestamp)
                return
        span = self.tracer.start_span(f"state_transition {workflow or 'default'}", context=context,
                                      kind=SpanKind.INTERNAL, start_time=timestamp, attributes=attributes)
        span.add_event(STATE_TRANSITION_EVENT, attributes, timestamp=timestamp)
        span.end(end_time=timestamp)

    @_guarded()
    def error(self, exception: BaseException, attributes: dict | None = None) -> None:
        """An error on the current span, or on an `error` span of its own when none is current."""
        if not self._config.trace_errors:
            return
        attributes = _drop_none(attributes or {})
        current = trace.get_current_span()
        if current.is_recording():
            current.record_exception(exception, attributes=attributes)
            return
        error_type = type(exception).__name__
        span = self.tracer.start_span("error", kind=SpanKind.INTERNAL,
                                      attributes={ERROR_TYPE: error_type, **attributes})
        span.record_exception(exception, attributes=attributes)
        span.set_status(Status(StatusCode.ERROR, error_type))
        span.end()

    @_guarded()
    def annotate(self, name: str, attributes: dict) -> None:
        """An event on the current span, if one is recording."""
        current = trace.get_current_span()
        if current.is_recording():
            current.add_event(name, _drop_none(attributes))

    # -- events that already happened (HTTP ingest, record()) -------------

    @_guarded(default=trace.INVALID_SPAN)
    def event_span(self, e) -> trace.Span:
        """The span of an event that already happened (HTTP ingest, record()).

        Agent executions, tool calls and workflow runs become finished spans
        timed `timestamp - duration .. timestamp` (now when the event has no
        timestamp) and parented on the event's trace_id/span_id when it names
        them, so they join the orchestrator's trace; the span is returned.  A
        state transition or an evaluation becomes a span event; retries,
        fallbacks and breaker changes become events on the current span.  Those
        return INVALID_SPAN.
        """
        kind = type(e)
        if kind is events.AgentExecution:
            start, end = event_times(e.duration_seconds, e.timestamp)
            span = self.start_agent(e.agent, model=e.model, feature=e.feature, priority=e.priority,
                                    request_id=e.request_id, context=remote_parent(e.trace_id, e.span_id),
                                    start_time=start)
            self.end_agent(span, e, end_time=end)
            return span
        if kind is events.ToolCall:
            start, end = event_times(e.duration_seconds, e.timestamp)
            span = self.start_tool(e.tool, agent=e.agent, context=remote_parent(e.trace_id, e.span_id),
                                   start_time=start)
            self.end_tool(span, error_type=_error_type(e), end_time=end)
            return span
        if kind is events.WorkflowRun:
            start, end = event_times(e.duration_seconds, e.timestamp)
            span = self.start_workflow(e.workflow, request_id=e.request_id,
                                       context=remote_parent(e.trace_id, e.span_id), start_time=start)
            self.end_workflow(span, error_type=_error_type(e), end_time=end)
            return span
        if kind is events.StateTransition:
            self.state_transition(e.from_state, e.to_state, workflow=e.workflow, agent=e.agent,
                                  context=remote_parent(e.trace_id, e.span_id),
                                  timestamp=None if e.timestamp is None else int(e.timestamp * 1e9))
        elif kind is events.Evaluation:
            self.evaluation(trace.get_current_span(), e.evaluator, e.score, e.label,
                            context=remote_parent(e.trace_id, e.span_id))
        elif kind is events.Retry:
            self.annotate(RETRY_EVENT, {GEN_AI_AGENT_NAME: e.agent, ATTEMPT: e.attempt, ERROR_TYPE: e.error_type})
        elif kind is events.Fallback:
            self.annotate(FALLBACK_EVENT, {FROM_AGENT: e.from_agent, TO_AGENT: e.to_agent, REASON: e.reason})
        elif kind is events.CircuitState:
            self.annotate(CIRCUIT_STATE_EVENT, {GEN_AI_AGENT_NAME: e.agent, CIRCUIT_STATE: e.state})
        return trace.INVALID_SPAN


def _error_type(e) -> str | None:
    """error.type of a finished event: its error_type, or _OTHER when it failed without one."""
    if e.status != "error":
        return None
    return getattr(e, "error_type", None) or ERROR_TYPE_OTHER


def _sum(*counts: int | None) -> int | None:
    """The sum of the counts that are known; None when none is."""
    total = None
    for count in counts:
        if count is not None:
            total = count if total is None else total + count
    return total
