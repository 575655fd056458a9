"""A real Prometheus runs the rendered rules against the exporter's HTTP service, fed
with events over POST /v1/events and spans over POST /v1/traces (forwarded to a tracing
backend that is down): every recording rule returns data, and the alerts see what the
events describe and the spans the backend never got."""

import json
import random
import threading
import urllib.request

import pytest
from otlp_spans import request, span

from agent_exporter import Telemetry, stack
from agent_exporter.config import Config, OTLPConfig, TracingConfig
from agent_exporter.otlp import OTLPReceiver
from agent_exporter.render import prometheus, rules, series
from agent_exporter.render.common import sli_windows
from agent_exporter.server import Service, start_server

pytestmark = pytest.mark.integration

AGENTS = {"planner": 0.0, "coder": 0.5}          # error ratio per agent: coder is having an incident
WORKFLOWS = {"feature": 0.0, "hotfix": 0.5}      # and so are hotfix runs


def batch(rng: random.Random) -> bytes:
    """NDJSON: executions of both agents with streaming and quality scores, workflow runs,
    tool calls, coder's breaker open, and one malformed event."""
    events = []
    for _ in range(5):
        for agent, error_ratio in AGENTS.items():
            failed = rng.random() < error_ratio
            slow = agent == "coder"      # coder's first tokens come late, and its answers score low
            events.append({"type": "agent_execution", "agent": agent, "model": "gpt-4o",
                           "status": "error" if failed else "success", "error_type": "Timeout" if failed else None,
                           "duration_seconds": rng.lognormvariate(0, 1), "input_tokens": 100,
                           "output_tokens": 20, "cache_read_tokens": 400, "cost_usd": 0.01,
                           "time_to_first_token_seconds": 8.0 if slow else 0.3})
            events.append({"type": "evaluation", "agent": agent, "evaluator": "tests_pass",
                           "score": 0.2 if slow else 0.9})
        for workflow, error_ratio in WORKFLOWS.items():
            events.append({"type": "workflow_run", "workflow": workflow, "duration_seconds": rng.uniform(5, 50),
                           "status": "error" if rng.random() < error_ratio else "success"})
        events.append({"type": "tool_call", "tool": "web_search", "duration_seconds": rng.random(),
                       "status": "error" if rng.random() < 0.1 else "success"})
    events.append({"type": "circuit_state", "agent": "coder", "state": "open"})
    events.append({"type": "agent_execution", "agent": "planner"})          # no status: rejected
    return b"\n".join(json.dumps({k: v for k, v in e.items() if v is not None}).encode() for e in events)


def feed(url: str, stop: threading.Event) -> None:
    rng = random.Random(7)
    # Spans of no GenAI meaning (counted as ignored, no event): only their forwarding shows.
    traces = request(span(1, {"http.route": "/orders"}), span(2, {"http.route": "/orders"})).SerializeToString()
    while not stop.wait(0.25):
        for path, body, media in (("/v1/events", batch(rng), "application/x-ndjson"),
                                  ("/v1/traces", traces, "application/x-protobuf")):
            post = urllib.request.Request(url + path, data=body, method="POST", headers={"Content-Type": media})
            urllib.request.urlopen(post, timeout=10).close()


@pytest.fixture
def fed_exporter():
    # Received spans are forwarded to a tracing backend nothing listens for: every one fails.
    config = Config(tracing=TracingConfig(otlp_endpoint=f"http://127.0.0.1:{stack.free_port()}",
                                          otlp_protocol="http/protobuf", otlp_timeout_seconds=2.0),
                    otlp=OTLPConfig(forward_spans=True))
    telemetry = Telemetry(config)
    receiver = OTLPReceiver(telemetry, config)
    handle = start_server(Service(telemetry, otlp=receiver), "127.0.0.1:0")
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(handle.url, stop), daemon=True)
    feeder.start()
    yield handle
    stop.set()
    feeder.join(timeout=10)
    handle.stop()
    receiver.close()
    telemetry.shutdown()


