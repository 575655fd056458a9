"""Fleet healing parts one by one: quality and fleet statistics in the selector, the remediator's two
alert sources, the poller's schedule, the API client against a real loopback HTTP server, the
recording-rule answers, the wiring from the config, and the quality and fleet simulations.

The same parts against real Prometheus and Alertmanager binaries: tests/integration/test_fleet*.py.
"""

import base64
import json
import logging
import random
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from agent_exporter import catalog, tracing
from agent_exporter.config import (
    AlertingConfig, Config, ConfigError, FleetAlertmanagerConfig, FleetConfig, FleetPrometheusConfig, HealingConfig,
    HTTPAuthConfig, SelectorConfig, parse_config)
from agent_exporter.healing import AdaptiveSelector, AlertRemediator, FleetStats, Healer, RetryPolicy
from agent_exporter.healing.alertmanager import alerts_filter, decode_api_alerts
from agent_exporter.healing.api_client import APIClient, SourceUnavailable
from agent_exporter.healing.fleet_stats import PrometheusStats, Queries
from agent_exporter.healing.polling import Poller
from agent_exporter.healing.selector import _Evidence
from agent_exporter.healing.simulate import format_quality_table, run_quality_simulation
from agent_exporter.healing.simulate_fleet import format_fleet_table, run_fleet_simulation
from agent_exporter.server import Service, start_server
from agent_exporter.telemetry import Telemetry

from clocks import Clock
from loopback import LoopbackServer, QuietHandler

ALERT = "OrchestratorAgentHighErrorRatio"


# -- the selector: quality and the fleet's statistics -----------------------------------------------

def test_a_success_counts_by_its_score_as_far_as_quality_is_weighed():
    selector = AdaptiveSelector(quality_weight=0.5, decay=1.0)
    selector.observe("t", "a", True, score=0.2)
    assert selector.evidence("t", "a") == pytest.approx((0.6, 0.4))
    selector.observe("t", "b", True)                 # no score: a whole success
    selector.observe("t", "c", False, score=0.9)     # a failure stays a failure
    assert selector.evidence("t", "b") == (1.0, 0.0)
    assert selector.evidence("t", "c") == (0.0, 1.0)
    ignoring = AdaptiveSelector(quality_weight=0.0)
    ignoring.observe("t", "a", True, score=0.2)
    assert ignoring.evidence("t", "a") == (1.0, 0.0)
    with pytest.raises(ValueError):
        AdaptiveSelector(quality_weight=1.5)


def test_traffic_leaves_an_agent_that_succeeds_but_answers_badly_only_when_scores_count():
    def share_on_bad(quality_weight):
        selector = AdaptiveSelector(quality_weight=quality_weight, rng=random.Random(1))
        chosen = []
        for _ in range(300):
            agent = selector.choose("coding", ("bad", "good"))
            selector.observe("coding", agent, True, score=0.2 if agent == "bad" else 0.9)
            chosen.append(agent)
        return chosen[-100:].count("bad") / 100

    assert share_on_bad(1.0) <= 0.10
    assert share_on_bad(0.0) >= 0.30


def test_a_selector_without_local_evidence_follows_the_fleet():
    selector = AdaptiveSelector(rng=random.Random(2), fleet_weight=10)
    selector.set_fleet({"failing": FleetStats(success_ratio=0.5), "healthy": FleetStats(success_ratio=0.99)})
    first_20 = [selector.choose("coding", ("failing", "healthy")) for _ in range(20)]
    assert first_20.count("failing") <= 2
    assert selector.fleet()["failing"].success_ratio == 0.5
    selector.clear_fleet()
    assert selector.fleet() == {}
    alone = [selector.choose("coding", ("failing", "healthy")) for _ in range(200)]
    assert 60 <= alone.count("failing") <= 140          # back to an even prior


