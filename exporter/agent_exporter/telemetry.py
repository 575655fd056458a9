"""The in-process API: one call updates the Prometheus series and the OpenTelemetry spans.

    tel = Telemetry.from_config("observability.yaml")        # or Telemetry()
    with tel.agent_execution("planner", model="gpt-4o") as run:
        run.usage(input_tokens=1200, output_tokens=300)
        with tel.tool_call("web_search"):                     # knows its agent
            ...
    tel.state_transition("planning", "coding", workflow="feature")

`agent_execution` and `tool_call` work as `with`, `async with` and as decorators
of sync and async functions; an exception inside records status `error` with
`error_type` = the exception's class name, then propagates.  The current run
lives in a contextvar (`Telemetry.current_run()`), so tool calls, transitions
and decorated code find their agent without passing it around.

Cost: `run.usage(cost_usd=...)` wins; otherwise the store prices the tokens
from `metrics.prices` (USD per million tokens, by model).  Tokens of a model
without a price are never priced at $0: the execution has no cost sample and
counts in `orchestrator_usage_unknown_total`, as does an execution that reports
no usage at all.

Invalid arguments raise `ValueError` naming the field (an `events.EventError`),
before anything is recorded.  Faults of the telemetry itself (a dead OTLP
endpoint, a full span queue) never raise into the caller nor block it.

The trace id of the current span becomes the histogram exemplar, so a slow
bucket in Grafana links to the trace.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import time
from abc import ABC, abstractmethod
from contextvars import ContextVar
from typing import Annotated, Iterable

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from . import events
from .config import Config
from .store import SeriesStore
from .tracing import build_resource, build_tracer_provider, genai_tracer, ids_of

_log = logging.getLogger(__name__)

_Weight = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]  # finite

# Events with a histogram observation, hence an exemplar.
_OBSERVED = (events.AgentExecution, events.ToolCall)

_current_run: ContextVar["AgentRun | None"] = ContextVar("agent_exporter_current_run", default=None)


def _checked(field: str, value, type_):
    """`value` converted to the schema type, or a ValueError naming `field`."""
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        raise events.EventError(field, "invalid_value", str(exc)) from None


class AgentRun:
    """The body's handle on one agent execution: report usage and the model actually used."""

    __slots__ = ("agent", "model", "input_tokens", "output_tokens", "cost_usd", "span")

    def __init__(self, agent: str, model: str | None, span: trace.Span):
        self.agent = agent
        self.model = model
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cost_usd: float | None = None
        self.span = span

    def usage(self, input_tokens: int | None = None, output_tokens: int | None = None,
              cost_usd: float | None = None) -> None:
        """Add LLM usage; call once per LLM call or once with totals (values accumulate)."""
        # All three are checked before any is added: a bad call adds nothing.
        if input_tokens is not None:
            input_tokens = _checked("input_tokens", input_tokens, events.Count)
        if output_tokens is not None:
            output_tokens = _checked("output_tokens", output_tokens, events.Count)
        if cost_usd is not None:
            cost_usd = _checked("cost_usd", cost_usd, events.Usd)
        if input_tokens is not None:
            self.input_tokens = (self.input_tokens or 0) + input_tokens
        if output_tokens is not None:
            self.output_tokens = (self.output_tokens or 0) + output_tokens
        if cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost_usd

    def set_model(self, model: str) -> None:
        self.model = _checked("model", model, events.Name)

    @property
    def trace_id(self) -> str | None:
        return ids_of(self.span)[0]


class ToolRun:
    """The body's handle on one tool call."""

    __slots__ = ("tool", "agent", "span")

    def __init__(self, tool: str, agent: str | None, span: trace.Span):
        self.tool = tool
        self.agent = agent
        self.span = span

    @property
    def trace_id(self) -> str | None:
        return ids_of(self.span)[0]


