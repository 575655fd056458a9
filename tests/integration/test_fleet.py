"""Fleet healing end to end: orchestrator replicas in separate processes, one Prometheus, two clustered
Alertmanagers, all on loopback.

Each replica is `agent-exporter demo` with healing.fleet pointing at the stack; Alertmanager's webhook
reaches the first replica only.  The scripted incident makes one coder fail half its calls:

* the alert opens that agent's breaker on all three replicas within a bound stated from the poll
  interval, and their traffic leaves it; the first replica, which also gets the webhook, acts once;
* a replica started during the incident sends at most 10 % of its first 20 coding tasks to it,
  half-open probes aside (read from that replica's own spans);
* the alert can resolve during the incident only because the agent gets no calls: the breakers
  then probe, fail and open again, as often as that happens; after the incident, they close on
  their probes on all three and work returns to the agent;
* Alertmanager stopped, then Prometheus stopped: no replica crashes, stalls or loses a task; each
  says which source is down and falls back (breakers kept, local learning), and recovers when
  they return.

The second longest test of the suite (about three minutes).
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from contextlib import ExitStack

import pytest
from otlp_receiver import HttpReceiver
from prometheus_client.parser import text_string_to_metric_families

from agent_exporter import catalog, stack, tracing
from agent_exporter.config import Config
from agent_exporter.demo.runner import ALERTS_INTERVAL, FLEET_BACKOFF_MAX, FLEET_TIMEOUT, STATS_INTERVAL, \
    config_document, with_fleet
from agent_exporter.demo.workload import demo_config

pytestmark = pytest.mark.integration

ALERT = "OrchestratorAgentHighErrorRatio"
FAILING, HEALTHY = "coder-claude-sonnet", "coder-gpt-4o"
TASK = "coding"
REPLICAS = 3
JITTER = 0.2                     # healing.fleet.jitter's default, kept by with_fleet

# A poll sees a change at most one jittered interval after it happened, plus the requests
# (one timeout per Alertmanager member at worst); one more interval of slack for a busy machine.
POLL_BOUND = 2 * ALERTS_INTERVAL * (1 + JITTER) + 2 * FLEET_TIMEOUT
# A source that comes back is seen at most one backed-off wait later, plus the requests.
RECOVERY_BOUND = FLEET_BACKOFF_MAX * (1 + JITTER) + 2 * FLEET_TIMEOUT + STATS_INTERVAL * (1 + JITTER)
# The alert fires once the error ratio over the rate window crosses its threshold and holds for the
# pending time (scrape and evaluation every second); a few seconds of 50 % errors cross 5 %.  It also
# needs the demo's min_events (50) executions of the agent in its window, which accrue more slowly
# as the replicas' selectors move work off it, at a pace that depends on their seeds: 15 s more
# (a CI run took 33.2 s, 3.4 s past the bound without it).
DETECTION_BOUND = 15 + 5 + 2 * 1 + 1 + POLL_BOUND + 15
STILL_WORKING_SECONDS = 3.0
# A replica started during the incident needs that long for its first 20 coding tasks.
LATE_REPLICA_SECONDS = 15.0
# Seconds after the fleet's t=0.  It lasts long enough for that replica to start at the latest
# detection the bounds allow (plus 5 s for the checks between).
INCIDENT_START = 25.0
INCIDENT = (INCIDENT_START, float(math.ceil(INCIDENT_START + DETECTION_BOUND + POLL_BOUND + STILL_WORKING_SECONDS
                                            + 5 + LATE_REPLICA_SECONDS)))
# Work returns to the agent once the breakers close and the fleet's 5m statistics forget the incident.
RETURN_BOUND = 300 + STATS_INTERVAL * (1 + JITTER) + POLL_BOUND


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def agents(replica) -> dict:
    return get_json(replica.url + "/v1/agents")


def samples(replica, name: str) -> list:
    with urllib.request.urlopen(replica.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def tasks_done(replica) -> float:
    return sum(s.value for s in samples(replica, catalog.WORKFLOW_RUNS.name))


def executions(replica, agent: str) -> float:
    return sum(s.value for s in samples(replica, catalog.AGENT_EXECUTIONS.name) if s.labels["agent"] == agent)


def remediation_alert_active(members) -> bool:
    """Whether any Alertmanager member holds the firing alert for the failing agent."""
    for member in members:
        try:
            alerts = get_json(member.url + "/api/v2/alerts?active=true&filter=alertname%3D%22" + ALERT + "%22")
        except OSError:
            continue
        if any(a["labels"].get("agent") == FAILING for a in alerts):
            return True
    return False


def every(replicas, check, *, timeout: float, what: str) -> float:
    """Wait until check(replica) holds for every replica; the seconds it took."""
    started = time.monotonic()
    stack.wait_for(lambda: all(check(r) for r in replicas), timeout=timeout, interval=0.25, what=what)
    return time.monotonic() - started


def log_lines(replica, pattern: str) -> list[str]:
    return [line for line in replica.log_path.read_text().splitlines() if re.search(pattern, line)]


def still_working(replicas, seconds: float = STILL_WORKING_SECONDS) -> None:
    """Every replica is alive and finishes tasks."""
    before = [tasks_done(r) for r in replicas]
    time.sleep(seconds)
    for replica, done in zip(replicas, before):
        assert replica.running(), replica.log_tail()
        assert tasks_done(replica) > done, f"{replica.url} stalled:\n{replica.log_tail()}"


@pytest.fixture
def fleet(tmp_path):
    """The stack, and the replicas' config files; replicas are started by the test."""
    with ExitStack() as cleanup:
        ports = [stack.free_port() for _ in range(REPLICAS + 1)]       # the last one joins mid-incident
        targets = [f"127.0.0.1:{port}" for port in ports]
        local = stack.start_stack(cleanup, demo_config(Config(), listen_address=targets[0]), workdir=tmp_path,
                                  targets=targets, exporter_url=f"http://{targets[0]}", alertmanagers=2)
        config = with_fleet(local.config, [m.url for m in local.alertmanagers], local.prometheus.url)
        config_file = tmp_path / "replica.yaml"
        config_file.write_text(json.dumps(config_document(config)))
        receiver = cleanup.enter_context(HttpReceiver())
        traced = config_document(config)
        traced["observability"]["tracing"].update(export_to_otlp=True, otlp_endpoint=receiver.endpoint,
                                                  otlp_protocol="http/protobuf")
        traced_file = tmp_path / "late-replica.yaml"
        traced_file.write_text(json.dumps(traced))
        yield cleanup, local, ports, config_file, traced_file, receiver


