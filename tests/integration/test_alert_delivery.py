"""Alert delivery end to end with the real binaries on loopback.

Events are POSTed to a real exporter (/v1/events) → Prometheus scrapes it and
evaluates the rendered rules (1 s intervals, short windows) → Alertmanager with
the rendered routes and templates → the local Slack and SMTP sinks, and the
remediation webhook back into the exporter.

Where a test needs to know that a duplicate *would* have been sent, it waits on
Alertmanager's own counter of notification-log lookups
(`alertmanager_nflog_queries_total`): every flush of an aggregation group looks
the group up there before deciding whether to notify, so once that counter has
moved on twice after the message, two more flushes have come and gone.
"""

import contextlib
import json
import re
import threading
import urllib.request

import bcrypt
import pytest
from msgspec.structs import replace

from agent_exporter import Telemetry, stack
from agent_exporter.config import Config, parse_config
from agent_exporter.healing import AlertRemediator
from agent_exporter.render import alertmanager as am
from agent_exporter.render.common import dump_yaml
from agent_exporter.render.prometheus import prometheus_config, render_prometheus, stack_prometheus_config
from agent_exporter.server import Service, start_server
from agent_exporter.sinks import SlackSink, SMTPSink
from agent_exporter.webconfig import WatchedWebConfig

from certificates import self_signed

pytestmark = pytest.mark.integration

ALERT = "OrchestratorAgentHighErrorRatio"
FIRING = f"[FIRING:1] {ALERT} · agent coder"
RESOLVED = f"[RESOLVED] {ALERT} · agent coder"


def metric(alertmanager, name: str, selector: str = "") -> float:
    """The sum of `name`'s series in Alertmanager's /metrics whose labels contain `selector`."""
    text = urllib.request.urlopen(alertmanager.url + "/metrics", timeout=5).read().decode()
    return sum(float(value) for labels, value in re.findall(rf"^{name}(\{{.*\}})? (\S+)$", text, re.MULTILINE)
               if selector in labels)


def nflog_queries(alertmanager) -> float:
    return metric(alertmanager, "alertmanager_nflog_queries_total")


def wait_for_flushes(alertmanagers, flushes: int = 2, timeout: float = 30) -> None:
    """Until every Alertmanager has flushed its groups `flushes` more times."""
    start = [nflog_queries(process) for process in alertmanagers]
    stack.wait_for(lambda: all(nflog_queries(p) >= s + flushes for p, s in zip(alertmanagers, start)),
                   timeout=timeout, what=f"{flushes} more notification flushes")


