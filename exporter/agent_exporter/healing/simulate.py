"""`agent-exporter simulate`: the self-healing policies compared on a scripted degradation.

The workload is the demo's shape: every task goes through four steps
(planning, coding, reviewing, testing), each done by one of two model variants
of that step's agent, with per-variant prices, failure rates and lognormal
latencies.  Tasks arrive every `interarrival` simulated seconds.  During the
middle half of the run (`degraded`, as fractions of the tasks) the first
choice of the coding step fails half the time and is four times slower, then
recovers.  A task succeeds when every step succeeds within the policy:

  static       always the first variant, one attempt
  round_robin  variants in turn, one attempt
  retry_only   the first variant, with the configured retries and backoff
  full         the Healer: adaptive selection, retries, breakers, fallbacks

success_rate is over all tasks of the run (half of them in the degraded
stretch); p95_task_seconds is the 95th percentile of a task's total time
(attempts and backoff); cost_per_task_usd includes failed attempts.  Time is
simulated: nothing sleeps, and a run of all policies takes seconds.

The selector figures are about the degraded step under `full`, counted in that
step's tasks and by where the selector sent each task first: tasks_to_shift is
how many tasks after the change until the failing variant's share of the last
`window` tasks is at most 10 % (the worst seed); share_on_failing_after_shift
is its share from then until the recovery (mean over seeds); tasks_to_return
is how many tasks after the recovery until its share of the last `window`
tasks is back to at least half (the worst seed; None if it never returns).

run_quality_simulation is the same workload under `full` where the first
choice of the coding step keeps succeeding but its answers score low (an
evaluator's score in 0..1) during the middle half, once with the selector
weighing scores (healing.selector.quality_weight, at least 0.5) and once
ignoring them.  simulate_fleet.py runs several replicas of `full`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ..config import Config
from .breaker import CircuitBreakers
from .fallback import FallbackChain
from .healer import Healer
from .retry import RetryPolicy
from .selector import AdaptiveSelector

POLICIES = ("static", "round_robin", "retry_only", "full")


@dataclass(frozen=True)
class Variant:
    agent: str
    median_seconds: float
    sigma: float              # lognormal shape
    error_rate: float
    cost_usd: float           # per successful call; a failed call costs its prompt, a third of it
    quality: float = 0.85     # mean evaluation score of its answers


# Per step, its variants, the first one the static choice.
STEPS: dict[str, tuple[Variant, ...]] = {
    "planning": (Variant("planner-gpt-4o", 2.5, 0.4, 0.005, 0.013),
                 Variant("planner-claude-sonnet", 3.0, 0.4, 0.01, 0.016)),
    "coding": (Variant("coder-claude-sonnet", 6.0, 0.5, 0.01, 0.055, quality=0.9),
               Variant("coder-gpt-4o", 9.0, 0.5, 0.03, 0.050)),
    "reviewing": (Variant("reviewer-gpt-4o", 3.0, 0.4, 0.005, 0.020),
                  Variant("reviewer-claude-haiku", 2.5, 0.4, 0.02, 0.008)),
    "testing": (Variant("tester-claude-haiku", 4.0, 0.5, 0.01, 0.009),
                Variant("tester-gpt-4o-mini", 4.5, 0.5, 0.02, 0.004)),
}


@dataclass(frozen=True)
class Degradation:
    step: str = "coding"
    agent: str = "coder-claude-sonnet"
    start: float = 0.25          # fraction of the run's tasks
    end: float = 0.75
    error_rate: float = 0.5
    slowdown: float = 4.0
    score: float | None = None   # mean evaluation score of its answers while degraded (None: unchanged)


# Succeeds as often and as fast as ever, but answers badly.
QUALITY_DEGRADATION = Degradation(error_rate=0.01, slowdown=1.0, score=0.3)


class AgentFailed(Exception):
    def __init__(self, agent: str, cost_usd: float):
        super().__init__(f"{agent} failed")
        self.agent = agent
        self.cost_usd = cost_usd
        self.error_type = "InternalServerError"


@dataclass(frozen=True)
class Answer:
    """A successful call: what it cost, and its evaluation score when the run scores answers."""
    cost_usd: float
    score: float | None = None


class _World:
    """The simulated agents and clocks of one run.

    With `scores`, each answer gets an evaluation score (from its own generator,
    so the outcomes are those of a run without scores); `on_call(agent, ok,
    latency, cost)` sees every call (the fleet simulation's Prometheus).
    """

    def __init__(self, rng: random.Random, degradation: Degradation, tasks: int, interarrival: float, *,
                 scores: bool = False, on_call=None):
        self.rng = rng
        self.score_rng = random.Random(rng.random()) if scores else None
        self.on_call = on_call
        self.degradation = degradation
        self.variants = {v.agent: v for variants in STEPS.values() for v in variants}
        self.degraded_from = int(tasks * degradation.start)
        self.degraded_until = int(tasks * degradation.end)
        self.interarrival = interarrival
        self.task = 0
        self.now = 0.0                  # the current task's own clock: attempts and backoff
        self.cost = 0.0
        self.calls: list[str] = []      # agents called in the current step
        self.scores: list[float] = []   # scores of the degraded step's answers

    @property
    def arrival(self) -> float:
        """The clock breakers see: when the current task arrived."""
        return self.task * self.interarrival

    def degraded(self, agent: str) -> bool:
        return agent == self.degradation.agent and self.degraded_from <= self.task < self.degraded_until

    def call(self, agent: str) -> float:
        variant = self.variants[agent]
        self.calls.append(agent)
        latency = self.rng.lognormvariate(math.log(variant.median_seconds), variant.sigma)
        error_rate = variant.error_rate
        if self.degraded(agent):
            latency *= self.degradation.slowdown
            error_rate = self.degradation.error_rate
        self.now += latency
        if self.rng.random() < error_rate:
            self.cost += variant.cost_usd / 3
            if self.on_call is not None:
                self.on_call(agent, False, latency, variant.cost_usd / 3)
            raise AgentFailed(agent, variant.cost_usd / 3)
        self.cost += variant.cost_usd
        if self.on_call is not None:
            self.on_call(agent, True, latency, variant.cost_usd)
        if self.score_rng is None:
            return variant.cost_usd
        mean = self.degradation.score if self.degraded(agent) and self.degradation.score is not None \
            else variant.quality
        score = min(max(self.score_rng.gauss(mean, 0.08), 0.0), 1.0)
        if agent in self.variants and self._step_of(agent) == self.degradation.step:
            self.scores.append(score)
        return Answer(variant.cost_usd, score)

    def _step_of(self, agent: str) -> str:
        return next(step for step, variants in STEPS.items() if any(v.agent == agent for v in variants))

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _healer(policy: str, world: _World, config: Config, rng: random.Random, **selector_settings) -> Healer:
    healing = config.healing
    if policy == "full":
        breakers = CircuitBreakers.from_config(healing, clock=lambda: world.arrival)
        selector = AdaptiveSelector.from_config(healing, rng=random.Random(rng.random()), breakers=breakers,
                                                **selector_settings)
        return Healer(policy=RetryPolicy.from_config(healing, rng=rng, sleep=world.sleep),
                      breakers=breakers, selector=selector, fallbacks=FallbackChain(), clock=lambda: world.now,
                      cost_of=lambda agent, outcome: getattr(outcome, "cost_usd", outcome),
                      score_of=lambda agent, answer: getattr(answer, "score", None))
    attempts = healing.max_attempts if policy == "retry_only" else 1
    never_open = CircuitBreakers(error_ratio=1.0, min_calls=2**31, clock=lambda: world.arrival)
    return Healer(policy=RetryPolicy(attempts, healing.backoff_initial_seconds, healing.backoff_max_seconds,
                                     rng=rng, sleep=world.sleep),
                  breakers=never_open, clock=lambda: world.now)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _run(policy: str, seed: int, tasks: int, config: Config, degradation: Degradation, interarrival: float,
         **selector_settings):
    """One policy, one seed: (succeeded, task seconds, total cost, first choices of the degraded step, world)."""
    rng = random.Random(f"{seed}/{policy}")
    world = _World(random.Random(seed), degradation, tasks, interarrival, scores=degradation.score is not None)
    healer = _healer(policy, world, config, rng, **selector_settings)
    succeeded, durations, first_choices = 0, [], []
    for task in range(tasks):
        world.task, world.now = task, 0.0
        ok = True
        for step, variants in STEPS.items():
            agents = tuple(v.agent for v in variants)
            if policy == "round_robin":
                candidates = (agents[task % len(agents)],)
            elif policy == "full":
                candidates = agents
            else:
                candidates = agents[:1]
            world.calls = []
            try:
                healer.run(step, candidates, world.call)
            except AgentFailed:
                ok = False
            if step == degradation.step:
                first_choices.append(world.calls[0] if world.calls else None)
            if not ok:
                break
        succeeded += ok
        durations.append(world.now)
    return succeeded, durations, world.cost, first_choices, world


def _share(choices: list, agent: str) -> float:
    return sum(c == agent for c in choices) / len(choices) if choices else 0.0


def _selector_figures(first_choices: list, agent: str, start: int, end: int, window: int):
    """(tasks_to_shift, share after the shift until `end`, tasks_to_return) for one seed."""
    shift = next((n for n in range(window, end - start + 1)
                  if _share(first_choices[start + n - window:start + n], agent) <= 0.10), None)
    share_after = _share(first_choices[start + shift:end], agent) if shift is not None else 1.0
    back = next((n for n in range(window, len(first_choices) - end + 1)
                 if _share(first_choices[end + n - window:end + n], agent) >= 0.5), None)
    return shift, share_after, back


def run_simulation(seeds: int = 5, tasks: int = 2000, *, config: Config | None = None,
                   degradation: Degradation = Degradation(), interarrival: float = 0.25,
                   window: int = 20) -> dict:
    """All policies over `seeds` seeds of `tasks` tasks; the summary `simulate --format json` prints."""
    config = config or Config()
    policies = {}
    shifts, shares, returns = [], [], []
    for policy in POLICIES:
        succeeded, durations, cost = 0, [], 0.0
        for seed in range(1, seeds + 1):
            ok, seconds, spent, first_choices, _ = _run(policy, seed, tasks, config, degradation, interarrival)
            succeeded += ok
            durations.extend(seconds)
            cost += spent
            if policy == "full":
                shift, share, back = _selector_figures(
                    first_choices, degradation.agent, int(tasks * degradation.start),
                    int(tasks * degradation.end), window)
                shifts.append(shift)
                shares.append(share)
                returns.append(back)
        total = seeds * tasks
        policies[policy] = {"success_rate": round(succeeded / total, 4),
                            "p95_task_seconds": round(_percentile(durations, 0.95), 2),
                            "cost_per_task_usd": round(cost / total, 4)}
    return {
        "policies": policies,
        "selector": {
            "tasks_to_shift": None if None in shifts else max(shifts),
            "share_on_failing_after_shift": round(sum(shares) / len(shares), 4),
            "tasks_to_return": None if None in returns else max(returns),
        },
    }


def format_table(result: dict) -> str:
    """The simulate table: one row per policy, then the selector's figures."""
    lines = [f"{'policy':<12} {'success':>8} {'p95 task s':>11} {'cost/task $':>12}"]
    for policy, row in result["policies"].items():
        lines.append(f"{policy:<12} {row['success_rate']:>8.2%} {row['p95_task_seconds']:>11.1f} "
                     f"{row['cost_per_task_usd']:>12.4f}")
    selector = result["selector"]
    lines.append("")
    if selector["tasks_to_shift"] is None:      # in the worst seed: a run too short to see it
        lines.append("selector: traffic did not move off the failing agent within the run (try more --tasks)")
    else:
        back = ("not back by the end of the run" if selector["tasks_to_return"] is None
                else f"back within {selector['tasks_to_return']} tasks of recovery")
        lines.append(f"selector: traffic off the failing agent within {selector['tasks_to_shift']} tasks, "
                     f"{selector['share_on_failing_after_shift']:.1%} on it afterwards, {back}")
    return "\n".join(lines)


def run_quality_simulation(seeds: int = 5, tasks: int = 2000, *, config: Config | None = None,
                           degradation: Degradation = QUALITY_DEGRADATION, interarrival: float = 0.25,
                           window: int = 20) -> dict:
    """`full` with an agent that succeeds but answers badly, scores weighed and ignored; `simulate --mode quality`.

    Per variant: share_on_degraded is the degraded agent's share of the degraded
    step's tasks (first choices) while it answers badly, tasks_to_shift as in
    run_simulation (None: never), mean_score the mean score of that step's answers
    over the whole run (means over seeds, the worst seed for tasks_to_shift).
    """
    config = config or Config()
    weighed = max(config.healing.selector.quality_weight, 0.5)
    start, end = int(tasks * degradation.start), int(tasks * degradation.end)
    result = {}
    for name, quality_weight in (("weighed", weighed), ("ignored", 0.0)):
        shares, shifts, scores = [], [], []
        for seed in range(1, seeds + 1):
            *_, first_choices, world = _run("full", seed, tasks, config, degradation, interarrival,
                                            quality_weight=quality_weight)
            shares.append(_share(first_choices[start:end], degradation.agent))
            shifts.append(_selector_figures(first_choices, degradation.agent, start, end, window)[0])
            scores.append(sum(world.scores) / len(world.scores))
        result[name] = {"quality_weight": quality_weight,
                        "share_on_degraded": round(sum(shares) / seeds, 4),
                        "tasks_to_shift": None if None in shifts else max(shifts),
                        "mean_score": round(sum(scores) / seeds, 4)}
    return {"degraded_agent": degradation.agent, "degraded_score": degradation.score, "selector": result}


def format_quality_table(result: dict) -> str:
    lines = [f"{result['degraded_agent']} keeps succeeding but its answers score "
             f"{result['degraded_score']:g} on average while degraded",
             f"{'scores':<8} {'weight':>6} {'share on it':>12} {'shift (tasks)':>14} {'mean score':>11}"]
    for name, row in result["selector"].items():
        shift = "never" if row["tasks_to_shift"] is None else str(row["tasks_to_shift"])
        lines.append(f"{name:<8} {row['quality_weight']:>6g} {row['share_on_degraded']:>12.1%} {shift:>14} "
                     f"{row['mean_score']:>11.3f}")
    return "\n".join(lines)
