"""prometheus/: prometheus.yml, the rule files and their promtool tests.

`prometheus_config` is the one builder of a prometheus.yml: `render` writes the
compose stack's with it, and the demo, the integration tests and the benchmarks
build theirs with it, for their own targets, rule files and intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from ..config import AlertingConfig, Config
from .common import HEADER, dump_yaml, scrape_interval
from .rule_tests import rule_tests
from .rules import alert_rules, recording_rules, write_rules

EXEMPLARS_NOTE = """\
#
# Exemplars (trace ids on histogram buckets) are stored only when Prometheus
# runs with --enable-feature=exemplar-storage; storage.exemplars sizes that store.
# Rule files are relative to this file.
"""

# Where the compose stack's Alertmanager and Prometheus listen (docker-compose.yml); the
# exporter is where alerting.exporter_url says, agent-exporter:9464 in the stack.
STACK_ALERTMANAGER = "alertmanager:9093"
STACK_PROMETHEUS = "localhost:9090"
RULE_FILES = ("rules/*.rules.yml", "rules/*.alerts.yml")


def prometheus_config(exporters: Sequence[str], *, job: str = AlertingConfig().job,
                      exporter_labels: Mapping[str, Mapping[str, str]] | None = None,
                      alertmanagers: Sequence[str] = (), rule_files: Sequence[str] = (),
                      scrape_interval: str = "15s", evaluation_interval: str = "30s",
                      scrape_self: str | None = None, max_exemplars: int | None = None,
                      scheme: str = "http", metrics_path: str = "/metrics",
                      basic_auth: Mapping[str, str] | None = None, ca_file: str = "") -> str:
    """prometheus.yml: scrape `exporters` (host:port) as `job`, evaluate `rule_files`
    (paths or globs, relative to the file), send alerts to `alertmanagers`.

    `exporter_labels` gives target labels per exporter (the grouping labels, say
    environment); `scrape_self` a Prometheus to scrape as job `prometheus`;
    `max_exemplars` sizes the exemplar store; `scheme` and `metrics_path` say how
    the exporters serve /metrics (behind TLS, under a mount path), `basic_auth`
    (username, password_file) and `ca_file` how to get past their web config.
    """
    labels = exporter_labels or {}
    unknown = set(labels) - set(exporters)
    if unknown:
        raise ValueError(f"exporter_labels for targets that are not exporters: {sorted(unknown)}")
    static_configs: list[dict] = []
    for target in exporters:
        target_labels = dict(labels.get(target, {}))
        same = next((c for c in static_configs if c.get("labels", {}) == target_labels), None)
        if same is None:
            same = {"targets": []}
            if target_labels:
                same["labels"] = target_labels
            static_configs.append(same)
        same["targets"].append(target)
    document: dict = {"global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval}}
    if max_exemplars is not None:
        document["storage"] = {"exemplars": {"max_exemplars": max_exemplars}}
    if alertmanagers:
        document["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    if rule_files:
        document["rule_files"] = list(rule_files)
    scrape: dict = {"job_name": job}
    if scheme != "http":
        scrape["scheme"] = scheme
    if metrics_path != "/metrics":
        scrape["metrics_path"] = metrics_path
    if basic_auth:
        scrape["basic_auth"] = dict(basic_auth)
    if ca_file:
        scrape["tls_config"] = {"ca_file": ca_file}
    document["scrape_configs"] = [{**scrape, "static_configs": static_configs}]
    if scrape_self:
        document["scrape_configs"].append({"job_name": "prometheus", "static_configs": [{"targets": [scrape_self]}]})
    return dump_yaml(document)


def stack_prometheus_config(config: Config) -> str:
    """The compose stack's prometheus.yml (prometheus/prometheus.yml).  It scrapes the exporter
    where Alertmanager reaches it (alerting.exporter_url: host, port, scheme, mount path), and the
    target carries alerting.deployment_labels, so this deployment's alerts carry them and its
    self-healing acts on them."""
    url = urlsplit(config.alerting.exporter_url)
    auth = config.alerting.exporter_auth
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    exporter = f"{host}:{url.port or (443 if url.scheme == 'https' else 80)}"
    deployment = dict(config.alerting.deployment_labels)
    return prometheus_config(
        [exporter], job=config.alerting.job,
        exporter_labels={exporter: deployment} if deployment else None,
        alertmanagers=[STACK_ALERTMANAGER] if config.alerting.enabled else [], rule_files=RULE_FILES,
        scrape_interval=scrape_interval(config), evaluation_interval=config.alerting.evaluation_interval,
        scrape_self=STACK_PROMETHEUS, max_exemplars=100_000,
        scheme=url.scheme, metrics_path=url.path.rstrip("/") + "/metrics",
        basic_auth={"username": auth.username, "password_file": auth.password_file} if auth.username else None,
        ca_file=auth.ca_file)


def render_prometheus(config: Config, out_dir: Path) -> list[Path]:
    """Write prometheus/prometheus.yml, prometheus/rules/*.yml and prometheus/tests/*.yml under out_dir."""
    base = Path(out_dir) / "prometheus"
    recording, alerts = recording_rules(config), alert_rules(config)
    written = [_write(base / "prometheus.yml", HEADER + EXEMPLARS_NOTE + stack_prometheus_config(config))]
    written += write_rules(base / "rules", recording, alerts)
    written += [_write(base / "tests" / name, HEADER + dump_yaml(document))
                for name, document in rule_tests(config, recording, alerts).items()]
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