def test_fleet_and_local_evidence_blend_by_their_weights():
    selector = AdaptiveSelector(fleet_weight=10, local_weight=2.0, decay=1.0)
    for _ in range(5):
        selector.observe("t", "a", True, latency_seconds=1.0, cost_usd=0.01)
    selector.set_fleet({"a": FleetStats(success_ratio=0.6, latency_seconds=4.0, cost_usd=0.04),
                        "b": FleetStats(latency_seconds=3.0)})
    successes, failures, latency, cost = selector._belief("a", selector._evidence["t"]["a"])
    assert (successes, failures) == pytest.approx((2 * 5 + 10 * 0.6, 10 * 0.4))
    assert latency == pytest.approx((1.0 * 10 + 4.0 * 10) / 20)      # 2 x 5 local observations vs 10
    assert cost == pytest.approx((0.01 * 10 + 0.04 * 10) / 20)
    # An agent this replica never tried takes the fleet's figures; one the fleet does not know, none.
    assert selector._belief("b", _Evidence()) == (0.0, 0.0, 3.0, None)
    assert selector._belief("c", _Evidence()) == (0.0, 0.0, None, None)


def test_selector_settings_come_from_the_config():
    healing = HealingConfig(
        selector=SelectorConfig(decay=0.9, latency_weight=0.3, cost_weight=0.0, quality_weight=1.0),
        fleet=FleetConfig(prometheus=FleetPrometheusConfig(fleet_weight=7, local_weight=0.5)))
    selector = AdaptiveSelector.from_config(healing)
    assert (selector.decay, selector.latency_weight, selector.cost_weight, selector.quality_weight,
            selector.fleet_weight, selector.local_weight) == (0.9, 0.3, 0.0, 1.0, 7, 0.5)


# -- the healer: scores, workflow runs, one span event per fact --------------------------------------

def sample(text, name, **labels):
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_the_healer_hands_scores_to_the_selector_and_records_a_task_as_a_workflow_run(spans):
    provider, exporter = spans
    telemetry = Telemetry(tracer_provider=provider)
    try:
        selector = AdaptiveSelector(rng=random.Random(0), decay=1.0, quality_weight=1.0)
        healer = Healer(selector=selector, telemetry=telemetry, score_of=lambda agent, result: result["score"],
                        policy=RetryPolicy(2, 0.0, 0.0, sleep=lambda s: None))
        attempts = {"n": 0}

        def answer(agent):
            attempts["n"] += 1
            if attempts["n"] == 1:
                raise TimeoutError("first attempt times out")
            return {"score": 0.25}

        assert healer.run("coding", ("coder",), answer, workflow="feature") == {"score": 0.25}
        assert selector.evidence("coding", "coder") == pytest.approx((0.25, 1.75))
        text = telemetry.render().decode()
        assert sample(text, catalog.WORKFLOW_RUNS.name, workflow="feature", status="success") == 1
        assert sample(text, catalog.RETRIES.name, agent="coder", error_type="TimeoutError") == 1

        with pytest.raises(ValueError):
            healer.run("coding", ("coder",), lambda agent: (_ for _ in ()).throw(ValueError("bad task")),
                       workflow="feature")
        text = telemetry.render().decode()
        assert sample(text, catalog.WORKFLOW_RUNS.name, workflow="feature", status="error") == 1
    finally:
        telemetry.shutdown()
    finished = exporter.get_finished_spans()
    heal = next(s for s in finished if s.name == "heal coding")
    workflow = next(s for s in finished if s.name == "invoke_workflow feature")
    assert heal.parent.span_id == workflow.context.span_id
    # The retry is one span event, tracing.py's, on the heal span only (attempt spans carry the exception).
    assert [e.name for e in heal.events] == [tracing.RETRY_EVENT]
    assert not [e for s in finished if s.name != "heal coding" for e in s.events
                if e.name in (tracing.RETRY_EVENT, tracing.FALLBACK_EVENT, "retry", "fallback")]
    assert dict(heal.events[0].attributes)[tracing.ATTEMPT] == 2


def test_a_workflow_run_needs_the_healers_telemetry():
    with pytest.raises(ValueError, match="telemetry"):
        Healer().run("coding", ("coder",), lambda agent: "done", workflow="feature")


# -- the remediator: webhook and poll, nothing acts twice ------------------------------------------

