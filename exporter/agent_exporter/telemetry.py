"""The in-process API: one call updates the Prometheus series and the OpenTelemetry spans.

    tel = Telemetry.from_config("observability.yaml")        # or Telemetry()
    with tel.workflow("feature"):                            # invoke_workflow span, workflow_runs_total
        with tel.agent_execution("planner", model="gpt-4o") as run:
            run.first_token()                                # streaming: time to first token
            run.usage(input_tokens=1200, output_tokens=300, cache_read_tokens=4000)
            run.evaluate("tests_pass", 0.8)                  # a quality score in 0..1
            with tel.tool_call("web_search"):                # knows its agent
                ...
        tel.state_transition("planning", "coding")           # knows its workflow

`workflow`, `agent_execution` and `tool_call` work as `with`, `async with` and
as decorators of sync and async functions and generators (a generator's run is
its whole iteration, current only while the generator runs; a consumer breaking
off early ends it as a success); an
exception inside records status `error` with `error_type` = the exception's
class name, then propagates.  The
current run and workflow live in contextvars (`Telemetry.current_run()`), so
tool calls, transitions and decorated code find them without passing them around.

Cost: `run.usage(cost_usd=...)` wins; otherwise it is priced once, from
`metrics.prices` (pricing.PriceTable).  Usage that cannot be priced is never
$0: the execution has no cost sample and counts in
`orchestrator_usage_unknown_total`, as does an execution that reports no usage.

Invalid arguments raise `ValueError` naming the field (an `events.EventError`),
before anything is recorded.  Arguments are checked once, where the caller
passes them; the events the API builds from them are not checked again.
Faults of the telemetry itself (a dead OTLP endpoint, a full span queue) never
raise into the caller nor block it.

The trace id of the current span becomes the histogram exemplar, so a slow
bucket in Grafana links to the trace.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import warnings
from contextvars import Context, ContextVar, Token, copy_context
from types import TracebackType
from typing import (
    TYPE_CHECKING, Annotated, Any, Callable, Generic, Iterable, Iterator, Literal, ParamSpec, TypeVar, cast,
)

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from . import events, exposition
from .config import Config
from .pricing import PriceTable
from .store import SeriesStore
from .tracing import build_resource, build_tracer_provider, genai_tracer, ids_of, interrupted, shutdown_within

if TYPE_CHECKING:
    import os

    from opentelemetry.sdk.metrics import MeterProvider

    from .healing import AlertRemediator
    from .server import ExporterApp, ServerHandle

_log = logging.getLogger(__name__)

_Weight = Annotated[float, msgspec.Meta(ge=-1e300, le=1e300)]   # finite

_current_run: ContextVar["AgentRun | None"] = ContextVar("agent_exporter_current_run", default=None)
_current_workflow: ContextVar[str | None] = ContextVar("agent_exporter_current_workflow", default=None)
# Scopes reset their variable on exit, which fails in a Context other than the one entered: the
# sign to leave the span's context alone (see AgentRun.__exit__).  Tools need theirs only for that.
_current_tool: ContextVar[str | None] = ContextVar("agent_exporter_current_tool", default=None)

_perf_counter = time.perf_counter
_now = time.time
# The key trace.get_current_span() reads from the current context, found through the public
# API: reading it directly saves three calls per run (bench/bench_record.py).
_INVALID_SPAN = trace.INVALID_SPAN
_SPAN_KEY = next(iter(trace.set_span_in_context(_INVALID_SPAN, otel_context.Context())))
_current_context = otel_context.get_current

_LABEL_SETS_LIMIT = 10_000
_MAX_TOKENS = events.MAX_TOKENS
_MAX_USD = events.MAX_USD


# -- argument checks: a fast path for what callers pass nearly always, msgspec for the rest --

def _checked(field: str, value, type_):
    """`value` converted to the schema type, or a ValueError naming `field`."""
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        raise events.EventError(field, "invalid_value", str(exc)) from None


def _name(field: str, value) -> str:
    if type(value) is str and 0 < len(value) <= events.MAX_NAME_LENGTH and value.isascii():
        return value
    # A str subclass (a str-valued Enum of states or agents) is its characters, as JSON sends it:
    # its __str__ would make State.PLANNING a label of its own beside the posted "planning".
    value = str.__str__(_checked(field, value, events.Name))
    try:
        value.encode("utf-8")       # Python strings may hold lone surrogates; exposition is UTF-8
    except UnicodeEncodeError:
        raise events.EventError(field, "invalid_value", "not valid UTF-8") from None
    return value


def _optional_name(field: str, value) -> str | None:
    return None if value is None else _name(field, value)


def _count(field: str, value) -> int:
    if type(value) is int and 0 <= value <= events.MAX_TOKENS:
        return value
    if type(value) is float and value.is_integer():
        value = int(value)          # 1200.0, as the event schema takes it (a usage field parsed as a float)
    return _checked(field, value, events.Count)


def _number(field: str, value, type_, upper: float) -> float:
    kind = type(value)
    if (kind is float or kind is int) and 0 <= value <= upper:
        return value
    return _checked(field, value, type_)


def _total(field: str, total, upper: float):
    """A run's total of several usage() calls, or a ValueError naming `field`: one call's bound
    holds for the sum (a token count a float counter holds exactly, a finite cost)."""
    if total > upper:
        raise events.EventError(field, "invalid_value", f"the run's total, {total}, is over {upper:.17g}")
    return total


def _request_id(value) -> str | None:
    if value is None or (type(value) is str and len(value) <= 256):
        return value
    return _checked("request_id", value, events.RequestId)


def _error_type(exc: BaseException) -> str:
    return type(exc).__name__[: events.MAX_NAME_LENGTH]


# -- what the body of a scope gets --------------------------------------------

class ToolRun:
    """The body's handle on one tool call."""

    __slots__ = ("tool", "agent", "span", "started")

    def __init__(self, tool: str, agent: str | None, span: trace.Span | None):
        self.tool = tool
        self.agent = agent
        self.span = span
        self.started = 0.0

    @property
    def trace_id(self) -> str | None:
        return ids_of(self.span)[0] if self.span is not None else None


