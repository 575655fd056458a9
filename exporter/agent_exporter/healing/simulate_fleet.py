"""`agent-exporter simulate --mode fleet`: replicas that learn alone, or share statistics through Prometheus.

The workload and degradation are run_simulation's, under the `full` policy,
spread over `replicas` replicas in turn (each its own Healer: breakers,
selector, retries).  A late replica joins a third of the way into the
degradation and takes its turn from then on.

Sharing models healing.fleet.prometheus: every `refresh` simulated seconds
each selector gets the fleet's per-agent statistics (success ratio, median
latency, mean cost per call) over the `window` seconds that ended `delay`
seconds ago (scrape plus rule evaluation), like the recording rules' values
read from Prometheus; the late replica gets them when it starts.  `alone`
never shares; `shared_<window>` shares over healing.fleet.prometheus.window
(1m by default) and, for comparison, over the 5m of the dashboards' rules.

Figures per mode: success_rate over all tasks; tasks_to_shift and
tasks_to_return as in run_simulation, over the fleet's tasks of the degraded
step in arrival order (the worst seed; None when it did not happen within the
run's tasks_after_recovery tasks); work_on_failing, the share of that
step's tasks during the degradation that called the failing agent at all
(mean over seeds); late_replica_work_on_failing, the same over the late
replica's first `late_tasks` tasks of that step (mean over seeds, and the
worst seed).
"""

from __future__ import annotations

import random
import statistics
from collections import deque

from ..config import Config
from ..durations import prometheus_seconds
from .selector import FleetStats
from .simulate import STEPS, AgentFailed, Degradation, _healer, _selector_figures, _World


def _modes(config: Config) -> list[tuple[str, float | None]]:
    """(name, window in seconds or None for learning alone) of each mode compared."""
    windows = dict.fromkeys((config.healing.fleet.prometheus.window, "5m"))
    return [("alone", None), *((f"shared_{w}", float(prometheus_seconds(w))) for w in windows)]


class _Prometheus:
    """The fleet's calls, and the per-agent statistics a query would return at a given time."""

    def __init__(self, window: float, delay: float):
        self.window = window
        self.delay = delay
        self._calls: deque[tuple[float, str, bool, float, float]] = deque()

    def record(self, when: float, agent: str, ok: bool, latency: float, cost: float) -> None:
        self._calls.append((when, agent, ok, latency, cost))

    def stats(self, now: float) -> dict[str, FleetStats]:
        until = now - self.delay
        since = until - self.window
        while self._calls and self._calls[0][0] < since:
            self._calls.popleft()
        per_agent: dict[str, list] = {}
        for when, agent, ok, latency, cost in self._calls:
            if when <= until:
                per_agent.setdefault(agent, []).append((ok, latency, cost))
        return {agent: FleetStats(success_ratio=sum(c[0] for c in calls) / len(calls),
                                  latency_seconds=statistics.median(c[1] for c in calls),
                                  cost_usd=sum(c[2] for c in calls) / len(calls))
                for agent, calls in per_agent.items()}


