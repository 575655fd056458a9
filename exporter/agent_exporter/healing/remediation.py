"""Alert-driven remediation: Alertmanager's webhook opens and closes agents' breakers.

A firing alert whose name is in `alerting.remediation_alerts` and that carries
an `agent` label force-opens that agent's breaker; Alertmanager's resolved
notification for it (same fingerprint) releases it.  An agent stays open while
any of its remediation alerts fires.  The payload is validated in full before
anything changes: a malformed or unknown one raises ValueError (HTTP 400).

The remediator also owns the process's breakers and selector (the Healer uses
the same ones, see Healer.from_config), so agents_status() - GET /v1/agents -
reports what the orchestrator acts on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .breaker import CircuitBreakers
from .selector import AdaptiveSelector

WEBHOOK_VERSION = "4"
_STATUSES = ("firing", "resolved")
_REQUIRED = {"version": str, "receiver": str, "status": str, "alerts": list}
_OPTIONAL = {"groupLabels": dict, "commonLabels": dict, "commonAnnotations": dict,
             "externalURL": str, "groupKey": str, "truncatedAlerts": int}
_ALERT_REQUIRED = {"status": str, "labels": dict, "annotations": dict, "startsAt": str, "endsAt": str,
                   "fingerprint": str}
_ALERT_OPTIONAL = {"generatorURL": str}

# on_change(agent, old_state, new_state, reason): every breaker change, for embedded use.
ChangeCallback = Callable[[str, str, str, str], None]


def _check_fields(obj: dict, required: dict, optional: dict, where: str) -> None:
    for key in required:
        if key not in obj:
            raise ValueError(f"{where}: missing field {key!r}")
    for key, kind in (*required.items(), *optional.items()):
        if key in obj and (not isinstance(obj[key], kind) or isinstance(obj[key], bool)):
            raise ValueError(f"{where}.{key}: expected {kind.__name__}, got {type(obj[key]).__name__}")


def _check_strings(mapping: dict, where: str) -> None:
    for key, value in mapping.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"{where}: label names and values must be strings")


def validate_webhook(payload) -> list[dict]:
    """The alerts of an Alertmanager webhook payload (version 4), or ValueError naming the problem."""
    if not isinstance(payload, dict):
        raise ValueError(f"webhook payload must be a JSON object, got {type(payload).__name__}")
    _check_fields(payload, _REQUIRED, _OPTIONAL, "payload")
    if payload["version"] != WEBHOOK_VERSION:
        raise ValueError(f"payload.version: unsupported webhook version {payload['version']!r} "
                         f"(expected {WEBHOOK_VERSION!r})")
    if payload["status"] not in _STATUSES:
        raise ValueError(f"payload.status: expected firing or resolved, got {payload['status']!r}")
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        if key in payload:
            _check_strings(payload[key], f"payload.{key}")
    alerts = payload["alerts"]
    for i, alert in enumerate(alerts):
        where = f"payload.alerts[{i}]"
        if not isinstance(alert, dict):
            raise ValueError(f"{where}: expected an object, got {type(alert).__name__}")
        _check_fields(alert, _ALERT_REQUIRED, _ALERT_OPTIONAL, where)
        if alert["status"] not in _STATUSES:
            raise ValueError(f"{where}.status: expected firing or resolved, got {alert['status']!r}")
        _check_strings(alert["labels"], f"{where}.labels")
        _check_strings(alert["annotations"], f"{where}.annotations")
        if "alertname" not in alert["labels"]:
            raise ValueError(f"{where}.labels: missing alertname")
        if not alert["fingerprint"]:
            raise ValueError(f"{where}.fingerprint: must not be empty")
    return alerts


class AlertRemediator:
    """Turns remediation alerts into breaker changes; reports per-agent health.

    `config` is the exporter's Config (its healing settings and
    alerting.remediation_alerts); `telemetry` receives breaker states and
    selector weights.  `breakers` and `selector` may be passed in to share
    existing ones.  `on_change(agent, old, new, reason)` is called on every
    breaker state change (alert-driven or not), for orchestrators embedding
    the exporter.
    """

    def __init__(self, config, telemetry=None, *, breakers: CircuitBreakers | None = None,
                 selector: AdaptiveSelector | None = None, on_change: ChangeCallback | None = None):
        self.remediation_alerts = frozenset(config.alerting.remediation_alerts)
        self.breakers = breakers or CircuitBreakers.from_config(config.healing, telemetry=telemetry)
        self.selector = selector or AdaptiveSelector.from_config(config.healing, breakers=self.breakers,
                                                                 telemetry=telemetry)
        self.known_agents = set(config.healing.fallbacks) | {
            a for alternatives in config.healing.fallbacks.values() for a in alternatives}
        if on_change is not None:
            self.breakers.add_listener(on_change)
        self._firing: dict[str, dict[str, str]] = {}      # agent -> fingerprint -> alertname
        self._lock = threading.Lock()

    def handle_webhook(self, payload) -> dict:
        """Act on one webhook notification; returns what it did."""
        alerts = validate_webhook(payload)
        opened, closed, ignored = [], [], 0
        with self._lock:
            for alert in alerts:
                labels = alert["labels"]
                agent = labels.get("agent")
                if labels["alertname"] not in self.remediation_alerts or not agent:
                    ignored += 1
                    continue
                firing = self._firing.setdefault(agent, {})
                fingerprint = alert["fingerprint"]
                if alert["status"] == "firing":
                    if not firing:
                        opened.append(agent)
                    firing[fingerprint] = labels["alertname"]
                    self.breakers.force_open(agent, labels["alertname"])
                elif firing.pop(fingerprint, None) is not None and not firing:
                    self.breakers.release(agent, "resolved:" + labels["alertname"])
                    closed.append(agent)
                else:
                    ignored += 1
        return {"status": "ok", "alerts": len(alerts), "opened": opened, "closed": closed,
                "ignored": ignored}

    def agents_status(self) -> dict:
        """Per-agent health for GET /v1/agents."""
        weights = self.selector.published() if self.selector is not None else {}
        agents = set(self.known_agents) | {b.agent for b in self.breakers}
        for task_weights in weights.values():
            agents.update(task_weights)
        report = {}
        for agent in sorted(agents):
            breaker = self.breakers.get(agent)
            calls, errors = breaker.window()
            firing = self._firing.get(agent, {})
            report[agent] = {
                "circuit_state": breaker.state,
                "forced": breaker.forced,
                "reason": breaker.reason or None,
                "alerts": sorted(set(firing.values())),
                "selector_weight": {task: w[agent] for task, w in weights.items() if agent in w},
                "error_ratio": errors / calls if calls else 0.0,
                "calls": calls,
                "errors": errors,
                "window_seconds": breaker.window_seconds,
            }
        return {"agents": report}
