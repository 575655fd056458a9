"""`agent-exporter demo`: a simulated orchestrator, its metrics, and (with --stack) its alerts.

The workload is shaped like a real multi-agent orchestrator: tasks move through
a workflow state machine (queued -> planning -> coding -> reviewing -> testing
-> done, or failed); each step's agent (planner, coder, reviewer, tester) runs
as one of two model variants (coder-claude-sonnet, coder-gpt-4o, ...), chosen
and retried by the self-healing layer (adaptive selection, retries, fallbacks,
circuit breakers); agents call tools, use tokens priced from the config's price
table, and take lognormal time.  Time is compressed: recorded
durations are the simulated ones, while many tasks run per wall-clock second.

A scripted incident makes one model variant of one agent fail about half the
time, and slow down, for a stretch of the run, then recover.  With --stack,
Prometheus and Alertmanager (the local binaries, loopback only) scrape the
demo and route its alerts to a local Slack-webhook sink and SMTP sink, whose
messages are printed as `[slack] ...` and `[email] ...` lines, and to the
exporter's /v1/alertmanager webhook, which opens the failing agent's breaker;
changes of agent health are printed as `[healing] ...` lines.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from . import catalog
from .config import Config, ModelPrice
from .healing import AlertRemediator, CircuitOpenError, Healer, RetryPolicy
from .server import Service, start_server
from .telemetry import Telemetry


# -- the simulated organisation -------------------------------------------------

# USD per million tokens (input, output); a config's own prices win.
PRICES = {
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4o-mini": ModelPrice(0.15, 0.60),
    "claude-3-5-sonnet": ModelPrice(3.00, 15.00),
    "claude-3-5-haiku": ModelPrice(0.80, 4.00),
}

TOOLS = {   # tool -> (median seconds, failure rate)
    "web_search": (0.8, 0.02),
    "code_exec": (2.0, 0.04),
    "file_read": (0.02, 0.001),
    "file_write": (0.03, 0.002),
    "run_tests": (4.0, 0.03),
    "lint": (0.6, 0.01),
}


@dataclass(frozen=True)
class AgentSpec:
    """One model variant of a role: an agent as the healing layer and the metrics see it."""
    name: str
    model: str
    median_seconds: float
    sigma: float                               # lognormal shape
    error_rate: float                          # in normal times
    input_tokens: int                          # median per call
    output_tokens: int
    tools: tuple[str, ...]


# Per workflow step (the state entered), the two model variants of its agent, first choice first:
# the agents of `agent-exporter simulate`.  In normal times the first choice is the better one,
# error ratios stay within a 99 % objective and p95 latencies under the default 10 s
# threshold, so the alerts a demo shows are the incident's.
STEPS: tuple[tuple[str, tuple[AgentSpec, AgentSpec]], ...] = (
    ("planning", (
        AgentSpec("planner-gpt-4o", "gpt-4o", 2.5, 0.3, 0.002, 2500, 700, ("web_search", "file_read")),
        AgentSpec("planner-claude-sonnet", "claude-3-5-sonnet", 4.0, 0.3, 0.005, 2500, 900,
                  ("web_search", "file_read")))),
    ("coding", (
        AgentSpec("coder-claude-sonnet", "claude-3-5-sonnet", 4.0, 0.3, 0.002, 6000, 2500,
                  ("file_read", "file_write", "code_exec", "lint")),
        AgentSpec("coder-gpt-4o", "gpt-4o", 5.5, 0.3, 0.005, 6000, 3500,
                  ("file_read", "file_write", "code_exec")))),
    ("reviewing", (
        AgentSpec("reviewer-gpt-4o", "gpt-4o", 2.0, 0.3, 0.002, 5000, 800, ("file_read", "lint")),
        AgentSpec("reviewer-claude-haiku", "claude-3-5-haiku", 4.0, 0.3, 0.005, 5000, 1000, ("file_read",)))),
    ("testing", (
        AgentSpec("tester-claude-haiku", "claude-3-5-haiku", 3.0, 0.3, 0.002, 3000, 1500,
                  ("run_tests", "code_exec", "file_read")),
        AgentSpec("tester-gpt-4o-mini", "gpt-4o-mini", 5.0, 0.3, 0.005, 3000, 2000, ("run_tests", "code_exec")))),
)
AGENTS = {spec.name: spec for _, variants in STEPS for spec in variants}
WORKFLOWS = (("feature", 0.6), ("bugfix", 0.4))
ERROR_TYPES = ("RateLimitError", "APITimeoutError", "InternalServerError")
# Retry backoff runs this many times faster than configured, like the rest of the demo's time.
BACKOFF_COMPRESSION = 20.0


@dataclass(frozen=True)
class Incident:
    """One agent variant fails and slows down between `start` and `end` (seconds into the run)."""
    agent: str = "coder-claude-sonnet"
    start: float = 20.0
    end: float = 80.0
    error_rate: float = 0.5
    slowdown: float = 4.0

    def active(self, elapsed: float, agent: str) -> bool:
        return agent == self.agent and self.start <= elapsed < self.end


class AgentFailure(Exception):
    """A simulated agent call that failed; `error_type` is what the LLM client would raise."""

    def __init__(self, agent: str, error_type: str, cost_usd: float):
        super().__init__(f"{agent}: {error_type}")
        self.agent = agent
        self.error_type = error_type
        self.cost_usd = cost_usd


@dataclass(frozen=True)
class AgentResult:
    agent: str
    model: str
    duration_seconds: float
    cost_usd: float


class SimulatedClock:
    """Simulated seconds: advanced by each agent call's duration, read by the healer's selector."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _pick(rng: random.Random, weighted) -> str:
    roll, total = rng.random(), 0.0
    for value, weight in weighted:
        total += weight
        if roll < total:
            return value
    return weighted[-1][0]


