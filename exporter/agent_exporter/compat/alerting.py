"""The legacy alerting API, now delivering through Alertmanager.

`get_alerting_system().send_alert(Alert(...))` posts the alert to
Alertmanager's v2 API, so old code's alerts follow the same routes, grouping,
inhibition and templates as the Prometheus rules.  The legacy condition strings
("error_rate > 5%", ...) now live in Prometheus alert rules rendered from the
same config, so `check_conditions` no longer evaluates anything.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from ..config import Config, ConfigError, load_config

_log = logging.getLogger(__name__)

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}
# Alertmanager's routes know critical, warning and info; the legacy "error" pages like critical.
_SEVERITIES = {"info": "info", "warning": "warning", "error": "critical", "critical": "critical"}
DEFAULT_CONFIG_FILE = ".claude/orchestrator/observability/observability_config.yaml"
# An alert re-sent before this expires stays firing; one never re-sent resolves on its own.
ALERT_TTL = timedelta(minutes=30)


class Alert:
    """A legacy alert: severity is info, warning, error or critical."""

    def __init__(self, severity: str, title: str, message: str, context: dict[str, Any] | None = None):
        self.severity = severity
        self.title = title
        self.message = message
        self.context = context or {}
        self.timestamp = datetime.now()


def alert_name(title: str) -> str:
    """A CamelCase alertname with the shared prefix: "Agent planner slow!" -> OrchestratorLegacyAgentPlannerSlow."""
    words = re.findall(r"[A-Za-z0-9]+", title)
    return "OrchestratorLegacy" + "".join(w[:1].upper() + w[1:] for w in words)


class AlertingSystem:
    """Sends legacy alerts to Alertmanager (and to the log when the `log` channel is on)."""

    def __init__(self, config_file: str = DEFAULT_CONFIG_FILE, *, config: Config | None = None):
        if config is None:
            try:
                config = load_config(config_file)
            except ConfigError as exc:
                # As before: a missing config falls back to defaults, loudly.
                _log.warning("could not load alerting config, using defaults: %s", exc)
                config = Config()
        self.config = config
        self.alertmanager_url = config.alerting.alertmanager_url.rstrip("/")
        # Legacy code appended its own callables here; they still get every alert.
        self.handlers: list[Callable[[Alert], None]] = []

    def send_alert(self, alert: Alert) -> bool:
        """Deliver `alert`; returns whether Alertmanager accepted it.  Never raises."""
        alerting = self.config.alerting
        if not alerting.enabled:
            return False
        if "log" in alerting.channels:
            _log.log(_LEVELS.get(alert.severity, logging.WARNING),
                     "ALERT [%s] %s: %s", alert.severity.upper(), alert.title, alert.message)
        for handler in self.handlers:
            try:
                handler(alert)
            except Exception:  # noqa: BLE001 - as before: one failing handler does not stop the others
                _log.error("alert handler %r failed", handler, exc_info=True)
        try:
            return self._post(alert)
        except OSError as exc:     # Alertmanager down or unreachable: expected now and then, one line
            _log.error("could not send alert %r to Alertmanager at %s: %s", alert.title, self.alertmanager_url, exc)
            return False
        except Exception:  # noqa: BLE001 - a broken alert path must not break the orchestrator
            _log.error("could not send alert %r to Alertmanager at %s", alert.title, self.alertmanager_url,
                       exc_info=True)
            return False

    def _post(self, alert: Alert) -> bool:
        labels = {"alertname": alert_name(alert.title),
                  "severity": _SEVERITIES.get(alert.severity, "warning"), "source": "legacy"}
        for key in ("agent", "tool"):
            if isinstance(alert.context.get(key), str):
                labels[key] = alert.context[key]
        starts = alert.timestamp.astimezone(timezone.utc)    # the legacy timestamp is naive local time
        body = [{
            "labels": labels,
            "annotations": {"summary": alert.title, "description": alert.message},
            "startsAt": starts.isoformat(),
            "endsAt": (datetime.now(timezone.utc) + ALERT_TTL).isoformat(),
        }]
        request = urllib.request.Request(
            f"{self.alertmanager_url}/api/v2/alerts", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return 200 <= response.status < 300

    def check_conditions(self, metrics: dict[str, Any]) -> list:
        """Conditions are Prometheus alert rules now (`agent-exporter render`); nothing is evaluated here."""
        _log.warning("check_conditions() no longer evaluates %s: the conditions are Prometheus alert rules "
                     "rendered from the same config (prometheus/rules/orchestrator.alerts.yml)",
                     list(self.config.alerting.conditions))
        return []


_alerting_system: AlertingSystem | None = None
_alerting_system_lock = threading.Lock()


def get_alerting_system() -> AlertingSystem:
    """The process-wide AlertingSystem of the legacy API, from the legacy config path."""
    global _alerting_system
    with _alerting_system_lock:
        if _alerting_system is None:
            _alerting_system = AlertingSystem()
        return _alerting_system
