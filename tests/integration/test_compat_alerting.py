"""The legacy alerting API delivers through a real Alertmanager."""

import json
import logging
import os
import socket
import threading
import urllib.request

import pytest
from msgspec.structs import replace

from agent_exporter import stack
from agent_exporter.compat.alerting import Alert, AlertingSystem, alert_name
from agent_exporter.config import Config

pytestmark = pytest.mark.integration

AM_CONFIG = """
route:
  receiver: "null"
receivers:
  - name: "null"
"""


def config_for(url: str, **alerting) -> Config:
    return replace(Config(), alerting=replace(Config().alerting, alertmanager_url=url, **alerting))


def test_send_alert_reaches_alertmanager(tmp_path, caplog):
    with stack.start_alertmanager(tmp_path, AM_CONFIG) as am:
        system = AlertingSystem(config=config_for(am.url))
        with caplog.at_level(logging.ERROR):
            assert system.send_alert(Alert("error", "Agent planner keeps failing", "3 of 4 runs failed",
                                           {"agent": "planner", "request_id": "r-1"}))
        assert "ALERT [ERROR] Agent planner keeps failing" in caplog.text
        alerts = stack.wait_for(lambda: json.loads(urllib.request.urlopen(am.url + "/api/v2/alerts", timeout=5).read()),
                                timeout=10, interval=0.1, what="the alert in Alertmanager")
        assert len(alerts) == 1
        assert alerts[0]["labels"] == {"alertname": "OrchestratorLegacyAgentPlannerKeepsFailing",
                                       "severity": "critical", "agent": "planner", "source": "legacy"}
        assert alerts[0]["annotations"] == {"summary": "Agent planner keeps failing",
                                            "description": "3 of 4 runs failed"}


def test_send_alert_never_raises_and_honours_enabled(tmp_path, caplog):
    dead = f"http://127.0.0.1:{stack.free_port()}"
    system = AlertingSystem(config=config_for(dead))
    assert system.send_alert(Alert("warning", "t", "m")) is True         # queued
    assert system.flush(10)
    assert f"could not send alert 't' to Alertmanager at {dead}" in caplog.text
    assert AlertingSystem(config=config_for(dead, enabled=False)).send_alert(Alert("warning", "t", "m")) is False
    # The top-level switch turns the legacy alerts off with everything else.
    off = AlertingSystem(config=replace(config_for(dead, channels=("log",)), enabled=False))
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        assert off.send_alert(Alert("warning", "quiet", "m")) is False
    assert "quiet" not in caplog.text


def test_an_alertmanager_that_never_answers_never_holds_up_the_caller():
    listener = socket.create_server(("127.0.0.1", 0))      # accepts, never answers
    try:
        system = AlertingSystem(config=config_for(f"http://127.0.0.1:{listener.getsockname()[1]}"))
        sending = threading.Thread(target=lambda: [system.send_alert(Alert("critical", f"a{i}", "m"))
                                                   for i in range(3)])
        sending.start()
        sending.join(2)
        assert not sending.is_alive(), "send_alert waited for Alertmanager"
        assert not system.flush(0.1)                       # the posts are still waiting for an answer
    finally:
        listener.close()
    assert system.flush(30)


def test_check_conditions_points_at_the_rules(caplog):
    system = AlertingSystem(config=config_for("http://127.0.0.1:9", conditions=("error_rate > 5%",)))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):      # as a legacy orchestrator calls it, after every execution
            assert system.check_conditions({"success_rate": 0.5}) == []
    told = [record for record in caplog.records if "Prometheus alert rules" in record.getMessage()]
    assert len(told) == 1


def test_alert_names_are_camel_case_with_the_prefix():
    assert alert_name("budget exceeded: $120/day") == "OrchestratorLegacyBudgetExceeded120Day"


def test_legacy_handlers_still_get_every_alert():
    seen = []
    system = AlertingSystem(config=config_for(f"http://127.0.0.1:{stack.free_port()}"))
    system.handlers += [lambda alert: 1 / 0, seen.append]
    system.send_alert(Alert("warning", "t", "m"))
    assert [a.title for a in seen] == ["t"]


def test_alerts_with_whatever_legacy_code_put_in_them_reach_alertmanager(tmp_path):
    # The legacy Alert took any object: an exception as the message, a dict of metrics, no severity.
    sent = [Alert("error", "Agent coder failed", TimeoutError("no answer in 30 s"), {"agent": "coder"}),
            Alert("warning", "Budget", {"cost_per_day": 120.5}, context=["not", "a", "dict"]),
            Alert(None, 404, "m")]
    with stack.start_alertmanager(tmp_path, AM_CONFIG) as am:
        system = AlertingSystem(config=config_for(am.url))
        assert all(system.send_alert(alert) for alert in sent)       # never raises
        assert system.flush(10)
        alerts = stack.wait_for(lambda: json.loads(urllib.request.urlopen(am.url + "/api/v2/alerts", timeout=5).read()),
                                lambda alerts: len(alerts) == len(sent), timeout=10, interval=0.1,
                                what="the alerts in Alertmanager")
    assert sorted((a["labels"]["alertname"], a["labels"]["severity"], a["annotations"]["description"])
                  for a in alerts) == [
        ("OrchestratorLegacy404", "warning", "m"),
        ("OrchestratorLegacyAgentCoderFailed", "critical", "no answer in 30 s"),
        ("OrchestratorLegacyBudget", "warning", "{'cost_per_day': 120.5}")]


def test_a_forked_worker_sends_its_own_alerts(tmp_path):
    with stack.start_alertmanager(tmp_path, AM_CONFIG) as am:
        system = AlertingSystem(config=config_for(am.url))
        system.send_alert(Alert("info", "Orchestrator started", "m"))      # the parent's sending thread runs
        assert system.flush(10)
        child = os.fork()              # a multiprocessing worker on Linux, as the legacy singleton went with it
        if child == 0:
            try:
                system.send_alert(Alert("critical", "Worker failed", "m"))
                os._exit(0 if system.flush(5) else 1)
            finally:
                os._exit(2)
        assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0, "the worker's alert was never posted"
        alerts = json.loads(urllib.request.urlopen(am.url + "/api/v2/alerts", timeout=5).read())
    assert sorted(a["labels"]["alertname"] for a in alerts) == [
        "OrchestratorLegacyOrchestratorStarted", "OrchestratorLegacyWorkerFailed"]