# -- the orchestrator ---------------------------------------------------------------

@dataclass
class DemoStats:
    tasks_done: int = 0
    tasks_failed: int = 0
    executions: int = 0
    execution_errors: int = 0
    spend_usd: float = 0.0


class SimulatedOrchestrator:
    """Runs tasks through the workflow; each step's agent is called through the healer."""

    def __init__(self, telemetry, healer, *, incident: Incident = Incident(), seed: int = 1,
                 simulated_clock: SimulatedClock | None = None, clock=time.monotonic):
        self.telemetry = telemetry
        self.healer = healer
        self.incident = incident
        self.rng = random.Random(seed)
        self.simulated_clock = simulated_clock or SimulatedClock()
        self.clock = clock
        self.started = clock()
        self.stats = DemoStats()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def call_agent(self, agent: str) -> AgentResult:
        """One simulated agent execution, recorded with its tool calls; raises AgentFailure when it fails."""
        spec = AGENTS[agent]
        rng = self.rng
        duration = rng.lognormvariate(math.log(spec.median_seconds), spec.sigma)
        error_rate = spec.error_rate
        if self.incident.active(self.elapsed(), agent):
            duration *= self.incident.slowdown
            error_rate = self.incident.error_rate
        self.simulated_clock.advance(duration)
        failed = rng.random() < error_rate
        input_tokens = int(rng.lognormvariate(math.log(spec.input_tokens), 0.4))
        output_tokens = 0 if failed else int(rng.lognormvariate(math.log(spec.output_tokens), 0.5))
        error_type = rng.choice(ERROR_TYPES) if failed else None
        for tool in rng.sample(spec.tools, rng.randint(0, len(spec.tools))):
            median, tool_error_rate = TOOLS[tool]
            self.telemetry.record({
                "type": "tool_call", "tool": tool, "agent": agent,
                "status": "error" if rng.random() < tool_error_rate else "success",
                "duration_seconds": rng.lognormvariate(math.log(median), 0.7)})
        event = {"type": "agent_execution", "agent": agent, "model": spec.model,
                 "status": "error" if failed else "success", "duration_seconds": duration,
                 "input_tokens": input_tokens, "output_tokens": output_tokens}
        if error_type:
            event["error_type"] = error_type
        self.telemetry.record(event)    # cost comes from the price table
        cost = self.telemetry.prices.cost(spec.model, input_tokens=input_tokens, output_tokens=output_tokens) or 0.0
        with self._lock:
            self.stats.executions += 1
            self.stats.execution_errors += failed
            self.stats.spend_usd += cost
        if failed:
            raise AgentFailure(agent, error_type, cost)
        return AgentResult(agent, spec.model, duration, cost)

    def run_task(self) -> bool:
        """One task through the workflow; True when it reached `done`."""
        workflow = _pick(self.rng, WORKFLOWS)
        state = "queued"
        for step, variants in STEPS:
            self.telemetry.state_transition(state, step, workflow=workflow)
            state = step
            try:
                self.healer.run(step, [spec.name for spec in variants], self.call_agent)
            except (AgentFailure, CircuitOpenError):   # every attempt failed, or no variant may be called
                self.telemetry.state_transition(state, "failed", workflow=workflow)
                with self._lock:
                    self.stats.tasks_failed += 1
                return False
        self.telemetry.state_transition(state, "done", workflow=workflow)
        with self._lock:
            self.stats.tasks_done += 1
        return True

    def run(self, stop: threading.Event, tasks_per_second: float) -> None:
        """Run tasks at a steady pace until `stop` is set."""
        interval = 1.0 / tasks_per_second
        next_start = self.clock()
        while not stop.is_set():
            self.run_task()
            next_start += interval
            delay = next_start - self.clock()
            if delay > 0:
                stop.wait(delay)
            elif delay < -1.0:
                next_start = self.clock()      # fell behind (slow machine): do not try to catch up


