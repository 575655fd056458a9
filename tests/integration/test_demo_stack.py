"""`agent-exporter demo --stack --duration 200`: the incident's alerts fire and resolve, end to end.

Real Prometheus and Alertmanager, the local Slack and SMTP sinks, the demo's
own exporter: the high-error-ratio alert must reach both sinks while firing,
the resolved message must follow, the shared outage must page on the workflow
success objective, and the demo must stop everything and exit 0 within its
duration.  The longest test of the suite (about 200 s).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from process_output import lines_of, until

pytestmark = pytest.mark.integration

DURATION = 200
ALERT = "OrchestratorAgentHighErrorRatio"
AGENT = "coder-claude-sonnet"      # the demo's incident


def test_the_incident_alert_fires_and_resolves_in_slack_and_email():
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_exporter", "demo", "--stack", f"--duration={DURATION}",
         "--web.listen-address=127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + DURATION + 60
    try:
        output = list(until(lines_of(process.stdout), deadline))
        exit_code = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    transcript = "\n".join(output)

    def first(pattern: str) -> int:
        for i, line in enumerate(output):
            if re.search(pattern, line):
                return i
        raise AssertionError(f"no line matching {pattern!r} in:\n{transcript[-6000:]}")

    slack_firing = first(rf"^\[slack\] \[FIRING:\d+\] {ALERT} .*{AGENT}")
    email_firing = first(rf"^\[email\] .*subject=\[FIRING:\d+\] {ALERT} .*{AGENT}")
    slack_resolved = first(rf"^\[slack\] \[RESOLVED\] {ALERT} .*{AGENT}")
    email_resolved = first(rf"^\[email\] .*subject=\[RESOLVED\] {ALERT} .*{AGENT}")
    assert slack_resolved > slack_firing
    assert email_resolved > email_firing
    # The alert drove the healing layer: the webhook opened the breaker, the resolution released it to
    # half-open, and its probe calls, the agent having recovered, closed it.
    opened = first(rf"^\[healing\] {AGENT}: circuit closed -> open \({ALERT}\)")
    released = first(rf"^\[healing\] {AGENT}: circuit open -> half_open \(resolved:{ALERT}\)")
    closed = first(rf"^\[healing\] {AGENT}: circuit half_open -> closed \(probes\)")
    assert opened < released < closed
    first(rf"^\[healing\] coding: traffic moved from {AGENT} to ")
    # The outage of a tool both coders need fails tasks whichever agent does them: the workflow
    # (task) success objective pages, and the tool's alert names the cause.
    outage = first(r"^\[demo\] outage: file_write ")
    assert first(r"^\[slack\] \[FIRING:\d+\] OrchestratorWorkflowErrorBudgetBurnFast · workflow ") > outage
    assert first(r"^\[email\] .*subject=\[FIRING:\d+\] OrchestratorWorkflowErrorBudgetBurnFast ") > outage
    assert first(r"^\[slack\] \[FIRING:\d+\] OrchestratorToolHighErrorRatio · tool file_write") > outage
    assert exit_code == 0, transcript[-3000:]
