"""Extreme but accepted values survive the exposition: both parsers, promtool (text) and a real
Prometheus read back exactly what was recorded."""

import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import Telemetry, stack
from agent_exporter.render.prometheus import prometheus_config

pytestmark = pytest.mark.integration

# Quote, backslash, newline, emoji, non-ASCII, and the longest name events accept (128).
AGENT = ('a"b\\c\nd 😀 é' + "x" * 128)[:128]
MODEL = 'm"\\\n'
HUGE_TOKENS = 10**15
ODD_TOKENS = 123456789


def _record_extremes(tel):
    tel.record({"type": "agent_execution", "agent": AGENT, "status": "success", "model": MODEL,
                "duration_seconds": 1e-9, "input_tokens": HUGE_TOKENS, "output_tokens": ODD_TOKENS})
    tel.record({"type": "agent_execution", "agent": "slow", "status": "success", "duration_seconds": 1e9})


def _tokens(samples):
    return {s.labels["type"]: s.value for s in samples
            if s.name == "orchestrator_llm_tokens_total" and s.labels.get("agent") == AGENT}


@pytest.mark.parametrize("openmetrics", [False, True])
def test_extreme_values_parse_back_exactly(openmetrics):
    tel = Telemetry()
    try:
        _record_extremes(tel)
        body = tel.render(openmetrics=openmetrics).decode()
    finally:
        tel.shutdown()
    parse = parse_openmetrics if openmetrics else parse_text
    samples = [s for family in parse(body) for s in family.samples]
    assert _tokens(samples) == {"input": HUGE_TOKENS, "output": ODD_TOKENS}
    assert {s.labels.get("model") for s in samples if s.labels.get("agent") == AGENT} >= {MODEL}


def test_promtool_accepts_text_with_extreme_values():
    tel = Telemetry()
    try:
        _record_extremes(tel)
        body = tel.render(openmetrics=False)
    finally:
        tel.shutdown()
    result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode()


@pytest.fixture
def served(tmp_path):
    tel = Telemetry()
    handle = tel.serve("127.0.0.1:0")
    config = prometheus_config([f"127.0.0.1:{handle.port}"], scrape_interval="1s", evaluation_interval="1s")
    try:
        with stack.start_prometheus(tmp_path, config) as process:
            yield tel, stack.PrometheusAPI(process.url)
    finally:
        handle.stop()
        tel.shutdown()


def test_prometheus_stores_extreme_values_exactly(served):
    tel, prometheus = served
    _record_extremes(tel)
    rows = prometheus.wait_until('orchestrator_llm_tokens_total{job="agent-exporter"}',
                                 lambda rows: len(rows) == 2, timeout=30)
    assert {(r["metric"]["agent"], r["metric"]["model"], r["metric"]["type"], float(r["value"][1]))
            for r in rows} == {(AGENT, MODEL, "input", HUGE_TOKENS), (AGENT, MODEL, "output", ODD_TOKENS)}
    sums = prometheus.query('orchestrator_agent_execution_duration_seconds_sum{job="agent-exporter"}')
    assert {r["metric"]["agent"]: float(r["value"][1]) for r in sums} == {AGENT: 1e-9, "slow": 1e9}