def api_alert(agent="coder", fingerprint="f1", alertname=ALERT):
    return {"labels": {"alertname": alertname, "agent": agent, "severity": "critical"},
            "annotations": {}, "fingerprint": fingerprint, "startsAt": "2024-05-01T10:00:00Z",
            "endsAt": "2024-05-01T10:10:00Z", "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
            "receivers": [{"name": "exporter-remediation"}], "updatedAt": "2024-05-01T10:00:00Z"}


def polled(*alerts):
    return decode_api_alerts(json.dumps(list(alerts)).encode())


def notification(status, fingerprint="f1", agent="coder"):
    return {"version": "4", "receiver": "r", "status": status, "groupKey": "g", "alerts": [{
        "status": status, "labels": {"alertname": ALERT, "agent": agent}, "annotations": {},
        "startsAt": "2024-05-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fingerprint}]}


def make_remediator(**kwargs):
    changes = []
    config = Config(healing=HealingConfig(fallbacks={"coder": ("coder-lite",)}),
                    alerting=AlertingConfig(remediation_alerts=(ALERT,)))
    clock = Clock(100.0)
    rem = AlertRemediator(config, clock=clock, on_change=lambda *change: changes.append(change), **kwargs)
    return rem, clock, changes


def test_webhooks_of_ever_new_fingerprints_keep_memory_bounded_without_a_poller():
    """Only the poller pruned what webhooks said: a webhook-only deployment (the default) kept every
    fingerprint it was ever sent, about 125 bytes each (pods churning under one agent's alert)."""
    import tracemalloc

    from agent_exporter.healing.remediation import WEBHOOK_MEMORY_SECONDS
    clock = Clock(100.0)
    rem = AlertRemediator(Config(alerting=AlertingConfig(remediation_alerts=(ALERT,))), clock=clock)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):
            for status in ("firing", "resolved"):
                rem.handle_webhook(notification(status, f"pod-{i}"))
        grown = tracemalloc.get_traced_memory()[0] - before
        clock.now += WEBHOOK_MEMORY_SECONDS + 1
        rem.handle_webhook(notification("resolved", "pod-last"))
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown > 500_000                      # what the fingerprints cost while they matter
    assert kept < 200_000, f"{kept:,} bytes still kept after {WEBHOOK_MEMORY_SECONDS:g} s"
    # And what a webhook said still holds against a poll sent before it.
    rem.handle_webhook(notification("firing", "f1"))
    assert rem.sync_alerts(polled(), clock.now - 1)["released"] == []


def test_a_poll_opens_and_closes_breakers_like_the_webhook():
    rem, clock, changes = make_remediator()
    assert rem.sync_alerts(polled(api_alert(), api_alert("other", "f9", "OrchestratorAgentSlow")), clock.now) \
        == {"opened": ["coder"], "released": []}
    assert rem.breakers.get("coder").forced and "other" not in rem.breakers
    assert rem.sync_alerts(polled(api_alert()), clock.now) == {"opened": [], "released": []}
    assert rem.sync_alerts(polled(), clock.now) == {"opened": [], "released": ["coder"]}
    assert changes == [("coder", "closed", "open", ALERT), ("coder", "open", "half_open", "resolved:" + ALERT)]


def test_a_deployment_acts_only_on_its_own_alerts():
    # One Prometheus and Alertmanager for staging and production (alerting.group_labels): a staging
    # alert must not open production's breaker, whether it comes by webhook or by poll.
    config = Config(alerting=AlertingConfig(remediation_alerts=(ALERT,), group_labels=("environment",),
                                            deployment_labels={"environment": "production"}))
    rem = AlertRemediator(config, clock=Clock(100.0))
    staging, production = notification("firing", "f1", "coder"), notification("firing", "f2", "planner")
    staging["alerts"][0]["labels"]["environment"] = "staging"
    production["alerts"][0]["labels"]["environment"] = "production"
    assert rem.handle_webhook(staging) == {"status": "ok", "alerts": 1, "opened": [], "released": [], "ignored": 1}
    assert rem.handle_webhook(production)["opened"] == ["planner"]
    unlabelled = api_alert("tester", "f3")
    assert rem.sync_alerts(polled(unlabelled, {**api_alert("reviewer", "f4"), "labels": {
        **api_alert()["labels"], "agent": "reviewer", "environment": "production"}}), 0.0)["opened"] == ["reviewer"]
    assert "coder" not in rem.breakers and "tester" not in rem.breakers


def test_an_alert_without_the_deployment_label_is_ignored_with_a_warning_once(caplog):
    # Not another deployment's: its Prometheus does not label the targets, so every alert would be ignored.
    config = Config(alerting=AlertingConfig(remediation_alerts=(ALERT,), group_labels=("environment",),
                                            deployment_labels={"environment": "production"}))
    rem = AlertRemediator(config, clock=Clock(100.0))
    staging = notification("firing", "f1", "coder")
    staging["alerts"][0]["labels"]["environment"] = "staging"
    with caplog.at_level(logging.WARNING):
        assert rem.handle_webhook(staging)["ignored"] == 1
        assert caplog.records == []
        for fingerprint in ("f2", "f3"):
            assert rem.handle_webhook(notification("firing", fingerprint, "planner"))["ignored"] == 1
    assert [r.getMessage() for r in caplog.records] == [
        "ignoring remediation alerts without the 'environment' label: alerting.deployment_labels wants "
        "environment='production'; give the exporters' scrape targets that label"]


def test_with_healing_off_alerts_open_no_breaker():
    rem = AlertRemediator(Config(healing=HealingConfig(enabled=False), alerting=AlertingConfig(
        remediation_alerts=(ALERT,))), clock=Clock(100.0))
    assert rem.handle_webhook(notification("firing"))["opened"] == []
    assert rem.sync_alerts(polled(api_alert("planner", "f2")), 0.0)["opened"] == []
    assert rem.breakers.agent_count() == 0


def test_deployment_labels_must_be_group_labels():
    with pytest.raises(ConfigError, match=r"observability\.alerting\.deployment_labels\.environment: "
                                          r"'environment' is not one of group_labels"):
        parse_config({"observability": {"alerting": {"deployment_labels": {"environment": "production"}}}})


def test_a_deployments_statistics_are_its_own_series():
    queries = Queries.over("1m", "agent-exporter", {"environment": "production", "cluster": "eu-1"})
    assert queries.success == ('1 - avg by (agent) (agent:orchestrator_agent_executions:error_ratio_rate1m'
                               '{cluster="eu-1", environment="production"})')
    assert queries.latency == ('avg by (agent) (agent_quantile:orchestrator_agent_execution_duration_seconds:'
                               'histogram_quantile1m{quantile="0.5", cluster="eu-1", environment="production"})')
    assert queries.cost == (
        'sum by (agent) (rate(orchestrator_llm_cost_usd_total{job="agent-exporter", cluster="eu-1", '
        'environment="production"}[1m])) / sum by (agent) (rate(orchestrator_agent_executions_total'
        '{job="agent-exporter", cluster="eu-1", environment="production"}[1m]))')
    assert Queries.over("1m", "j", {}) == Queries.over("1m", "j")
    assert 'orchestrator_llm_cost_usd_total{job="other"}' in Queries.over("1m", "other").cost


def test_whichever_source_comes_first_acts_and_nothing_acts_twice():
    rem, clock, changes = make_remediator()
    assert rem.handle_webhook(notification("firing"))["opened"] == ["coder"]
    clock.now += 1
    assert rem.sync_alerts(polled(api_alert()), clock.now)["opened"] == []         # the poll finds it done
    assert rem.handle_webhook(notification("firing"))["opened"] == []             # a repeated notification
    clock.now += 1
    assert rem.sync_alerts(polled(), clock.now)["released"] == ["coder"]            # the poll saw it resolve first
    assert rem.handle_webhook(notification("resolved"))["released"] == []
    assert len(changes) == 2


def test_a_poll_sent_before_a_webhook_does_not_undo_it():
    rem, clock, changes = make_remediator()
    sent = clock.now
    clock.now += 1
    rem.handle_webhook(notification("firing"))              # arrives while the poll is in flight
    assert rem.sync_alerts(polled(), sent)["released"] == []  # the poll's answer predates it
    assert rem.breakers.get("coder").forced
    clock.now += 1
    rem.handle_webhook(notification("resolved"))
    stale = clock.now - 0.5
    assert rem.sync_alerts(polled(api_alert()), stale)["opened"] == []   # nor undoes a resolution
    assert not rem.breakers.get("coder").forced
    assert rem.sync_alerts(polled(api_alert()), clock.now + 1)["opened"] == ["coder"]   # it fired again


def test_api_answers_are_validated_and_filtered_by_name():
    assert alerts_filter({"B", "A"}) == 'alertname=~"A|B"'
    with pytest.raises(ValueError, match=r"alerts\[0\]: missing field 'fingerprint'"):
        decode_api_alerts(b'[{"labels": {"alertname": "A"}}]')
    with pytest.raises(ValueError, match="invalid JSON"):
        decode_api_alerts(b"<html>")
    with pytest.raises(ValueError, match="nested too deeply"):
        decode_api_alerts(b'[{"labels": {"alertname": "A"}, "fingerprint": "f", "x": ' + b"[" * 50_000 + b"]" * 50_000
                          + b"}]")
    with pytest.raises(ValueError, match="not UTF-8"):
        decode_api_alerts(b'[{"labels": {"alertname": "\xff"}, "fingerprint": "f"}]')
    with pytest.raises(ValueError, match=r"alerts\[0\].labels: missing alertname"):
        decode_api_alerts(b'[{"labels": {}, "fingerprint": "f"}]')


# -- the poller ------------------------------------------------------------------------------------

def test_the_poller_backs_off_exponentially_and_says_when_a_source_goes_and_comes_back(caplog):
    outcomes = [Exception("connection refused"), Exception("connection refused"), Exception("again"), None]
    failures = []

    def poll():
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    poller = Poller("prometheus", poll, interval=5, jitter=0, backoff_max=12, on_failure=failures.append,
                    clock=lambda: 1234.0)
    assert poller.up is None and poller.delay() == 5
    caplog.set_level(logging.INFO, logger="agent_exporter.healing.fleet")
    delays = []
    for _ in range(4):
        poller.poll_once()
        delays.append(poller.delay())
    assert delays == [5, 10, 12, 5]
    assert len(failures) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["fleet source prometheus unavailable, keeping the last state: connection refused",
                        "fleet source prometheus available again"]
    assert poller.status() == {"up": True, "consecutive_failures": 0, "last_success": 1234.0,
                               "last_error": None, "interval_seconds": 5}


def test_the_poller_says_again_when_a_source_fails_otherwise(caplog):
    """Refused, then answering nonsense: the log kept saying 'connection refused'."""
    outcomes = [ConnectionError("refused"), ConnectionError("refused"), ValueError("invalid JSON"),
                ValueError("invalid JSON")]

    def poll():
        raise outcomes.pop(0)

    poller = Poller("alertmanager", poll, interval=5, jitter=0, backoff_max=60)
    for _ in range(4):
        poller.poll_once()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "fleet source alertmanager unavailable, keeping the last state: refused",
        "fleet source alertmanager unavailable, keeping the last state: invalid JSON"]


def test_the_poller_keeps_backing_off_however_long_a_source_is_down():
    # 1100 failed polls: at healing.fleet's defaults (backoff_max 60 s) about 18 hours of an
    # Alertmanager down.  delay() overflowed at 1025 and the exception ended the poller's thread.
    def refused():
        raise OSError("connection refused")

    poller = Poller("alertmanager", refused, interval=10.0, jitter=0, backoff_max=60.0)   # floats, as configured
    for _ in range(1100):
        poller.poll_once()
    assert poller.delay() == 60


def test_poller_jitter_stays_within_its_bounds_and_never_backs_off_below_the_interval():
    poller = Poller("alertmanager", lambda: None, interval=10, jitter=0.2, backoff_max=4, rng=random.Random(3))
    assert all(8 <= poller.delay() <= 12 for _ in range(200))
    poller.failures = 5
    assert all(8 <= poller.delay() <= 12 for _ in range(200))
    with pytest.raises(ValueError):
        Poller("x", lambda: None, interval=1, jitter=1, backoff_max=1)


def test_poller_start_polls_once_before_returning_and_stop_ends_its_thread():
    polled_in = []
    poller = Poller("alertmanager", lambda: polled_in.append(threading.current_thread().name),
                    interval=3600, jitter=0, backoff_max=3600)
    poller.start()
    assert polled_in == [threading.current_thread().name]
    poller.stop()
    assert not poller._thread.is_alive()


# -- the API client against a real server ------------------------------------------------------------

class Recorder(LoopbackServer):
    """A loopback HTTP server answering GET with a body, recording each request's path and headers."""

    def __init__(self, status=200, body=b"[]"):
        self.requests = []
        recorder = self

        class Handler(QuietHandler):
            def do_GET(self):
                recorder.requests.append((self.path, dict(self.headers)))
                self.reply(status, body)

        super().__init__(Handler)


def closed_port_url():
    from agent_exporter.stack import free_port
    return f"http://127.0.0.1:{free_port()}"


def test_any_member_answers_and_the_one_that_did_is_asked_first_next_time(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    dead = closed_port_url()
    with Recorder(body=b'{"ok": true}') as live:
        client = APIClient([dead, live.url], auth=HTTPAuthConfig(bearer_token_file=str(token)),
                           key_path="observability.healing.fleet.alertmanager", timeout=2)
        assert client.get("/api/v2/alerts", [("filter", 'alertname=~"A"'), ("active", "true")]) == b'{"ok": true}'
        assert client.get("/api/v2/alerts") == b'{"ok": true}'
        path, headers = live.requests[0]
        assert path == "/api/v2/alerts?filter=alertname%3D~%22A%22&active=true"
        assert headers["Authorization"] == "Bearer s3cret"
        assert client.urls[client._first] == live.url


class Dripping(LoopbackServer):
    """Answers with headers at once, then its body a byte every 0.1 s (a stuck proxy); stops when left."""

    def __init__(self, length=200):
        class Handler(QuietHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                try:
                    for _ in range(length):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:
                    pass

        super().__init__(Handler)


def test_a_member_that_answers_a_byte_at_a_time_fails_within_the_timeout_and_the_next_is_asked():
    with Dripping() as dripping, Recorder(body=b"[2]") as live:
        client = APIClient([dripping.url, live.url], auth=HTTPAuthConfig(), key_path="k", timeout=0.5)
        assert client.get("/api/v2/alerts") == b"[2]"       # the whole drip would take 20 s
        with pytest.raises(SourceUnavailable, match=r"no whole answer within 0\.5s"):
            APIClient([dripping.url], auth=HTTPAuthConfig(), key_path="k", timeout=0.5).get("/api/v2/alerts")


def test_every_member_that_answers_is_heard(tmp_path):
    dead = closed_port_url()
    with Recorder(body=b"[1]") as one, Recorder(body=b"[2]") as two:
        client = APIClient([one.url, dead, two.url], auth=HTTPAuthConfig(), key_path="k", timeout=2)
        assert client.get_each("/api/v2/alerts", [("active", "true")]) == [b"[1]", b"[2]"]
        assert "Authorization" not in one.requests[0][1]
    with pytest.raises(SourceUnavailable, match=dead):
        APIClient([dead], auth=HTTPAuthConfig(), key_path="k", timeout=2).get_each("/api/v2/alerts")


def test_basic_auth_and_unavailable_members_are_named(tmp_path):
    password = tmp_path / "password"
    password.write_text("pw")
    with Recorder(status=503) as failing:
        dead = closed_port_url()
        client = APIClient([failing.url, dead], auth=HTTPAuthConfig(username="fleet", password_file=str(password)),
                           key_path="observability.healing.fleet.prometheus", timeout=2)
        with pytest.raises(SourceUnavailable) as info:
            client.get("/api/v1/query")
        assert f"{failing.url}: HTTP 503" in str(info.value) and dead in str(info.value)
        expected = "Basic " + base64.b64encode(b"fleet:pw").decode()
        assert failing.requests[0][1]["Authorization"] == expected


def test_an_unreadable_secret_is_an_error_naming_its_key(tmp_path):
    with pytest.raises(ValueError, match=r"observability.healing.fleet.prometheus.auth.bearer_token_file: "
                                         r"cannot read"):
        APIClient(["http://127.0.0.1:9"], auth=HTTPAuthConfig(bearer_token_file=str(tmp_path / "none")),
                  key_path="observability.healing.fleet.prometheus", timeout=1)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        APIClient(["http://127.0.0.1:9"], auth=HTTPAuthConfig(username="u", password_file=str(empty)),
                  key_path="k", timeout=1)


# -- Prometheus answers --------------------------------------------------------------------------------

def vector(*samples):
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"agent": agent}, "value": [1700000000.0, value]} for agent, value in samples]}}).encode()


