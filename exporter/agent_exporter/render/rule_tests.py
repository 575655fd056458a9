"""promtool unit tests for the rendered rules, rendered from the same config.

Every alert gets: a case where it fires at the right time with its exact labels
and annotations, a case just under its threshold that stays quiet, zero traffic
(quiet, no NaN alerts), and a counter reset mid-series (an exporter restart)
that neither fires falsely nor hides a real breach.  Every recording rule gets a
value check.  Because the tests are rendered with the rules, a config with other
thresholds gets tests that hold for its own numbers.

Timing in the tests is exact: samples and evaluations share one step, counters
start at 0 on a step, so rate() and increase() see no extrapolation, and every
threshold crossing is placed between two steps, never on one.
"""

from __future__ import annotations

import math
import re

from ..config import Config
from .rules import (
    BUILD_INFO, CIRCUIT, COST, COST_1D_RULE, COST_1H_RULE, DURATION, EVENTS, EXECUTION_RATE_RULE, EXECUTIONS,
    FORECAST_HORIZON_SECONDS, JOB, LATENCY_QUANTILE_RULE, REJECTED, SLI_WINDOWS, TOKENS, TOKENS_RULE,
    TOOL_CALLS, TOOL_DURATION, TOOL_ERROR_RATIO_RULE, TOOL_QUANTILE_RULE, TOOL_RATE_RULE, alert_rules,
    burn_rate_pairs, duration_seconds, error_ratio_rule, number, recording_rules)

INSTANCE = "exporter:9464"
STEP = 60          # seconds between samples and between evaluations, in orchestrator.test.yml
SAMPLES = 1600     # samples per input series: past the last evaluation of every test
DAY = 86400


def _minutes(seconds: float) -> str:
    return f"{int(math.ceil(seconds / 60))}m"


def go_float(value: float) -> str:
    """Go's %.4g."""
    return f"{value:.4g}"


def humanize_percentage(value: float) -> str:
    return f"{go_float(value * 100)}%"


