"""Grafana dashboards and provisioning, generated from the config and the catalog.

Dashboards are assembled from the builders in panels.py, so that every panel
gets the same datasource, units and descriptions and every query names catalog
metrics or recording rules.

Every variable a dashboard offers filters every panel whose series carry its
label (Queries adds the matchers), so a user who picks one instance, agent or
model sees only its data:

* Panels read raw metrics of the configured job with `instance=~"$instance"`,
  over `$__rate_interval`, or over an alert's own window where they stand for
  what it evaluates (the error ratios and p95 by agent and tool, the task
  success ratio, a day's spend): with every instance selected they show the
  alert's value.
* Only what no raw query can afford or means per instance reads a recording
  rule, which aggregates `job` and `instance` away: the SLO burn rates over
  windows of up to days and the daily spend forecast against the budget.  Those
  panels say "(all instances)" in their title.

All follow a variable per grouping label (environment, cluster, ...), if any: one
deployment at a time, as the alerts see it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from .. import catalog
from ..config import Config
from ..durations import prometheus_duration
from .common import DASHBOARD_UIDS, long_windows, percent, scrape_interval, sli_windows
from .common import number as num
from .panels import (
    bargauge, dashboard, datasource_variable, heatmap, lower_limit, override, query, query_variable, row, stat,
    state_timeline, table, timeseries, upper_limit, value_mapping)
from .series import QUANTILES as RECORDED_QUANTILES
from .series import (
    AGENT_ERRORS, AGENT_SLI, COST_1D_RULE, DASHBOARD_LATENCY_WINDOW, EXECUTIONS, FORECAST_HORIZON_SECONDS,
    WORKFLOW_SLI, cost_forecast, task_error_matcher, without_task_faults)

# Datasource uids (fixed) and where the compose stack serves them.
PROMETHEUS_UID = "prometheus"
ALERTMANAGER_UID = "alertmanager"
JAEGER_UID = "jaeger"
PROMETHEUS_URL = "http://prometheus:9090"
ALERTMANAGER_URL = "http://alertmanager:9093"
JAEGER_URL = "http://jaeger:16686"
# The exemplar label holding the trace id (the store writes `trace_id`).
EXEMPLAR_TRACE_LABEL = "trace_id"

# Where the dashboards provider reads the JSON files inside the Grafana container.
DASHBOARDS_PATH = "/var/lib/grafana/dashboards"
FOLDER = "Agent orchestrator"

OVERVIEW_UID = DASHBOARD_UIDS["overview"]
AGENT_UID = DASHBOARD_UIDS["agent"]
COST_UID = DASHBOARD_UIDS["cost"]
TOOLS_UID = DASHBOARD_UIDS["tools"]
HEALING_UID = DASHBOARD_UIDS["healing"]
EXPORTER_UID = DASHBOARD_UIDS["exporter"]

# The workflow state that marks a failed workflow (the demo and the docs use it).
FAILED_STATE = "failed"

SUCCESS = 'status="success"'
ERROR = 'status="error"'
DAY = 'period="day"'
# The recorded quantiles as a label value and as a legend's pNN.
QUANTILES = [(str(q), f"p{num(q * 100)}") for q in RECORDED_QUANTILES]


class Queries:
    """The dashboards' selectors: raw series of the configured job, scoped by the instance
    variable; recorded series (which keep only the grouping labels); both scoped by a
    variable per grouping label, and by the dashboard's `filters` (a matcher per label,
    such as `agent="$agent"`) wherever their series carry that label."""

    def __init__(self, config: Config, filters: dict[str, str] | None = None):
        self.config = config
        self.group_labels = config.alerting.group_labels
        groups = tuple(f'{label}="${label}"' for label in self.group_labels)
        self.job = f'job="{config.alerting.job}"'
        self.scope = ", ".join((self.job, 'instance=~"$instance"', *groups))
        self.recorded_scope = groups
        self.filters = filters or {}

    def filtered(self, **filters: str) -> "Queries":
        """These queries, also filtered by `filters` (label=matcher)."""
        return Queries(self.config, {**self.filters, **filters})

    def _filters(self, labels) -> tuple[str, ...]:
        return tuple(matcher for label, matcher in self.filters.items() if label in labels)

    def raw(self, name: str, *matchers: str) -> str:
        spec = catalog.BY_NAME.get(name) or catalog.BY_NAME.get(re.sub(r"_(bucket|sum|count)$", "", name))
        filters = self._filters(spec.labels) if spec else ()
        return f"{name}{{{', '.join((self.scope, *filters, *matchers))}}}"

    def recorded(self, name: str, *matchers: str, keeps: tuple[str, ...] = ()) -> str:
        """A recorded series; `keeps` names the labels the rule keeps, which the filters apply to."""
        selected = (*self.recorded_scope, *self._filters(keeps), *matchers)
        return f"{name}{{{', '.join(selected)}}}" if selected else name

    def rate(self, name: str, *matchers: str, window: str = "$__rate_interval") -> str:
        return f"rate({self.raw(name, *matchers)}[{window}])"

    def increase(self, name: str, *matchers: str, window: str = "$__range") -> str:
        return f"increase({self.raw(name, *matchers)}[{window}])"

    def bucket_quantile(self, q: str, metric: str, by: str, *matchers: str,
                        window: str = "$__rate_interval") -> str:
        return f"histogram_quantile({q}, sum by ({by}) ({self.rate(metric + '_bucket', *matchers, window=window)}))"

    @staticmethod
    def ratio(part: str, whole: str, by: str = "") -> str:
        """`part` over `whole` (summed per `by`, or in all), as the alerts compute ratios: 0 (not
        No data) where `part` has no series (a counter that never rose), nothing (not NaN)
        where `whole` is 0."""
        total = f"sum by ({by})" if by else "sum"
        return f"({total} ({part}) or {total} ({whole}) * 0) / ({total} ({whole}) > 0)"

    def error_ratio(self, counter: str, by: str, *matchers: str, window: str = "$__rate_interval") -> str:
        """Failed over all per `by`."""
        return self.ratio(self.rate(counter, ERROR, *matchers, window=window),
                          self.rate(counter, *matchers, window=window), by)

    def agent_error_ratio(self, by: str, window: str) -> str:
        """Failed agent executions over all per `by`, as the alerts count them: less those that
        failed with one of alerting.task_error_types."""
        task_error_types = self.config.alerting.task_error_types
        if not task_error_types:
            return self.error_ratio(EXECUTIONS, by, window=window)
        total = f"sum by ({by})" if by else "sum"
        failed = f"{total} ({self.rate(EXECUTIONS, ERROR, window=window)})"
        task_faults = f"{total} ({self.rate(AGENT_ERRORS, task_error_matcher(task_error_types), window=window)})"
        return self.ratio(without_task_faults(failed, task_faults), self.rate(EXECUTIONS, window=window), by)

    def variables(self) -> list[dict]:
        """The data source, a variable per grouping label, then the instances of the job in them.

        A grouping label's variable selects one value, as kubernetes-mixin's `cluster` does: the
        alerts, budgets and SLOs hold per deployment, and a view summing deployments would show
        figures (a day's spend against the budget line, an error ratio) that no alert compares."""
        build_info = catalog.EXPORTER_BUILD_INFO.name
        found = [datasource_variable()]
        narrowed = [self.job]
        for label in self.group_labels:
            found.append(query_variable(label, label.replace("_", " ").capitalize(),
                                        f"label_values({build_info}{{{', '.join(narrowed)}}}, {label})",
                                        include_all=False))
            narrowed.append(f'{label}="${label}"')
        found.append(query_variable("instance", "Instance",
                                    f"label_values({build_info}{{{', '.join(narrowed)}}}, instance)"))
        return found

    def agent_and_model(self, *, one_agent: bool) -> tuple["Queries", list[dict]]:
        """The agent variable (one agent, or any of them) and the model variable chained to
        it (the selected agents' models), and these queries filtered by both."""
        agent = 'agent="$agent"' if one_agent else 'agent=~"$agent"'
        variables = [
            query_variable("agent", "Agent", f"label_values({self.raw(catalog.AGENT_EXECUTIONS.name)}, agent)",
                           include_all=not one_agent),
            # Tokens: every model an agent used, priced or not.
            query_variable("model", "Model", f"label_values({self.raw(catalog.LLM_TOKENS.name, agent)}, model)"),
        ]
        return self.filtered(agent=agent, model='model=~"$model"'), variables

    def link_params(self) -> str:
        """The scope variables as URL parameters, for links between the dashboards."""
        return "".join(f"&${{{name}:queryparam}}" for name in ("datasource", *self.group_labels, "instance"))


def _agent_link(q: Queries) -> dict:
    """Opens the agent dashboard for the clicked agent, keeping the scope variables."""
    return {"title": "Agent detail",
            "url": f"/d/{AGENT_UID}?var-agent=${{__value.raw}}{q.link_params()}&${{__url_time_range}}"}


# -- the six dashboards ------------------------------------------------------

# The prefix of every alert name the rules render (DESIGN §7).
ALERT_PREFIX = "Orchestrator"

# Panels reading a recording rule, which aggregates job and instance away, say so.
ALL_INSTANCES = " (all instances)"
ALL_JOBS = " Covers every exporter of the job: the recording rule aggregates away job and instance."


def overview(config: Config) -> dict:
    a = config.alerting
    t, budget = a.thresholds, a.budget
    q = Queries(config)
    E, D, C = catalog.AGENT_EXECUTIONS, catalog.AGENT_EXECUTION_DURATION, catalog.LLM_COST
    W, WD, S = catalog.WORKFLOW_RUNS, catalog.WORKFLOW_DURATION, catalog.EVALUATION_SCORE
    successes, runs = q.increase(E.name, SUCCESS), q.increase(E.name)
    # The legacy cards count every failure; the error-ratio panels and the alerts do not count the task's own.
    task_faults_note = (f" Failures of the task's own ({', '.join(a.task_error_types)}: alerting.task_error_types) "
                        "count here, as the legacy dashboard counted them; the error-ratio panels and the alerts "
                        "leave them out." if a.task_error_types else "")
    total_runs = f"sum({runs})"
    # This project's alerts only (every one is named Orchestrator...): a shared Prometheus holds
    # everybody's.  Those about one exporter carry its instance and follow the variable; the
    # others aggregate job and instance away and are shown for every instance (`|`: no label),
    # as OrchestratorMetricsAbsent, about no one deployment, is shown in each.
    deployment = [f'{label}=~"${label}|"' for label in q.group_labels]
    matchers = (*deployment, f'alertname=~"{ALERT_PREFIX}.+"', 'alertstate="firing"', 'instance=~"$instance|"')
    firing = f"ALERTS{{{', '.join(matchers)}}}"
    tasks = f"sum({q.increase(W.name)})"
    task_objective = a.workflow_slo.objective
    task_window = sli_windows(a.workflow_slo)[0]
    # Over the quality alert's window, as the panel draws its floor.
    mean_score = (f"sum by (agent, evaluator) ({q.rate(S.name + '_sum', window=a.evaluation_window)}) / "
                  f"sum by (agent, evaluator) ({q.rate(S.name + '_count', window=a.evaluation_window)})")
    spend_day = f"sum({q.increase(C.name, window='1d')})"
    panels = [
        # Tasks first: whether the orchestrator's work gets done, end to end.
        row("Tasks (workflow runs)"),
        stat("Tasks finished", "Workflow runs finished in the selected time range.",
             query(tasks, instant=True), unit="short", decimals=0),
        stat("Task success rate",
             "Share of workflow runs that succeeded in the selected time range. "
             f"Red below the workflow success objective ({num(task_objective)}).",
             query(q.ratio(q.increase(W.name, SUCCESS), q.increase(W.name)), instant=True),
             unit="percentunit", thresholds=lower_limit(task_objective), decimals=2),
        stat("Task latency p95",
             "95th percentile of workflow run wall time in the selected time range.",
             # Buckets that did not rise give NaN: No data when no run finished.
             query(f"histogram_quantile(0.95, sum by (le) ({q.increase(WD.name + '_bucket')}))"
                   f" and on () (sum({q.increase(WD.name + '_count')}) > 0)", instant=True),
             unit="s"),
        stat("Spend, last 24 h",
             "LLM spend over the last 24 hours against the daily budget "
             f"(${num(budget.day_usd)}); orange from 80 %, red over budget.",
             query(spend_day, instant=True),
             unit="currencyUSD", decimals=2,
             thresholds=upper_limit(budget.day_usd, warn=0.8 * budget.day_usd), w=6),
        stat("Alerts firing", "Orchestrator alerts firing now (Prometheus ALERTS, this project's alerts only). "
             "Alerts about one exporter follow the instance variable; the others cover every instance.",
             query(f"count({firing}) or vector(0)", instant=True),
             unit="none", decimals=0, thresholds=upper_limit(1), w=6),
        timeseries("Task success ratio by workflow",
                   f"Share of successful workflow runs over {task_window}; the line is the workflow "
                   f"success objective ({num(task_objective)}), which the burn-rate alerts guard.",
                   [query(f"1 - {q.error_ratio(W.name, 'workflow', window=task_window)}", "{{workflow}}")],
                   unit="percentunit", thresholds=lower_limit(task_objective), max=1),
        timeseries("Task latency p50 / p95 / p99 by workflow",
                   f"Workflow run wall-time quantiles over {DASHBOARD_LATENCY_WINDOW}.",
                   [query(q.bucket_quantile(quantile, WD.name, "workflow, le", window=DASHBOARD_LATENCY_WINDOW),
                          f"{{{{workflow}}}} {p}") for quantile, p in QUANTILES],
                   unit="s", min=0),
        row("Agents over the selected time range"),
        stat("Total executions", "Agent executions finished in the selected time range.",
             query(total_runs, instant=True), unit="short", decimals=0, w=6),
        stat("Success rate",
             "Share of executions that succeeded in the selected time range. "
             f"Red below {num(1 - t.error_ratio)} (the error-ratio alert threshold)." + task_faults_note,
             query(q.ratio(successes, runs), instant=True),
             unit="percentunit", thresholds=lower_limit(1 - t.error_ratio), decimals=1, w=6),
        stat("Average latency",
             "Mean execution wall time in the selected time range. Red from the p95 "
             "latency alert threshold: a mean that high means most executions are slow.",
             query(q.ratio(q.increase(D.name + '_sum'), q.increase(D.name + '_count')), instant=True),
             unit="s", thresholds=upper_limit(t.latency_p95_seconds), w=6),
        stat("Total cost", "LLM spend in the selected time range, in US dollars.",
             query(f"sum({q.increase(C.name)})", instant=True),
             unit="currencyUSD", decimals=2, w=6),
        table("Agent performance",
              "Per agent over the selected time range: executions, success rate, mean "
              "latency and LLM spend, as the legacy HTML dashboard showed them. "
              "Click an agent for its detail dashboard." + task_faults_note,
              [query(f"sum by (agent) ({runs})", instant=True, table=True),
               query(q.ratio(successes, runs, "agent"), instant=True, table=True),
               query(q.ratio(q.increase(D.name + '_sum'), q.increase(D.name + '_count'), "agent"),
                     instant=True, table=True),
               query(f"sum by (agent) ({q.increase(C.name)})", instant=True, table=True)],
              unit="short", order=("agent", "Value #A", "Value #B", "Value #C", "Value #D"),
              sort_by="Executions",
              overrides=[
                  override("agent", displayName="Agent", links=[_agent_link(q)]),
                  override("Value #A", displayName="Executions", decimals=0),
                  override("Value #B", displayName="Success rate", unit="percentunit",
                           decimals=1, thresholds=lower_limit(1 - t.error_ratio),
                           **{"custom.cellOptions": {"type": "color-text"}}),
                  override("Value #C", displayName="Average latency", unit="s"),
                  override("Value #D", displayName="Cost", unit="currencyUSD", decimals=2),
              ]),
        row("Agents now"),
        timeseries("Executions by agent and status",
                   "Executions per second, by agent and outcome.",
                   [query(f"sum by (agent, status) ({q.rate(E.name)})", "{{agent}} {{status}}")],
                   unit="ops", min=0),
        timeseries("Error ratio by agent",
                   f"Share of failed executions over {a.rate_window}; the line is the alert "
                   f"threshold ({num(t.error_ratio)}).",
                   [query(q.agent_error_ratio("agent", a.rate_window), "{{agent}}")],
                   unit="percentunit", limit=t.error_ratio, min=0),
        timeseries("Latency p50 / p95 / p99 by agent",
                   f"Execution wall-time quantiles over {a.rate_window}; the line is the p95 "
                   f"alert threshold ({num(t.latency_p95_seconds)} s).",
                   [query(q.bucket_quantile(quantile, D.name, "agent, le", window=a.rate_window),
                          f"{{{{agent}}}} {p}") for quantile, p in QUANTILES],
                   unit="s", limit=t.latency_p95_seconds, min=0),
        timeseries("Spend, last 24 h, against the daily budget",
                   "Rolling 24-hour LLM spend and the budget the exporter "
                   f"reports; the line is the configured daily budget (${num(budget.day_usd)}).",
                   [query(spend_day, "spend, last 24 h"),
                    query(f"max({q.raw(catalog.COST_BUDGET.name, DAY)})", "daily budget")],
                   unit="currencyUSD", limit=budget.day_usd, min=0),
        timeseries("Tokens by model and type", "LLM tokens per second, by model and type.",
                   [query(f"sum by (model, type) ({q.rate(catalog.LLM_TOKENS.name)})",
                          "{{model}} {{type}}")],
                   unit="short", min=0, stack=True),
        table("Firing alerts",
              "Orchestrator alerts Prometheus reports as firing now, with their labels; those about one "
              "exporter follow the instance variable. "
              "Alertmanager (http://localhost:9093) has the silences and notifications.",
              [query(firing, instant=True, table=True)],
              unit="none", hidden=("Value", "__name__", "alertstate"),
              order=("alertname", "severity"), overrides=[], w=12),
        row("Quality"),
        timeseries("Mean evaluation score by agent and evaluator",
                   f"Mean quality score (0 to 1) of the agents' answers over {a.evaluation_window}, per "
                   f"evaluator; the line is the floor of the quality alert ({num(t.evaluation_score_floor)}), "
                   "which reads the same window.",
                   [query(mean_score, "{{agent}} {{evaluator}}")],
                   unit="percentunit", thresholds=lower_limit(t.evaluation_score_floor), min=0, max=1, w=12),
        timeseries("Evaluations by evaluator", "Quality evaluations recorded per second, by agent and evaluator.",
                   [query(f"sum by (agent, evaluator) ({q.rate(S.name + '_count')})", "{{agent}} {{evaluator}}")],
                   unit="ops", min=0, w=12),
        heatmap("Evaluation score distribution",
                "Quality scores per histogram bucket, all agents and evaluators. Dots are exemplars "
                "linking to the traces of the evaluated answers.",
                query(f"sum by (le) ({q.rate(S.name + '_bucket')})", "{{le}}", heatmap=True, exemplar=True),
                unit="percentunit"),
    ]
    return dashboard(OVERVIEW_UID, "Orchestrator / Overview",
                     "Task success and latency first, then agents' executions, errors, latency, spend, "
                     "alerts and answer quality.", panels, q.variables())


def _burn_panel(q: Queries, title: str, subject: str, sli, slo, by: str) -> dict:
    """An SLI's error ratio over its alerts' long windows (up to days: recorded), divided by the error budget."""
    budget_ratio = num(1 - slo.objective)
    factors = sorted({f for _, _, f in (*slo.page_windows, *slo.ticket_windows)})
    return timeseries(
        title + ALL_INSTANCES,
        f"Error ratio of {subject} divided by the error budget ({budget_ratio} for a "
        f"{num(slo.objective)} objective), over the SLO alert windows. Burning at 1 "
        "spends the budget exactly; the alerts page and ticket at "
        f"{', '.join(num(f) for f in factors)}." + ALL_JOBS,
        [query(f"{q.recorded(sli.error_ratio_rule(w), keeps=(sli.label,))} / {budget_ratio}", f"{by}{w}")
         for w in long_windows(slo)],
        unit="short", thresholds=upper_limit(max(factors), warn=min(factors)), min=0, w=24)


def agent_detail(config: Config) -> dict:
    t = config.alerting.thresholds
    scope = Queries(config)
    # Every query below reads $agent's series only, and $model's where they have a model.
    q, agent_and_model = scope.agent_and_model(one_agent=True)
    variables = scope.variables() + agent_and_model
    E, D, TTFT = catalog.AGENT_EXECUTIONS, catalog.AGENT_EXECUTION_DURATION, catalog.LLM_TIME_TO_FIRST_TOKEN
    panels = [
        row("Executions"),
        timeseries("Executions by status", "Executions of $agent per second, by outcome.",
                   [query(f"sum by (status) ({q.rate(E.name)})", "{{status}}")],
                   unit="ops", min=0, stack=True, w=8),
        timeseries("Error ratio",
                   f"Share of failed executions of $agent over {config.alerting.rate_window}, the alert's "
                   f"window; the line is the alert threshold ({num(t.error_ratio)}).",
                   [query(q.agent_error_ratio("agent", config.alerting.rate_window), "error ratio")],
                   unit="percentunit", limit=t.error_ratio, min=0, w=8),
        timeseries("Errors by type", "Failed executions of $agent per second, by error type.",
                   [query(f"sum by (error_type) ({q.rate(catalog.AGENT_ERRORS.name)})",
                          "{{error_type}}")],
                   unit="ops", min=0, stack=True, w=8),
        heatmap("Latency distribution",
                "Execution wall time of $agent per histogram bucket. Dots are exemplars: "
                "click one to open its trace in Jaeger.",
                query(f"sum by (le) ({q.rate(D.name + '_bucket')})", "{{le}}",
                      heatmap=True, exemplar=True),
                unit="s", w=12),
        timeseries("Latency p50 / p95 / p99",
                   f"Execution wall-time quantiles of $agent over {config.alerting.rate_window}, the "
                   f"alert's window; the line is the p95 alert threshold ({num(t.latency_p95_seconds)} s). "
                   "Exemplars link to traces.",
                   [query(q.bucket_quantile(quantile, D.name, "le", window=config.alerting.rate_window), p,
                          exemplar=True)
                    for quantile, p in QUANTILES],
                   unit="s", limit=t.latency_p95_seconds, min=0, w=12, h=9),
        timeseries("Time to first token p50 / p95 / p99 by model",
                   "Time from $agent's LLM request to the first streamed token, per model, over "
                   f"{config.alerting.rate_window}; the line is the p95 alert threshold "
                   f"({num(t.time_to_first_token_p95_seconds)} s).",
                   [query(q.bucket_quantile(quantile, TTFT.name, "model, le", window=config.alerting.rate_window),
                          f"{{{{model}}}} {p}") for quantile, p in QUANTILES],
                   unit="s", limit=t.time_to_first_token_p95_seconds, min=0, w=24),
        _burn_panel(q, "Error budget burn rate", "$agent", AGENT_SLI, config.alerting.slo, ""),
        row("Tokens, cost and tools"),
        timeseries("Tokens by model and type", "LLM tokens of $agent per second.",
                   [query(f"sum by (model, type) ({q.rate(catalog.LLM_TOKENS.name)})",
                          "{{model}} {{type}}")],
                   unit="short", min=0, stack=True, w=8),
        timeseries("Spend per hour by model", "LLM spend of $agent in US dollars per hour.",
                   [query(f"sum by (model) ({q.rate(catalog.LLM_COST.name)}) * 3600",
                          "{{model}}")],
                   unit="currencyUSD", min=0, stack=True, w=8),
        timeseries("Tool calls (all agents)",
                   "Tool calls per second by tool and outcome. The tool-call metric has no "
                   "agent label (it would multiply series); the calls of $agent are in its "
                   "traces in Jaeger.",
                   [query(f"sum by (tool, status) ({q.rate(catalog.TOOL_CALLS.name)})",
                          "{{tool}} {{status}}")],
                   unit="ops", min=0, w=8),
    ]
    return dashboard(AGENT_UID, "Orchestrator / Agent",
                     "One agent: outcomes, errors, latency with exemplars, time to first token, SLO burn, "
                     "tokens and spend.", panels, variables)


def cost(config: Config) -> dict:
    budget = config.alerting.budget
    scope = Queries(config)
    # Every query below reads the selected agents' and models' series, where they have those labels.
    q, agent_and_model = scope.agent_and_model(one_agent=False)
    C, T = catalog.LLM_COST, catalog.LLM_TOKENS
    horizon = prometheus_duration(FORECAST_HORIZON_SECONDS)
    spend_day = f"sum({q.increase(C.name, window='1d')})"
    # What the forecast alert reads: the recorded trailing day (per agent and model), over its last hour.
    recorded_day = q.recorded(COST_1D_RULE, keeps=("agent", "model"))
    forecast = f"sum({cost_forecast(recorded_day)})"

    def per_hour(by: str) -> str:
        spend = f"sum by ({by}) ({q.rate(C.name)}) * 3600"
        if by in config.metrics.extra_labels:
            # Spend of executions sent without the label is a series without it: named, not blank.
            return f'label_replace({spend}, "{by}", "(none)", "{by}", "")'
        return spend

    panels = [
        row("Budget"),
        stat("Spend, last 24 h",
             f"LLM spend over the last 24 hours; daily budget ${num(budget.day_usd)}.",
             query(spend_day, instant=True), unit="currencyUSD", decimals=2,
             thresholds=upper_limit(budget.day_usd, warn=0.8 * budget.day_usd), w=6),
        stat("Daily budget used",
             "Spend over the last 24 hours as a share of the daily budget.",
             query(f"{spend_day} / {num(budget.day_usd)}", instant=True),
             unit="percentunit", decimals=0, thresholds=upper_limit(1, warn=0.8), w=6),
        stat(f"Forecast, 24 h spend in {horizon}{ALL_INSTANCES}",
             f"Spend over the trailing 24 hours {horizon} from now if the last hour's trend "
             "continues: what the forecast alert compares with the daily budget." + ALL_JOBS,
             query(forecast, instant=True), unit="currencyUSD", decimals=2,
             thresholds=upper_limit(budget.day_usd, warn=0.8 * budget.day_usd), w=6),
        stat("Spend, last 30 days",
             f"LLM spend over the last 30 days; monthly budget ${num(budget.month_usd)}.",
             query(f"sum({q.increase(C.name, window='30d')})", instant=True),
             unit="currencyUSD", decimals=2,
             thresholds=upper_limit(budget.month_usd, warn=0.8 * budget.month_usd), w=6),
        timeseries("Budget burn" + ALL_INSTANCES,
                   f"Rolling 24-hour spend and its forecast {horizon} ahead against the daily "
                   f"budget (the line, ${num(budget.day_usd)})." + ALL_JOBS,
                   [query(f"sum({recorded_day})", "spend, last 24 h"),
                    query(forecast, f"forecast, 24 h spend in {horizon}")],
                   unit="currencyUSD", limit=budget.day_usd, min=0, w=24),
    ]
    if budget.per_feature:
        listed = "|".join(re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", feature) for feature in budget.per_feature)
        panels.append(bargauge(
            "Spend by feature, last 24 h, against its budget",
            "LLM spend over the last 24 hours of each feature with a daily budget "
            "(alerting.budget.per_feature); each bar turns red at its own budget, where its alert fires.",
            query(f"sum by (feature) ({q.increase(C.name, f'feature=~{json.dumps(listed)}', window='1d')})",
                  "{{feature}}", instant=True),
            unit="currencyUSD",
            overrides=[override(feature, thresholds=upper_limit(usd, warn=0.8 * usd))
                       for feature, usd in budget.per_feature.items()], w=24))
    # By agent, by model, and by each of metrics.extra_labels the series carry (feature, priority).
    spread = ("agent", "model", *config.metrics.extra_labels)
    panels += [
        row("Where the money goes"),
        *[timeseries(f"Spend per hour by {label}", f"LLM spend in US dollars per hour, by {label}.",
                     [query(per_hour(label), f"{{{{{label}}}}}")],
                     unit="currencyUSD", min=0, stack=True, w=24 // len(spread)) for label in spread],
        bargauge("Spend by agent, last 24 h", "Rolling 24-hour spend per agent.",
                 query(f"sum by (agent) ({q.increase(C.name, window='1d')})", "{{agent}}", instant=True),
                 unit="currencyUSD"),
        bargauge("Spend by agent and model, last hour",
                 "Spend over the last hour per agent and model: where a rising forecast "
                 "comes from.",
                 query(f"sum by (agent, model) ({q.increase(C.name, window='1h')})", "{{agent}} {{model}}",
                       instant=True),
                 unit="currencyUSD"),
        timeseries("Cost per execution by agent",
                   "Mean LLM spend per execution, by agent. Executions have no model label: with "
                   "models selected, this is their spend per execution of the agent.",
                   [query(f"sum by (agent) ({q.rate(C.name)}) / "
                          f"sum by (agent) ({q.rate(catalog.AGENT_EXECUTIONS.name)})",
                          "{{agent}}")],
                   unit="currencyUSD", min=0, w=24),
        row("Tokens"),
        timeseries("Tokens by agent and type", "LLM tokens per second, by agent and type.",
                   [query(f"sum by (agent, type) ({q.rate(T.name)})", "{{agent}} {{type}}")],
                   unit="short", min=0, stack=True, w=8),
        timeseries("Tokens by model and type", "LLM tokens per second, by model and type.",
                   [query(f"sum by (model, type) ({q.rate(T.name)})", "{{model}} {{type}}")],
                   unit="short", min=0, stack=True, w=8),
        timeseries("Executions with unknown usage",
                   "Executions per second that reported neither cost nor tokens with a known "
                   "price. They are not counted as $0: add prices or usage to see their cost.",
                   [query(f"sum by (agent) ({q.rate(catalog.USAGE_UNKNOWN.name)})", "{{agent}}")],
                   unit="ops", min=0, w=8),
    ]
    return dashboard(COST_UID, "Orchestrator / Cost and tokens",
                     "LLM spend against the budget, by agent, model and feature; token use.",
                     panels, scope.variables() + agent_and_model)


def tools(config: Config) -> dict:
    t = config.alerting.thresholds
    q = Queries(config)
    TC, TD, S = catalog.TOOL_CALLS, catalog.TOOL_CALL_DURATION, catalog.STATE_TRANSITIONS
    W, WD = catalog.WORKFLOW_RUNS, catalog.WORKFLOW_DURATION
    failed = f'to_state="{FAILED_STATE}"'
    panels = [
        row("Tools"),
        timeseries("Tool calls by tool and status", "Tool calls per second.",
                   [query(f"sum by (tool, status) ({q.rate(TC.name)})", "{{tool}} {{status}}")],
                   unit="ops", min=0, w=8),
        timeseries("Tool error ratio",
                   f"Share of failed tool calls over {config.alerting.rate_window}; the line is the alert "
                   f"threshold ({num(t.tool_error_ratio)}).",
                   [query(q.error_ratio(TC.name, "tool", window=config.alerting.rate_window), "{{tool}}")],
                   unit="percentunit", limit=t.tool_error_ratio, min=0, w=8),
        timeseries("Tool latency p95", f"95th percentile tool-call wall time over {DASHBOARD_LATENCY_WINDOW}.",
                   [query(q.bucket_quantile("0.95", TD.name, "tool, le", window=DASHBOARD_LATENCY_WINDOW),
                          "{{tool}}")],
                   unit="s", min=0, w=8),
        heatmap("Tool latency distribution",
                "Tool-call wall time per histogram bucket, all tools. Dots are exemplars "
                "linking to traces.",
                query(f"sum by (le) ({q.rate(TD.name + '_bucket')})", "{{le}}",
                      heatmap=True, exemplar=True),
                unit="s"),
        row("Workflow runs"),
        timeseries("Workflow runs by workflow and status", "Workflow runs (tasks) finished per second.",
                   [query(f"sum by (workflow, status) ({q.rate(W.name)})", "{{workflow}} {{status}}")],
                   unit="ops", min=0, w=12),
        heatmap("Workflow duration distribution",
                "Workflow run wall time per histogram bucket, all workflows. Dots are exemplars "
                "linking to the runs' traces.",
                query(f"sum by (le) ({q.rate(WD.name + '_bucket')})", "{{le}}", heatmap=True, exemplar=True),
                unit="s", w=12),
        _burn_panel(q, "Workflow error budget burn rate", "each workflow", WORKFLOW_SLI,
                    config.alerting.workflow_slo, "{{workflow}} "),
        row("Workflow states"),
        timeseries("State transitions",
                   "Workflow state-machine transitions per second.",
                   [query(f"sum by (workflow, from_state, to_state) ({q.rate(S.name)})",
                          "{{workflow}}: {{from_state}} → {{to_state}}")],
                   unit="ops", min=0),
        timeseries(f'Transitions to "{FAILED_STATE}"',
                   f'Transitions into the "{FAILED_STATE}" state per second, by the state '
                   "the workflow failed from.",
                   [query(f"sum by (workflow, from_state) ({q.rate(S.name, failed)})",
                          "{{workflow}}: from {{from_state}}")],
                   unit="ops", min=0),
        bargauge("Where workflows fail",
                 f'Transitions into "{FAILED_STATE}" in the selected time range, by workflow '
                 "and the state they failed from.",
                 query(f"sum by (workflow, from_state) ({q.increase(S.name, failed)})",
                       "{{workflow}}: from {{from_state}}", instant=True),
                 unit="short", w=24),
    ]
    return dashboard(TOOLS_UID, "Orchestrator / Tools and workflow",
                     "Tool calls (rate, errors, latency), workflow runs against their objective, and "
                     "workflow state transitions.", panels, q.variables())


def healing(config: Config) -> dict:
    h = config.healing
    q = Queries(config)
    E, R, F = catalog.AGENT_EXECUTIONS, catalog.RETRIES, catalog.FALLBACKS
    breaker = catalog.CIRCUIT_BREAKER_STATE.name
    states = catalog.CIRCUIT_STATE_VALUES
    colors = {"closed": "green", "half_open": "yellow", "open": "red"}
    # The breakers' own window, as the panel draws their threshold; a rate needs two scrapes in it.
    breaker_window = prometheus_duration(max(h.breaker_window_seconds, 4 * config.metrics.scrape_interval_seconds))
    panels = [
        row("Circuit breakers"),
        stat("Open circuit breakers", "Agents whose circuit breaker is open now.",
             query(f'sum({q.raw(breaker)} == bool {states["open"]})', instant=True),
             unit="none", decimals=0, thresholds=upper_limit(1), w=6, h=8),
        state_timeline("Circuit breaker state",
                       "Breaker state per agent: closed (calls flow), half-open (probing), "
                       "open (calls go to fallbacks).",
                       query(f"max by (agent) ({q.raw(breaker)})", "{{agent}}"),
                       mappings=[value_mapping(v, s.replace("_", "-"), colors[s])
                                 for s, v in states.items()], w=18),
        timeseries("Error ratio against the breaker threshold",
                   f"Share of failed executions per agent over {breaker_window}; breakers open at "
                   f"{num(h.breaker_error_ratio)} over {num(h.breaker_window_seconds)} s "
                   f"(with at least {h.breaker_min_calls} calls).",
                   [query(q.agent_error_ratio("agent", breaker_window), "{{agent}}")],
                   unit="percentunit", limit=h.breaker_error_ratio, min=0, w=24),
        row("Retries and fallbacks"),
        timeseries("Retries by agent and error type", "Retried executions per second.",
                   [query(f"sum by (agent, error_type) ({q.rate(R.name)})",
                          "{{agent}} {{error_type}}")],
                   unit="ops", min=0, w=8),
        timeseries("Retries per execution",
                   f"Retries per execution by agent (at most {h.max_attempts - 1} per "
                   "execution with the configured attempts).",
                   [query(q.ratio(q.rate(R.name), q.rate(E.name), "agent"), "{{agent}}")],
                   unit="short", min=0, w=8),
        timeseries("Fallbacks", "Work handed from a failing agent to a fallback, per second.",
                   [query(f"sum by (from_agent, to_agent) ({q.rate(F.name)})",
                          "{{from_agent}} → {{to_agent}}")],
                   unit="ops", min=0, w=8),
        row("Adaptive selection"),
        timeseries("Selector weights",
                   "Share of each task type the adaptive selector gives each agent. Empty unless the "
                   "orchestrator's own /metrics (Telemetry.serve, with its Healer) is scraped: the "
                   "selector lives in its process, and no event carries its weights.",
                   [query(f"max by (task, agent) ({q.raw(catalog.SELECTOR_WEIGHT.name)})",
                          "{{task}}: {{agent}}")],
                   unit="percentunit", min=0, max=1, w=16),
        timeseries("Fleet sources up",
                   "Per replica, whether its last poll of Alertmanager's alerts and of Prometheus's "
                   "statistics succeeded (healing.fleet); 0: the replica keeps its breakers and learns alone. "
                   "Empty without healing.fleet.",
                   [query(f"min by (instance, source) ({q.raw(catalog.FLEET_SOURCE_UP.name)})",
                          "{{instance}} {{source}}")],
                   unit="none", thresholds=lower_limit(1), min=0, max=1, w=8),
    ]
    return dashboard(HEALING_UID, "Orchestrator / Self-healing",
                     "Circuit breakers, retries, fallbacks and the adaptive selector.",
                     panels, q.variables())


def exporter_health(config: Config) -> dict:
    t = config.alerting.thresholds
    q = Queries(config)
    ev, rej = catalog.EXPORTER_EVENTS.name, catalog.EXPORTER_EVENTS_REJECTED.name
    panels = [
        stat("Exporters down", "Exporter targets whose last scrape failed; red from one, as "
             "OrchestratorExporterDown fires for each.",
             query(f"count({q.raw('up')} == 0) or vector(0)", instant=True), unit="none", decimals=0,
             thresholds=upper_limit(1), w=6),
        stat("Rejected events",
             "Share of events rejected over the selected time range; the alert threshold is "
             f"{num(t.rejected_events_ratio)}.",
             # Either counter may have no series yet (nothing rejected, or nothing accepted): 0, not No data;
             # with no event at all, No data, not NaN.
             query(f"(sum({q.increase(rej)}) or vector(0)) / "
                   f"((sum({q.increase(ev)}) or vector(0)) + (sum({q.increase(rej)}) or vector(0)) > 0)",
                   instant=True),
             unit="percentunit", decimals=2, thresholds=upper_limit(t.rejected_events_ratio),
             w=6),
        table("Exporter versions", "Build information of each exporter.",
              [query(f"max by (job, instance, version) "
                     f"({q.raw(catalog.EXPORTER_BUILD_INFO.name)})", instant=True, table=True)],
              unit="none", hidden=("Value",), order=("job", "instance", "version"),
              overrides=[], w=12, h=4),
        timeseries("Ingest rate by event type", "Events accepted per second, by type.",
                   [query(f"sum by (type) ({q.rate(ev)})", "{{type}}")],
                   unit="ops", min=0, stack=True),
        timeseries("Rejected events by reason", "Events rejected per second, by reason.",
                   [query(f"sum by (reason) ({q.rate(rej)})", "{{reason}}")],
                   unit="ops", min=0, stack=True),
        timeseries("Series overflow",
                   "Observations of new label sets folded into the __overflow__ series per second, by metric. "
                   "Anything here means a metric hit metrics.max_series "
                   f"({config.metrics.max_series}): find the label that explodes.",
                   [query(f"sum by (metric) ({q.rate(catalog.EXPORTER_SERIES_OVERFLOW.name)})",
                          "{{metric}}")],
                   unit="ops", min=0),
        timeseries("HTTP requests by handler and code",
                   "Requests each exporter answered per second, by endpoint and status code "
                   "(5xx are faults in the exporter, logged with their traceback).",
                   [query(f"sum by (handler, code) ({q.rate(catalog.EXPORTER_HTTP_REQUESTS.name)})",
                          "{{handler}} {{code}}")],
                   unit="reqps", min=0),
        timeseries("OTLP/gRPC calls by code",
                   "Calls the OTLP/gRPC receiver (otlp.grpc_listen_address) answered per second, by gRPC "
                   "status code: UNAUTHENTICATED and RESOURCE_EXHAUSTED are refused credentials and the "
                   "rate limit, INTERNAL a fault in the exporter, logged with its traceback. Empty without "
                   "the gRPC receiver.",
                   [query(f"sum by (code) ({q.rate(catalog.EXPORTER_GRPC_REQUESTS.name)})", "{{code}}")],
                   unit="reqps", min=0),
        timeseries("OTLP spans received by outcome",
                   "GenAI spans mapped to events, spans with no GenAI meaning ignored, and spans "
                   "rejected, per second (POST /v1/traces and the OTLP/gRPC receiver).",
                   [query(f"sum by (outcome) ({q.rate(catalog.EXPORTER_OTLP_SPANS.name)})", "{{outcome}}")],
                   unit="ops", min=0, stack=True),
        timeseries("OTLP spans forwarded by outcome",
                   "Received spans passed on to the tracing backend (otlp.forward_spans) per second: sent, "
                   "dropped (the forwarding queue was full: the backend is slow or stuck) and failed (the "
                   "backend refused them or could not be reached). With more than "
                   f"{percent(t.unforwarded_spans_ratio)} of them dropped or failed, OrchestratorSpansNotForwarded "
                   "fires. Empty without forwarding.",
                   [query(f"sum by (outcome) ({q.rate(catalog.EXPORTER_OTLP_FORWARDED_SPANS.name)})",
                          "{{outcome}}")],
                   unit="ops", min=0, stack=True),
        timeseries("Scrape duration", "Time Prometheus takes to scrape each exporter.",
                   [query(f"max by (instance) ({q.raw('scrape_duration_seconds')})",
                          "{{instance}}")],
                   unit="s", min=0),
        timeseries("Samples per scrape", "Samples in each scrape: the exporter's series count.",
                   [query(f"max by (instance) ({q.raw('scrape_samples_scraped')})",
                          "{{instance}}")],
                   unit="short", min=0),
        timeseries("Up", "1 when the last scrape of the exporter succeeded.",
                   [query(f"max by (instance) ({q.raw('up')})", "{{instance}}")],
                   unit="none", thresholds=lower_limit(1), min=0, max=1),
        timeseries("Resident memory", "Each exporter process's resident memory (the orchestrator's own, "
                   "for the embedded server): it grows with the series held, up to metrics.max_series "
                   "per metric.",
                   [query(f"max by (instance) ({q.raw('process_resident_memory_bytes')})", "{{instance}}")],
                   unit="bytes", min=0),
        timeseries("CPU", "CPU time each exporter process uses per second (1 is one core busy).",
                   [query(f"max by (instance) ({q.rate('process_cpu_seconds_total')})", "{{instance}}")],
                   unit="percentunit", min=0),
    ]
    return dashboard(EXPORTER_UID, "Orchestrator / Exporter health",
                     "The exporter itself: ingest, rejections, series overflow, scrapes, memory and CPU.",
                     panels, q.variables())


DASHBOARDS = (overview, agent_detail, cost, tools, healing, exporter_health)


# -- provisioning ------------------------------------------------------------


def datasources(config: Config) -> dict:
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus", "type": "prometheus", "uid": PROMETHEUS_UID,
                "access": "proxy", "url": PROMETHEUS_URL, "isDefault": True,
                "editable": False,
                "jsonData": {
                    "httpMethod": "POST",
                    "timeInterval": scrape_interval(config),
                    "exemplarTraceIdDestinations": [
                        {"name": EXEMPLAR_TRACE_LABEL, "datasourceUid": JAEGER_UID},
                    ],
                },
            },
            {
                "name": "Alertmanager", "type": "alertmanager", "uid": ALERTMANAGER_UID,
                "access": "proxy", "url": ALERTMANAGER_URL, "editable": False,
                "jsonData": {"implementation": "prometheus", "handleGrafanaManagedAlerts": False},
            },
            {
                "name": "Jaeger", "type": "jaeger", "uid": JAEGER_UID,
                "access": "proxy", "url": JAEGER_URL, "editable": False,
            },
        ],
    }


def dashboard_providers() -> dict:
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "agent-exporter",
            "orgId": 1,
            "folder": FOLDER,
            "type": "file",
            "disableDeletion": True,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 30,
            "options": {"path": DASHBOARDS_PATH, "foldersFromFilesStructure": False},
        }],
    }


GENERATED = "# Generated by `agent-exporter render` from the config; edit the config, not this file.\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def render_grafana(config: Config, out_dir: Path) -> list[Path]:
    """Write grafana/dashboards/*.json and grafana/provisioning/*/*.yaml under out_dir."""
    root = Path(out_dir) / "grafana"
    written = [
        _write(root / "dashboards" / f"{board['uid']}.json",
               json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        for board in (build(config) for build in DASHBOARDS)
    ]
    provisioning = root / "provisioning"
    for name, document in (("datasources", datasources(config)),
                           ("dashboards", dashboard_providers())):
        written.append(_write(provisioning / name / "agent-exporter.yaml",
                              GENERATED + yaml.safe_dump(document, sort_keys=False)))
    return written