class Answers:
    """The API client's place: canned query-API answers by query (the parsing under test is ours)."""

    def __init__(self, answers):
        self.answers = answers

    def get(self, path, params):
        assert path == "/api/v1/query"
        return self.answers[dict(params)["query"]]


QUERIES = Queries.over("1m", "agent-exporter")


def test_recording_rule_answers_become_per_agent_fleet_stats():
    selector = AdaptiveSelector()
    stats = PrometheusStats(Answers({
        QUERIES.success: vector(("coder", "0.5"), ("coder-lite", "1.2"), ("silent", "NaN")),
        QUERIES.latency: vector(("coder", "4.5"), ("coder-lite", "+Inf")),
        QUERIES.cost: vector(("coder", "0.05")),
    }), selector, "1m", "agent-exporter")
    stats()
    assert selector.fleet() == {
        "coder": FleetStats(success_ratio=0.5, latency_seconds=4.5, cost_usd=0.05),
        "coder-lite": FleetStats(success_ratio=1.0),
    }
    stats.unavailable(SourceUnavailable("down"))
    assert selector.fleet() == {}


def test_a_failed_query_fails_the_refresh():
    error = json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}).encode()
    stats = PrometheusStats(Answers({QUERIES.success: error}), AdaptiveSelector(), "1m", "agent-exporter")
    with pytest.raises(ValueError, match="parse error"):
        stats()