def _run(window: float | None, seed: int, *, replicas: int, tasks: int, config: Config, degradation: Degradation,
         interarrival: float, delay: float, refresh: float, join_at: float, late_tasks: int):
    """One mode, one seed: (succeeded, first choices and whether the failing agent was called, per
    degraded-step task in arrival order, and the same for the late replica's first tasks)."""
    prometheus = _Prometheus(window, delay) if window is not None else None
    world = _World(random.Random(seed), degradation, tasks, interarrival,
                   on_call=None if prometheus is None else (
                       lambda agent, ok, latency, cost: prometheus.record(world.arrival, agent, ok, latency, cost)))
    rng = random.Random(f"{seed}/fleet")
    healers = [_healer("full", world, config, random.Random(rng.random())) for _ in range(replicas)]
    join = world.degraded_from + int(join_at * (world.degraded_until - world.degraded_from))
    late = None
    next_refresh = refresh
    succeeded, first_choices, touched, late_touched = 0, [], [], []
    for task in range(tasks):
        world.task, world.now = task, 0.0
        if prometheus is not None and world.arrival >= next_refresh:
            stats = prometheus.stats(world.arrival)
            for healer in healers:
                healer.selector.set_fleet(stats)
            next_refresh += refresh
        if task == join:
            late = _healer("full", world, config, random.Random(rng.random()))
            if prometheus is not None:          # its first poll, before its first task
                late.selector.set_fleet(prometheus.stats(world.arrival))
            healers.append(late)
        healer = healers[task % len(healers)]
        ok = True
        for step, variants in STEPS.items():
            world.calls = []
            try:
                healer.run(step, tuple(v.agent for v in variants), world.call)
            except AgentFailed:
                ok = False
            if step == degradation.step:
                first_choices.append(world.calls[0] if world.calls else None)
                touched.append(degradation.agent in world.calls)
                if healer is late and len(late_touched) < late_tasks:
                    late_touched.append(degradation.agent in world.calls)
            if not ok:
                break
        succeeded += ok
    return succeeded, first_choices, touched, late_touched


def run_fleet_simulation(replicas: int = 3, seeds: int = 5, tasks: int = 2000, *, config: Config | None = None,
                         degradation: Degradation = Degradation(), interarrival: float = 0.25, delay: float = 30.0,
                         refresh: float = 30.0, join_at: float = 1 / 3, late_tasks: int = 20,
                         window: int = 20) -> dict:
    """Every mode over `seeds` seeds of `tasks` fleet tasks; the summary `simulate --mode fleet` prints."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    config = config or Config()
    start, end = int(tasks * degradation.start), int(tasks * degradation.end)
    modes = {}
    for name, share_window in _modes(config):
        succeeded, shifts, returns, exposure, late = 0, [], [], [], []
        for seed in range(1, seeds + 1):
            ok, first_choices, touched, late_touched = _run(
                share_window, seed, replicas=replicas, tasks=tasks, config=config, degradation=degradation,
                interarrival=interarrival, delay=delay, refresh=refresh, join_at=join_at, late_tasks=late_tasks)
            succeeded += ok
            shift, _, back = _selector_figures(first_choices, degradation.agent, start, end, window)
            shifts.append(shift)
            returns.append(back)
            exposure.append(sum(touched[start:end]) / (end - start))
            late.append(sum(late_touched) / len(late_touched))
        modes[name] = {
            "window_seconds": share_window,
            "success_rate": round(succeeded / (seeds * tasks), 4),
            "tasks_to_shift": None if None in shifts else max(shifts),
            "work_on_failing": round(sum(exposure) / seeds, 4),
            "late_replica_work_on_failing": round(sum(late) / seeds, 4),
            "late_replica_work_on_failing_worst": round(max(late), 4),
            "tasks_to_return": None if None in returns else max(returns),
        }
    return {"replicas": replicas, "delay_seconds": delay, "refresh_seconds": refresh, "late_tasks": late_tasks,
            "tasks_after_recovery": tasks - end, "modes": modes}


def format_fleet_table(result: dict) -> str:
    lines = [f"{result['replicas']} replicas (+1 joining mid-degradation); statistics shared every "
             f"{result['refresh_seconds']:g}s, {result['delay_seconds']:g}s old",
             f"{'mode':<10} {'success':>8} {'shift':>6} {'on failing':>11} "
             f"{'late replica, first ' + str(result['late_tasks']):>27} {'return':>7}"]
    for name, row in result["modes"].items():
        shift = "never" if row["tasks_to_shift"] is None else str(row["tasks_to_shift"])
        back = f"> {result['tasks_after_recovery']}" if row["tasks_to_return"] is None else str(row["tasks_to_return"])
        late = f"{row['late_replica_work_on_failing']:.1%} (worst {row['late_replica_work_on_failing_worst']:.0%})"
        lines.append(f"{name:<10} {row['success_rate']:>8.2%} {shift:>6} {row['work_on_failing']:>11.1%} "
                     f"{late:>27} {back:>7}")
    return "\n".join(lines)