# -- terminal output ----------------------------------------------------------------

class Console:
    """Message lines, and a one-line live status kept at the bottom on a terminal."""

    def __init__(self, stream=None, *, status_every: float = 10.0):
        self.stream = stream if stream is not None else sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._lock = threading.Lock()
        self._status = ""
        self._status_every = status_every
        self._last_status_line = 0.0

    def line(self, text: str) -> None:
        with self._lock:
            if self.tty and self._status:
                self.stream.write("\r\033[K" + text + "\n" + self._status)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def status(self, text: str) -> None:
        with self._lock:
            if self.tty:
                self._status = text
                self.stream.write("\r\033[K" + text)
                self.stream.flush()
                return
            now = time.monotonic()
            if now - self._last_status_line >= self._status_every:
                self._last_status_line = now
                self.stream.write(text + "\n")
                self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self.tty and self._status:
                self.stream.write("\n")
                self.stream.flush()
            self._status = ""


def _events_total(store) -> float:
    for snap in store.snapshot():
        if snap.spec is catalog.EXPORTER_EVENTS:
            return float(sum(snap.values))
    return 0.0


class StatusReporter:
    """Computes the live status: events/s, execution success rate, spend so far."""

    def __init__(self, orchestrator: SimulatedOrchestrator, store):
        self.orchestrator = orchestrator
        self.store = store
        self._last = (time.monotonic(), _events_total(store))

    def text(self) -> str:
        now, events = time.monotonic(), _events_total(self.store)
        last_time, last_events = self._last
        self._last = (now, events)
        rate = (events - last_events) / max(now - last_time, 1e-9)
        stats = self.orchestrator.stats
        success = 1 - stats.execution_errors / stats.executions if stats.executions else 1.0
        tasks = stats.tasks_done + stats.tasks_failed
        task_success = stats.tasks_done / tasks if tasks else 1.0
        incident = self.orchestrator.incident
        elapsed = self.orchestrator.elapsed()
        if elapsed < incident.start:
            phase = f"incident in {incident.start - elapsed:.0f}s"
        elif elapsed < incident.end:
            phase = f"incident: {incident.agent} degraded for {incident.end - elapsed:.0f}s more"
        else:
            phase = "incident over"
        return (f"[demo] t={elapsed:4.0f}s {rate:6,.0f} events/s | agent success {success:6.1%} | "
                f"tasks {tasks:,} ({task_success:.1%} done) | spend ${stats.spend_usd:,.2f} | {phase}")


# A step's traffic "moved" when another agent gets at least this share of it (near-equal
# agents trade the lead all the time, which is not news).
TRAFFIC_SHIFT_WEIGHT = 0.8
TRAFFIC_SHIFT_POLLS = 4      # ... for this many status polls in a row (2 s)


class HealingReporter:
    """`[healing]` lines: every breaker change as it happens, and where each step's traffic goes."""

    def __init__(self, remediator, console: Console):
        self.remediator = remediator
        self.console = console
        self._leaders: dict[str, str] = {}
        self._contenders: dict[str, tuple[str, int]] = {}    # task -> (agent, polls it has led)
        remediator.breakers.add_listener(self.breaker_changed)

    def breaker_changed(self, agent: str, old: str, new: str, reason: str) -> None:
        self.console.line(f"[healing] {agent}: circuit {old} -> {new} ({reason})")

    def poll(self) -> None:
        """Report a step whose traffic moved to another agent (as /v1/agents shows it)."""
        for task, weights in self.remediator.selector.published().items():
            if not weights:
                continue
            leader, weight = max(weights.items(), key=lambda item: item[1])
            previous = self._leaders.get(task)
            if leader == previous or weight < TRAFFIC_SHIFT_WEIGHT:
                self._contenders.pop(task, None)
                continue
            contender, polls = self._contenders.get(task, (leader, 0))
            polls = polls + 1 if contender == leader else 1
            self._contenders[task] = (leader, polls)
            if polls >= TRAFFIC_SHIFT_POLLS:
                self._leaders[task] = leader
                del self._contenders[task]
                if previous is not None:
                    self.console.line(f"[healing] {task}: traffic moved from {previous} to {leader} "
                                      f"(selector weight {weight:.2f})")


