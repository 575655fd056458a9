"""The legacy alerting API, now delivering through Alertmanager.

`get_alerting_system().send_alert(Alert(...))` posts the alert to
Alertmanager's v2 API, so old code's alerts follow the same routes, grouping,
inhibition and templates as the Prometheus rules.  The post happens on a
thread of its own, behind a bounded queue: a slow or dead Alertmanager never
holds up the caller (`flush()` waits for what is queued; so does the
interpreter's exit, for a few seconds).  The legacy condition strings
("error_rate > 5%", ...) now live in Prometheus alert rules rendered from the
same config, so `check_conditions` no longer evaluates anything.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import threading
import urllib.request
import weakref
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import msgspec

from ..config import Config
from . import DEFAULT_CONFIG_FILE, load_legacy_config

_log = logging.getLogger(__name__)

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}
# Alertmanager's routes know critical, warning and info; the legacy "error" pages like critical.
_SEVERITIES = {"info": "info", "warning": "warning", "error": "critical", "critical": "critical"}
# An alert re-sent before this expires stays firing; one never re-sent resolves on its own.
ALERT_TTL = timedelta(minutes=30)
QUEUE_SIZE = 256            # alerts waiting for Alertmanager; past it, dropped (and logged)
POST_TIMEOUT_SECONDS = 5.0
EXIT_FLUSH_SECONDS = 5.0    # how long the interpreter's exit waits for queued alerts


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
        config = config if config is not None else load_legacy_config(config_file)
        alerting = config.alerting
        self._telemetry_enabled = config.enabled     # `enabled: false` turns everything off, alerts too
        # The legacy attribute: the config's alerting section as a dict.  It is read on every alert,
        # as it was, so legacy code that sets `config["enabled"] = False` still turns alerting off.
        self.config: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(alerting))    # lists, as YAML gave
        self.alertmanager_url = alerting.alertmanager_url.rstrip("/")
        # Legacy code appended its own callables here; they still get every alert.
        self.handlers: list[Callable[[Alert], None]] = []
        self._told_about_conditions = False
        self._start_afresh()
        if hasattr(os, "register_at_fork"):    # not on Windows, which does not fork
            # A forked child (a multiprocessing worker) inherits the queue but not the sending thread,
            # and maybe a lock that thread held: it starts afresh and leaves the parent's alerts to it.
            start_afresh = weakref.WeakMethod(self._start_afresh)    # registrations outlive their system

            def in_child() -> None:
                if (method := start_afresh()) is not None:
                    method()
            os.register_at_fork(after_in_child=in_child)

    def _start_afresh(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._pending = 0                   # queued or being posted
        self._idle = threading.Condition()
        self._sender: threading.Thread | None = None

    def send_alert(self, alert: Alert) -> bool:
        """Deliver `alert`: to the log and the handlers now, to Alertmanager from the sending thread.
        Returns whether it was queued for Alertmanager (not with alerting off or the queue full).
        Never raises, never waits for Alertmanager."""
        if not (self._telemetry_enabled and self.config.get("enabled", True)):
            return False
        if "log" in self.config.get("channels", ()):
            severity = str(alert.severity)      # legacy alerts carry any object; the legacy log line printed it
            _log.log(_LEVELS.get(severity, logging.WARNING),
                     "ALERT [%s] %s: %s", severity.upper(), alert.title, alert.message)
        for handler in self.handlers:
            try:
                handler(alert)
            except Exception:  # noqa: BLE001 - as before: one failing handler does not stop the others
                _log.error("alert handler %r failed", handler, exc_info=True)
        with self._idle:
            try:
                self._queue.put_nowait(alert)
            except queue.Full:
                _log.error("%d alerts are waiting for Alertmanager at %s: dropping alert %r",
                           QUEUE_SIZE, self.alertmanager_url, alert.title)
                return False
            self._pending += 1
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_queued, name="legacy-alerts", daemon=True)
                self._sender.start()
                atexit.register(self.flush, EXIT_FLUSH_SECONDS)
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued alert has been posted (or has failed); False if `timeout` ran out first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _send_queued(self) -> None:
        while True:
            alert = self._queue.get()
            try:
                self._post(alert)
            except OSError as exc:     # Alertmanager down or unreachable: expected now and then, one line
                _log.error("could not send alert %r to Alertmanager at %s: %s", alert.title, self.alertmanager_url,
                           exc)
            except Exception:  # noqa: BLE001 - a broken alert path must not break the orchestrator
                _log.error("could not send alert %r to Alertmanager at %s", alert.title, self.alertmanager_url,
                           exc_info=True)
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _post(self, alert: Alert) -> None:
        # Alertmanager takes strings only; legacy callers passed exceptions, dicts, None as they came.
        title = str(alert.title)
        labels = {"alertname": alert_name(title),
                  "severity": _SEVERITIES.get(str(alert.severity), "warning"), "source": "legacy"}
        context = alert.context if isinstance(alert.context, dict) else {}
        for key in ("agent", "tool"):
            if isinstance(context.get(key), str):
                labels[key] = context[key]
        starts = alert.timestamp.astimezone(timezone.utc)    # the legacy timestamp is naive local time
        body = [{
            "labels": labels,
            "annotations": {"summary": title, "description": str(alert.message)},
            "startsAt": starts.isoformat(),
            "endsAt": (datetime.now(timezone.utc) + ALERT_TTL).isoformat(),
        }]
        request = urllib.request.Request(
            f"{self.alertmanager_url}/api/v2/alerts", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=POST_TIMEOUT_SECONDS).close()    # an HTTP error status raises

    def check_conditions(self, metrics: dict[str, Any]) -> list:
        """Conditions are Prometheus alert rules now (`agent-exporter render`); nothing is evaluated here."""
        # Legacy orchestrators call this after every execution: say it once, not per call.
        if self._told_about_conditions:
            return []
        self._told_about_conditions = True
        _log.warning("check_conditions() no longer evaluates %s: the conditions are Prometheus alert rules "
                     "rendered from the same config (prometheus/rules/orchestrator.alerts.yml)",
                     list(self.config.get("conditions", ())))
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