class WorkflowRun:
    """The body's handle on one workflow run (a task, end to end)."""

    __slots__ = ("workflow", "request_id", "span", "started")

    def __init__(self, workflow: str, request_id: str | None, span: trace.Span | None):
        self.workflow = workflow
        self.request_id = request_id
        self.span = span
        self.started = 0.0

    @property
    def trace_id(self) -> str | None:
        return ids_of(self.span)[0] if self.span is not None else None


# -- scopes: `with`, `async with` and decorators --------------------------------

_Handle = TypeVar("_Handle")      # what entering a scope gives the body: AgentRun, ToolRun, WorkflowRun
_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")


class _Scope(Generic[_Handle]):
    """The async forms and the decorator of a scope; subclasses define __enter__, __exit__, _fresh().

    A scope is entered by one run at a time; as a decorator it makes a fresh
    scope per call, so decorated functions may run concurrently.
    """

    __slots__ = ()

    def _fresh(self) -> "_Scope[_Handle]":
        raise NotImplementedError

    def __enter__(self) -> _Handle:
        raise NotImplementedError

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:   # never swallows the body's exception
        raise NotImplementedError

    async def __aenter__(self) -> _Handle:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> Literal[False]:
        return self.__exit__(exc_type, exc, tb)

    def __call__(self, func: Callable[_Params, _Result]) -> Callable[_Params, _Result]:
        """`func` run inside a fresh scope per call; the wrapper has the same signature and kind."""
        # A generator's run is its whole iteration, not the call that creates it.  A consumer that
        # stops early closes it (GeneratorExit), which __exit__ records as a success.  Its run is
        # current only while it runs: each step is taken in a Context of its own, copied at its
        # first step, so that generators iterated side by side (zip) or closed out of order never
        # leave one's run current in the consumer, and the consumer's code between two steps is
        # not part of the run.  What the consumer sends or throws in reaches `func`, as with
        # `yield from`.  A callable object is decorated as its __call__ is (an agent class with
        # `async def __call__`), a partial as the function it binds.
        routine = inspect.isroutine(func) or isinstance(func, functools.partial)
        kind = func if routine else getattr(func, "__call__", func)
        if inspect.isasyncgenfunction(kind):
            @functools.wraps(func)
            async def run_async_generator(*args, **kwargs):
                with _InOwnContext(self._fresh()) as context:
                    items = func(*args, **kwargs)
                    try:
                        step = _InContext(context, items.asend(None))
                        while True:
                            item = await step
                            try:
                                sent = yield item
                            except GeneratorExit:
                                raise
                            except BaseException as thrown:  # noqa: BLE001 - `func` decides what it handles
                                step = _InContext(context, items.athrow(thrown))
                            else:
                                step = _InContext(context, items.asend(sent))
                    except StopAsyncIteration:
                        pass
                    finally:
                        await _InContext(context, items.aclose())
            return run_async_generator

        if inspect.isgeneratorfunction(kind):
            @functools.wraps(func)
            def run_generator(*args, **kwargs):
                with _InOwnContext(self._fresh()) as context:
                    items = func(*args, **kwargs)
                    try:
                        step, value = items.send, None
                        while True:
                            try:
                                item = context.run(step, value)
                            except StopIteration as stop:
                                return stop.value
                            try:
                                value, step = (yield item), items.send
                            except GeneratorExit:
                                raise
                            except BaseException as thrown:  # noqa: BLE001 - `func` decides what it handles
                                value, step = thrown, items.throw
                    finally:
                        context.run(items.close)
            return run_generator

        if inspect.iscoroutinefunction(kind):
            @functools.wraps(func)
            async def run_async(*args, **kwargs):
                async with self._fresh():
                    return await func(*args, **kwargs)
            return cast("Callable[_Params, _Result]", run_async)     # _Result is func's coroutine type

        @functools.wraps(func)
        def run_sync(*args, **kwargs):
            with self._fresh():
                return func(*args, **kwargs)
        return run_sync


