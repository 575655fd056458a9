"""Every dashboard query returns data from a real Prometheus holding demo data.

The dashboards and rules are rendered from a config with every optional part on:
a custom job name, an `environment` grouping label and budgets per feature.  A
real Prometheus scrapes, every second, two exporters in that job, one per
environment (target labels), and evaluates the rendered rules:

* the demo (`run_demo`: the simulated orchestrator with its self-healing layer),
  as environment `staging`;
* a synthetic workload posted over HTTP to a real exporter (`POST /v1/events`),
  as environment `production`, that covers from the first second what the demo
  shows only sometimes or later: every event type including workflow runs that
  fail, time to first token, quality scores, features, every circuit state,
  selector weights, rejected events, series overflow, and OTLP spans over HTTP
  and gRPC, which it forwards to a tracing backend (otlp.forward_spans).

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

import grpc
import pytest
from msgspec.structs import replace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_receiver import HttpReceiver

from agent_exporter import Telemetry, catalog, otlp_grpc, stack
from agent_exporter.config import Config, parse_config
from agent_exporter.demo import run_demo
from agent_exporter.otlp import OTLPReceiver
from agent_exporter.render import dashboards, prometheus, rules, series
from agent_exporter.server import Service, start_server

pytestmark = pytest.mark.integration

AGENTS = ("planner", "coder", "reviewer")
MODELS = ("gpt-4o", "claude-sonnet")
FEATURES = ("login", "search")
# An agent that never fails nor retries: its error ratio and retries per execution are 0, not No data.
RELIABLE_AGENT = "summarizer"
# max_series is small so a burst of one-off tool names overflows the tool metrics.
MAX_SERIES = 40
# The first agent also fails on a bad input each round: the task's own fault, not the agent's.
TASK_ERROR = "BadInput"
CONFIG = parse_config({"observability": {
    "metrics": {"extra_labels": ["feature"], "max_series": MAX_SERIES},
    "alerting": {"evaluation_interval": "1s", "job": "orchestrator", "group_labels": ["environment"],
                 "budget": {"per_feature": {feature: 20 for feature in FEATURES}},
                 "task_error_types": [TASK_ERROR]}}})
ENVIRONMENTS = {"synthetic": "production", "demo": "staging"}
# Grafana's values for the built-in variables with a 1 s scrape interval.
RATE_INTERVAL = "15s"
RANGE = "5m"
# An alert of ours that always fires, so the firing-alerts panels have a row, one per exporter
# instance, which those panels show for the selected instances only, and another project's,
# which a shared Prometheus also holds and those panels must leave out.
FOREIGN_ALERT = "SomeoneElsesAlwaysFiring"
TEST_ALERTS = f"""
groups:
  - name: dashboard-test
    rules:
      - alert: OrchestratorDashboardTestAlwaysFiring
        expr: vector(1)
        labels:
          severity: warning
      - alert: OrchestratorDashboardTestPerInstance
        expr: up{{job="{CONFIG.alerting.job}"}} == 1
        labels:
          severity: warning
      - alert: {FOREIGN_ALERT}
        expr: vector(1)
        labels:
          severity: critical
