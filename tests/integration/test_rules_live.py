"""A real Prometheus runs the rendered prometheus.yml and rules against the exporter's HTTP
service, fed with events over POST /v1/events: every recording rule returns data, and the
alerts see what the events describe."""

import json
import random
import threading
import urllib.request

import pytest
import yaml

from agent_exporter import Telemetry, stack
from agent_exporter.config import Config
from agent_exporter.render import rules
from agent_exporter.server import Service, start_server

pytestmark = pytest.mark.integration

AGENTS = {"planner": 0.0, "coder": 0.5}          # error ratio per agent: coder is having an incident


def batch(rng: random.Random) -> bytes:
    """NDJSON: executions of both agents, tool calls, coder's breaker open, and one malformed event."""
    events = []
    for _ in range(5):
        for agent, error_ratio in AGENTS.items():
            failed = rng.random() < error_ratio
            events.append({"type": "agent_execution", "agent": agent, "model": "gpt-4o",
                           "status": "error" if failed else "success", "error_type": "Timeout" if failed else None,
                           "duration_seconds": rng.lognormvariate(0, 1), "input_tokens": 100,
                           "output_tokens": 20, "cost_usd": 0.01})
        events.append({"type": "tool_call", "tool": "web_search", "duration_seconds": rng.random(),
                       "status": "error" if rng.random() < 0.1 else "success"})
    events.append({"type": "circuit_state", "agent": "coder", "state": "open"})
    events.append({"type": "agent_execution", "agent": "planner"})          # no status: rejected
    return b"\n".join(json.dumps({k: v for k, v in e.items() if v is not None}).encode() for e in events)


def feed(url: str, stop: threading.Event) -> None:
    rng = random.Random(7)
    while not stop.wait(0.25):
        request = urllib.request.Request(url + "/v1/events", data=batch(rng), method="POST",
                                         headers={"Content-Type": "application/x-ndjson"})
        urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def fed_exporter():
    telemetry = Telemetry(Config())
    handle = start_server(Service(telemetry), "127.0.0.1:0")
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(handle.url, stop), daemon=True)
    feeder.start()
    yield handle
    stop.set()
    feeder.join(timeout=10)
    handle.stop()
    telemetry.shutdown()


def live_config(rendered: str, exporter_port: int) -> str:
    """The rendered prometheus.yml with one-second intervals, this test's exporter as the
    target, and no Alertmanager; rule_files stay as rendered (relative to the file)."""
    document = yaml.safe_load(rendered)
    document["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    del document["alerting"]
    exporter_job = next(job for job in document["scrape_configs"] if job["job_name"] == rules.JOB)
    exporter_job["static_configs"] = [{"targets": [f"127.0.0.1:{exporter_port}"]}]
    document["scrape_configs"] = [exporter_job]
    return yaml.safe_dump(document)


def values(rows: list[dict]) -> list[str]:
    return [row["value"][1] for row in rows]


def test_rendered_rules_evaluate_on_a_fed_exporter(tmp_path, fed_exporter):
    config = Config()
    rules.render_prometheus(config, tmp_path)
    prometheus_dir = tmp_path / "prometheus"
    text = live_config((prometheus_dir / "prometheus.yml").read_text(), fed_exporter.port)
    with stack.start_prometheus(prometheus_dir, text) as process:
        api = stack.PrometheusAPI(process.url)
        loaded = {r["name"] for g in api.rules() for r in g["rules"]}
        assert loaded == set(rules.recording_rule_names()) | set(rules.alert_names(config))

        for name in dict.fromkeys(rules.recording_rule_names()):
            result = api.wait_until(name, lambda rows: len(rows) > 0, timeout=30)
            assert all(v not in ("NaN", "+Inf", "-Inf") for v in values(result)), (name, result)
        for window in rules.SLI_WINDOWS:
            ratios = {r["metric"]["agent"]: float(r["value"][1]) for r in api.query(rules.error_ratio_rule(window))}
            assert set(ratios) == set(AGENTS) and ratios["planner"] == 0 and 0.2 < ratios["coder"] < 0.8, ratios
        quantiles = {r["metric"]["quantile"] for r in api.query(rules.LATENCY_QUANTILE_RULE)}
        assert quantiles == {"0.5", "0.95", "0.99"}
        token_types = {r["metric"]["type"] for r in api.query(rules.TOKENS_RULE)}
        assert token_types == {"input", "output"}

        # The exporter is up and identifies itself: neither exporter alert has anything to say.
        assert api.query(f'up{{job="{rules.JOB}"}} == 0') == []
        assert api.query(f'absent({rules.BUILD_INFO}{{job="{rules.JOB}"}})') == []

        # Coder's incident: the fast burn (no `for:`) fires, the error-ratio, breaker and
        # rejection alerts wait out their `for:`; planner stays clear of all of them.
        def states(rows):
            return {(r["metric"]["alertname"], r["metric"].get("agent"), r["metric"]["alertstate"]) for r in rows}

        expected = {("OrchestratorAgentErrorBudgetBurnFast", "coder", "firing"),
                    ("OrchestratorAgentHighErrorRatio", "coder", "pending"),
                    ("OrchestratorCircuitBreakerOpen", "coder", "pending"),
                    ("OrchestratorEventsRejected", None, "pending")}
        alerts = api.wait_until("ALERTS", lambda rows: expected <= states(rows), timeout=30)
        assert not any(agent == "planner" for _, agent, _ in states(alerts)), alerts
        assert all(rule.get("health") == "ok" for g in api.rules() for rule in g["rules"]), api.rules()
