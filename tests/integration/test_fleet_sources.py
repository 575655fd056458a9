"""The fleet's two sources, each against the real binary on loopback.

* Two clustered Alertmanagers: the remediation alerts polled from GET /api/v2/alerts open and close
  breakers; any member answers; a silence (gossiped) ends remediation; with no member answering,
  the breakers stay as they were and the source is reported down, then up again.
* Prometheus with the shipped recording rules, scraping an exporter that holds an incident: a
  selector that has never seen a task sends at most 10 % of its first 20 tasks to the failing
  agent, from the statistics alone; with Prometheus stopped it learns alone, and picks the
  statistics up again when Prometheus returns.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent_exporter import stack
from agent_exporter.config import (
    AlertingConfig, Config, FleetAlertmanagerConfig, FleetConfig, FleetPrometheusConfig, HealingConfig, ModelPrice,
    MetricsConfig)
from agent_exporter.healing import AlertRemediator, Healer, RetryPolicy
from agent_exporter.healing.fleet_stats import Queries
from agent_exporter.server import Service, start_server
from agent_exporter.telemetry import Telemetry

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ALERT = "OrchestratorAgentHighErrorRatio"
FAILING, HEALTHY = "coder-claude-sonnet", "coder-gpt-4o"
AM_CONFIG = """
route:
  receiver: "null"
receivers:
  - name: "null"
