"""A real Prometheus scrapes an embedded `Telemetry.serve()`: series and exemplars come back."""

import time

import pytest

from agent_exporter import Telemetry, stack
from agent_exporter.render.prometheus import prometheus_config

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def telemetry():
    tel = Telemetry()
    handle = tel.serve("127.0.0.1:0")
    yield tel, handle
    handle.stop()
    tel.shutdown()


@pytest.fixture
def prometheus(tmp_path, telemetry):
    _, handle = telemetry
    config = prometheus_config([f"127.0.0.1:{handle.port}"], scrape_interval="1s", evaluation_interval="1s")
    with stack.start_prometheus(tmp_path, config) as process:
        yield stack.PrometheusAPI(process.url)


def test_prometheus_scrapes_series_and_exemplars(telemetry, prometheus):
    tel, _ = telemetry
    start = time.time() - 60
    for i in range(5):
        tel.record({"type": "agent_execution", "agent": "planner", "status": "success",
                    "duration_seconds": 0.3 + i, "model": "gpt-4o", "input_tokens": 100,
                    "trace_id": TRACE_ID})
    tel.record({"type": "agent_execution", "agent": "planner", "status": "error",
                "duration_seconds": 12, "error_type": "Timeout"})

    result = prometheus.wait_until(
        'orchestrator_agent_executions_total{job="agent-exporter"}',
        lambda rows: len(rows) == 2, timeout=30)
    by_status = {row["metric"]["status"]: float(row["value"][1]) for row in result}
    assert by_status == {"success": 5.0, "error": 1.0}

    errors = prometheus.query('orchestrator_agent_errors_total{agent="planner"}')
    assert [(r["metric"]["error_type"], float(r["value"][1])) for r in errors] == [("Timeout", 1.0)]

    exemplars = stack.wait_for(lambda: prometheus.query_exemplars(
        "orchestrator_agent_execution_duration_seconds_bucket", start, time.time() + 60),
        timeout=30, interval=0.5, what="exemplars in Prometheus")
    trace_ids = {e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]}
    assert trace_ids == {TRACE_ID}
    # The exemplar sits on the bucket of the observation it came from.
    observed = {float(e["value"]) for series in exemplars for e in series["exemplars"]}
    assert observed <= {0.3 + i for i in range(5)}