class _InOwnContext:
    """A fresh scope entered and exited in a copy of the current Context: a decorated generator's
    (`with` gives the Context, in which each of its steps runs)."""

    __slots__ = ("_context", "_scope")

    def __init__(self, scope: _Scope):
        self._context = copy_context()
        self._scope = scope

    def __enter__(self) -> Context:
        self._context.run(self._scope.__enter__)
        return self._context

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        return self._context.run(self._scope.__exit__, exc_type, exc, tb)


class _InContext:
    """An awaitable whose every step runs in `context` (a decorated async generator's)."""

    __slots__ = ("_context", "_awaitable")

    def __init__(self, context: Context, awaitable):
        self._context = context
        self._awaitable = awaitable

    def __await__(self):
        steps = self._awaitable.__await__()
        run = self._context.run
        step, value = steps.send, None
        while True:
            try:
                signal = run(step, value)
            except StopIteration as stop:
                return stop.value
            try:
                value, step = (yield signal), steps.send
            except BaseException as thrown:  # noqa: BLE001 - cancellation goes on into the step awaited
                value, step = thrown, steps.throw


def _too_late(method: str, run: "AgentRun") -> None:
    # Recorded already: what the call says would be lost silently.  A RuntimeWarning, shown
    # once per call site as Python's warnings are, rather than an exception into the caller.
    warnings.warn(f"run.{method}() after the run of {run.agent!r} ended: not recorded", RuntimeWarning,
                  stacklevel=3)


def _traced(span: trace.Span | None) -> trace.Span | None:
    """The span a scope makes current: none when it was not traced (tracing.trace_all_agents or
    trace_tool_calls off, or a fault), so that what runs inside keeps the caller's span as its
    parent rather than starting traces of its own."""
    return None if span is _INVALID_SPAN else span


def _attach(span: trace.Span) -> Token[otel_context.Context]:
    """Make `span` the current span for the body; returns the token to detach it."""
    return otel_context.attach(trace.set_span_in_context(span))


class _LabelSet:
    """A label set agent_execution() has checked, and the store series its runs touch.

    An orchestrator names the same few agents and models over and over: checking them
    and finding their series once, not on every run, is most of what makes the API fast.
    """

    __slots__ = ("agent", "model", "feature", "priority", "series")

    def __init__(self, agent: str, model: str | None, feature: str | None, priority: str | None):
        self.agent, self.model, self.feature, self.priority = agent, model, feature, priority
        self.series = [None, None]      # by status (success, error): the store fills them in on first use


