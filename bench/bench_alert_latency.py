"""Time from posting failing events to the Slack message, with 1 s scrape and evaluation intervals.

A real exporter takes steady successful traffic on POST /v1/events; at t0 one
agent's executions start failing.  The clock stops when the local Slack sink
receives that agent's firing message.  The alert is the shipped
OrchestratorAgentHighErrorRatio rendered with `for: 0s` and a 10 s window, and
Alertmanager's group_wait is 0s: what is measured is the pipeline (scrape, rule
evaluation, notification), not the configured waits.  Each round starts at a
random phase of the 1 s cycles, so the figures spread over what a user sees.

    python bench/bench_alert_latency.py
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from msgspec.structs import replace

from agent_exporter import Telemetry, stack
from agent_exporter.config import Config
from agent_exporter.render import alertmanager as am
from agent_exporter.render.common import dump_yaml
from agent_exporter.render.prometheus import prometheus_config, render_prometheus
from agent_exporter.server import Service, start_server
from agent_exporter.sinks import SlackSink

ROUNDS = 5
ROUND_TIMEOUT = 30.0        # a round that takes longer counts as lost (inf)
GOAL_SECONDS = 3.0


def post(url: str, batch: list[dict]) -> None:
    request = urllib.request.Request(url, data=json.dumps(batch).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-alert-"))
    arrived: dict[str, float] = {}
    slack = SlackSink(on_message=lambda body: arrived.setdefault(body["attachments"][0]["title"], time.monotonic()))
    slack.start()
    (work / "slack_url").write_text(slack.url)
    base = Config()
    config = replace(base, metrics=replace(base.metrics, collection_interval=1.0), alerting=replace(
        base.alerting, rate_window="10s", alert_for="0s", remediation_alerts=(), channels=("slack",),
        slack=replace(base.alerting.slack, webhook_url_file=str(work / "slack_url"))))
    tel = Telemetry()
    exporter = start_server(Service(tel), "127.0.0.1:0")
    events_url = exporter.url.rstrip("/") + "/v1/events"
    am.render_alertmanager(config, work)
    document = am.alertmanager_config(config)
    document["route"].update(group_wait="0s", group_interval="1s", repeat_interval="1h")
    document["templates"] = [str(work / "alertmanager" / "templates" / am.TEMPLATE_NAME)]
    alertmanager = stack.start_alertmanager(work / "am", dump_yaml(document))
    render_prometheus(config, work)
    prometheus = stack.start_prometheus(work / "prom", prometheus_config(
        [f"127.0.0.1:{exporter.port}"], job=config.alerting.job,
        alertmanagers=[alertmanager.url.removeprefix("http://")], rule_files=[f"{work}/prometheus/rules/*.yml"],
        scrape_interval="1s", evaluation_interval="1s"), extra_args=("--rules.alert.resend-delay=1s",))
    failing: set[str] = set()
    stop = threading.Event()

    def traffic():
        while not stop.wait(0.05):
            post(events_url, [{"type": "agent_execution", "agent": f"agent-{n}", "duration_seconds": 0.1,
                               "status": "error" if f"agent-{n}" in failing and i % 2 else "success"}
                              for n in range(ROUNDS) for i in range(2)])

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    latencies = []
    try:
        time.sleep(12)     # the 10 s window fills with healthy traffic first
        for n in range(ROUNDS):
            agent = f"agent-{n}"
            title = f"[FIRING:1] OrchestratorAgentHighErrorRatio · agent {agent}"
            time.sleep(random.uniform(0, 1))
            t0 = time.monotonic()
            failing.add(agent)
            deadline = t0 + ROUND_TIMEOUT
            while title not in arrived and time.monotonic() < deadline:
                time.sleep(0.01)
            latencies.append(arrived[title] - t0 if title in arrived else float("inf"))
    finally:
        stop.set()
        worker.join(5)
        prometheus.stop()
        alertmanager.stop()
        exporter.stop()
        tel.shutdown()
        slack.stop()
    print(f"failing events posted to Slack message, 1 s scrape and evaluation intervals (goal <= {GOAL_SECONDS} s)")
    for n, latency in enumerate(latencies):
        print(f"  round {n + 1}: {latency:.2f} s")
    print(f"  median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s")


if __name__ == "__main__":
    main()
