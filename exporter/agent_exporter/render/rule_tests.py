"""promtool unit tests for the rendered rules, rendered from the same config.

Every alert gets: a case where it fires at the right time with its exact labels
and annotations, a case just under its threshold that stays quiet, zero traffic
(quiet, no NaN alerts), and a counter reset mid-series (an exporter restart)
that neither fires falsely nor hides a real breach.  Because the tests are
rendered with the rules, a config with other thresholds gets tests that hold
for its own numbers.
"""

from __future__ import annotations

import math
import re

from ..config import Config
from .rules import (
    BUILD_INFO, CIRCUIT, COST, DURATION, EVENTS, EXECUTIONS, JOB, REJECTED, TOOL_CALLS,
    alert_rules, burn_rate_pairs, duration_seconds, error_ratio_rule)

INSTANCE = "exporter:9464"
STEP = 60          # seconds between samples and between evaluations
SAMPLES = 1600     # a little over a day of one-minute samples


def _minutes(seconds: float) -> str:
    return f"{int(math.ceil(seconds / 60))}m"


def go_float(value: float) -> str:
    """Go's %.4g."""
    text = f"{value:.4g}"
    return text


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
    """A counter rising by `per_step` each minute, optionally restarting from 0 at sample `reset_at`.

    The restart loses the increment of one step, as a real exporter restart does.
    """
    step = repr(float(per_step))
    if reset_at is None:
        return f"0+{step}x{samples}"
    return f"0+{step}x{reset_at - 1} 0+{step}x{samples - reset_at}"


def _fire_ratio(threshold: float) -> tuple[int, int]:
    """(errors, successes) per minute giving a ratio clearly above `threshold` that prints exactly."""
    for errors, successes in ((1, 1), (3, 1), (19, 1), (99, 1), (999, 1)):
        if errors / (errors + successes) > threshold:
            return errors, successes
    raise ValueError(f"no test ratio above {threshold}")