class AgentRun(_Scope["AgentRun"]):
    """One agent execution: what `with tel.agent_execution(...)` enters and the body's handle on
    the run (usage, the model actually used, first token, quality scores)."""

    # No __slots__, on purpose: the class attributes are the defaults, so a run sets only what
    # its body reports (bench/bench_record.py counts every assignment).
    span: trace.Span | None = None
    started: float = 0.0                # perf_counter() when the run was entered
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    first_token_at: float | None = None
    _finished = False
    _run_token: Token[AgentRun | None] | None = None          # set while the run is entered
    _context_token: Token[otel_context.Context] | None = None

    def __init__(self, telemetry: "Telemetry", labels: _LabelSet, request_id: str | None):
        self._telemetry = telemetry
        self._labels = labels
        self.model = labels.model
        self.request_id = request_id

    @property
    def agent(self) -> str:
        return self._labels.agent

    def _fresh(self) -> "AgentRun":
        return AgentRun(self._telemetry, self._labels, self.request_id)

    def __enter__(self) -> "AgentRun":
        if self._run_token is not None:
            raise RuntimeError("this scope is already entered; start a new one per run")
        if self._finished:      # entered again after a run: start from nothing
            self.__dict__ = {"_telemetry": self._telemetry, "_labels": self._labels, "model": self._labels.model,
                             "request_id": self.request_id}
        tel = self._telemetry
        if tel._tracing:
            labels = self._labels
            span = tel.spans.start_agent(labels.agent, model=labels.model, feature=labels.feature,
                                         priority=labels.priority, request_id=self.request_id)
            if span is not _INVALID_SPAN:       # see _traced()
                self.span = span
                self._context_token = _attach(span)
        self._run_token = _current_run.set(self)
        self.started = _perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        """The end of the run: its event, priced once, to the span and the store."""
        duration = _perf_counter() - self.started
        try:
            _current_run.reset(self._run_token)
        except ValueError:
            # Exited in another Context than entered: an async generator the event loop finalizes
            # after its consumer broke off.  Nothing of ours to restore here, and the span's token,
            # from the same Context, would fail too (opentelemetry logs that as an error).
            pass
        else:
            if self._context_token is not None:
                otel_context.detach(self._context_token)
        self._run_token = None
        self._finished = True
        outcome = True
        if exc is not None:
            if exc_type is GeneratorExit:
                exc = None      # a generator closed early: its consumer stopped, the run did not fail
            elif interrupted(exc):
                outcome = False
        tel = self._telemetry
        model = self.model
        cost = self.cost_usd
        if cost is None and tel._pricing:
            cost = tel.prices.cost(model, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                                   cache_read_tokens=self.cache_read_tokens,
                                   cache_write_tokens=self.cache_write_tokens,
                                   reasoning_tokens=self.reasoning_tokens)
        first_token = self.first_token_at
        span = self.span
        trace_id, span_id = tel._exemplar_ids(span)
        labels = self._labels
        # Positional, in the order of events.EXECUTION_FIELDS.
        event = events.AgentExecution(
            labels.agent, "success" if exc is None else "error", duration, model,
            self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens,
            self.reasoning_tokens, None, cost, None if first_token is None else first_token - self.started,
            None if exc is None else _error_type(exc), labels.feature, labels.priority, self.request_id,
            trace_id, span_id, None)       # no timestamp: the store stamps an exemplar when it keeps one
        if span is not None:
            tel.spans.end_agent(span, event, exception=exc, outcome=outcome)
        if tel._metrics:
            # The label set caches its series, unless the run reported another model than it named.
            tel.store.apply_execution(event, labels.series if model == labels.model else None, outcome)
        return False

    def usage(self, input_tokens: int | None = None, output_tokens: int | None = None, *,
              cache_read_tokens: int | None = None, cache_write_tokens: int | None = None,
              reasoning_tokens: int | None = None, cost_usd: float | None = None) -> None:
        """Add LLM usage; call once per LLM call or once with totals (values accumulate).

        The token types are disjoint: `input_tokens` is input neither read from nor
        written to a prompt cache, `output_tokens` output that is not reasoning
        (README, "Tokens and cost", maps OpenAI's and Anthropic's usage fields).
        """
        # Everything is checked before anything is added: a bad call adds nothing.  The checks
        # are inline for the common case; anything unusual goes through msgspec for its message.
        if input_tokens is not None and not (type(input_tokens) is int and 0 <= input_tokens <= _MAX_TOKENS):
            input_tokens = _count("input_tokens", input_tokens)
        if output_tokens is not None and not (type(output_tokens) is int and 0 <= output_tokens <= _MAX_TOKENS):
            output_tokens = _count("output_tokens", output_tokens)
        if cost_usd is not None and not (type(cost_usd) is float and 0 <= cost_usd <= _MAX_USD):
            cost_usd = _number("cost_usd", cost_usd, events.Usd, _MAX_USD)
        cached = cache_read_tokens is not None or cache_write_tokens is not None or reasoning_tokens is not None
        if cached:
            if cache_read_tokens is not None:
                cache_read_tokens = _count("cache_read_tokens", cache_read_tokens)
            if cache_write_tokens is not None:
                cache_write_tokens = _count("cache_write_tokens", cache_write_tokens)
            if reasoning_tokens is not None:
                reasoning_tokens = _count("reasoning_tokens", reasoning_tokens)
        if self._finished:
            return _too_late("usage", self)
        # A later call adds to the run's totals, which are held to the same bounds, still before
        # anything is added.
        if input_tokens is not None and self.input_tokens is not None:
            input_tokens = _total("input_tokens", self.input_tokens + input_tokens, _MAX_TOKENS)
        if output_tokens is not None and self.output_tokens is not None:
            output_tokens = _total("output_tokens", self.output_tokens + output_tokens, _MAX_TOKENS)
        if cost_usd is not None and self.cost_usd is not None:
            cost_usd = _total("cost_usd", self.cost_usd + cost_usd, _MAX_USD)
        if cached:
            if cache_read_tokens is not None and self.cache_read_tokens is not None:
                cache_read_tokens = _total("cache_read_tokens", self.cache_read_tokens + cache_read_tokens,
                                           _MAX_TOKENS)
            if cache_write_tokens is not None and self.cache_write_tokens is not None:
                cache_write_tokens = _total("cache_write_tokens", self.cache_write_tokens + cache_write_tokens,
                                            _MAX_TOKENS)
            if reasoning_tokens is not None and self.reasoning_tokens is not None:
                reasoning_tokens = _total("reasoning_tokens", self.reasoning_tokens + reasoning_tokens, _MAX_TOKENS)
        if input_tokens is not None:
            self.input_tokens = input_tokens
        if output_tokens is not None:
            self.output_tokens = output_tokens
        if cost_usd is not None:
            self.cost_usd = cost_usd
        if cached:
            if cache_read_tokens is not None:
                self.cache_read_tokens = cache_read_tokens
            if cache_write_tokens is not None:
                self.cache_write_tokens = cache_write_tokens
            if reasoning_tokens is not None:
                self.reasoning_tokens = reasoning_tokens

    def set_model(self, model: str) -> None:
        """The model that actually answered, when it differs from the one asked for."""
        model = _name("model", model)
        if self._finished:
            return _too_late("set_model", self)
        self.model = model
        if self.span is not None and self._run_token is not None:     # a span still running
            self._telemetry.spans.set_model(self.span, model)

    def first_token(self) -> None:
        """Mark the first streamed token; the first call of a run counts."""
        if self._finished:
            return _too_late("first_token", self)
        if self.first_token_at is None:
            self.first_token_at = _perf_counter()

    def evaluate(self, evaluator: str, score: float, label: str | None = None) -> None:
        """Record a quality score in 0..1 for this run's answer (a gen_ai.evaluation.result event)."""
        evaluator = _name("evaluator", evaluator)
        score = _number("score", score, events.Score, 1.0)
        label = _optional_name("label", label)
        self._telemetry._evaluated(self, evaluator, float(score), label)

    @property
    def trace_id(self) -> str | None:
        return ids_of(self.span)[0] if self.span is not None else None



