"""Running the demo: one orchestrator in this process, or a fleet of replica processes around one stack.

`run_demo` starts the exporter (with /v1/alertmanager and /v1/agents), the
self-healing layer and the simulated orchestrator; with `stack` it first starts
the local stack (stack.start_stack) and has the healing layer poll the stack's
Alertmanager and Prometheus as well as take the webhook (healing.fleet).  With
`replicas` > 1 this process runs only the stack, two clustered Alertmanagers,
and N replica processes (`agent-exporter demo` each, sharing the incident's
timeline); the webhook reaches the first replica only, and every replica acts
on the alerts and statistics it polls.  Their lines are relayed prefixed with
`[replica N]`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import msgspec
from msgspec.structs import replace

from .. import stack as local_stack
from ..config import Config, FleetConfig
from ..healing import AlertRemediator, Healer, RetryPolicy
from ..server import Service, start_server
from ..telemetry import Telemetry
from .console import Console, HealingReporter, LogFollower, StatusReporter
from .workload import BACKOFF_COMPRESSION, Incident, SimulatedClock, SimulatedOrchestrator, demo_config

# The stack's fleet timings: poll the alerts every 2 s, the statistics every 5 s.
ALERTS_INTERVAL = 2.0
STATS_INTERVAL = 5.0
FLEET_BACKOFF_MAX = 10.0
FLEET_TIMEOUT = 1.0


def with_fleet(config: Config, alertmanager_urls, prometheus_url: str) -> Config:
    """`config` polling these Alertmanagers and this Prometheus, on the stack's timings."""
    fleet = config.healing.fleet
    fleet = FleetConfig(
        alertmanager=replace(fleet.alertmanager, urls=tuple(alertmanager_urls),
                             interval_seconds=ALERTS_INTERVAL),
        prometheus=replace(fleet.prometheus, url=prometheus_url, interval_seconds=STATS_INTERVAL),
        jitter=fleet.jitter, backoff_max_seconds=FLEET_BACKOFF_MAX, timeout_seconds=FLEET_TIMEOUT)
    return replace(config, healing=replace(config.healing, fleet=fleet))


def config_document(config: Config) -> dict:
    """`config` as a YAML document that loads back into it (the replicas' config file).

    Legacy condition strings are left out: they were read into the thresholds,
    which the demo may have changed since."""
    config = replace(config, alerting=replace(config.alerting, conditions=()))
    return {"observability": msgspec.to_builtins(config)}


def _concrete(listen_address: str) -> str:
    """HOST:PORT with port 0 replaced by a free port (the stack must know where to scrape)."""
    host, _, port = listen_address.rpartition(":")
    return f"{host}:{local_stack.free_port()}" if port == "0" else listen_address


def _stack_lines(console: Console, stack: local_stack.LocalStack, exporter_url: str) -> None:
    members = " ".join(m.url for m in stack.alertmanagers)
    console.line(f"[stack] Prometheus {stack.prometheus.url} | Alertmanager {members} | "
                 f"Slack sink {stack.slack.url} | SMTP sink 127.0.0.1:{stack.smtp.port}")
    console.line(f"[stack] alerts on a {local_stack.STACK_RATE_WINDOW} window, pending "
                 f"{local_stack.STACK_ALERT_FOR}; the error-ratio alert opens the agent's breaker via "
                 f"{exporter_url}/v1/alertmanager, and every {ALERTS_INTERVAL:g}s from Alertmanager's API")


def _start_stack(cleanup: ExitStack, config: Config, console: Console, workdir: Path, *, targets,
                 exporter_url: str, alertmanagers: int) -> local_stack.LocalStack:
    """The local stack with the sinks' messages as `[slack]` and `[email]` lines."""
    def on_slack(body):
        from ..sinks import format_slack_line
        console.line("[slack] " + format_slack_line(body))

    def on_email(message):
        from ..sinks import format_email_line
        console.line("[email] " + format_email_line(message))

    logging.getLogger("mail.log").setLevel(logging.WARNING)   # aiosmtpd narrates every SMTP command at INFO
    return local_stack.start_stack(cleanup, config, workdir=workdir, targets=targets, exporter_url=exporter_url,
                                   alertmanagers=alertmanagers, on_slack=on_slack, on_email=on_email)


def _workdir(cleanup: ExitStack) -> Path:
    return Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="agent-exporter-demo-")))


