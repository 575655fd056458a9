"""promtool checks every rendered rule: syntax, config, and the rendered unit tests."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from msgspec.structs import replace

from agent_exporter.config import Config, ConfigError, parse_config
from agent_exporter.render import common, prometheus, rules
from agent_exporter.render.rule_tests import rule_tests

from binaries import binary

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "prometheus"


def promtool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=300)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def assert_rule_tests_pass(prometheus_dir: Path) -> None:
    """`promtool test rules` on every rendered test file, one process per file, side by side."""
    files = sorted((prometheus_dir / "tests").glob("*.test.yml"))
    assert len(files) == 2, files
    runs = [subprocess.Popen([binary("promtool"), "test", "rules", str(f)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for f in files]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output


def test_committed_config_and_rules_pass_promtool_checks():
    # `check config` also checks the rule files prometheus.yml names, relative to it.
    result = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert_ok(result)
    assert "2 rule files found" in result.stdout
    assert_ok(promtool("check", "rules", *sorted(str(p) for p in (PROMETHEUS_DIR / "rules").glob("*.yml"))))


def test_committed_rule_unit_tests_pass():
    assert_rule_tests_pass(PROMETHEUS_DIR)


def test_committed_files_are_the_render_of_the_default_config(tmp_path):
    rendered = prometheus.render_prometheus(Config(), tmp_path)
    for path in rendered:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), f"{committed} drifted: run `make render`"
    assert {p.relative_to(tmp_path) for p in rendered} == {
        p.relative_to(ROOT) for p in PROMETHEUS_DIR.rglob("*.yml")}


def test_every_rendered_file_says_it_is_generated(tmp_path):
    for path in prometheus.render_prometheus(Config(), tmp_path):
        assert path.read_text().startswith(common.HEADER), path


OTHER = parse_config({"observability": {
    "alerting": {
        "conditions": ["error_rate > 10%", "latency_p95 > 30s", "cost_per_day > 500"],
        "thresholds": {"tool_error_ratio": 0.25, "circuit_open_seconds": 600, "rejected_events_ratio": 0.05,
                       "unforwarded_spans_ratio": 0.35},
        "slo": {"objective": 0.995},
        "workflow_slo": {"objective": 0.98},
        "rate_window": "10m",
        "alert_for": "2m",
    }}})


def test_another_config_renders_rules_whose_rendered_tests_pass(tmp_path):
    prometheus.render_prometheus(OTHER, tmp_path)
    alerts = (tmp_path / "prometheus" / "rules" / "orchestrator.alerts.yml").read_text()
    for number in ("> 0.1\n", "> 30\n", "> 500\n", "(14.4 * (1 - 0.995))", "(6 * (1 - 0.995))",
                   "(3 * (1 - 0.995))", "(14.4 * (1 - 0.98))", "> 0.25\n", "for: 10m", "for: 2m", "[10m]", "> 0.05\n",
                   "> 0.35\n", "(threshold 35%)"):
        assert number in alerts, number
    assert "0.99)" not in alerts and "> 100\n" not in alerts
    assert_ok(promtool("check", "rules", *map(str, (tmp_path / "prometheus" / "rules").glob("*.yml"))))
    assert_rule_tests_pass(tmp_path / "prometheus")


# Every optional part of the rules on: a custom job, two environments kept apart,
# budgets per feature, task error types, and other minimum, windows and floors than the defaults.
SCOPED = parse_config({"observability": {
    "metrics": {"extra_labels": ["feature"]},
    "alerting": {
        "job": "orchestrator",
        "group_labels": ["environment"],
        "min_events": 4,
        "evaluation_window": "30m",
        "thresholds": {"time_to_first_token_p95_seconds": 2, "evaluation_score_floor": 0.8},
        "workflow_slo": {"objective": 0.95},
        "budget": {"per_feature": {"login": 20, "search": 35}},
        # A status code, as OTLP's error.type may be; a name with RE2's metacharacters, matched as written.
        "task_error_types": ["BadInput", "422", "app.errors.InvalidPrompt (400)"],
    }}})

def test_a_scoped_config_renders_rules_whose_rendered_tests_pass(tmp_path):
    prometheus.render_prometheus(SCOPED, tmp_path)
    rules_dir = tmp_path / "prometheus" / "rules"
    result = promtool("check", "rules", *map(str, rules_dir.glob("*.yml")))
    assert_ok(result)
    assert "lint error" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert_rule_tests_pass(tmp_path / "prometheus")


def test_the_rendered_scrape_target_carries_the_deployment_labels(tmp_path):
    # Else no alert carries them, and a remediator that wants them ignores every alert.
    config = parse_config({"observability": {"alerting": {
        "group_labels": ["environment"], "deployment_labels": {"environment": "production"}}}})
    prometheus.render_prometheus(config, tmp_path)
    document = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
    exporters = next(job for job in document["scrape_configs"] if job["job_name"] == "agent-exporter")
    assert exporters["static_configs"] == [{"targets": ["agent-exporter:9464"], "labels": {"environment": "production"}}]
    assert_ok(promtool("check", "config", str(tmp_path / "prometheus" / "prometheus.yml")))


def test_with_alerting_off_only_the_recording_rules_are_rendered_and_tested(tmp_path):
    config = parse_config({"observability": {"alerting": {"enabled": False}}})
    prometheus.render_prometheus(config, tmp_path)
    base = tmp_path / "prometheus"
    assert yaml.safe_load((base / "rules" / "orchestrator.alerts.yml").read_text()) == {"groups": []}
    assert (base / "rules" / "orchestrator.rules.yml").read_text() == (
        PROMETHEUS_DIR / "rules" / "orchestrator.rules.yml").read_text()
    assert "alerting" not in yaml.safe_load((base / "prometheus.yml").read_text())
    assert_ok(promtool("check", "config", str(base / "prometheus.yml")))
    tests = [t for f in sorted((base / "tests").glob("*.test.yml")) for t in yaml.safe_load(f.read_text())["tests"]]
    assert tests and not any("alert_rule_test" in t for t in tests)
    assert all("promql_expr_test" in t for t in tests)
    assert_rule_tests_pass(base)


def test_every_raw_selector_names_the_configured_job_and_every_aggregation_keeps_the_grouping_labels():
    text = "\n".join(r["expr"] for g in rules.recording_rules(SCOPED) + rules.alert_rules(SCOPED) for r in g["rules"])
    assert "agent-exporter" not in text
    blocks = re.findall(r"\{[^}]*\}", text)
    assert blocks and all('job="orchestrator"' in block for block in blocks), blocks
    # A metric name outside a selector: one not followed by its matchers, other than in a
    # recording rule's name (after a colon) or in the __name__ regex of a selector.
    bare = [m.group(0) for m in re.finditer(r'(?<![:"|\w])(orchestrator_\w+|up)\b(?!\{)', text)]
    assert not bare, bare
    aggregations = re.findall(r"\b(sum|on) (?:by )?\(([^)]*)\)", text)
    assert aggregations and all("environment" in labels.split(", ") for _, labels in aggregations), aggregations
    assert "sum(" not in text


def test_budgets_per_feature_render_one_alert_each_over_the_feature_label():
    cost = {g["name"]: g for g in rules.alert_rules(SCOPED)}["orchestrator.cost.alerts"]["rules"]
    per_feature = [r for r in cost if r["alert"] == "OrchestratorFeatureDailyCostOverBudget"]
    assert [r["expr"] for r in per_feature] == [
        'sum by (environment, feature) (increase(orchestrator_llm_cost_usd_total{job="orchestrator", '
        'feature="login"}[1d])) > 20',
        'sum by (environment, feature) (increase(orchestrator_llm_cost_usd_total{job="orchestrator", '
        'feature="search"}[1d])) > 35']
    assert [r["labels"] for r in per_feature] == [
        {"severity": "warning", "category": "cost", "feature": feature} for feature in ("login", "search")]
    assert "OrchestratorFeatureDailyCostOverBudget" not in rules.alert_names(Config())


def test_ratio_alerts_require_the_minimum_number_of_events():
    alerts = {r["alert"]: r["expr"] for g in rules.alert_rules(SCOPED) for r in g["rules"]}
    for name in ("OrchestratorAgentHighErrorRatio", "OrchestratorToolHighErrorRatio", "OrchestratorEventsRejected",
                 "OrchestratorSpansRejected", "OrchestratorRequestsRefused", "OrchestratorSpansNotForwarded",
                 "OrchestratorAgentQualityLow"):
        assert alerts[name].endswith(" >= 4"), name
    for name in ("OrchestratorAgentErrorBudgetBurnFast", "OrchestratorAgentErrorBudgetBurnSlow",
                 "OrchestratorWorkflowErrorBudgetBurnFast", "OrchestratorWorkflowErrorBudgetBurnSlow"):
        clauses = alerts[name].split("\nor\n")
        assert clauses and all(":increase" in clause and ">= 4\n)" in clause for clause in clauses), name


def rendered_tests(config: Config) -> dict[str, dict]:
    return rule_tests(config, rules.recording_rules(config), rules.alert_rules(config))


def rendered_test_names(config: Config) -> list[str]:
    return [t["name"] for doc in rendered_tests(config).values() for t in doc["tests"]]


@pytest.mark.parametrize("alert_for", ["0s", "1s"])
def test_a_short_for_renders_series_promtool_parses(alert_for):
    """`for: 0s` fires at once (no failure is shorter than it); the tests render no negative repeat
    count (`0x-1`), which promtool refuses with every test of the file."""
    config = parse_config({"observability": {"alerting": {"alert_for": alert_for}}})
    values = [series["values"] for doc in rendered_tests(config).values() for test in doc["tests"]
              for series in test.get("input_series", [])]
    assert values and not [v for v in values if re.search(r"x-", v)]


def test_every_alert_has_each_kind_of_case():
    names = rendered_test_names(SCOPED)
    for alert in rules.alert_names(SCOPED):
        mine = [n for n in names if n.startswith(alert + " ")]
        assert any("fires" in n for n in mine), alert
        assert any("quiet" in n for n in mine), alert
        assert any("reset" in n or "restart" in n for n in mine), alert


def test_every_recording_rule_has_a_value_check():
    checked = " ".join(check["expr"] for doc in rendered_tests(Config()).values() for test in doc["tests"]
                       for check in test.get("promql_expr_test", []))
    for name in rules.recording_rule_names(Config()):
        assert name in checked, name


def test_rule_tests_evaluate_recording_rules_before_the_alerts_that_read_them():
    for document in rendered_tests(Config()).values():
        order = document["group_eval_order"]
        assert sorted(order) == sorted(g["name"] for g in rules.recording_rules(Config()) + rules.alert_rules(Config()))
        assert max(i for i, g in enumerate(order) if g.endswith(".rules")) < min(
            i for i, g in enumerate(order) if g.endswith(".alerts"))


def test_every_alert_follows_the_mixin_conventions():
    config = Config()
    for group in rules.alert_rules(config):
        for rule in group["rules"]:
            assert rule["alert"].startswith("Orchestrator") and rule["alert"].isidentifier()
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert set(rule["annotations"]) == {"summary", "description", "runbook_url", "dashboard_url"}
            assert rule["annotations"]["runbook_url"] == (
                f"{config.alerting.runbook_url}#{rule['alert'].lower()}")
            assert rule["annotations"]["dashboard_url"].startswith(f"{config.alerting.grafana_url}/d/orchestrator-")
            if rule["alert"] not in ("OrchestratorExporterDown", "OrchestratorMetricsAbsent",
                                     "OrchestratorCircuitBreakerOpen", "OrchestratorFleetSourceDown"):
                assert "$value" in rule["annotations"]["description"], rule["alert"]


def test_the_exporters_failure_modes_have_warnings():
    alerts = {r["alert"]: r for g in rules.alert_rules(SCOPED) for r in g["rules"]}
    assert alerts["OrchestratorSeriesOverflow"]["expr"] == (
        'sum by (environment, job, instance, metric) '
        '(increase(orchestrator_exporter_series_overflow_total{job="orchestrator"}[5m])) > 0')
    assert alerts["OrchestratorUsageUnknown"]["expr"] == (
        'sum by (environment, agent) (increase(orchestrator_usage_unknown_total{job="orchestrator"}[5m])) > 0')
    assert alerts["OrchestratorFleetSourceDown"]["expr"] == 'orchestrator_fleet_source_up{job="orchestrator"} == 0'
    forwarded = "orchestrator_exporter_otlp_forwarded_spans_total"
    assert alerts["OrchestratorSpansNotForwarded"]["expr"] == (
        f'sum by (environment, job, instance) (rate({forwarded}{{job="orchestrator", outcome=~"dropped|failed"}}[5m]))'
        f'\n/\nsum by (environment, job, instance) (rate({forwarded}{{job="orchestrator"}}[5m]))\n> 0.1\nand\n'
        f'sum by (environment, job, instance) (increase({forwarded}{{job="orchestrator"}}[5m])) >= 4')
    for name in ("OrchestratorSeriesOverflow", "OrchestratorUsageUnknown", "OrchestratorFleetSourceDown",
                 "OrchestratorSpansNotForwarded"):
        assert alerts[name]["labels"] == {"severity": "warning"}, name


def test_cost_alerts_carry_the_cost_category():
    for group in rules.alert_rules(Config()):
        for rule in group["rules"]:
            assert (rule["labels"].get("category") == "cost") == ("Cost" in rule["alert"]), rule["alert"]


def test_every_alert_has_a_runbook_section_with_meaning_impact_diagnosis_and_mitigation():
    sections = {}
    for section in (ROOT / "docs" / "runbooks.md").read_text().split("\n## ")[1:]:
        title, _, body = section.partition("\n")
        sections[title] = body
    # SCOPED renders every alert there is, the per-feature budget alert included.
    assert set(sections) == set(rules.alert_names(SCOPED))
    for name, body in sections.items():
        for part in ("**Meaning.**", "**Impact.**", "**Diagnosis", "**Mitigation.**"):
            assert part in body, (name, part)


def with_objective(objective: float) -> Config:
    config = Config()
    return replace(config, alerting=replace(config.alerting, slo=replace(config.alerting.slo, objective=objective)))


@pytest.mark.parametrize("objective, page_factors", [(0.94, [14.4, 6]), (0.93, [6]), (0.8, [])])
def test_burn_pairs_that_cannot_fire_are_left_out(objective, page_factors):
    config = with_objective(objective)
    slo = config.alerting.slo
    assert [f for _, _, f in common.burn_rate_pairs(slo, slo.page_windows)] == page_factors
    assert ("OrchestratorAgentErrorBudgetBurnFast" in rules.alert_names(config)) == bool(page_factors)


@pytest.mark.parametrize("objective", [0.93, 0.8])
def test_low_objectives_render_rules_whose_rendered_tests_pass(objective, tmp_path):
    prometheus.render_prometheus(with_objective(objective), tmp_path)
    assert_rule_tests_pass(tmp_path / "prometheus")


def test_recording_rules_are_named_after_the_metric_they_read():
    """level:metric:operations, as the Prometheus docs and the mixins name them: the metric is
    the one the expression reads (a ratio of executions is not named after the errors counter)."""
    for config in (Config(), SCOPED):
        for group in rules.recording_rules(config):
            for rule in group["rules"]:
                level, metric, operations = rule["record"].split(":")
                read = set(re.findall(r"\b(orchestrator_[a-z_]+?)(?:_total|_bucket|_count|_sum)?\{", rule["expr"]))
                if config.alerting.task_error_types and metric == "orchestrator_agent_executions":
                    # The agent error ratio takes the task's own faults out: errors of those types.
                    read.discard("orchestrator_agent_errors")
                assert read == {metric}, (rule["record"], read)


def test_rules_never_match_a_specific_le_value():
    for config in (Config(), SCOPED):
        text = common.dump_yaml({"groups": rules.recording_rules(config) + rules.alert_rules(config)})
        assert 'le="' not in text and "le=~" not in text and "le!" not in text


def test_prometheus_config_scrapes_the_exporter_and_itself_and_alerts_alertmanager():
    document = yaml.safe_load(prometheus.stack_prometheus_config(Config()))
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in document["scrape_configs"]}
    assert jobs == {"agent-exporter": ["agent-exporter:9464"], "prometheus": ["localhost:9090"]}
    assert document["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert document["rule_files"] == ["rules/*.rules.yml", "rules/*.alerts.yml"]
    assert document["global"]["evaluation_interval"] == Config().alerting.evaluation_interval


def test_the_prometheus_yml_builder_takes_targets_labels_alertmanagers_rule_files_and_intervals(tmp_path):
    text = prometheus.prometheus_config(
        ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"], job="orchestrator",
        exporter_labels={"127.0.0.1:9001": {"environment": "production"},
                         "127.0.0.1:9003": {"environment": "production"},
                         "127.0.0.1:9002": {"environment": "staging"}},
        alertmanagers=["127.0.0.1:9093"], rule_files=["rules/*.yml"],
        scrape_interval="1s", evaluation_interval="2s")
    document = yaml.safe_load(text)
    assert document == {
        "global": {"scrape_interval": "1s", "evaluation_interval": "2s"},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]},
        "rule_files": ["rules/*.yml"],
        "scrape_configs": [{"job_name": "orchestrator", "static_configs": [
            {"targets": ["127.0.0.1:9001", "127.0.0.1:9003"], "labels": {"environment": "production"}},
            {"targets": ["127.0.0.1:9002"], "labels": {"environment": "staging"}}]}]}
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "empty.yml").write_text("groups: []\n")
    (tmp_path / "prometheus.yml").write_text(text)
    assert_ok(promtool("check", "config", str(tmp_path / "prometheus.yml")))
    # The least a test needs: one exporter, the default job, nothing else.
    assert yaml.safe_load(prometheus.prometheus_config(["127.0.0.1:9464"])) == {
        "global": {"scrape_interval": "15s", "evaluation_interval": "30s"},
        "scrape_configs": [{"job_name": "agent-exporter", "static_configs": [{"targets": ["127.0.0.1:9464"]}]}]}
    with pytest.raises(ValueError, match="not exporters"):
        prometheus.prometheus_config(["127.0.0.1:9464"], exporter_labels={"127.0.0.1:1": {"a": "b"}})


def test_the_rendered_prometheus_yml_scrapes_the_exporter_where_alertmanager_reaches_it(tmp_path):
    """alerting.exporter_url names the exporter for the whole stack: behind TLS under a mount
    path, Prometheus scrapes it there, as Alertmanager posts its webhooks there."""
    config = parse_config({"observability": {"alerting": {"exporter_url": "https://orchestrator.internal/telemetry/"}}})
    (scrape, _) = yaml.safe_load(prometheus.stack_prometheus_config(config))["scrape_configs"]
    assert scrape == {"job_name": "agent-exporter", "scheme": "https", "metrics_path": "/telemetry/metrics",
                      "static_configs": [{"targets": ["orchestrator.internal:443"]}]}
    (tmp_path / "prometheus.yml").write_text(prometheus.stack_prometheus_config(config))
    assert_ok(promtool("check", "config", str(tmp_path / "prometheus.yml")))
    config = parse_config({"observability": {"alerting": {"exporter_url": "http://[::1]:9500"}}})
    (scrape, _) = yaml.safe_load(prometheus.stack_prometheus_config(config))["scrape_configs"]
    assert scrape == {"job_name": "agent-exporter", "static_configs": [{"targets": ["[::1]:9500"]}]}


def test_behind_a_web_config_the_rendered_prometheus_yml_scrapes_as_its_user_trusting_its_ca(tmp_path):
    password, ca = tmp_path / "exporter_password", tmp_path / "exporter_ca.crt"
    password.write_text("s3cret\n")
    ca.write_text("")       # promtool checks the files are there
    config = parse_config({"observability": {"alerting": {"exporter_url": "https://agent-exporter:9464", "exporter_auth": {
        "username": "prometheus", "password_file": str(password), "ca_file": str(ca)}}}})
    (scrape, _) = yaml.safe_load(prometheus.stack_prometheus_config(config))["scrape_configs"]
    assert scrape["basic_auth"] == {"username": "prometheus", "password_file": str(password)}
    assert scrape["tls_config"] == {"ca_file": str(ca)}
    (tmp_path / "prometheus.yml").write_text(prometheus.stack_prometheus_config(config))
    assert_ok(promtool("check", "config", str(tmp_path / "prometheus.yml")))


@pytest.mark.parametrize("auth, key", [
    ({"username": "prometheus"}, "observability.alerting.exporter_auth"),
    ({"password_file": "/p"}, "observability.alerting.exporter_auth"),
    ({"password": "inline"}, "observability.alerting.exporter_auth.password"),
])
def test_exporter_auth_refuses_half_a_user_and_an_inline_password(auth, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_config({"observability": {"alerting": {"exporter_auth": auth}}})


def test_a_ca_for_an_http_exporter_is_refused():
    with pytest.raises(ConfigError, match=r"observability\.alerting\.exporter_auth\.ca_file: verifies an https"):
        parse_config({"observability": {"alerting": {"exporter_auth": {"ca_file": "/ca.crt"}}}})


def test_the_rendered_prometheus_yml_scrapes_the_configured_job():
    document = yaml.safe_load(prometheus.stack_prometheus_config(SCOPED))
    assert [job["job_name"] for job in document["scrape_configs"]] == ["orchestrator", "prometheus"]


def test_render_has_no_import_cycle_and_rules_and_rule_tests_do_not_import_each_other():
    """Which render module imports which (any import, top-level or in a function)."""
    import ast

    package = ROOT / "exporter" / "agent_exporter" / "render"
    imports = {}
    for path in package.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found.update([node.module] if node.module else [alias.name for alias in node.names])
        imports[path.stem] = found & {p.stem for p in package.glob("*.py")}
    assert "rule_tests" not in imports["rules"] and "rules" not in imports["rule_tests"]
    assert "rules" not in imports["dashboards"] and "rules" not in imports["alertmanager"]

    def cycle_from(path: list[str]) -> list[str] | None:
        for target in imports[path[-1]]:
            found = path + [target] if target in path else cycle_from(path + [target])
            if found:
                return found
        return None

    assert not [cycle for module in imports if (cycle := cycle_from([module]))]