_TimedHandle = TypeVar("_TimedHandle", bound="ToolRun | WorkflowRun")


class _TimedScope(_Scope[_TimedHandle]):
    """Tool calls and workflows: a span, a run handle, an event at the end."""

    __slots__ = ("_telemetry", "_active")

    def _begin(self) -> tuple[_TimedHandle, trace.Span | None, Token[Any]]:
        raise NotImplementedError

    def _end(self, run: _TimedHandle, duration: float, exc: BaseException | None) -> None:
        raise NotImplementedError

    def __enter__(self) -> _TimedHandle:
        if self._active is not None:
            raise RuntimeError("this scope is already entered; start a new one per run")
        run, span, var_token = self._begin()
        context_token = _attach(span) if span is not None else None
        self._active = (run, context_token, var_token)
        run.started = _perf_counter()
        return run

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        duration = _perf_counter() - self._active[0].started
        run, context_token, var_token = self._active
        self._active = None
        try:
            var_token.var.reset(var_token)
        except ValueError:
            pass        # exited in another Context than entered: see AgentRun.__exit__
        else:
            if context_token is not None:
                otel_context.detach(context_token)
        if exc_type is GeneratorExit:
            exc = None      # a generator closed early: its consumer stopped, the run did not fail
        elif exc is not None and interrupted(exc):
            if run.span is not None:
                self._telemetry.spans.end_interrupted(run.span)
            return False
        self._end(run, duration, exc)
        return False


class _ToolScope(_TimedScope[ToolRun]):
    __slots__ = ("tool", "agent")

    def __init__(self, telemetry: "Telemetry", tool: str, agent: str | None):
        self._telemetry = telemetry
        self._active = None
        self.tool, self.agent = tool, agent

    def _fresh(self) -> "_ToolScope":
        return _ToolScope(self._telemetry, self.tool, self.agent)

    def _begin(self) -> tuple[ToolRun, trace.Span | None, Token[str | None]]:
        tel = self._telemetry
        agent = self.agent
        if agent is None and (current := _current_run.get()) is not None:
            agent = current.agent   # resolved on entry: a decorator is created outside any run
        span = _traced(tel.spans.start_tool(self.tool, agent=agent)) if tel._tracing else None
        return ToolRun(self.tool, agent, span), span, _current_tool.set(self.tool)

    def _end(self, run: ToolRun, duration: float, exc: BaseException | None) -> None:
        tel = self._telemetry
        error_type = None if exc is None else _error_type(exc)
        if run.span is not None:
            tel.spans.end_tool(run.span, error_type=error_type, exception=exc)
        if tel._metrics:
            trace_id, span_id = tel._exemplar_ids(run.span)
            tel.store.apply(events.ToolCall(
                tool=run.tool, status="success" if exc is None else "error", duration_seconds=duration,
                agent=run.agent, error_type=error_type, trace_id=trace_id, span_id=span_id, timestamp=_now()))