def values(rows: list[dict]) -> list[str]:
    return [row["value"][1] for row in rows]


def test_rendered_rules_evaluate_on_a_fed_exporter(tmp_path, fed_exporter):
    config = Config()
    prometheus.render_prometheus(config, tmp_path)
    prometheus_dir = tmp_path / "prometheus"
    text = prometheus.prometheus_config([f"127.0.0.1:{fed_exporter.port}"], job=config.alerting.job,
                                        rule_files=prometheus.RULE_FILES,
                                        scrape_interval="1s", evaluation_interval="1s")
    with stack.start_prometheus(prometheus_dir, text) as process:
        api = stack.PrometheusAPI(process.url)
        loaded = {r["name"] for g in api.rules() for r in g["rules"]}
        assert loaded == set(rules.recording_rule_names(config)) | set(rules.alert_names(config))

        for name in rules.recording_rule_names(config):
            result = api.wait_until(name, lambda rows: len(rows) > 0, timeout=30)
            assert all(v not in ("NaN", "+Inf", "-Inf") for v in values(result)), (name, result)
        for window in sli_windows(config.alerting.slo):
            ratios = {r["metric"]["agent"]: float(r["value"][1])
                      for r in api.query(series.AGENT_SLI.error_ratio_rule(window))}
            assert set(ratios) == set(AGENTS) and ratios["planner"] == 0 and 0.2 < ratios["coder"] < 0.8, ratios
            ratios = {r["metric"]["workflow"]: float(r["value"][1])
                      for r in api.query(series.WORKFLOW_SLI.error_ratio_rule(window))}
            assert set(ratios) == set(WORKFLOWS) and ratios["feature"] == 0 and 0.2 < ratios["hotfix"] < 0.8, ratios
        quantiles = {r["metric"]["quantile"] for r in api.query(series.LATENCY_QUANTILE_RULE)}
        assert quantiles == {"0.5", "0.95", "0.99"}
        first_token = {(r["metric"]["agent"], r["metric"]["quantile"]): float(r["value"][1])
                       for r in api.query(series.TIME_TO_FIRST_TOKEN_QUANTILE_RULE)}
        assert first_token[("coder", "0.95")] > 7.5 and first_token[("planner", "0.95")] < 0.5, first_token
        token_types = {r["metric"]["type"] for r in api.query(series.TOKENS_RULE)}
        assert token_types == {"input", "output", "cache_read"}

        # The exporter is up and identifies itself: neither exporter alert has anything to say.
        job = f'job="{config.alerting.job}"'
        assert api.query(f"up{{{job}}} == 0") == []
        assert api.query(f"absent({series.BUILD_INFO}{{{job}}})") == []

        # Coder's and hotfix's incidents: the fast burns (no `for:`) fire, the others wait
        # out their `for:`; planner and feature stay clear of all of them.
        def states(rows):
            return {(r["metric"]["alertname"], r["metric"].get("agent") or r["metric"].get("workflow"),
                     r["metric"]["alertstate"]) for r in rows}

        expected = {("OrchestratorAgentErrorBudgetBurnFast", "coder", "firing"),
                    ("OrchestratorWorkflowErrorBudgetBurnFast", "hotfix", "firing"),
                    ("OrchestratorAgentHighErrorRatio", "coder", "pending"),
                    ("OrchestratorTimeToFirstTokenSlow", "coder", "pending"),
                    ("OrchestratorAgentQualityLow", "coder", "pending"),
                    ("OrchestratorCircuitBreakerOpen", "coder", "pending"),
                    ("OrchestratorEventsRejected", None, "pending"),
                    ("OrchestratorSpansNotForwarded", None, "pending")}
        alerts = api.wait_until("ALERTS", lambda rows: expected <= states(rows), timeout=30)
        assert not any(subject in ("planner", "feature") for _, subject, _ in states(alerts)), alerts
        assert all(rule.get("health") == "ok" for g in api.rules() for rule in g["rules"]), api.rules()
