"""End to end with the real binaries: events → exporter → Prometheus → Alertmanager → Slack and SMTP sinks."""

import json
import threading
import time
import urllib.request
from dataclasses import replace

import pytest

from agent_exporter import Telemetry, stack
from agent_exporter.config import Config
from agent_exporter.render import alertmanager as am
from agent_exporter.render import rules
from agent_exporter.sinks import SlackSink, SMTPSink

pytestmark = pytest.mark.integration

ALERT = "OrchestratorAgentHighErrorRatio"


def fast_config(slack_url_file, smtp_port) -> Config:
    """Default thresholds, with windows short enough for a test."""
    base = Config()
    alerting = replace(
        base.alerting, rate_window="10s", alert_for="1s", remediation_alerts=(),
        email=replace(base.alerting.email, smtp_server="127.0.0.1", smtp_port=smtp_port,
                      to_addresses=("oncall@example.com",)),
        slack=replace(base.alerting.slack, webhook_url_file=str(slack_url_file)))
    return replace(base, alerting=alerting)


def alertmanager_yaml(config: Config) -> str:
    document = am.alertmanager_config(config)
    document["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    return rules.dump_yaml(document)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Pipeline:
    """Exporter, Prometheus, one or two Alertmanagers and the sinks, all on loopback."""

    def __init__(self, tmp_path, alertmanagers: int = 1):
        self.tmp_path = tmp_path
        self.slack, self.smtp = SlackSink().start(), SMTPSink().start()
        self.tel = Telemetry()
        self.exporter = self.tel.serve("127.0.0.1:0")
        (tmp_path / "slack_url").write_text(self.slack.url)
        config = fast_config(tmp_path / "slack_url", self.smtp.port)
        am.render_alertmanager(config, tmp_path / "am-render")
        self.am_yaml = alertmanager_yaml(config).replace(
            f"templates/{am.TEMPLATE_NAME}",
            str(tmp_path / "am-render" / "alertmanager" / "templates" / am.TEMPLATE_NAME))
        self.am_ports = [stack.free_port() for _ in range(alertmanagers)]
        self.cluster_ports = [stack.free_port() for _ in range(alertmanagers)] if alertmanagers > 1 else []
        self.alertmanagers = [self.start_alertmanager(i) for i in range(alertmanagers)]
        rules.render_prometheus(config, tmp_path / "render")
        targets = ", ".join(f'"127.0.0.1:{port}"' for port in self.am_ports)
        self.prometheus = stack.start_prometheus(tmp_path / "prom", f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {tmp_path}/render/prometheus/rules/*.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: [{targets}]
scrape_configs:
  - job_name: {rules.JOB}
    static_configs:
      - targets: ["127.0.0.1:{self.exporter.port}"]
""", extra_args=("--rules.alert.resend-delay=1s",))

    def start_alertmanager(self, i: int):
        peers = [f"127.0.0.1:{p}" for j, p in enumerate(self.cluster_ports) if j != i]
        extra = ("--cluster.peer-timeout=2s",) if self.cluster_ports else ()
        return stack.start_alertmanager(self.tmp_path / f"am{i}", self.am_yaml, port=self.am_ports[i],
                                        cluster_port=self.cluster_ports[i] if self.cluster_ports else None,
                                        cluster_peers=peers, extra_args=extra)

    def restart_alertmanager(self, i: int = 0):
        """Stop gracefully (Alertmanager snapshots its notification log) and start on the same storage."""
        self.alertmanagers[i].stop()
        self.alertmanagers[i] = self.start_alertmanager(i)

    def slack_titles(self) -> list[str]:
        return [m["attachments"][0]["title"] for m in self.slack.messages]

    def close(self):
        self.prometheus.stop()
        for process in self.alertmanagers:
            process.stop()
        self.exporter.stop()
        self.tel.shutdown()
        self.slack.stop()
        self.smtp.stop()


@pytest.fixture
def pipeline(tmp_path):
    running = Pipeline(tmp_path)
    yield running.tel, running.slack, running.smtp
    running.close()


@pytest.fixture
def make_pipeline(tmp_path):
    made = []

    def make(**kwargs):
        made.append(Pipeline(tmp_path, **kwargs))
        return made[-1]
    yield make
    for running in made:
        running.close()


class Traffic:
    """Background traffic for agent coder; `failing` makes every other execution fail."""

    def __init__(self, tel: Telemetry):
        self.stop, self.failing = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=run_traffic, args=(tel, self.stop, self.failing), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


FIRING = f"[FIRING:1] {ALERT} · agent coder"
RESOLVED = f"[RESOLVED] {ALERT} · agent coder"


def run_traffic(tel: Telemetry, stop: threading.Event, failing: threading.Event) -> None:
    i = 0
    while not stop.wait(0.02):
        i += 1
        failed = failing.is_set() and i % 2 == 0
        tel.record({"type": "agent_execution", "agent": "coder", "model": "gpt-4o", "duration_seconds": 0.5,
                    "status": "error" if failed else "success", "error_type": "RateLimitError",
                    "input_tokens": 10, "output_tokens": 5})


def test_error_alert_reaches_slack_and_email_then_resolves(pipeline):
    tel, slack, smtp = pipeline
    stop, failing = threading.Event(), threading.Event()
    failing.set()
    traffic = threading.Thread(target=run_traffic, args=(tel, stop, failing), daemon=True)
    traffic.start()
    try:
        # 50 % errors also burns the SLO budget; this test follows the error-ratio alert.
        def slack_with(prefix):
            return [m for m in slack.messages
                    if m["attachments"][0]["title"] in (f"{prefix} {ALERT} · agent coder",)]

        firing = wait_for(lambda: slack_with("[FIRING:1]"), 90, "the firing Slack message")[0]["attachments"][0]
        assert firing["title"] == f"[FIRING:1] {ALERT} · agent coder"
        assert firing["color"] == "danger"
        assert "of coder's executions failed over the last 10s (threshold 5%)." in firing["text"]
        assert "|runbook>" in firing["text"] and "d/orchestrator-agent?var-agent=coder|dashboard>" in firing["text"]

        email = wait_for(lambda: [m for m in smtp.messages if m["Subject"] == f"[FIRING:1] {ALERT} · agent coder"],
                         30, "the email")[0]
        assert email["To"] == "oncall@example.com"
        assert email["Subject"] == f"[FIRING:1] {ALERT} · agent coder"
        html = email.get_body(("html",)).get_content()
        assert ">FIRING<" in html and "Agent coder fails too often." in html

        failing.clear()
        resolved = wait_for(lambda: slack_with("[RESOLVED]"), 90, "the resolved Slack message")[0]["attachments"][0]
        assert resolved["title"] == f"[RESOLVED] {ALERT} · agent coder"
        assert resolved["color"] == "good"
        assert "Resolved: Agent coder fails too often." in resolved["text"]
        wait_for(lambda: [m for m in smtp.messages if m["Subject"] == f"[RESOLVED] {ALERT} · agent coder"],
                 30, "the resolved email")
        # One firing and one resolved message for the group, not a stream of repeats.
        assert len(slack_with("[FIRING:1]")) == 1
    finally:
        stop.set()
        traffic.join(timeout=5)


def test_a_slack_outage_delays_the_message_but_it_arrives_once(make_pipeline):
    running = make_pipeline()
    running.slack.fail_next(4)          # Slack answers 500 to the first four posts
    with Traffic(running.tel) as traffic:
        traffic.failing.set()
        wait_for(lambda: FIRING in running.slack_titles(), 120, "the message after the outage")
        time.sleep(5)                   # retries after success would show up here
    assert running.slack.failures_pending == 0        # the outage was really hit
    assert running.slack_titles().count(FIRING) == 1


def test_an_alertmanager_restart_loses_and_repeats_nothing(make_pipeline):
    running = make_pipeline()
    with Traffic(running.tel) as traffic:
        traffic.failing.set()
        wait_for(lambda: FIRING in running.slack_titles(), 90, "the firing message")
        running.restart_alertmanager()
        time.sleep(5)                   # Prometheus re-sends the firing alert to the new process
        assert running.slack_titles().count(FIRING) == 1
        traffic.failing.clear()
        wait_for(lambda: RESOLVED in running.slack_titles(), 90, "the resolved message after the restart")
    assert running.slack_titles().count(FIRING) == 1
    assert running.slack_titles().count(RESOLVED) == 1


def test_two_clustered_alertmanagers_send_one_message_per_group(make_pipeline):
    running = make_pipeline(alertmanagers=2)
    with Traffic(running.tel) as traffic:
        traffic.failing.set()
        wait_for(lambda: FIRING in running.slack_titles(), 90, "the firing message")
        time.sleep(8)                   # longer than the second peer's wait (peer timeout 2s)
        for process in running.alertmanagers:   # both received the alert from Prometheus
            alerts = json.loads(urllib.request.urlopen(process.url + "/api/v2/alerts", timeout=5).read())
            assert ALERT in {a["labels"]["alertname"] for a in alerts}
    titles = running.slack_titles()
    assert titles.count(FIRING) == 1, titles
    assert len(titles) == len(set(titles)), titles