class _WorkflowScope(_TimedScope[WorkflowRun]):
    __slots__ = ("workflow", "request_id")

    def __init__(self, telemetry: "Telemetry", workflow: str, request_id: str | None):
        self._telemetry = telemetry
        self._active = None
        self.workflow, self.request_id = workflow, request_id

    def _fresh(self) -> "_WorkflowScope":
        return _WorkflowScope(self._telemetry, self.workflow, self.request_id)

    def _begin(self) -> tuple[WorkflowRun, trace.Span | None, Token[str | None]]:
        tel = self._telemetry
        span = _traced(tel.spans.start_workflow(self.workflow, request_id=self.request_id)) if tel._tracing else None
        return WorkflowRun(self.workflow, self.request_id, span), span, _current_workflow.set(self.workflow)

    def _end(self, run: WorkflowRun, duration: float, exc: BaseException | None) -> None:
        tel = self._telemetry
        error_type = None if exc is None else _error_type(exc)
        if run.span is not None:
            tel.spans.end_workflow(run.span, error_type=error_type, exception=exc)
        if tel._metrics:
            trace_id, span_id = tel._exemplar_ids(run.span)
            tel.store.apply(events.WorkflowRun(
                workflow=run.workflow, status="success" if exc is None else "error", duration_seconds=duration,
                request_id=run.request_id, trace_id=trace_id, span_id=span_id, timestamp=_now()))