def start_replica(cleanup, tmp_path, name, port, config_file, started_at, rate):
    process = stack.start_replica(tmp_path / name, port=port, demo_args=[
        f"--config.file={config_file}", f"--seed={port}", f"--clock-start={started_at}",
        f"--tasks-per-second={rate}", f"--incident-start={INCIDENT[0]}", f"--incident-end={INCIDENT[1]}",
        "--outage-start=0", "--outage-end=0"])       # one failing agent: what the fleet must route around
    cleanup.callback(process.stop)
    return process


def first_tasks_choosing(receiver, agent: str, count: int) -> int:
    """Of the replica's first `count` coding tasks (heal spans), how many called `agent` other than
    as a half-open probe."""
    spans = list(receiver.spans)
    heals = sorted((s for s in spans if s.name == f"heal {TASK}"), key=lambda s: s.start_ns)[:count]
    called = {(s.trace_id, s.parent_span_id) for s in spans
              if s.name == f"attempt {agent}" and not s.attributes.get(tracing.PROBE)}
    return sum((h.trace_id, h.span_id) in called for h in heals)


def circuit_changes(replica, agent: str) -> list[tuple[str, str, str]]:
    """(from, to, reason) of each circuit change of `agent` the replica logged, in order."""
    return [re.search(r"circuit (\w+) -> (\w+) \((.+)\)$", line).groups()
            for line in log_lines(replica, rf"\[healing\] {agent}: circuit ")]