def run_demo(config: Config, *, duration: float | None = None, stack: bool = False, replicas: int = 1,
             listen_address: str = "127.0.0.1:9464", seed: int = 1, stop: threading.Event | None = None,
             tasks_per_second: float = 20.0, incident: Incident = Incident(), started_at: float | None = None,
             stream=None) -> int:
    """Run the demo until `duration` passes or `stop` is set; stops everything it started.

    `started_at` (unix seconds, default now) is t=0 of the incident's timeline.
    """
    stop = stop or threading.Event()
    console = Console(stream)
    started_at = time.time() if started_at is None else started_at
    if replicas > 1:
        return _run_fleet(config, replicas=replicas, duration=duration, seed=seed,
                          stop=stop, tasks_per_second=tasks_per_second, incident=incident,
                          started_at=started_at, console=console)
    listen_address = _concrete(listen_address)
    config = demo_config(config, listen_address=listen_address)
    exporter_url = f"http://{listen_address}"
    with ExitStack() as cleanup:
        if stack:
            local = _start_stack(cleanup, config, console, _workdir(cleanup), targets=[listen_address],
                                 exporter_url=exporter_url, alertmanagers=1)
            config = with_fleet(local.config, [m.url for m in local.alertmanagers], local.prometheus.url)
        telemetry = Telemetry(config)
        cleanup.callback(telemetry.shutdown)
        remediator = AlertRemediator(config, telemetry)
        healing = HealingReporter(remediator, console)
        # Before serving, as `serve` does: once /v1/agents answers, the fleet's sources have been polled.
        remediator.start()
        cleanup.callback(remediator.stop)
        # No bearer token: the demo's own Alertmanager posts to /v1/alertmanager without one.
        handle = start_server(Service(telemetry, max_body_bytes=config.server.max_body_bytes,
                                      remediator=remediator), listen_address)
        cleanup.callback(handle.stop)
        console.line(f"[demo] exporter on {handle.url}/metrics, agent health on {handle.url}/v1/agents "
                     "(Ctrl-C to stop)")
        if stack:
            _stack_lines(console, local, handle.url)

        simulated_clock = SimulatedClock()
        worker_stop = threading.Event()
        policy = RetryPolicy.from_config(config.healing,
                                         sleep=lambda seconds: worker_stop.wait(seconds / BACKOFF_COMPRESSION))
        healer = Healer.from_config(config, telemetry, remediator=remediator, policy=policy, clock=simulated_clock,
                                    cost_of=lambda agent, outcome: getattr(outcome, "cost_usd", None),
                                    score_of=lambda agent, result: result.score)
        orchestrator = SimulatedOrchestrator(telemetry, healer, incident=incident, seed=seed,
                                             simulated_clock=simulated_clock, started_at=started_at)
        console.line(f"[demo] incident: {incident.agent} fails {incident.error_rate:.0%} of its calls and is "
                     f"{incident.slowdown:g}x slower from t={incident.start:g}s to t={incident.end:g}s")
        if incident.outage is not None:
            outage = incident.outage
            console.line(f"[demo] outage: {outage.tool} fails for every agent that needs it from "
                         f"t={outage.start:g}s to t={outage.end:g}s: no fallback helps, tasks fail")
        worker = threading.Thread(target=orchestrator.run, args=(worker_stop, tasks_per_second),
                                  name="demo-orchestrator", daemon=True)
        worker.start()
        cleanup.callback(worker.join, 10)
        cleanup.callback(worker_stop.set)
        cleanup.callback(console.close)

        reporter = StatusReporter(orchestrator, telemetry.store)
        _wait(stop, duration, every=0.5, tick=lambda: (healing.poll(), console.status(reporter.text())))
    stats = orchestrator.stats
    tasks = stats.tasks_done + stats.tasks_failed
    console.line(f"[demo] stopped: {tasks:,} tasks of {stats.tasks_started:,} started "
                 f"({stats.tasks_done / max(tasks, 1):.1%} done), {stats.executions:,} agent executions, "
                 f"spend ${stats.spend_usd:,.2f}")
    return 0


def _wait(stop: threading.Event, duration: float | None, *, every: float, tick) -> None:
    """Call `tick()` every `every` seconds until `stop` is set or `duration` has passed."""
    deadline = None if duration is None else time.monotonic() + duration
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        stop.wait(every if deadline is None else max(min(every, deadline - time.monotonic()), 0))
        tick()


def _run_fleet(config: Config, *, replicas: int, duration: float | None, seed: int,
               stop: threading.Event, tasks_per_second: float, incident: Incident, started_at: float,
               console: Console) -> int:
    addresses = [f"127.0.0.1:{local_stack.free_port()}" for _ in range(replicas)]   # the stack is loopback only
    exit_codes = []
    with ExitStack() as cleanup:
        workdir = _workdir(cleanup)
        local = _start_stack(cleanup, demo_config(config, listen_address=addresses[0]), console, workdir,
                             targets=addresses, exporter_url=f"http://{addresses[0]}", alertmanagers=2)
        _stack_lines(console, local, f"http://{addresses[0]}")
        fleet_config = with_fleet(local.config, [m.url for m in local.alertmanagers], local.prometheus.url)
        config_file = workdir / "replica.yaml"
        config_file.write_text(json.dumps(config_document(fleet_config), indent=1))
        follower = LogFollower(console).start()
        cleanup.callback(follower.stop)
        processes = []
        for i, address in enumerate(addresses, start=1):
            args = [f"--config.file={config_file}", f"--seed={seed + i - 1}", f"--clock-start={started_at}",
                    f"--tasks-per-second={tasks_per_second}", f"--incident-start={incident.start}",
                    f"--incident-end={incident.end}"]
            outage = incident.outage
            args += ([f"--outage-start={outage.start}", f"--outage-end={outage.end}"] if outage
                     else ["--outage-start=0", "--outage-end=0"])
            if duration is not None:      # a replica outlives a parent killed without cleanup by little
                args.append(f"--duration={duration + 30}")
            process = local_stack.start_replica(workdir / f"replica-{i}", port=int(address.rpartition(":")[2]),
                                                demo_args=args)
            follower.follow(f"[replica {i}]", process.log_path)
            processes.append(process)
            cleanup.callback(lambda p=process: exit_codes.append(p.stop(30)))
        console.line(f"[demo] {replicas} replicas: " + ", ".join(p.url for p in processes)
                     + f"; the webhook reaches {processes[0].url} only (Ctrl-C to stop)")
        _wait(stop, duration, every=0.5, tick=lambda: None)
    return 0 if all(code == 0 for code in exit_codes) else 1
