"""promtool checks every rendered rule: syntax, config, and the rendered unit tests."""

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from agent_exporter.config import Config, parse_config
from agent_exporter.render import rules
from agent_exporter.render.rule_tests import rule_tests

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "prometheus"


def promtool_binary() -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is required (apt-get install prometheus)"
    return binary


def promtool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([promtool_binary(), *args], capture_output=True, text=True, timeout=300)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def assert_rule_tests_pass(prometheus_dir: Path) -> None:
    """`promtool test rules` on every rendered test file, one process per file, side by side."""
    files = sorted((prometheus_dir / "tests").glob("*.test.yml"))
    assert len(files) == 2, files
    runs = [subprocess.Popen([promtool_binary(), "test", "rules", str(f)], stdout=subprocess.PIPE,
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
    rendered = rules.render_prometheus(Config(), tmp_path)
    for path in rendered:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), f"{committed} drifted: run `make render`"
    assert {p.relative_to(tmp_path) for p in rendered} == {
        p.relative_to(ROOT) for p in PROMETHEUS_DIR.rglob("*.yml")}


def test_every_rendered_file_says_it_is_generated(tmp_path):
    for path in rules.render_prometheus(Config(), tmp_path):
        assert path.read_text().startswith(rules.HEADER), path


OTHER = parse_config({"observability": {
    "alerting": {
        "conditions": ["error_rate > 10%", "latency_p95 > 30s", "cost_per_day > 500"],
        "thresholds": {"tool_error_ratio": 0.25, "circuit_open_seconds": 600, "rejected_events_ratio": 0.05},
        "slo": {"objective": 0.995},
        "rate_window": "10m",
        "alert_for": "2m",
    }}})


def test_another_config_renders_rules_whose_rendered_tests_pass(tmp_path):
    rules.render_prometheus(OTHER, tmp_path)
    alerts = (tmp_path / "prometheus" / "rules" / "orchestrator.alerts.yml").read_text()
    for number in ("> 0.1\n", "> 30\n", "> 500\n", "(14.4 * (1 - 0.995))", "(6 * (1 - 0.995))",
                   "(3 * (1 - 0.995))", "> 0.25\n", "for: 10m", "for: 2m", "[10m]", "> 0.05\n"):
        assert number in alerts, number
    assert "0.99)" not in alerts and "> 100\n" not in alerts
    assert_ok(promtool("check", "rules", *map(str, (tmp_path / "prometheus" / "rules").glob("*.yml"))))
    assert_rule_tests_pass(tmp_path / "prometheus")


def rendered_test_names(config: Config) -> list[str]:
    return [t["name"] for doc in rule_tests(config).values() for t in doc["tests"]]


def test_every_alert_has_each_kind_of_case():
    names = rendered_test_names(Config())
    for alert in rules.alert_names(Config()):
        mine = [n for n in names if n.startswith(alert + " ")]
        assert any("fires" in n for n in mine), alert
        assert any("quiet" in n for n in mine), alert
        assert any("reset" in n or "restart" in n for n in mine), alert


def test_every_recording_rule_has_a_value_check():
    checked = " ".join(check["expr"] for doc in rule_tests(Config()).values() for test in doc["tests"]
                       for check in test.get("promql_expr_test", []))
    for name in rules.recording_rule_names():
        assert name in checked, name


def test_rule_tests_evaluate_recording_rules_before_the_alerts_that_read_them():
    for document in rule_tests(Config()).values():
        order = document["group_eval_order"]
        assert sorted(order) == sorted(g["name"] for g in rules.recording_rules() + rules.alert_rules(Config()))
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
                                     "OrchestratorCircuitBreakerOpen"):
                assert "$value" in rule["annotations"]["description"], rule["alert"]


def test_cost_alerts_carry_the_cost_category():
    for group in rules.alert_rules(Config()):
        for rule in group["rules"]:
            assert (rule["labels"].get("category") == "cost") == ("Cost" in rule["alert"]), rule["alert"]


def test_every_alert_has_a_runbook_section_with_meaning_impact_diagnosis_and_mitigation():
    sections = {}
    for section in (ROOT / "docs" / "runbooks.md").read_text().split("\n## ")[1:]:
        title, _, body = section.partition("\n")
        sections[title] = body
    assert set(sections) == set(rules.alert_names(Config()))
    for name, body in sections.items():
        for part in ("**Meaning.**", "**Impact.**", "**Diagnosis", "**Mitigation.**"):
            assert part in body, (name, part)


def with_objective(objective: float) -> Config:
    config = Config()
    return replace(config, alerting=replace(config.alerting, slo=replace(config.alerting.slo, objective=objective)))


@pytest.mark.parametrize("objective, page_factors", [(0.94, [14.4, 6]), (0.93, [6]), (0.8, [])])
def test_burn_pairs_that_cannot_fire_are_left_out(objective, page_factors):
    config = with_objective(objective)
    assert [f for _, _, f in rules.burn_rate_pairs(config, config.alerting.slo.page_windows)] == page_factors
    assert ("OrchestratorAgentErrorBudgetBurnFast" in rules.alert_names(config)) == bool(page_factors)


@pytest.mark.parametrize("objective", [0.93, 0.8])
def test_low_objectives_render_rules_whose_rendered_tests_pass(objective, tmp_path):
    rules.render_prometheus(with_objective(objective), tmp_path)
    assert_rule_tests_pass(tmp_path / "prometheus")


def test_rules_never_match_a_specific_le_value():
    text = rules.dump_yaml({"groups": rules.recording_rules() + rules.alert_rules(Config())})
    assert 'le="' not in text and "le=~" not in text and "le!" not in text


def test_prometheus_config_scrapes_the_exporter_and_itself_and_alerts_alertmanager():
    document = yaml.safe_load(rules.prometheus_config(Config()))
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in document["scrape_configs"]}
    assert jobs == {"agent-exporter": ["agent-exporter:9464"], "prometheus": ["localhost:9090"]}
    assert document["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert document["rule_files"] == ["rules/*.rules.yml", "rules/*.alerts.yml"]
    assert document["global"]["evaluation_interval"] == Config().alerting.evaluation_interval
