"""Alert-driven remediation: remediation alerts open agents' breakers and release them.

A firing alert whose name is in `alerting.remediation_alerts` and that carries
an `agent` label force-opens that agent's breaker; when it resolves (same
fingerprint) the breaker is released to half-open, and its probe calls decide
whether it closes (the alert may have resolved only because the held agent got
no calls).  An agent stays open while any of its
remediation alerts fires.  Two sources say which alerts fire:

* Alertmanager's webhook (POST /v1/alertmanager, handle_webhook): it reaches
  one replica of a fleet.  The payload is validated in full before anything
  changes: a malformed one raises ValueError (HTTP 400).
* Alertmanager's v2 API, polled by every replica (fleet.py, sync_alerts): the
  firing alerts as of when the poll was sent.

Whichever reports a change first acts; the other finds it done, so nothing
acts twice.  A poll answer is older than a webhook that arrived while it was
in flight, so it never undoes what such a webhook did.

Agents are learnt from alerts, so their number is bounded as /metrics bounds
its series: an alert about a new agent once `metrics.max_series` agents have
breakers is ignored (and logged), which keeps GET /v1/agents and the breakers'
memory bounded whatever a webhook sends.

The remediator also owns the process's breakers and selector (the Healer uses
the same ones, see Healer.from_config) and, with healing.fleet configured, the
fleet's pollers (start()/stop()), so agents_status() - GET /v1/agents -
reports what the orchestrator acts on.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable

from .alertmanager import APIAlert, decode_webhook
from .breaker import CircuitBreakers
from .fleet import Fleet
from .selector import AdaptiveSelector

# on_change(agent, old_state, new_state, reason): every breaker change, for embedded use.
ChangeCallback = Callable[[str, str, str, str], None]

_log = logging.getLogger(__name__)


# How long a webhook's word on an alert outlives it: far longer than a poll of Alertmanager takes.
WEBHOOK_MEMORY_SECONDS = 600.0


class AlertRemediator:
    """Turns remediation alerts into breaker changes; reports per-agent health.

    `config` is the exporter's Config (its healing settings and
    alerting.remediation_alerts); `telemetry` receives breaker states and
    selector weights.  `breakers` and `selector` may be passed in to share
    existing ones.  `on_change(agent, old, new, reason)` is called on every
    breaker state change (alert-driven or not), for orchestrators embedding
    the exporter.  `clock` (monotonic seconds) orders webhooks against polls.
    """

    def __init__(self, config, telemetry=None, *, breakers: CircuitBreakers | None = None,
                 selector: AdaptiveSelector | None = None, on_change: ChangeCallback | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.remediation_alerts = frozenset(config.alerting.remediation_alerts)
        self.deployment_labels = dict(config.alerting.deployment_labels)
        # healing.enabled: false, and the Healer calls its first candidate whatever the breakers say:
        # alerts open none, so /v1/agents does not report a remediation that does not happen.
        self.enabled = config.healing.enabled
        self.breakers = breakers or CircuitBreakers.from_config(config.healing, telemetry=telemetry)
        self.selector = selector or AdaptiveSelector.from_config(config.healing, breakers=self.breakers,
                                                                 telemetry=telemetry)
        self.known_agents = set(config.healing.fallbacks) | {
            a for alternatives in config.healing.fallbacks.values() for a in alternatives}
        if on_change is not None:
            self.breakers.add_listener(on_change)
        self.clock = clock
        self.max_agents = config.metrics.max_series
        self._untracked_said_at = -math.inf     # when alerts about agents past max_agents were last logged
        self._firing: dict[str, dict[str, str]] = {}      # agent -> fingerprint -> alertname
        self._webhook_at: dict[str, float] = {}           # fingerprint -> when a webhook last spoke of it
        self._unlabelled: set[str] = set()                # deployment labels an alert came without (warned)
        self._lock = threading.Lock()
        self.fleet = Fleet.from_config(config, self, telemetry)   # None without healing.fleet URLs

    # -- the fleet's pollers ------------------------------------------------------

    def start(self) -> "AlertRemediator":
        """Start polling the fleet's Alertmanager and Prometheus (a first poll of each before returning)."""
        if self.fleet is not None:
            self.fleet.start()
        return self

    def stop(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()

    # -- the two sources ------------------------------------------------------------

    def handle_webhook(self, payload) -> dict:
        """Act on one webhook notification; returns what it did."""
        alerts = decode_webhook(payload).alerts
        opened, released, ignored, untracked = [], [], 0, 0
        with self._lock:
            now = self.clock()
            for alert in alerts:
                labels = alert.labels
                agent = self._agent(labels)
                if agent is None or not self._trackable(agent):
                    ignored += 1
                    untracked += agent is not None
                    continue
                self._webhook_at.pop(alert.fingerprint, None)      # kept in time order, oldest first
                self._webhook_at[alert.fingerprint] = now
                if alert.status == "firing":
                    if self._fire(agent, alert.fingerprint, labels["alertname"]):
                        opened.append(agent)
                elif self._resolve(agent, alert.fingerprint, labels["alertname"]):
                    released.append(agent)
                else:
                    ignored += 1
            self._forget_webhooks_before(now - WEBHOOK_MEMORY_SECONDS)
        if untracked and now >= self._untracked_said_at + WEBHOOK_MEMORY_SECONDS:
            # Once in a while, not per webhook: a flood of alerts about new agents is one problem.
            self._untracked_said_at = now
            _log.warning("ignored %d remediation alert(s) about new agents: %d agents already have breakers "
                         "(metrics.max_series); said again in %gs at most", untracked, self.max_agents,
                         WEBHOOK_MEMORY_SECONDS)
        return {"status": "ok", "alerts": len(alerts), "opened": opened, "released": released,
                "ignored": ignored}

    def sync_alerts(self, alerts: Iterable[APIAlert], sent_at: float) -> dict:
        """Make the firing remediation alerts those of a poll sent at `sent_at` (this clock's time).

        Alerts a webhook spoke of after `sent_at` keep what the webhook said."""
        firing = {}
        for alert in alerts:
            agent = self._agent(alert.labels)
            if agent is not None and self._trackable(agent):
                firing[alert.fingerprint] = (agent, alert.labels["alertname"])
        opened, released = [], []
        with self._lock:
            newer = {fp for fp, at in self._webhook_at.items() if at > sent_at}
            for fingerprint, (agent, alertname) in firing.items():
                if fingerprint not in newer and self._fire(agent, fingerprint, alertname):
                    opened.append(agent)
            for agent, fingerprints in list(self._firing.items()):
                for fingerprint, alertname in list(fingerprints.items()):
                    if fingerprint not in firing and fingerprint not in newer \
                            and self._resolve(agent, fingerprint, alertname):
                        released.append(agent)
            # What webhooks said before this poll was sent, the poll knows too.
            self._webhook_at = {fp: at for fp, at in self._webhook_at.items() if fp in newer}
        return {"opened": opened, "released": released}

    # -- internals (with the lock held) --------------------------------------------

    def _forget_webhooks_before(self, horizon: float) -> None:
        """Fingerprints webhooks spoke of are kept for the polls sent before them (sync_alerts).
        A poll answers within its timeout, so one spoken of longer ago matters to none; without
        a poller nothing else prunes them, and each new fingerprint (a pod's, say) would stay."""
        webhook_at, forgotten = self._webhook_at, 0
        while webhook_at:
            oldest = next(iter(webhook_at))
            if webhook_at[oldest] >= horizon:
                break
            del webhook_at[oldest]
            forgotten += 1
        if forgotten > len(webhook_at):
            self._webhook_at = dict(webhook_at)     # a dict keeps its size after deletions; a copy does not

    def _agent(self, labels: dict) -> str | None:
        """The agent a remediation alert of this deployment names, or None for any other alert."""
        if not self.enabled or labels["alertname"] not in self.remediation_alerts:
            return None
        for name, value in self.deployment_labels.items():
            label = labels.get(name)
            if label is None and name not in self._unlabelled:
                # Not another deployment's alert: this Prometheus does not label its targets so, and
                # without a word self-healing would ignore every alert.
                self._unlabelled.add(name)
                _log.warning("ignoring remediation alerts without the %r label: alerting.deployment_labels "
                             "wants %s=%r; give the exporters' scrape targets that label", name, name, value)
            if label != value:
                return None         # another deployment's (alerting.deployment_labels)
        return labels.get("agent") or None

    def _trackable(self, agent: str) -> bool:
        return agent in self.breakers or self.breakers.agent_count() < self.max_agents

    def _fire(self, agent: str, fingerprint: str, alertname: str) -> bool:
        """Record a firing alert; True when it opened the agent's breaker."""
        firing = self._firing.setdefault(agent, {})
        if fingerprint in firing:
            return False
        firing[fingerprint] = alertname
        if len(firing) > 1:
            return False
        self.breakers.force_open(agent, alertname)
        return True

    def _resolve(self, agent: str, fingerprint: str, alertname: str) -> bool:
        """Record a resolved alert; True when it released the agent's breaker (to half-open: probes decide)."""
        firing = self._firing.get(agent, {})
        if firing.pop(fingerprint, None) is None or firing:
            return False
        self.breakers.release(agent, "resolved:" + alertname)
        return True

    # -- reporting -------------------------------------------------------------------

    def agents_status(self) -> dict:
        """Per-agent health for GET /v1/agents, and the fleet sources' health when polling."""
        weights = self.selector.published() if self.selector is not None else {}
        fleet_stats = self.selector.fleet() if self.selector is not None else {}
        agents = set(self.known_agents) | {b.agent for b in self.breakers}
        for task_weights in weights.values():
            agents.update(task_weights)
        report = {}
        for agent in sorted(agents):
            breaker = self.breakers.get(agent)
            calls, errors = breaker.window()
            firing = self._firing.get(agent, {})
            stats = fleet_stats.get(agent)
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
                "fleet": None if stats is None else {"success_ratio": stats.success_ratio,
                                                     "latency_seconds": stats.latency_seconds,
                                                     "cost_usd": stats.cost_usd},
            }
        document = {"agents": report}
        if self.fleet is not None:
            document["fleet"] = self.fleet.status()
        return document