# -- configuration -------------------------------------------------------------------------

def demo_config(config: Config, *, listen_address: str) -> Config:
    """The user's config plus what the demo needs: model prices, fallbacks, a compressed-time budget."""
    prices = {**PRICES, **config.metrics.prices}
    fallbacks = {first.name: (second.name,) for _, (first, second) in STEPS}
    fallbacks.update(config.healing.fallbacks)
    # Time is compressed (hours of work in minutes): a budget sized for real time
    # would make the demo all about cost alerts.
    budget = dataclasses.replace(config.alerting.budget, day_usd=max(config.alerting.budget.day_usd, 5000.0),
                                 month_usd=max(config.alerting.budget.month_usd, 100000.0))
    thresholds = dataclasses.replace(config.alerting.thresholds, cost_per_day_usd=budget.day_usd)
    return dataclasses.replace(
        config,
        metrics=dataclasses.replace(config.metrics, prices=prices),
        alerting=dataclasses.replace(config.alerting, budget=budget, thresholds=thresholds),
        healing=dataclasses.replace(config.healing, fallbacks=fallbacks),
        server=dataclasses.replace(config.server, listen_address=listen_address),
    )


# Demo timings: scrape and evaluate every second, alert on the last minute, notify at once.
DEMO_INTERVAL = "1s"
DEMO_RATE_WINDOW = "1m"
DEMO_ALERT_FOR = "5s"


def stack_config(config: Config, *, exporter_url: str, alertmanager_url: str, slack_url_file: Path,
                 smtp_port: int) -> Config:
    """Short windows and intervals; Alertmanager's receivers pointed at the local sinks and this exporter."""
    alerting = config.alerting
    return dataclasses.replace(
        config,
        metrics=dataclasses.replace(config.metrics, collection_interval=1.0),
        alerting=dataclasses.replace(
            alerting,
            enabled=True,
            evaluation_interval=DEMO_INTERVAL,
            rate_window=DEMO_RATE_WINDOW,
            alert_for=DEMO_ALERT_FOR,
            alertmanager_url=alertmanager_url,
            exporter_url=exporter_url,
            slack=dataclasses.replace(alerting.slack, webhook_url_file=str(slack_url_file)),
            email=dataclasses.replace(alerting.email, smtp_server="127.0.0.1", smtp_port=smtp_port,
                                      to_addresses=alerting.email.to_addresses or ("oncall@example.com",),
                                      username="", password_file="", require_tls=False),
        ),
    )


def _prometheus_yml(rules_dir: Path, exporter: str, alertmanager: str) -> str:
    from .render.rules import JOB
    return f"""global:
  scrape_interval: {DEMO_INTERVAL}
  evaluation_interval: {DEMO_INTERVAL}
rule_files:
  - {rules_dir}/*.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["{alertmanager}"]
scrape_configs:
  - job_name: {JOB}
    static_configs:
      - targets: ["{exporter}"]
"""


