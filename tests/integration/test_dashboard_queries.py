"""Every dashboard query returns data from a real Prometheus holding demo data.

A real Prometheus scrapes, every second, two exporters in the `agent-exporter`
job and evaluates the rules rendered from the config:

* the demo (`run_demo`: the simulated orchestrator with its self-healing layer);
* a synthetic workload that covers, from the first second, what the demo shows
  only sometimes or later: every event type including workflows failing, every
  circuit state, selector weights, rejected events and series overflow.

Once the recording rules have data, every panel query (stat and table panels
included) and every variable query, with the variables substituted as Grafana
would, must return at least one series, and the heatmap queries must return
exemplars.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from agent_exporter import Telemetry, catalog, stack
from agent_exporter.config import AlertingConfig, Config, MetricsConfig
from agent_exporter.demo import run_demo
from agent_exporter.render import dashboards, rules
from agent_exporter.store import SeriesStore

pytestmark = pytest.mark.integration

AGENTS = ("planner", "coder", "reviewer")
MODELS = ("gpt-4o", "claude-sonnet")
# max_series is small so a burst of one-off tool names overflows the tool metrics.
MAX_SERIES = 40
# Grafana's values for the built-in variables with a 1 s scrape interval.
RATE_INTERVAL = "15s"
RANGE = "5m"
# An alert that always fires, so the firing-alerts panels have a row.
TEST_ALERTS = """
groups:
  - name: dashboard-test
    rules:
      - alert: DashboardTestAlwaysFiring
        expr: vector(1)
        labels:
          severity: warning
"""


def workload(n: int) -> list[dict]:
    """Round `n` of a deterministic workload: every event type, every agent."""
    trace = f"{n:032x}"
    events = []
    for i, agent in enumerate(AGENTS):
        model = MODELS[i % 2]
        feature = ("login", "search")[n % 2]
        events.append({"type": "agent_execution", "agent": agent, "status": "success",
                       "duration_seconds": 0.2 + i * 3, "model": model, "feature": feature,
                       "input_tokens": 900, "output_tokens": 200, "cost_usd": 0.02,
                       "trace_id": trace})
        events.append({"type": "agent_execution", "agent": agent, "status": "error",
                       "duration_seconds": 12.0, "model": model, "feature": feature,
                       "error_type": "Timeout", "input_tokens": 300, "cost_usd": 0.01,
                       "trace_id": trace})
        events.append({"type": "agent_execution", "agent": agent, "status": "success",
                       "duration_seconds": 1.0})  # no usage: counted as unknown, never $0
        events.append({"type": "retry", "agent": agent, "attempt": 2, "error_type": "Timeout"})
    events += [
        {"type": "tool_call", "tool": "web_search", "status": "success",
         "duration_seconds": 0.3, "trace_id": trace},
        {"type": "tool_call", "tool": "web_search", "status": "error", "duration_seconds": 2.0},
        {"type": "tool_call", "tool": "run_tests", "status": "success", "duration_seconds": 4.0},
        {"type": "state_transition", "workflow": "feature", "from_state": "planning",
         "to_state": "coding"},
        {"type": "state_transition", "workflow": "feature", "from_state": "testing",
         "to_state": dashboards.FAILED_STATE},
        {"type": "fallback", "from_agent": "coder", "to_agent": "planner", "reason": "circuit_open"},
    ]
    return events


class Workload:
    """Feeds the store a round of events every half second until stopped."""

    def __init__(self, telemetry: Telemetry):
        self.telemetry = telemetry
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def round(self, n: int) -> None:
        for event in workload(n):
            self.telemetry.record(event)
        self.telemetry.store.count_rejected("invalid_event")

    def run(self) -> None:
        for n in itertools.count(1):
            if self.stopped.wait(0.5):
                return
            self.round(n)

    def __enter__(self):
        tel = self.telemetry
        for agent, state in zip(AGENTS, ("closed", "half_open", "open")):
            tel.set_circuit_state(agent, state)
        tel.set_selector_weight("coding", "coder", 0.7)
        tel.set_selector_weight("coding", "planner", 0.3)
        self.round(0)  # the regular series exist before the one-off tools fill the metric
        for i in range(MAX_SERIES + 10):
            tel.record({"type": "tool_call", "tool": f"one_off_{i}", "status": "success",
                        "duration_seconds": 0.01})
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The rule files rendered from the config, plus an alert that always fires."""
    out = tmp_path_factory.mktemp("render")
    rules.render_prometheus(Config(alerting=AlertingConfig(evaluation_interval="1s")), out)
    (out / "test.alerts.yml").write_text(TEST_ALERTS)
    return out