def humanize_duration(value: float) -> str:
    if value == 0:
        return "0s"
    if abs(value) >= 1:
        total = int(value)
        seconds, minutes, hours, days = total % 60, (total // 60) % 60, (total // 3600) % 24, total // 86400
        if days:
            return f"{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{minutes}m {seconds}s"
        return f"{go_float(value)}s"
    return f"{go_float(value * 1000)}ms"


_TEMPLATE = re.compile(r"\{\{\s*(\$labels\.(\w+)|\$value(\s*\|\s*(\w+)(\s+\"([^\"]*)\")?)?)\s*\}\}")


def expand(template: str, labels: dict, value: float | None) -> str:
    """The few Go-template forms our annotations use, as Prometheus expands them."""
    def substitute(match):
        if match.group(2):
            return labels.get(match.group(2), "")
        function = match.group(4)
        if function == "humanizePercentage":
            return humanize_percentage(value)
        if function == "humanizeDuration":
            return humanize_duration(value)
        if function == "printf":
            return match.group(6) % value
        return go_float(value)
    return _TEMPLATE.sub(substitute, template)


def _labels(**labels) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _series(metric: str, values: str, **labels) -> dict:
    return {"series": metric + _labels(job=JOB, instance=INSTANCE, **labels), "values": values}


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


def _fire_ratio(threshold: float) -> tuple[int, int]:
    """(errors, successes) per step giving a ratio clearly above `threshold` that prints exactly."""
    for errors, successes in ((1, 1), (3, 1), (19, 1), (99, 1), (999, 1)):
        if errors / (errors + successes) > threshold:
            return errors, successes
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


def _unambiguous_cents(*values: float) -> bool:
    """Whether printf "%.2f" gives the same text for every value whatever its last bits."""
    return all(abs(v * 100 - math.floor(v * 100) - 0.5) > 1e-6 for v in values)


class _Alerts:
    """The rendered alert rules by name, to expand their annotations for expectations."""

    def __init__(self, config: Config):
        self.rules = {r["alert"]: r for g in alert_rules(config) for r in g["rules"]}

    def expected(self, name: str, labels: dict, value: float | None) -> dict:
        rule = self.rules[name]
        all_labels = {**labels, **rule["labels"]}
        return {"exp_labels": all_labels,
                "exp_annotations": {k: expand(v, all_labels, value) for k, v in rule["annotations"].items()}}

    def pending(self, name: str) -> float:
        return duration_seconds(self.rules[name].get("for", "0s"))


def _check(alertname: str, at_seconds: float, expected: list | None = None) -> dict:
    return {"eval_time": _minutes(at_seconds), "alertname": alertname, "exp_alerts": expected or []}


def _ratio_tests(config: Config, alerts: _Alerts, name: str, metric: str, label: str, threshold: float) -> list:
    over_e, over_s = _over_ratio(threshold)
    under_e, under_s = _under_ratio(threshold)
    fire_e, fire_s = _fire_ratio(threshold)
    window = duration_seconds(config.alerting.rate_window)
    fires_at = _firing_after(STEP, alerts.pending(name), STEP)     # true from the second sample on
    late = max(fires_at, window) + 10 * STEP
    reset_at = int(late // STEP) - int(window // STEP) // 2 - 2

    def pair(value_label, errors, successes, reset=None):
        return [_series(metric, _counter(errors, reset), **{label: value_label}, status="error"),
                _series(metric, _counter(successes, reset), **{label: value_label}, status="success")]

    return [
        {"name": f"{name} fires at the right time just above the threshold",
         "input_series": pair("breach", over_e, over_s),
         "alert_rule_test": [
             _check(name, fires_at - STEP),
             _check(name, fires_at, [alerts.expected(name, {label: "breach"}, over_e / (over_e + over_s))])]},
        {"name": f"{name} stays quiet just under the threshold and without traffic",
         "input_series": pair("under", under_e, under_s) + [
             _series(metric, f"0x{SAMPLES}", **{label: "idle"}, status="success"),
             _series(metric, f"0x{SAMPLES}", **{label: "idle"}, status="error")],
         "alert_rule_test": [_check(name, late)]},
        {"name": f"{name} across a counter reset",
         "input_series": pair("breach", fire_e, fire_s, reset_at) + pair("under", under_e, under_s, reset_at),
         "alert_rule_test": [
             _check(name, late, [alerts.expected(name, {label: "breach"}, fire_e / (fire_e + fire_s))])]},
    ]


def _histogram(metric: str, bounds, per_bucket: dict[int, float], reset_at=None, **labels) -> list:
    """Histogram series observing per_bucket[i] times per step in bucket i, (bounds[i-1], bounds[i]]."""
    series = []
    for i, bound in enumerate(list(bounds) + [math.inf]):
        le = "+Inf" if bound == math.inf else repr(float(bound))
        cumulative = sum(count for bucket, count in per_bucket.items() if bucket <= i)
        values = _counter(cumulative, reset_at) if cumulative else f"0x{SAMPLES}"
        series.append(_series(f"{metric}_bucket", values, le=le, **labels))
    series.append(_series(f"{metric}_count", _counter(sum(per_bucket.values()), reset_at), **labels))
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
    raise ValueError("latency_p95_seconds must be below the largest execution bucket bound")


def _latency_tests(config: Config, alerts: _Alerts) -> list:
    name = "OrchestratorAgentSlow"
    threshold = config.alerting.thresholds.latency_p95_seconds
    bounds = list(config.metrics.execution_buckets)
    over, p95 = _p95_just_above(bounds, threshold)
    # Everything in the highest bucket that ends at or below the threshold: p95 is just under it.
    under = {max(i for i, b in enumerate(bounds) if b <= threshold): 1000}
    window = duration_seconds(config.alerting.rate_window)
    fires_at = _firing_after(STEP, alerts.pending(name), STEP)
    late = max(fires_at, window) + 10 * STEP
    reset_at = int(late // STEP) - int(window // STEP) // 2 - 2
    return [
        {"name": f"{name} fires at the right time just above the threshold",
         "input_series": _histogram(DURATION, bounds, over, agent="breach"),
         "alert_rule_test": [_check(name, fires_at - STEP),
                             _check(name, fires_at, [alerts.expected(name, {"agent": "breach"}, p95)])]},
        {"name": f"{name} stays quiet just under the threshold and without traffic",
         "input_series": _histogram(DURATION, bounds, under, agent="under")
         + _histogram(DURATION, bounds, {}, agent="idle"),
         "alert_rule_test": [_check(name, late)]},
        {"name": f"{name} across a counter reset",
         "input_series": _histogram(DURATION, bounds, over, reset_at, agent="breach")
         + _histogram(DURATION, bounds, under, reset_at, agent="under"),
         "alert_rule_test": [_check(name, late, [alerts.expected(name, {"agent": "breach"}, p95)])]},
    ]


def _window_ratio(errors_at, successes_at, at: int, window: float, step: int) -> float | None:
    """An SLI ratio as Prometheus 2.42 computes it here, from the counters' values at sample
    indexes: their differences over [at - window, at]; None without traffic."""
    first = max(0, math.ceil((at - window) / step))
    last = at // step
    errors = errors_at(last) - errors_at(first)
    total = errors + successes_at(last) - successes_at(first)
    return errors / total if total else None


def _burn_value(pairs, budget: float, errors_at, successes_at, at: int, step: int) -> float | None:
    """The burn alert's value at `at`: the long-window ratio of its first window pair over the
    threshold in both windows (the `or` keeps the left side), or None when it is quiet."""
    for long, short, factor in pairs:
        threshold = factor * budget
        ratios = [_window_ratio(errors_at, successes_at, at, duration_seconds(window), step)
                  for window in (long, short)]
        if all(ratio is not None and ratio > threshold for ratio in ratios):
            return ratios[0]
    return None


def _burn_tests(config: Config, alerts: _Alerts, name: str, windows, step: int) -> list:
    pairs = burn_rate_pairs(config, windows)
    if not pairs:
        return []
    objective = number(config.alerting.slo.objective)
    budget = 1 - config.alerting.slo.objective
    lowest = min(factor for _, _, factor in pairs) * budget
    fastest_long, _, fastest_factor = max(pairs, key=lambda pair: pair[2])
    over_e, over_s = _over_ratio(lowest)
    under_e, under_s = _under_ratio(lowest)
    fire_e, fire_s = _fire_ratio(fastest_factor * budget)
    longest = max(duration_seconds(long) for long, _, _ in pairs)
    longest_short = max(duration_seconds(short) for _, short, _ in pairs)
    late = longest + 30 * step
    reset_at = int(late // step) - 30
    samples = int(late // step) + 10

    def pair(agent, errors, successes, reset=None):
        return [_series(EXECUTIONS, _counter(errors, reset, samples), agent=agent, status="error"),
                _series(EXECUTIONS, _counter(successes, reset, samples), agent=agent, status="success")]

    def expect(agent, at, errors_at, successes_at):
        value = _burn_value(pairs, budget, errors_at, successes_at, at, step)
        return _check(name, at, None if value is None else [alerts.expected(name, {"agent": agent}, value)])

    def steady(errors, successes):
        return (lambda k: errors * k), (lambda k: successes * k)

    # No `for:`: the short window is what keeps these quick to fire and to resolve.
    tests = [
        {"name": f"{name} fires at the right time just above its lowest burn threshold",
         "input_series": pair("breach", over_e, over_s),
         "alert_rule_test": [_check(name, 0), expect("breach", 2 * step, *steady(over_e, over_s))]},
        {"name": f"{name} stays quiet just under its lowest burn threshold and without traffic",
         "input_series": pair("under", under_e, under_s) + [
             _series(EXECUTIONS, f"0x{samples}", agent="idle", status="success")],
         "alert_rule_test": [_check(name, late)]},
    ]

    # The fastest pair alone: after a clean stretch as long as the longest window, errors
    # just above its threshold fill its long window exactly when the alert should fire.
    clean = int(longest // step)
    fill = duration_seconds(fastest_long)
    fast_e, fast_s = _over_ratio(fastest_factor * budget)
    traffic = fast_e + fast_s

    def fast_errors(k):
        return fast_e * max(0, k - clean)

    def fast_successes(k):
        return traffic * min(k, clean) + fast_s * max(0, k - clean)

    tests.append(
        {"name": f"{name} fires when its fastest window pair fills up, after a clean stretch",
         "input_series": [
             _series(EXECUTIONS, _ramp((0, clean), (fast_e, SAMPLES)), agent="sudden", status="error"),
             _series(EXECUTIONS, _ramp((traffic, clean), (fast_s, SAMPLES)), agent="sudden", status="success")],
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
        ratio = _window_ratio(incident_errors, incident_successes, recovered, duration_seconds(long), step)
        if abs(ratio - threshold) > 0.05 * threshold:
            remembered.append({
                "expr": f'{error_ratio_rule(long)}{{agent="recovered"}} > bool ({number(factor)} * (1 - {objective}))',
                "eval_time": _minutes(recovered),
                "exp_samples": [{"labels": '{agent="recovered"}', "value": int(ratio > threshold)}]})
    tests += [
        {"name": f"{name} stays quiet once the errors stop, while the long windows still remember them",
         "input_series": [
             _series(EXECUTIONS, _ramp((fire_e, incident_steps), (0, samples)), agent="recovered", status="error"),
             _series(EXECUTIONS, _counter(fire_s, None, samples), agent="recovered", status="success")],
         "alert_rule_test": [
             expect("recovered", incident_steps * step - step, incident_errors, incident_successes),
             _check(name, recovered)],
         "promql_expr_test": remembered},
        {"name": f"{name} across a counter reset",
         "input_series": pair("breach", fire_e, fire_s, reset_at) + pair("under", under_e, under_s, reset_at),
         "alert_rule_test": [
             _check(name, late, [alerts.expected(name, {"agent": "breach"}, fire_e / (fire_e + fire_s))])]},
    ]
    return tests


def _predict_linear(points: list[tuple[float, float]], at: float, horizon: float) -> float:
    """predict_linear() over (time, value) points: least squares, intercept at `at`."""
    n = len(points)
    xs = [t - at for t, _ in points]
    ys = [v for _, v in points]
    sum_x, sum_y = sum(xs), sum(ys)
    slope = ((sum(x * y for x, y in zip(xs, ys)) - sum_x * sum_y / n)
             / (sum(x * x for x in xs) - sum_x * sum_x / n))
    return sum_y / n - slope * sum_x / n + slope * horizon


def _pick_spend(plan, multiples=(2.7, 2.9, 3.1, 2.3, 3.3, 2.1)) -> tuple[float, dict]:
    """A spend rate, in daily budgets a day, and its test plan: the first rate whose crossing
    falls between two evaluations and whose dollar figures print unambiguously."""
    for multiple in multiples:
        try:
            planned = plan(multiple)
        except ValueError:
            continue
        if _unambiguous_cents(*planned["values"]):
            return multiple, planned
    raise ValueError("no spend rate gives unambiguous cost tests for this budget")


def _cost_tests(config: Config, alerts: _Alerts, step: int) -> list:
    budget = config.alerting.budget.day_usd
    over, forecast = "OrchestratorDailyCostOverBudget", "OrchestratorDailyCostForecastOverBudget"
    cost = {"category": "cost"}
    horizon = FORECAST_HORIZON_SECONDS

    def spend(multiple, reset=None, agent="planner"):
        """A counter from 0 spending `multiple` daily budgets a day."""
        return [_series(COST, _counter(multiple * budget * step / DAY, reset), agent=agent, model="gpt-4o")]

    idle = [_series(COST, f"0x{SAMPLES}", agent="idle", model="gpt-4o")]
    late = DAY + 2 * 3600
    early_reset = int(2 * 3600 // step)      # an exporter restart two hours in loses one step's spend

    def over_plan(multiple):
        """After t < DAY seconds, the last day's spend is multiple * budget * t / DAY."""
        fires_at = _firing_after(_first_evaluation_after(DAY / multiple, step), alerts.pending(over), step)
        later = fires_at + 2 * 3600
        return {"fires_at": fires_at, "later": later,
                "values": (multiple * budget * fires_at / DAY, multiple * budget * (later - step) / DAY)}

    def forecast_plan(multiple):
        """The trailing day's spend rises linearly until DAY, so at t the forecast is
        multiple * budget * (t + horizon) / DAY.  The restart falls inside the hour the
        forecast reads, half an hour before `later`, and the alert must fire throughout."""
        rate = multiple * budget / DAY
        first_true = _first_evaluation_after(DAY / multiple - horizon, step)
        fires_at = _firing_after(first_true, alerts.pending(forecast), step)
        later = fires_at + 3 * 3600
        restart = later - 1800

        def forecast_with_restart(at):
            recorded = [(t, rate * (t - (step if t >= restart else 0)))
                        for t in range(max(step, at - 3600), at + 1, step)]
            return _predict_linear(recorded, at, horizon)

        if any(forecast_with_restart(t) <= 1.001 * budget for t in range(first_true, later + 1, step)):
            raise ValueError("the restart would interrupt the alert")
        return {"fires_at": fires_at, "later": later, "reset": restart // step,
                "values": (rate * (fires_at + horizon), forecast_with_restart(later))}

    over_multiple, over_at = _pick_spend(over_plan)
    forecast_multiple, forecast_at = _pick_spend(forecast_plan)

    # A business-hours workload: 8 h of spend a day, 0.9 budgets a day in total, so the
    # peak hourly rate times 24 is 2.7 budgets.  From the second day on, this hour is
    # compared with the same hour yesterday and the forecast stays at 0.9 budgets.
    business, off = int(8 * 3600 // step), int(16 * 3600 // step)
    business_spend = 0.9 * budget / business
    workdays = _ramp((business_spend, business), (0, off), (business_spend, business), (0, off),
                     (business_spend, business))

    return [
        {"name": f"{over} fires at the right time",
         "input_series": spend(over_multiple),
         "alert_rule_test": [
             _check(over, over_at["fires_at"] - step),
             _check(over, over_at["fires_at"], [alerts.expected(over, cost, over_at["values"][0])])]},
        {"name": f"{over} stays quiet just under budget and without spend",
         "input_series": spend(0.95) + idle,
         "alert_rule_test": [_check(over, DAY - 2 * 3600), _check(over, late)]},
        {"name": f"{over} across a counter reset",
         "input_series": spend(over_multiple, early_reset),
         "alert_rule_test": [
             _check(over, over_at["later"], [alerts.expected(over, cost, over_at["values"][1])])]},
        {"name": f"{over} is not faked by a counter reset",
         "input_series": spend(0.95, early_reset),
         "alert_rule_test": [_check(over, DAY - 2 * 3600), _check(over, late)]},
        {"name": f"{forecast} fires at the right time",
         "input_series": spend(forecast_multiple),
         "alert_rule_test": [
             _check(forecast, forecast_at["fires_at"] - step),
             _check(forecast, forecast_at["fires_at"],
                    [alerts.expected(forecast, cost, forecast_at["values"][0])])]},
        # Not on the first day: while the trailing day still fills up, its rise reads as a
        # trend, and spend above 24/28 of the budget warns in the day's last hours (runbook).
        {"name": f"{forecast} stays quiet just under budget once a day of spend is in, and without spend",
         "input_series": spend(0.95) + idle,
         "alert_rule_test": [_check(forecast, 2 * 3600), _check(forecast, late)]},
        {"name": f"{forecast} stays quiet on the second day of a business-hours workload under budget",
         "input_series": [_series(COST, workdays, agent="planner", model="gpt-4o")],
         "alert_rule_test": [_check(forecast, DAY + 4 * 3600), _check(forecast, DAY + 8 * 3600)]},
        {"name": f"{forecast} across a counter reset inside the hour it extrapolates",
         "input_series": spend(forecast_multiple, forecast_at["reset"]),
         "alert_rule_test": [
             _check(forecast, forecast_at["later"],
                    [alerts.expected(forecast, cost, forecast_at["values"][1])])]},
        {"name": f"{forecast} is not faked by a counter reset",
         "input_series": spend(0.95, early_reset),
         "alert_rule_test": [_check(forecast, 6 * 3600), _check(forecast, late)]},
    ]


def _circuit_tests(config: Config, alerts: _Alerts) -> list:
    name = "OrchestratorCircuitBreakerOpen"
    hold = alerts.pending(name)
    hold_steps = math.ceil(hold / STEP)
    labels = {"job": JOB, "instance": INSTANCE, "agent": "coder"}
    fires_at = _firing_after(STEP, hold, STEP)                 # open from the second sample on
    # Open, then the exporter restarts: Prometheus marks its series stale, the breaker's
    # state comes back with the next event, and `for:` counts again from there.
    before_restart = max(1, hold_steps // 2)
    reopened = (before_restart + 2) * STEP
    refires_at = _firing_after(reopened, hold, STEP)
    return [
        {"name": f"{name} fires once open for longer than its for:",
         "input_series": [_series(CIRCUIT, f"0 2x{SAMPLES}", agent="coder")],
         "alert_rule_test": [_check(name, fires_at - STEP),
                             _check(name, fires_at, [alerts.expected(name, labels, 2)])]},
        {"name": f"{name} stays quiet for half-open and for an opening shorter than its for:",
         "input_series": [_series(CIRCUIT, f"1x{SAMPLES}", agent="probing"),
                          _series(CIRCUIT, f"2x{hold_steps - 1} 0x{SAMPLES}", agent="blip")],
         "alert_rule_test": [_check(name, hold_steps * STEP), _check(name, fires_at + 10 * STEP)]},
        {"name": f"{name} after an exporter restart that finds the breaker still open",
         "input_series": [_series(CIRCUIT, f"2x{before_restart} stale 2x{SAMPLES}", agent="coder")],
         "alert_rule_test": [_check(name, refires_at - STEP),
                             _check(name, refires_at, [alerts.expected(name, labels, 2)])]},
    ]


def _exporter_tests(config: Config, alerts: _Alerts) -> list:
    down, absent, rejected = "OrchestratorExporterDown", "OrchestratorMetricsAbsent", "OrchestratorEventsRejected"
    target = {"job": JOB, "instance": INSTANCE}
    down_at = _firing_after(2 * STEP, alerts.pending(down), STEP)      # down from the third sample on
    absent_at = _firing_after(0, alerts.pending(absent), STEP)
    threshold = config.alerting.thresholds.rejected_events_ratio
    bad, good = _fire_ratio(threshold)
    over_bad, over_good = _over_ratio(threshold)
    under_bad, under_good = _under_ratio(threshold)
    window = duration_seconds(config.alerting.rate_window)
    fires_at = _firing_after(STEP, alerts.pending(rejected), STEP)
    late = max(fires_at, window) + 10 * STEP
    reset_at = int(late // STEP) - int(window // STEP) // 2 - 2

    def events(accepted, refused, reset=None, instance=INSTANCE):
        return [{"series": f'{EVENTS}{_labels(job=JOB, instance=instance, type="agent_execution")}',
                 "values": _counter(accepted, reset)},
                {"series": f'{REJECTED}{_labels(job=JOB, instance=instance, reason="invalid_value")}',
                 "values": _counter(refused, reset)}]

    return [
        {"name": f"{down} fires when the target stays down",
         "input_series": [{"series": f"up{_labels(**target)}", "values": f"1 1 0x{SAMPLES}"}],
         "alert_rule_test": [_check(down, down_at - STEP),
                             _check(down, down_at, [alerts.expected(down, target, 0)])]},
        {"name": f"{down} stays quiet while up, and for a restart shorter than its for:",
         "input_series": [{"series": f"up{_labels(**target)}", "values": f"1x10 0 1x{SAMPLES}"}],
         "alert_rule_test": [_check(down, 11 * STEP), _check(down, 30 * STEP)]},
        {"name": f"{absent} fires when no exporter series exist",
         "input_series": [{"series": f"up{_labels(job='other', instance='x')}", "values": f"1x{SAMPLES}"}],
         "alert_rule_test": [_check(absent, absent_at - STEP),
                             _check(absent, absent_at, [alerts.expected(absent, {"job": JOB}, 1)])]},
        # A restart: the failed scrapes mark the series stale, absent() is briefly true.
        {"name": f"{absent} stays quiet while the exporter reports, across a restart",
         "input_series": [{"series": f"{BUILD_INFO}{_labels(version='1.0.0', **target)}",
                           "values": f"1x20 stale _x2 1x{SAMPLES}"}],
         "alert_rule_test": [_check(absent, 22 * STEP), _check(absent, absent_at + 22 * STEP)]},
        {"name": f"{rejected} fires at the right time just above the threshold",
         "input_series": events(over_good, over_bad),
         "alert_rule_test": [
             _check(rejected, fires_at - STEP),
             _check(rejected, fires_at, [alerts.expected(rejected, target, over_bad / (over_bad + over_good))])]},
        {"name": f"{rejected} stays quiet just under the threshold and without traffic",
         "input_series": events(under_good, under_bad) + events(0, 0, instance="idle:9464"),
         "alert_rule_test": [_check(rejected, late)]},
        {"name": f"{rejected} across a counter reset",
         "input_series": events(good, bad, reset_at) + events(under_good, under_bad, reset_at, "calm:9464"),
         "alert_rule_test": [_check(rejected, late, [alerts.expected(rejected, target, bad / (bad + good))])]},
    ]


def _rounded(expr: str, eval_time: str, samples: dict[str, float]) -> dict:
    """A promql_expr_test on `expr` to four decimals (promtool 2.42 compares floats exactly)."""
    return {"expr": f"round({expr}, 0.0001)", "eval_time": eval_time,
            "exp_samples": [{"labels": labels, "value": value} for labels, value in samples.items()]}


def _recording_tests() -> list:
    """Every recording rule's value two hours into a steady workload; none for an idle agent."""
    at = "2h"
    checks = [_rounded(error_ratio_rule(window), at, {'{agent="coder"}': 0, '{agent="planner"}': 0.25})
              for window in SLI_WINDOWS]
    checks += [
        _rounded(EXECUTION_RATE_RULE, at, {'{agent="coder"}': 0.05, '{agent="idle"}': 0, '{agent="planner"}': 0.1}),
        # Buckets 1, 2, 4 s with every observation in (1, 2]: quantiles interpolate linearly.
        _rounded(LATENCY_QUANTILE_RULE, at, {'{agent="planner",quantile="0.5"}': 1.5,
                                             '{agent="planner",quantile="0.95"}': 1.95,
                                             '{agent="planner",quantile="0.99"}': 1.99}),
        _rounded(TOOL_RATE_RULE, at, {'{tool="web_search"}': 0.1}),
        _rounded(TOOL_ERROR_RATIO_RULE, at, {'{tool="web_search"}': 0.2}),
        _rounded(TOOL_QUANTILE_RULE, at, {'{quantile="0.95",tool="web_search"}': 0.48}),
        _rounded(COST_1H_RULE, at, {'{agent="planner",model="gpt-4o"}': 36}),
        _rounded(COST_1D_RULE, at, {'{agent="planner",model="gpt-4o"}': 72}),
        _rounded(TOKENS_RULE, at, {'{agent="planner",model="gpt-4o",type="input"}': 2,
                                   '{agent="planner",model="gpt-4o",type="output"}': 0.5}),
    ]
    per_minute = [
        _series(EXECUTIONS, _counter(4.5), agent="planner", status="success"),
        _series(EXECUTIONS, _counter(1.5), agent="planner", status="error"),
        _series(EXECUTIONS, _counter(3), agent="coder", status="success"),
        _series(EXECUTIONS, f"0x{SAMPLES}", agent="idle", status="success"),
        _series(TOOL_CALLS, _counter(4.8), tool="web_search", status="success"),
        _series(TOOL_CALLS, _counter(1.2), tool="web_search", status="error"),
        _series(COST, _counter(0.6), agent="planner", model="gpt-4o"),
        _series(TOKENS, _counter(120), agent="planner", model="gpt-4o", type="input"),
        _series(TOKENS, _counter(30), agent="planner", model="gpt-4o", type="output"),
    ]
    histograms = (_histogram(DURATION, (1.0, 2.0, 4.0), {1: 10}, agent="planner")
                  + _histogram(DURATION, (1.0, 2.0, 4.0), {}, agent="idle")
                  + _histogram(TOOL_DURATION, (0.1, 0.5, 1.0), {1: 6}, tool="web_search"))
    return [{
        "name": "recording rules compute rates, ratios, quantiles, spend and tokens; none for an idle agent",
        "input_series": per_minute + histograms,
        "promql_expr_test": checks,
    }]


def day_step(config: Config) -> int:
    """The step of the tests over days: every evaluation step evaluates every rule, so
    they run as coarse as the ticket alert's shortest window (four samples in it) allows."""
    shortest = min((duration_seconds(short) for _, short, _ in config.alerting.slo.ticket_windows), default=DAY)
    return max(step for step in (60, 300, 900) if step == 60 or 4 * step <= shortest)


def _document(config: Config, tests: list, step: int) -> dict:
    for test in tests:
        test["interval"] = _minutes(step)
    # Recording rules first: an alert reading a recorded series as an instant vector
    # looks back only 5 minutes, less than the step of the tests over days.
    groups = [group["name"] for group in recording_rules() + alert_rules(config)]
    return {
        "rule_files": ["../rules/orchestrator.rules.yml", "../rules/orchestrator.alerts.yml"],
        "evaluation_interval": _minutes(step),
        "group_eval_order": groups,
        "tests": tests,
    }


def rule_tests(config: Config) -> dict[str, dict]:
    """promtool test documents by file name, for the rules rendered from `config`
    (rule paths are relative to prometheus/tests/)."""
    alerts = _Alerts(config)
    t = config.alerting.thresholds
    slo = config.alerting.slo
    step = day_step(config)
    minute_tests = (
        _recording_tests()
        + _ratio_tests(config, alerts, "OrchestratorAgentHighErrorRatio", EXECUTIONS, "agent", t.error_ratio)
        + _latency_tests(config, alerts)
        + _burn_tests(config, alerts, "OrchestratorAgentErrorBudgetBurnFast", slo.page_windows, STEP)
        + _ratio_tests(config, alerts, "OrchestratorToolHighErrorRatio", TOOL_CALLS, "tool", t.tool_error_ratio)
        + _circuit_tests(config, alerts)
        + _exporter_tests(config, alerts)
    )
    day_tests = _burn_tests(config, alerts, "OrchestratorAgentErrorBudgetBurnSlow", slo.ticket_windows, step)
    if config.alerting.budget.day_usd > 0:     # a zero budget alerts on any spend: nothing to time
        day_tests += _cost_tests(config, alerts, step)
    return {
        "orchestrator.test.yml": _document(config, minute_tests, STEP),
        "orchestrator-days.test.yml": _document(config, day_tests, step),
    }