class Pipeline:
    """Exporter, Prometheus, one or two Alertmanagers and the sinks, all on loopback."""

    def __init__(self, tmp_path, alertmanagers: int = 1):
        self.tmp_path = tmp_path
        self.breaker_changes: list[tuple[str, str, str]] = []
        self.slack, self.smtp = SlackSink().start(), SMTPSink().start()
        self.tel = Telemetry()
        self.exporter = None
        self.prometheus = None
        self.alertmanagers = []
        try:
            self._start(alertmanagers)
        except BaseException:
            self.close()
            raise

    def _start(self, alertmanagers: int) -> None:
        (self.tmp_path / "slack_url").write_text(self.slack.url)
        base = Config()
        port = stack.free_port()
        config = replace(base, metrics=replace(base.metrics, collection_interval=1.0), alerting=replace(
            base.alerting, rate_window="10s", alert_for="1s", exporter_url=f"http://127.0.0.1:{port}",
            email=replace(base.alerting.email, smtp_server="127.0.0.1", smtp_port=self.smtp.port,
                          to_addresses=("oncall@example.com",)),
            slack=replace(base.alerting.slack, webhook_url_file=str(self.tmp_path / "slack_url"))))
        remediator = AlertRemediator(config, self.tel, on_change=self._breaker_changed)
        self.exporter = start_server(Service(self.tel, remediator=remediator), f"127.0.0.1:{port}")

        # The rendered files, with the waits of the root route shortened for a test.
        am.render_alertmanager(config, self.tmp_path)
        document = am.alertmanager_config(config)
        document["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
        document["templates"] = [str(self.tmp_path / "alertmanager" / "templates" / am.TEMPLATE_NAME)]
        self.am_yaml = dump_yaml(document)
        self.am_ports = [stack.free_port() for _ in range(alertmanagers)]
        self.cluster_ports = [stack.free_port() for _ in range(alertmanagers)] if alertmanagers > 1 else []
        for i in range(alertmanagers):
            self.alertmanagers.append(self.start_alertmanager(i))

        render_prometheus(config, self.tmp_path)
        self.prometheus = stack.start_prometheus(self.tmp_path / "prom", prometheus_config(
            [f"127.0.0.1:{self.exporter.port}"], job=config.alerting.job,
            alertmanagers=[f"127.0.0.1:{port}" for port in self.am_ports],
            rule_files=[f"{self.tmp_path}/prometheus/rules/*.yml"], scrape_interval="1s", evaluation_interval="1s",
        ), extra_args=("--rules.alert.resend-delay=1s",))

    def _breaker_changed(self, agent, old, new, reason):
        self.breaker_changes.append((agent, new, reason))

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
        for process in [self.prometheus, *self.alertmanagers]:
            if process is not None:
                process.stop()
        if self.exporter is not None:
            self.exporter.stop()
        self.tel.shutdown()
        self.slack.stop()
        self.smtp.stop()


class Traffic:
    """Agent coder's executions, POSTed to the exporter in batches; `failing` fails every other one."""

    def __init__(self, exporter_url: str):
        self.url = exporter_url.rstrip("/") + "/v1/events"
        self.stop, self.failing = threading.Event(), threading.Event()
        self.errors: list[Exception] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            failing = self.failing.is_set()
            batch = [{"type": "agent_execution", "agent": "coder", "model": "gpt-4o", "duration_seconds": 0.5,
                      "status": "error" if failing and i % 2 else "success", "error_type": "RateLimitError",
                      "input_tokens": 10, "output_tokens": 5} for i in range(4)]
            request = urllib.request.Request(self.url, data=json.dumps(batch).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(request, timeout=5).close()
            except OSError as exc:
                self.errors.append(exc)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.errors, self.errors[:3]


@pytest.fixture
def make_pipeline(tmp_path):
    made = []

    def make(**kwargs):
        made.append(Pipeline(tmp_path, **kwargs))
        return made[-1]
    yield make
    for running in made:
        running.close()


def test_error_alert_reaches_slack_email_and_remediation_then_resolves(make_pipeline):
    running = make_pipeline()
    slack, smtp = running.slack, running.smtp

    def slack_with(title):
        return [m["attachments"][0] for m in slack.messages if m["attachments"][0]["title"] == title]

    with Traffic(running.exporter.url) as traffic:
        traffic.failing.set()
        firing = stack.wait_for(lambda: slack_with(FIRING), timeout=90, what="the firing Slack message")[0]
        assert firing["color"] == "danger"
        assert "*Agent coder fails too often.*" in firing["text"]
        assert "of coder's executions failed over the last 10s (threshold 5%)." in firing["text"]
        assert re.search(r"Since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · severity critical", firing["text"])
        assert "#orchestratoragenthigherrorratio|runbook>" in firing["text"]
        assert "d/orchestrator-agent?var-agent=coder|dashboard>" in firing["text"]

        email = stack.wait_for(lambda: [m for m in smtp.messages if m["Subject"] == FIRING], timeout=30,
                               what="the email")[0]
        assert email["To"] == "oncall@example.com"
        html = email.get_body(("html",)).get_content()
        assert ">FIRING<" in html and "Agent coder fails too often." in html
        assert 'href="https://github.com/agent-exporter/agent-exporter/blob/main/docs/runbooks.md' \
               '#orchestratoragenthigherrorratio"' in html

        # The remediation webhook reached the exporter, which opened coder's breaker.
        stack.wait_for(lambda: ("coder", "open", ALERT) in running.breaker_changes, timeout=30,
                       what="the breaker to open")

        traffic.failing.clear()
        resolved = stack.wait_for(lambda: slack_with(RESOLVED), timeout=90, what="the resolved Slack message")[0]
        assert resolved["color"] == "good"
        assert "Resolved: Agent coder fails too often." in resolved["text"]
        assert ":red_circle:" not in resolved["text"]
        resolved_email = stack.wait_for(lambda: [m for m in smtp.messages if m["Subject"] == RESOLVED], timeout=30,
                                        what="the resolved email")[0]
        assert ">RESOLVED<" in resolved_email.get_body(("html",)).get_content()
        stack.wait_for(lambda: ("coder", "half_open", "resolved:" + ALERT) in running.breaker_changes, timeout=30,
                       what="the breaker to be released")
    # One firing and one resolved message for the group, not a stream of repeats.
    assert running.slack_titles().count(FIRING) == 1
    assert running.slack_titles().count(RESOLVED) == 1


def test_a_slack_outage_delays_the_message_but_it_arrives_once(make_pipeline):
    running = make_pipeline()
    running.slack.fail_next(4)          # Slack answers 500 to the first four posts
    with Traffic(running.exporter.url) as traffic:
        traffic.failing.set()
        stack.wait_for(lambda: FIRING in running.slack_titles(), timeout=120, what="the message after the outage")
        wait_for_flushes(running.alertmanagers)
    # The outage was really hit, and Alertmanager saw every failed attempt.
    assert running.slack.failures_pending == 0
    failed_posts = metric(running.alertmanagers[0], "alertmanager_notification_requests_failed_total",
                          'integration="slack"')
    assert failed_posts >= 4
    assert running.slack_titles().count(FIRING) == 1


def test_an_alertmanager_restart_loses_and_repeats_nothing(make_pipeline):
    running = make_pipeline()
    with Traffic(running.exporter.url) as traffic:
        traffic.failing.set()
        stack.wait_for(lambda: FIRING in running.slack_titles(), timeout=90, what="the firing message")
        running.restart_alertmanager()
        # Prometheus re-sends the firing alert to the new process, which flushes its group
        # against the notification log it read back from storage.
        stack.wait_for(lambda: json.loads(urllib.request.urlopen(
            running.alertmanagers[0].url + "/api/v2/alerts", timeout=5).read()), timeout=30, what="the re-sent alert")
        wait_for_flushes(running.alertmanagers)
        assert running.slack_titles().count(FIRING) == 1
        traffic.failing.clear()
        stack.wait_for(lambda: RESOLVED in running.slack_titles(), timeout=90,
                       what="the resolved message after the restart")
        wait_for_flushes(running.alertmanagers)
    assert running.slack_titles().count(FIRING) == 1
    assert running.slack_titles().count(RESOLVED) == 1


def test_two_clustered_alertmanagers_send_one_message_per_group(make_pipeline):
    running = make_pipeline(alertmanagers=2)
    with Traffic(running.exporter.url) as traffic:
        traffic.failing.set()
        stack.wait_for(lambda: FIRING in running.slack_titles(), timeout=90, what="the firing message")
        for process in running.alertmanagers:   # both received the alert from Prometheus
            alerts = json.loads(urllib.request.urlopen(process.url + "/api/v2/alerts", timeout=5).read())
            assert ALERT in {a["labels"]["alertname"] for a in alerts}
        # The second peer waits its peer timeout, then finds the first one's entry in the gossiped log.
        wait_for_flushes(running.alertmanagers)
    titles = running.slack_titles()
    assert titles.count(FIRING) == 1, titles
    assert len(titles) == len(set(titles)), titles


def post_alerts(alertmanager, *label_sets: dict) -> None:
    body = [{"labels": labels, "annotations": {"summary": labels["alertname"]}} for labels in label_sets]
    request = urllib.request.Request(alertmanager.url + "/api/v2/alerts", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()


def alert_states(alertmanager) -> dict[tuple, tuple[str, list[str]]]:
    """Per alert, its (alertname, subject, severity[, environment]) → (state, alertnames inhibiting it)."""
    alerts = json.loads(urllib.request.urlopen(alertmanager.url + "/api/v2/alerts", timeout=5).read())
    fingerprints = {a["fingerprint"]: a["labels"]["alertname"] for a in alerts}
    found = {}
    for a in alerts:
        labels = a["labels"]
        subject = next((labels[k] for k in ("agent", "workflow", "tool", "feature", "job") if k in labels), "")
        environment = (labels["environment"],) if "environment" in labels else ()
        key = (labels["alertname"], subject, labels["severity"], *environment)
        found[key] = (a["status"]["state"], sorted(fingerprints.get(f, f) for f in a["status"]["inhibitedBy"]))
    return found


def wait_for_states(alertmanager, expected: dict) -> None:
    try:
        stack.wait_for(lambda: alert_states(alertmanager) == expected, timeout=15, what="the inhibition states")
    except stack.StackError:
        assert alert_states(alertmanager) == expected     # shows the difference


def start_rendered_alertmanager(tmp_path, config: Config):
    am.render_alertmanager(config, tmp_path)
    document = am.alertmanager_config(config)
    document["templates"] = [str(tmp_path / "alertmanager" / "templates" / am.TEMPLATE_NAME)]
    return stack.start_alertmanager(tmp_path / "am", dump_yaml(document))


ACTIVE = ("active", [])


def suppressed_by(*alertnames: str) -> tuple[str, list[str]]:
    return ("suppressed", sorted(alertnames))


def test_rendered_inhibition_rules_silence_what_they_should_and_nothing_else(tmp_path):
    job_name = Config().alerting.job
    job = {"job": job_name}
    fast, slow = "OrchestratorAgentErrorBudgetBurnFast", "OrchestratorAgentErrorBudgetBurnSlow"
    wfast, wslow = "OrchestratorWorkflowErrorBudgetBurnFast", "OrchestratorWorkflowErrorBudgetBurnSlow"
    with start_rendered_alertmanager(tmp_path, Config()) as alertmanager:
        # Only real label sets: every alert name has one severity.
        post_alerts(
            alertmanager,
            {"alertname": fast, "severity": "critical", "agent": "coder", "slo": "agent-success"},
            {"alertname": slow, "severity": "warning", "agent": "coder", "slo": "agent-success"},
            {"alertname": "OrchestratorAgentSlow", "severity": "warning", "agent": "coder"},
            {"alertname": slow, "severity": "warning", "agent": "tester", "slo": "agent-success"},
            {"alertname": ALERT, "severity": "critical", "agent": "tester"},
            {"alertname": wfast, "severity": "critical", "workflow": "feature", "slo": "workflow-success"},
            {"alertname": wslow, "severity": "warning", "workflow": "feature", "slo": "workflow-success"},
            {"alertname": wslow, "severity": "warning", "workflow": "hotfix", "slo": "workflow-success"},
            {"alertname": "OrchestratorDailyCostOverBudget", "severity": "critical", "category": "cost"},
            {"alertname": "OrchestratorDailyCostForecastOverBudget", "severity": "warning", "category": "cost"},
            {"alertname": "OrchestratorFeatureDailyCostOverBudget", "severity": "warning", "category": "cost",
             "feature": "login"},
            {"alertname": "OrchestratorExporterDown", "severity": "critical", **job},
            {"alertname": "OrchestratorMetricsAbsent", "severity": "warning", **job},
            {"alertname": "OrchestratorEventsRejected", "severity": "warning", **job},
            {"alertname": "OrchestratorEventsRejected", "severity": "warning", "job": "another-exporter"},
            {"alertname": "OrchestratorSpansRejected", "severity": "warning", **job},
            {"alertname": "OrchestratorRequestsRefused", "severity": "warning", **job},
            {"alertname": "OrchestratorSpansNotForwarded", "severity": "warning", **job},
            {"alertname": "OrchestratorToolHighErrorRatio", "severity": "warning", "tool": "search", **job})
        wait_for_states(alertmanager, {
            (fast, "coder", "critical"): ACTIVE,
            (slow, "coder", "warning"): suppressed_by(fast),                          # fast burn hides slow burn
            # Another problem of the same agent: the page about its errors says nothing of its latency.
            ("OrchestratorAgentSlow", "coder", "warning"): ACTIVE,
            (slow, "tester", "warning"): ACTIVE,          # another agent; its page is another alert
            (ALERT, "tester", "critical"): ACTIVE,
            (wfast, "feature", "critical"): ACTIVE,
            (wslow, "feature", "warning"): suppressed_by(wfast),
            (wslow, "hotfix", "warning"): ACTIVE,                                     # another workflow
            ("OrchestratorDailyCostOverBudget", "", "critical"): ACTIVE,
            ("OrchestratorDailyCostForecastOverBudget", "", "warning"): suppressed_by(
                "OrchestratorDailyCostOverBudget"),                                    # over budget already
            ("OrchestratorFeatureDailyCostOverBudget", "login", "warning"): ACTIVE,   # a feature's own budget
            ("OrchestratorExporterDown", job_name, "critical"): ACTIVE,
            ("OrchestratorMetricsAbsent", job_name, "warning"): suppressed_by("OrchestratorExporterDown"),
            ("OrchestratorEventsRejected", job_name, "warning"): suppressed_by("OrchestratorExporterDown"),
            ("OrchestratorEventsRejected", "another-exporter", "warning"): ACTIVE,    # another job
            ("OrchestratorSpansRejected", job_name, "warning"): suppressed_by("OrchestratorExporterDown"),
            ("OrchestratorRequestsRefused", job_name, "warning"): suppressed_by("OrchestratorExporterDown"),
            ("OrchestratorSpansNotForwarded", job_name, "warning"): suppressed_by("OrchestratorExporterDown"),
            # The exporter being down says nothing of a tool: an unscoped critical hides no scoped warning.
            ("OrchestratorToolHighErrorRatio", "search", "warning"): ACTIVE,
        })


def test_inhibition_keeps_the_grouping_labels_apart(tmp_path):
    config = parse_config({"observability": {"alerting": {"group_labels": ["environment"]}}})
    fast, slow = "OrchestratorAgentErrorBudgetBurnFast", "OrchestratorAgentErrorBudgetBurnSlow"
    with start_rendered_alertmanager(tmp_path, config) as alertmanager:
        post_alerts(
            alertmanager,
            {"alertname": fast, "severity": "critical", "agent": "coder", "slo": "agent-success",
             "environment": "production"},
            {"alertname": slow, "severity": "warning", "agent": "coder", "slo": "agent-success",
             "environment": "production"},
            {"alertname": slow, "severity": "warning", "agent": "coder", "slo": "agent-success",
             "environment": "staging"},
            {"alertname": "OrchestratorExporterDown", "severity": "critical", "job": "agent-exporter",
             "instance": "a:9464", "environment": "production"},
            {"alertname": "OrchestratorMetricsAbsent", "severity": "warning", "job": "agent-exporter",
             "environment": "production"},
            {"alertname": "OrchestratorMetricsAbsent", "severity": "warning", "job": "agent-exporter",
             "environment": "staging"})
        down, absent = "OrchestratorExporterDown", "OrchestratorMetricsAbsent"
        wait_for_states(alertmanager, {
            (down, "agent-exporter", "critical", "production"): ACTIVE,
            (absent, "agent-exporter", "warning", "production"): suppressed_by(down),   # its exporter is down
            (absent, "agent-exporter", "warning", "staging"): ACTIVE,      # another deployment vanished
            (fast, "coder", "critical", "production"): ACTIVE,
            (slow, "coder", "warning", "production"): suppressed_by(fast),
            (slow, "coder", "warning", "staging"): ACTIVE,        # the same agent in another deployment
        })


@contextlib.contextmanager
def remediating_exporter(config: Config, port: int, **service_options):
    """An exporter on `port` whose remediator notes each breaker change: the list (agent, state, reason)."""
    telemetry = Telemetry()
    changes = []
    remediator = AlertRemediator(config, telemetry, on_change=lambda agent, old, new, reason: changes.append(
        (agent, new, reason)))
    exporter = start_server(Service(telemetry, remediator=remediator, **service_options), f"127.0.0.1:{port}")
    try:
        yield changes
    finally:
        exporter.stop()
        telemetry.shutdown()


def assert_the_rendered_webhook_opens_the_breaker(tmp_path, config: Config, changes: list, how: str) -> None:
    with start_rendered_alertmanager(tmp_path, config) as alertmanager:
        post_alerts(alertmanager, {"alertname": ALERT, "severity": "critical", "agent": "coder"})
        stack.wait_for(lambda: ("coder", "open", ALERT) in changes, timeout=30,
                       what=f"the breaker to open through the webhook, {how}")
        assert metric(alertmanager, "alertmanager_notification_requests_failed_total", 'integration="webhook"') == 0


def test_alertmanager_sends_the_exporters_bearer_token_to_its_webhook(tmp_path):
    """A real Alertmanager delivers a remediation alert to a real exporter that requires its token."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    port = stack.free_port()
    config = parse_config({"observability": {
        "server": {"bearer_token_file": str(token_file)},
        "alerting": {"channels": ["log"], "exporter_url": f"http://127.0.0.1:{port}"}}})
    with remediating_exporter(config, port, bearer_token="s3cret-token") as changes:
        assert_the_rendered_webhook_opens_the_breaker(tmp_path, config, changes, "with the bearer token")


def test_the_rendered_stack_gets_past_the_exporters_tls_and_basic_auth(tmp_path):
    """The exporter's web config asks for TLS and a user: with alerting.exporter_auth, the rendered
    prometheus.yml scrapes it and the rendered Alertmanager delivers the remediation webhook."""
    cert_path, _ = self_signed(tmp_path)
    hashed = bcrypt.hashpw(b"prometheus-s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                   f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    password = tmp_path / "exporter_password"
    password.write_text("prometheus-s3cret\n")
    port = stack.free_port()
    config = parse_config({"observability": {"alerting": {
        "channels": ["log"], "exporter_url": f"https://127.0.0.1:{port}",
        "exporter_auth": {"username": "prometheus", "password_file": str(password), "ca_file": str(cert_path)}}}})
    with remediating_exporter(config, port, web_config=WatchedWebConfig(web)) as changes:
        with stack.start_prometheus(tmp_path / "prom", stack_prometheus_config(config)) as prometheus:
            api = stack.PrometheusAPI(prometheus.url)
            up = api.wait_until(f'up{{job="{config.alerting.job}"}}', lambda rows: rows and rows[0]["value"][1] == "1",
                                timeout=30, interval=0.5)
            assert [row["metric"]["instance"] for row in up] == [f"127.0.0.1:{port}"]
        assert_the_rendered_webhook_opens_the_breaker(tmp_path, config, changes, "over TLS with basic auth")