class _OTelMetricsBridge:
    """OpenTelemetry SDK metrics on our /metrics, through opentelemetry-exporter-prometheus.

    PrometheusMetricReader registers its collector into the registry it is
    given (here a private one, never prometheus_client's global REGISTRY);
    the bridge itself is a collector, which `Telemetry.render()` appends to the
    store's text and `Telemetry.registry` holds.  Scope labels and
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

    `enabled: false` in the config makes the whole object a no-op (arguments are
    still checked, nothing is recorded, no spans, nothing served);
    `metrics.enabled: false` keeps the spans and records no catalog metrics;
    `tracing.enabled: false` keeps the metrics and makes no spans.
    """

    def __init__(self, config: Config | None = None, *, store: SeriesStore | None = None,
                 registry: CollectorRegistry | None = None, tracer_provider: trace.TracerProvider | None = None,
                 otel_metrics: bool = False, global_meter_provider: bool = False,
                 global_tracer_provider: bool = False):
        if config is not None and not isinstance(config, Config):
            raise ValueError(f"config: expected a Config (config.load_config(path), config.parse_config(mapping) "
                             f"or Telemetry.from_config(path)), got {type(config).__name__}")
        self.config = config = config or Config()
        self.enabled = config.enabled
        self._metrics = config.enabled and config.metrics.enabled
        self.store = store if store is not None else SeriesStore.from_config(config)
        self.registry = registry if registry is not None else CollectorRegistry()
        if self._metrics:
            self.registry.register(self.store)
        self.prices = PriceTable(config.metrics.prices)
        self._pricing = bool(self.prices)       # read on every event: an attribute, not a method call
        self._label_sets: dict[tuple, _LabelSet] = {}       # agent_execution()'s checked label sets

        tracing = config.tracing
        self._owned_tracer_provider = None
        if not config.enabled:
            tracer_provider = None
        elif tracer_provider is None and tracing.enabled:
            tracer_provider = self._owned_tracer_provider = build_tracer_provider(config)
        self.tracer_provider = tracer_provider
        if global_tracer_provider and tracer_provider is not None:
            trace.set_tracer_provider(tracer_provider)
        self.spans = genai_tracer(tracer_provider or trace.NoOpTracerProvider(), tracing)
        self._tracing = tracer_provider is not None
        # Events recorded after the fact (record, record_batch) become spans only
        # when spans go somewhere: otherwise they would only cost ingest throughput.
        self._event_spans = tracer_provider is not None and (
            self._owned_tracer_provider is None or tracing.export_to_console or tracing.export_to_otlp)

        # Served after the store's series: what prometheus_client's default registry serves for any
        # process (process_* CPU, memory and file descriptors, python_* GC and version), and the
        # OpenTelemetry metrics bridge.
        self._appended = CollectorRegistry(auto_describe=False)
        if self._metrics:
            for runtime_collector in (ProcessCollector, PlatformCollector, GCCollector):
                runtime_collector(registry=self._appended)
        self._metrics_bridge = None
        if config.enabled and (otel_metrics or global_meter_provider):
            self._metrics_bridge = _OTelMetricsBridge(config, set_global=global_meter_provider)
            self.registry.register(self._metrics_bridge)
            self._appended.register(self._metrics_bridge)
        self._appending = self._metrics or self._metrics_bridge is not None
        self._apps: list[ExporterApp] = []      # asgi_app()'s, whose worker threads shutdown() ends
        self._closed = False

    @classmethod
    def from_config(cls, path: "str | os.PathLike[str]", **kwargs: Any) -> "Telemetry":
        from .config import load_config
        return cls(load_config(path), **kwargs)

    # `spans` is the GenAITracer behind the API, for GenAI spans of your own.

    @property
    def tracer(self) -> trace.Tracer:
        """The OpenTelemetry tracer our spans come from (for spans of your own)."""
        return self.spans.tracer

    @property
    def meter_provider(self) -> "MeterProvider | None":
        """The OpenTelemetry MeterProvider feeding /metrics, or None without otel_metrics."""
        return self._metrics_bridge.meter_provider if self._metrics_bridge else None

    @staticmethod
    def current_run() -> AgentRun | None:
        """The agent run of the innermost agent_execution() around the caller, if any."""
        return _current_run.get()

    # -- live work ---------------------------------------------------------

    def agent_execution(self, agent: str, *, model: str | None = None, feature: str | None = None,
                        priority: str | None = None, request_id: str | None = None) -> AgentRun:
        """One agent run, as `with`/`async with` (yielding the AgentRun) or as a decorator."""
        try:
            labels = self._label_sets.get((agent, model, feature, priority))
        except TypeError:       # an unhashable argument: _label_set's checks name its field
            labels = None
        if labels is None:
            labels = self._label_set(agent, model, feature, priority)
        if request_id is not None:
            request_id = _request_id(request_id)
        return AgentRun(self, labels, request_id)

    def _label_set(self, agent, model, feature, priority) -> _LabelSet:
        labels = _LabelSet(_name("agent", agent), _optional_name("model", model),
                           _optional_name("feature", feature), _optional_name("priority", priority))
        if len(self._label_sets) >= _LABEL_SETS_LIMIT:
            self._label_sets.clear()
        self._label_sets[(agent, model, feature, priority)] = labels
        return labels

    def tool_call(self, tool: str, *, agent: str | None = None) -> _ToolScope:
        """A tool call; without `agent`, the agent of the run it is entered in."""
        return _ToolScope(self, _name("tool", tool), _optional_name("agent", agent))

    def workflow(self, workflow: str, *, request_id: str | None = None) -> _WorkflowScope:
        """One workflow run (a task, end to end): an invoke_workflow span parenting the agent runs
        inside it, and orchestrator_workflow_runs_total / _duration_seconds."""
        return _WorkflowScope(self, _name("workflow", workflow), _request_id(request_id))

    def state_transition(self, from_state: str, to_state: str, *, workflow: str | None = None,
                         agent: str | None = None) -> None:
        """A move of the workflow's state machine; workflow and agent default to the current ones."""
        from_state, to_state = _name("from_state", from_state), _name("to_state", to_state)
        workflow = _optional_name("workflow", workflow) or _current_workflow.get()
        agent = _optional_name("agent", agent)
        if agent is None and (run := _current_run.get()) is not None:
            agent = run.agent
        if self._tracing:
            self.spans.state_transition(from_state, to_state, workflow=workflow, agent=agent)
        if self._metrics:
            trace_id, span_id = ids_of(trace.get_current_span())
            self.store.apply(events.StateTransition(from_state=from_state, to_state=to_state, workflow=workflow,
                                                    agent=agent, trace_id=trace_id, span_id=span_id))

    def _evaluated(self, run: AgentRun, evaluator: str, score: float, label: str | None) -> None:
        span = run.span
        if span is not None:
            self.spans.evaluation(span, evaluator, score, label)
        if self._metrics:
            trace_id, span_id = self._exemplar_ids(span)
            self.store.apply(events.Evaluation(agent=run.agent, evaluator=evaluator, score=score, label=label,
                                               trace_id=trace_id, span_id=span_id))

    # -- events ------------------------------------------------------------

    def record(self, event) -> None:
        """Record one schema-v1 event (a dict, a legacy collector record, or a decoded event)."""
        event = self.prices.priced(events.decode(event))
        if not self.enabled:
            return
        if self._event_spans:
            event = self._span_for(event)
        elif event.__class__ in _OBSERVED and event.trace_id is None:
            trace_id, span_id = ids_of(trace.get_current_span())   # the caller's own tracing
            if trace_id is not None:
                event = msgspec.structs.replace(event, trace_id=trace_id, span_id=span_id)
        if self._metrics:
            self.store.apply(event)

    def record_batch(self, batch: Iterable, *, spans: bool = True) -> None:
        """Record already decoded events (events.decode_body) under one store lock.

        `spans=False` for events that came from spans (OTLP in): they have theirs already.
        """
        if not self.enabled:
            return
        if self._pricing:
            priced = self.prices.priced
            batch = [priced(event) for event in batch]
        if spans and self._event_spans:
            batch = [self._span_for(event) for event in batch]
        if self._metrics:
            self.store.apply_batch(batch)

    def set_selector_weight(self, task: str, agent: str, weight: float) -> None:
        task, agent = _name("task", task), _name("agent", agent)
        weight = _checked("weight", weight, _Weight)
        if self._metrics:
            self.store.set_selector_weight(task, agent, weight)

    def set_circuit_state(self, agent: str, state: str) -> None:
        self.record({"type": "circuit_state", "agent": agent, "state": state})

    def refresh_on_scrape(self, method: Callable[[], object]) -> None:
        """Call `method` (held weakly) before each scrape: for state that changes with time alone,
        such as a circuit breaker past its cool-down (SeriesStore.refresh_on_scrape)."""
        self.store.refresh_on_scrape(method)

    def _span_for(self, event):
        """Emit the span (or span event) of an event; give it the span's trace ids if it had none."""
        span = self.spans.event_span(event)
        trace_id, span_id = ids_of(span)   # None for events that make no span of their own
        if trace_id is not None and event.trace_id is None:
            event = msgspec.structs.replace(event, trace_id=trace_id, span_id=span_id)
        return event

    @staticmethod
    def _exemplar_ids(span: trace.Span | None) -> tuple[str | None, str | None]:
        """Ids of our span, else of the caller's current span (their own tracing), if sampled."""
        if span is not None:
            ids = ids_of(span)
            if ids[0] is not None:
                return ids
        current = _current_context().get(_SPAN_KEY)
        return (None, None) if current is None else ids_of(current)

    # -- exposition and lifecycle -----------------------------------------

    def render_chunks(self, openmetrics: bool = False) -> Iterator[bytes]:
        """The /metrics body in chunks: the store's series, then the process's and the bridged
        OpenTelemetry metrics."""
        if not self._metrics:
            chunks: Iterator[bytes] = iter([exposition.EOF] if openmetrics else [])
        else:
            chunks = self.store.render_chunks(openmetrics)
        if not self._appending:
            return chunks
        return self._with_appended(chunks, openmetrics)

    def _with_appended(self, chunks: Iterator[bytes], openmetrics: bool) -> Iterator[bytes]:
        for chunk in chunks:
            if chunk is not exposition.EOF:          # one EOF, at the very end (generate_latest writes it)
                yield chunk
        if openmetrics:
            from prometheus_client.openmetrics.exposition import generate_latest
        else:
            from prometheus_client.exposition import generate_latest
        yield generate_latest(self._appended)

    def render(self, openmetrics: bool = False) -> bytes:
        """The /metrics body."""
        return b"".join(self.render_chunks(openmetrics))

    def log_handler(self, stream=None) -> logging.Handler:
        """A `logging` handler for the orchestrator's own lines, as the config's `logging` section says:
        JSON or logfmt lines at `level` and above, with the current span's trace_id and span_id."""
        from .logs import handler
        return handler(self.config.logging, stream)

    def asgi_app(self, *, ingest: bool = True, remediator: AlertRemediator | None = None,
                 max_body_bytes: int | None = None, bearer_token: str | None = None) -> ExporterApp:
        """The exporter's HTTP service as an ASGI application, to mount in your own server.

            app = Starlette(routes=[Mount("/telemetry", app=tel.asgi_app(remediator=remediator))])

        Serves /metrics and health, with `ingest` (the default) /v1/events, and with the
        `remediator` your Healer uses (healing.AlertRemediator) Alertmanager's webhook
        /v1/alertmanager and /v1/agents, under any mount path; with the `log` alert channel
        /v1/alertmanager logs each alert.  Body limit and bearer token default to the config's
        `server` section.
        """
        from .server import ExporterApp, Service
        app = ExporterApp(Service.from_config(self, remediator=remediator, ingest=ingest,
                                              max_body_bytes=max_body_bytes, bearer_token=bearer_token))
        self._apps.append(app)
        return app

    def serve(self, address: str | None = None, *,
              remediator: AlertRemediator | None = None) -> "ServerHandle | _NotServing":
        """Embedded /metrics, /-/healthy, /-/ready on `address` (default server.listen_address),
        and with the `remediator` your Healer uses, Alertmanager's webhook and /v1/agents (see asgi_app).

        Returns a handle whose .stop() stops the server; with `enabled: false` nothing is served
        and the handle's url is None.
        """
        if not self.enabled:
            return _NotServing()
        from .server import start_embedded
        return start_embedded(self, self.config.server.listen_address if address is None else address, remediator)

    def shutdown(self) -> None:
        """Flush and stop the span exporters and the metrics bridge this Telemetry owns, and end
        the worker threads of the apps asgi_app() made."""
        if self._closed:
            return
        self._closed = True
        for app in self._apps:
            app.close()
        if self._owned_tracer_provider is not None:
            # One export's time: a backend that answers takes the queued spans well within it.
            wait = self.config.tracing.otlp_timeout_seconds
            if not shutdown_within(self._owned_tracer_provider, wait):
                _log.warning("the tracing backend did not take the queued spans within %gs "
                             "(tracing.otlp_timeout_seconds); those still queued may be lost", wait)
        if self._metrics_bridge is not None:
            self._metrics_bridge.shutdown()


class _NotServing:
    """What serve() returns when the config disables telemetry."""
    url: str | None = None
    port: int | None = None

    def stop(self, timeout: float | None = None) -> None:
        pass

    def __enter__(self) -> "_NotServing":
        return self

    def __exit__(self, *exc) -> None:
        pass


# Events with a histogram observation, hence an exemplar.
_OBSERVED = (events.AgentExecution, events.ToolCall, events.WorkflowRun, events.Evaluation)
