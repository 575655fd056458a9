"""The demo's simulated orchestrator: agents, tools, a workflow, and a scripted incident.

The workload is shaped like a real multi-agent orchestrator: tasks move through
a workflow state machine (queued -> planning -> coding -> reviewing -> testing
-> done, or failed); each step's agent (planner, coder, reviewer, tester) runs
as one of two model variants (coder-claude-sonnet, coder-gpt-4o, ...), chosen
and retried by the self-healing layer (adaptive selection, retries, fallbacks,
circuit breakers); agents call tools, use tokens priced from the config's price
table, get an evaluation score for their answers, and take lognormal time.
Time is compressed: recorded durations are the simulated ones, while many
tasks run per wall-clock second.  Each task is one workflow run.

A scripted incident makes one model variant of one agent fail about half the
time, and slow down, for a stretch of the run, then recover: the healing layer
moves the work to the other variant.  Within it, a shorter outage of a tool
that both coder variants need (the workspace's file writes) makes coding fail
whichever agent does it: no fallback helps, tasks fail, and the workflow (task)
success objective burns, which per-agent healing cannot prevent.  The run's
clock is wall time from `started_at`, so replicas started apart share one incident.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass

from msgspec.structs import replace

from .. import events
from ..config import Config, ModelPrice
from ..healing import CircuitOpenError

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

EVALUATOR = "judge"       # scores every successful answer in 0..1


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
    quality: float = 0.85                      # mean evaluation score of its answers


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
                  ("file_read", "file_write", "code_exec", "lint"), quality=0.9),
        AgentSpec("coder-gpt-4o", "gpt-4o", 5.5, 0.3, 0.005, 6000, 3500,
                  ("file_read", "file_write", "code_exec")))),
    ("reviewing", (
        AgentSpec("reviewer-gpt-4o", "gpt-4o", 2.0, 0.3, 0.002, 5000, 800, ("file_read", "lint")),
        AgentSpec("reviewer-claude-haiku", "claude-3-5-haiku", 4.0, 0.3, 0.005, 5000, 1000, ("file_read",),
                  quality=0.8))),
    ("testing", (
        AgentSpec("tester-claude-haiku", "claude-3-5-haiku", 3.0, 0.3, 0.002, 3000, 1500,
                  ("run_tests", "code_exec", "file_read")),
        AgentSpec("tester-gpt-4o-mini", "gpt-4o-mini", 5.0, 0.3, 0.005, 3000, 2000, ("run_tests", "code_exec"),
                  quality=0.8))),
)
AGENTS = {spec.name: spec for _, variants in STEPS for spec in variants}
WORKFLOWS = (("feature", 0.6), ("bugfix", 0.4))
ERROR_TYPES = ("RateLimitError", "APITimeoutError", "InternalServerError")
# Retry backoff runs this many times faster than configured, like the rest of the demo's time.
BACKOFF_COMPRESSION = 20.0


@dataclass(frozen=True)
class Outage:
    """A tool is down between `start` and `end` (seconds into the run): every call of an agent that uses it fails."""
    tool: str = "file_write"
    start: float = 40.0
    end: float = 55.0
    error_type: str = "WorkspaceUnavailable"

    def hits(self, elapsed: float, spec: AgentSpec) -> bool:
        return self.tool in spec.tools and self.start <= elapsed < self.end


@dataclass(frozen=True)
class Incident:
    """One agent variant fails and slows down between `start` and `end` (seconds into the run);
    `outage`, when set, also takes a shared tool down for a while."""
    agent: str = "coder-claude-sonnet"
    start: float = 20.0
    end: float = 80.0
    error_rate: float = 0.5
    slowdown: float = 4.0
    outage: Outage | None = Outage()

    def active(self, elapsed: float, agent: str) -> bool:
        return agent == self.agent and self.start <= elapsed < self.end


class AgentFailure(Exception):
    """A simulated agent call that failed; `error_type` is what the LLM client would raise."""

    def __init__(self, agent: str, error_type: str, cost_usd: float | None):
        super().__init__(f"{agent}: {error_type}")
        self.agent = agent
        self.error_type = error_type
        self.cost_usd = cost_usd


@dataclass(frozen=True)
class AgentResult:
    agent: str
    model: str
    duration_seconds: float
    cost_usd: float | None
    score: float                   # the evaluator's score of the answer


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


@dataclass
class DemoStats:
    tasks_started: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    executions: int = 0
    execution_errors: int = 0
    spend_usd: float = 0.0


class SimulatedOrchestrator:
    """Runs tasks through the workflow; each step's agent is called through the healer.

    `started_at` (unix seconds, default now) is the run's t=0, the incident's timeline.
    """

    def __init__(self, telemetry, healer, *, incident: Incident = Incident(), seed: int = 1,
                 simulated_clock: SimulatedClock | None = None, started_at: float | None = None,
                 clock=time.time):
        self.telemetry = telemetry
        self.healer = healer
        self.incident = incident
        self.rng = random.Random(seed)
        self.simulated_clock = simulated_clock or SimulatedClock()
        self.clock = clock
        self.started = clock() if started_at is None else started_at
        self.stats = DemoStats()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def call_agent(self, agent: str) -> AgentResult:
        """One simulated agent execution, recorded with its tool calls; raises AgentFailure when it fails."""
        spec = AGENTS[agent]
        rng = self.rng
        tel = self.telemetry
        duration = rng.lognormvariate(math.log(spec.median_seconds), spec.sigma)
        error_rate = spec.error_rate
        elapsed = self.elapsed()
        if self.incident.active(elapsed, agent):
            duration *= self.incident.slowdown
            error_rate = self.incident.error_rate
        outage = self.incident.outage
        down = outage is not None and outage.hits(elapsed, spec)
        self.simulated_clock.advance(duration)
        failed = down or rng.random() < error_rate
        input_tokens = int(rng.lognormvariate(math.log(spec.input_tokens), 0.4))
        output_tokens = 0 if failed else int(rng.lognormvariate(math.log(spec.output_tokens), 0.5))
        error_type = outage.error_type if down else rng.choice(ERROR_TYPES) if failed else None
        tools = rng.sample(spec.tools, rng.randint(0, len(spec.tools)))
        if down and outage.tool not in tools:
            tools.append(outage.tool)           # the call that failed the agent
        for tool in tools:
            median, tool_error_rate = TOOLS[tool]
            tool_failed = (down and tool == outage.tool) or rng.random() < tool_error_rate
            tel.record(events.ToolCall(
                tool=tool, agent=agent, status="error" if tool_failed else "success",
                duration_seconds=rng.lognormvariate(math.log(median), 0.7)))
        cost = tel.prices.cost(spec.model, input_tokens=input_tokens, output_tokens=output_tokens)
        tel.record(events.AgentExecution(
            agent=agent, model=spec.model, status="error" if failed else "success", duration_seconds=duration,
            input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost, error_type=error_type))
        with self._lock:
            self.stats.executions += 1
            self.stats.execution_errors += failed
            self.stats.spend_usd += cost or 0.0
        if failed:
            raise AgentFailure(agent, error_type, cost)
        score = min(max(rng.gauss(spec.quality, 0.08), 0.0), 1.0)
        tel.record(events.Evaluation(agent=agent, evaluator=EVALUATOR, score=score))
        return AgentResult(agent, spec.model, duration, cost, score)

    def run_task(self) -> bool:
        """One task through the workflow, recorded as one workflow run; True when it reached `done`."""
        tel = self.telemetry
        workflow = _pick(self.rng, WORKFLOWS)
        started = self.simulated_clock()
        with self._lock:
            self.stats.tasks_started += 1
        state = "queued"
        done = True
        for step, variants in STEPS:
            tel.state_transition(state, step, workflow=workflow)
            state = step
            try:
                self.healer.run(step, [spec.name for spec in variants], self.call_agent)
            except (AgentFailure, CircuitOpenError):   # every attempt failed, or no variant may be called
                done = False
                break
        tel.state_transition(state, "done" if done else "failed", workflow=workflow)
        tel.record(events.WorkflowRun(workflow=workflow, status="success" if done else "error",
                                      duration_seconds=self.simulated_clock() - started))
        with self._lock:
            if done:
                self.stats.tasks_done += 1
            else:
                self.stats.tasks_failed += 1
        return done

    def run(self, stop: threading.Event, tasks_per_second: float) -> None:
        """Run tasks at a steady pace until `stop` is set."""
        interval = 1.0 / tasks_per_second
        next_start = time.monotonic()
        while not stop.is_set():
            self.run_task()
            next_start += interval
            delay = next_start - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            elif delay < -1.0:
                next_start = time.monotonic()      # fell behind (slow machine): do not try to catch up


def demo_config(config: Config, *, listen_address: str) -> Config:
    """The user's config plus what the demo needs: model prices, fallbacks, a compressed-time budget."""
    prices = {**PRICES, **config.metrics.prices}
    fallbacks = {first.name: (second.name,) for _, (first, second) in STEPS}
    fallbacks.update(config.healing.fallbacks)
    # Time is compressed (hours of work in minutes): a budget sized for real time
    # would make the demo all about cost alerts.
    budget = replace(config.alerting.budget, day_usd=max(config.alerting.budget.day_usd, 5000.0),
                     month_usd=max(config.alerting.budget.month_usd, 100000.0))
    thresholds = replace(config.alerting.thresholds, cost_per_day_usd=budget.day_usd)
    # Hundreds of events a second: the first seconds' few failures must not read as a burn.
    min_events = max(config.alerting.min_events, 50)
    # No tickets: a slow burn is a matter of days, and the demo's Prometheus holds minutes, in which
    # an alternative agent failing 0.5 % of the time reads as burning a 1 % budget on three errors.
    slo = replace(config.alerting.slo, ticket_windows=())
    workflow_slo = replace(config.alerting.workflow_slo, ticket_windows=())
    return replace(
        config,
        metrics=replace(config.metrics, prices=prices),
        alerting=replace(config.alerting, budget=budget, thresholds=thresholds, min_events=min_events,
                         slo=slo, workflow_slo=workflow_slo),
        healing=replace(config.healing, fallbacks=fallbacks),
        server=replace(config.server, listen_address=listen_address),
    )
