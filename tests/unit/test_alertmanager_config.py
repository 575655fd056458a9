"""amtool checks the rendered Alertmanager config, its whole routing matrix, and every template."""

import json
import subprocess
from pathlib import Path

import pytest
from msgspec.structs import replace

from agent_exporter.config import Config, load_config, parse_config
from agent_exporter.render import alertmanager as am
from agent_exporter.render.rules import alert_rules

from binaries import binary

ROOT = Path(__file__).resolve().parents[2]


def amtool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([binary("amtool"), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("render")
    am.render_alertmanager(load_config(ROOT / "examples" / "observability.yaml"), out)
    return out / "alertmanager"


def test_committed_config_passes_amtool_check_config():
    result = amtool("check-config", str(ROOT / "alertmanager" / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_files_are_the_render_of_the_default_config(tmp_path):
    for path in am.render_alertmanager(Config(), tmp_path):
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), f"{committed} drifted: run `make render`"


def test_example_config_with_smtp_auth_passes_amtool(rendered):
    result = amtool("check-config", str(rendered / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    text = (rendered / "alertmanager.yml").read_text()
    assert "auth_password_file: /etc/alertmanager/secrets/smtp_password" in text
    assert "api_url_file: /etc/alertmanager/secrets/slack_webhook_url" in text
    assert "hooks.slack.com" not in text and "password:" not in text


# (labels, receivers expected in order): the remediation webhook comes first with `continue`,
# then the log webhook (every alert: `log` is in the default channels), then the people.
ROUTING_MATRIX = [
    ({"alertname": "OrchestratorAgentHighErrorRatio", "severity": "critical", "agent": "coder"},
     [am.REMEDIATION, am.LOG, am.SLACK_EMAIL]),
    ({"alertname": "OrchestratorAgentErrorBudgetBurnFast", "severity": "critical", "agent": "coder"},
     [am.LOG, am.SLACK_EMAIL]),
    ({"alertname": "OrchestratorWorkflowErrorBudgetBurnFast", "severity": "critical", "workflow": "feature"},
     [am.LOG, am.SLACK_EMAIL]),
    ({"alertname": "OrchestratorExporterDown", "severity": "critical"}, [am.LOG, am.SLACK_EMAIL]),
    ({"alertname": "OrchestratorAgentSlow", "severity": "warning", "agent": "coder"}, [am.LOG, am.SLACK]),
    ({"alertname": "OrchestratorToolHighErrorRatio", "severity": "warning", "tool": "web_search"},
     [am.LOG, am.SLACK]),
    ({"alertname": "OrchestratorDailyCostOverBudget", "severity": "critical", "category": "cost"},
     [am.LOG, am.SLACK_EMAIL_BUDGET]),
    ({"alertname": "OrchestratorDailyCostForecastOverBudget", "severity": "warning", "category": "cost"},
     [am.LOG, am.SLACK_BUDGET]),
    ({"alertname": "OrchestratorFeatureDailyCostOverBudget", "severity": "warning", "category": "cost",
      "feature": "login"}, [am.LOG, am.SLACK_BUDGET]),
    ({"alertname": "OrchestratorUsageUnknown", "severity": "warning", "agent": "coder"}, [am.LOG, am.SLACK]),
    ({"alertname": "OrchestratorSeriesOverflow", "severity": "warning", "job": "agent-exporter",
      "instance": "exporter:9464", "metric": "orchestrator_tool_calls_total"}, [am.LOG, am.SLACK]),
    ({"alertname": "OrchestratorSpansNotForwarded", "severity": "warning", "job": "agent-exporter",
      "instance": "exporter:9464"}, [am.LOG, am.SLACK]),
    ({"alertname": "OrchestratorFleetSourceDown", "severity": "warning", "job": "agent-exporter",
      "instance": "exporter:9464", "source": "prometheus"}, [am.LOG, am.SLACK]),
    ({"alertname": "SomethingInformational", "severity": "info"}, [am.LOG, am.NULL]),
    ({"alertname": "Unlabelled"}, [am.LOG, am.SLACK]),
]


def routes_test(config_file, labels: dict, receivers: list[str]) -> subprocess.CompletedProcess:
    return amtool("config", "routes", "test", f"--config.file={config_file}",
                  f"--verify.receivers={','.join(receivers)}", *(f"{k}={v}" for k, v in labels.items()))


@pytest.mark.parametrize("labels,receivers", ROUTING_MATRIX, ids=[m[0]["alertname"] for m in ROUTING_MATRIX])
def test_routing_matrix(labels, receivers):
    result = routes_test(ROOT / "alertmanager" / "alertmanager.yml", labels, receivers)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_shipped_alert_is_routed_to_a_person():
    for group in alert_rules(Config()):
        for rule in group["rules"]:
            labels = {"alertname": rule["alert"], **rule["labels"]}
            result = amtool("config", "routes", "test", f"--config.file={ROOT / 'alertmanager' / 'alertmanager.yml'}",
                            *(f"{k}={v}" for k, v in labels.items()))
            assert result.returncode == 0, result.stderr
            assert "slack" in result.stdout, (rule["alert"], result.stdout)


def sample(status: str) -> dict:
    def alert(agent, value):
        return {
            "status": status,
            "labels": {"alertname": "OrchestratorAgentHighErrorRatio", "severity": "critical", "agent": agent},
            "annotations": {
                "summary": f"Agent {agent} fails too often.",
                "description": f"{value} of {agent}'s executions failed over the last 5m (threshold 5%).",
                "runbook_url": "https://example.com/runbooks.md#orchestratoragenthigherrorratio",
                "dashboard_url": f"http://grafana/d/orchestrator-agent?var-agent={agent}"},
            "startsAt": "2026-11-23T10:00:00Z",
            "endsAt": "2026-11-23T10:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": agent,
        }
    alerts = [alert("coder", "48.2%"), alert("tester", "12%")]
    return {
        "receiver": "slack-email", "status": status, "alerts": alerts,
        "groupLabels": {"alertname": "OrchestratorAgentHighErrorRatio"},
        "commonLabels": {"alertname": "OrchestratorAgentHighErrorRatio", "severity": "critical"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
    }


def render_template(tmp_path, name: str, status: str, kind: str = "text") -> str:
    data = tmp_path / f"{status}.json"
    data.write_text(json.dumps(sample(status)))
    result = amtool("template", "render", f"--template.glob={ROOT / 'alertmanager' / 'templates' / '*.tmpl'}",
                    f"--template.text={{{{ template \"{name}\" . }}}}", f"--template.data={data}",
                    f"--template.type={kind}")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_slack_templates_render_firing_and_resolved(tmp_path):
    title = render_template(tmp_path, "orchestrator.slack.title", "firing")
    assert title.strip() == "[FIRING:2] OrchestratorAgentHighErrorRatio"
    text = render_template(tmp_path, "orchestrator.slack.text", "firing")
    assert "48.2% of coder's executions failed over the last 5m (threshold 5%)." in text
    assert "12% of tester's" in text
    assert "<https://example.com/runbooks.md#orchestratoragenthigherrorratio|runbook>" in text
    assert "<http://grafana/d/orchestrator-agent?var-agent=coder|dashboard>" in text
    assert "Since 2026-11-23 10:00:00 UTC" in text
    assert render_template(tmp_path, "orchestrator.slack.color", "firing").strip() == "danger"
    resolved = render_template(tmp_path, "orchestrator.slack.text", "resolved")
    assert "Resolved: Agent coder fails too often." in resolved and ":red_circle:" not in resolved
    assert render_template(tmp_path, "orchestrator.slack.title", "resolved").strip().startswith("[RESOLVED]")
    assert render_template(tmp_path, "orchestrator.slack.color", "resolved").strip() == "good"


def test_email_templates_render_firing_and_resolved(tmp_path):
    subject = render_template(tmp_path, "orchestrator.email.subject", "firing")
    assert subject.strip() == "[FIRING:2] OrchestratorAgentHighErrorRatio"
    html = render_template(tmp_path, "orchestrator.email.html", "firing", "html")
    assert html.count(">FIRING<") == 2 and "agent coder" in html and "agent tester" in html
    assert 'href="https://example.com/runbooks.md#orchestratoragenthigherrorratio"' in html
    resolved = render_template(tmp_path, "orchestrator.email.html", "resolved", "html")
    assert resolved.count(">RESOLVED<") == 2 and "until 10:20:00 UTC" in resolved


def email_recipients(document: dict, receiver: str) -> str:
    (found,) = [r for r in document["receivers"] if r["name"] == receiver]
    return found["email_configs"][0]["to"]


def test_cost_alerts_reach_the_budget_owners_and_critical_ones_the_on_call_too():
    config = load_config(ROOT / "examples" / "observability.yaml")
    document = am.alertmanager_config(config)
    assert email_recipients(document, am.SLACK_EMAIL) == "oncall@example.com"
    assert email_recipients(document, am.SLACK_BUDGET) == "finops@example.com"
    assert email_recipients(document, am.SLACK_EMAIL_BUDGET) == "oncall@example.com, finops@example.com"


def test_without_budget_owners_cost_alerts_go_to_the_on_call_addresses():
    base = Config()
    config = replace(base, alerting=replace(base.alerting, email=replace(
        base.alerting.email, to_addresses=("a@example.com", "b@example.com"))))
    document = am.alertmanager_config(config)
    assert email_recipients(document, am.SLACK_BUDGET) == "a@example.com, b@example.com"
    assert email_recipients(document, am.SLACK_EMAIL_BUDGET) == "a@example.com, b@example.com"


def test_every_receiver_sends_resolved_and_holds_no_secret():
    document = am.alertmanager_config(load_config(ROOT / "examples" / "observability.yaml"))
    integrations = [c for r in document["receivers"] for key, configs in r.items() if key.endswith("_configs")
                    for c in configs]
    assert integrations and all(c["send_resolved"] is True for c in integrations)
    assert not any(key in c for c in integrations for key in ("api_url", "auth_password", "auth_secret"))


def test_remediation_webhook_posts_to_the_exporter_and_lets_people_hear_too():
    base = Config()
    config = replace(base, alerting=replace(base.alerting, exporter_url="http://exporter.internal:9464"))
    document = am.alertmanager_config(config)
    (webhook,) = [r for r in document["receivers"] if r["name"] == am.REMEDIATION]
    assert webhook["webhook_configs"][0]["url"] == "http://exporter.internal:9464/v1/alertmanager"
    (route,) = [r for r in document["route"]["routes"] if r["receiver"] == am.REMEDIATION]
    assert route["continue"] is True


def test_no_remediation_alerts_no_remediation_route():
    base = Config()
    config = replace(base, alerting=replace(base.alerting, remediation_alerts=()))
    assert am.REMEDIATION not in [r["receiver"] for r in am.alertmanager_config(config)["route"]["routes"]]


def test_with_healing_off_no_alert_goes_to_the_remediation_webhook(tmp_path):
    # The exporter serves no remediation then: a route there would only fail.
    config = parse_config({"observability": {"healing": {"enabled": False}}})
    am.render_alertmanager(config, tmp_path)
    config_file = tmp_path / "alertmanager" / "alertmanager.yml"
    assert amtool("check-config", str(config_file)).returncode == 0
    remediated = {"alertname": "OrchestratorAgentHighErrorRatio", "severity": "critical", "agent": "coder"}
    result = routes_test(config_file, remediated, [am.LOG, am.SLACK_EMAIL])
    assert result.returncode == 0, result.stdout + result.stderr
    assert am.REMEDIATION not in {r["name"] for r in am.alertmanager_config(config)["receivers"]}


def test_with_alerting_off_every_alert_goes_to_nobody(tmp_path):
    config = parse_config({"observability": {"alerting": {"enabled": False}}})
    am.render_alertmanager(config, tmp_path)
    config_file = tmp_path / "alertmanager" / "alertmanager.yml"
    result = amtool("check-config", str(config_file))
    assert result.returncode == 0, result.stdout + result.stderr
    for labels in [*ALERT_CLASSES.values(), {"alertname": "OrchestratorAgentHighErrorRatio", "agent": "coder"}]:
        result = routes_test(config_file, labels, [am.NULL])
        assert result.returncode == 0, (labels, result.stdout + result.stderr)
    assert am.alertmanager_config(config)["receivers"] == [{"name": am.NULL}]


# alerting.channels decides the receivers. Per combination of channels, who hears of each
# class of alert (the remediation webhook comes on top for the remediation alerts).
ALERT_CLASSES = {
    "critical": {"alertname": "OrchestratorAgentErrorBudgetBurnFast", "severity": "critical", "agent": "coder"},
    "warning": {"alertname": "OrchestratorAgentSlow", "severity": "warning", "agent": "coder"},
    "cost-critical": {"alertname": "OrchestratorDailyCostOverBudget", "severity": "critical", "category": "cost"},
    "cost": {"alertname": "OrchestratorDailyCostForecastOverBudget", "severity": "warning", "category": "cost"},
    "info": {"alertname": "SomethingInformational", "severity": "info"},
    "unlabelled": {"alertname": "Unlabelled"},
}
LOG = am.LOG
CHANNELS = {
    ("log", "slack", "email"): {"critical": [LOG, "slack-email"], "warning": [LOG, "slack"],
                                "cost-critical": [LOG, "slack-email-budget"], "cost": [LOG, "slack-budget"],
                                "info": [LOG, "null"], "unlabelled": [LOG, "slack"]},
    ("slack", "email"): {"critical": ["slack-email"], "warning": ["slack"], "cost-critical": ["slack-email-budget"],
                         "cost": ["slack-budget"], "info": ["null"], "unlabelled": ["slack"]},
    ("log", "slack"): {"critical": [LOG, "slack"], "warning": [LOG, "slack"], "cost-critical": [LOG, "slack"],
                       "cost": [LOG, "slack"], "info": [LOG, "null"], "unlabelled": [LOG, "slack"]},
    ("slack",): {"critical": ["slack"], "warning": ["slack"], "cost-critical": ["slack"], "cost": ["slack"],
                 "info": ["null"], "unlabelled": ["slack"]},
    # Without Slack, warnings reach the on-call by email; cost alerts the budget owners.
    ("log", "email"): {"critical": [LOG, "email"], "warning": [LOG, "email"], "cost-critical": [LOG, "email-budget"],
                       "cost": [LOG, "budget"], "info": [LOG, "null"], "unlabelled": [LOG, "email"]},
    ("email",): {"critical": ["email"], "warning": ["email"], "cost-critical": ["email-budget"], "cost": ["budget"],
                 "info": ["null"], "unlabelled": ["email"]},
    # The legacy file's channels: every alert to the exporter's log, nobody mailed.
    ("log",): {kind: [LOG] for kind in ALERT_CLASSES},
    (): {kind: ["null"] for kind in ALERT_CLASSES},
}


def with_channels(channels: tuple[str, ...]) -> Config:
    return parse_config({"observability": {"alerting": {
        "channels": list(channels), "email": {"to_addresses": ["oncall@example.com"]},
        "budget": {"owners": ["finops@example.com"]}}}})


@pytest.mark.parametrize("channels", list(CHANNELS), ids=lambda c: "+".join(c) or "none")
def test_channels_decide_the_receivers(channels, tmp_path):
    am.render_alertmanager(with_channels(channels), tmp_path)
    config_file = tmp_path / "alertmanager" / "alertmanager.yml"
    result = amtool("check-config", str(config_file))
    assert result.returncode == 0, result.stdout + result.stderr
    for kind, labels in ALERT_CLASSES.items():
        result = routes_test(config_file, labels, CHANNELS[channels][kind])
        assert result.returncode == 0, (kind, result.stdout + result.stderr)
    remediated = {"alertname": "OrchestratorAgentHighErrorRatio", "severity": "critical", "agent": "coder"}
    expected = [am.REMEDIATION] + [r for r in CHANNELS[channels]["critical"] if r != "null"]
    result = routes_test(config_file, remediated, expected)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("channels", list(CHANNELS), ids=lambda c: "+".join(c) or "none")
def test_each_channel_renders_only_its_integrations(channels):
    document = am.alertmanager_config(with_channels(channels))
    integrations = {key for r in document["receivers"] for key in r if key.endswith("_configs")}
    webhooks = {c["url"] for r in document["receivers"] for c in r.get("webhook_configs", [])}
    assert ("slack_configs" in integrations) == ("slack" in channels)
    assert ("email_configs" in integrations) == ("email" in channels)
    # The log and the remediation receivers both post to the exporter, which tells them
    # apart by the payload's `receiver`.
    names = {r["name"] for r in document["receivers"]}
    assert (LOG in names) == ("log" in channels)
    assert am.REMEDIATION in names
    assert webhooks == {"http://agent-exporter:9464/v1/alertmanager"}


def test_email_only_sends_cost_alerts_to_the_budget_owners():
    document = am.alertmanager_config(with_channels(("email",)))
    assert email_recipients(document, "email") == "oncall@example.com"
    assert email_recipients(document, "budget") == "finops@example.com"
    assert email_recipients(document, "email-budget") == "oncall@example.com, finops@example.com"


def test_the_legacy_log_channel_renders_no_slack_and_no_email(tmp_path):
    legacy = tmp_path / "observability_config.yaml"
    legacy.write_text("observability:\n  alerting:\n    channels: [log]\n"
                      "    email: {smtp_server: smtp.gmail.com, smtp_port: 587}\n")
    document = am.alertmanager_config(load_config(legacy))
    assert not any("slack_configs" in r or "email_configs" in r for r in document["receivers"])
    (log,) = [r for r in document["receivers"] if r["name"] == LOG]
    assert log["webhook_configs"] == [{"url": "http://agent-exporter:9464/v1/alertmanager", "send_resolved": True}]


def test_grouping_labels_group_and_inhibit_apart():
    config = parse_config({"observability": {"alerting": {"group_labels": ["environment", "cluster"]}}})
    document = am.alertmanager_config(config)
    assert document["route"]["group_by"] == ["alertname", "environment", "cluster", "agent", "tool", "workflow",
                                             "feature"]
    agent, workflow, cost, absent, absent_here, rejected = document["inhibit_rules"]
    # The same alert at two severities: a fast burn of an SLO hides its slow burn, per agent or workflow.
    assert agent == {"source_matchers": ['severity="critical"', 'slo="agent-success"'],
                     "target_matchers": ['severity="warning"', 'slo="agent-success"',
                                         'alertname!~"OrchestratorAgentHighErrorRatio"'],
                     "equal": ["environment", "cluster", "agent"]}
    assert workflow == {"source_matchers": ['severity="critical"', 'slo="workflow-success"'],
                        "target_matchers": ['severity="warning"', 'slo="workflow-success"'],
                        "equal": ["environment", "cluster", "workflow"]}
    assert cost == {"source_matchers": ['severity="critical"', 'category="cost"'],
                    "target_matchers": ['severity="warning"', 'category="cost"'],
                    "equal": ["environment", "cluster", "feature"]}
    # absent() carries no other label than the job; the per-deployment alert, the grouping labels too.
    assert absent["target_matchers"] == ['alertname="OrchestratorMetricsAbsent"', 'environment=""', 'cluster=""']
    assert absent["equal"] == ["job"]
    assert absent_here["equal"] == ["job", "environment", "cluster"]
    assert rejected["target_matchers"] == [
        'alertname=~"OrchestratorEventsRejected|OrchestratorSpansRejected|OrchestratorRequestsRefused|'
        'OrchestratorSpansNotForwarded"']
    assert rejected["equal"] == ["job", "instance", "environment", "cluster"]


def test_titles_name_what_the_group_is_about(tmp_path):
    data = sample("firing")
    data["groupLabels"] = {"alertname": "OrchestratorAgentHighErrorRatio", "agent": "coder",
                           "environment": "production"}
    path = tmp_path / "grouped.json"
    path.write_text(json.dumps(data))
    for name in ("orchestrator.slack.title", "orchestrator.email.subject"):
        result = amtool("template", "render", f"--template.glob={ROOT / 'alertmanager' / 'templates' / '*.tmpl'}",
                        f"--template.text={{{{ template \"{name}\" . }}}}", f"--template.data={path}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == (
            "[FIRING:2] OrchestratorAgentHighErrorRatio · agent coder · environment production"), name


def test_with_a_bearer_token_the_webhooks_to_the_exporter_send_it(tmp_path):
    # The exporter answers 401 to /v1/alertmanager without its token: self-healing would hear nothing.
    config = parse_config({"observability": {"server": {"bearer_token_file": "/etc/agent-exporter/token"}}})
    am.render_alertmanager(config, tmp_path)
    result = amtool("check-config", str(tmp_path / "alertmanager" / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    webhooks = {r["name"]: r["webhook_configs"] for r in am.alertmanager_config(config)["receivers"]
                if "webhook_configs" in r}
    assert set(webhooks) == {am.REMEDIATION, LOG}
    for configs in webhooks.values():
        assert configs == [{"url": "http://agent-exporter:9464/v1/alertmanager", "send_resolved": True,
                            "http_config": {"authorization": {"type": "Bearer",
                                                              "credentials_file": "/etc/agent-exporter/token"}}}]


@pytest.mark.parametrize("token_file, authorization", [
    ("", {"basic_auth": {"username": "prometheus", "password_file": "/etc/alertmanager/secrets/exporter_password"}}),
    # Either gets past /v1/*: the bearer token, as before, where there is one.
    ("/etc/agent-exporter/token", {"authorization": {"type": "Bearer",
                                                     "credentials_file": "/etc/agent-exporter/token"}}),
])
def test_behind_a_web_config_the_webhooks_send_its_user_and_trust_its_ca(tmp_path, token_file, authorization):
    config = parse_config({"observability": {
        "server": {"bearer_token_file": token_file},
        "alerting": {"exporter_url": "https://agent-exporter:9464", "exporter_auth": {
            "username": "prometheus", "password_file": "/etc/alertmanager/secrets/exporter_password",
            "ca_file": "/etc/alertmanager/secrets/exporter_ca.crt"}}}})
    am.render_alertmanager(config, tmp_path)
    result = amtool("check-config", str(tmp_path / "alertmanager" / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    for receiver in am.alertmanager_config(config)["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            assert webhook["http_config"] == {**authorization,
                                              "tls_config": {"ca_file": "/etc/alertmanager/secrets/exporter_ca.crt"}}
