"""promtool unit tests for the rendered rules, rendered from the same config.

Every alert gets: a case where it fires at the right time with its exact labels
and annotations, a case just under its threshold that stays quiet, zero traffic
(quiet, no NaN alerts), and a counter reset mid-series (an exporter restart)
that neither fires falsely nor hides a real breach.  The quiet cases also hold
a breach in another job's series, which the job selector must leave out; with
grouping labels configured, the firing cases hold a second environment whose
healthy traffic would hide the breach if the rules summed the two.  Ratio and
mean alerts get both sides of the minimum event count.  Every recording rule
gets a value check.  Because the tests are rendered with the rules, a config
with other thresholds, job or labels gets tests that hold for its own.

Timing in the tests is exact: samples and evaluations share one step, counters
start at 0 on a step, so rate() and increase() see no extrapolation, and every
threshold crossing is placed between two steps, never on one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from ..config import Config, SLOConfig
from ..durations import prometheus_duration, prometheus_seconds
from .common import (
    agent_error_ratio_windows, burn_rate_pairs, latency_quantile_windows, long_windows, number, sli_windows)
from .expected import expand, predict_linear, unambiguous_cents, window_increase, window_ratio
from .series import (
    AGENT_ERRORS, AGENT_SLI, BUILD_INFO, CIRCUIT, COST, COST_1D_RULE, COST_1H_RULE, DURATION, EVALUATION_SCORE, EVENTS,
    EXECUTIONS, EXECUTION_RATE_RULE, FLEET_SOURCE_UP, FORECAST_HORIZON_SECONDS, FORWARDED_SPANS, GRPC_REQUESTS,
    HTTP_REQUESTS, OTLP_SPANS, OVERFLOW, REJECTED, SLI, TIME_TO_FIRST_TOKEN, TIME_TO_FIRST_TOKEN_QUANTILE_RULE, TOKENS,
    TOKENS_RULE, TOOL_CALLS, TOOL_DURATION, TOOL_ERROR_RATIO_RULE, TOOL_QUANTILE_RULE, TOOL_RATE_RULE, USAGE_UNKNOWN,
    WORKFLOW_DURATION, WORKFLOW_QUANTILE_RULE, WORKFLOW_RATE_RULE, WORKFLOW_RUNS, WORKFLOW_SLI, latency_quantile_rule)

INSTANCE = "exporter:9464"
ENVIRONMENTS = ("production", "staging")   # the values of the grouping labels, if any
# The agent or tool of the minimum-traffic cases: a name a URL must escape (the alerts' dashboard_url).
FEW = "few & far #2+"
SAMPLES = 1600     # samples per input series: past the last evaluation of every test
DAY = 86400
# A per-step increment that is not a binary fraction adds up to a hair under a whole
# number of events; this much over it keeps "exactly the minimum" at or above it.
MARGIN = 1 + 1e-9

FEATURE_BUDGET = "OrchestratorFeatureDailyCostOverBudget"


def _text(labels: dict) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


class _Cases:
    """The config's job and grouping labels on every test series, and the rendered
    alerts, to expand their annotations for the expectations."""

    def __init__(self, config: Config, alert_groups: list[dict]):
        self.config = config
        self.job = config.alerting.job
        self.other_job = f"{self.job}-other"
        self.group_labels = config.alerting.group_labels
        self.minimum = config.alerting.min_events
        self.step = minute_step(config)
        self.rules: dict[str, list[dict]] = {}
        for group in alert_groups:
            for rule in group["rules"]:
                self.rules.setdefault(rule["alert"], []).append(rule)

    def grouping(self, env: int) -> dict:
        return {label: ENVIRONMENTS[env] for label in self.group_labels}

    def labels(self, *, env: int = 0, job: str | None = None, **labels) -> dict:
        return {"job": job or self.job, "instance": INSTANCE, **self.grouping(env), **labels}

    def series(self, metric: str, values: str, *, env: int = 0, job: str | None = None, **labels) -> dict:
        return {"series": metric + _text(self.labels(env=env, job=job, **labels)), "values": values}

    def rule(self, name: str) -> dict:
        (rule,) = self.rules[name]
        return rule

    def expected(self, name: str, labels: dict, value: float, *, env: int | None = 0,
                 rule: dict | None = None) -> dict:
        """An alert as promtool reports it: `env=None` for an alert without grouping labels."""
        rule = rule or self.rule(name)
        all_labels = {**(self.grouping(env) if env is not None else {}), **labels, **rule["labels"]}
        return {"exp_labels": all_labels,
                "exp_annotations": {k: expand(v, all_labels, value) for k, v in rule["annotations"].items()}}

    def pending(self, name: str) -> float:
        return prometheus_seconds(self.rules[name][0].get("for", "0s"))


def _counter(per_step: float, reset_at: int | None = None, samples: int = SAMPLES) -> str:
    """A counter rising by `per_step` each step, optionally restarting from 0 at sample `reset_at`.

    The restart loses the increment of one step, as a real exporter restart does.
    """
    step = repr(float(per_step))
    if reset_at is None:
        return f"0+{step}x{samples}"
    return f"0+{step}x{reset_at - 1} 0+{step}x{samples - reset_at}"


def _ramp(*segments: tuple[float, int]) -> str:
    """A counter from 0 that rises by `per_step` for `steps` samples, segment after segment."""
    parts, value = ["0"], 0.0
    for per_step, steps in segments:
        parts.append(f"{value + per_step!r}+{float(per_step)!r}x{steps - 1}")
        value += per_step * steps
    return " ".join(parts)


def _jump(at: int, to: float, samples: int = SAMPLES) -> str:
    """A counter at 0 that jumps to `to` at sample `at` and stays there."""
    return f"0x{at - 1} {float(to)!r}x{samples - at}"


def _fire_ratio(threshold: float, minimum: int, window_steps: int) -> tuple[int, int]:
    """(errors, successes) per step giving a ratio clearly above `threshold` that prints
    exactly, with the minimum number of events in a window that lost a step to a restart."""
    scale = max(1, math.ceil(minimum / max(window_steps - 2, 1)))
    for errors, successes in ((1, 1), (3, 1), (19, 1), (99, 1), (999, 1)):
        if errors / (errors + successes) > threshold:
            return errors * scale, successes * scale
    raise ValueError(f"no test ratio above {threshold}")


def _over_ratio(threshold: float) -> tuple[int, int]:
    """(errors, successes) per step giving a ratio just above `threshold`: 1/10 000 more."""
    total = 10_000
    errors = math.floor(round(threshold * total, 6)) + 1
    return errors, total - errors


def _under_ratio(threshold: float) -> tuple[int, int]:
    """(errors, successes) per step giving a ratio just under `threshold`."""
    total = 10_000
    errors = math.ceil(threshold * total) - 1
    return errors, total - errors


def _first_evaluation_after(seconds: float, step: int) -> int:
    """The first evaluation strictly after `seconds`, which must not fall on a step."""
    steps = seconds / step
    if abs(steps - round(steps)) < 0.02:
        raise ValueError(f"a crossing at {seconds}s falls on an evaluation; the test would be ambiguous")
    return (int(steps) + 1) * step


def _firing_after(first_true: float, pending: float, step: int) -> int:
    """When an alert true from `first_true` on has been pending for its `for:`."""
    return int(first_true + math.ceil(pending / step) * step)


def _check(alertname: str, at_seconds: float, expected: list | None = None) -> dict:
    return {"eval_time": prometheus_duration(at_seconds), "alertname": alertname, "exp_alerts": expected or []}


def _minimum_tests(c: _Cases, name: str, window: str, what: str, make, labels: dict, value: float) -> list:
    """Both sides of the minimum event count, on a steady stream that breaches the
    threshold: `make(per_step)` gives the series, `labels` and `value` the alert's."""
    steps = int(prometheus_seconds(window) // c.step)
    fires_at = _firing_after(steps * c.step, c.pending(name), c.step)   # the window fills up at `steps`
    per_step = c.minimum / steps
    if Fraction(per_step) != Fraction(c.minimum, steps):     # not a binary fraction: see MARGIN
        per_step *= MARGIN
    return [
        {"name": f"{name} fires once {c.minimum} {what} fill its {window} window",
         "input_series": make(per_step),
         "alert_rule_test": [_check(name, fires_at - c.step),
                             _check(name, fires_at, [c.expected(name, labels, value)])]},
        {"name": f"{name} stays quiet with {c.minimum - 1} {what} in its {window} window",
         "input_series": make((c.minimum - 1) / steps),
         "alert_rule_test": [_check(name, fires_at), _check(name, fires_at + 10 * c.step)]},
    ]


# -- agents and tools ----------------------------------------------------------------


class _Split(NamedTuple):
    """Events per step of a ratio alert's series: `bad` of `bad + good` count against it."""
    bad: int
    good: int

    @property
    def ratio(self) -> float:
        return self.bad / (self.bad + self.good)


@dataclass(frozen=True)
class _Timing:
    """The evaluation times of an alert's tests over the rate window."""
    fires_at: int       # when a breach from the second sample on has been true for the alert's `for:`
    late: float         # past `fires_at` and a full window
    reset_at: int       # a restart's sample, inside the window that ends at `late`


def _timing(c: _Cases, name: str) -> _Timing:
    window = prometheus_seconds(c.config.alerting.rate_window)
    fires_at = _firing_after(c.step, c.pending(name), c.step)
    late = max(fires_at, window) + 10 * c.step
    return _Timing(fires_at, late, int(late // c.step) - int(window // c.step) // 2 - 2)


@dataclass(frozen=True)
class _RatioPlan:
    """The per-step splits and the timing of a ratio alert's tests."""
    over: _Split        # just above the threshold
    under: _Split       # just under it
    fire: _Split        # clearly above it, with the minimum count even in a window a restart cut short
    timing: _Timing


def _ratio_plan(c: _Cases, name: str, threshold: float) -> _RatioPlan:
    window = prometheus_seconds(c.config.alerting.rate_window)
    return _RatioPlan(
        over=_Split(*_over_ratio(threshold)), under=_Split(*_under_ratio(threshold)),
        fire=_Split(*_fire_ratio(threshold, c.minimum, int(window // c.step))), timing=_timing(c, name))


def _ratio_alert_tests(c: _Cases, name: str, plan: _RatioPlan, found: dict, what: str, *, above: list,
                       quiet: list, across_reset: list, few, few_found: dict | None = None,
                       every_bad: tuple[str, list] | None = None, above_detail: str = "") -> list:
    """The standard cases of the ratio alert `name`, which reports `found`, from each case's input
    series, made from `plan`'s splits: `above` at `plan.over`; `every_bad` (what happens, and its
    series) nothing but bad events; `quiet` at `plan.under`, without traffic, and another job's
    breach; `across_reset` a breach at `plan.fire` and a series at `plan.under`, both restarting at
    `plan.timing.reset_at`.  `few(per_step)` gives the series of both sides of the minimum, `what`
    its events, and `few_found` the alert's labels on them if not `found`."""
    timing = plan.timing
    tests = [
        {"name": f"{name} fires at the right time just above the threshold{above_detail}",
         "input_series": above,
         "alert_rule_test": [_check(name, timing.fires_at - c.step),
                             _check(name, timing.fires_at, [c.expected(name, found, plan.over.ratio)])]},
    ]
    if every_bad:
        happens, series = every_bad
        tests.append({"name": f"{name} fires when {happens}", "input_series": series,
                      "alert_rule_test": [_check(name, timing.fires_at, [c.expected(name, found, 1)])]})
    return tests + [
        {"name": f"{name} stays quiet just under the threshold, without traffic, and for another job",
         "input_series": quiet,
         "alert_rule_test": [_check(name, timing.late)]},
        {"name": f"{name} across a counter reset",
         "input_series": across_reset,
         "alert_rule_test": [_check(name, timing.late, [c.expected(name, found, plan.fire.ratio)])]},
    ] + _minimum_tests(c, name, c.config.alerting.rate_window, what, few, few_found or found, 1)


def _ratio_tests(c: _Cases, name: str, metric: str, label: str, threshold: float, what: str) -> list:
    plan = _ratio_plan(c, name, threshold)

    def pair(value_label, errors, successes, reset=None, **where):
        return [c.series(metric, _counter(errors, reset), **{label: value_label}, status="error", **where),
                c.series(metric, _counter(successes, reset), **{label: value_label}, status="success", **where)]

    # Healthy traffic of the same name in a second environment: summed with the breach,
    # it would bring the ratio under the threshold.
    elsewhere = pair("breach", 0, 100 * sum(plan.over), env=1) if c.group_labels else []
    idle = [c.series(metric, f"0x{SAMPLES}", **{label: "idle"}, status="success"),
            c.series(metric, f"0x{SAMPLES}", **{label: "idle"}, status="error")]
    # An agent whose failures are all the task's own fault (alerting.task_error_types).
    task_faults = []
    if metric == EXECUTIONS and c.config.alerting.task_error_types:
        task_faults = pair("bad_input", *plan.over) + [
            c.series(AGENT_ERRORS, _counter(plan.over.bad), agent="bad_input",
                     error_type=c.config.alerting.task_error_types[-1])]
    return _ratio_alert_tests(
        c, name, plan, {label: "breach"}, what,
        above=pair("breach", *plan.over) + elsewhere,
        quiet=(pair("under", *plan.under) + idle + pair("breach", *plan.over, job=c.other_job)
               + task_faults),
        across_reset=(pair("breach", *plan.fire, plan.timing.reset_at)
                      + pair("under", *plan.under, plan.timing.reset_at)),
        few=lambda per_step: [c.series(metric, _counter(per_step), **{label: FEW}, status="error")],
        few_found={label: FEW})


def _histogram(c: _Cases, metric: str, bounds, per_bucket: dict[int, float], reset_at=None, **labels) -> list:
    """Histogram series observing per_bucket[i] times per step in bucket i, (bounds[i-1], bounds[i]]."""
    series = []
    for i, bound in enumerate(list(bounds) + [math.inf]):
        le = "+Inf" if bound == math.inf else repr(float(bound))
        cumulative = sum(count for bucket, count in per_bucket.items() if bucket <= i)
        values = _counter(cumulative, reset_at) if cumulative else f"0x{SAMPLES}"
        series.append(c.series(f"{metric}_bucket", values, le=le, **labels))
    series.append(c.series(f"{metric}_count", _counter(sum(per_bucket.values()), reset_at), **labels))
    return series


def _p95_just_above(bounds, threshold: float, total: int = 1000) -> tuple[dict[int, int], float]:
    """Observations per bucket whose interpolated p95 is the lowest above `threshold` that
    two adjacent buckets give, and that p95."""
    for upper in range(1, len(bounds)):
        low, high = bounds[upper - 1], bounds[upper]
        if high <= threshold:
            continue
        for k in range(total // 20 + 1, total + 1):       # k in (low, high], the rest at or below low
            p95 = low + (high - low) * (0.95 * total - (total - k)) / k
            if p95 > threshold * (1 + 1e-6):
                return {upper - 1: total - k, upper: k}, p95
    raise ValueError("a p95 threshold must be below the largest bucket bound")


def _latency_tests(c: _Cases, name: str, metric: str, bounds, threshold: float, **fixed) -> list:
    """A p95 alert on `metric`, kept per agent (and the `fixed` labels)."""
    bounds = list(bounds)
    over, p95 = _p95_just_above(bounds, threshold)
    # The first bucket wholly above the threshold: p95 of observations all in it is 95 % of the way up.
    slow = next(i for i in range(1, len(bounds)) if bounds[i - 1] >= threshold)
    slow_p95 = bounds[slow - 1] + 0.95 * (bounds[slow] - bounds[slow - 1])
    # Everything in the highest bucket that ends at or below the threshold: p95 is just under it.
    under = {max(i for i, b in enumerate(bounds) if b <= threshold): 1000}
    timing = _timing(c, name)
    # Many fast observations of the same agent in a second environment: summed with the
    # breach, they would bring the p95 into the first bucket.
    elsewhere = _histogram(c, metric, bounds, {0: 100 * 1000}, env=1, agent="breach", **fixed) if c.group_labels else []
    return [
        {"name": f"{name} fires at the right time just above the threshold",
         "input_series": _histogram(c, metric, bounds, over, agent="breach", **fixed) + elsewhere,
         "alert_rule_test": [_check(name, timing.fires_at - c.step),
                             _check(name, timing.fires_at, [c.expected(name, {"agent": "breach", **fixed}, p95)])]},
        {"name": f"{name} stays quiet just under the threshold, without traffic, and for another job",
         "input_series": _histogram(c, metric, bounds, under, agent="under", **fixed)
         + _histogram(c, metric, bounds, {}, agent="idle", **fixed)
         + _histogram(c, metric, bounds, over, job=c.other_job, agent="breach", **fixed),
         "alert_rule_test": [_check(name, timing.late)]},
        {"name": f"{name} across a counter reset",
         "input_series": _histogram(c, metric, bounds, over, timing.reset_at, agent="breach", **fixed)
         + _histogram(c, metric, bounds, under, timing.reset_at, agent="under", **fixed),
         "alert_rule_test": [_check(name, timing.late, [c.expected(name, {"agent": "breach", **fixed}, p95)])]},
    ] + _minimum_tests(
        c, name, c.config.alerting.rate_window, "observations",
        lambda per_step: _histogram(c, metric, bounds, {slow: per_step}, agent=FEW, **fixed),
        {"agent": FEW, **fixed}, slow_p95)


def _quality_tests(c: _Cases) -> list:
    name = "OrchestratorAgentQualityLow"
    window = c.config.alerting.evaluation_window
    floor = c.config.alerting.thresholds.evaluation_score_floor
    low, high = floor - 0.01, floor + 0.01              # means clearly on either side of the floor
    fires_at = _firing_after(c.step, c.pending(name), c.step)
    late = max(fires_at, prometheus_seconds(window)) + 10 * c.step
    reset_at = int(late // c.step) - 12

    def scores(score, per_step=100, reset=None, **where):
        """`per_step` evaluations a step, every one scoring `score`: the mean is `score`."""
        labels = {"agent": "coder", "evaluator": "tests_pass", **where}
        return [c.series(f"{EVALUATION_SCORE}_sum", _counter(score * per_step, reset), **labels),
                c.series(f"{EVALUATION_SCORE}_count", _counter(per_step, reset), **labels)]

    found = {"agent": "coder", "evaluator": "tests_pass"}
    # Good answers of the same agent in a second environment would lift a shared mean.
    elsewhere = scores(0.99, 100 * 100, env=1) if c.group_labels else []
    return [
        {"name": f"{name} fires at the right time just under the floor",
         "input_series": scores(low) + elsewhere,
         "alert_rule_test": [_check(name, fires_at - c.step), _check(name, fires_at, [c.expected(name, found, low)])]},
        {"name": f"{name} stays quiet just over the floor, without evaluations, and for another job",
         "input_series": scores(high) + scores(0, 0, agent="idle") + scores(low, job=c.other_job),
         "alert_rule_test": [_check(name, late)]},
        {"name": f"{name} across a counter reset",
         "input_series": scores(low, reset=reset_at) + scores(high, reset=reset_at, agent="reviewer"),
         "alert_rule_test": [_check(name, late, [c.expected(name, found, low)])]},
    ] + _minimum_tests(c, name, window, "evaluations", lambda per_step: scores(low, per_step), found, low)


# -- SLO burn rates --------------------------------------------------------------------


def _burn_value(pairs, budget: float, minimum: int, errors_at, successes_at, at: int, step: int) -> float | None:
    """The burn alert's value at `at`: the long-window ratio of its first window pair over the
    threshold in both windows with the minimum count in the long one (the `or` keeps the left
    side), or None when it is quiet."""
    for long, short, factor in pairs:
        threshold = factor * budget
        ratios = [window_ratio(errors_at, successes_at, at, prometheus_seconds(window), step)
                  for window in (long, short)]
        count = (window_increase(errors_at, at, prometheus_seconds(long), step)
                 + window_increase(successes_at, at, prometheus_seconds(long), step))
        if all(ratio is not None and ratio > threshold for ratio in ratios) and count >= minimum:
            return ratios[0]
    return None


def _burn_tests(c: _Cases, sli: SLI, slo: SLOConfig, name: str, windows, step: int, what: str,
                timing: bool = True) -> list:
    """The burn-rate alert `name` over `windows` of `slo`.  `timing`: also when the fastest
    pair fires after a clean stretch, and that the alert resolves while the long windows
    remember an incident (the expressions are the same for every SLI: the agents' alerts
    have these cases, the workflows' need not run them again)."""
    pairs = burn_rate_pairs(slo, windows)
    if not pairs:
        return []
    label, counter = sli.label, sli.counter
    objective = number(slo.objective)
    budget = 1 - slo.objective
    lowest = min(factor for _, _, factor in pairs) * budget
    over_e, over_s = _over_ratio(lowest)
    under_e, under_s = _under_ratio(lowest)
    fire_e, fire_s = _fire_ratio(max(factor for _, _, factor in pairs) * budget, c.minimum, 2)
    longest = max(prometheus_seconds(long) for long, _, _ in pairs)
    shorts = [prometheus_seconds(short) for _, short, _ in pairs]
    # Steady traffic has the same ratio over a long window that is not full yet: the
    # quiet and reset cases need every short window full twice over, not the long ones.
    late = 2 * max(shorts) + 30 * step
    reset_at = int(late // step) - int(min(shorts) // step) // 2 - 1      # inside every window at `late`
    samples = max(int(late // step), int(longest // step)) + 10

    def pair(value, errors, successes, reset=None, **where):
        return [c.series(counter, _counter(errors, reset, samples), **{label: value}, status="error", **where),
                c.series(counter, _counter(successes, reset, samples), **{label: value}, status="success", **where)]

    def expect(value_label, at, errors_at, successes_at):
        value = _burn_value(pairs, budget, c.minimum, errors_at, successes_at, at, step)
        return _check(name, at, None if value is None else [c.expected(name, {label: value_label}, value)])

    def steady(errors, successes):
        return (lambda k: errors * k), (lambda k: successes * k)

    elsewhere = pair("breach", 0, 100 * (over_e + over_s), env=1) if c.group_labels else []
    # No `for:`: the short window is what keeps these quick to fire and to resolve.
    tests = [
        {"name": f"{name} fires at the right time just above its lowest burn threshold",
         "input_series": pair("breach", over_e, over_s) + elsewhere,
         "alert_rule_test": [_check(name, 0), expect("breach", 2 * step, *steady(over_e, over_s))]},
        {"name": f"{name} stays quiet just under its lowest burn threshold, without traffic, and for another job",
         "input_series": pair("under", under_e, under_s) + [
             c.series(counter, f"0x{samples}", **{label: "idle"}, status="success")]
         + pair("breach", over_e, over_s, job=c.other_job),
         "alert_rule_test": [_check(name, late)]},
    ]

    if timing:
        tests += _burn_timing_tests(c, sli, pairs, budget, objective, name, step, expect)
    tests.append(
        {"name": f"{name} across a counter reset",
         "input_series": pair("breach", fire_e, fire_s, reset_at) + pair("under", under_e, under_s, reset_at),
         "alert_rule_test": [
             _check(name, late, [c.expected(name, {label: "breach"}, fire_e / (fire_e + fire_s))])]})

    # Both sides of the minimum: every event fails, all of them in one step, so every
    # window holds them all; only the count can keep the alert quiet.
    jump_at = 10
    for events, fires in ((c.minimum, True), (c.minimum - 1, False)):
        tests.append({
            "name": (f"{name} fires on {events} {what} in its windows" if fires
                     else f"{name} stays quiet on {events} {what} in its windows"),
            "input_series": [c.series(counter, _jump(jump_at, events, samples), **{label: "few"}, status="error")],
            "alert_rule_test": [
                _check(name, (jump_at - 1) * step),
                expect("few", jump_at * step, lambda k, n=events: n if k >= jump_at else 0, lambda k: 0)]})
    return tests


def _burn_timing_tests(c: _Cases, sli: SLI, pairs, budget: float, objective: str, name: str, step: int,
                       expect) -> list:
    label, counter = sli.label, sli.counter
    longest = max(prometheus_seconds(long) for long, _, _ in pairs)
    longest_short = max(prometheus_seconds(short) for _, short, _ in pairs)
    fastest_long, _, fastest_factor = max(pairs, key=lambda pair: pair[2])
    fire_e, fire_s = _fire_ratio(fastest_factor * budget, c.minimum, 2)
    samples = int(longest // step) + 10 + int(2 * longest_short // step)
    tests = []

    # The fastest pair alone: after a clean stretch as long as the longest window, errors
    # just above its threshold fill its long window exactly when the alert should fire.
    clean = int(longest // step)
    fill = prometheus_seconds(fastest_long)
    fast_e, fast_s = _over_ratio(fastest_factor * budget)
    traffic = fast_e + fast_s

    def fast_errors(k):
        return fast_e * max(0, k - clean)

    def fast_successes(k):
        return traffic * min(k, clean) + fast_s * max(0, k - clean)

    tests.append(
        {"name": f"{name} fires when its fastest window pair fills up, after a clean stretch",
         "input_series": [
             c.series(counter, _ramp((0, clean), (fast_e, SAMPLES)), **{label: "sudden"}, status="error"),
             c.series(counter, _ramp((traffic, clean), (fast_s, SAMPLES)), **{label: "sudden"}, status="success")],
         "alert_rule_test": [expect("sudden", clean * step + fill - step, fast_errors, fast_successes),
                             expect("sudden", clean * step + fill, fast_errors, fast_successes)]})

    # An incident that fills every short window, then stops: afterwards the long
    # windows still remember it, but the short ones do not, and the alert resolves.
    incident_steps = int(2 * longest_short // step)
    recovered = (incident_steps + 1) * step + longest_short + step

    def incident_errors(k):
        return fire_e * min(k, incident_steps)

    def incident_successes(k):
        return fire_s * k

    remembered = []
    for long, _, factor in pairs:
        threshold = factor * budget
        ratio = window_ratio(incident_errors, incident_successes, recovered, prometheus_seconds(long), step)
        if abs(ratio - threshold) > 0.05 * threshold:
            matcher = _text({**c.grouping(0), label: "recovered"})
            remembered.append({
                "expr": f"{sli.error_ratio_rule(long)}{matcher} > bool ({number(factor)} * (1 - {objective}))",
                "eval_time": prometheus_duration(recovered),
                "exp_samples": [{"labels": matcher, "value": int(ratio > threshold)}]})
    tests += [
        {"name": f"{name} stays quiet once the errors stop, while the long windows still remember them",
         "input_series": [
             c.series(counter, _ramp((fire_e, incident_steps), (0, samples)), **{label: "recovered"}, status="error"),
             c.series(counter, _counter(fire_s, None, samples), **{label: "recovered"}, status="success")],
         "alert_rule_test": [
             expect("recovered", incident_steps * step - step, incident_errors, incident_successes),
             _check(name, recovered)],
         "promql_expr_test": remembered},
    ]
    return tests


# -- cost ----------------------------------------------------------------------------


def _pick_spend(plan, multiples=(2.7, 2.9, 3.1, 2.3, 3.3, 2.1)) -> tuple[float, dict]:
    """A spend rate, in daily budgets a day, and its test plan: the first rate whose crossing
    falls between two evaluations and whose dollar figures print unambiguously."""
    for multiple in multiples:
        try:
            planned = plan(multiple)
        except ValueError:
            continue
        if unambiguous_cents(*planned["values"]):
            return multiple, planned
    raise ValueError("no spend rate gives unambiguous cost tests for this budget")


def _over_budget_tests(c: _Cases, name: str, budget: float, step: int, rule: dict, title: str, **where) -> list:
    """A daily budget alert over the spend of `where` (e.g. one feature): fires at the
    right time, quiet under budget, without spend and for another job, across restarts.
    The tests are named after `title`."""
    late = DAY + 2 * 3600
    early_reset = int(2 * 3600 // step)      # an exporter restart two hours in loses one step's spend

    def spend(multiple, reset=None, agent="planner", **more):
        """A counter from 0 spending `multiple` daily budgets a day."""
        return [c.series(COST, _counter(multiple * budget * step / DAY, reset), agent=agent, model="gpt-4o",
                         **{**where, **more})]

    def plan(multiple):
        """After t < DAY seconds, the last day's spend is multiple * budget * t / DAY."""
        fires_at = _firing_after(_first_evaluation_after(DAY / multiple, step), c.pending(name), step)
        later = fires_at + 2 * 3600
        return {"fires_at": fires_at, "later": later,
                "values": (multiple * budget * fires_at / DAY, multiple * budget * (later - step) / DAY)}

    multiple, at = _pick_spend(plan)
    idle = [c.series(COST, f"0x{SAMPLES}", agent="idle", model="gpt-4o", **where)]
    tests = [
        {"name": f"{name} fires at the right time",
         "input_series": spend(multiple),
         "alert_rule_test": [
             _check(name, at["fires_at"] - step),
             _check(name, at["fires_at"], [c.expected(name, where, at["values"][0], rule=rule)])]},
        {"name": f"{name} stays quiet just under budget, without spend, and for another job",
         "input_series": spend(0.95) + idle + spend(multiple, job=c.other_job),
         "alert_rule_test": [_check(name, DAY - 2 * 3600), _check(name, late)]},
        {"name": f"{name} across a counter reset",
         "input_series": spend(multiple, early_reset),
         "alert_rule_test": [
             _check(name, at["later"], [c.expected(name, where, at["values"][1], rule=rule)])]},
        {"name": f"{name} is not faked by a counter reset",
         "input_series": spend(0.95, early_reset),
         "alert_rule_test": [_check(name, DAY - 2 * 3600), _check(name, late)]},
    ]
    if c.group_labels:
        tests.append(
            {"name": f"{name} stays quiet when two environments each spend under budget",
             "input_series": spend(0.6) + spend(0.6, env=1),
             "alert_rule_test": [_check(name, late)]})
    return [dict(test, name=title + test["name"][len(name):]) for test in tests]


def _forecast_tests(c: _Cases, step: int) -> list:
    name = "OrchestratorDailyCostForecastOverBudget"
    budget = c.config.alerting.budget.day_usd
    horizon = FORECAST_HORIZON_SECONDS
    late = DAY + 2 * 3600
    early_reset = int(2 * 3600 // step)

    def spend(multiple, reset=None, **where):
        return [c.series(COST, _counter(multiple * budget * step / DAY, reset), agent="planner", model="gpt-4o",
                         **where)]

    def plan(multiple):
        """The trailing day's spend rises linearly until DAY, so at t the forecast is
        multiple * budget * (t + horizon) / DAY.  The restart falls inside the hour the
        forecast reads, half an hour before `later`, and the alert must fire throughout."""
        rate = multiple * budget / DAY
        first_true = _first_evaluation_after(DAY / multiple - horizon, step)
        fires_at = _firing_after(first_true, c.pending(name), step)
        later = fires_at + 3 * 3600
        restart = later - 1800

        def forecast_with_restart(at):
            recorded = [(t, rate * (t - (step if t >= restart else 0)))
                        for t in range(max(step, at - 3600), at + 1, step)]
            return predict_linear(recorded, at, horizon)

        if any(forecast_with_restart(t) <= 1.001 * budget for t in range(first_true, later + 1, step)):
            raise ValueError("the restart would interrupt the alert")
        return {"fires_at": fires_at, "later": later, "reset": restart // step,
                "values": (rate * (fires_at + horizon), forecast_with_restart(later))}

    multiple, at = _pick_spend(plan)
    # A business-hours workload: 8 h of spend a day, 0.9 budgets a day in total, so the
    # peak hourly rate times 24 is 2.7 budgets.  From the second day on, this hour is
    # compared with the same hour yesterday and the forecast stays at 0.9 budgets.
    business, off = int(8 * 3600 // step), int(16 * 3600 // step)
    business_spend = 0.9 * budget / business
    workdays = _ramp((business_spend, business), (0, off), (business_spend, business), (0, off),
                     (business_spend, business))
    tests = [
        {"name": f"{name} fires at the right time",
         "input_series": spend(multiple),
         "alert_rule_test": [
             _check(name, at["fires_at"] - step),
             _check(name, at["fires_at"], [c.expected(name, {}, at["values"][0])])]},
        # Not on the first day: while the trailing day still fills up, its rise reads as a
        # trend, and spend above 24/28 of the budget warns in the day's last hours (runbook).
        {"name": f"{name} stays quiet just under budget once a day of spend is in, without spend, "
                 "and for another job",
         "input_series": spend(0.95) + [c.series(COST, f"0x{SAMPLES}", agent="idle", model="gpt-4o")]
         + spend(multiple, job=c.other_job),
         "alert_rule_test": [_check(name, 2 * 3600), _check(name, late)]},
        {"name": f"{name} stays quiet on the second day of a business-hours workload under budget",
         "input_series": [c.series(COST, workdays, agent="planner", model="gpt-4o")],
         "alert_rule_test": [_check(name, DAY + 4 * 3600), _check(name, DAY + 8 * 3600)]},
        {"name": f"{name} across a counter reset inside the hour it extrapolates",
         "input_series": spend(multiple, at["reset"]),
         "alert_rule_test": [_check(name, at["later"], [c.expected(name, {}, at["values"][1])])]},
        {"name": f"{name} is not faked by a counter reset",
         "input_series": spend(0.95, early_reset),
         "alert_rule_test": [_check(name, 6 * 3600), _check(name, late)]},
    ]
    if c.group_labels:
        tests.append(
            {"name": f"{name} stays quiet when two environments each spend under budget",
             "input_series": spend(0.6) + spend(0.6, env=1),
             "alert_rule_test": [_check(name, late)]})
    return tests


def _cost_tests(c: _Cases, step: int) -> list:
    budget = c.config.alerting.budget
    tests = []
    if budget.day_usd > 0:     # a zero budget alerts on any spend: nothing to time
        name = "OrchestratorDailyCostOverBudget"
        tests += _over_budget_tests(c, name, budget.day_usd, step, c.rule(name), name)
        tests += _forecast_tests(c, step)
    for (feature, usd), rule in zip(budget.per_feature.items(), c.rules.get(FEATURE_BUDGET, [])):
        if f'feature="{feature}"' not in rule["expr"]:
            raise ValueError(f"the per-feature budget rules are not in the config's order at {feature!r}")
        if usd > 0:
            feature_tests = _over_budget_tests(c, FEATURE_BUDGET, usd, step, rule,
                                               f"{FEATURE_BUDGET} of feature {feature}", feature=feature)
            # Other features' spend is theirs: an unlisted one spending far over does not count.
            feature_tests[1]["input_series"].append(
                c.series(COST, _counter(10 * usd * step / DAY), agent="planner", model="gpt-4o",
                         feature=f"{feature}-unlisted"))
            tests += feature_tests
    return tests


# -- circuit breakers and the exporter -------------------------------------------------


def _circuit_tests(c: _Cases) -> list:
    name = "OrchestratorCircuitBreakerOpen"
    hold = c.pending(name)
    hold_steps = math.ceil(hold / c.step)
    target = {"job": c.job, "instance": INSTANCE, "agent": "coder"}
    fires_at = _firing_after(c.step, hold, c.step)                 # open from the second sample on
    # Open, then the exporter restarts: Prometheus marks its series stale, the breaker's
    # state comes back with the next event, and `for:` counts again from there.
    before_restart = max(1, hold_steps // 2)
    reopened = (before_restart + 2) * c.step
    refires_at = _firing_after(reopened, hold, c.step)
    return [
        {"name": f"{name} fires once open for longer than its for:",
         "input_series": [c.series(CIRCUIT, f"0 2x{SAMPLES}", agent="coder")],
         "alert_rule_test": [_check(name, fires_at - c.step),
                             _check(name, fires_at, [c.expected(name, target, 2)])]},
        {"name": f"{name} stays quiet for half-open, for an opening shorter than its for:, and for another job",
         "input_series": [c.series(CIRCUIT, f"1x{SAMPLES}", agent="probing"),
                          c.series(CIRCUIT, f"2x{hold_steps - 1} 0x{SAMPLES}", agent="blip"),
                          c.series(CIRCUIT, f"0 2x{SAMPLES}", agent="coder", job=c.other_job)],
         "alert_rule_test": [_check(name, hold_steps * c.step), _check(name, fires_at + 10 * c.step)]},
        {"name": f"{name} after an exporter restart that finds the breaker still open",
         "input_series": [c.series(CIRCUIT, f"2x{before_restart} stale 2x{SAMPLES}", agent="coder")],
         "alert_rule_test": [_check(name, refires_at - c.step),
                             _check(name, refires_at, [c.expected(name, target, 2)])]},
    ]


def _exporter_tests(c: _Cases) -> list:
    down, absent, rejected = "OrchestratorExporterDown", "OrchestratorMetricsAbsent", "OrchestratorEventsRejected"
    target = {"job": c.job, "instance": INSTANCE}
    down_at = _firing_after(2 * c.step, c.pending(down), c.step)      # down from the third sample on
    absent_at = _firing_after(0, c.pending(absent), c.step)
    gone_at = _firing_after(21 * c.step, c.pending(absent), c.step)
    plan = _ratio_plan(c, rejected, c.config.alerting.thresholds.rejected_events_ratio)
    over, under, fire = plan.over, plan.under, plan.fire

    def events(accepted, refused, reset=None, **where):
        found = [c.series(REJECTED, _counter(refused, reset), reason="invalid_value", **where)]
        if accepted is not None:       # None: nothing accepted yet, so no such series at all
            found.append(c.series(EVENTS, _counter(accepted, reset), type="agent_execution", **where))
        return found

    return [
        {"name": f"{down} fires when the target stays down",
         "input_series": [c.series("up", f"1 1 0x{SAMPLES}")],
         "alert_rule_test": [_check(down, down_at - c.step),
                             _check(down, down_at, [c.expected(down, target, 0)])]},
        {"name": f"{down} stays quiet while up, for a restart shorter than its for:, and for another job",
         "input_series": [c.series("up", f"1x10 0 1x{SAMPLES}"),
                          c.series("up", f"1 1 0x{SAMPLES}", job=c.other_job)],
         "alert_rule_test": [_check(down, 11 * c.step), _check(down, 30 * c.step)]},
        {"name": f"{absent} fires when no series of its job exist",
         "input_series": [c.series("up", f"1x{SAMPLES}", job=c.other_job),
                          c.series(BUILD_INFO, f"1x{SAMPLES}", job=c.other_job, version="1.0.0")],
         "alert_rule_test": [_check(absent, absent_at - c.step),
                             _check(absent, absent_at, [c.expected(absent, {"job": c.job}, 1, env=None)])]},
        # A restart: the failed scrapes mark the series stale, absent() is briefly true.
        {"name": f"{absent} stays quiet while the exporter reports, across a restart",
         "input_series": [c.series(BUILD_INFO, f"1x20 stale _x2 1x{SAMPLES}", version="1.0.0")],
         "alert_rule_test": [_check(absent, 22 * c.step), _check(absent, absent_at + 22 * c.step)]},
    ] + ([
        # One deployment's exporters vanish (their series go stale) while another's report.
        {"name": f"{absent} fires when one deployment's exporters vanish while another reports",
         "input_series": [c.series(BUILD_INFO, "1x20 stale", version="1.0.0"),
                          c.series(BUILD_INFO, f"1x{SAMPLES}", env=1, version="1.0.0")],
         "alert_rule_test": [_check(absent, gone_at - c.step),
                             _check(absent, gone_at, [c.expected(absent, {"job": c.job}, 1)])]},
    ] if c.group_labels else []) + _ratio_alert_tests(
        c, rejected, plan, target, "events",
        above=events(over.good, over.bad),
        every_bad=("every event is rejected", events(None, 2 * c.minimum)),
        quiet=events(under.good, under.bad) + events(0, 0, instance="idle:9464")
        + events(over.good, over.bad, job=c.other_job),
        across_reset=events(fire.good, fire.bad, plan.timing.reset_at)
        + events(under.good, under.bad, plan.timing.reset_at, instance="calm:9464"),
        few=lambda per_step: events(None, per_step))


def _forwarding_tests(c: _Cases) -> list:
    """Spans forwarded to the tracing backend (otlp.forward_spans) that were dropped or failed."""
    name = "OrchestratorSpansNotForwarded"
    target = {"job": c.job, "instance": INSTANCE}
    plan = _ratio_plan(c, name, c.config.alerting.thresholds.unforwarded_spans_ratio)
    over, under, fire = plan.over, plan.under, plan.fire

    def spans(sent, dropped, failed, reset=None, **where):
        # Every outcome from the start, as the exporter exposes them (at 0 until the first).
        return [c.series(FORWARDED_SPANS, _counter(n, reset), outcome=outcome, **where)
                for outcome, n in (("sent", sent), ("dropped", dropped), ("failed", failed))]

    # Spans sent without loss by the same instance name in a second environment: summed with
    # the breach, they would bring the ratio under the threshold.
    elsewhere = spans(100 * sum(over), 0, 0, env=1) if c.group_labels else []
    # Both outcomes count against the ratio: the cases split the bad spans between them.
    return _ratio_alert_tests(
        c, name, plan, target, "spans",
        above=spans(over.good, over.bad // 2, over.bad - over.bad // 2) + elsewhere,
        above_detail=", dropped and failed together",
        every_bad=("every span is dropped (a stuck backend)", spans(0, 2 * c.minimum, 0)),
        quiet=spans(under.good, under.bad, 0) + spans(0, 0, 0, instance="idle:9464")
        + spans(over.good, 0, over.bad, job=c.other_job),
        across_reset=spans(fire.good, 0, fire.bad, plan.timing.reset_at)
        + spans(under.good, under.bad, 0, plan.timing.reset_at, instance="calm:9464"),
        few=lambda per_step: spans(0, 0, per_step))


def _span_rejection_tests(c: _Cases) -> list:
    """GenAI spans received over OTLP that the mapping rejected (partial success)."""
    name = "OrchestratorSpansRejected"
    target = {"job": c.job, "instance": INSTANCE}
    plan = _ratio_plan(c, name, c.config.alerting.thresholds.rejected_events_ratio)
    over, under, fire = plan.over, plan.under, plan.fire

    def spans(mapped, rejected, ignored=0, reset=None, **where):
        # Every outcome from the start, as the exporter exposes them (at 0 until the first).
        return [c.series(OTLP_SPANS, _counter(n, reset), outcome=outcome, **where)
                for outcome, n in (("mapped", mapped), ("rejected", rejected), ("ignored", ignored))]

    elsewhere = spans(100 * sum(over), 0, env=1) if c.group_labels else []
    return _ratio_alert_tests(
        c, name, plan, target, "spans",
        # Spans without a GenAI meaning (HTTP, database) are no part of the ratio, however many.
        above=spans(over.good, over.bad, ignored=1000 * sum(over)) + elsewhere,
        above_detail=", among many spans of no GenAI meaning",
        every_bad=("every GenAI span is rejected", spans(0, 2 * c.minimum)),
        quiet=spans(under.good, under.bad) + spans(0, 0, instance="idle:9464")
        + spans(over.good, over.bad, job=c.other_job),
        across_reset=spans(fire.good, fire.bad, 0, plan.timing.reset_at)
        + spans(under.good, under.bad, 0, plan.timing.reset_at, instance="calm:9464"),
        few=lambda per_step: spans(0, per_step))


def _request_refusal_tests(c: _Cases) -> list:
    """/v1/* requests and OTLP/gRPC calls refused for their credentials, a limit or the exporter's
    own state (a token or web config it cannot read)."""
    name = "OrchestratorRequestsRefused"
    target = {"job": c.job, "instance": INSTANCE}
    plan = _ratio_plan(c, name, c.config.alerting.thresholds.rejected_events_ratio)
    over, under, fire = plan.over, plan.under, plan.fire
    export = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

    def requests(answered, refused, reset=None, **where):
        # The refusals split between an HTTP 401 and a gRPC UNAVAILABLE: one ratio over both.
        return [c.series(HTTP_REQUESTS, _counter(answered, reset), handler="/v1/events", code="200", **where),
                c.series(HTTP_REQUESTS, _counter(refused / 2, reset), handler="/v1/traces", code="401", **where),
                c.series(GRPC_REQUESTS, _counter(refused / 2, reset), method=export, code="UNAVAILABLE", **where)]

    def scrapes(code: str, per_step: float) -> list:
        return [c.series(HTTP_REQUESTS, _counter(per_step), handler="/metrics", code=code)]

    elsewhere = requests(100 * sum(over), 0, env=1) if c.group_labels else []
    return _ratio_alert_tests(
        c, name, plan, target, "requests",
        # Scrapes are no part of the ratio: many answered ones do not dilute it...
        above=requests(over.good, over.bad) + scrapes("200", 1000 * sum(over)) + elsewhere,
        above_detail=", among many scrapes",
        every_bad=("every request is refused", requests(0, 2 * c.minimum)),
        # ...and refused ones (a Prometheus with the wrong credentials) are OrchestratorExporterDown's.
        quiet=requests(under.good, under.bad) + scrapes("401", 1000 * sum(over))
        + requests(0, 0, instance="idle:9464") + requests(over.good, over.bad, job=c.other_job),
        across_reset=requests(fire.good, fire.bad, plan.timing.reset_at)
        + requests(under.good, under.bad, plan.timing.reset_at, instance="calm:9464"),
        few=lambda per_step: requests(0, per_step))


def _failure_mode_tests(c: _Cases) -> list:
    """The exporter's own failure modes: series folded into __overflow__, spend it cannot
    count, fleet sources it cannot poll."""
    overflow, unknown, fleet = "OrchestratorSeriesOverflow", "OrchestratorUsageUnknown", "OrchestratorFleetSourceDown"
    window = prometheus_seconds(c.config.alerting.rate_window)
    target = {"job": c.job, "instance": INSTANCE}
    tools = {"metric": TOOL_CALLS}

    def folded(values: str, **where) -> dict:      # `metric` is a label here, not series()'s argument
        return {"series": OVERFLOW + _text(c.labels(**where, **tools)), "values": values}
    # Overflow: a burst of 3 label sets at sample 5; no for:, it fires at once.
    jump_at = 5
    # Usage unknown: one execution a step from the first sample on.
    unknown_at = _firing_after(c.step, c.pending(unknown), c.step)
    unknown_value = min(unknown_at, window) // c.step
    hold_steps = math.ceil(c.pending(fleet) / c.step)
    fleet_at = _firing_after(c.step, c.pending(fleet), c.step)
    source = {"source": "prometheus"}
    before_restart = max(1, hold_steps // 2)
    return [
        {"name": f"{overflow} fires when label sets fold into __overflow__",
         "input_series": [folded(_jump(jump_at, 3))],
         "alert_rule_test": [_check(overflow, (jump_at - 1) * c.step),
                             _check(overflow, jump_at * c.step, [c.expected(overflow, {**target, **tools}, 3)])]},
        {"name": f"{overflow} stays quiet without overflow and for another job",
         "input_series": [folded(f"0x{SAMPLES}"), folded(_jump(jump_at, 3), job=c.other_job)],
         "alert_rule_test": [_check(overflow, jump_at * c.step), _check(overflow, (jump_at + 2) * c.step)]},
        {"name": f"{overflow} stays quiet across an exporter restart (counter reset)",
         "input_series": [folded(f"3x10 0x{SAMPLES}")],
         "alert_rule_test": [_check(overflow, 11 * c.step), _check(overflow, 14 * c.step)]},
        {"name": f"{unknown} fires while executions have unknown usage",
         "input_series": [c.series(USAGE_UNKNOWN, _counter(1), agent="coder")],
         "alert_rule_test": [_check(unknown, unknown_at - c.step),
                             _check(unknown, unknown_at, [c.expected(unknown, {"agent": "coder"}, unknown_value)])]},
        {"name": f"{unknown} stays quiet when every usage is known and for another job",
         "input_series": [c.series(USAGE_UNKNOWN, f"0x{SAMPLES}", agent="coder"),
                          c.series(USAGE_UNKNOWN, _counter(1), agent="tester", job=c.other_job)],
         "alert_rule_test": [_check(unknown, unknown_at), _check(unknown, unknown_at + 10 * c.step)]},
        {"name": f"{unknown} stays quiet across an exporter restart (counter reset)",
         "input_series": [c.series(USAGE_UNKNOWN, f"5x10 0x{SAMPLES}", agent="coder")],
         "alert_rule_test": [_check(unknown, 11 * c.step), _check(unknown, unknown_at + 12 * c.step)]},
        {"name": f"{fleet} fires once a source has failed for longer than its for:",
         "input_series": [c.series(FLEET_SOURCE_UP, f"1 0x{SAMPLES}", **source)],
         "alert_rule_test": [_check(fleet, fleet_at - c.step),
                             _check(fleet, fleet_at, [c.expected(fleet, {**target, **source}, 0)])]},
        {"name": f"{fleet} stays quiet while up, for a failure shorter than its for:, and for another job",
         "input_series": [c.series(FLEET_SOURCE_UP, f"1x{SAMPLES}", source="alertmanager"),
                          # With `for: 0s` no failure is shorter than it.
                          *([c.series(FLEET_SOURCE_UP, f"1 0x{hold_steps - 1} 1x{SAMPLES}", **source)]
                            if hold_steps else []),
                          c.series(FLEET_SOURCE_UP, f"1 0x{SAMPLES}", job=c.other_job, **source)],
         "alert_rule_test": [_check(fleet, fleet_at), _check(fleet, fleet_at + 10 * c.step)]},
        {"name": f"{fleet} stays quiet after an exporter restart that finds the source up",
         "input_series": [c.series(FLEET_SOURCE_UP, " ".join(["0"] * before_restart) + f" stale 1x{SAMPLES}",
                                   **source)],
         "alert_rule_test": [_check(fleet, fleet_at), _check(fleet, fleet_at + 10 * c.step)]},
    ]


# -- recording rules ---------------------------------------------------------------------


def _rounded(expr: str, eval_time: str, samples: list[tuple[dict, float]]) -> dict:
    """A promql_expr_test on `expr` to four decimals (promtool 2.42 compares floats exactly)."""
    return {"expr": f"round({expr}, 0.0001)", "eval_time": eval_time,
            "exp_samples": [{"labels": _text(labels), "value": round(value, 4)} for labels, value in samples]}


def _recording_tests(c: _Cases) -> list:
    """Every recording rule's value two hours into a steady workload; none for an idle
    agent; another job's series left out; a second environment kept apart."""
    at, hours = "2h", 2
    alerting = c.config.alerting
    env0, env1 = c.grouping(0), c.grouping(1)
    two = bool(c.group_labels)

    def rows(label, values: dict, second: dict | None = None) -> list[tuple[dict, float]]:
        found = [({**env0, label: key}, value) for key, value in values.items()]
        if two and second:
            found += [({**env1, label: key}, value) for key, value in second.items()]
        return found

    def count(per_minute, window):
        return per_minute * min(prometheus_seconds(window), hours * 3600) / 60

    # Planner: 4.5 successes and 1.5 errors a minute, 0.5 of them the task's own fault when
    # alerting.task_error_types names one (those are no failures of the agent); in the second
    # environment, 2 successes.
    task_error_types = alerting.task_error_types
    planner_ratio = 1 / 6 if task_error_types else 0.25
    checks = [_rounded(AGENT_SLI.error_ratio_rule(w), at, rows("agent", {"coder": 0, "planner": planner_ratio},
                                                                   {"planner": 0}))
              for w in agent_error_ratio_windows(c.config)]
    checks += [_rounded(AGENT_SLI.count_rule(w), at, rows("agent", {"coder": count(3, w), "idle": 0,
                                                                    "planner": count(6, w)}, {"planner": count(2, w)}))
               for w in long_windows(alerting.slo)]
    checks += [_rounded(WORKFLOW_SLI.error_ratio_rule(w), at, rows("workflow", {"feature": 0.1, "hotfix": 0},
                                                                       {"feature": 0}))
               for w in sli_windows(alerting.workflow_slo)]
    checks += [_rounded(WORKFLOW_SLI.count_rule(w), at, rows("workflow", {"feature": count(3, w),
                                                                          "hotfix": count(1, w)},
                                                              {"feature": count(1, w)}))
               for w in long_windows(alerting.workflow_slo)]
    # Buckets 1, 2, 4 (10, 20, 40) with every observation in the second: quantiles interpolate linearly.
    checks += [
        _rounded(EXECUTION_RATE_RULE, at, rows("agent", {"coder": 0.05, "idle": 0, "planner": 0.1},
                                               {"planner": 2 / 60})),
        *(_rounded(latency_quantile_rule(w), at, [({**env0, "agent": "planner", "quantile": q}, v)
                                                  for q, v in (("0.5", 1.5), ("0.95", 1.95), ("0.99", 1.99))])
          for w in latency_quantile_windows(c.config)),
        _rounded(TIME_TO_FIRST_TOKEN_QUANTILE_RULE, at,
                 [({**env0, "agent": "planner", "model": "gpt-4o", "quantile": q}, v)
                  for q, v in (("0.5", 1.5), ("0.95", 1.95), ("0.99", 1.99))]),
        _rounded(WORKFLOW_RATE_RULE, at, rows("workflow", {"feature": 0.05, "hotfix": 1 / 60},
                                              {"feature": 1 / 60})),
        _rounded(WORKFLOW_QUANTILE_RULE, at, [({**env0, "quantile": q, "workflow": "feature"}, v)
                                              for q, v in (("0.5", 15), ("0.95", 19.5), ("0.99", 19.9))]),
        _rounded(TOOL_RATE_RULE, at, rows("tool", {"web_search": 0.1})),
        _rounded(TOOL_ERROR_RATIO_RULE, at, rows("tool", {"web_search": 0.2})),
        _rounded(TOOL_QUANTILE_RULE, at, [({**env0, "quantile": "0.95", "tool": "web_search"}, 0.48)]),
        _rounded(COST_1H_RULE, at, [({**env0, "agent": "planner", "model": "gpt-4o"}, 36)]),
        _rounded(COST_1D_RULE, at, [({**env0, "agent": "planner", "model": "gpt-4o"}, 72)]),
        _rounded(TOKENS_RULE, at, [({**env0, "agent": "planner", "model": "gpt-4o", "type": "input"}, 2),
                                   ({**env0, "agent": "planner", "model": "gpt-4o", "type": "output"}, 0.5)]),
    ]
    per_minute = [
        c.series(EXECUTIONS, _counter(4.5), agent="planner", status="success"),
        c.series(EXECUTIONS, _counter(1.5), agent="planner", status="error"),
        c.series(EXECUTIONS, _counter(3), agent="coder", status="success"),
        c.series(EXECUTIONS, f"0x{SAMPLES}", agent="idle", status="success"),
        c.series(EXECUTIONS, _counter(100), agent="coder", status="error", job=c.other_job),
        c.series(AGENT_ERRORS, _counter(1), agent="planner", error_type="AgentDown"),
        c.series(AGENT_ERRORS, _counter(0.5), agent="planner", error_type=(task_error_types or ("BadInput",))[-1]),
        c.series(AGENT_ERRORS, _counter(100), agent="coder", error_type="AgentDown", job=c.other_job),
        *(c.series(AGENT_ERRORS, _counter(100), agent="planner", error_type=t, job=c.other_job)
          for t in task_error_types),
        c.series(WORKFLOW_RUNS, _counter(2.7), workflow="feature", status="success"),
        c.series(WORKFLOW_RUNS, _counter(0.3), workflow="feature", status="error"),
        c.series(WORKFLOW_RUNS, _counter(1), workflow="hotfix", status="success"),
        c.series(WORKFLOW_RUNS, _counter(100), workflow="hotfix", status="error", job=c.other_job),
        c.series(TOOL_CALLS, _counter(4.8), tool="web_search", status="success"),
        c.series(TOOL_CALLS, _counter(1.2), tool="web_search", status="error"),
        c.series(COST, _counter(0.6), agent="planner", model="gpt-4o"),
        c.series(COST, _counter(5), agent="planner", model="gpt-4o", job=c.other_job),
        c.series(TOKENS, _counter(120), agent="planner", model="gpt-4o", type="input"),
        c.series(TOKENS, _counter(30), agent="planner", model="gpt-4o", type="output"),
    ]
    if two:
        per_minute += [c.series(EXECUTIONS, _counter(2), env=1, agent="planner", status="success"),
                       c.series(WORKFLOW_RUNS, _counter(1), env=1, workflow="feature", status="success")]
    histograms = (_histogram(c, DURATION, (1.0, 2.0, 4.0), {1: 10}, agent="planner")
                  + _histogram(c, DURATION, (1.0, 2.0, 4.0), {}, agent="idle")
                  + _histogram(c, DURATION, (1.0, 2.0, 4.0), {2: 10}, job=c.other_job, agent="planner")
                  + _histogram(c, TIME_TO_FIRST_TOKEN, (1.0, 2.0, 4.0), {1: 10}, agent="planner", model="gpt-4o")
                  + _histogram(c, WORKFLOW_DURATION, (10.0, 20.0, 40.0), {1: 3}, workflow="feature")
                  + _histogram(c, TOOL_DURATION, (0.1, 0.5, 1.0), {1: 6}, tool="web_search"))
    return [{
        "interval": "1m",          # the increments above are per minute
        "name": "recording rules compute rates, ratios, counts, quantiles, spend and tokens; none for an idle "
                "agent; another job left out" + ("; two environments kept apart" if two else ""),
        "input_series": per_minute + histograms,
        "promql_expr_test": checks,
    }]


# -- the documents -----------------------------------------------------------------------


def minute_step(config: Config) -> int:
    """The step of the tests over minutes (orchestrator.test.yml): a minute, or less for a
    rate window (the alerts' or the fleet statistics') shorter than two, so that every window
    holds two samples or more."""
    window = min(prometheus_seconds(config.alerting.rate_window),
                 prometheus_seconds(config.healing.fleet.prometheus.window))
    return next((step for step in (60, 30, 20, 15, 10, 5, 2) if window % step == 0 and window >= 2 * step), 1)


def day_step(config: Config) -> int:
    """The step of the tests over days: every evaluation step evaluates every rule, so
    they run as coarse as the ticket alerts' shortest window (four samples in it) allows."""
    ticket = (*config.alerting.slo.ticket_windows, *config.alerting.workflow_slo.ticket_windows)
    shortest = min((prometheus_seconds(short) for _, short, _ in ticket), default=DAY)
    return max(step for step in (60, 300, 900) if step == 60 or 4 * step <= shortest)


def _document(tests: list, step: int, groups: list[dict]) -> dict:
    for test in tests:
        test.setdefault("interval", prometheus_duration(step))
    return {
        "rule_files": ["../rules/orchestrator.rules.yml", "../rules/orchestrator.alerts.yml"],
        "evaluation_interval": prometheus_duration(step),
        "group_eval_order": [group["name"] for group in groups],
        "tests": tests,
    }


def rule_tests(config: Config, recording_groups: list[dict], alert_groups: list[dict]) -> dict[str, dict]:
    """promtool test documents by file name, for the rule groups rendered from `config`
    (rule paths are relative to prometheus/tests/)."""
    c = _Cases(config, alert_groups)
    a = config.alerting
    t = a.thresholds
    step = day_step(config)
    minute_tests = _recording_tests(c)
    day_tests = []
    if a.enabled:
        minute_tests += (
            _ratio_tests(c, "OrchestratorAgentHighErrorRatio", EXECUTIONS, "agent", t.error_ratio, "executions")
            + _latency_tests(c, "OrchestratorAgentSlow", DURATION, config.metrics.execution_buckets,
                             t.latency_p95_seconds)
            + _latency_tests(c, "OrchestratorTimeToFirstTokenSlow", TIME_TO_FIRST_TOKEN,
                             config.metrics.time_to_first_token_buckets, t.time_to_first_token_p95_seconds,
                             model="gpt-4o")
            + _burn_tests(c, AGENT_SLI, a.slo, "OrchestratorAgentErrorBudgetBurnFast", a.slo.page_windows, c.step,
                          "executions")
            + _burn_tests(c, WORKFLOW_SLI, a.workflow_slo, "OrchestratorWorkflowErrorBudgetBurnFast",
                          a.workflow_slo.page_windows, c.step, "runs", timing=False)
            + _quality_tests(c)
            + _ratio_tests(c, "OrchestratorToolHighErrorRatio", TOOL_CALLS, "tool", t.tool_error_ratio, "calls")
            + _circuit_tests(c)
            + _exporter_tests(c)
            + _forwarding_tests(c)
            + _span_rejection_tests(c)
            + _request_refusal_tests(c)
            + _failure_mode_tests(c)
        )
        day_tests = (
            _burn_tests(c, AGENT_SLI, a.slo, "OrchestratorAgentErrorBudgetBurnSlow", a.slo.ticket_windows, step,
                        "executions")
            + _burn_tests(c, WORKFLOW_SLI, a.workflow_slo, "OrchestratorWorkflowErrorBudgetBurnSlow",
                          a.workflow_slo.ticket_windows, step, "runs", timing=False)
            + _cost_tests(c, step))
    # Recording rules first: an alert reading a recorded series as an instant vector
    # looks back only 5 minutes, less than the step of the tests over days.
    groups = recording_groups + alert_groups
    return {
        "orchestrator.test.yml": _document(minute_tests, c.step, groups),
        "orchestrator-days.test.yml": _document(day_tests, step, groups),
    }
