"""A real Prometheus loads the rendered rules, scrapes a fed exporter, and every recording rule returns data."""

import random
import threading

import pytest

from agent_exporter import Telemetry, stack
from agent_exporter.config import Config
from agent_exporter.render import rules

pytestmark = pytest.mark.integration


def feed(tel: Telemetry, stop: threading.Event) -> None:
    """A steady mixed workload: every series the rules read keeps moving."""
    rng = random.Random(7)
    while not stop.wait(0.05):
        for agent in ("planner", "coder"):
            tel.record({"type": "agent_execution", "agent": agent, "model": "gpt-4o",
                        "status": "error" if rng.random() < 0.2 else "success",
                        "error_type": "Timeout", "duration_seconds": rng.lognormvariate(0, 1),
                        "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.01})
        tel.record({"type": "tool_call", "tool": "web_search", "duration_seconds": rng.random(),
                    "status": "error" if rng.random() < 0.1 else "success"})


@pytest.fixture
def fed_exporter():
    tel = Telemetry()
    handle = tel.serve("127.0.0.1:0")
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(tel, stop), daemon=True)
    feeder.start()
    yield handle
    stop.set()
    feeder.join(timeout=5)
    handle.stop()
    tel.shutdown()


def test_every_recording_rule_returns_data(tmp_path, fed_exporter):
    rules.render_prometheus(Config(), tmp_path)
    prometheus_dir = tmp_path / "prometheus"
    config = f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {prometheus_dir}/rules/*.yml
scrape_configs:
  - job_name: {rules.JOB}
    static_configs:
      - targets: ["127.0.0.1:{fed_exporter.port}"]
"""
    with stack.start_prometheus(tmp_path / "run", config) as process:
        api = stack.PrometheusAPI(process.url)
        loaded = {r["name"] for g in api.rules() for r in g["rules"]}
        assert set(rules.recording_rule_names()) <= loaded
        assert set(rules.alert_names(Config())) <= loaded
        for name in dict.fromkeys(rules.recording_rule_names()):
            result = api.wait_until(name, lambda rows: len(rows) > 0, timeout=60)
            assert all(row["value"][1] not in ("NaN", "+Inf", "-Inf") for row in result), (name, result)
        ratios = {r["metric"]["agent"] for r in api.query(rules.error_ratio_rule("5m"))}
        assert ratios == {"planner", "coder"}
        quantiles = {r["metric"]["quantile"] for r in api.query(rules.LATENCY_QUANTILE_RULE)}
        assert quantiles == {"0.5", "0.95", "0.99"}
        # Every rule group evaluates without errors.
        assert all(rule.get("health") == "ok" for g in api.rules() for rule in g["rules"]), api.rules()
