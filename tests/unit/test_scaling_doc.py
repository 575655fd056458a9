"""The configs in docs/scaling.md are valid: promtool, amtool, the config loader.

Fenced blocks say what they are in their info string (```yaml prometheus); each
kind is checked with the tool that owns the format.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from binaries import binary

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "scaling.md"


def blocks(kind: str) -> list[str]:
    found = re.findall(rf"^```yaml {kind}\n(.*?)^```$", DOC.read_text(), re.M | re.S)
    assert found, f"docs/scaling.md has no `yaml {kind}` block"
    return found


def run(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([binary(name), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("index", range(len(blocks("prometheus"))))
def test_prometheus_configs_pass_promtool(index, tmp_path):
    text = blocks("prometheus")[index]
    config = yaml.safe_load(text)
    # Lay out what the config refers to, so promtool checks the rules and targets too.
    shutil.copytree(REPO / "prometheus" / "rules", tmp_path / "rules")
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            for pattern in sd["files"]:
                target = tmp_path / pattern.replace("*", "example")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps([{"targets": ["10.0.0.7:9464"]}]))
    (tmp_path / "prometheus.yml").write_text(text)
    result = run("promtool", "check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr
    assert "rules/" in result.stdout  # the repository's rule files were found and checked


def test_prometheus_ha_replicas_drop_their_replica_label_from_alerts():
    for text in blocks("prometheus"):
        config = yaml.safe_load(text)
        replica_labels = {k for k in config["global"]["external_labels"] if "replica" in k}
        assert len(replica_labels) == 1, "an HA replica needs exactly one replica label"
        dropped = {r["regex"] for r in config["alerting"]["alert_relabel_configs"]
                   if r["action"] == "labeldrop"}
        assert replica_labels <= dropped, "alerts would differ per replica and never deduplicate"
        assert all(rw.get("send_exemplars") for rw in config["remote_write"])


def test_alertmanager_configs_pass_amtool(tmp_path):
    for index, text in enumerate(blocks("alertmanager")):
        path = tmp_path / f"alertmanager-{index}.yml"
        path.write_text(text)
        result = run("amtool", "check-config", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_exporter_configs_load(tmp_path):
    from agent_exporter.config import load_config

    for index, text in enumerate(blocks("agent-exporter")):
        path = tmp_path / f"observability-{index}.yaml"
        path.write_text(text)
        config = load_config(path)
        document = yaml.safe_load(text)["observability"]
        if "tracing" in document:
            assert config.tracing.export_to_otlp
        if "healing" in document:             # the fleet block: every source it names is polled
            fleet = config.healing.fleet
            assert len(fleet.alertmanager.urls) == 3 and fleet.prometheus.url
            assert fleet.alertmanager.auth.bearer_token_file and fleet.prometheus.auth.password_file


def test_the_fleet_queries_in_the_doc_are_the_ones_the_code_sends():
    from agent_exporter.config import Config
    from agent_exporter.healing.fleet_stats import Queries

    text = DOC.read_text()
    config = Config()
    for query in Queries.over(config.healing.fleet.prometheus.window, config.alerting.job):
        assert f"`{query}`" in text


def test_collector_pipelines_name_only_defined_components():
    for text in blocks("otelcol"):
        config = yaml.safe_load(text)
        pipelines = config["service"]["pipelines"]
        assert pipelines
        for name, pipeline in pipelines.items():
            for section in ("receivers", "processors", "exporters"):
                undefined = set(pipeline.get(section, [])) - set(config.get(section) or {})
                assert not undefined, f"pipeline {name} names undefined {section}: {undefined}"
