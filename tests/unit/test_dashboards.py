"""The dashboard checker: the Grafana dashboards and provisioning in grafana/.

Every dashboard parses, has its fixed uid and no import placeholders; every panel
has a unit, a description and the datasource variable; every query names only
catalog metrics, recording rules that render/rules.py writes, or Prometheus
built-ins, and is valid PromQL (promtool); the committed files equal a fresh render.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import yaml
from msgspec.structs import replace

from agent_exporter import catalog, durations
from agent_exporter.config import (
    AlertingConfig, BudgetConfig, Config, HealingConfig, MetricsConfig, Thresholds, parse_config)
from agent_exporter.render import common, dashboards, panels as grafana, prometheus, rules, series
from agent_exporter.render.expected import expand

from binaries import binary

REPO = Path(__file__).resolve().parents[2]

# Series Prometheus itself writes that panels may query.
BUILTINS = frozenset({"up", "ALERTS", "scrape_duration_seconds", "scrape_samples_scraped"})
# prometheus_client's process metrics, which the exporter serves beside the catalog's.
PROCESS = frozenset({"process_resident_memory_bytes", "process_cpu_seconds_total"})
# Fixed windows a panel may use instead of Grafana's: the monthly budget needs 30 days,
# the daily budgets one day (what their alerts read), the last hour's spend an hour.
FIXED_WINDOWS = frozenset({"30d", "1d", "1h"})


def alert_windows(config: Config) -> set[str]:
    """The windows of the alerts whose threshold a panel draws, which it reads over them too."""
    return {config.alerting.rate_window, series.DASHBOARD_LATENCY_WINDOW, config.alerting.evaluation_window,
            common.sli_windows(config.alerting.workflow_slo)[0],
            durations.prometheus_duration(max(config.healing.breaker_window_seconds,
                                              4 * config.metrics.scrape_interval_seconds))}
# Every optional panel, variable and query on: a custom job, a grouping label, budgets per
# feature, task error types.
SCOPED = parse_config({"observability": {
    "metrics": {"extra_labels": ["feature"]},
    "alerting": {"job": "orchestrator", "group_labels": ["environment"],
                 "budget": {"per_feature": {"login": 20, "search": 35}},
                 "task_error_types": ["BadInput", "422", "app.errors.InvalidPrompt (400)"]}}})

PROMQL_WORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
})


def render(config: Config, out_dir: Path) -> dict[str, dict]:
    dashboards.render_grafana(config, out_dir)
    return {p.stem: json.loads(p.read_text()) for p in (out_dir / "grafana" / "dashboards").glob("*.json")}


@pytest.fixture(scope="module", params=["default", "scoped"])
def config(request) -> Config:
    return {"default": Config(), "scoped": SCOPED}[request.param]


@pytest.fixture(scope="module")
def boards(tmp_path_factory, config) -> dict[str, dict]:
    return render(config, tmp_path_factory.mktemp("grafana"))


@pytest.fixture(scope="module")
def recorded_names(tmp_path_factory, config) -> frozenset[str]:
    """Recording rule names as the renderer writes them into prometheus/rules/."""
    out = tmp_path_factory.mktemp("render")
    prometheus.render_prometheus(config, out)
    names = set()
    for path in (out / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    assert names == set(rules.recording_rule_names(config))
    return frozenset(names)


def panels(board: dict) -> list[dict]:
    """Panels that query (rows are layout only)."""
    return [p for p in board["panels"] if p["type"] != "row"]


def exprs(board: dict) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p["targets"]]


def panel(board: dict, title: str) -> dict:
    (found,) = [p for p in board["panels"] if p["title"] == title]
    return found


def series_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small lexer, enough for our queries)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                       # string literals
    text = re.sub(r"\{[^}]*\}", "", text)                                    # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                                   # range windows
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w$:.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if not call and word not in PROMQL_WORDS:
            names.add(word)
    return names


def test_series_names_finds_selectors_and_skips_functions_and_labels():
    expr = ('sum by (agent) (rate(foo_total{job=~"$job", a="b{c}"}[$__rate_interval])) '
            '/ on (agent) group_left bar:baz:ratio_rate5m > bool 0.5 or vector(0)')
    assert series_names(expr) == {"foo_total", "bar:baz:ratio_rate5m"}


def test_committed_grafana_files_equal_a_fresh_render(tmp_path):
    written = dashboards.render_grafana(Config(), tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_text() for p in written}
    committed = {p.relative_to(REPO): p.read_text()
                 for p in (REPO / "grafana").rglob("*") if p.is_file()}
    assert committed.keys() == fresh.keys(), "run `agent-exporter render --out .`"
    for path, text in fresh.items():
        assert committed[path] == text, f"{path} is stale: run `agent-exporter render --out .`"


def test_render_is_deterministic(tmp_path):
    first = [p.read_bytes() for p in dashboards.render_grafana(Config(), tmp_path / "a")]
    second = [p.read_bytes() for p in dashboards.render_grafana(Config(), tmp_path / "b")]
    assert first == second


def test_every_dashboard_has_its_fixed_uid(boards):
    # The alerts' dashboard_url links point at these uids (common.DASHBOARD_UIDS).
    assert sorted(boards) == sorted(common.DASHBOARD_UIDS.values())
    for stem, board in boards.items():
        assert board["uid"] == stem
        assert board["id"] is None
        assert board["schemaVersion"] == grafana.SCHEMA_VERSION


def test_every_alert_links_a_dashboard_with_the_variables_it_sets(boards, config):
    """An alert's dashboard_url, as Prometheus expands it, opens its dashboard on the alert's agent
    and deployment: each var-<name> it sets is a variable of that dashboard, set to the value of the
    alert's label of that name, whatever characters it holds."""
    labels = {name: f"{name} & #2+ x" for name in ("agent", "tool", "workflow", *config.alerting.group_labels)}
    linked, linked_without_deployment = {}, {}
    for group in rules.alert_rules(config):
        for rule in group["rules"]:
            for carried, found in ((labels, linked), ({"agent": labels["agent"]}, linked_without_deployment)):
                url = expand(rule["annotations"]["dashboard_url"], carried, 1.0)
                uid, _, query = url.removeprefix(f"{config.alerting.grafana_url}/d/").partition("?")
                variables = {v["name"] for v in boards[uid]["templating"]["list"]}
                pairs = parse_qs(query)      # as a browser reads it (an empty field, as in "?&", is no field)
                for name, values in pairs.items():
                    assert name.startswith("var-") and name[4:] in variables, (rule["alert"], name)
                    assert values == [carried[name[4:]]], (rule["alert"], name, values)
                found[rule["alert"]] = set(pairs)
    deployment = {f"var-{label}" for label in config.alerting.group_labels}
    assert linked["OrchestratorAgentSlow"] == {"var-agent", *deployment}
    assert linked["OrchestratorDailyCostOverBudget"] == deployment
    # absent() of a whole job carries no deployment label; absent in one deployment carries its own.
    assert linked["OrchestratorMetricsAbsent"] == deployment
    assert linked_without_deployment["OrchestratorMetricsAbsent"] == set()