def test_a_fleet_heals_together(fleet, tmp_path):
    cleanup, local, ports, config_file, traced_file, receiver = fleet
    members = local.alertmanagers
    started_at = time.time()
    replicas = [start_replica(cleanup, tmp_path, f"replica-{i}", port, config_file, started_at, 5)
                for i, port in enumerate(ports[:REPLICAS], start=1)]
    for replica in replicas:
        assert agents(replica)["fleet"]["alertmanager"]["up"] is True
    still_working(replicas)

    # -- the incident: the alert opens the breaker everywhere, traffic leaves the agent ---------------
    stack.wait_for(lambda: remediation_alert_active(members), timeout=INCIDENT[0] + DETECTION_BOUND + 30,
                   interval=0.2, what="the remediation alert never fired")
    fired_after = time.time() - started_at - INCIDENT[0]
    assert fired_after <= DETECTION_BOUND

    def moved_away(replica) -> bool:
        status = agents(replica)["agents"][FAILING]
        return status["forced"] and status["reason"] == ALERT and status["selector_weight"].get(TASK) == 0.0

    took = every(replicas, moved_away, timeout=POLL_BOUND + 5, what="a replica kept the failing agent")
    assert took <= POLL_BOUND
    # Only the first replica gets the webhook as well as the poll: it acted once, like the others
    # (none when its own errors had opened the breaker already; the alert then holds it open).
    for replica in replicas:
        assert len(log_lines(replica, rf"\[healing\] {FAILING}: circuit \w+ -> open \({ALERT}\)")) <= 1
    before = [executions(r, FAILING) for r in replicas]
    still_working(replicas)
    for replica, count in zip(replicas, before):
        assert executions(replica, FAILING) - count <= 2, "work still goes to the failing agent"

    # -- a replica started during the incident avoids the agent from its first task -------------------
    assert time.time() - started_at < INCIDENT[1] - LATE_REPLICA_SECONDS, \
        "too late to start a replica during the incident"
    late = start_replica(cleanup, tmp_path, "late", ports[REPLICAS], traced_file, started_at, 5)
    stack.wait_for(lambda: len([s for s in receiver.spans if s.name == f"heal {TASK}"]) >= 20,
                   timeout=60, what="the late replica's first 20 coding tasks were not traced")
    assert first_tasks_choosing(receiver, FAILING, 20) <= 2          # at most 10 %
    assert late.stop() == 0

    # -- recovery: the alert resolves, the breakers probe and close everywhere, work returns -----------
    stack.wait_for(lambda: time.time() - started_at > INCIDENT[1] and not remediation_alert_active(members),
                   timeout=INCIDENT[1] + 180, interval=0.5, what="the alert never resolved")
    took = every(replicas, lambda r: not agents(r)["agents"][FAILING]["forced"], timeout=POLL_BOUND + 5,
                 what="a breaker stayed open after the alert resolved")
    assert took <= POLL_BOUND
    for replica in replicas:
        changes = circuit_changes(replica, FAILING)
        assert ("open", "half_open", f"resolved:{ALERT}") in changes, changes
    before = {id(r): executions(r, FAILING) for r in replicas}     # at the release: probes are work returning
    # Released to half-open, each breaker closes once its probe calls succeed (the agent has recovered).
    every(replicas, lambda r: agents(r)["agents"][FAILING]["circuit_state"] == "closed", timeout=RETURN_BOUND,
          what="a released breaker did not close on its probes")
    for replica in replicas:
        assert circuit_changes(replica, FAILING)[-1] == ("half_open", "closed", "probes")
    every(replicas, lambda r: agents(r)["agents"][FAILING]["selector_weight"].get(TASK, 0) >= 0.5,
          timeout=RETURN_BOUND, what="work did not return to the recovered agent")
    # A call takes simulated seconds: the executions it records come a little after the weight moves.
    every(replicas, lambda r: executions(r, FAILING) > before[id(r)], timeout=RETURN_BOUND,
          what="no replica's work reached the recovered agent")

    # -- Alertmanager, then Prometheus, go away and come back ---------------------------------------
    forced_before = {agent: s["forced"] for agent, s in agents(replicas[0])["agents"].items()}
    for member in members:
        member.stop()
    every(replicas, lambda r: agents(r)["fleet"]["alertmanager"]["up"] is False, timeout=POLL_BOUND + 5,
          what="a replica did not notice Alertmanager was gone")
    local.prometheus.stop()
    every(replicas, lambda r: agents(r)["fleet"]["prometheus"]["up"] is False,
          timeout=STATS_INTERVAL * (1 + JITTER) + FLEET_TIMEOUT + 5, what="a replica did not notice Prometheus was gone")
    for replica in replicas:
        status = agents(replica)
        assert all(s["fleet"] is None for s in status["agents"].values())          # learning alone
        assert {s.labels["source"]: s.value for s in samples(replica, "orchestrator_fleet_source_up")} == {
            "alertmanager": 0, "prometheus": 0}
        assert {a: s["forced"] for a, s in status["agents"].items() if a in forced_before} == forced_before
        assert log_lines(replica, r"fleet source alertmanager unavailable")
        assert log_lines(replica, r"fleet source prometheus unavailable")
    still_working(replicas)

    for member in members:
        member.restart()
    local.prometheus.restart()
    every(replicas, lambda r: all(source["up"] for source in agents(r)["fleet"].values()),
          timeout=RECOVERY_BOUND + 5, what="a replica did not see the sources come back")
    every(replicas, lambda r: agents(r)["agents"][HEALTHY]["fleet"] is not None,
          timeout=RECOVERY_BOUND + 30, what="the fleet statistics did not come back")
    for replica in replicas:
        assert {s.labels["source"]: s.value for s in samples(replica, "orchestrator_fleet_source_up")} == {
            "alertmanager": 1, "prometheus": 1}
    still_working(replicas)

    # -- every replica stops cleanly, every task it started accounted for --------------------------
    for replica in replicas:
        assert replica.stop(30) == 0, replica.log_tail()
        stopped = log_lines(replica, r"^\[demo\] stopped: ")
        assert stopped, replica.log_tail()
        done, started = re.search(r"stopped: ([\d,]+) tasks of ([\d,]+) started", stopped[-1]).groups()
        assert done == started