"""


def workload(n: int) -> list[dict]:
    """Round `n` of a deterministic workload: every event type, every agent."""
    trace = f"{n:032x}"
    events = []
    for i, agent in enumerate(AGENTS):
        model = MODELS[i % 2]
        feature = FEATURES[n % 2]
        events.append({"type": "agent_execution", "agent": agent, "status": "success",
                       "duration_seconds": 0.2 + i * 3, "model": model, "feature": feature,
                       "input_tokens": 900, "output_tokens": 200, "cost_usd": 0.02,
                       "time_to_first_token_seconds": 0.4 + i, "trace_id": trace})
        events.append({"type": "evaluation", "agent": agent, "evaluator": "tests_pass",
                       "score": (0.9, 0.5, 0.75)[i], "trace_id": trace})
        events.append({"type": "agent_execution", "agent": agent, "status": "error",
                       "duration_seconds": 12.0, "model": model, "feature": feature,
                       "error_type": "Timeout", "input_tokens": 300, "cost_usd": 0.01,
                       "trace_id": trace})
        events.append({"type": "agent_execution", "agent": agent, "status": "success",
                       "duration_seconds": 1.0})  # no usage: counted as unknown, never $0
        events.append({"type": "retry", "agent": agent, "attempt": 2, "error_type": "Timeout"})
    events.append({"type": "agent_execution", "agent": AGENTS[0], "status": "error", "duration_seconds": 0.1,
                   "error_type": TASK_ERROR})
    events += [
        # Priced, without the extra label (feature): a cost series without it.
        {"type": "agent_execution", "agent": RELIABLE_AGENT, "status": "success", "duration_seconds": 0.5,
         "cost_usd": 0.001},
        {"type": "tool_call", "tool": "web_search", "status": "success",
         "duration_seconds": 0.3, "trace_id": trace},
        {"type": "tool_call", "tool": "web_search", "status": "error", "duration_seconds": 2.0},
        {"type": "tool_call", "tool": "run_tests", "status": "success", "duration_seconds": 4.0},
        {"type": "state_transition", "workflow": "feature", "from_state": "planning",
         "to_state": "coding"},
        {"type": "state_transition", "workflow": "feature", "from_state": "testing",
         "to_state": dashboards.FAILED_STATE},
        {"type": "fallback", "from_agent": "coder", "to_agent": "planner", "reason": "circuit_open"},
        {"type": "workflow_run", "workflow": "feature", "status": "success", "duration_seconds": 42.0,
         "trace_id": trace},
        {"type": "workflow_run", "workflow": "feature", "status": "error", "duration_seconds": 90.0},
        {"type": "workflow_run", "workflow": "hotfix", "status": "success", "duration_seconds": 7.5},
        {"type": "agent_execution", "agent": "planner"},            # no status: rejected
    ]
    return events


def post(url: str, events: list[dict]) -> None:
    body = "\n".join(json.dumps(event) for event in events).encode()
    request = urllib.request.Request(url + "/v1/events", data=body, method="POST",
                                     headers={"Content-Type": "application/x-ndjson"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def otlp_request(n: int) -> bytes:
    """An OTLP export request: one GenAI agent span and one span with no GenAI meaning."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add()
    now = time.time_ns()
    for i, attributes in enumerate(({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"},
                                    {"http.request.method": "GET"})):
        span = spans.spans.add(trace_id=(n * 2 + i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"),
                               name="span", start_time_unix_nano=now - 10**9, end_time_unix_nano=now)
        for key, value in attributes.items():
            span.attributes.add(key=key).value.string_value = value
    return request.SerializeToString()


def post_otlp(url: str, n: int) -> None:
    http = urllib.request.Request(url + "/v1/traces", data=otlp_request(n), method="POST",
                                  headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(http, timeout=10) as response:
        assert response.status == 200


class Workload:
    """Posts a round of events to the exporter every half second until stopped: events and OTLP over
    HTTP, and OTLP over gRPC to `grpc_port`."""

    def __init__(self, telemetry: Telemetry, url: str, grpc_port: int):
        self.telemetry = telemetry
        self.url = url
        self.grpc_channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def round(self, n: int) -> None:
        post(self.url, workload(n))
        post_otlp(self.url, n)
        self.grpc_channel.unary_unary(otlp_grpc.EXPORT_METHOD)(otlp_request(n), timeout=10)

    def run(self) -> None:
        for n in itertools.count(1):
            if self.stopped.wait(0.5):
                return
            self.round(n)

    def __enter__(self):
        post(self.url, [{"type": "circuit_state", "agent": agent, "state": state}
                        for agent, state in zip(AGENTS, ("closed", "half_open", "open"))])
        # No event carries selector weights or the fleet sources' health: the healing layer sets
        # them in the exporter's process.
        self.telemetry.set_selector_weight("coding", "coder", 0.7)
        self.telemetry.set_selector_weight("coding", "planner", 0.3)
        self.telemetry.store.set_fleet_source_up("alertmanager", True)
        self.telemetry.store.set_fleet_source_up("prometheus", False)
        self.round(0)  # the regular series exist before the one-off tools fill the metric
        post(self.url, [{"type": "tool_call", "tool": f"one_off_{i}", "status": "success", "duration_seconds": 0.01}
                        for i in range(MAX_SERIES + 10)])
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(timeout=5)
        self.grpc_channel.close()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The rule files and dashboards rendered from CONFIG, plus an alert that always fires."""
    out = tmp_path_factory.mktemp("render")
    prometheus.render_prometheus(CONFIG, out)
    dashboards.render_grafana(CONFIG, out)
    (out / "test.alerts.yml").write_text(TEST_ALERTS)
    return out


@pytest.fixture(scope="module")
def exporter():
    # The OTLP spans it receives go on to a tracing backend that takes them all.
    with HttpReceiver() as backend:
        config = replace(CONFIG, otlp=replace(CONFIG.otlp, forward_spans=True),
                         tracing=replace(CONFIG.tracing, otlp_endpoint=backend.endpoint, otlp_protocol="http/protobuf"))
        telemetry = Telemetry(config)
        receiver = OTLPReceiver(telemetry, config)
        handle = start_server(Service(telemetry, otlp=receiver), "127.0.0.1:0")
        grpc_receiver = receiver.start_grpc("127.0.0.1:0")
        try:
            with Workload(telemetry, handle.url, grpc_receiver.port):
                yield handle
        finally:
            handle.stop()
            receiver.close()
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
        def healthy() -> bool:
            assert not failures, f"the demo failed: {failures[0]!r}"
            assert thread.is_alive(), "the demo stopped by itself"
            with urllib.request.urlopen(f"http://{address}/-/healthy", timeout=2):
                return True
        stack.wait_for(healthy, timeout=30, what="the demo never became healthy")
        yield address
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive(), "the demo did not stop"


@pytest.fixture(scope="module")
def api(tmp_path_factory, rendered, exporter, demo):
    synthetic = f"127.0.0.1:{exporter.port}"
    text = prometheus.prometheus_config(
        [synthetic, demo], job=CONFIG.alerting.job,
        exporter_labels={synthetic: {"environment": ENVIRONMENTS["synthetic"]},
                         demo: {"environment": ENVIRONMENTS["demo"]}},
        rule_files=[f"{rendered}/prometheus/rules/*.yml", f"{rendered}/test.alerts.yml"],
        scrape_interval="1s", evaluation_interval="1s")
    workdir = tmp_path_factory.mktemp("prometheus")
    with stack.start_prometheus(workdir, text) as process:
        api = stack.PrometheusAPI(process.url)
        # Every recording rule has data once each counter has two samples in its window.
        recorded = set(rules.recording_rule_names(CONFIG))
        api.wait_until(f'count by (__name__) ({{__name__=~"{"|".join(sorted(recorded))}"}})',
                       lambda rows: len(rows) == len(recorded), timeout=60)
        api.wait_until('count(ALERTS{alertstate="firing"}) >= 2', bool, timeout=60)
        api.wait_until(f'count(up{{job="{CONFIG.alerting.job}"}} == 1) == 2', bool, timeout=60)
        yield api


@pytest.fixture(scope="module")
def boards(rendered) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (rendered / "grafana" / "dashboards").glob("*.json")}


def label_values(api: stack.PrometheusAPI, definition: str) -> list[str]:
    """Grafana's `label_values(selector, label)` with Prometheus' query API."""
    selector, label = re.fullmatch(r"label_values\((.*), (\w+)\)", definition).groups()
    return sorted(row["metric"][label] for row in api.query(f"count by ({label}) ({selector})"))


def variable_values(api: stack.PrometheusAPI, board: dict, **picked: str) -> dict[str, str]:
    """Resolve the dashboard's variables in order, as Grafana does on load: "All" where offered,
    else the first value, or the one `picked` for it."""
    values = {"__rate_interval": RATE_INTERVAL, "__range": RANGE}
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = label_values(api, substitute(variable["definition"], values))
        assert found, f"{board['uid']}: variable {variable['name']} has no values"
        if variable["includeAll"]:
            values[variable["name"]] = variable["allValue"]
        else:
            values[variable["name"]] = picked.get(variable["name"], found[0])
            assert values[variable["name"]] in found, (board["uid"], variable["name"], found)
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    # Longest names first, so $__range does not eat $__rate_interval's prefix.
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${name}", values[name])
    return expr


def query_until_data(api: stack.PrometheusAPI, expr: str, until=bool, timeout: float = 30.0) -> list:
    """The query's result, retried until `until(result)` (by default, while empty): rule groups
    write their rules one by one, so a series of the chosen agent can lag another rule's by an
    evaluation.  At the deadline, the result as it is, for the caller's assertion to show."""
    try:
        return api.wait_until(expr, until, timeout=timeout, interval=0.5)
    except stack.StackError:
        return api.query(expr)


def test_every_panel_query_returns_series(api, boards):
    empty = []
    checked = 0
    for uid, board in sorted(boards.items()):
        values = variable_values(api, board)
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = substitute(target["expr"], values)
                checked += 1
                if not query_until_data(api, expr):
                    empty.append(f"{uid} / {panel['title']}: {expr}")
    assert checked > 50
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_every_series_a_panel_draws_has_the_labels_its_legend_names(api, boards):
    """No blank legend: spend of executions sent without an extra label, a series without it,
    is drawn under a name too."""
    blank, checked = [], set()
    for uid, board in sorted(boards.items()):
        values = variable_values(api, board)
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                legend_labels = re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", ""))
                if not legend_labels:
                    continue
                for row in query_until_data(api, substitute(target["expr"], values)):
                    checked.add(panel["title"])
                    if missing := [label for label in legend_labels if not row["metric"].get(label)]:
                        blank.append(f"{uid} / {panel['title']}: {row['metric']} lacks {missing}")
    assert "Spend per hour by feature" in checked
    assert not blank, "\n".join(blank)


def test_the_alert_panels_show_this_projects_alerts_only(api, boards):
    overview = boards[dashboards.OVERVIEW_UID]
    values = variable_values(api, overview)
    targets = {panel["title"]: substitute(panel["targets"][0]["expr"], values) for panel in overview["panels"]
               if panel["title"] in ("Alerts firing", "Firing alerts")}
    assert len(targets) == 2
    assert api.query('count(ALERTS{alertstate="firing", alertname="%s"})' % FOREIGN_ALERT)
    rows = query_until_data(api, targets["Firing alerts"])
    names = {row["metric"]["alertname"] for row in rows}
    assert "OrchestratorDashboardTestAlwaysFiring" in names and FOREIGN_ALERT not in names, names
    assert all(name.startswith("Orchestrator") for name in names), names
    (count,) = api.query(targets["Alerts firing"])
    assert 1 <= float(count["value"][1]) < float(api.query('count(ALERTS{alertstate="firing"})')[0]["value"][1])


def test_stats_meant_to_show_zero_show_it_for_an_exporter_without_such_events(api, boards):
    """A stat whose query falls back to `vector(0)` shows 0, not No data, for every instance,
    including the demo's, which never rejects an event."""
    checked, empty = set(), []
    for uid, board in sorted(boards.items()):
        for environment in ENVIRONMENTS.values():
            values = variable_values(api, board, environment=environment)
            (instance,) = [v for v in board["templating"]["list"] if v["name"] == "instance"]
            instances = label_values(api, substitute(instance["definition"], values))
            for panel in board["panels"]:
                if panel["type"] != "stat" or "or vector(0)" not in panel["targets"][0]["expr"]:
                    continue
                for instance in instances:
                    expr = substitute(panel["targets"][0]["expr"], {**values, "instance": instance})
                    checked.add((panel["title"], instance))
                    if not query_until_data(api, expr, timeout=5):
                        empty.append(f"{uid} / {panel['title']} for {instance}: {expr}")
    assert {title for title, _ in checked} >= {"Alerts firing", "Rejected events", "Exporters down"}
    assert len({instance for _, instance in checked}) == len(ENVIRONMENTS)
    assert not empty, "stats without data:\n" + "\n".join(empty)


def test_heatmap_queries_return_exemplars(api, boards):
    start = time.time() - 300
    checked = 0
    for uid, board in sorted(boards.items()):
        values = variable_values(api, board)
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if not target.get("exemplar") or target["format"] != "heatmap":
                    continue
                expr = substitute(target["expr"], values)
                checked += 1
                found = api.query_exemplars(expr, start, time.time() + 60)
                trace_ids = {e["labels"]["trace_id"] for s in found for e in s["exemplars"]}
                assert trace_ids, f"{uid} / {panel['title']}: no exemplars for {expr}"
    assert checked >= 4


def test_the_workload_overflowed_and_rejected(api):
    """The exporter-health panels above saw real overflow and rejections, not zeros."""
    overflow = api.query(
        f'{catalog.EXPORTER_SERIES_OVERFLOW.name}{{metric="{catalog.TOOL_CALLS.name}"}}')
    assert overflow and float(overflow[0]["value"][1]) > 0
    # Every reason has a series from the start, at 0 until its first rejection.
    assert api.query(f"{catalog.EXPORTER_EVENTS_REJECTED.name} > 0")


def test_the_recording_rules_keep_the_two_environments_apart(api):
    """Both exporters run agents; the recorded series keep their environments apart."""
    def environments(rows) -> set[str]:
        return {row["metric"].get("environment") for row in rows}

    rows = query_until_data(api, f'{series.EXECUTION_RATE_RULE}{{agent="planner"}}')
    assert environments(rows) == {ENVIRONMENTS["synthetic"]}
    # Each exporter's recorded series appear once its agents have run in two scrapes: wait for both.
    everyone = query_until_data(api, series.EXECUTION_RATE_RULE,
                                until=lambda rows: environments(rows) >= set(ENVIRONMENTS.values()))
    assert environments(everyone) == set(ENVIRONMENTS.values())


# A value no variable takes: a panel a variable applies to shows nothing for it.
NOTHING = "no-such-value"
ALL_INSTANCES = "(all instances)"


def reads_label(api: stack.PrometheusAPI, expr: str, label: str) -> bool:
    """Whether a series the query selects carries `label`."""
    names = set(re.findall(r"([A-Za-z_:][\w:]*)\{", expr))
    return any(api.query(f'count({{__name__="{name}", {label}!=""}})') for name in names)


def test_every_variable_filters_every_panel_it_applies_to(api, boards):
    """Select a value of each variable that matches nothing: every query reading series with that
    label shows nothing (or 0); a query reading none of them, for the instance, stands in a panel
    whose title says it covers all instances.  Alerts are the exception: those about an instance
    follow it, the others (about an agent, a tool, the spend) are shown for every instance."""
    leaks, checked = [], 0
    for uid, board in sorted(boards.items()):
        values = variable_values(api, board)
        names = [v["name"] for v in board["templating"]["list"] if v["type"] == "query"]
        for name in names:
            nothing = {**values, name: NOTHING}
            for panel in board["panels"]:
                for target in panel.get("targets", []):
                    expr = substitute(target["expr"], nothing)
                    rows = api.query(expr)
                    shown = [row for row in rows if float(row["value"][1]) != 0]
                    checked += 1
                    where = f"{uid} / {panel['title']} with {name}={NOTHING}: {expr}"
                    if "ALERTS{" in expr:
                        if any(name in row["metric"] for row in rows):
                            leaks.append(f"{where} shows alerts of other {name}s: {rows[:2]}")
                    elif reads_label(api, expr, name):
                        if shown:
                            leaks.append(f"{where} shows {shown[:2]}")
                    elif name == "instance" and ALL_INSTANCES not in panel["title"]:
                        leaks.append(f"{where} ignores the instance but does not say so")
    assert checked > 100
    assert not leaks, "panels not filtered by a variable:\n" + "\n".join(leaks)


def test_the_model_variable_lists_the_models_of_the_selected_agent(api, boards):
    """Chained as Grafana users expect: an agent's models, not every model of the job."""
    for uid in (dashboards.AGENT_UID, dashboards.COST_UID):
        variables = {v["name"]: v for v in boards[uid]["templating"]["list"]}
        values = variable_values(api, boards[uid])
        for agent, model in zip(AGENTS, itertools.cycle(MODELS)):
            models = label_values(api, substitute(variables["model"]["definition"], {**values, "agent": agent}))
            assert models == [model], (uid, agent, models)


def test_ratio_panels_show_0_for_an_agent_without_errors_or_retries(api, boards):
    """An agent that never failed nor retried has an error ratio and retries per execution of 0 in
    every panel, not a missing line or No data."""
    for uid, title in ((dashboards.OVERVIEW_UID, "Error ratio by agent"), (dashboards.AGENT_UID, "Error ratio"),
                       (dashboards.HEALING_UID, "Error ratio against the breaker threshold"),
                       (dashboards.HEALING_UID, "Retries per execution")):
        board = boards[uid]
        values = {**variable_values(api, board), "agent": RELIABLE_AGENT}
        (panel,) = [p for p in board["panels"] if p["title"] == title]
        expr = substitute(panel["targets"][0]["expr"], values)
        rows = query_until_data(api, expr, until=lambda rows: any(
            row["metric"].get("agent") == RELIABLE_AGENT for row in rows))
        ratios = [float(row["value"][1]) for row in rows if row["metric"].get("agent") == RELIABLE_AGENT]
        assert ratios == [0.0], f"{uid} / {title}: {expr} gives {rows}"


def test_error_ratio_panels_leave_the_tasks_own_faults_out(api, boards):
    """Each round the first agent runs six times: four successes (two of them over OTLP), a Timeout
    (its own failure) and a BadInput (the task's, alerting.task_error_types): 1/6 of its executions
    failed on its account, as the alerts count, not 2/6; the second agent's 1 in 3."""
    for uid, title in ((dashboards.OVERVIEW_UID, "Error ratio by agent"), (dashboards.AGENT_UID, "Error ratio"),
                       (dashboards.HEALING_UID, "Error ratio against the breaker threshold")):
        board = boards[uid]
        (panel,) = [p for p in board["panels"] if p["title"] == title]
        for agent, expected in ((AGENTS[0], 1 / 6), (AGENTS[1], 1 / 3)):
            expr = substitute(panel["targets"][0]["expr"], {**variable_values(api, board), "agent": agent})
            rows = query_until_data(api, expr, until=lambda rows: any(
                row["metric"].get("agent") == agent for row in rows))
            ratios = [float(row["value"][1]) for row in rows if row["metric"].get("agent") == agent]
            assert ratios == [pytest.approx(expected, rel=1e-3)], (uid, title, agent, rows)