def test_no_import_placeholders(tmp_path):
    dashboards.render_grafana(Config(), tmp_path)
    for path in (tmp_path / "grafana").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "__inputs" not in text and "__requires" not in text, path
            assert "${DS_" not in text, path


def test_every_panel_has_a_unit_a_description_and_the_datasource_variable(boards):
    for board in boards.values():
        for p in panels(board):
            where = f"{board['uid']} / {p['title']}"
            assert p["description"].strip(), where
            assert p["fieldConfig"]["defaults"]["unit"], where
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert p["targets"], where
            for target in p["targets"]:
                assert target["datasource"] == p["datasource"], where
            if p["type"] == "heatmap":
                assert p["options"]["yAxis"]["unit"], where


def test_every_dashboard_has_the_datasource_grouping_and_instance_variables(boards, config):
    """The job is the config's (alerting.job), so it is no variable any more; each grouping
    label is one, selecting one deployment (as the alerts see one), and narrows the instances."""
    build_info = catalog.EXPORTER_BUILD_INFO.name
    job = f'job="{config.alerting.job}"'
    for board in boards.values():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert "job" not in variables
        narrowed = [job]
        for label in config.alerting.group_labels:
            assert variables[label]["definition"] == f"label_values({build_info}{{{', '.join(narrowed)}}}, {label})"
            assert not variables[label]["includeAll"] and not variables[label]["multi"]
            narrowed.append(f'{label}="${label}"')
        assert variables["instance"]["definition"] == f"label_values({build_info}{{{', '.join(narrowed)}}}, instance)"
        assert variables["instance"]["allValue"] == ".+"
    agent = {v["name"]: v for v in boards[dashboards.AGENT_UID]["templating"]["list"]}["agent"]
    assert agent["definition"].startswith(f"label_values({catalog.AGENT_EXECUTIONS.name}{{{job}")


