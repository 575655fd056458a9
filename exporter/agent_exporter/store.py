"""The series store: aggregates decoded events into the catalog's metrics.

One event is applied under one lock (not a lock per metric), so a scrape never
sees half an event.  Each metric fed by events keeps at most `max_series` label
sets; past that, new label sets fold into one series whose label values are
`__overflow__`, and `orchestrator_exporter_series_overflow_total` counts every
observation folded.  Label sets are formatted once, when a series is created,
so a scrape only formats numbers.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from bisect import bisect_left
from operator import attrgetter
from typing import Callable, Iterable, Iterator, NamedTuple, get_args

from . import catalog, events
from .config import Config, MetricsConfig
from .exposition import escape_label_value
from .version import __version__

_MISSING = ""          # label value for an unset extra label (Prometheus treats "" as absent)
_UNKNOWN_MODEL = "unknown"
_DEFAULT_WORKFLOW = "default"
_STATUSES: tuple[str, ...] = get_args(events.Status)     # success, error

# (token type, event field) in the order of _ExecutionSeries' token slots.
_TOKEN_FIELDS = tuple((kind, f"{kind}_tokens") for kind in catalog.SPLIT_TOKEN_TYPES)


class _Family:
    """The series of one metric: label sets index into flat, parallel lists.

    Subclasses hold the values and define `_grow()`, which appends one series' storage.
    """

    __slots__ = ("spec", "label_names", "index", "label_values", "label_texts",
                 "max_series", "overflow_count", "overflow_index", "status_at")

    def __init__(self, spec: catalog.MetricSpec, label_names: tuple[str, ...], max_series: int):
        self.spec = spec
        self.label_names = label_names
        self.index: dict[tuple, int] = {}
        self.label_values: list[tuple] = []
        self.label_texts: list[str] = []
        self.max_series = max_series
        self.overflow_count = 0
        self.overflow_index = -1
        # A counter by outcome has its label set under every status from the first event on, at 0
        # ("avoid missing metrics"): a series born at 1 shows rate() no increase, so an agent's
        # first error would be invisible to the error-ratio alerts.
        by_outcome = spec.type == catalog.COUNTER and "status" in label_names
        self.status_at = label_names.index("status") if by_outcome else -1

    def _new_series(self, key: tuple) -> int:
        i = len(self.label_values)
        self.index[key] = i
        self.label_values.append(key)
        self.label_texts.append(",".join(
            f'{name}="{escape_label_value(value)}"' for name, value in zip(self.label_names, key)))
        self._grow()
        return i

    def slot(self, key: tuple) -> int:
        """The series index for a label set not in `index` yet (callers try `index` first)."""
        room = self.max_series - len(self.index)
        if room > 0:        # tested first: past the cap, each folded observation comes here
            siblings = ()
            if self.status_at >= 0:
                at = self.status_at
                siblings = [sibling for status in _STATUSES
                            if (sibling := key[:at] + (status,) + key[at + 1:]) != key and sibling not in self.index]
            # A label set comes with its siblings under the other statuses or not at all: alone, its
            # errors would fold while its successes did not, and its error ratio would read 0.
            if 1 + len(siblings) <= room:
                i = self._new_series(key)
                for sibling in siblings:
                    self._new_series(sibling)
                return i
        # Folded label sets are not remembered: an unbounded stream of new
        # names must not grow memory, so each folded observation comes here.
        self.overflow_count += 1
        if self.overflow_index < 0:
            # One series per label set on the page: label values spelled __overflow__ are that
            # series, whether they came before the fold or after (they are not counted as folded).
            overflow_key = (catalog.OVERFLOW_VALUE,) * len(self.label_names)
            i = self.index.get(overflow_key)
            self.overflow_index = self._new_series(overflow_key) if i is None else i
        return self.overflow_index


class _Scalars(_Family):
    """Counters and gauges: one number per series.

    Values start as the int 0: counters incremented by whole numbers stay ints, and
    small ints are shared objects in CPython, which saves a float per series.
    """

    __slots__ = ("values",)

    def __init__(self, spec, label_names, max_series):
        super().__init__(spec, label_names, max_series)
        self.values: list[float] = []

    def _grow(self) -> None:
        self.values.append(0)

    def snapshot(self) -> "ScalarSnapshot":
        return ScalarSnapshot(self.spec, self.label_names, self.label_values[:],
                              self.label_texts[:], self.values[:])


class _Histograms(_Family):
    """Histograms: per series, non-cumulative bucket counts (last is +Inf), a sum, exemplars."""

    __slots__ = ("bounds", "counts", "sums", "exemplars")

    def __init__(self, spec, label_names, max_series, bounds: tuple[float, ...]):
        super().__init__(spec, label_names, max_series)
        self.bounds = bounds
        self.counts: list[list[int]] = []
        self.sums: list[float] = []
        # Per series, None until the first exemplar; then one (trace_id, value, time) slot per bucket.
        self.exemplars: list[list | None] = []

    def _grow(self) -> None:
        self.counts.append([0] * (len(self.bounds) + 1))
        self.sums.append(0.0)
        self.exemplars.append(None)

    def observe(self, i: int, value: float, trace_id: str | None) -> None:
        """Count `value` in series `i`; a trace id becomes the exemplar of its bucket (the latest wins).

        The exemplar is stamped when it is recorded, not with the event's own time: Prometheus keeps
        a series' exemplars in time order, and one late, replayed or future-dated event would otherwise
        have every later exemplar of its bucket refused."""
        b = bisect_left(self.bounds, value)  # first bound >= value: Prometheus' `le` semantics
        self.counts[i][b] += 1
        self.sums[i] += value
        if trace_id is not None:
            slots = self.exemplars[i]
            if slots is None:
                slots = self.exemplars[i] = [None] * (len(self.bounds) + 1)
            slots[b] = (trace_id, value, time.time())

    def snapshot(self) -> "HistogramSnapshot":
        return HistogramSnapshot(
            self.spec, self.label_names, self.label_values[:], self.label_texts[:],
            self.bounds, [c[:] for c in self.counts], self.sums[:],
            [None if e is None else e[:] for e in self.exemplars])


class ScalarSnapshot(NamedTuple):
    spec: catalog.MetricSpec
    label_names: tuple[str, ...]
    label_values: list[tuple]
    label_texts: list[str]
    values: list[float]


class HistogramSnapshot(NamedTuple):
    spec: catalog.MetricSpec
    label_names: tuple[str, ...]
    label_values: list[tuple]
    label_texts: list[str]
    bounds: tuple[float, ...]
    counts: list[list[int]]
    sums: list[float]
    exemplars: list


# Every store of the process, for _new_locks_in_forked_child; weak, so the hook keeps none alive.
_stores: weakref.WeakSet[SeriesStore] = weakref.WeakSet()


def _new_locks_in_forked_child() -> None:
    # A fork copies a lock another thread holds as held, and that thread does not exist in the
    # child: its first recording would wait forever.  The child may see that thread's event half
    # applied, which beats a deadlock.
    for store in _stores:
        store._lock = threading.Lock()


if hasattr(os, "register_at_fork"):     # POSIX only; nothing forks elsewhere
    os.register_at_fork(after_in_child=_new_locks_in_forked_child)


class SeriesStore:
    """Aggregated metrics of the catalog, fed by decoded events.

    Register it in any prometheus_client registry (`registry.register(store)`):
    `collect()` builds fresh metric families on each scrape.
    """

    def __init__(self, metrics_config: MetricsConfig | None = None, *, version: str = __version__):
        cfg = metrics_config or MetricsConfig()
        self._lock = threading.Lock()
        _stores.add(self)
        self._refreshers: list[weakref.WeakMethod] = []
        self._extra_labels = tuple(cfg.extra_labels)
        bounds = {
            catalog.AGENT_EXECUTION_DURATION: cfg.execution_buckets,
            catalog.TOOL_CALL_DURATION: cfg.tool_buckets,
            catalog.LLM_TIME_TO_FIRST_TOKEN: cfg.time_to_first_token_buckets,
            catalog.WORKFLOW_DURATION: cfg.workflow_buckets,
            catalog.EVALUATION_SCORE: catalog.EVALUATION_BUCKETS,
        }
        self._families: dict[str, _Family] = {}
        for spec in catalog.CATALOG:
            names = spec.labels + (self._extra_labels if spec.takes_extra_labels else ())
            max_series = sys.maxsize if spec.fixed_label_values else cfg.max_series
            if spec.type == catalog.HISTOGRAM:
                family = _Histograms(spec, names, max_series, tuple(float(b) for b in bounds[spec]))
            else:
                family = _Scalars(spec, names, max_series)
            self._families[spec.name] = family
        f = self._families
        self._executions: _Scalars = f[catalog.AGENT_EXECUTIONS.name]
        self._durations: _Histograms = f[catalog.AGENT_EXECUTION_DURATION.name]
        self._errors: _Scalars = f[catalog.AGENT_ERRORS.name]
        self._tokens: _Scalars = f[catalog.LLM_TOKENS.name]
        self._ttft: _Histograms = f[catalog.LLM_TIME_TO_FIRST_TOKEN.name]
        self._cost: _Scalars = f[catalog.LLM_COST.name]
        self._usage_unknown: _Scalars = f[catalog.USAGE_UNKNOWN.name]
        self._tool_calls: _Scalars = f[catalog.TOOL_CALLS.name]
        self._tool_durations: _Histograms = f[catalog.TOOL_CALL_DURATION.name]
        self._transitions: _Scalars = f[catalog.STATE_TRANSITIONS.name]
        self._workflow_runs: _Scalars = f[catalog.WORKFLOW_RUNS.name]
        self._workflow_durations: _Histograms = f[catalog.WORKFLOW_DURATION.name]
        self._evaluations: _Histograms = f[catalog.EVALUATION_SCORE.name]
        self._retries: _Scalars = f[catalog.RETRIES.name]
        self._fallbacks: _Scalars = f[catalog.FALLBACKS.name]
        self._circuit: _Scalars = f[catalog.CIRCUIT_BREAKER_STATE.name]
        self._selector: _Scalars = f[catalog.SELECTOR_WEIGHT.name]
        self._budget: _Scalars = f[catalog.COST_BUDGET.name]
        self._fleet_sources: _Scalars = f[catalog.FLEET_SOURCE_UP.name]
        self._events: _Scalars = f[catalog.EXPORTER_EVENTS.name]
        self._rejected: _Scalars = f[catalog.EXPORTER_EVENTS_REJECTED.name]
        self._overflow: _Scalars = f[catalog.EXPORTER_SERIES_OVERFLOW.name]
        self._http_requests: _Scalars = f[catalog.EXPORTER_HTTP_REQUESTS.name]
        self._grpc_requests: _Scalars = f[catalog.EXPORTER_GRPC_REQUESTS.name]
        self._otlp_spans: _Scalars = f[catalog.EXPORTER_OTLP_SPANS.name]
        self._forwarded_spans: _Scalars = f[catalog.EXPORTER_OTLP_FORWARDED_SPANS.name]
        # The fields that decide an agent execution's series, read in one C call; the tuple
        # of them (model and extras as given, unset or not) is the key of _execution_series.
        self._execution_key = attrgetter("agent", "status", "model", *self._extra_labels)
        # _execution_key(event) -> the series an agent execution touches; see _new_execution_series.
        self._execution_series: dict[tuple, list[int]] = {}
        self._execution_series_limit = 4 * cfg.max_series
        self._appliers = {
            events.AgentExecution: self._apply_agent_execution,
            events.ToolCall: self._apply_tool_call,
            events.StateTransition: self._apply_state_transition,
            events.Retry: self._apply_retry,
            events.Fallback: self._apply_fallback,
            events.CircuitState: self._apply_circuit_state,
            events.WorkflowRun: self._apply_workflow_run,
            events.Evaluation: self._apply_evaluation,
        }
        self._event_type_keys = {cls: (tag,) for tag, cls in events.EVENT_TYPES.items()}
        with self._lock:
            self._set(f[catalog.EXPORTER_BUILD_INFO.name], (version,), 1.0)
            # Every event type's counter exists from the start, at 0, so rate() sees its first event.
            self._event_type_index = {cls: self._events.slot(key) for cls, key in self._event_type_keys.items()}
        self._execution_event_index = self._event_type_index[events.AgentExecution]

    @classmethod
    def from_config(cls, config: Config) -> "SeriesStore":
        store = cls(config.metrics)
        store.set_budget("day", config.alerting.budget.day_usd)
        store.set_budget("month", config.alerting.budget.month_usd)
        return store

    # -- recording ---------------------------------------------------------

    def apply(self, event) -> None:
        """Apply one decoded event (see events.decode)."""
        cls = type(event)
        apply = self._appliers[cls]
        with self._lock:
            apply(event)
            self._events.values[self._event_type_index[cls]] += 1

    def apply_batch(self, batch: Iterable) -> None:
        """Apply decoded events under a single lock acquisition; TypeError at the first item that
        is not one (the events before it are applied and counted)."""
        appliers = self._appliers
        per_type = dict.fromkeys(appliers, 0)
        with self._lock:
            try:
                for event in batch:
                    cls = type(event)
                    try:
                        apply = appliers[cls]
                    except KeyError:
                        raise TypeError(f"expected a decoded event (events.decode), got {cls.__name__}") from None
                    apply(event)
                    per_type[cls] += 1
            finally:
                values, index = self._events.values, self._event_type_index
                for cls, n in per_type.items():
                    if n:
                        values[index[cls]] += n

    def count_rejected(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._add(self._rejected, (reason,), n)

    def count_http_request(self, handler: str, code: int) -> None:
        with self._lock:
            self._add(self._http_requests, (handler, str(code)), 1)

    def count_grpc_request(self, method: str, code: str) -> None:
        with self._lock:
            self._add(self._grpc_requests, (method, code), 1)

    def count_otlp_spans(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self._add(self._otlp_spans, (outcome,), n)

    def count_forwarded_spans(self, outcome: str, n: int = 1) -> None:
        """Spans forwarded to the tracing backend by `outcome` (sent, dropped, failed); `n=0` makes the
        series exist at 0, so that rate() sees the first one."""
        with self._lock:
            self._add(self._forwarded_spans, (outcome,), n)

    def set_circuit_state(self, agent: str, state: str) -> None:
        self.apply(events.CircuitState(agent=agent, state=state))

    def set_selector_weight(self, task: str, agent: str, weight: float) -> None:
        with self._lock:
            self._set(self._selector, (task, agent), float(weight))

    def set_fleet_source_up(self, source: str, up: bool) -> None:
        with self._lock:
            self._set(self._fleet_sources, (source,), 1.0 if up else 0.0)

    def set_budget(self, period: str, usd: float) -> None:
        if period not in ("day", "month"):
            raise ValueError(f"period: expected 'day' or 'month', got {period!r}")
        with self._lock:
            self._set(self._budget, (period,), float(usd))

    # The appliers below run with the lock held.

    def _add(self, family: _Scalars, key: tuple, amount: float) -> None:
        i = family.index.get(key)
        if i is None:
            i = family.slot(key)
        family.values[i] += amount

    def _set(self, family: _Scalars, key: tuple, value: float) -> None:
        i = family.index.get(key)
        if i is None:
            i = family.slot(key)
        family.values[i] = value

    def _observe(self, family: _Histograms, key: tuple, value: float, trace_id) -> None:
        i = family.index.get(key)
        if i is None:
            i = family.slot(key)
        family.observe(i, value, trace_id)

    def _extras(self, event) -> tuple:
        if not self._extra_labels:
            return ()
        return tuple(getattr(event, name) or _MISSING for name in self._extra_labels)

    def _new_execution_series(self, key: tuple, e: events.AgentExecution) -> list[int]:
        """The series indexes one agent execution touches, looked up once per label set.

        [executions, duration, cost, usage unknown, time to first token, then one per
        token type of _TOKEN_FIELDS]; -1 until first used.  Only real series are
        remembered (here, and by the callers of apply_execution): an index of an
        __overflow__ series must be looked up, and its observation counted as folded,
        each time.
        """
        extra = self._extras(e)
        executions = self._executions
        i = executions.index.get((e.agent, e.status) + extra)
        if i is None:
            i = executions.slot((e.agent, e.status) + extra)
        durations = self._durations
        d = durations.index.get((e.agent,) + extra)
        if d is None:
            d = durations.slot((e.agent,) + extra)
        series = [i, d] + [-1] * (3 + len(_TOKEN_FIELDS))
        if i != executions.overflow_index and d != durations.overflow_index:
            if len(self._execution_series) >= self._execution_series_limit:
                self._execution_series.clear()
            self._execution_series[key] = series
        return series

    def _series_slot(self, series: list[int], position: int, family: _Family, key: tuple) -> int:
        """series[position], created in `family` on first use (see _new_execution_series)."""
        i = family.index.get(key)
        if i is None:
            i = family.slot(key)
        if i != family.overflow_index:
            series[position] = i
        return i

    def apply_execution(self, e: events.AgentExecution, cache: list | None = None, outcome: bool = True) -> None:
        """Apply one agent execution; `cache`, a [success, error] pair kept by the caller for a
        label set, is filled in here and saves finding the series next time (the in-process API).
        `outcome=False` for a run interrupted before it had one (cancelled): its usage, cost and
        time to first token count, and no execution, duration or error."""
        lock = self._lock
        lock.acquire()          # not `with`: a third cheaper, on the API's hottest path
        try:
            if cache is None:
                self._apply_agent_execution(e, None, outcome)
            else:
                by_status = 0 if e.status == "success" else 1
                series = cache[by_status]
                self._apply_agent_execution(e, series, outcome)
                if series is None:
                    # Now remembered if it is a real series set; an __overflow__ one never is.
                    cache[by_status] = self._execution_series.get(self._execution_key(e))
            self._events.values[self._execution_event_index] += 1
        finally:
            lock.release()

    def _apply_agent_execution(self, e: events.AgentExecution, series: list[int] | None = None,
                               outcome: bool = True) -> None:
        # The hottest path, on ingest and in the API (which passes the `series` it keeps): the
        # series are found once per label set, and here is only arithmetic.
        if series is None:
            key = self._execution_key(e)
            series = self._execution_series.get(key)
            if series is None:
                series = self._new_execution_series(key, e)
        agent = e.agent
        if outcome:
            self._executions.values[series[0]] += 1
            self._durations.observe(series[1], e.duration_seconds, e.trace_id)
            if e.status == "error":
                self._add(self._errors, (agent, e.error_type or "unknown") + self._extras(e), 1)
        tokens = self._tokens
        values = tokens.values
        model = e.model or _UNKNOWN_MODEL
        # Input and output, nearly always there, unrolled; the cache and reasoning types in a loop.
        count = e.input_tokens
        if count is not None:
            i = series[5]
            if i < 0:
                i = self._series_slot(series, 5, tokens, (agent, model, "input") + self._extras(e))
            values[i] += count
        count = e.output_tokens
        if count is not None:
            i = series[6]
            if i < 0:
                i = self._series_slot(series, 6, tokens, (agent, model, "output") + self._extras(e))
            values[i] += count
        if e.cache_read_tokens is not None or e.cache_write_tokens is not None or e.reasoning_tokens is not None:
            for position in (7, 8, 9):
                kind, field = _TOKEN_FIELDS[position - 5]
                count = getattr(e, field)
                if count is not None:
                    i = series[position]
                    if i < 0:
                        i = self._series_slot(series, position, tokens, (agent, model, kind) + self._extras(e))
                    values[i] += count
        elif e.total_tokens is not None and e.input_tokens is None and e.output_tokens is None:
            self._add(tokens, (agent, model, catalog.UNSPLIT_TOKEN_TYPE) + self._extras(e), e.total_tokens)
        if e.time_to_first_token_seconds is not None:
            i = series[4]
            if i < 0:
                i = self._series_slot(series, 4, self._ttft, (agent, model) + self._extras(e))
            self._ttft.observe(i, e.time_to_first_token_seconds, e.trace_id)
        cost = e.cost_usd
        if cost is None:
            i = series[3]
            if i < 0:
                i = self._series_slot(series, 3, self._usage_unknown, (agent,) + self._extras(e))
            self._usage_unknown.values[i] += 1
            return
        i = series[2]
        if i < 0:
            i = self._series_slot(series, 2, self._cost, (agent, model) + self._extras(e))
        self._cost.values[i] += cost

    def _apply_tool_call(self, e: events.ToolCall) -> None:
        self._add(self._tool_calls, (e.tool, e.status), 1)
        self._observe(self._tool_durations, (e.tool,), e.duration_seconds, e.trace_id)

    def _apply_state_transition(self, e: events.StateTransition) -> None:
        self._add(self._transitions, (e.workflow or _DEFAULT_WORKFLOW, e.from_state, e.to_state), 1)

    def _apply_workflow_run(self, e: events.WorkflowRun) -> None:
        self._add(self._workflow_runs, (e.workflow, e.status), 1)
        self._observe(self._workflow_durations, (e.workflow,), e.duration_seconds, e.trace_id)

    def _apply_evaluation(self, e: events.Evaluation) -> None:
        self._observe(self._evaluations, (e.agent, e.evaluator), e.score, e.trace_id)

    def _apply_retry(self, e: events.Retry) -> None:
        self._add(self._retries, (e.agent, e.error_type or "unknown"), 1)

    def _apply_fallback(self, e: events.Fallback) -> None:
        self._add(self._fallbacks, (e.from_agent, e.to_agent), 1)

    def _apply_circuit_state(self, e: events.CircuitState) -> None:
        self._set(self._circuit, (e.agent,), float(catalog.CIRCUIT_STATE_VALUES[e.state]))

    # -- reading -----------------------------------------------------------

    def refresh_on_scrape(self, method: Callable[[], object]) -> None:
        """Call `method` before each snapshot (every scrape), for state that changes with time alone.

        An open circuit breaker is half-open once its cool-down has passed, but says so only when
        asked: with no calls to ask, its gauge would stay open and page.  Held weakly: a
        registration keeps nothing alive.
        """
        with self._lock:
            self._refreshers.append(weakref.WeakMethod(method))

    def _refresh(self) -> None:
        with self._lock:
            self._refreshers = [ref for ref in self._refreshers if ref() is not None]
            methods = [ref() for ref in self._refreshers]
        for method in methods:      # outside the lock: they record what changed
            if method is not None:
                method()

    def snapshot(self) -> list:
        """A consistent copy of every family, taken under the lock; rendering happens outside it."""
        self._refresh()
        with self._lock:
            overflow = self._overflow
            for family in self._families.values():
                # Every metric that can fold is on the page from the start, at 0: the alert on
                # increase() sees a first burst of folds.
                if family.max_series < sys.maxsize:
                    self._set(overflow, (family.spec.name,), family.overflow_count)
            return [family.snapshot() for family in self._families.values()]

    def render_chunks(self, openmetrics: bool = False) -> Iterator[bytes]:
        """The exposition of a snapshot taken now, in chunks (text 0.0.4, or OpenMetrics)."""
        from .exposition import chunks
        return chunks(self.snapshot(), openmetrics)

    def render(self, openmetrics: bool = False) -> bytes:
        return b"".join(self.render_chunks(openmetrics))

    def collect(self):
        """prometheus_client's collector protocol: fresh metric families on each scrape."""
        from .exposition import to_metric_families
        return to_metric_families(self.snapshot())

    def describe(self):
        """The catalog's families without samples, built without collecting: a registry
        learns the names it must refuse to others and can filter by (`?name[]=`)."""
        from .exposition import metric_family
        return [metric_family(family.spec) for family in self._families.values()]


__all__ = ["SeriesStore", "ScalarSnapshot", "HistogramSnapshot"]