class _Scope(ABC):
    """A context manager (sync and async) and decorator around one unit of work.

    A scope is entered by one run at a time; as a decorator it makes a fresh
    scope per call, so decorated functions may run concurrently.
    """

    def __init__(self, telemetry: "Telemetry", template):
        self._telemetry = telemetry
        self._template = template      # the validated event, completed on exit
        self._active = None

    def _fresh(self) -> "_Scope":
        return type(self)(self._telemetry, self._template)

    def __enter__(self):
        if self._active is not None:
            raise RuntimeError("this scope is already entered; start a new one per run")
        run, span = self._begin()
        context_token = otel_context.attach(trace.set_span_in_context(span))
        self._active = (run, context_token, self._push(run), time.perf_counter())
        return run

    def __exit__(self, exc_type, exc, tb) -> bool:
        run, context_token, run_token, started = self._active
        duration = time.perf_counter() - started
        self._active = None
        if run_token is not None:
            _current_run.reset(run_token)
        otel_context.detach(context_token)
        self._end(run, duration, exc)
        return False

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        return self.__exit__(exc_type, exc, tb)

    def __call__(self, func):
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def run_async(*args, **kwargs):
                async with self._fresh():
                    return await func(*args, **kwargs)
            return run_async

        @functools.wraps(func)
        def run_sync(*args, **kwargs):
            with self._fresh():
                return func(*args, **kwargs)
        return run_sync

    def _push(self, run):
        """Make `run` current for the body; returns a contextvar token, or None."""
        return None

    @abstractmethod
    def _begin(self):
        """Start the span; returns (run handed to the body, span)."""

    @abstractmethod
    def _end(self, run, duration: float, exc: BaseException | None) -> None:
        """End the span and record the event."""


def _error_type(exc: BaseException) -> str:
    return type(exc).__name__[: events.MAX_NAME_LENGTH]


class _AgentScope(_Scope):
    def _push(self, run):
        return _current_run.set(run)

    def _begin(self):
        t = self._template
        span = self._telemetry.spans.start_agent(
            t.agent, model=t.model, feature=t.feature, priority=t.priority, request_id=t.request_id)
        return AgentRun(t.agent, t.model, span), span

    def _end(self, run: AgentRun, duration: float, exc: BaseException | None) -> None:
        tel = self._telemetry
        error_type = None if exc is None else _error_type(exc)
        span = run.span
        tel.spans.end_agent(
            span, model=run.model, input_tokens=run.input_tokens, output_tokens=run.output_tokens,
            cost_usd=run.cost_usd if run.cost_usd is not None
            else tel.store.cost_of(run.model, run.input_tokens, run.output_tokens),
            error_type=error_type, exception=exc)
        trace_id, span_id = tel._exemplar_ids(span)
        tel.store.apply(msgspec.structs.replace(
            self._template, status="success" if exc is None else "error", duration_seconds=duration,
            model=run.model, input_tokens=run.input_tokens, output_tokens=run.output_tokens,
            cost_usd=run.cost_usd, error_type=error_type, trace_id=trace_id, span_id=span_id,
            timestamp=time.time()))


class _ToolScope(_Scope):
    def _begin(self):
        t = self._template
        agent = t.agent
        if agent is None and (current := _current_run.get()) is not None:
            agent = current.agent   # resolved on entry: a decorator is created outside any run
        span = self._telemetry.spans.start_tool(t.tool, agent=agent)
        return ToolRun(t.tool, agent, span), span

    def _end(self, run: ToolRun, duration: float, exc: BaseException | None) -> None:
        tel = self._telemetry
        error_type = None if exc is None else _error_type(exc)
        tel.spans.end_tool(run.span, error_type=error_type, exception=exc)
        trace_id, span_id = tel._exemplar_ids(run.span)
        tel.store.apply(msgspec.structs.replace(
            self._template, agent=run.agent, status="success" if exc is None else "error",
            duration_seconds=duration, error_type=error_type, trace_id=trace_id, span_id=span_id,
            timestamp=time.time()))