@pytest.fixture(scope="module")
def exporter():
    store = SeriesStore(MetricsConfig(extra_labels=("feature",), max_series=MAX_SERIES))
    store.set_budget("day", 100.0)
    store.set_budget("month", 2000.0)
    telemetry = Telemetry(store=store)
    handle = telemetry.serve("127.0.0.1:0")
    try:
        with Workload(telemetry):
            yield handle
    finally:
        handle.stop()
        telemetry.shutdown()


@pytest.fixture(scope="module")
def demo():
    """The demo's exporter and simulated orchestrator, on a free loopback port."""
    address = f"127.0.0.1:{stack.free_port()}"
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            run_demo(Config(), listen_address=address, stop=stop, stream=io.StringIO())
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, name="demo", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            assert not failures, f"the demo failed: {failures[0]!r}"
            assert thread.is_alive(), "the demo stopped by itself"
            assert time.monotonic() < deadline, "the demo never became healthy"
            try:
                with urllib.request.urlopen(f"http://{address}/-/healthy", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        yield address
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive(), "the demo did not stop"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, rendered, exporter, demo):
    config = f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rendered}/prometheus/rules/*.yml
  - {rendered}/test.alerts.yml
scrape_configs:
  - job_name: agent-exporter
    static_configs:
      - targets: ["127.0.0.1:{exporter.port}", "{demo}"]
"""
    workdir = tmp_path_factory.mktemp("prometheus")
    with stack.start_prometheus(workdir, config) as process:
        api = stack.PrometheusAPI(process.url)
        # Every recording rule has data once each counter has two samples in its window.
        recorded = set(rules.recording_rule_names())
        api.wait_until(f'count by (__name__) ({{__name__=~"{"|".join(sorted(recorded))}"}})',
                       lambda rows: len(rows) == len(recorded), timeout=60)
        api.wait_until('ALERTS{alertstate="firing"}', bool, timeout=60)
        api.wait_until('count(up{job="agent-exporter"} == 1) == 2', bool, timeout=60)
        yield api


def boards() -> dict[str, dict]:
    folder = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


def label_values(api: stack.PrometheusAPI, definition: str) -> list[str]:
    """Grafana's `label_values(selector, label)` with Prometheus' query API."""
    selector, label = re.fullmatch(r"label_values\((.*), (\w+)\)", definition).groups()
    return sorted(row["metric"][label] for row in api.query(f"count by ({label}) ({selector})"))


def variable_values(api: stack.PrometheusAPI, board: dict) -> dict[str, str]:
    """Resolve the dashboard's variables in order, as Grafana does on load."""
    values = {"__rate_interval": RATE_INTERVAL, "__range": RANGE}
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = label_values(api, substitute(variable["definition"], values))
        assert found, f"{board['uid']}: variable {variable['name']} has no values"
        values[variable["name"]] = variable["allValue"] if variable["includeAll"] else found[0]
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    # Longest names first, so $__range does not eat $__rate_interval's prefix.
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${name}", values[name])
    return expr


def query_until_data(api: stack.PrometheusAPI, expr: str, timeout: float = 30.0) -> list:
    """The query's result, retried while empty: rule groups write their rules one by one,
    so a series of the chosen agent can lag another rule's by an evaluation."""
    deadline = time.monotonic() + timeout
    while True:
        rows = api.query(expr)
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_every_panel_query_returns_series(prometheus):
    empty = []
    checked = 0
    for uid, board in sorted(boards().items()):
        values = variable_values(prometheus, board)
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = substitute(target["expr"], values)
                checked += 1
                if not query_until_data(prometheus, expr):
                    empty.append(f"{uid} / {panel['title']}: {expr}")
    assert checked > 50
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_heatmap_queries_return_exemplars(prometheus):
    start = time.time() - 300
    checked = 0
    for uid, board in sorted(boards().items()):
        values = variable_values(prometheus, board)
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if not target.get("exemplar") or target["format"] != "heatmap":
                    continue
                expr = substitute(target["expr"], values)
                checked += 1
                found = prometheus.query_exemplars(expr, start, time.time() + 60)
                trace_ids = {e["labels"]["trace_id"] for s in found for e in s["exemplars"]}
                assert trace_ids, f"{uid} / {panel['title']}: no exemplars for {expr}"
    assert checked >= 2


def test_the_workload_overflowed_and_rejected(prometheus):
    """The exporter-health panels above saw real overflow and rejections, not zeros."""
    overflow = prometheus.query(
        f'{catalog.EXPORTER_SERIES_OVERFLOW.name}{{metric="{catalog.TOOL_CALLS.name}"}}')
    assert overflow and float(overflow[0]["value"][1]) > 0
    rejected = prometheus.query(f"{catalog.EXPORTER_EVENTS_REJECTED.name}")
    assert rejected and float(rejected[0]["value"][1]) > 0