def _alertmanager_yml(config: Config, templates_dir: Path) -> str:
    from .render import alertmanager as am
    from .render.rules import dump_yaml
    document = am.alertmanager_config(config)
    document["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    document["templates"] = [str(templates_dir / am.TEMPLATE_NAME)]
    return dump_yaml(document)


def _host_port(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


def start_stack(cleanup: ExitStack, config: Config, exporter_url: str, console: Console, workdir: Path) -> Config:
    """Sinks, rendered rules and routes, Alertmanager, Prometheus; each is registered on `cleanup` to stop."""
    from . import stack
    from .render.alertmanager import render_alertmanager
    from .render.rules import render_prometheus
    from .sinks import SlackSink, SMTPSink, format_email_line, format_slack_line

    slack = SlackSink(on_message=lambda body: console.line("[slack] " + format_slack_line(body))).start()
    cleanup.callback(slack.stop)
    smtp = SMTPSink(on_message=lambda message: console.line("[email] " + format_email_line(message))).start()
    cleanup.callback(smtp.stop)
    slack_url_file = workdir / "slack_webhook_url"
    slack_url_file.write_text(slack.url + "\n")

    alertmanager_port = stack.free_port()
    config = stack_config(config, exporter_url=exporter_url, alertmanager_url=f"http://127.0.0.1:{alertmanager_port}",
                          slack_url_file=slack_url_file, smtp_port=smtp.port)
    rendered = workdir / "rendered"
    render_prometheus(config, rendered)
    render_alertmanager(config, rendered)

    alertmanager = stack.start_alertmanager(
        workdir / "alertmanager", _alertmanager_yml(config, rendered / "alertmanager" / "templates"),
        port=alertmanager_port)
    cleanup.callback(alertmanager.stop)
    prometheus = stack.start_prometheus(
        workdir / "prometheus",
        _prometheus_yml(rendered / "prometheus" / "rules", _host_port(exporter_url), _host_port(alertmanager.url)),
        extra_args=("--rules.alert.resend-delay=1s",))
    cleanup.callback(prometheus.stop)
    console.line(f"[stack] Prometheus {prometheus.url} | Alertmanager {alertmanager.url} | "
                 f"Slack sink {slack.url} | SMTP sink 127.0.0.1:{smtp.port}")
    console.line(f"[stack] alerts on a {DEMO_RATE_WINDOW} window, pending {DEMO_ALERT_FOR}; "
                 f"the error-ratio alert opens the agent's breaker via {exporter_url}/v1/alertmanager")
    return config


# -- running it ---------------------------------------------------------------------------

def run_demo(config: Config, *, duration: float | None = None, stack: bool = False,
             listen_address: str = "127.0.0.1:9464", seed: int = 1, stop: threading.Event | None = None,
             tasks_per_second: float = 20.0, incident: Incident = Incident(), stream=None) -> int:
    """Run the demo until `duration` passes or `stop` is set; stops everything it started."""
    stop = stop or threading.Event()
    console = Console(stream)
    logging.getLogger("mail.log").setLevel(logging.WARNING)   # aiosmtpd narrates every SMTP command at INFO
    config = demo_config(config, listen_address=listen_address)
    with ExitStack() as cleanup:
        telemetry = Telemetry(config)
        cleanup.callback(telemetry.shutdown)
        remediator = AlertRemediator(config, telemetry)
        # No bearer token: the demo's own Alertmanager posts to /v1/alertmanager without one.
        handle = start_server(Service(telemetry, max_body_bytes=config.server.max_body_bytes,
                                      remediator=remediator), listen_address)
        cleanup.callback(handle.stop)
        console.line(f"[demo] exporter on {handle.url}/metrics, agent health on {handle.url}/v1/agents "
                     "(Ctrl-C to stop)")
        if stack:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="agent-exporter-demo-")))
            start_stack(cleanup, config, handle.url, console, workdir)

        simulated_clock = SimulatedClock()
        worker_stop = threading.Event()
        policy = RetryPolicy.from_config(config.healing,
                                         sleep=lambda seconds: worker_stop.wait(seconds / BACKOFF_COMPRESSION))
        healer = Healer.from_config(config, telemetry, remediator=remediator, policy=policy, clock=simulated_clock,
                                    cost_of=lambda agent, outcome: getattr(outcome, "cost_usd", None))
        orchestrator = SimulatedOrchestrator(telemetry, healer, incident=incident, seed=seed,
                                             simulated_clock=simulated_clock)
        console.line(f"[demo] incident: {incident.agent} fails {incident.error_rate:.0%} of its calls and is "
                     f"{incident.slowdown:g}x slower from t={incident.start:g}s to t={incident.end:g}s")
        healing = HealingReporter(remediator, console)
        worker = threading.Thread(target=orchestrator.run, args=(worker_stop, tasks_per_second),
                                  name="demo-orchestrator", daemon=True)
        worker.start()
        cleanup.callback(worker.join, 10)
        cleanup.callback(worker_stop.set)
        cleanup.callback(console.close)

        reporter = StatusReporter(orchestrator, telemetry.store)
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stop.wait(0.5 if deadline is None else max(min(0.5, deadline - time.monotonic()), 0))
            healing.poll()
            console.status(reporter.text())
    stats = orchestrator.stats
    tasks = stats.tasks_done + stats.tasks_failed
    print(f"[demo] stopped: {tasks:,} tasks ({stats.tasks_done / max(tasks, 1):.1%} done), "
          f"{stats.executions:,} agent executions, spend ${stats.spend_usd:,.2f}",
          file=console.stream, flush=True)
    return 0