def test_the_fleet_window_names_the_rules_the_queries_read_and_the_rules_render():
    from agent_exporter.render.rules import recording_rules
    config = Config(healing=HealingConfig(fleet=FleetConfig(prometheus=FleetPrometheusConfig(window="2m"))))
    queries = Queries.over(config.healing.fleet.prometheus.window, config.alerting.job)
    assert queries.success == "1 - avg by (agent) (agent:orchestrator_agent_executions:error_ratio_rate2m)"
    assert queries.latency == ('avg by (agent) (agent_quantile:orchestrator_agent_execution_duration_seconds'
                               ':histogram_quantile2m{quantile="0.5"})')
    assert 'rate(orchestrator_agent_executions_total{job="agent-exporter"}[2m])' in queries.cost
    rules = {rule["record"]: rule["expr"] for group in recording_rules(config) for rule in group["rules"]}
    assert "[2m]" in rules["agent:orchestrator_agent_executions:error_ratio_rate2m"]
    assert "[2m]" in rules["agent_quantile:orchestrator_agent_execution_duration_seconds:histogram_quantile2m"]
    # the alerts' windows and the dashboards' 5m quantiles stay, and no other window is added
    assert "agent:orchestrator_agent_executions:error_ratio_rate5m" in rules
    assert "agent_quantile:orchestrator_agent_execution_duration_seconds:histogram_quantile5m" in rules
    defaults = {rule["record"] for group in recording_rules(Config()) for rule in group["rules"]}
    assert set(rules) - defaults == {"agent:orchestrator_agent_executions:error_ratio_rate2m",
                                     "agent_quantile:orchestrator_agent_execution_duration_seconds:histogram_quantile2m"}


