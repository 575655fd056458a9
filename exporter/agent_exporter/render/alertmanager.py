"""alertmanager/alertmanager.yml and its templates, rendered from the config.

`alerting.channels` decides the receivers.  With slack and email (the default):
critical alerts go to Slack and email, warnings to Slack, cost alerts to the
budget owners' email as well, info to nobody.  Without Slack, warnings go to
the on-call email; without email, everything goes to Slack.  `log` adds a
webhook to the exporter's /v1/alertmanager for every alert, which the exporter
writes as a log line per firing and resolved alert (as the legacy log channel
did).  Independently, with healing on, alerts named in
`alerting.remediation_alerts` go to the same endpoint through their own
receiver, which opens the agent's circuit breaker.  The exporter tells the two
apart by the payload's `receiver`; both send the exporter's bearer token
(`server.bearer_token_file`) when it has one.  With `alerting.enabled: false` Prometheus
sends no alerts, and this config routes everything to nobody.

Critical inhibits the warning version of the same alert about the same agent, workflow or
spend; an exporter that is down inhibits the alerts that need its metrics.  Grouping and inhibition keep the
configured grouping labels apart.  Secrets are referenced by file, never written here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..config import Config
from .common import HEADER, dump_yaml
from .series import AGENT_SLI, WORKFLOW_SLI

TEMPLATE_NAME = "orchestrator.tmpl"

SLACK, SLACK_EMAIL = "slack", "slack-email"
SLACK_BUDGET, SLACK_EMAIL_BUDGET = "slack-budget", "slack-email-budget"
REMEDIATION, LOG, NULL = "exporter-remediation", "exporter-log", "null"


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


def _webhook(config: Config) -> dict:
    """A webhook to the exporter's /v1/alertmanager, with the exporter's bearer token when
    one is configured, else the basic auth of alerting.exporter_auth: without them the exporter
    answers 401 and self-healing hears nothing.  (Either gets past /v1/*; Alertmanager sends
    one.)  Alertmanager reads the token from the same path (`server.bearer_token_file`) on each
    notification, so the file must be there for Alertmanager too."""
    webhook = {"url": f"{config.alerting.exporter_url.rstrip('/')}/v1/alertmanager", "send_resolved": True}
    token_file = config.server.bearer_token_file
    auth = config.alerting.exporter_auth
    http_config: dict = {}
    if token_file:
        http_config["authorization"] = {"type": "Bearer", "credentials_file": token_file}
    elif auth.username:
        http_config["basic_auth"] = {"username": auth.username, "password_file": auth.password_file}
    if auth.ca_file:
        http_config["tls_config"] = {"ca_file": auth.ca_file}
    if http_config:
        webhook["http_config"] = http_config
    return webhook


# Which of the person channels each class of alert reaches: (with Slack, with email).
# Warnings reach the on-call by email only when there is no Slack to tell them.
_ROLES = {
    "warning": lambda slack: [] if slack else ["email"],
    "critical": lambda slack: ["email"],
    "cost": lambda slack: ["budget"],
    "cost-critical": lambda slack: ["email", "budget"],
}


def _receiver(config: Config, roles: list[str]) -> dict:
    """A receiver named after what it does: slack, email (the on-call), budget (the owners)."""
    alerting = config.alerting
    oncall = alerting.email.to_addresses
    owners = alerting.budget.owners or oncall
    receiver = {"name": "-".join(roles)}
    if "slack" in roles:
        receiver["slack_configs"] = [_slack(config)]
    to = (oncall if "email" in roles else ()) + (owners if "budget" in roles else ())
    if to:
        receiver["email_configs"] = [_email(config, tuple(dict.fromkeys(to)))]
    return receiver


def _people(config: Config) -> dict[str, dict]:
    """The receiver of each class of alert through the configured Slack and email
    channels; empty when neither is configured."""
    channels = config.alerting.channels
    slack, email = "slack" in channels, "email" in channels
    if not (slack or email):
        return {}
    return {kind: _receiver(config, ["slack"] * slack + (roles(slack) if email else []))
            for kind, roles in _ROLES.items()}


def _critical_inhibits_warning(grouping: list[str], remediation: tuple[str, ...]) -> list[dict]:
    """A critical alert suppresses the warning version of the same alert about the same
    thing, in the same deployment: a fast error-budget burn of an agent or workflow hides
    its slow burn, the day's spend over budget hides the forecast of it.  Every alert name
    has one severity, so the pairs share a label instead of a name (`slo`, `category`).

    A page about one problem hides no warning about another: OrchestratorAgentSlow of an
    agent that burns its budget fast still reaches people.  No remediation alert (about an
    agent) is a target: an inhibited alert reaches no receiver, the remediation webhook included."""
    spared = [f'alertname!~"{"|".join(remediation)}"'] if remediation else []
    rules = [{"source_matchers": ['severity="critical"', f'slo="{sli.slo_label}"'],
              "target_matchers": ['severity="warning"', f'slo="{sli.slo_label}"',
                                  *(spared if sli is AGENT_SLI else [])],
              "equal": [*grouping, sli.label]} for sli in (AGENT_SLI, WORKFLOW_SLI)]
    # A feature's own budget (the feature label, absent on the daily alerts) is another thing.
    rules.append({"source_matchers": ['severity="critical"', 'category="cost"'],
                  "target_matchers": ['severity="warning"', 'category="cost"'],
                  "equal": [*grouping, "feature"]})
    return rules


def _down_inhibits_absent(grouping: list[str]) -> list[dict]:
    """An exporter that is down has no metrics: OrchestratorMetricsAbsent of its job, and of
    its deployment (the grouping labels) when those are configured, says nothing more.
    absent() carries the job alone; the per-deployment alert carries the grouping labels too."""
    source = ['alertname="OrchestratorExporterDown"']
    target = ['alertname="OrchestratorMetricsAbsent"']
    rules = [{"source_matchers": source, "target_matchers": target + [f'{label}=""' for label in grouping],
              "equal": ["job"]}]
    if grouping:
        rules.append({"source_matchers": source, "target_matchers": target, "equal": ["job", *grouping]})
    return rules


def _remediation_alerts(config: Config) -> tuple[str, ...]:
    # The exporter serves its remediation webhook only with healing on (cli.build_remediator).
    return config.alerting.remediation_alerts if config.healing.enabled else ()


def posts_to_the_exporter(config: Config) -> bool:
    """Whether the rendered Alertmanager config has webhooks to the exporter's /v1/alertmanager."""
    return config.alerting.enabled and ("log" in config.alerting.channels or bool(_remediation_alerts(config)))


def alertmanager_config(config: Config) -> dict:
    alerting = config.alerting
    if not alerting.enabled:
        return {"route": {"receiver": NULL}, "receivers": [{"name": NULL}]}
    log = "log" in alerting.channels
    people = _people(config)
    remediation = _remediation_alerts(config)
    routes = []
    if remediation:
        routes.append({
            "receiver": REMEDIATION,
            "matchers": [f'alertname=~"{"|".join(remediation)}"'],
            # The breaker should open as soon as the alert fires, and people hear of it too.
            "group_wait": "0s", "group_interval": "10s", "continue": True,
        })
    if log:
        routes.append({"receiver": LOG, "continue": True})      # every alert, whatever else hears of it
    if people:
        routes += [
            {"receiver": NULL, "matchers": ['severity="info"']},
            {"receiver": people["cost-critical"]["name"], "matchers": ['category="cost"', 'severity="critical"']},
            {"receiver": people["cost"]["name"], "matchers": ['category="cost"']},
            {"receiver": people["critical"]["name"], "matchers": ['severity="critical"']},
            {"receiver": people["warning"]["name"], "matchers": ['severity="warning"']},
        ]
        if log:
            # An alert the log route matched no longer falls back to the root's receiver.
            routes.append({"receiver": people["warning"]["name"]})
    receivers = [{"name": NULL}] + list({r["name"]: r for r in people.values()}.values())
    if remediation:
        receivers.append({"name": REMEDIATION, "webhook_configs": [_webhook(config)]})
    if log:
        receivers.append({"name": LOG, "webhook_configs": [_webhook(config)]})
    grouping = list(alerting.group_labels)
    return {
        "route": {
            "receiver": people["warning"]["name"] if people else NULL,
            "group_by": ["alertname", *grouping, "agent", "tool", "workflow", "feature"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "inhibit_rules": [
            *_critical_inhibits_warning(grouping, remediation),
            *_down_inhibits_absent(grouping),
            {"source_matchers": ['alertname="OrchestratorExporterDown"'],
             # Their ratios read the last samples of a stopped exporter: the page says it already.
             "target_matchers": ['alertname=~"OrchestratorEventsRejected|OrchestratorSpansRejected|'
                                 'OrchestratorRequestsRefused|OrchestratorSpansNotForwarded"'],
             "equal": ["job", "instance", *grouping]},
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
