"""The legacy singletons run on the legacy config file, and the tracer is OpenTelemetry's global one, as before."""

import json
import logging
import re
import subprocess
import sys

import msgspec
import pytest

from agent_exporter import compat
from agent_exporter.compat import alerting, metrics_collector, tracer
from agent_exporter.compat.alerting import Alert, get_alerting_system
from agent_exporter.compat.metrics_collector import get_metrics_collector
from agent_exporter.config import Config

from legacy_config import LEGACY_CONFIG_FILE, LEGACY_YAML

# A legacy application, as the seed writes it (imports changed).
LEGACY_APPLICATION = """
from opentelemetry import trace
from agent_exporter.compat.tracer import get_tracer

tracer = get_tracer()
with tracer.tracer.start_as_current_span("orchestrator.execute_request") as span:
    span.set_attribute("request", "add login")
    with trace.get_tracer("orchestrator.main").start_as_current_span("elsewhere"):
        pass
"""


def test_a_legacy_application_prints_its_spans_as_its_config_says(tmp_path):
    config = tmp_path / LEGACY_CONFIG_FILE
    config.parent.mkdir(parents=True)
    config.write_text(LEGACY_YAML.replace("observability:\n", "observability:\n  service_name: magnus\n", 1))
    # A process of its own: OpenTelemetry's global provider is set once per process, and the
    # console exporter writes to the stdout the process started with (spans flushed at exit).
    run = subprocess.run([sys.executable, "-c", LEGACY_APPLICATION], cwd=tmp_path, capture_output=True, text=True,
                         check=True, timeout=60)
    printed = [json.loads(span) for span in re.findall(r"^\{$.*?^\}$", run.stdout, re.M | re.S)]
    # export_to_console: true, and spans of the global API go where the legacy tracer's go, as before.
    assert sorted(span["name"] for span in printed) == ["elsewhere", "orchestrator.execute_request"]
    assert {span["resource"]["attributes"]["service.name"] for span in printed} == {"magnus"}


@pytest.mark.parametrize("set_in_file", [False, True])
def test_legacy_spans_keep_the_legacy_service_unless_the_file_names_one(legacy_process, set_in_file):
    # The legacy tracer's resource: Jaeger searches by service.name keep finding its traces.
    text = LEGACY_YAML.replace("export_to_console: true", "export_to_console: false")
    if set_in_file:
        text = text.replace("observability:\n", "observability:\n  service_name: magnus\n", 1)
    legacy_process.write_text(text)
    resource = tracer.get_tracer().provider.resource.attributes
    expected = ("magnus", compat.LEGACY_SERVICE["service_version"]) if set_in_file else (
        "magnus-orchestrator", "2.0")
    assert (resource["service.name"], resource["service.version"]) == expected


@pytest.fixture
def legacy_process(tmp_path, monkeypatch):
    """No legacy singletons yet, the working directory a legacy application's.  Returns where its
    config file goes."""
    monkeypatch.setattr(compat, "_default", None)
    monkeypatch.setattr(tracer, "_tracer_instance", None)
    monkeypatch.setattr(metrics_collector, "_collector_instance", None)
    monkeypatch.setattr(alerting, "_alerting_system", None)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / LEGACY_CONFIG_FILE
    path.parent.mkdir(parents=True)
    yield path
    if compat._default is not None:
        compat._default.shutdown()


def test_the_legacy_config_can_turn_the_metrics_off(legacy_process):
    legacy_process.write_text(LEGACY_YAML.replace("metrics:\n    enabled: true", "metrics:\n    enabled: false")
                              .replace("export_to_console: true", "export_to_console: false"))
    collector = get_metrics_collector()
    collector.record_agent_execution("planner", 1200.0, True, 1500, 0.03)
    assert b"orchestrator_agent_executions_total" not in collector.telemetry.render()
    assert collector.get_summary()["total_executions"] == 1      # the legacy numbers stay


def test_an_unreadable_legacy_config_means_the_defaults_loudly(legacy_process, caplog):
    legacy_process.write_text("observability: [not, a, mapping]\n")
    with caplog.at_level(logging.WARNING):
        collector = get_metrics_collector()       # no exception the legacy collector did not raise
    assert collector.telemetry.config == Config(**compat.LEGACY_SERVICE)
    assert "using defaults: observability: expected a mapping" in caplog.text


def test_a_legacy_key_that_does_not_validate_takes_its_default_and_the_rest_applies(legacy_process, caplog):
    # The legacy file says to fill in the Slack webhook URL, which is refused in a config (secrets go
    # in files): that key alone is dropped, and what the file turns off stays off.
    legacy_process.write_text(
        LEGACY_YAML.replace("sampling_rate: 1.0", "sampling_rate: 2")
        .replace("  tracing:\n    enabled: true", "  tracing:\n    enabled: false")
        .replace("  alerting:\n    enabled: true", "  alerting:\n    enabled: false")
        .replace("    collection_interval: 60  # seconds\n",
                 "    collection_interval: 60  # seconds\n    prices:\n      gpt-4.1: {input: -1, output: 8}\n"
                 "      o3: {input: 2, output: 8}\n")
        + '    slack:\n      webhook_url: "https://hooks.slack.com/services/T000/B000/XXXX"\n')
    with caplog.at_level(logging.WARNING):
        config = compat.load_legacy_config(legacy_process)
        system = get_alerting_system()
    assert (config.tracing.enabled, config.alerting.enabled, config.tracing.sampling_rate) == (False, False, 1.0)
    assert set(config.metrics.prices) == {"o3"}
    assert config.alerting.channels == ("log",)
    assert system.send_alert(Alert("critical", "x", "y")) is False
    dropped = [r.getMessage() for r in caplog.records if "takes its default" in r.getMessage()]
    assert len(dropped) == 4 * 2          # each key named (the price, then its model), by both readers
    assert all("hooks.slack.com" not in line for line in caplog.text.splitlines())
    assert any("observability.metrics.prices.gpt-4.1.input" in line for line in dropped)


def test_the_legacy_alerting_reads_the_same_file(legacy_process):
    # The seed's alerting section, and where its Alertmanager is.
    legacy_process.write_text(LEGACY_YAML + '    alertmanager_url: "http://alertmanager:9093/"\n')
    system = get_alerting_system()
    # As in the legacy package, its config is the alerting section as a dict.
    assert system.config == msgspec.json.decode(msgspec.json.encode(get_metrics_collector().telemetry.config.alerting))
    assert system.config["channels"] == ["log"]
    assert system.alertmanager_url == "http://alertmanager:9093"
    system.config["enabled"] = False                # legacy code turned alerting off this way
    assert system.send_alert(Alert("critical", "x", "y")) is False