class _OTelMetricsBridge:
    """OpenTelemetry SDK metrics on our /metrics, through opentelemetry-exporter-prometheus.

    PrometheusMetricReader registers its collector into the registry it is
    given (here a private one, never prometheus_client's global REGISTRY);
    `Telemetry.render()` appends that registry to the store's text, and the
    bridge itself is a collector in `Telemetry.registry`.  Scope labels and
    target_info are off, so names and labels look like any other exporter's.
    Every instrument is capped at `metrics.max_series` attribute sets, like the
    store; past it the SDK folds into one `otel_metric_overflow="true"` series.
    """

    def __init__(self, config: Config, *, set_global: bool):
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import (
            Counter, Histogram, MeterProvider, ObservableCounter, ObservableGauge,
            ObservableUpDownCounter, UpDownCounter,
        )
        from opentelemetry.sdk.metrics import _Gauge as Gauge   # exported as _Gauge while Gauge is new

        self.registry = CollectorRegistry()
        limit = config.metrics.max_series
        reader = PrometheusMetricReader(
            disable_target_info=True,
            scope_info_enabled=False,
            registry=self.registry,
            cardinality_limits={cls: limit for cls in (
                Counter, UpDownCounter, Histogram, Gauge,
                ObservableCounter, ObservableUpDownCounter, ObservableGauge)},
        )
        self.meter_provider = MeterProvider(metric_readers=[reader], resource=build_resource(config))
        if set_global:
            metrics.set_meter_provider(self.meter_provider)

    def collect(self):
        return self.registry.collect()

    def render(self, openmetrics: bool) -> bytes:
        if openmetrics:
            from prometheus_client.openmetrics.exposition import generate_latest
        else:
            from prometheus_client.exposition import generate_latest
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.meter_provider.shutdown()


