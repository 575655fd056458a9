"""Metrics recorded through the OpenTelemetry API appear on the same /metrics as the store's."""

import urllib.request

import pytest
from opentelemetry import metrics
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import catalog
from agent_exporter.config import Config, MetricsConfig
from agent_exporter.telemetry import Telemetry

pytestmark = pytest.mark.integration


def samples(text: str, openmetrics: bool = False) -> dict:
    parse = parse_openmetrics if openmetrics else parse_text
    return {(s.name, frozenset(s.labels.items())): s.value for f in parse(text) for s in f.samples}


@pytest.fixture
def tel():
    telemetry = Telemetry(Config(metrics=MetricsConfig(max_series=3)), otel_metrics=True)
    yield telemetry
    telemetry.shutdown()


def record_genai_metrics(meter_provider) -> None:
    """What a GenAI instrumentation library records through the OTel metrics API."""
    meter = meter_provider.get_meter("opentelemetry.instrumentation.openai_v2", "2.1b0")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}",
                                    description="Measures number of input and output tokens used")
    tokens.record(1200, {"gen_ai.operation.name": "chat", "gen_ai.token.type": "input"})
    tokens.record(300, {"gen_ai.operation.name": "chat", "gen_ai.token.type": "output"})
    calls = meter.create_counter("gen_ai.client.calls", description="LLM calls")
    calls.add(2, {"gen_ai.request.model": "gpt-4o"})


@pytest.mark.parametrize("openmetrics", [False, True])
def test_otel_metrics_share_the_metrics_body_with_the_store(tel, openmetrics):
    with tel.agent_execution("planner"):
        pass
    record_genai_metrics(tel.meter_provider)

    body = tel.render(openmetrics).decode()
    got = samples(body, openmetrics)
    assert got[(catalog.AGENT_EXECUTIONS.name, frozenset({"agent": "planner", "status": "success"}.items()))] == 1
    chat_input = frozenset({"gen_ai_operation_name": "chat", "gen_ai_token_type": "input"}.items())
    assert got[("gen_ai_client_token_usage_sum", chat_input)] == 1200
    assert got[("gen_ai_client_token_usage_count", chat_input)] == 1
    assert got[("gen_ai_client_calls_total", frozenset({"gen_ai_request_model": "gpt-4o"}.items()))] == 2
    # Scope labels and target_info are off: OTel series look like any other exporter's.
    assert not any(name.startswith("otel_scope") for _, labels in got for name, _ in labels)
    assert not any(name.startswith("target_info") for name, _ in got)
    if openmetrics:
        assert body.count("# EOF") == 1 and body.endswith("# EOF\n")


@pytest.mark.parametrize("accept, openmetrics", [
    ("text/plain", False), ("application/openmetrics-text; version=1.0.0", True)])
def test_served_metrics_carry_the_otel_series(tel, accept, openmetrics):
    handle = tel.serve("127.0.0.1:0")
    try:
        with tel.agent_execution("planner"):
            pass
        record_genai_metrics(tel.meter_provider)
        request = urllib.request.Request(f"http://127.0.0.1:{handle.port}/metrics", headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode()
    finally:
        handle.stop()
    names = {name for name, _ in samples(body, openmetrics)}
    assert {catalog.AGENT_EXECUTIONS.name, "gen_ai_client_calls_total", "gen_ai_client_token_usage_sum"} <= names


def test_the_registry_serves_both_too(tel):
    with tel.agent_execution("planner"):
        pass
    record_genai_metrics(tel.meter_provider)
    names = {name for name, _ in samples(generate_latest(tel.registry).decode())}
    assert {catalog.AGENT_EXECUTIONS.name, "gen_ai_client_calls_total"} <= names


def test_otel_series_are_capped_like_ours(tel):
    calls = tel.meter_provider.get_meter("lib").create_counter("lib.calls")
    for i in range(10):
        calls.add(1, {"model": f"m{i}"})
    series = {labels: v for (name, labels), v in samples(tel.render().decode()).items()
              if name == "lib_calls_total"}
    # max_series=3 label sets, then one overflow series holding the rest.
    assert len(series) == 4
    overflow = [v for labels, v in series.items() if ("otel_metric_overflow", "true") in labels]
    assert overflow == [7]


def test_global_meter_provider_feeds_our_metrics():
    tel = Telemetry(otel_metrics=True, global_meter_provider=True)
    try:
        assert metrics.get_meter_provider() is tel.meter_provider
        metrics.get_meter("autoinstrumented").create_counter("agent.calls").add(5)
        assert samples(tel.render().decode())[("agent_calls_total", frozenset())] == 5
    finally:
        tel.shutdown()
