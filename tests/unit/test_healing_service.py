"""The healing endpoints with the real AlertRemediator behind the HTTP server (loopback, ephemeral port)."""

import requests
from prometheus_client.parser import text_string_to_metric_families

from agent_exporter import catalog
from agent_exporter.config import Config, HealingConfig
from agent_exporter.healing import AlertRemediator, Healer
from agent_exporter.server import Service, start_server
from agent_exporter.telemetry import Telemetry

from alertmanager_webhook import notification


def breaker_gauge(url, agent):
    text = requests.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == catalog.CIRCUIT_BREAKER_STATE.name and sample.labels.get("agent") == agent:
                return sample.value
    return None


def test_webhook_opens_the_breaker_the_healer_uses_and_its_resolution_lets_it_probe():
    config = Config(healing=HealingConfig(fallbacks={"coder": ("coder-lite",)}))
    telemetry = Telemetry(config)
    remediator = AlertRemediator(config, telemetry)
    healer = Healer.from_config(config, telemetry, remediator=remediator)
    try:
        with start_server(Service(telemetry, remediator=remediator), "127.0.0.1:0") as handle:
            assert requests.get(handle.url + "/v1/agents", timeout=10).json()["agents"]["coder"][
                "circuit_state"] == "closed"

            opened = requests.post(handle.url + "/v1/alertmanager", json=notification("firing"), timeout=10)
            assert opened.status_code == 200 and opened.json()["opened"] == ["coder"]
            agents = requests.get(handle.url + "/v1/agents", timeout=10).json()["agents"]
            assert agents["coder"]["circuit_state"] == "open" and agents["coder"]["forced"] is True
            assert breaker_gauge(handle.url, "coder") == catalog.CIRCUIT_STATE_VALUES["open"]
            # the orchestrator's traffic moves to the fallback
            assert healer.run("coding", ("coder",), lambda agent: agent) == "coder-lite"

            malformed = notification("resolved")
            del malformed["alerts"][0]["fingerprint"]
            bad = requests.post(handle.url + "/v1/alertmanager", json=malformed, timeout=10)
            assert bad.status_code == 400 and "fingerprint" in bad.json()["error"]
            assert requests.get(handle.url + "/v1/agents", timeout=10).json()["agents"]["coder"][
                "circuit_state"] == "open"

            released = requests.post(handle.url + "/v1/alertmanager", json=notification("resolved"), timeout=10)
            assert released.status_code == 200 and released.json()["released"] == ["coder"]
            assert requests.get(handle.url + "/v1/agents", timeout=10).json()["agents"]["coder"][
                "circuit_state"] == "half_open"
            assert breaker_gauge(handle.url, "coder") == catalog.CIRCUIT_STATE_VALUES["half_open"]
            # the healer's calls probe the agent; once they succeed it is closed
            for _ in range(config.healing.breaker_half_open_probes):
                assert healer.run("coding", ("coder",), lambda agent: agent) == "coder"
            assert requests.get(handle.url + "/v1/agents", timeout=10).json()["agents"]["coder"][
                "circuit_state"] == "closed"
            assert breaker_gauge(handle.url, "coder") == catalog.CIRCUIT_STATE_VALUES["closed"]
    finally:
        telemetry.shutdown()
