"""Grafana dashboards and provisioning, generated from the config and the catalog.

Dashboards are assembled from small builders (a query, a panel, a variable), as
grafonnet does, so that every panel gets the same datasource, units and
descriptions and every query names catalog metrics or recording rules.

Two kinds of query, kept apart on purpose:

* Panels that show what an alert evaluates read the recording rule the alert
  reads (error ratios, latency quantiles, daily spend, SLO burn).  The rules
  aggregate away `job` and `instance`, so these panels cover every exporter and
  say so in their description; the threshold line is the alert's threshold.
* Every other panel reads raw metrics with `job=~"$job", instance=~"$instance"`
  and `$__rate_interval`, so it follows the variables and the zoom level.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import ascii_uppercase

import yaml

from .. import catalog
from ..config import Config
from .rules import (COST_1D_RULE, COST_1H_RULE, COST_FORECAST, FORECAST_HORIZON_SECONDS, LATENCY_QUANTILE_RULE,
                    TOOL_ERROR_RATIO_RULE, TOOL_QUANTILE_RULE, duration_seconds, error_ratio_rule,
                    seconds_duration)
from .rules import number as num

# grafana/grafana:11.5 writes schemaVersion 40 (11.3 added the v40 migration,
# v41 came after 11.5); dashboards at that version load without a migration.
GRAFANA_VERSION = "11.5.2"
SCHEMA_VERSION = 40

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

OVERVIEW_UID = "orchestrator-overview"
AGENT_UID = "orchestrator-agent"
COST_UID = "orchestrator-cost"
TOOLS_UID = "orchestrator-tools"
HEALING_UID = "orchestrator-healing"
EXPORTER_UID = "orchestrator-exporter"
DASHBOARD_UIDS = (OVERVIEW_UID, AGENT_UID, COST_UID, TOOLS_UID, HEALING_UID, EXPORTER_UID)
TAGS = ["agent-exporter", "orchestrator"]

# The workflow state that marks a failed workflow (the demo and the docs use it).
FAILED_STATE = "failed"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCOPE = 'job=~"$job", instance=~"$instance"'
SUCCESS = 'status="success"'
ERROR = 'status="error"'
DAY = 'period="day"'

# The recording rule of the error-ratio alert's window (render/rules.py writes the rules).
ERROR_RATIO_RULE = error_ratio_rule("5m")


# -- PromQL helpers ----------------------------------------------------------


def raw(name: str, *matchers: str) -> str:
    """A selector of a raw exporter metric, scoped by the job and instance variables."""
    return f"{name}{{{', '.join((SCOPE, *matchers))}}}"


def rate(name: str, *matchers: str, window: str = "$__rate_interval") -> str:
    return f"rate({raw(name, *matchers)}[{window}])"


def increase(name: str, *matchers: str, window: str = "$__range") -> str:
    return f"increase({raw(name, *matchers)}[{window}])"


def bucket_quantile(q: float, spec: catalog.MetricSpec, by: str, *matchers: str) -> str:
    return (f"histogram_quantile({num(q)}, sum by ({by}, le) "
            f"({rate(spec.name + '_bucket', *matchers)}))")


# -- queries -----------------------------------------------------------------


def query(expr: str, legend: str = "", *, instant: bool = False, table: bool = False,
          exemplar: bool = False, heatmap: bool = False) -> dict:
    """One Prometheus query; the panel assigns its refId."""
    fmt = "heatmap" if heatmap else "table" if table else "time_series"
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "exemplar": exemplar,
        "expr": expr,
        "format": fmt,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
    }


def _with_ref_ids(targets: list[dict]) -> list[dict]:
    return [dict(t, refId=ascii_uppercase[i]) for i, t in enumerate(targets)]


# -- field config ------------------------------------------------------------


def steps(*pairs: tuple[str, float | None]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in pairs]}


def upper_limit(limit: float, *, warn: float | None = None) -> dict:
    """Green below `limit` (orange from `warn`), red from it: for ratios, latencies, spend."""
    pairs = [("green", None)]
    if warn is not None:
        pairs.append(("orange", warn))
    pairs.append(("red", limit))
    return steps(*pairs)


def lower_limit(limit: float) -> dict:
    """Red below `limit`, green from it: for success ratios."""
    return steps(("red", None), ("green", limit))


NO_THRESHOLDS = steps(("green", None))


def override(field: str, **properties) -> dict:
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": key, "value": value} for key, value in properties.items()],
    }


# -- panels ------------------------------------------------------------------


def _panel(kind: str, title: str, description: str, targets: list[dict], *, unit: str,
           w: int, h: int, options: dict, thresholds: dict = NO_THRESHOLDS,
           defaults: dict | None = None, overrides: list | None = None,
           transformations: list | None = None, links: list | None = None) -> dict:
    panel = {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": thresholds, **(defaults or {})},
            "overrides": overrides or [],
        },
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "options": options,
        "targets": _with_ref_ids(targets),
        "title": title,
        "type": kind,
    }
    if transformations:
        panel["transformations"] = transformations
    if links:
        panel["links"] = links
    return panel


def timeseries(title: str, description: str, targets: list[dict], *, unit: str,
               limit: float | None = None, thresholds: dict | None = None,
               min: float | None = None, max: float | None = None, stack: bool = False,
               w: int = 12, h: int = 8, overrides: list | None = None) -> dict:
    """A time series; `limit` draws the alert threshold as a red line."""
    if limit is not None:
        thresholds = upper_limit(limit)
    custom = {
        "drawStyle": "line",
        "fillOpacity": 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
    }
    defaults: dict = {"color": {"mode": "palette-classic"}, "custom": custom}
    if min is not None:
        defaults["min"] = min
    if max is not None:
        defaults["max"] = max
    options = {
        "legend": {"calcs": ["mean", "lastNotNull", "max"], "displayMode": "table",
                   "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel("timeseries", title, description, targets, unit=unit, w=w, h=h,
                  options=options, thresholds=thresholds or NO_THRESHOLDS,
                  defaults=defaults, overrides=overrides)


def stat(title: str, description: str, target: dict, *, unit: str,
         thresholds: dict = NO_THRESHOLDS, decimals: int | None = None,
         w: int = 4, h: int = 4) -> dict:
    """A single number (one of the legacy dashboard's cards)."""
    defaults = {"color": {"mode": "thresholds"}}
    if decimals is not None:
        defaults["decimals"] = decimals
    options = {
        "colorMode": "value",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showPercentChange": False,
        "textMode": "auto",
        "wideLayout": True,
    }
    return _panel("stat", title, description, [target], unit=unit, w=w, h=h,
                  options=options, thresholds=thresholds, defaults=defaults)


def bargauge(title: str, description: str, target: dict, *, unit: str,
             thresholds: dict = NO_THRESHOLDS, w: int = 12, h: int = 8) -> dict:
    """One bar per series, from an instant query."""
    options = {
        "displayMode": "gradient",
        "maxVizHeight": 300,
        "minVizHeight": 16,
        "minVizWidth": 8,
        "namePlacement": "auto",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True,
        "sizing": "auto",
        "valueMode": "color",
    }
    return _panel("bargauge", title, description, [target], unit=unit, w=w, h=h,
                  options=options, thresholds=thresholds,
                  defaults={"color": {"mode": "thresholds"}, "min": 0})


def table(title: str, description: str, targets: list[dict], *, unit: str,
          overrides: list, hidden: tuple[str, ...] = (), order: tuple[str, ...] = (),
          sort_by: str | None = None, w: int = 24, h: int = 8) -> dict:
    """A table of instant queries merged on their labels (one row per label set).

    Columns are addressed by their names before renaming: a label name, or
    `Value #<refId>` for the value of each query.
    """
    organize = {
        "excludeByName": {name: True for name in ("Time", *hidden)},
        "indexByName": {name: i for i, name in enumerate(order)},
        "renameByName": {},
    }
    options = {
        "cellHeight": "sm",
        "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
        "showHeader": True,
        "sortBy": [{"desc": True, "displayName": sort_by}] if sort_by else [],
    }
    return _panel("table", title, description, targets, unit=unit, w=w, h=h, options=options,
                  defaults={"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
                  overrides=overrides,
                  transformations=[{"id": "merge", "options": {}},
                                   {"id": "organize", "options": organize}])


def heatmap(title: str, description: str, target: dict, *, unit: str,
            w: int = 24, h: int = 9) -> dict:
    """Histogram buckets over time (a `format: heatmap` query), exemplars drawn as dots."""
    options = {
        "calculate": False,
        "cellGap": 1,
        "cellValues": {"unit": "ops"},
        "color": {"exponent": 0.5, "fill": "dark-orange", "mode": "scheme", "reverse": False,
                  "scale": "exponential", "scheme": "Oranges", "steps": 64},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": True},
        "yAxis": {"axisPlacement": "left", "reverse": False, "unit": unit},
    }
    return _panel("heatmap", title, description, [target], unit=unit, w=w, h=h,
                  options=options, defaults={"custom": {"scaleDistribution": {"type": "linear"}}})


def state_timeline(title: str, description: str, target: dict, *, mappings: list,
                   w: int = 12, h: int = 8) -> dict:
    options = {
        "alignValue": "left",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "mergeValues": True,
        "rowHeight": 0.9,
        "showValue": "auto",
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return _panel("state-timeline", title, description, [target], unit="none", w=w, h=h,
                  options=options, defaults={"color": {"mode": "thresholds"},
                                             "mappings": mappings})


def row(title: str) -> dict:
    """A section header; rows hold no queries."""
    return {"collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
            "panels": [], "title": title, "type": "row"}


def value_mapping(value: float, text: str, color: str) -> dict:
    return {"options": {num(value): {"color": color, "index": int(value), "text": text}},
            "type": "value"}


def layout(panels: list[dict]) -> list[dict]:
    """Flow panels left to right in the 24-column grid and number them."""
    x = y = row_height = 0
    placed = []
    for panel_id, panel in enumerate(panels, start=1):
        grid = panel["gridPos"]
        if x + grid["w"] > 24 or panel["type"] == "row":
            x, y, row_height = 0, y + row_height, 0
        placed.append(dict(panel, id=panel_id, gridPos=dict(grid, x=x, y=y)))
        x += grid["w"]
        row_height = max(row_height, grid["h"])
        if panel["type"] == "row":
            x, y, row_height = 0, y + grid["h"], 0
    return placed


# -- variables and dashboards ------------------------------------------------


def datasource_variable() -> dict:
    return {
        "current": {}, "hide": 0, "includeAll": False, "label": "Data source", "multi": False,
        "name": "datasource", "options": [], "query": "prometheus", "refresh": 1,
        "regex": "", "skipUrlSync": False, "type": "datasource",
    }


def query_variable(name: str, label: str, expr: str, *, include_all: bool = True) -> dict:
    """A variable from `label_values(...)`; "All" matches every value (`.+`)."""
    variable = {
        "current": {}, "datasource": DATASOURCE, "definition": expr, "hide": 0,
        "includeAll": include_all, "label": label, "multi": include_all, "name": name,
        "options": [],
        "query": {"qryType": 1, "query": expr, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2, "regex": "", "skipUrlSync": False, "sort": 1, "type": "query",
    }
    if include_all:
        variable["allValue"] = ".+"
    return variable


def scope_variables() -> list[dict]:
    build_info = catalog.EXPORTER_BUILD_INFO.name
    return [
        datasource_variable(),
        query_variable("job", "Job", f"label_values({build_info}, job)"),
        query_variable("instance", "Instance",
                       f'label_values({build_info}{{job=~"$job"}}, instance)'),
    ]


def dashboard(uid: str, title: str, description: str, panels: list[dict],
              variables: list[dict]) -> dict:
    return {
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{
            "asDropdown": True, "icon": "external link", "includeVars": True, "keepTime": True,
            "tags": TAGS[:1], "targetBlank": False, "title": "Orchestrator dashboards",
            "tooltip": "", "type": "dashboards", "url": "",
        }],
        "panels": layout(panels),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": variables},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


def _agent_link() -> dict:
    """Opens the agent dashboard for the clicked agent, keeping the scope variables."""
    return {
        "title": "Agent detail",
        "url": (f"/d/{AGENT_UID}?var-agent=${{__value.raw}}&${{datasource:queryparam}}"
                f"&${{job:queryparam}}&${{instance:queryparam}}&${{__url_time_range}}"),
    }


# -- the six dashboards ------------------------------------------------------

ALL_JOBS = " Covers every exporter: the recording rule aggregates away job and instance."


def overview(config: Config) -> dict:
    t = config.alerting.thresholds
    budget = config.alerting.budget
    E, D, C = catalog.AGENT_EXECUTIONS, catalog.AGENT_EXECUTION_DURATION, catalog.LLM_COST
    successes = increase(E.name, SUCCESS)
    total_runs = f"sum({increase(E.name)})"
    panels = [
        row("Summary over the selected time range"),
        stat("Total executions", "Agent executions finished in the selected time range.",
             query(total_runs, instant=True), unit="short", decimals=0),
        stat("Success rate",
             "Share of executions that succeeded in the selected time range. "
             f"Red below {num(1 - t.error_ratio)} (the error-ratio alert threshold).",
             query(f"(sum({successes}) or vector(0)) / {total_runs}", instant=True),
             unit="percentunit", thresholds=lower_limit(1 - t.error_ratio), decimals=1),
        stat("Average latency",
             "Mean execution wall time in the selected time range. Red from the p95 "
             "latency alert threshold: a mean that high means most executions are slow.",
             query(f"sum({increase(D.name + '_sum')}) / sum({increase(D.name + '_count')})",
                   instant=True),
             unit="s", thresholds=upper_limit(t.latency_p95_seconds)),
        stat("Total cost", "LLM spend in the selected time range, in US dollars.",
             query(f"sum({increase(C.name)})", instant=True),
             unit="currencyUSD", decimals=2),
        stat("Spend, last 24 h",
             "LLM spend over the last 24 hours against the daily budget "
             f"(${num(budget.day_usd)}); orange from 80 %, red over budget." + ALL_JOBS,
             query(f"sum({COST_1D_RULE})", instant=True),
             unit="currencyUSD", decimals=2,
             thresholds=upper_limit(budget.day_usd, warn=0.8 * budget.day_usd)),
        stat("Alerts firing", "Orchestrator alerts firing now (Prometheus ALERTS).",
             query('count(ALERTS{alertstate="firing"}) or vector(0)', instant=True),
             unit="none", decimals=0, thresholds=upper_limit(1)),
        table("Agent performance",
              "Per agent over the selected time range: executions, success rate, mean "
              "latency and LLM spend, as the legacy HTML dashboard showed them. "
              "Click an agent for its detail dashboard.",
              [query(f"sum by (agent) ({increase(E.name)})", instant=True, table=True),
               query(f"(sum by (agent) ({successes}) or 0 * sum by (agent) ({increase(E.name)}))"
                     f" / sum by (agent) ({increase(E.name)})", instant=True, table=True),
               query(f"sum by (agent) ({increase(D.name + '_sum')}) / "
                     f"sum by (agent) ({increase(D.name + '_count')})", instant=True, table=True),
               query(f"sum by (agent) ({increase(C.name)})", instant=True, table=True)],
              unit="short", order=("agent", "Value #A", "Value #B", "Value #C", "Value #D"),
              sort_by="Executions",
              overrides=[
                  override("agent", displayName="Agent", links=[_agent_link()]),
                  override("Value #A", displayName="Executions", decimals=0),
                  override("Value #B", displayName="Success rate", unit="percentunit",
                           decimals=1, thresholds=lower_limit(1 - t.error_ratio),
                           **{"custom.cellOptions": {"type": "color-text"}}),
                  override("Value #C", displayName="Average latency", unit="s"),
                  override("Value #D", displayName="Cost", unit="currencyUSD", decimals=2),
              ]),
        row("Now"),
        timeseries("Executions by agent and status",
                   "Executions per second, by agent and outcome.",
                   [query(f"sum by (agent, status) ({rate(E.name)})", "{{agent}} {{status}}")],
                   unit="ops", min=0),
        timeseries("Error ratio by agent",
                   "Share of failed executions over 5 minutes; the line is the alert "
                   f"threshold ({num(t.error_ratio)})." + ALL_JOBS,
                   [query(ERROR_RATIO_RULE, "{{agent}}")],
                   unit="percentunit", limit=t.error_ratio, min=0),
        timeseries("Latency p50 / p95 / p99 by agent",
                   "Execution wall-time quantiles over 5 minutes; the line is the p95 "
                   f"alert threshold ({num(t.latency_p95_seconds)} s)." + ALL_JOBS,
                   [query(f'{LATENCY_QUANTILE_RULE}{{quantile="{q}"}}', f"{{{{agent}}}} p{p}")
                    for q, p in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))],
                   unit="s", limit=t.latency_p95_seconds, min=0),
        timeseries("Spend, last 24 h, against the daily budget",
                   "Rolling 24-hour LLM spend (recorded) and the budget the exporter "
                   f"reports; the line is the configured daily budget (${num(budget.day_usd)}).",
                   [query(f"sum({COST_1D_RULE})", "spend, last 24 h"),
                    query(f'max({raw(catalog.COST_BUDGET.name, DAY)})',
                          "daily budget")],
                   unit="currencyUSD", limit=budget.day_usd, min=0),
        timeseries("Tokens by model and type", "LLM tokens per second, by model and type.",
                   [query(f"sum by (model, type) ({rate(catalog.LLM_TOKENS.name)})",
                          "{{model}} {{type}}")],
                   unit="short", min=0, stack=True),
        table("Firing alerts",
              "Alerts Prometheus reports as firing now, with their labels. "
              "Alertmanager (http://localhost:9093) has the silences and notifications.",
              [query('ALERTS{alertstate="firing"}', instant=True, table=True)],
              unit="none", hidden=("Value", "__name__", "alertstate"),
              order=("alertname", "severity"), overrides=[], w=12),
    ]
    return dashboard(OVERVIEW_UID, "Orchestrator / Overview",
                     "Agent executions, errors, latency, spend and alerts at a glance.",
                     panels, scope_variables())


def agent_detail(config: Config) -> dict:
    t = config.alerting.thresholds
    slo = config.alerting.slo
    E, D = catalog.AGENT_EXECUTIONS, catalog.AGENT_EXECUTION_DURATION
    agent = 'agent="$agent"'
    budget_ratio = num(1 - slo.objective)
    windows = sorted({w[0] for w in (*slo.page_windows, *slo.ticket_windows)}, key=duration_seconds)
    factors = sorted({w[2] for w in (*slo.page_windows, *slo.ticket_windows)})
    variables = scope_variables() + [query_variable(
        "agent", "Agent", f"label_values({raw(E.name)}, agent)", include_all=False)]
    panels = [
        row("Executions"),
        timeseries("Executions by status", "Executions of $agent per second, by outcome.",
                   [query(f"sum by (status) ({rate(E.name, agent)})", "{{status}}")],
                   unit="ops", min=0, stack=True, w=8),
        timeseries("Error ratio",
                   f"Share of failed executions of $agent; the line is the alert threshold "
                   f"({num(t.error_ratio)}).",
                   [query(f'sum({rate(E.name, agent, ERROR)}) / '
                          f"sum({rate(E.name, agent)})", "error ratio")],
                   unit="percentunit", limit=t.error_ratio, min=0, w=8),
        timeseries("Errors by type", "Failed executions of $agent per second, by error type.",
                   [query(f"sum by (error_type) ({rate(catalog.AGENT_ERRORS.name, agent)})",
                          "{{error_type}}")],
                   unit="ops", min=0, stack=True, w=8),
        heatmap("Latency distribution",
                "Execution wall time of $agent per histogram bucket. Dots are exemplars: "
                "click one to open its trace in Jaeger.",
                query(f"sum by (le) ({rate(D.name + '_bucket', agent)})", "{{le}}",
                      heatmap=True, exemplar=True),
                unit="s", w=12),
        timeseries("Latency p50 / p95 / p99",
                   f"Execution wall-time quantiles of $agent; the line is the p95 alert "
                   f"threshold ({num(t.latency_p95_seconds)} s). Exemplars link to traces.",
                   [query(bucket_quantile(q, D, "agent", agent), f"p{p}", exemplar=True)
                    for q, p in ((0.5, "50"), (0.95, "95"), (0.99, "99"))],
                   unit="s", limit=t.latency_p95_seconds, min=0, w=12, h=9),
        timeseries("Error budget burn rate",
                   f"Error ratio of $agent divided by the error budget ({budget_ratio} for a "
                   f"{num(slo.objective)} objective), over the SLO alert windows. Burning at 1 "
                   "spends the budget exactly; the alerts page and ticket at "
                   f"{', '.join(num(f) for f in factors)}." + ALL_JOBS,
                   [query(f"{error_ratio_rule(w)}{{{agent}}} / {budget_ratio}", w)
                    for w in windows],
                   unit="short", thresholds=upper_limit(max(factors), warn=min(factors)),
                   min=0, w=24),
        row("Tokens, cost and tools"),
        timeseries("Tokens by model and type", "LLM tokens of $agent per second.",
                   [query(f"sum by (model, type) ({rate(catalog.LLM_TOKENS.name, agent)})",
                          "{{model}} {{type}}")],
                   unit="short", min=0, stack=True, w=8),
        timeseries("Spend by model", "LLM spend of $agent in US dollars per hour.",
                   [query(f"sum by (model) ({rate(catalog.LLM_COST.name, agent)}) * 3600",
                          "{{model}}")],
                   unit="currencyUSD", min=0, stack=True, w=8),
        timeseries("Tool calls (all agents)",
                   "Tool calls per second by tool and outcome. The tool-call metric has no "
                   "agent label (it would multiply series); the calls of $agent are in its "
                   "traces in Jaeger.",
                   [query(f"sum by (tool, status) ({rate(catalog.TOOL_CALLS.name)})",
                          "{{tool}} {{status}}")],
                   unit="ops", min=0, w=8),
    ]
    return dashboard(AGENT_UID, "Orchestrator / Agent",
                     "One agent: outcomes, errors, latency with exemplars, SLO burn, tokens "
                     "and spend.", panels, variables)


def cost(config: Config) -> dict:
    budget = config.alerting.budget
    C, T = catalog.LLM_COST, catalog.LLM_TOKENS
    horizon = seconds_duration(FORECAST_HORIZON_SECONDS)

    def per_hour(by: str) -> str:
        return f"sum by ({by}) ({rate(C.name)}) * 3600"

    panels = [
        row("Budget"),
        stat("Spend, last 24 h",
             f"LLM spend over the last 24 hours; daily budget ${num(budget.day_usd)}." + ALL_JOBS,
             query(f"sum({COST_1D_RULE})", instant=True), unit="currencyUSD", decimals=2,
             thresholds=upper_limit(budget.day_usd, warn=0.8 * budget.day_usd), w=6),
        stat("Daily budget used",
             "Spend over the last 24 hours as a share of the daily budget." + ALL_JOBS,
             query(f"sum({COST_1D_RULE}) / {num(budget.day_usd)}", instant=True),
             unit="percentunit", decimals=0, thresholds=upper_limit(1, warn=0.8), w=6),
        stat(f"Forecast, 24 h spend in {horizon}",
             f"Spend over the trailing 24 hours {horizon} from now if the last hour's trend "
             "continues: what the forecast alert compares with the daily budget." + ALL_JOBS,
             query(COST_FORECAST, instant=True), unit="currencyUSD", decimals=2,
             thresholds=upper_limit(budget.day_usd, warn=0.8 * budget.day_usd), w=6),
        stat("Spend, last 30 days",
             f"LLM spend over the last 30 days; monthly budget ${num(budget.month_usd)}.",
             query(f"sum({increase(C.name, window='30d')})", instant=True),
             unit="currencyUSD", decimals=2,
             thresholds=upper_limit(budget.month_usd, warn=0.8 * budget.month_usd), w=6),
        timeseries("Budget burn",
                   f"Rolling 24-hour spend and its forecast {horizon} ahead against the daily "
                   f"budget (the line, ${num(budget.day_usd)})." + ALL_JOBS,
                   [query(f"sum({COST_1D_RULE})", "spend, last 24 h"),
                    query(COST_FORECAST, f"forecast, 24 h spend in {horizon}")],
                   unit="currencyUSD", limit=budget.day_usd, min=0, w=24),
        row("Where the money goes"),
        timeseries("Spend by agent", "LLM spend in US dollars per hour, by agent.",
                   [query(per_hour("agent"), "{{agent}}")],
                   unit="currencyUSD", min=0, stack=True, w=8),
        timeseries("Spend by model", "LLM spend in US dollars per hour, by model.",
                   [query(per_hour("model"), "{{model}}")],
                   unit="currencyUSD", min=0, stack=True, w=8),
        timeseries("Spend by feature",
                   "LLM spend in US dollars per hour, by feature. The feature label exists "
                   "only when metrics.extra_labels includes it; otherwise this is one series "
                   "with an empty feature.",
                   [query(per_hour("feature"), "{{feature}}")],
                   unit="currencyUSD", min=0, stack=True, w=8),
        bargauge("Spend by agent, last 24 h", "Rolling 24-hour spend per agent." + ALL_JOBS,
                 query(f"sum by (agent) ({COST_1D_RULE})", "{{agent}}", instant=True),
                 unit="currencyUSD"),
        bargauge("Spend by agent and model, last hour",
                 "Spend over the last hour per agent and model: where a rising forecast "
                 "comes from." + ALL_JOBS,
                 query(f"sum by (agent, model) ({COST_1H_RULE})", "{{agent}} {{model}}", instant=True),
                 unit="currencyUSD"),
        timeseries("Cost per execution by agent",
                   "Mean LLM spend per execution, by agent.",
                   [query(f"sum by (agent) ({rate(C.name)}) / "
                          f"sum by (agent) ({rate(catalog.AGENT_EXECUTIONS.name)})",
                          "{{agent}}")],
                   unit="currencyUSD", min=0, w=24),
        row("Tokens"),
        timeseries("Tokens by agent and type", "LLM tokens per second, by agent and type.",
                   [query(f"sum by (agent, type) ({rate(T.name)})", "{{agent}} {{type}}")],
                   unit="short", min=0, stack=True, w=8),
        timeseries("Tokens by model and type", "LLM tokens per second, by model and type.",
                   [query(f"sum by (model, type) ({rate(T.name)})", "{{model}} {{type}}")],
                   unit="short", min=0, stack=True, w=8),
        timeseries("Executions with unknown usage",
                   "Executions per second that reported neither cost nor tokens with a known "
                   "price. They are not counted as $0: add prices or usage to see their cost.",
                   [query(f"sum by (agent) ({rate(catalog.USAGE_UNKNOWN.name)})", "{{agent}}")],
                   unit="ops", min=0, w=8),
    ]
    return dashboard(COST_UID, "Orchestrator / Cost and tokens",
                     "LLM spend against the budget, by agent, model and feature; token use.",
                     panels, scope_variables())


def tools(config: Config) -> dict:
    t = config.alerting.thresholds
    TC, TD, S = catalog.TOOL_CALLS, catalog.TOOL_CALL_DURATION, catalog.STATE_TRANSITIONS
    failed = f'to_state="{FAILED_STATE}"'
    panels = [
        row("Tools"),
        timeseries("Tool calls by tool and status", "Tool calls per second.",
                   [query(f"sum by (tool, status) ({rate(TC.name)})", "{{tool}} {{status}}")],
                   unit="ops", min=0, w=8),
        timeseries("Tool error ratio",
                   "Share of failed tool calls over 5 minutes; the line is the alert "
                   f"threshold ({num(t.tool_error_ratio)})." + ALL_JOBS,
                   [query(TOOL_ERROR_RATIO_RULE, "{{tool}}")],
                   unit="percentunit", limit=t.tool_error_ratio, min=0, w=8),
        timeseries("Tool latency p95", "95th percentile tool-call wall time over 5 minutes."
                   + ALL_JOBS,
                   [query(f'{TOOL_QUANTILE_RULE}{{quantile="0.95"}}', "{{tool}}")],
                   unit="s", min=0, w=8),
        heatmap("Tool latency distribution",
                "Tool-call wall time per histogram bucket, all tools. Dots are exemplars "
                "linking to traces.",
                query(f"sum by (le) ({rate(TD.name + '_bucket')})", "{{le}}",
                      heatmap=True, exemplar=True),
                unit="s"),
        row("Workflow"),
        timeseries("State transitions",
                   "Workflow state-machine transitions per second.",
                   [query(f"sum by (workflow, from_state, to_state) ({rate(S.name)})",
                          "{{workflow}}: {{from_state}} → {{to_state}}")],
                   unit="ops", min=0),
        timeseries(f'Transitions to "{FAILED_STATE}"',
                   f'Transitions into the "{FAILED_STATE}" state per second, by the state '
                   "the workflow failed from.",
                   [query(f"sum by (workflow, from_state) ({rate(S.name, failed)})",
                          "{{workflow}}: from {{from_state}}")],
                   unit="ops", min=0),
        bargauge("Where workflows fail",
                 f'Transitions into "{FAILED_STATE}" in the selected time range, by workflow '
                 "and the state they failed from.",
                 query(f"sum by (workflow, from_state) ({increase(S.name, failed)})",
                       "{{workflow}}: from {{from_state}}", instant=True),
                 unit="short", w=24),
    ]
    return dashboard(TOOLS_UID, "Orchestrator / Tools and workflow",
                     "Tool calls (rate, errors, latency) and workflow state transitions.",
                     panels, scope_variables())


def healing(config: Config) -> dict:
    h = config.healing
    E, R, F = catalog.AGENT_EXECUTIONS, catalog.RETRIES, catalog.FALLBACKS
    breaker = catalog.CIRCUIT_BREAKER_STATE.name
    states = catalog.CIRCUIT_STATE_VALUES
    colors = {"closed": "green", "half_open": "yellow", "open": "red"}
    panels = [
        row("Circuit breakers"),
        stat("Open circuit breakers", "Agents whose circuit breaker is open now.",
             query(f'sum({raw(breaker)} == bool {states["open"]})', instant=True),
             unit="none", decimals=0, thresholds=upper_limit(1), w=6, h=8),
        state_timeline("Circuit breaker state",
                       "Breaker state per agent: closed (calls flow), half-open (probing), "
                       "open (calls go to fallbacks).",
                       query(f"max by (agent) ({raw(breaker)})", "{{agent}}"),
                       mappings=[value_mapping(v, s.replace("_", "-"), colors[s])
                                 for s, v in states.items()], w=18),
        timeseries("Error ratio against the breaker threshold",
                   "Share of failed executions per agent; breakers open at "
                   f"{num(h.breaker_error_ratio)} over {num(h.breaker_window_seconds)} s "
                   f"(with at least {h.breaker_min_calls} calls).",
                   [query(f'sum by (agent) ({rate(E.name, ERROR)}) / '
                          f"sum by (agent) ({rate(E.name)})", "{{agent}}")],
                   unit="percentunit", limit=h.breaker_error_ratio, min=0, w=24),
        row("Retries and fallbacks"),
        timeseries("Retries by agent and error type", "Retried executions per second.",
                   [query(f"sum by (agent, error_type) ({rate(R.name)})",
                          "{{agent}} {{error_type}}")],
                   unit="ops", min=0, w=8),
        timeseries("Retries per execution",
                   f"Retries per execution by agent (at most {h.max_attempts - 1} per "
                   "execution with the configured attempts).",
                   [query(f"sum by (agent) ({rate(R.name)}) / sum by (agent) ({rate(E.name)})",
                          "{{agent}}")],
                   unit="short", min=0, w=8),
        timeseries("Fallbacks", "Work handed from a failing agent to a fallback, per second.",
                   [query(f"sum by (from_agent, to_agent) ({rate(F.name)})",
                          "{{from_agent}} → {{to_agent}}")],
                   unit="ops", min=0, w=8),
        row("Adaptive selection"),
        timeseries("Selector weights",
                   "Share of each task type the adaptive selector gives each agent.",
                   [query(f"max by (task, agent) ({raw(catalog.SELECTOR_WEIGHT.name)})",
                          "{{task}}: {{agent}}")],
                   unit="percentunit", min=0, max=1, w=24),
    ]
    return dashboard(HEALING_UID, "Orchestrator / Self-healing",
                     "Circuit breakers, retries, fallbacks and the adaptive selector.",
                     panels, scope_variables())


def exporter_health(config: Config) -> dict:
    t = config.alerting.thresholds
    ev, rej = catalog.EXPORTER_EVENTS.name, catalog.EXPORTER_EVENTS_REJECTED.name
    panels = [
        stat("Exporters up", "Exporter targets Prometheus scraped successfully last time.",
             query(f"sum({raw('up')})", instant=True), unit="none", decimals=0, w=6),
        stat("Rejected events",
             "Share of events rejected over the selected time range; the alert threshold is "
             f"{num(t.rejected_events_ratio)}.",
             query(f"sum({increase(rej)}) / (sum({increase(ev)}) + sum({increase(rej)}))",
                   instant=True),
             unit="percentunit", decimals=2, thresholds=upper_limit(t.rejected_events_ratio),
             w=6),
        table("Exporter versions", "Build information of each exporter.",
              [query(f"max by (job, instance, version) "
                     f"({raw(catalog.EXPORTER_BUILD_INFO.name)})", instant=True, table=True)],
              unit="none", hidden=("Value",), order=("job", "instance", "version"),
              overrides=[], w=12, h=4),
        timeseries("Ingest rate by event type", "Events accepted per second, by type.",
                   [query(f"sum by (type) ({rate(ev)})", "{{type}}")],
                   unit="ops", min=0, stack=True),
        timeseries("Rejected events by reason", "Events rejected per second, by reason.",
                   [query(f"sum by (reason) ({rate(rej)})", "{{reason}}")],
                   unit="ops", min=0, stack=True),
        timeseries("Series overflow",
                   "Label sets folded into the __overflow__ series per second, by metric. "
                   "Anything here means a metric hit metrics.max_series "
                   f"({config.metrics.max_series}): find the label that explodes.",
                   [query(f"sum by (metric) ({rate(catalog.EXPORTER_SERIES_OVERFLOW.name)})",
                          "{{metric}}")],
                   unit="ops", min=0),
        timeseries("Scrape duration", "Time Prometheus takes to scrape each exporter.",
                   [query(f"max by (instance) ({raw('scrape_duration_seconds')})",
                          "{{instance}}")],
                   unit="s", min=0),
        timeseries("Samples per scrape", "Samples in each scrape: the exporter's series count.",
                   [query(f"max by (instance) ({raw('scrape_samples_scraped')})",
                          "{{instance}}")],
                   unit="short", min=0),
        timeseries("Up", "1 when the last scrape of the exporter succeeded.",
                   [query(f"max by (instance) ({raw('up')})", "{{instance}}")],
                   unit="none", thresholds=lower_limit(1), min=0, max=1),
    ]
    return dashboard(EXPORTER_UID, "Orchestrator / Exporter health",
                     "The exporter itself: ingest, rejections, series overflow, scrapes.",
                     panels, scope_variables())


DASHBOARDS = (overview, agent_detail, cost, tools, healing, exporter_health)


# -- provisioning ------------------------------------------------------------


def scrape_interval(config: Config) -> str:
    """The scrape interval render/rules.py writes into prometheus.yml: Grafana's smallest step."""
    return seconds_duration(min(config.metrics.collection_interval, 15))


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