def test_every_query_names_only_catalog_metrics_recording_rules_or_builtins(boards, recorded_names):
    known = catalog.sample_names() | recorded_names | BUILTINS | PROCESS
    for board in boards.values():
        for expr in exprs(board):
            assert series_names(expr), expr
            unknown = series_names(expr) - known
            assert not unknown, f"{board['uid']}: {expr} names {unknown}"


def test_raw_metric_selectors_name_the_job_and_follow_the_variables(boards, recorded_names, config):
    scoped = catalog.sample_names() | PROCESS | {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
    scope = dashboards.Queries(config).scope
    groups = [f'{label}="${label}"' for label in config.alerting.group_labels]
    assert scope.startswith(f'job="{config.alerting.job}", instance=~"$instance"')
    for board in boards.values():
        for expr in exprs(board):
            for name, matchers in re.findall(r"([A-Za-z_:][\w:]*)(\{[^}]*\})?", expr):
                if name in scoped:
                    assert scope in matchers, f"{name} unscoped in {expr}"
                if name in recorded_names:
                    # Recording rules aggregate job and instance away and keep the grouping labels.
                    assert "job" not in matchers and "instance" not in matchers, f"{name} in {expr}"
                    assert all(g in matchers for g in groups), f"{name} in {expr}"


def test_rates_and_increases_use_grafana_intervals(boards, config):
    for board in boards.values():
        for expr in exprs(board):
            for fn, window in re.findall(r"\b(rate|increase)\([^\[]*\[([^\]]+)\]", expr):
                allowed = {"$__rate_interval"} if fn == "rate" else {"$__range", "$__rate_interval"}
                assert window in allowed | FIXED_WINDOWS | alert_windows(config), f"{fn} over {window}: {expr}"


def test_queries_are_valid_promql(boards, tmp_path):
    """promtool parses every query, variables substituted, as a recording rule."""
    rules = [{"record": f"panel:query:{i}", "expr": substitute(expr)}
             for i, expr in enumerate(e for board in boards.values() for e in exprs(board))]
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run([binary("promtool"), "check", "rules", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def substitute(expr: str) -> str:
    for variable, value in (("$__rate_interval", "1m"), ("$__range", "1h"), ("$environment", ".*"),
                            ("$instance", ".+"), ("$agent", "planner")):
        expr = expr.replace(variable, value)
    return expr


def test_exemplars_are_requested_on_histogram_panels_and_link_to_jaeger(boards, tmp_path, config):
    heatmaps = [p for b in boards.values() for p in panels(b) if p["type"] == "heatmap"]
    assert heatmaps
    for p in heatmaps:
        (target,) = p["targets"]
        assert target["format"] == "heatmap" and target["exemplar"] is True
        assert "_bucket{" in target["expr"]
    quantiles = panel(boards[dashboards.AGENT_UID], "Latency p50 / p95 / p99")
    assert all(t["exemplar"] for t in quantiles["targets"])

    dashboards.render_grafana(config, tmp_path)
    document = yaml.safe_load(
        (tmp_path / "grafana/provisioning/datasources/agent-exporter.yaml").read_text())
    by_uid = {ds["uid"]: ds for ds in document["datasources"]}
    assert set(by_uid) == {"prometheus", "alertmanager", "jaeger"}
    destinations = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert destinations == [{"name": "trace_id", "datasourceUid": "jaeger"}]
    assert by_uid["jaeger"]["type"] == "jaeger"
    assert by_uid["alertmanager"]["jsonData"]["implementation"] == "prometheus"


def test_thresholds_and_intervals_come_from_the_config(tmp_path):
    config = Config(
        metrics=MetricsConfig(collection_interval=5),
        alerting=AlertingConfig(
            thresholds=Thresholds(error_ratio=0.2, latency_p95_seconds=3.0, tool_error_ratio=0.3),
            budget=BudgetConfig(day_usd=40.0, month_usd=900.0)),
        healing=HealingConfig(breaker_error_ratio=0.7))
    boards = render(config, tmp_path)

    def red(board: str, title: str) -> float:
        steps = panel(boards[board], title)["fieldConfig"]["defaults"]["thresholds"]["steps"]
        return [s["value"] for s in steps if s["color"] == "red"][0]

    assert red(dashboards.OVERVIEW_UID, "Error ratio by agent") == 0.2
    assert red(dashboards.OVERVIEW_UID, "Latency p50 / p95 / p99 by agent") == 3.0
    assert red(dashboards.OVERVIEW_UID, "Spend, last 24 h") == 40.0
    assert red(dashboards.COST_UID, "Spend, last 30 days") == 900.0
    assert red(dashboards.TOOLS_UID, "Tool error ratio") == 0.3
    assert red(dashboards.HEALING_UID, "Error ratio against the breaker threshold") == 0.7
    success = panel(boards[dashboards.OVERVIEW_UID], "Success rate")
    assert success["fieldConfig"]["defaults"]["thresholds"]["steps"][-1] == {
        "color": "green", "value": 0.8}
    (used,) = panel(boards[dashboards.COST_UID], "Daily budget used")["targets"]
    assert used["expr"].endswith("/ 40")

    datasources = yaml.safe_load(
        (tmp_path / "grafana/provisioning/datasources/agent-exporter.yaml").read_text())
    assert datasources["datasources"][0]["jsonData"]["timeInterval"] == "5s"


def test_threshold_lines_are_drawn_where_a_limit_is_set(boards):
    for board in boards.values():
        for p in panels(board):
            if p["type"] != "timeseries":
                continue
            steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
            style = p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"]
            assert (style != "off") == (len(steps) > 1), p["title"]


def test_a_panel_drawing_a_threshold_reads_rates_over_a_window_that_threshold_is_held_to(boards, config):
    """The line is crossed where the alert fires: not over Grafana's $__rate_interval, which follows
    the zoom, while the alert reads its own window."""
    for board in boards.values():
        for p in panels(board):
            if p["type"] == "timeseries" and len(p["fieldConfig"]["defaults"]["thresholds"]["steps"]) > 1:
                for target in p["targets"]:
                    assert "$__rate_interval" not in target["expr"], (board["uid"], p["title"])


def test_slo_burn_panel_covers_the_configured_windows(tmp_path):
    slo = replace(Config().alerting.slo, objective=0.995,
                  page_windows=(("1h", "5m", 14.4),), ticket_windows=(("3d", "6h", 1.0),))
    boards = render(Config(alerting=AlertingConfig(slo=slo)), tmp_path)
    burn = panel(boards[dashboards.AGENT_UID], "Error budget burn rate (all instances)")
    assert [t["expr"] for t in burn["targets"]] == [
        'agent:orchestrator_agent_executions:error_ratio_rate1h{agent="$agent"} / 0.005',
        'agent:orchestrator_agent_executions:error_ratio_rate3d{agent="$agent"} / 0.005',
    ]


def test_overview_keeps_the_legacy_cards_and_agent_table(boards, config):
    overview = boards[dashboards.OVERVIEW_UID]
    units = {"Total executions": "short", "Success rate": "percentunit",
             "Average latency": "s", "Total cost": "currencyUSD"}
    for title, unit in units.items():
        card = panel(overview, title)
        assert card["type"] == "stat" and card["fieldConfig"]["defaults"]["unit"] == unit
        assert card["targets"][0]["instant"] is True
    table = panel(overview, "Agent performance")
    assert table["type"] == "table"
    assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
    assert [t["id"] for t in table["transformations"]] == ["merge", "organize"]
    columns = {o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
               for o in table["fieldConfig"]["overrides"]}
    assert [columns[c]["displayName"] for c in
            ("agent", "Value #A", "Value #B", "Value #C", "Value #D")] == [
        "Agent", "Executions", "Success rate", "Average latency", "Cost"]
    assert columns["Value #B"]["unit"] == "percentunit"
    assert columns["Value #C"]["unit"] == "s"
    assert columns["Value #D"]["unit"] == "currencyUSD"
    link = columns["agent"]["links"][0]["url"]
    assert link.startswith(f"/d/{dashboards.AGENT_UID}?var-agent=${{__value.raw}}")
    alerts = panel(overview, "Firing alerts")
    assert alerts["type"] == "table"
    # This project's alerts only, in the selected deployment (and those about none, as MetricsAbsent):
    # a shared Prometheus holds everybody's.
    scope = "".join(f'{label}=~"${label}|", ' for label in config.alerting.group_labels)
    expected = f'ALERTS{{{scope}alertname=~"Orchestrator.+", alertstate="firing", instance=~"$instance|"}}'
    assert alerts["targets"][0]["expr"] == expected
    assert panel(overview, "Alerts firing")["targets"][0]["expr"] == f"count({expected}) or vector(0)"


def test_panels_fit_the_grid_without_overlapping(boards):
    for board in boards.values():
        titles = [p["title"] for p in board["panels"]]
        assert len(titles) == len(set(titles)), board["uid"]
        cells = set()
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), board["uid"]
        for p in board["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, (board["uid"], p["title"])
            area = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                    for y in range(g["y"], g["y"] + g["h"])}
            assert not area & cells, (board["uid"], p["title"])
            cells |= area


def test_dashboards_provider_reads_the_dashboards_folder(tmp_path):
    dashboards.render_grafana(Config(), tmp_path)
    document = yaml.safe_load(
        (tmp_path / "grafana/provisioning/dashboards/agent-exporter.yaml").read_text())
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == dashboards.DASHBOARDS_PATH
    assert provider["allowUiUpdates"] is False


def test_the_overview_leads_with_task_success_and_task_latency(boards, config):
    overview = boards[dashboards.OVERVIEW_UID]
    first_row, *rest = overview["panels"]
    assert first_row["type"] == "row" and first_row["title"] == "Tasks (workflow runs)"
    leading = [p["title"] for p in rest[:3]]
    assert leading == ["Tasks finished", "Task success rate", "Task latency p95"]
    success = panel(overview, "Task success rate")
    assert catalog.WORKFLOW_RUNS.name in success["targets"][0]["expr"]
    assert success["fieldConfig"]["defaults"]["thresholds"]["steps"][-1] == {
        "color": "green", "value": config.alerting.workflow_slo.objective}
    latency = panel(overview, "Task latency p95")
    assert catalog.WORKFLOW_DURATION.name + "_bucket" in latency["targets"][0]["expr"]
    ratio = panel(overview, "Task success ratio by workflow")
    assert ratio["targets"][0]["expr"].startswith(f"1 - (sum by (workflow) (rate({catalog.WORKFLOW_RUNS.name}{{")


def test_new_signal_panels_take_their_thresholds_from_the_config(tmp_path):
    config = parse_config({"observability": {
        "metrics": {"extra_labels": ["feature"]},
        "alerting": {"thresholds": {"time_to_first_token_p95_seconds": 2, "evaluation_score_floor": 0.6},
                     "workflow_slo": {"objective": 0.95},
                     "budget": {"per_feature": {"login": 20, "search": 35}}}}})
    boards = render(config, tmp_path)

    def steps(board, title):
        return panel(boards[board], title)["fieldConfig"]["defaults"]["thresholds"]["steps"]

    assert steps(dashboards.AGENT_UID, "Time to first token p50 / p95 / p99 by model")[-1] == {
        "color": "red", "value": 2}
    assert steps(dashboards.OVERVIEW_UID, "Mean evaluation score by agent and evaluator") == [
        {"color": "red", "value": None}, {"color": "green", "value": 0.6}]
    burn = panel(boards[dashboards.TOOLS_UID], "Workflow error budget burn rate (all instances)")
    assert [t["expr"] for t in burn["targets"]] == [
        f"workflow:orchestrator_workflow_runs:error_ratio_rate{w} / 0.05" for w in ("1h", "6h", "1d", "3d")]
    features = panel(boards[dashboards.COST_UID], "Spend by feature, last 24 h, against its budget")
    assert 'feature=~"login|search"' in features["targets"][0]["expr"]
    limits = {o["matcher"]["options"]: o["properties"][0]["value"]["steps"][-1]["value"]
              for o in features["fieldConfig"]["overrides"]}
    assert limits == {"login": 20, "search": 35}
    # Without budgets per feature there is no such panel.
    default = render(Config(), tmp_path / "default")[dashboards.COST_UID]
    assert not [p for p in default["panels"] if "against its budget" in p["title"]]
    # Spend is split by each extra label the series carry, and by no label they lack.
    spread = {p["title"]: p["targets"][0]["legendFormat"] for board in (boards[dashboards.COST_UID], default)
              for p in board["panels"] if p["title"].startswith("Spend per hour by ")}
    assert spread == {"Spend per hour by agent": "{{agent}}", "Spend per hour by model": "{{model}}",
                      "Spend per hour by feature": "{{feature}}"}
    assert [p["gridPos"]["w"] for p in default["panels"] if p["title"].startswith("Spend per hour by ")] == [12, 12]


def selectors(expr: str) -> list[tuple[str, str]]:
    """(name, matchers) of every series selector in a query with matchers."""
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    return re.findall(r"([A-Za-z_:][\w:]*)\{([^}]*)\}", text)


def catalog_labels(name: str) -> tuple[str, ...]:
    spec = catalog.BY_NAME.get(name) or catalog.BY_NAME.get(re.sub(r"_(bucket|sum|count)$", "", name))
    return spec.labels if spec else ()


def test_every_variable_filters_every_panel_whose_series_carry_its_label(boards, recorded_names, config):
    """A user who picks an instance, an agent or a model sees only its data: each raw selector of a
    series with the variable's label matches it, `=~` for a variable that takes several values.
    Recorded series have no instance: their panels say "(all instances)" in the title."""
    for board in boards.values():
        variables = {v["name"]: v for v in board["templating"]["list"] if v["type"] == "query"}
        for p in panels(board):
            for target in p["targets"]:
                for name, matchers in selectors(target["expr"]):
                    where = f"{board['uid']} / {p['title']}: {target['expr']}"
                    if name in recorded_names:
                        assert p["title"].endswith(dashboards.ALL_INSTANCES), where
                        continue
                    if name == "ALERTS":
                        continue
                    carried = {*catalog_labels(name), "instance", *config.alerting.group_labels}
                    for label in carried & variables.keys():
                        operator = "=~" if variables[label]["multi"] else "="
                        assert f'{label}{operator}"${label}"' in matchers, f"{label} missing in {where}"


def test_agent_and_cost_dashboards_offer_a_model_variable_chained_to_the_agent(boards, config):
    scope = dashboards.Queries(config).scope
    for uid, one_agent in ((dashboards.AGENT_UID, True), (dashboards.COST_UID, False)):
        names = [v["name"] for v in boards[uid]["templating"]["list"]]
        variables = {v["name"]: v for v in boards[uid]["templating"]["list"]}
        assert names.index("model") == names.index("agent") + 1, uid
        agent, model = variables["agent"], variables["model"]
        assert agent["definition"] == f"label_values({catalog.AGENT_EXECUTIONS.name}{{{scope}}}, agent)"
        assert (agent["multi"], agent["includeAll"]) == (not one_agent, not one_agent)
        matcher = 'agent="$agent"' if one_agent else 'agent=~"$agent"'
        assert model["definition"] == f"label_values({catalog.LLM_TOKENS.name}{{{scope}, {matcher}}}, model)"
        assert model["multi"] and model["includeAll"] and model["allValue"] == ".+"
        assert model["query"]["query"] == model["definition"]
        # Reloaded with the time range, as the agents' models change over time.
        assert model["refresh"] == 2
    for uid in (dashboards.OVERVIEW_UID, dashboards.TOOLS_UID, dashboards.HEALING_UID, dashboards.EXPORTER_UID):
        assert "model" not in {v["name"] for v in boards[uid]["templating"]["list"]}


def test_single_values_show_no_data_not_nan_when_nothing_happened_in_the_range(tmp_path):
    """Stats and tables over the selected range, evaluated by promtool on series whose counters
    stopped an hour ago (a quiet night): a ratio, mean or quantile of nothing is No data, never
    NaN; a count of nothing is 0."""
    config = Config()
    boards = render(config, tmp_path)
    scope = {"job": config.alerting.job, "instance": "exporter:9464"}
    series = []
    for spec in catalog.CATALOG:
        labels = {**scope, **{label: "planner" if label == "agent" else "x" for label in spec.labels}}
        if spec.type == catalog.HISTOGRAM:
            names = [(spec.name + "_bucket", {"le": le}) for le in ("1", "+Inf")]
            names += [(spec.name + "_sum", {}), (spec.name + "_count", {})]
        else:
            names = [(spec.name, {})]
        for name, extra in names:
            for status in (("success", "error") if "status" in spec.labels else ("x",)):
                selected = {**labels, **extra, **({"status": status} if "status" in spec.labels else {})}
                matchers = ", ".join(f'{k}="{v}"' for k, v in selected.items())
                series.append({"series": f"{name}{{{matchers}}}", "values": "0+1x60 60x60"})
    tests = [{"expr": f"count(({expr}) != ({expr}))", "eval_time": "2h", "exp_samples": []}
             for board in boards.values() for p in panels(board) if p["type"] in ("stat", "table")
             for expr in (substitute(t["expr"]) for t in p["targets"])]
    assert len(tests) > 15
    (tmp_path / "none.rules.yml").write_text("groups: []\n")
    (tmp_path / "quiet.test.yml").write_text(yaml.safe_dump({
        "rule_files": ["none.rules.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}]}))
    result = subprocess.run([binary("promtool"), "test", "rules", str(tmp_path / "quiet.test.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