# -- wiring from the config -----------------------------------------------------------------------------

def fleet_config(**fleet):
    return Config(healing=HealingConfig(fleet=FleetConfig(**fleet)))


def test_no_fleet_without_urls_and_one_poller_per_source():
    assert AlertRemediator(Config()).fleet is None
    rem = AlertRemediator(fleet_config(alertmanager=FleetAlertmanagerConfig(urls=(closed_port_url(),),
                                                                            interval_seconds=3),
                                       prometheus=FleetPrometheusConfig(url=closed_port_url())))
    assert [(p.name, p.interval) for p in rem.fleet.pollers] == [("alertmanager", 3), ("prometheus", 30)]
    disabled = Config(healing=HealingConfig(enabled=False, fleet=FleetConfig(
        prometheus=FleetPrometheusConfig(url="http://127.0.0.1:9"))))
    assert AlertRemediator(disabled).fleet is None


def test_a_healer_without_the_remediator_that_polls_healing_fleet_says_so(caplog):
    # Healer.from_config(tel.config, tel), as the README's self-healing section has it, polled
    # nothing: an alert firing in healing.fleet's Alertmanager left its agent's breaker closed, silently.
    config = fleet_config(alertmanager=FleetAlertmanagerConfig(urls=(closed_port_url(),)))
    caplog.set_level(logging.WARNING, logger="agent_exporter.healing.healer")
    Healer.from_config(config)
    assert [r.getMessage() for r in caplog.records] == [
        "healing.fleet names sources this Healer does not poll: pass it "
        "remediator=AlertRemediator(config, telemetry).start() to act on them"]
    caplog.clear()
    Healer.from_config(config, remediator=AlertRemediator(config))
    Healer.from_config(Config())
    assert caplog.records == []


