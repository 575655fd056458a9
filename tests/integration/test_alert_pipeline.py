"""End to end with the real binaries: events → exporter → Prometheus → Alertmanager → Slack and SMTP sinks."""

import threading
import time
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


@pytest.fixture
def pipeline(tmp_path):
    slack, smtp = SlackSink().start(), SMTPSink().start()
    tel = Telemetry()
    exporter = tel.serve("127.0.0.1:0")
    (tmp_path / "slack_url").write_text(slack.url)
    config = fast_config(tmp_path / "slack_url", smtp.port)
    am.render_alertmanager(config, tmp_path / "am-render")
    alertmanager = stack.start_alertmanager(tmp_path / "am", alertmanager_yaml(config).replace(
        f"templates/{am.TEMPLATE_NAME}", str(tmp_path / "am-render" / "alertmanager" / "templates" / am.TEMPLATE_NAME)))
    rules.render_prometheus(config, tmp_path / "render")
    prometheus = stack.start_prometheus(tmp_path / "prom", f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {tmp_path}/render/prometheus/rules/*.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["{alertmanager.url.removeprefix('http://')}"]
scrape_configs:
  - job_name: {rules.JOB}
    static_configs:
      - targets: ["127.0.0.1:{exporter.port}"]
""", extra_args=("--rules.alert.resend-delay=1s",))
    yield tel, slack, smtp
    prometheus.stop()
    alertmanager.stop()
    exporter.stop()
    tel.shutdown()
    slack.stop()
    smtp.stop()


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
