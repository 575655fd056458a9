"""alertmanager/alertmanager.yml and its templates, rendered from the config.

Routes: critical to Slack and email, warning to Slack, cost alerts to the budget
owners' email as well, info to nobody; alerts named in
`alerting.remediation_alerts` also go to the exporter's /v1/alertmanager, which
opens the agent's circuit breaker.  Critical inhibits warning for the same alert
and agent; an exporter that is down inhibits the alerts that need its metrics.
Secrets are referenced by file, never written here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..config import Config
from .rules import HEADER, dump_yaml

TEMPLATE_NAME = "orchestrator.tmpl"

SLACK, SLACK_EMAIL = "slack", "slack-email"
SLACK_BUDGET, SLACK_EMAIL_BUDGET = "slack-budget", "slack-email-budget"
REMEDIATION, NULL = "exporter-remediation", "null"


def template_text() -> str:
    return resources.files(__package__).joinpath("templates", TEMPLATE_NAME).read_text()


def _slack(config: Config) -> dict:
    slack = config.alerting.slack
    return {
        "api_url_file": slack.webhook_url_file,
        "channel": slack.channel,
        "send_resolved": True,
        "title": '{{ template "orchestrator.slack.title" . }}',
        "text": '{{ template "orchestrator.slack.text" . }}',
        "color": '{{ template "orchestrator.slack.color" . }}',
    }


def _email(config: Config, to: tuple[str, ...]) -> dict:
    email = config.alerting.email
    smtp = {
        "to": ", ".join(to),
        "from": email.from_address,
        "smarthost": f"{email.smtp_server}:{email.smtp_port}",
        "require_tls": email.require_tls,
        "send_resolved": True,
        "headers": {"Subject": '{{ template "orchestrator.email.subject" . }}'},
        "html": '{{ template "orchestrator.email.html" . }}',
    }
    if email.username:
        smtp["auth_username"] = email.username
    if email.password_file:
        smtp["auth_password_file"] = email.password_file
    return smtp


def alertmanager_config(config: Config) -> dict:
    alerting = config.alerting
    oncall = alerting.email.to_addresses or ("oncall@example.com",)
    owners = alerting.budget.owners or oncall
    receivers = [
        {"name": NULL},
        {"name": SLACK, "slack_configs": [_slack(config)]},
        {"name": SLACK_EMAIL, "slack_configs": [_slack(config)], "email_configs": [_email(config, oncall)]},
        {"name": SLACK_BUDGET, "slack_configs": [_slack(config)], "email_configs": [_email(config, owners)]},
        {"name": SLACK_EMAIL_BUDGET, "slack_configs": [_slack(config)],
         "email_configs": [_email(config, tuple(dict.fromkeys(oncall + owners)))]},
        {"name": REMEDIATION, "webhook_configs": [
            {"url": f"{alerting.exporter_url.rstrip('/')}/v1/alertmanager", "send_resolved": True}]},
    ]
    routes = []
    if alerting.remediation_alerts:
        routes.append({
            "receiver": REMEDIATION,
            "matchers": [f'alertname=~"{"|".join(alerting.remediation_alerts)}"'],
            # The breaker should open as soon as the alert fires, and people hear of it too.
            "group_wait": "0s", "group_interval": "10s", "continue": True,
        })
    routes += [
        {"receiver": NULL, "matchers": ['severity="info"']},
        {"receiver": SLACK_EMAIL_BUDGET, "matchers": ['category="cost"', 'severity="critical"']},
        {"receiver": SLACK_BUDGET, "matchers": ['category="cost"']},
        {"receiver": SLACK_EMAIL, "matchers": ['severity="critical"']},
        {"receiver": SLACK, "matchers": ['severity="warning"']},
    ]
    return {
        "route": {
            "receiver": SLACK,
            "group_by": ["alertname", "agent", "tool"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "inhibit_rules": [
            {"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
             "equal": ["alertname", "agent"]},
            {"source_matchers": ['alertname="OrchestratorExporterDown"'],
             "target_matchers": ['alertname=~"OrchestratorMetricsAbsent|OrchestratorEventsRejected"'],
             "equal": ["job"]},
        ],
        "receivers": receivers,
        "templates": [f"templates/{TEMPLATE_NAME}"],
    }


SECRETS_README = """\
# Secrets Alertmanager reads in docker-compose.yml (mounted at /etc/alertmanager/secrets).
# They are never committed: only this file is tracked. For Slack, write the incoming-webhook URL:
#   printf '%s' 'https://hooks.slack.com/services/...' > alertmanager/secrets/slack_webhook_url
*
!.gitignore
"""


def render_alertmanager(config: Config, out_dir: Path) -> list[Path]:
    """Write alertmanager/alertmanager.yml, templates/ and the (empty) secrets/ folder under out_dir."""
    base = Path(out_dir) / "alertmanager"
    (base / "templates").mkdir(parents=True, exist_ok=True)
    (base / "secrets").mkdir(parents=True, exist_ok=True)
    files = {
        base / "alertmanager.yml": HEADER + dump_yaml(alertmanager_config(config)),
        base / "templates" / TEMPLATE_NAME: template_text(),
        base / "secrets" / ".gitignore": SECRETS_README,
    }
    for path, text in files.items():
        path.write_text(text)
    return list(files)