def test_unreachable_sources_keep_breakers_and_show_in_agents_and_metrics():
    config = fleet_config(alertmanager=FleetAlertmanagerConfig(urls=(closed_port_url(),), interval_seconds=3600),
                          prometheus=FleetPrometheusConfig(url=closed_port_url(), interval_seconds=3600),
                          timeout_seconds=1)
    telemetry = Telemetry(config, otel_metrics=True)
    rem = AlertRemediator(config, telemetry)
    rem.breakers.force_open("coder", ALERT)
    rem.selector.set_fleet({"coder": FleetStats(success_ratio=0.4)})
    rem.start()
    try:
        with start_server(Service(telemetry, remediator=rem), "127.0.0.1:0") as handle:
            agents = requests.get(handle.url + "/v1/agents", timeout=10).json()
            metrics = requests.get(handle.url + "/metrics", timeout=10).text
    finally:
        rem.stop()
        telemetry.shutdown()
    assert agents["agents"]["coder"]["circuit_state"] == "open"          # kept
    assert agents["agents"]["coder"]["fleet"] is None                     # back to local learning
    for source in ("alertmanager", "prometheus"):
        status = agents["fleet"][source]
        assert status["up"] is False and status["consecutive_failures"] == 1 and status["last_error"]
        assert sample(metrics, "orchestrator_fleet_source_up", source=source) == 0