class Telemetry:
    """Metrics (a SeriesStore) and spans (a TracerProvider) behind one recording API.

    Arguments are all optional: `config` (default `Config()`), a `store` to
    record into (default one built from the config), a prometheus_client
    `registry` to register the store in (default a new one, never the global
    REGISTRY), a `tracer_provider` to use instead of building one from
    `config.tracing` (the caller then owns it).  `otel_metrics=True` adds an
    OpenTelemetry MeterProvider whose metrics appear on the same /metrics;
    `global_meter_provider=True` also installs it as the global MeterProvider,
    for libraries that record through the global API (GenAI auto-instrumentation);
    `global_tracer_provider=True` does the same for the tracer provider, as the
    legacy tracer did.  OpenTelemetry lets a process set each global once.
    """

    def __init__(self, config: Config | None = None, *, store: SeriesStore | None = None,
                 registry: CollectorRegistry | None = None, tracer_provider=None,
                 otel_metrics: bool = False, global_meter_provider: bool = False,
                 global_tracer_provider: bool = False):
        self.config = config or Config()
        self.store = store if store is not None else SeriesStore.from_config(self.config)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(self.store)

        tracing = self.config.tracing
        self._owned_tracer_provider = None
        if tracer_provider is None and tracing.enabled:
            tracer_provider = self._owned_tracer_provider = build_tracer_provider(self.config)
        self.tracer_provider = tracer_provider
        if global_tracer_provider and tracer_provider is not None:
            trace.set_tracer_provider(tracer_provider)
        self.spans = genai_tracer(tracer_provider or trace.NoOpTracerProvider(), tracing)
        # Events recorded after the fact (record, record_batch) become spans only
        # when spans go somewhere: otherwise they would only cost ingest throughput.
        self._event_spans = tracer_provider is not None and (
            self._owned_tracer_provider is None or tracing.export_to_console or tracing.export_to_otlp)

        self._metrics_bridge = None
        if otel_metrics or global_meter_provider:
            self._metrics_bridge = _OTelMetricsBridge(self.config, set_global=global_meter_provider)
            self.registry.register(self._metrics_bridge)
        self._closed = False

    @classmethod
    def from_config(cls, path, **kwargs) -> "Telemetry":
        from .config import load_config
        return cls(load_config(path), **kwargs)

    # `spans` is the GenAITracer behind the API, for GenAI spans of your own.

    @property
    def tracer(self) -> trace.Tracer:
        """The OpenTelemetry tracer our spans come from (for spans of your own)."""
        return self.spans.tracer

    @property
    def meter_provider(self):
        """The OpenTelemetry MeterProvider feeding /metrics, or None without otel_metrics."""
        return self._metrics_bridge.meter_provider if self._metrics_bridge else None

    @staticmethod
    def current_run() -> AgentRun | None:
        """The agent run of the innermost agent_execution() around the caller, if any."""
        return _current_run.get()

    # -- live work ---------------------------------------------------------

    def agent_execution(self, agent: str, *, model: str | None = None, feature: str | None = None,
                        priority: str | None = None, request_id: str | None = None) -> _AgentScope:
        """One agent run, as `with`/`async with` (yielding an AgentRun) or as a decorator."""
        template = events.decode({
            "type": "agent_execution", "agent": agent, "status": "success", "duration_seconds": 0.0,
            "model": model, "feature": feature, "priority": priority, "request_id": request_id})
        return _AgentScope(self, template)

    def tool_call(self, tool: str, *, agent: str | None = None) -> _ToolScope:
        """A tool call; without `agent`, the agent of the run it is entered in."""
        template = events.decode({
            "type": "tool_call", "tool": tool, "status": "success", "duration_seconds": 0.0,
            "agent": agent})
        return _ToolScope(self, template)

    def state_transition(self, from_state: str, to_state: str, *, workflow: str | None = None,
                         agent: str | None = None) -> None:
        if agent is None and (run := _current_run.get()) is not None:
            agent = run.agent
        event = events.decode({"type": "state_transition", "from_state": from_state,
                               "to_state": to_state, "workflow": workflow, "agent": agent})
        self.spans.state_transition(from_state, to_state, workflow=workflow, agent=agent)
        trace_id, span_id = ids_of(trace.get_current_span())
        self.store.apply(msgspec.structs.replace(event, trace_id=trace_id, span_id=span_id))

    # -- events ------------------------------------------------------------

    def record(self, event) -> None:
        """Record one schema-v1 event (a dict, a legacy collector record, or a decoded event)."""
        event = events.decode(event)
        if self._event_spans:
            event = self._span_for(event)
        elif type(event) in _OBSERVED and event.trace_id is None:
            trace_id, span_id = ids_of(trace.get_current_span())   # the caller's own tracing
            if trace_id is not None:
                event = msgspec.structs.replace(event, trace_id=trace_id, span_id=span_id)
        self.store.apply(event)

    def record_batch(self, batch: Iterable) -> None:
        """Record already decoded events (events.decode_body) under one store lock."""
        if self._event_spans:
            batch = [self._span_for(event) for event in batch]
        self.store.apply_batch(batch)

    def set_selector_weight(self, task: str, agent: str, weight: float) -> None:
        self.store.set_selector_weight(_checked("task", task, events.Name),
                                       _checked("agent", agent, events.Name),
                                       _checked("weight", weight, _Weight))

    def set_circuit_state(self, agent: str, state: str) -> None:
        self.record({"type": "circuit_state", "agent": agent, "state": state})

    def _span_for(self, event):
        """Emit the span (or span event) of an event; give it the span's trace ids if it had none."""
        cost = None
        if type(event) is events.AgentExecution:
            cost = self.store.cost_of(event.model, event.input_tokens, event.output_tokens)
        span = self.spans.event_span(event, cost_usd=cost)
        trace_id, span_id = ids_of(span)   # None for events that make no span of their own
        if trace_id is not None and event.trace_id is None:
            event = msgspec.structs.replace(event, trace_id=trace_id, span_id=span_id)
        return event

    def _exemplar_ids(self, span: trace.Span) -> tuple[str | None, str | None]:
        """Ids of our span, else of the caller's current span (their own tracing), if sampled."""
        trace_id, span_id = ids_of(span)
        if trace_id is None:
            trace_id, span_id = ids_of(trace.get_current_span())
        return trace_id, span_id

    # -- exposition and lifecycle -----------------------------------------

    def render(self, openmetrics: bool = False) -> bytes:
        """The /metrics body: the store's series, then OpenTelemetry metrics if bridged."""
        body = self.store.render(openmetrics)
        if self._metrics_bridge is None:
            return body
        if openmetrics:
            body = body.removesuffix(b"# EOF\n")   # one EOF, at the very end
        return body + self._metrics_bridge.render(openmetrics)

    def serve(self, address: str | None = None):
        """Embedded /metrics, /-/healthy, /-/ready on `address` (default server.listen_address).

        Returns a handle whose .stop() stops the server.
        """
        from .server import start_embedded
        return start_embedded(self, address or self.config.server.listen_address)

    def shutdown(self) -> None:
        """Flush and stop the span exporters and the metrics bridge this Telemetry owns."""
        if self._closed:
            return
        self._closed = True
        if self._owned_tracer_provider is not None:
            try:
                self._owned_tracer_provider.shutdown()
            except Exception:  # noqa: BLE001 - a failing exporter must not fail the caller's shutdown
                _log.warning("tracer provider shutdown failed", exc_info=True)
        if self._metrics_bridge is not None:
            self._metrics_bridge.shutdown()
