"""Prometheus recording and alerting rules, rendered from the config.

Thresholds, objectives, budgets, windows, the minimum event count, the job and
the grouping labels come from the config and are written into the expressions
as plain text (`> 0.05`, `14.4 * (1 - 0.99)`, `job="agent-exporter"`), so a
reader can check a rule without the config at hand.  Every raw selector names
the configured job; every aggregation keeps the grouping labels, so two
environments scraped by one Prometheus never page as one.  Nothing here matches
a specific `le` value: Prometheus 3 normalises `le` to floats ("10" becomes
"10.0"), and `histogram_quantile` needs no `le` matching.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, SLOConfig
from ..durations import prometheus_duration
from .common import (
    DASHBOARD_UIDS, HEADER, agent_error_ratio_windows, burn_rate_pairs, dump_yaml, latency_quantile_windows,
    long_windows, number, percent, sli_windows)
from .series import (
    AGENT_ERRORS, AGENT_SLI, BUILD_INFO, CIRCUIT, COST, COST_1D_RULE, COST_1H_RULE, DURATION, ERROR, EVALUATION_SCORE,
    EVENTS, EXECUTIONS, EXECUTION_RATE_RULE, FLEET_SOURCE_UP, FORECAST_HORIZON_SECONDS, FORWARDED_SPANS, GENAI_SPANS,
    INGEST_REQUESTS, NOT_FORWARDED, OTLP_SPANS, OVERFLOW, QUANTILES, REJECTED, REQUEST_REFUSED, SLI, SPAN_REJECTED,
    TIME_TO_FIRST_TOKEN, TIME_TO_FIRST_TOKEN_QUANTILE_RULE, TOKENS, TOKENS_RULE, TOOL_CALLS, TOOL_DURATION,
    TOOL_ERROR_RATIO_RULE, TOOL_QUANTILE_RULE, TOOL_RATE_RULE, USAGE_UNKNOWN, WORKFLOW_DURATION, WORKFLOW_QUANTILE_RULE,
    WORKFLOW_RATE_RULE, WORKFLOW_RUNS, WORKFLOW_SLI, Scope, cost_forecast, latency_quantile_rule, task_error_matcher,
    without_task_faults)

# -- expressions ---------------------------------------------------------------------


def _rate(scope: Scope, metric: str, window: str, *matchers: str) -> str:
    return f"rate({scope.select(metric, *matchers)}[{window}])"


def _increase(scope: Scope, metric: str, window: str, *matchers: str) -> str:
    return f"increase({scope.select(metric, *matchers)}[{window}])"


def _error_ratio(scope: Scope, counter: str, label: str, window: str, task_error_types: tuple[str, ...] = ()) -> str:
    """`counter`'s error ratio per `label` over `window`: 0 (not absent) for series
    without errors, absent without traffic.  Agent executions failed with one of
    `task_error_types` (alerting.task_error_types) are no failures of the agent."""
    total = scope.sum(_rate(scope, counter, window), label)
    failed = scope.sum(_rate(scope, counter, window, ERROR), label)
    if task_error_types:
        task_faults = scope.sum(_rate(scope, AGENT_ERRORS, window, task_error_matcher(task_error_types)), label)
        failed = without_task_faults(failed, task_faults)
    return f"(\n  {failed}\n  or\n  {total} * 0\n)\n/\n({total} > 0)"


def _count(scope: Scope, counter: str, window: str, *labels: str) -> str:
    return scope.sum(_increase(scope, counter, window), *labels)


def _p95(scope: Scope, metric: str, window: str, *labels: str) -> str:
    return f"histogram_quantile(0.95, {scope.sum(_rate(scope, metric + '_bucket', window), *labels, 'le')})"


def _quantile(scope: Scope, q: float, metric: str, window: str, *labels: str) -> str:
    """The q-quantile per `labels`, absent (not NaN) without observations."""
    buckets = scope.sum(_rate(scope, metric + "_bucket", window), *labels, "le")
    observations = scope.sum(_rate(scope, metric + "_count", window), *labels)
    return f"histogram_quantile({q}, {buckets})\nand on ({scope.by(*labels)})\n({observations} > 0)"


def _quantile_rules(scope: Scope, record: str, metric: str, *labels: str, window: str = "5m") -> list[dict]:
    return [{"record": record, "expr": _quantile(scope, q, metric, window, *labels), "labels": {"quantile": str(q)}}
            for q in QUANTILES]


def _sli_rules(scope: Scope, sli: SLI, slo: SLOConfig, ratio_windows: list[str],
               task_error_types: tuple[str, ...] = ()) -> list[dict]:
    """The SLI's error ratio over every window in `ratio_windows` (those its alerts read, and more),
    and its event count over every long window (the alerts' minimum)."""
    return ([{"record": sli.error_ratio_rule(w),
              "expr": _error_ratio(scope, sli.counter, sli.label, w, task_error_types)}
             for w in ratio_windows]
            + [{"record": sli.count_rule(w), "expr": _count(scope, sli.counter, w, sli.label)}
               for w in long_windows(slo)])


def recording_rules(config: Config) -> list[dict]:
    """The recording rules: catalog series aggregated per agent, tool, workflow and model,
    keeping the grouping labels."""
    scope = Scope.of(config)
    alerting = config.alerting
    agent_rules = [{"record": EXECUTION_RATE_RULE, "expr": scope.sum(_rate(scope, EXECUTIONS, "5m"), "agent")}]
    for window in latency_quantile_windows(config):
        agent_rules += _quantile_rules(scope, latency_quantile_rule(window), DURATION, "agent", window=window)
    agent_rules += _quantile_rules(scope, TIME_TO_FIRST_TOKEN_QUANTILE_RULE, TIME_TO_FIRST_TOKEN, "agent", "model")
    workflow_rules = [{"record": WORKFLOW_RATE_RULE,
                       "expr": scope.sum(_rate(scope, WORKFLOW_RUNS, "5m"), "workflow")}]
    workflow_rules += _quantile_rules(scope, WORKFLOW_QUANTILE_RULE, WORKFLOW_DURATION, "workflow")
    workflow_rules += _sli_rules(scope, WORKFLOW_SLI, alerting.workflow_slo, sli_windows(alerting.workflow_slo))
    tool_rules = [
        {"record": TOOL_RATE_RULE, "expr": scope.sum(_rate(scope, TOOL_CALLS, "5m"), "tool")},
        {"record": TOOL_ERROR_RATIO_RULE, "expr": _error_ratio(scope, TOOL_CALLS, "tool", "5m")},
        {"record": TOOL_QUANTILE_RULE, "expr": _quantile(scope, 0.95, TOOL_DURATION, "5m", "tool"),
         "labels": {"quantile": "0.95"}},
    ]
    usage_rules = [
        {"record": COST_1H_RULE, "expr": _count(scope, COST, "1h", "agent", "model")},
        {"record": COST_1D_RULE, "expr": _count(scope, COST, "1d", "agent", "model")},
        {"record": TOKENS_RULE, "expr": scope.sum(_rate(scope, TOKENS, "5m"), "agent", "model", "type")},
    ]
    return [
        {"name": "orchestrator.agents.rules", "rules": agent_rules},
        {"name": "orchestrator.slo.rules",
         "rules": _sli_rules(scope, AGENT_SLI, alerting.slo, agent_error_ratio_windows(config),
                             alerting.task_error_types)},
        {"name": "orchestrator.workflows.rules", "rules": workflow_rules},
        {"name": "orchestrator.tools.rules", "rules": tool_rules},
        {"name": "orchestrator.usage.rules", "rules": usage_rules},
    ]


# -- alerts --------------------------------------------------------------------------


class _Alerts:
    """Builds alert rules with the mixins' labels and annotations."""

    def __init__(self, config: Config):
        self.config = config

    def __call__(self, name: str, expr: str, severity: str, summary: str, description: str, dashboard: str, *,
                 for_: str | None = None, labels: dict | None = None, dashboard_vars: tuple[str, ...] = (),
                 in_deployment: bool = True) -> dict:
        """`dashboard_vars`: the alert's labels the linked dashboard selects (agent); the grouping
        labels (environment, ...) too, unless the alert may lack them (`in_deployment=False`)."""
        alerting = self.config.alerting
        selected = (*dashboard_vars, *(alerting.group_labels if in_deployment else ()))
        # urlquery: a label value may hold &, #, + or spaces, any of which would cut the link short.
        query = "&".join(f"var-{label}={{{{ $labels.{label} | urlquery }}}}" for label in selected)
        if not in_deployment:       # each grouping label the alert carries, if it carries it
            query += "".join(f"{{{{ with $labels.{label} }}}}&var-{label}={{{{ . | urlquery }}}}{{{{ end }}}}"
                             for label in alerting.group_labels)
        rule = {"alert": name, "expr": expr}
        if for_:
            rule["for"] = for_
        rule["labels"] = {"severity": severity, **(labels or {})}
        rule["annotations"] = {
            "summary": summary,
            "description": description,
            "runbook_url": f"{alerting.runbook_url}#{name.lower()}",
            "dashboard_url": f"{alerting.grafana_url.rstrip('/')}/d/{DASHBOARD_UIDS[dashboard]}"
                             + (f"?{query}" if query else ""),
        }
        return rule


def _burn_expr(sli: SLI, slo: SLOConfig, pairs, minimum: int) -> str:
    objective = number(slo.objective)
    clauses = [
        f"(\n  {sli.error_ratio_rule(long)} > ({number(factor)} * (1 - {objective}))\n"
        f"  and\n  {sli.error_ratio_rule(short)} > ({number(factor)} * (1 - {objective}))\n"
        f"  and\n  {sli.count_rule(long)} >= {minimum}\n)"
        for long, short, factor in pairs]
    return "\nor\n".join(clauses)


def _burn_alerts(config: Config, alert: _Alerts, sli: SLI, slo: SLOConfig, *, kind: str, events: str,
                 dashboard: str, dashboard_vars: tuple[str, ...] = ()) -> list[dict]:
    """Multi-window multi-burn-rate alerts on `slo`: a page (Fast) and a ticket (Slow)."""
    objective, error_budget = percent(slo.objective), percent(1 - slo.objective)
    subject = f"{{{{ $labels.{sli.label} }}}}"

    def description(pairs):
        rates = ", or ".join(f"{number(f)}x over {lw} and {sw}" for lw, sw, f in pairs)
        lasts = sorted({number(round(30 / f, 1)) for _, _, f in pairs}, key=float)
        return (f"{{{{ $value | humanizePercentage }}}} of {subject}'s {events} failed over the long window; "
                f"its {objective} success objective allows {error_budget}. Burn rate above {rates}: at that "
                f"rate a 30-day error budget lasts {' to '.join(lasts)} days.")

    rules = []
    for speed, severity, windows, summary in (
            ("Fast", "critical", slo.page_windows, "burns its error budget fast"),
            ("Slow", "warning", slo.ticket_windows, "burns its error budget")):
        pairs = burn_rate_pairs(slo, windows)
        if pairs:
            rules.append(alert(
                f"Orchestrator{kind}ErrorBudgetBurn{speed}", _burn_expr(sli, slo, pairs, config.alerting.min_events),
                severity, f"{kind} {subject} {summary}.", description(pairs), dashboard,
                labels={"slo": sli.slo_label}, dashboard_vars=dashboard_vars))
    return rules


def _metrics_absent(scope: Scope) -> str:
    """No build info of the job at all; with grouping labels, also none in a deployment
    (environment, ...) that reported over the last day while others still report."""
    present = scope.select(BUILD_INFO)
    expr = f"absent({present})"
    if scope.group_labels:
        by = ", ".join(("job", *scope.group_labels))
        expr += (f"\nor\n(\n  group by ({by}) (max_over_time({present}[1d]))\n  unless\n"
                 f"  group by ({by}) ({present})\n)")
    return expr


def alert_rules(config: Config) -> list[dict]:
    """The alert rule groups; none with `alerting.enabled: false` (the recording rules stay: the dashboards read them)."""
    a = config.alerting
    if not a.enabled:
        return []
    t = a.thresholds
    scope = Scope.of(config)
    alert = _Alerts(config)
    w, pending, minimum = a.rate_window, a.alert_for, a.min_events
    agent_dash = ("agent",)

    agents = [
        alert("OrchestratorAgentHighErrorRatio",
              f"{_error_ratio(scope, EXECUTIONS, 'agent', w, a.task_error_types)}\n> {number(t.error_ratio)}\n"
              f"and\n{_count(scope, EXECUTIONS, w, 'agent')} >= {minimum}",
              "critical", "Agent {{ $labels.agent }} fails too often.",
              "{{ $value | humanizePercentage }} of {{ $labels.agent }}'s executions failed over the last "
              f"{w} (threshold {percent(t.error_ratio)}).",
              "agent", for_=pending, dashboard_vars=agent_dash),
        alert("OrchestratorAgentSlow",
              f"{_p95(scope, DURATION, w, 'agent')}\n> {number(t.latency_p95_seconds)}\n"
              f"and\n{_count(scope, DURATION + '_count', w, 'agent')} >= {minimum}",
              "warning", "Agent {{ $labels.agent }} is slow.",
              "p95 latency of {{ $labels.agent }} is {{ $value | humanizeDuration }} over the last "
              f"{w} (threshold {number(t.latency_p95_seconds)}s).",
              "agent", for_=pending, dashboard_vars=agent_dash),
        alert("OrchestratorTimeToFirstTokenSlow",
              f"{_p95(scope, TIME_TO_FIRST_TOKEN, w, 'agent', 'model')}\n> {number(t.time_to_first_token_p95_seconds)}\n"
              f"and\n{_count(scope, TIME_TO_FIRST_TOKEN + '_count', w, 'agent', 'model')} >= {minimum}",
              "warning", "Streamed answers of {{ $labels.agent }} on {{ $labels.model }} start slowly.",
              "p95 time to the first token of {{ $labels.agent }} on {{ $labels.model }} is "
              "{{ $value | humanizeDuration }} over the last "
              f"{w} (threshold {number(t.time_to_first_token_p95_seconds)}s).",
              "agent", for_=pending, dashboard_vars=agent_dash),
    ]
    agents += _burn_alerts(config, alert, AGENT_SLI, a.slo, kind="Agent", events="executions",
                           dashboard="agent", dashboard_vars=agent_dash)
    score_sum = _rate(scope, EVALUATION_SCORE + "_sum", a.evaluation_window)
    score_count = _rate(scope, EVALUATION_SCORE + "_count", a.evaluation_window)
    agents.append(alert(
        "OrchestratorAgentQualityLow",
        f"{scope.sum(score_sum, 'agent', 'evaluator')}\n/\n{scope.sum(score_count, 'agent', 'evaluator')}\n"
        f"< {number(t.evaluation_score_floor)}\n"
        f"and\n{_count(scope, EVALUATION_SCORE + '_count', a.evaluation_window, 'agent', 'evaluator')} >= {minimum}",
        "warning", "Answers of agent {{ $labels.agent }} score low.",
        "The mean {{ $labels.evaluator }} score of {{ $labels.agent }} is {{ $value | printf \"%.3f\" }} over "
        f"the last {a.evaluation_window} (floor {number(t.evaluation_score_floor)}).",
        "overview", for_=pending))
    agents.append(alert(
        "OrchestratorCircuitBreakerOpen", f"{scope.select(CIRCUIT)} == 2", "warning",
        "The circuit breaker of {{ $labels.agent }} has been open too long.",
        "Calls to {{ $labels.agent }} have been cut off for more than "
        f"{prometheus_duration(t.circuit_open_seconds)}; its fallbacks carry the load.",
        "healing", for_=prometheus_duration(t.circuit_open_seconds)))

    workflows = _burn_alerts(config, alert, WORKFLOW_SLI, a.workflow_slo, kind="Workflow", events="runs",
                             dashboard="tools")

    tools = [alert(
        "OrchestratorToolHighErrorRatio",
        f"{_error_ratio(scope, TOOL_CALLS, 'tool', w)}\n> {number(t.tool_error_ratio)}\n"
        f"and\n{_count(scope, TOOL_CALLS, w, 'tool')} >= {minimum}",
        "warning", "Tool {{ $labels.tool }} fails too often.",
        "{{ $value | humanizePercentage }} of calls to {{ $labels.tool }} failed over the last "
        f"{w} (threshold {percent(t.tool_error_ratio)}).",
        "tools", for_=pending)]

    budget = number(a.budget.day_usd)
    horizon = prometheus_duration(FORECAST_HORIZON_SECONDS)
    cost_labels = {"category": "cost"}
    cost = [
        alert("OrchestratorDailyCostOverBudget", f"{_count(scope, COST, '1d')} > {budget}", "critical",
              "LLM spend over the last day is above budget.",
              "LLM spend over the last 24h is ${{ $value | printf \"%.2f\" }} "
              f"(budget ${budget} a day).",
              "cost", for_="5m", labels=cost_labels),
        # The trailing day's spend, extrapolated from its last hour.  It reads the
        # recorded increase1d, which increase() keeps right across exporter restarts
        # (predict_linear over the raw counter would read a restart as falling spend),
        # and it compares this hour with the same hour yesterday, so a daily peak does
        # not look like a trend.
        alert("OrchestratorDailyCostForecastOverBudget",
              f"{scope.sum(cost_forecast(COST_1D_RULE))}\n> {budget}", "warning",
              "LLM spend is on course to exceed the daily budget.",
              "If the last hour's trend continues, LLM spend over 24h reaches "
              "${{ $value | printf \"%.2f\" }} within "
              f"{horizon} (budget ${budget} a day).",
              "cost", for_="15m", labels=cost_labels),
    ]
    cost.append(alert(
        "OrchestratorUsageUnknown", f"{_count(scope, USAGE_UNKNOWN, w, 'agent')} > 0", "warning",
        "Spend of agent {{ $labels.agent }} is not counted.",
        "{{ $value | printf \"%.0f\" }} executions of {{ $labels.agent }} over the last "
        f"{w} had usage or cost that could not be known (no tokens, or no price for the model): "
        "they are missing from the spend, and the budget alerts under-report.",
        "cost", for_=pending))
    for feature, usd in a.budget.per_feature.items():
        spend = scope.sum(_increase(scope, COST, "1d", f'feature="{feature}"'), "feature")
        cost.append(alert(
            "OrchestratorFeatureDailyCostOverBudget", f"{spend} > {number(usd)}", "warning",
            "LLM spend of feature {{ $labels.feature }} over the last day is above its budget.",
            "Feature {{ $labels.feature }} spent ${{ $value | printf \"%.2f\" }} on LLM calls over the last 24h "
            f"(its budget ${number(usd)} a day).",
            # The feature as a rule label too: rules with one name must differ in labels (promtool's lint).
            "cost", for_="5m", labels={**cost_labels, "feature": feature}))

    # Every posted event, accepted or rejected, in one selector: an exporter that has
    # accepted nothing yet has no accepted-events series to add the rejected ones to.
    instance = ("job", "instance")
    posted = f'{{__name__=~"{EVENTS}|{REJECTED}", {scope.job_matcher}}}'
    requests = f"{{{INGEST_REQUESTS}, {scope.job_matcher}}}"
    requests_refused = f"{{{INGEST_REQUESTS}, {REQUEST_REFUSED}, {scope.job_matcher}}}"
    exporter = [
        alert("OrchestratorExporterDown", f"{scope.select('up')} == 0", "critical",
              "agent-exporter {{ $labels.instance }} is down.",
              "Prometheus cannot scrape {{ $labels.instance }}: agent metrics and alerts are blind.",
              "exporter", for_="1m"),
        alert("OrchestratorMetricsAbsent", _metrics_absent(scope), "warning",
              "No agent-exporter metrics reach Prometheus.",
              f"No series of job {a.job} carries {BUILD_INFO}"
              + (f" (in the deployment its {', '.join(scope.group_labels)} label names, which reported over "
                 "the last day)" if scope.group_labels else "")
              + ": the target is missing from the scrape configuration or is not an agent-exporter.",
              "exporter", for_="10m", in_deployment=False),   # absent() carries the job alone
        alert("OrchestratorEventsRejected",
              f"{scope.sum(_rate(scope, REJECTED, w), *instance)}\n/\n{scope.sum(f'rate({posted}[{w}])', *instance)}\n"
              f"> {number(t.rejected_events_ratio)}\n"
              f"and\n{scope.sum(f'increase({posted}[{w}])', *instance)} >= {minimum}",
              "warning", "agent-exporter {{ $labels.instance }} rejects events.",
              "{{ $value | humanizePercentage }} of the events sent to {{ $labels.instance }} were rejected "
              f"over the last {w} (threshold {percent(t.rejected_events_ratio)}): some orchestrator "
              "sends malformed events, and what they describe is missing from the metrics.",
              "exporter", for_=pending),
        alert("OrchestratorSpansRejected",
              f"{scope.sum(_rate(scope, OTLP_SPANS, w, SPAN_REJECTED), *instance)}\n/\n"
              f"{scope.sum(_rate(scope, OTLP_SPANS, w, GENAI_SPANS), *instance)}\n"
              f"> {number(t.rejected_events_ratio)}\n"
              f"and\n{scope.sum(_increase(scope, OTLP_SPANS, w, GENAI_SPANS), *instance)} >= {minimum}",
              "warning", "agent-exporter {{ $labels.instance }} rejects OTLP spans.",
              "{{ $value | humanizePercentage }} of the GenAI spans sent to {{ $labels.instance }} over OTLP were "
              f"rejected over the last {w} (threshold {percent(t.rejected_events_ratio)}): an instrumentation "
              "sends values the mapping refuses, and what those spans describe is missing from the metrics.",
              "exporter", for_=pending),
        alert("OrchestratorRequestsRefused",
              f"{scope.sum(f'rate({requests_refused}[{w}])', *instance)}\n/\n"
              f"{scope.sum(f'rate({requests}[{w}])', *instance)}\n"
              f"> {number(t.rejected_events_ratio)}\n"
              f"and\n{scope.sum(f'increase({requests}[{w}])', *instance)} >= {minimum}",
              "warning", "agent-exporter {{ $labels.instance }} refuses requests.",
              "{{ $value | humanizePercentage }} of the /v1/* requests and OTLP/gRPC calls to "
              f"{{{{ $labels.instance }}}} were refused over the last {w} (401, 403, 429 or 503; threshold "
              f"{percent(t.rejected_events_ratio)}): a client's credentials are wrong or stale, the exporter "
              "cannot read its bearer token or web config, or the rate limit is too low, and what those "
              "requests carried is missing from the metrics.",
              "exporter", for_=pending),
        alert("OrchestratorSpansNotForwarded",
              f"{scope.sum(_rate(scope, FORWARDED_SPANS, w, NOT_FORWARDED), *instance)}\n/\n"
              f"{scope.sum(_rate(scope, FORWARDED_SPANS, w), *instance)}\n"
              f"> {number(t.unforwarded_spans_ratio)}\n"
              f"and\n{scope.sum(_increase(scope, FORWARDED_SPANS, w), *instance)} >= {minimum}",
              "warning", "agent-exporter {{ $labels.instance }} loses the spans it forwards.",
              "{{ $value | humanizePercentage }} of the spans {{ $labels.instance }} forwards to the tracing "
              f"backend (otlp.forward_spans) were dropped or failed over the last {w} (threshold "
              f"{percent(t.unforwarded_spans_ratio)}): the backend is slow, down or refusing them, and those "
              "traces are missing from it.",
              "exporter", for_=pending),
        alert("OrchestratorSeriesOverflow",
              f"{scope.sum(_increase(scope, OVERFLOW, w), *instance, 'metric')} > 0", "warning",
              "agent-exporter {{ $labels.instance }} folds series of {{ $labels.metric }} into __overflow__.",
              "{{ $value | printf \"%.0f\" }} observations of new label sets of {{ $labels.metric }} were "
              f"folded into its __overflow__ series over the last {w}: the metric hit metrics.max_series "
              f"({config.metrics.max_series}), and what they describe is no longer told apart.",
              "exporter"),
        alert("OrchestratorFleetSourceDown", f"{scope.select(FLEET_SOURCE_UP)} == 0", "warning",
              "agent-exporter {{ $labels.instance }} cannot poll its fleet source {{ $labels.source }}.",
              "The last polls of {{ $labels.source }} (healing.fleet) by {{ $labels.instance }} failed for "
              f"more than {pending}: the replica keeps its circuit breakers and learns alone.",
              "healing", for_=pending),
    ]
    groups = [
        {"name": "orchestrator.agents.alerts", "rules": agents},
        {"name": "orchestrator.workflows.alerts", "rules": workflows},
        {"name": "orchestrator.tools.alerts", "rules": tools},
        {"name": "orchestrator.cost.alerts", "rules": cost},
        {"name": "orchestrator.exporter.alerts", "rules": exporter},
    ]
    return [group for group in groups if group["rules"]]


def alert_names(config: Config) -> list[str]:
    """Each alert name once, in file order (the per-feature budget alert is one name)."""
    return list(dict.fromkeys(rule["alert"] for group in alert_rules(config) for rule in group["rules"]))


def recording_rule_names(config: Config) -> list[str]:
    """Each recorded series name once (the quantile rules share a name per metric)."""
    return list(dict.fromkeys(rule["record"] for group in recording_rules(config) for rule in group["rules"]))


def write_rules(rules_dir: Path, recording: list[dict], alerts: list[dict]) -> list[Path]:
    """Write the rendered rule groups as rules_dir/orchestrator.{rules,alerts}.yml."""
    rules_dir = Path(rules_dir)
    rules_dir.mkdir(parents=True, exist_ok=True)
    files = {rules_dir / "orchestrator.rules.yml": recording, rules_dir / "orchestrator.alerts.yml": alerts}
    for path, groups in files.items():
        path.write_text(HEADER + dump_yaml({"groups": groups}))
    return list(files)
