"""The demo's healing workload and its packaging: typed events and workflow runs from the simulated
orchestrator, the replicas' config file, and the `demo` extra kept out of the library import."""

import subprocess
import sys
import threading
import tomllib
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from msgspec.structs import replace
from prometheus_client.parser import text_string_to_metric_families

from agent_exporter import catalog, stack
from agent_exporter.config import Config, parse_config
from agent_exporter.demo.runner import config_document, with_fleet
from agent_exporter.demo.workload import (
    EVALUATOR, Incident, SimulatedClock, SimulatedOrchestrator, demo_config)
from agent_exporter.healing import AlertRemediator, Healer, RetryPolicy
from agent_exporter.telemetry import Telemetry

ROOT = Path(__file__).resolve().parents[2]


def samples(text, name):
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def test_the_library_import_and_the_telemetry_path_leave_the_demo_extra_alone():
    code = ("import sys, agent_exporter\n"
            "from agent_exporter import Telemetry\n"
            "from agent_exporter.healing import Healer, AlertRemediator\n"
            "import agent_exporter.demo, agent_exporter.stack\n"
            "t = Telemetry()\n"
            "with t.agent_execution('a') as run: run.usage(input_tokens=1)\n"
            "t.shutdown()\n"
            "print(sorted(m for m in sys.modules if m.startswith(('aiosmtpd', 'agent_exporter.sinks'))))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_aiosmtpd_is_in_the_demo_extra_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("aiosmtpd") for d in project["dependencies"])
    assert any(d.startswith("aiosmtpd") for d in project["optional-dependencies"]["demo"])
    assert "agent-exporter[demo]" in project["optional-dependencies"]["test"]


def test_the_stack_says_which_extra_it_needs(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "aiosmtpd", None)            # as if the demo extra were not installed
    monkeypatch.setitem(sys.modules, "aiosmtpd.controller", None)
    monkeypatch.delitem(sys.modules, "agent_exporter.sinks", raising=False)
    with ExitStack() as cleanup, pytest.raises(stack.StackError, match=r"agent-exporter\[demo\]"):
        stack.start_stack(cleanup, Config(), workdir=tmp_path, targets=[], exporter_url="http://127.0.0.1:1")


def test_the_replicas_config_file_loads_back_into_the_same_config():
    config = demo_config(parse_config(yaml.safe_load((ROOT / "examples" / "observability.yaml").read_text())),
                         listen_address="127.0.0.1:9500")
    config = with_fleet(config, ["http://127.0.0.1:9093", "http://127.0.0.1:9094"], "http://127.0.0.1:9090")
    loaded = parse_config(yaml.safe_load(yaml.safe_dump(config_document(config))))
    assert loaded.alerting.conditions == () and config.alerting.conditions     # read into the thresholds
    assert replace(loaded, alerting=config.alerting) == config
    assert loaded.alerting == replace(config.alerting, conditions=())
    assert config.healing.fleet.alertmanager.urls == ("http://127.0.0.1:9093", "http://127.0.0.1:9094")
    assert config.healing.fleet.prometheus.url == "http://127.0.0.1:9090"


def test_the_demo_pages_on_burns_but_files_no_tickets():
    """A slow burn is a matter of days; the demo's Prometheus holds minutes."""
    from agent_exporter.render.rules import alert_names
    names = alert_names(demo_config(Config(), listen_address="127.0.0.1:9464"))
    assert {"OrchestratorAgentErrorBudgetBurnFast", "OrchestratorWorkflowErrorBudgetBurnFast"} <= set(names)
    assert not [name for name in names if name.endswith("BurnSlow")]


def test_the_demo_records_each_task_as_a_workflow_run_with_typed_events_and_scores():
    config = demo_config(Config(), listen_address="127.0.0.1:9464")
    telemetry = Telemetry(config)
    try:
        remediator = AlertRemediator(config, telemetry)
        clock = SimulatedClock()
        healer = Healer.from_config(config, telemetry, remediator=remediator, clock=clock,
                                    policy=RetryPolicy.from_config(config.healing, sleep=lambda s: None),
                                    score_of=lambda agent, result: result.score)
        orchestrator = SimulatedOrchestrator(telemetry, healer, incident=Incident(start=0, end=1e9, error_rate=0.9),
                                             seed=3, simulated_clock=clock)
        outcomes = [orchestrator.run_task() for _ in range(30)]
        for coder in ("coder-claude-sonnet", "coder-gpt-4o"):       # opened by their own errors: tasks fail
            breaker = healer.breakers.get(coder)
            for _ in range(100):
                breaker.record_failure()
            assert breaker.state == "open"
        outcomes += [orchestrator.run_task() for _ in range(30)]
        text = telemetry.render().decode()
    finally:
        telemetry.shutdown()
    stats = orchestrator.stats
    assert stats.tasks_started == 60 == stats.tasks_done + stats.tasks_failed
    runs = {}
    for s in samples(text, catalog.WORKFLOW_RUNS.name):
        runs[s.labels["status"]] = runs.get(s.labels["status"], 0) + s.value
    assert runs == {"success": outcomes.count(True), "error": outcomes.count(False)}
    assert runs["error"] > 0
    # Durations are the simulated ones: a task takes seconds of agent time, not the microseconds it ran.
    count = sum(s.value for s in samples(text, catalog.WORKFLOW_DURATION.name + "_count"))
    total = sum(s.value for s in samples(text, catalog.WORKFLOW_DURATION.name + "_sum"))
    assert count == 60 and total / count > 1.0
    scores = [s for s in samples(text, catalog.EVALUATION_SCORE.name + "_count") if s.labels["evaluator"] == EVALUATOR]
    assert sum(s.value for s in scores) == stats.executions - stats.execution_errors
    # The selector learned from the scores as well: each success counted below a whole one.
    successes, failures = healer.selector.evidence("planning", "planner-gpt-4o")
    assert 0 < failures and successes > 0
    # Cost was priced once, by the demo, and recorded with the event.
    spend = sum(s.value for s in samples(text, catalog.LLM_COST.name))
    assert spend == pytest.approx(stats.spend_usd)


def test_the_orchestrator_worker_stops_when_asked():
    config = demo_config(Config(), listen_address="127.0.0.1:9464")
    telemetry = Telemetry(config)
    try:
        healer = Healer.from_config(config, telemetry)
        orchestrator = SimulatedOrchestrator(telemetry, healer, seed=1)
        stop = threading.Event()
        worker = threading.Thread(target=orchestrator.run, args=(stop, 1000.0))
        worker.start()
        stop.set()
        worker.join(10)
        assert not worker.is_alive()
    finally:
        telemetry.shutdown()


def test_demo_flags_that_cannot_work_are_refused(capsys):
    from agent_exporter.cli import main
    assert main(["demo", "--replicas", "3"]) == 1
    assert "--replicas needs --stack" in capsys.readouterr().err
    assert main(["demo", "--incident-start", "50", "--incident-end", "40"]) == 1
    assert "--incident-end must come after --incident-start" in capsys.readouterr().err


@pytest.mark.parametrize("mode,keys", [("quality", {"degraded_agent", "degraded_score", "selector"}),
                                       ("fleet", {"replicas", "delay_seconds", "refresh_seconds", "late_tasks",
                                                  "tasks_after_recovery", "modes"})])
def test_simulate_modes_print_their_figures(mode, keys, capsys):
    import json

    from agent_exporter.cli import main
    assert main(["simulate", "--mode", mode, "--seeds", "1", "--tasks", "400", "--format", "json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == keys
    assert main(["simulate", "--mode", mode, "--seeds", "1", "--tasks", "400", "--replicas", "2"]) == 0
    assert capsys.readouterr().out.strip()


def test_the_demo_reports_traffic_leaving_the_first_choice_even_before_it_led_clearly():
    import io
    import random
    from types import SimpleNamespace

    from agent_exporter.demo.console import TRAFFIC_SHIFT_POLLS, Console, HealingReporter
    from agent_exporter.healing import AdaptiveSelector, CircuitBreakers

    selector = AdaptiveSelector(rng=random.Random(7))
    stream = io.StringIO()
    reporter = HealingReporter(SimpleNamespace(breakers=CircuitBreakers(), selector=selector), Console(stream))
    first, second = "coder-claude-sonnet", "coder-gpt-4o"
    selector.choose("coding", [first, second])
    selector.publish("coding")           # no evidence yet: near-equal weights, nobody leads
    reporter.poll()
    for _ in range(40):                  # the first choice fails from the start; the second works
        selector.observe("coding", first, False)
        selector.observe("coding", second, True)
    selector.publish("coding")
    for _ in range(TRAFFIC_SHIFT_POLLS - 1):
        reporter.poll()
    assert stream.getvalue() == ""       # not news until it has held the lead for a while
    reporter.poll()
    assert stream.getvalue().startswith(f"[healing] coding: traffic moved from {first} to {second} ")
