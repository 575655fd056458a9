"""Self-healing for a fleet of replicas: the same alerts and the same statistics on every one.

Nothing is coordinated between replicas: each polls the fleet's own sources of
truth.  Alertmanager (healing.fleet.alertmanager) holds the firing alerts,
every member of its cluster alike, and opens and closes breakers on every
replica (alert_source.py).  Prometheus (healing.fleet.prometheus) holds every
replica's counts, and seeds and refreshes every selector (fleet_stats.py).
Each source is polled on its interval with jitter and backoff (polling.py).

A source that does not answer changes nothing it set: the breakers stay as the
last answer left them, while the selector falls back to local learning.  Its
health is in /v1/agents (`fleet`), in a log line when it goes and comes back,
and in the gauge orchestrator_fleet_source_up{source}.
"""

from __future__ import annotations

from .alert_source import AlertmanagerAlerts
from .api_client import APIClient
from .fleet_stats import PrometheusStats
from .polling import Poller

def fleet_clients(config) -> tuple[APIClient | None, APIClient | None]:
    """The API clients of healing.fleet's Alertmanager and Prometheus, None where unset.  Their secret
    files are read here, so an unreadable one is a ValueError naming its key (`check` asks too)."""
    fleet = config.healing.fleet
    key = "observability.healing.fleet"
    alertmanager = prometheus = None
    if fleet.alertmanager.urls:
        alertmanager = APIClient(fleet.alertmanager.urls, auth=fleet.alertmanager.auth,
                                 key_path=f"{key}.alertmanager", timeout=fleet.timeout_seconds)
    if fleet.prometheus.url:
        prometheus = APIClient([fleet.prometheus.url], auth=fleet.prometheus.auth,
                               key_path=f"{key}.prometheus", timeout=fleet.timeout_seconds)
    return alertmanager, prometheus


class Fleet:
    """The fleet's pollers of one replica; made by AlertRemediator from the config."""

    def __init__(self, pollers: list[Poller]):
        self.pollers = pollers

    @classmethod
    def from_config(cls, config, remediator, telemetry=None) -> "Fleet | None":
        """The pollers healing.fleet asks for, acting on `remediator`; None when it names no source."""
        fleet = config.healing.fleet
        if not config.healing.enabled or not (fleet.alertmanager.urls or fleet.prometheus.url):
            return None
        timing = dict(jitter=fleet.jitter, backoff_max=fleet.backoff_max_seconds)

        def source_up(name: str):
            """orchestrator_fleet_source_up{source=name} after every poll."""
            if telemetry is None:
                return None
            return lambda ok: telemetry.store.set_fleet_source_up(name, ok)

        pollers = []
        alertmanager, prometheus = fleet_clients(config)
        if alertmanager is not None:
            pollers.append(Poller("alertmanager", AlertmanagerAlerts(alertmanager, remediator),
                                  interval=fleet.alertmanager.interval_seconds, on_result=source_up("alertmanager"),
                                  **timing))
        if prometheus is not None:
            stats = PrometheusStats(prometheus, remediator.selector, fleet.prometheus.window, config.alerting.job,
                                    config.alerting.deployment_labels)
            pollers.append(Poller("prometheus", stats, interval=fleet.prometheus.interval_seconds,
                                  on_failure=stats.unavailable, on_result=source_up("prometheus"), **timing))
        return cls(pollers)

    def start(self) -> None:
        """Poll every source once, then keep polling in the background."""
        for poller in self.pollers:
            poller.start()

    def stop(self) -> None:
        for poller in self.pollers:
            poller.stop()

    def status(self) -> dict:
        return {poller.name: poller.status() for poller in self.pollers}
