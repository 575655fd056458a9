"""The remediation alerts, read from Alertmanager's v2 API by every replica.

GET /api/v2/alerts?filter=alertname=~"<remediation alerts>" asks for the
active alerts that are neither silenced nor inhibited: what the webhook would
notify (so a silence pauses the remediation on every replica).  Prometheus
sends each alert to every member of an HA cluster, while members do not share
alerts among themselves, so every member is asked and the alerts any of them
holds count: a member restarted a moment ago, empty until Prometheus resends,
changes nothing while another one answers.  The answer replaces the
remediator's view of which alerts fire (AlertRemediator.sync_alerts); when no
member answers, the remediator keeps what it had.
"""

from __future__ import annotations

from .alertmanager import alerts_filter, decode_api_alerts, label_matchers
from .api_client import APIClient

ALERTS_PATH = "/api/v2/alerts"


class AlertmanagerAlerts:
    """One poll of the remediation alerts into `remediator` (AlertRemediator)."""

    def __init__(self, client: APIClient, remediator):
        self.client = client
        self.remediator = remediator
        self.params = [("filter", alerts_filter(remediator.remediation_alerts)),
                       *(("filter", matcher) for matcher in label_matchers(remediator.deployment_labels)),
                       ("active", "true"), ("silenced", "false"), ("inhibited", "false")]

    def __call__(self) -> None:
        sent_at = self.remediator.clock()
        alerts = {}
        for body in self.client.get_each(ALERTS_PATH, self.params):
            alerts.update((alert.fingerprint, alert) for alert in decode_api_alerts(body))
        self.remediator.sync_alerts(alerts.values(), sent_at)
