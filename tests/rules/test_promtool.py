"""promtool checks every rendered rule: syntax, config, and the rendered unit tests."""

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from agent_exporter.config import Config, parse_config
from agent_exporter.render import rules
from agent_exporter.render.rule_tests import rule_tests

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "prometheus"


def promtool(*args, cwd=None) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is required (apt-get install prometheus)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_rules_and_config_pass_promtool_checks():
    assert_ok(promtool("check", "rules", *sorted(str(p) for p in (PROMETHEUS_DIR / "rules").glob("*.yml"))))
    assert_ok(promtool("check", "config", "--syntax-only", str(PROMETHEUS_DIR / "prometheus.yml")))


def test_committed_rule_unit_tests_pass():
    tests = sorted(str(p) for p in (PROMETHEUS_DIR / "tests").glob("*.test.yml"))
    assert len(tests) == 2
    assert_ok(promtool("test", "rules", *tests))


def test_committed_files_are_the_render_of_the_default_config(tmp_path):
    rendered = rules.render_prometheus(Config(), tmp_path)
    for path in rendered:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), f"{committed} drifted: run `make render`"
    assert {p.relative_to(tmp_path) for p in rendered} == {
        p.relative_to(ROOT) for p in PROMETHEUS_DIR.rglob("*.yml")}


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
    for number in ("> 0.1", "> 30", "> 500", "(14.4 * (1 - 0.995))", "> 0.25", "for: 10m", "[10m]", "> 0.05"):
        assert number in alerts
    assert_ok(promtool("check", "rules", *map(str, (tmp_path / "prometheus" / "rules").glob("*.yml"))))
    assert_ok(promtool("test", "rules", *map(str, (tmp_path / "prometheus" / "tests").glob("*.test.yml"))))


def test_every_alert_has_each_kind_of_case():
    names = rules.alert_names(Config())
    tests = [t for doc in rule_tests(Config()).values() for t in doc["tests"]]
    for name in names:
        mine = [t["name"] for t in tests if t["name"].startswith(name + " ")]
        assert any("fires" in n for n in mine), name
        assert any("quiet" in n for n in mine), name
        assert any("reset" in n or "restart" in n for n in mine), name


def test_every_alert_follows_the_mixin_conventions():
    for group in rules.alert_rules(Config()):
        for rule in group["rules"]:
            assert rule["alert"].startswith("Orchestrator") and rule["alert"].isidentifier()
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert set(rule["annotations"]) == {"summary", "description", "runbook_url", "dashboard_url"}
            assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())


def test_every_alert_has_a_runbook_section():
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    for name in rules.alert_names(Config()):
        assert f"\n## {name}\n" in runbooks, name


@pytest.mark.parametrize("objective", [0.93, 0.9])
def test_low_objectives_leave_out_burn_pairs_that_cannot_fire(objective, tmp_path):
    config = replace(Config(), alerting=replace(Config().alerting, slo=replace(Config().alerting.slo, objective=objective)))
    pairs = rules.burn_rate_pairs(config, config.alerting.slo.page_windows)
    assert all(factor * (1 - objective) < 1 for _, _, factor in pairs)
    assert (14.4 * (1 - objective) >= 1) == all(factor != 14.4 for _, _, factor in pairs)
    rules.render_prometheus(config, tmp_path)
    assert_ok(promtool("test", "rules", *map(str, (tmp_path / "prometheus" / "tests").glob("*.test.yml"))))


def test_rules_never_match_a_specific_le_value():
    text = rules.dump_yaml({"groups": rules.recording_rules() + rules.alert_rules(Config())})
    assert 'le="' not in text and "le=~" not in text