# -- simulations ------------------------------------------------------------------------------------

def test_quality_simulation_moves_traffic_only_when_scores_are_weighed():
    result = run_quality_simulation(seeds=1, tasks=1000)
    weighed, ignored = result["selector"]["weighed"], result["selector"]["ignored"]
    assert weighed["share_on_degraded"] <= 0.25 and weighed["tasks_to_shift"] is not None
    assert ignored["share_on_degraded"] >= 0.6 and ignored["tasks_to_shift"] is None
    assert weighed["mean_score"] > ignored["mean_score"]
    assert "weighed" in format_quality_table(result)


def test_fleet_simulation_figures():
    result = run_fleet_simulation(3, seeds=1, tasks=1000)
    modes = result["modes"]
    assert set(modes) == {"alone", "shared_1m", "shared_5m"}
    for row in modes.values():
        assert set(row) == {"window_seconds", "success_rate", "tasks_to_shift", "work_on_failing",
                            "late_replica_work_on_failing", "late_replica_work_on_failing_worst", "tasks_to_return"}
        assert row["success_rate"] >= 0.99 and row["tasks_to_shift"] is not None
    assert modes["shared_1m"]["late_replica_work_on_failing"] <= 0.10
    assert run_fleet_simulation(3, seeds=1, tasks=400) == run_fleet_simulation(3, seeds=1, tasks=400)
    assert "late replica" in format_fleet_table(result)