def _under_ratio(threshold: float) -> tuple[int, int]:
    """(errors, successes) per minute giving a ratio just under `threshold`."""
    total = 10_000
    errors = math.ceil(threshold * total) - 1
    return errors, total - errors


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
    fire_e, fire_s = _fire_ratio(threshold)
    under_e, under_s = _under_ratio(threshold)
    window = duration_seconds(config.alerting.rate_window)
    fires_at = STEP + alerts.pending(name)          # true from the second sample on
    late = max(fires_at, window) + 10 * STEP
    reset_at = int(late // STEP) - int(window // STEP) // 2 - 2

    def pair(value_label, errors, successes, reset=None):
        return [_series(metric, _counter(errors, reset), **{label: value_label}, status="error"),
                _series(metric, _counter(successes, reset), **{label: value_label}, status="success")]

    ratio = fire_e / (fire_e + fire_s)
    return [
        {"name": f"{name} fires at the right time",
         "input_series": pair("breach", fire_e, fire_s),
         "alert_rule_test": [
             _check(name, fires_at - STEP),
             _check(name, fires_at, [alerts.expected(name, {label: "breach"}, ratio)])]},
        {"name": f"{name} stays quiet just under the threshold and without traffic",
         "input_series": pair("under", under_e, under_s) + [
             _series(metric, f"0x{SAMPLES}", **{label: "idle"}, status="success"),
             _series(metric, f"0x{SAMPLES}", **{label: "idle"}, status="error")],
         "alert_rule_test": [_check(name, late)]},
        {"name": f"{name} across a counter reset",
         "input_series": pair("breach", fire_e, fire_s, reset_at) + pair("under", under_e, under_s, reset_at),
         "alert_rule_test": [_check(name, late, [alerts.expected(name, {label: "breach"}, ratio)])]},
    ]


def _bucket_series(metric: str, bounds, observed_bucket: int, per_step: float, reset_at=None, **labels) -> list:
    """Histogram series with every observation in bucket `observed_bucket` (its index in bounds)."""
    series = []
    for i, bound in enumerate(list(bounds) + [math.inf]):
        le = "+Inf" if bound == math.inf else repr(float(bound))
        rising = i >= observed_bucket
        values = _counter(per_step, reset_at) if rising else f"0x{SAMPLES}"
        series.append(_series(f"{metric}_bucket", values, le=le, **labels))
    series.append(_series(f"{metric}_count", _counter(per_step, reset_at), **labels))
    return series


def _latency_tests(config: Config, alerts: _Alerts) -> list:
    name = "OrchestratorAgentSlow"
    threshold = config.alerting.thresholds.latency_p95_seconds
    bounds = list(config.metrics.execution_buckets)
    above = next(i for i, b in enumerate(bounds) if b >= threshold) + 1   # bucket (bounds[i-1], bounds[i]]
    if above >= len(bounds):
        raise ValueError("latency_p95_seconds must be below the second largest execution bucket bound")
    under = max(i for i, b in enumerate(bounds) if b <= threshold)
    low = bounds[above - 1]
    p95 = low + (bounds[above] - low) * 0.95
    window = duration_seconds(config.alerting.rate_window)
    fires_at = STEP + alerts.pending(name)
    late = max(fires_at, window) + 10 * STEP
    reset_at = int(late // STEP) - int(window // STEP) // 2 - 2
    return [
        {"name": f"{name} fires at the right time",
         "input_series": _bucket_series(DURATION, bounds, above, 10, agent="breach"),
         "alert_rule_test": [_check(name, fires_at - STEP),
                             _check(name, fires_at, [alerts.expected(name, {"agent": "breach"}, p95)])]},
        {"name": f"{name} stays quiet just under the threshold and without traffic",
         "input_series": _bucket_series(DURATION, bounds, under, 10, agent="under")
         + _bucket_series(DURATION, bounds, 0, 0, agent="idle"),
         "alert_rule_test": [_check(name, late)]},
        {"name": f"{name} across a counter reset",
         "input_series": _bucket_series(DURATION, bounds, above, 10, reset_at, agent="breach")
         + _bucket_series(DURATION, bounds, under, 10, reset_at, agent="under"),
         "alert_rule_test": [_check(name, late, [alerts.expected(name, {"agent": "breach"}, p95)])]},
    ]


def _burn_tests(config: Config, alerts: _Alerts, name: str, windows, step: int = STEP) -> list:
    pairs = burn_rate_pairs(config, windows)
    if not pairs:
        return []
    budget = 1 - config.alerting.slo.objective
    lowest = min(factor for _, _, factor in pairs) * budget
    fire_e, fire_s = _fire_ratio(max(factor for _, _, factor in pairs) * budget)
    under_e, under_s = _under_ratio(lowest)
    longest = max(duration_seconds(long) for long, _, _ in pairs)
    late = longest + 30 * step
    reset_at = int(late // step) - 30
    samples = int(late // step) + 10

    def pair(agent, errors, successes, reset=None):
        return [_series(EXECUTIONS, _counter(errors, reset, samples), agent=agent, status="error"),
                _series(EXECUTIONS, _counter(successes, reset, samples), agent=agent, status="success")]

    # No `for:`: the short window is what keeps these quick to fire and to resolve.  They read
    # recording rules, whose first output they may see in the same evaluation or the next
    # (rule groups run concurrently), so the first sure instant is the second evaluation.
    return [
        {"name": f"{name} fires at the right time",
         "input_series": pair("breach", fire_e, fire_s),
         "alert_rule_test": [_check(name, 0),
                             _check(name, 2 * step, [alerts.expected(name, {"agent": "breach"}, None)])]},
        {"name": f"{name} stays quiet just under the threshold and without traffic",
         "input_series": pair("under", under_e, under_s) + [
             _series(EXECUTIONS, f"0x{samples}", agent="idle", status="success")],
         "alert_rule_test": [_check(name, late)]},
        {"name": f"{name} across a counter reset",
         "input_series": pair("breach", fire_e, fire_s, reset_at) + pair("under", under_e, under_s, reset_at),
         "alert_rule_test": [_check(name, late, [alerts.expected(name, {"agent": "breach"}, None)])]},
    ]


def _cost_tests(config: Config, alerts: _Alerts, step: int = STEP) -> list:
    budget = config.alerting.budget.day_usd
    breach, under = 2 * budget / 1440, 0.9 * budget / 1440          # USD per minute
    minutes = step // 60                                             # minutes per sample
    day = 86400
    over, forecast = "OrchestratorDailyCostOverBudget", "OrchestratorDailyCostForecastOverBudget"
    cost = {"category": "cost"}

    def spend(per_minute, reset=None, agent="planner"):
        return [_series(COST, _counter(per_minute * minutes, reset), agent=agent, model="gpt-4o")]

    return [
        {"name": f"{over} fires once the last day's spend is over budget",
         "input_series": spend(breach),
         "alert_rule_test": [_check(over, 11 * 3600),
                             _check(over, day + 10 * step, [alerts.expected(over, cost, 1440 * breach)])]},
        {"name": f"{over} stays quiet just under budget and without spend",
         "input_series": spend(under) + [_series(COST, f"0x{SAMPLES}", agent="idle", model="gpt-4o")],
         "alert_rule_test": [_check(over, day + 10 * step)]},
        {"name": f"{forecast} stays quiet just under budget and without spend",
         "input_series": spend(under) + [_series(COST, f"0x{SAMPLES}", agent="idle", model="gpt-4o")],
         "alert_rule_test": [_check(forecast, 2 * 3600)]},
        {"name": f"{over} across a counter reset",
         "input_series": spend(breach, reset=700 // minutes),
         "alert_rule_test": [_check(over, day + 10 * step,
                                    [alerts.expected(over, cost, (1440 - minutes) * breach)])]},
        {"name": f"{over} is not faked by a counter reset",
         "input_series": spend(under, reset=700 // minutes),
         "alert_rule_test": [_check(over, day + 10 * step)]},
        {"name": f"{forecast} fires when the hourly rate would overspend the day",
         "input_series": spend(breach),
         "alert_rule_test": [_check(forecast, 25 * 60),
                             _check(forecast, 2 * 3600, [alerts.expected(forecast, cost, 1440 * breach)])]},
        # A reset within the hour loses one sample's increment of the hour's spend.
        {"name": f"{forecast} across a counter reset",
         "input_series": spend(breach, reset=90 // minutes),
         "alert_rule_test": [_check(forecast, 2 * 3600,
                                    [alerts.expected(forecast, cost, (60 - minutes) * 24 * breach)])]},
        {"name": f"{forecast} is not faked by a counter reset",
         "input_series": spend(under, reset=90 // minutes),
         "alert_rule_test": [_check(forecast, 2 * 3600)]},
    ]


def _circuit_tests(config: Config, alerts: _Alerts) -> list:
    name = "OrchestratorCircuitBreakerOpen"
    hold = alerts.pending(name)
    steps = int(hold // STEP)
    labels = {"job": JOB, "instance": INSTANCE}
    return [
        {"name": f"{name} fires once open longer than {steps}m",
         "input_series": [_series(CIRCUIT, f"0 2x{SAMPLES}", agent="coder")],
         "alert_rule_test": [_check(name, hold),
                             _check(name, hold + STEP, [alerts.expected(name, {"agent": "coder", **labels}, 2)])]},
        {"name": f"{name} stays quiet for half-open and for short openings",
         "input_series": [_series(CIRCUIT, f"1x{SAMPLES}", agent="probing"),
                          _series(CIRCUIT, f"2x{steps - 2} 0x{SAMPLES}", agent="blip")],
         "alert_rule_test": [_check(name, hold + 10 * STEP)]},
        {"name": f"{name} after an exporter restart that finds the breaker still open",
         "input_series": [_series(CIRCUIT, f"2x{steps // 2} _x2 2x{SAMPLES}", agent="coder")],
         "alert_rule_test": [_check(name, 3 * hold, [alerts.expected(name, {"agent": "coder", **labels}, 2)])]},
    ]


def _exporter_tests(config: Config, alerts: _Alerts) -> list:
    down, absent, rejected = "OrchestratorExporterDown", "OrchestratorMetricsAbsent", "OrchestratorEventsRejected"
    target = {"job": JOB, "instance": INSTANCE}
    down_for = alerts.pending(down)
    absent_for = alerts.pending(absent)
    threshold = config.alerting.thresholds.rejected_events_ratio
    bad, good = _fire_ratio(threshold)
    under_bad, under_good = _under_ratio(threshold)
    window = duration_seconds(config.alerting.rate_window)
    fires_at = STEP + alerts.pending(rejected)
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
         "alert_rule_test": [_check(down, 2 * STEP + down_for - STEP),
                             _check(down, 2 * STEP + down_for, [alerts.expected(down, target, 0)])]},
        {"name": f"{down} stays quiet while up, and for a restart shorter than its for:",
         "input_series": [{"series": f"up{_labels(**target)}", "values": f"1x10 0 1x{SAMPLES}"}],
         "alert_rule_test": [_check(down, 11 * STEP), _check(down, 30 * STEP)]},
        {"name": f"{absent} fires when no exporter series exist",
         "input_series": [{"series": f"up{_labels(job='other', instance='x')}", "values": f"1x{SAMPLES}"}],
         "alert_rule_test": [_check(absent, absent_for - STEP),
                             _check(absent, absent_for, [alerts.expected(absent, {"job": JOB}, 1)])]},
        {"name": f"{absent} stays quiet while the exporter reports, across a restart gap",
         "input_series": [{"series": f"{BUILD_INFO}{_labels(version='1.0.0', **target)}",
                           "values": f"1x20 _x2 1x{SAMPLES}"}],
         "alert_rule_test": [_check(absent, absent_for + 20 * STEP)]},
        {"name": f"{rejected} fires at the right time",
         "input_series": events(good, bad),
         "alert_rule_test": [_check(rejected, fires_at - STEP),
                             _check(rejected, fires_at, [alerts.expected(rejected, target, bad / (bad + good))])]},
        {"name": f"{rejected} stays quiet just under the threshold and without traffic",
         "input_series": events(under_good, under_bad) + events(0, 0, instance="idle:9464"),
         "alert_rule_test": [_check(rejected, late)]},
        {"name": f"{rejected} across a counter reset",
         "input_series": events(good, bad, reset_at) + events(under_good, under_bad, reset_at, "calm:9464"),
         "alert_rule_test": [_check(rejected, late, [alerts.expected(rejected, target, bad / (bad + good))])]},
    ]


def _recording_tests() -> list:
    return [{
        "name": "recording rules compute rates, ratios and quantiles",
        "input_series": [
            _series(EXECUTIONS, _counter(3), agent="planner", status="success"),
            _series(EXECUTIONS, _counter(1), agent="planner", status="error"),
            _series(EXECUTIONS, _counter(2), agent="coder", status="success"),
            _series(TOOL_CALLS, _counter(4), tool="web_search", status="success"),
        ] + _bucket_series(DURATION, (1.0, 2.0, 4.0), 1, 10, agent="planner"),
        "promql_expr_test": [
            {"expr": "agent:orchestrator_agent_executions:rate5m", "eval_time": "30m",
             "exp_samples": [{"labels": 'agent:orchestrator_agent_executions:rate5m{agent="coder"}',
                              "value": 2 / 60},
                             {"labels": 'agent:orchestrator_agent_executions:rate5m{agent="planner"}',
                              "value": 4 / 60}]},
            {"expr": error_ratio_rule("5m"), "eval_time": "30m",
             "exp_samples": [{"labels": f'{error_ratio_rule("5m")}{{agent="coder"}}', "value": 0},
                             {"labels": f'{error_ratio_rule("5m")}{{agent="planner"}}', "value": 0.25}]},
            {"expr": error_ratio_rule("3d"), "eval_time": "30m",
             "exp_samples": [{"labels": f'{error_ratio_rule("3d")}{{agent="coder"}}', "value": 0},
                             {"labels": f'{error_ratio_rule("3d")}{{agent="planner"}}', "value": 0.25}]},
            {"expr": 'agent_quantile:orchestrator_agent_execution_duration_seconds:histogram_quantile5m'
                     '{quantile="0.5"}', "eval_time": "30m",
             "exp_samples": [{"labels": 'agent_quantile:orchestrator_agent_execution_duration_seconds:'
                                        'histogram_quantile5m{agent="planner",quantile="0.5"}', "value": 1.5}]},
            {"expr": "tool:orchestrator_tool_calls:error_ratio_rate5m", "eval_time": "30m",
             "exp_samples": [{"labels": 'tool:orchestrator_tool_calls:error_ratio_rate5m{tool="web_search"}',
                              "value": 0}]},
        ],
    }]


# Alerts over days are tested at five-minute resolution: every evaluation step
# evaluates every rule, and a day of one-minute steps makes promtool slow.
LONG_STEP = 300


def _document(tests: list, step: int) -> dict:
    for test in tests:
        test["interval"] = _minutes(step)
    return {
        "rule_files": ["../rules/orchestrator.rules.yml", "../rules/orchestrator.alerts.yml"],
        "evaluation_interval": _minutes(step),
        "tests": tests,
    }


def rule_tests(config: Config) -> dict[str, dict]:
    """promtool test documents by file name, for the rules rendered from `config`
    (rule paths are relative to prometheus/tests/)."""
    alerts = _Alerts(config)
    t = config.alerting.thresholds
    slo = config.alerting.slo
    minute_tests = (
        _recording_tests()
        + _ratio_tests(config, alerts, "OrchestratorAgentHighErrorRatio", EXECUTIONS, "agent", t.error_ratio)
        + _latency_tests(config, alerts)
        + _burn_tests(config, alerts, "OrchestratorAgentErrorBudgetBurnFast", slo.page_windows)
        + _ratio_tests(config, alerts, "OrchestratorToolHighErrorRatio", TOOL_CALLS, "tool", t.tool_error_ratio)
        + _circuit_tests(config, alerts)
        + _exporter_tests(config, alerts)
    )
    day_tests = (
        _burn_tests(config, alerts, "OrchestratorAgentErrorBudgetBurnSlow", slo.ticket_windows, LONG_STEP)
        + _cost_tests(config, alerts, LONG_STEP)
    )
    return {
        "orchestrator.test.yml": _document(minute_tests, STEP),
        "orchestrator-days.test.yml": _document(day_tests, LONG_STEP),
    }