"""
POLL_TIMEOUT = 30       # generous: the loops end as soon as the condition holds


def post_json(url: str, document) -> None:
    request = urllib.request.Request(url, data=json.dumps(document).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def post_alert(am_url: str, *, ends_in: timedelta, agent: str = FAILING, alertname: str = ALERT,
               **labels: str) -> None:
    """What Prometheus sends: the alert with an end a little ahead (or past, once resolved)."""
    now = datetime.now(timezone.utc)
    post_json(am_url + "/api/v2/alerts", [{
        "labels": {"alertname": alertname, "agent": agent, "severity": "critical", **labels},
        "annotations": {"summary": "failing"}, "startsAt": iso(now - timedelta(minutes=1)),
        "endsAt": iso(now + ends_in)}])


def poller(remediator, name):
    return next(p for p in remediator.fleet.pollers if p.name == name)


@pytest.fixture
def alertmanagers(tmp_path):
    first_cluster, second_cluster = stack.free_port(), stack.free_port()
    with stack.start_alertmanager(tmp_path / "a", AM_CONFIG, cluster_port=first_cluster) as first, \
            stack.start_alertmanager(tmp_path / "b", AM_CONFIG, cluster_port=second_cluster,
                                     cluster_peers=[f"127.0.0.1:{first_cluster}"]) as second:
        stack.wait_for(lambda: [len(json.load(urllib.request.urlopen(am.url + "/api/v2/status", timeout=5))
                                    ["cluster"].get("peers", [])) for am in (first, second)],
                       lambda sizes: sizes == [2, 2], timeout=POLL_TIMEOUT, what="the two members did not meet")
        yield first, second


def test_alerts_polled_from_any_member_open_and_close_breakers(alertmanagers):
    first, second = alertmanagers
    config = Config(
        alerting=AlertingConfig(remediation_alerts=(ALERT,)),
        healing=HealingConfig(fleet=FleetConfig(
            alertmanager=FleetAlertmanagerConfig(urls=(first.url, second.url), interval_seconds=3600),
            timeout_seconds=2)))
    remediator = AlertRemediator(config)
    alerts = poller(remediator, "alertmanager")
    changes = []
    remediator.breakers.add_listener(lambda agent, old, new, reason: changes.append((agent, new, reason)))

    for member in (first, second):              # Prometheus sends every alert to every member
        post_alert(member.url, ends_in=timedelta(minutes=5))
        post_alert(member.url, ends_in=timedelta(minutes=5), agent=HEALTHY, alertname="OrchestratorAgentSlow")
    remediator.start()                           # the first poll happens before start() returns
    try:
        assert changes == [(FAILING, "open", ALERT)]
        assert not remediator.breakers.get(HEALTHY).forced      # not a remediation alert
        assert remediator.agents_status()["fleet"]["alertmanager"]["up"] is True

        first.stop()                             # one member down: the other answers
        assert alerts.poll_once() and remediator.breakers.get(FAILING).forced

        second.stop()                            # none answers: the breakers stay as they were
        assert not alerts.poll_once()
        status = remediator.agents_status()
        assert status["agents"][FAILING]["circuit_state"] == "open"
        assert status["fleet"]["alertmanager"]["up"] is False
        assert first.url in status["fleet"]["alertmanager"]["last_error"]
        assert second.url in status["fleet"]["alertmanager"]["last_error"]

        # Members keep alerts in memory only: after a restart, one holds nothing until Prometheus resends.
        first.restart()
        post_alert(first.url, ends_in=timedelta(minutes=5))        # the resend
        assert alerts.poll_once() and remediator.breakers.get(FAILING).forced
        assert remediator.agents_status()["fleet"]["alertmanager"]["up"] is True
        second.restart()                         # empty, while the first still holds the alert
        assert alerts.poll_once() and remediator.breakers.get(FAILING).forced
        assert len(changes) == 1                 # nothing acted twice, nothing flapped

        # A silence, set on one member and gossiped to the other, ends the remediation on every replica.
        now = datetime.now(timezone.utc)
        post_json(second.url + "/api/v2/silences", {
            "matchers": [{"name": "alertname", "value": ALERT, "isRegex": False}],
            "startsAt": iso(now), "endsAt": iso(now + timedelta(hours=1)), "createdBy": "test",
            "comment": "remediation paused"})
        stack.wait_for(lambda: alerts.poll_once() and not remediator.breakers.get(FAILING).forced,
                       timeout=POLL_TIMEOUT, what="the silence did not reach the first member")
        assert changes[-1] == (FAILING, "half_open", "resolved:" + ALERT)
    finally:
        remediator.stop()


def test_a_resolved_alert_releases_the_breaker(alertmanagers):
    first, _ = alertmanagers
    config = Config(healing=HealingConfig(fleet=FleetConfig(
        alertmanager=FleetAlertmanagerConfig(urls=(first.url,), interval_seconds=3600))))
    remediator = AlertRemediator(config)
    alerts = poller(remediator, "alertmanager")
    post_alert(first.url, ends_in=timedelta(minutes=5))
    assert alerts.poll_once() and remediator.breakers.get(FAILING).forced
    post_alert(first.url, ends_in=timedelta(seconds=-1))       # Prometheus's resolved notice
    assert alerts.poll_once() and not remediator.breakers.get(FAILING).forced
    assert remediator.breakers.get(FAILING).reason == "resolved:" + ALERT


def test_a_deployment_polls_only_its_own_alerts(alertmanagers):
    first, _ = alertmanagers

    def replica(environment):
        return AlertRemediator(Config(
            alerting=AlertingConfig(group_labels=("environment",), deployment_labels={"environment": environment}),
            healing=HealingConfig(fleet=FleetConfig(
                alertmanager=FleetAlertmanagerConfig(urls=(first.url,), interval_seconds=3600)))))

    production, staging = replica("production"), replica("staging")
    post_alert(first.url, ends_in=timedelta(minutes=5), environment="staging")
    assert poller(production, "alertmanager").poll_once() and poller(staging, "alertmanager").poll_once()
    assert FAILING not in production.breakers
    assert staging.breakers.get(FAILING).forced


# -- statistics from Prometheus ------------------------------------------------------------------------

class Incident:
    """An exporter whose agents keep working: FAILING fails half its calls, HEALTHY one in a hundred."""

    def __init__(self):
        self.config = Config(metrics=MetricsConfig(prices={"m": ModelPrice(1.0, 2.0)}))
        self.telemetry = Telemetry(self.config)
        self.handle = start_server(Service(self.telemetry), "127.0.0.1:0")
        self.stop = threading.Event()
        self.rng = random.Random(5)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(0.05):
            for agent, error_rate, seconds in ((FAILING, 0.5, 4.0), (HEALTHY, 0.01, 6.0)):
                failed = self.rng.random() < error_rate
                self.telemetry.record({"type": "agent_execution", "agent": agent, "model": "m",
                                       "status": "error" if failed else "success", "duration_seconds": seconds,
                                       "input_tokens": 1000, "output_tokens": 500})

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.handle.stop()
        self.telemetry.shutdown()


@pytest.fixture
def prometheus_with_an_incident(tmp_path):
    incident = Incident()
    rules = REPO / "prometheus" / "rules"
    config = stack.prometheus_yml(Config(), rules, [f"127.0.0.1:{incident.handle.port}"], [])
    try:
        with stack.start_prometheus(tmp_path, config) as process:
            api = stack.PrometheusAPI(process.url)
            window = Config().healing.fleet.prometheus.window
            # A rate over a young series rests on its first few scrapes (a ratio of two of them is
            # anywhere); the figures asserted below are those of ten scrapes or more.
            api.wait_until(f'count_over_time(orchestrator_agent_executions_total{{agent="{FAILING}",'
                           f'status="error"}}[{window}])', lambda rows: rows and float(rows[0]["value"][1]) >= 10,
                           timeout=POLL_TIMEOUT)
            for query in Queries.over(window, Config().alerting.job):     # rule groups evaluate apart
                api.wait_until(query, lambda rows: len(rows) == 2, timeout=POLL_TIMEOUT)
            yield process
    finally:
        incident.close()


def test_a_new_replica_routes_away_from_the_failing_agent_from_the_statistics_alone(prometheus_with_an_incident):
    prometheus = prometheus_with_an_incident
    config = Config(healing=HealingConfig(
        fallbacks={FAILING: (HEALTHY,)},
        fleet=FleetConfig(prometheus=FleetPrometheusConfig(url=prometheus.url, interval_seconds=3600),
                          backoff_max_seconds=3600, timeout_seconds=2)))
    remediator = AlertRemediator(config)
    stats = poller(remediator, "prometheus")
    healer = Healer.from_config(config, remediator=remediator, policy=RetryPolicy(1, 0.0, 0.0))
    rng = random.Random(7)
    called = []

    def work(agent):                 # the incident, as this replica would meet it
        called.append(agent)
        if agent == FAILING and rng.random() < 0.5:
            raise TimeoutError(agent)
        return agent

    remediator.start()
    try:
        fleet = remediator.selector.fleet()
        assert fleet[FAILING].success_ratio == pytest.approx(0.5, abs=0.2)
        assert fleet[HEALTHY].success_ratio > 0.9
        assert fleet[FAILING].latency_seconds == pytest.approx(4.0, rel=0.5)
        # Every call costs the same; rate() misses the first increment of a series born later
        # (the first error's), so the young ratio is close rather than exact.
        assert fleet[HEALTHY].cost_usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6, rel=0.1)
        touched = 0
        for _ in range(20):
            called.clear()
            healer.run("coding", (FAILING, HEALTHY), work)
            touched += FAILING in called
        assert touched <= 2          # at most 10 % of its first 20 tasks

        prometheus.stop()                        # unreachable: back to local learning, nothing else changes
        assert not stats.poll_once()
        assert remediator.selector.fleet() == {}
        status = remediator.agents_status()
        assert status["fleet"]["prometheus"]["up"] is False
        assert status["agents"][FAILING]["fleet"] is None
        assert healer.run("coding", (FAILING, HEALTHY), lambda agent: agent) in (FAILING, HEALTHY)

        prometheus.restart()
        stack.wait_for(lambda: stats.poll_once() and FAILING in remediator.selector.fleet(),
                       timeout=POLL_TIMEOUT, what="the statistics did not come back")
        assert remediator.agents_status()["fleet"]["prometheus"]["up"] is True
    finally:
        remediator.stop()


def test_a_deployment_learns_nothing_from_another_deployments_series(prometheus_with_an_incident):
    # The incident's series carry no environment: a production replica's queries select none of them.
    config = Config(
        alerting=AlertingConfig(group_labels=("environment",), deployment_labels={"environment": "production"}),
        healing=HealingConfig(fleet=FleetConfig(
            prometheus=FleetPrometheusConfig(url=prometheus_with_an_incident.url, interval_seconds=3600))))
    remediator = AlertRemediator(config)
    assert poller(remediator, "prometheus").poll_once()         # the queries are valid PromQL
    assert remediator.selector.fleet() == {}
