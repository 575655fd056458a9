"""Adaptive agent selection per task type: Thompson sampling with decay, plus latency and cost.

Each (task, agent) keeps a Beta posterior of its success probability.  Every new
observation for a task first decays all of that task's evidence by `decay`
(so old evidence fades: an agent that degraded loses its traffic quickly, and
one that recovered gets it back, because faded evidence means exploration).
To choose, each available agent draws a success probability from its posterior
and pays a penalty for its recent latency and cost relative to the other
candidates; the highest score wins.  Agents whose breaker is open are skipped.
The selection probability of each agent (estimated by drawing, with a separate
generator) is exported as orchestrator_selector_weight{task, agent}, every few
choices and whenever the breaker of one of the task's candidates changes state.

Quality: a success may carry the evaluation score of its answer (0..1); with
`quality_weight` q it counts as 1 - q * (1 - score) of a success and the rest
of a failure, so an agent that succeeds technically but answers badly loses
traffic.  q = 0 ignores scores.

Fleet: set_fleet() gives per-agent statistics of the whole fleet (from
Prometheus, see fleet_stats.py).  An agent's posterior then adds
`fleet_weight` observations at the fleet's success ratio to `local_weight`
times the replica's own decayed outcomes, and its latency and cost are the
means of the two weighted alike.  clear_fleet() returns to local learning.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .breaker import OPEN


@dataclass
class _Evidence:
    successes: float = 0.0
    failures: float = 0.0
    latency: float | None = None     # exponentially weighted mean, seconds
    cost: float | None = None        # exponentially weighted mean, USD


_NO_EVIDENCE = _Evidence()


@dataclass(frozen=True)
class FleetStats:
    """One agent's statistics over the whole fleet; None where the fleet has no data."""
    success_ratio: float | None = None
    latency_seconds: float | None = None
    cost_usd: float | None = None


class AdaptiveSelector:
    """Chooses an agent per task type from observed success, quality, latency and cost.

    `decay` in (0, 1]: the weight left to old evidence per new observation of
    the task (0.97 remembers about the last 33).  `latency_weight` and
    `cost_weight`: the largest score penalty for being the slowest or the most
    expensive candidate; `quality_weight`: how much evaluation scores count;
    `smoothing`: the weight of the newest latency and cost in their moving
    averages; `fleet_weight` and `local_weight`: the blend with set_fleet()'s
    statistics.  `rng` seeds the choices; `breakers` (CircuitBreakers) makes
    open agents unavailable; `telemetry` receives the weights every
    `publish_every` choices of a task (from the first) and when a candidate's
    breaker changes state.
    """

    def __init__(self, *, decay: float = 0.97, latency_weight: float = 0.2, cost_weight: float = 0.1,
                 quality_weight: float = 0.5, smoothing: float = 0.3, fleet_weight: float = 10.0,
                 local_weight: float = 1.0, rng: random.Random | None = None, breakers=None, telemetry=None,
                 publish_every: int = 10, weight_draws: int = 200):
        if not 0 < decay <= 1:
            raise ValueError("decay must be in (0, 1]")
        if not 0 <= quality_weight <= 1:
            raise ValueError("quality_weight must be in [0, 1]")
        if publish_every < 1:
            raise ValueError("publish_every must be at least 1")
        self.decay = decay
        self.latency_weight = latency_weight
        self.cost_weight = cost_weight
        self.quality_weight = quality_weight
        self.smoothing = smoothing
        self.fleet_weight = fleet_weight
        self.local_weight = local_weight
        self.rng = rng or random.Random()
        self._weights_rng = random.Random(self.rng.random())
        self.breakers = breakers
        self.telemetry = telemetry
        self.publish_every = publish_every
        self.weight_draws = weight_draws
        self._evidence: dict[str, dict[str, _Evidence]] = {}
        self._fleet: dict[str, FleetStats] = {}
        self._candidates: dict[str, tuple[str, ...]] = {}
        self._chosen: dict[str, int] = {}
        self._published: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        if breakers is not None:
            breakers.add_listener(self._breaker_changed)

    @classmethod
    def from_config(cls, healing, **kwargs) -> "AdaptiveSelector":
        """From a config.HealingConfig (healing.selector, and the blend of healing.fleet.prometheus)."""
        selector, fleet = healing.selector, healing.fleet.prometheus
        settings = dict(decay=selector.decay, latency_weight=selector.latency_weight,
                        cost_weight=selector.cost_weight, quality_weight=selector.quality_weight,
                        fleet_weight=fleet.fleet_weight, local_weight=fleet.local_weight)
        return cls(**{**settings, **kwargs})

    # -- the fleet's statistics ---------------------------------------------------

    def set_fleet(self, stats: Mapping[str, FleetStats]) -> None:
        """Blend these per-agent fleet statistics into every choice from now on (replacing earlier ones)."""
        stats = dict(stats)
        with self._lock:
            self._fleet = stats

    def clear_fleet(self) -> None:
        """Back to local learning alone (the fleet's statistics are unavailable)."""
        self.set_fleet({})

    def fleet(self) -> dict[str, FleetStats]:
        """The fleet statistics in use, by agent (empty when learning alone)."""
        return dict(self._fleet)

    # -- choosing ---------------------------------------------------------------

    def choose(self, task: str, candidates: Sequence[str]) -> str:
        """The agent to try first for one task of type `task`."""
        if not candidates:
            raise ValueError(f"no candidate agents for task {task!r}")
        candidates = tuple(candidates)
        available = self._available(candidates) or candidates   # all open: the caller's breakers refuse them
        with self._lock:
            self._candidates[task] = candidates
            evidence = self._evidence.setdefault(task, {})
            choice = self._draw(evidence, available, self.rng)
            self._chosen[task] = chosen = self._chosen.get(task, 0) + 1
        if self.telemetry is not None and (chosen - 1) % self.publish_every == 0:
            self.publish(task)
        return choice

    def observe(self, task: str, agent: str, success: bool, latency_seconds: float | None = None,
                cost_usd: float | None = None, score: float | None = None) -> None:
        """One outcome of `agent` on a task of type `task`; `score` is its answer's evaluation (0..1).

        A score, latency or cost that is no number (NaN; for latency and cost also infinite or
        negative) is taken as unknown: one would spoil the agent's evidence for good."""
        credit = 1.0 if success else 0.0
        if success and score is not None and not math.isnan(score):
            credit -= self.quality_weight * (1.0 - min(max(score, 0.0), 1.0))
        latency_seconds, cost_usd = _measured(latency_seconds), _measured(cost_usd)
        with self._lock:
            evidence = self._evidence.setdefault(task, {})
            for other in evidence.values():
                other.successes *= self.decay
                other.failures *= self.decay
            mine = evidence.setdefault(agent, _Evidence())
            if credit == 1.0:
                mine.successes += 1
            elif credit == 0.0:
                mine.failures += 1
            else:
                mine.successes += credit
                mine.failures += 1.0 - credit
            if latency_seconds is not None:
                mine.latency = _smooth(mine.latency, latency_seconds, self.smoothing)
            if cost_usd is not None:
                mine.cost = _smooth(mine.cost, cost_usd, self.smoothing)

    # -- weights ----------------------------------------------------------------

    def weights(self, task: str) -> dict[str, float]:
        """Selection probability of each candidate of `task` now (0 for open breakers)."""
        candidates = self._candidates.get(task, ())
        if not candidates:
            return {}
        available = self._available(candidates)
        wins = dict.fromkeys(candidates, 0)
        if not available:
            return {agent: 0.0 for agent in candidates}
        with self._lock:
            evidence = self._evidence.setdefault(task, {})
            for _ in range(self.weight_draws):
                wins[self._draw(evidence, available, self._weights_rng)] += 1
        return {agent: n / self.weight_draws for agent, n in wins.items()}

    def publish(self, task: str) -> dict[str, float]:
        """Compute the weights of `task`, export them, and remember them for agents_status().

        An agent exported before that is no longer among the task's candidates gets 0, not the
        weight it had when it was one."""
        weights = self.weights(task)
        dropped = self._published.get(task, {}).keys() - weights.keys()
        weights.update(dict.fromkeys(sorted(dropped), 0.0))
        self._published[task] = weights
        if self.telemetry is not None:
            for agent, weight in weights.items():
                self.telemetry.set_selector_weight(task, agent, weight)
        return weights

    def published(self) -> dict[str, dict[str, float]]:
        """The last exported weights: task -> agent -> weight."""
        return {task: dict(weights) for task, weights in self._published.items()}

    def tasks(self) -> list[str]:
        return list(self._candidates)

    def evidence(self, task: str, agent: str) -> tuple[float, float]:
        """(decayed successes, decayed failures) of `agent` on `task`."""
        mine = self._evidence.get(task, {}).get(agent, _Evidence())
        return mine.successes, mine.failures

    # -- internals --------------------------------------------------------------

    def _breaker_changed(self, agent: str, old: str, new: str, reason: str) -> None:
        """An agent opened or came back: the exported weights of its tasks say so now, not choices later."""
        if self.telemetry is None:
            return
        for task, candidates in list(self._candidates.items()):
            if agent in candidates:
                self.publish(task)

    def _available(self, candidates: tuple[str, ...]) -> tuple[str, ...]:
        """The candidates whose breaker is not open."""
        if self.breakers is None:
            return candidates
        return tuple(a for a in candidates if self.breakers.get(a).state != OPEN)

    def _draw(self, evidence: dict[str, _Evidence], available: tuple[str, ...], rng: random.Random) -> str:
        beliefs = [self._belief(agent, evidence.get(agent) or _NO_EVIDENCE) for agent in available]
        max_latency = max((b[2] for b in beliefs if b[2] is not None), default=0.0)
        max_cost = max((b[3] for b in beliefs if b[3] is not None), default=0.0)
        best, best_score = available[0], float("-inf")
        for agent, (successes, failures, latency, cost) in zip(available, beliefs):
            score = rng.betavariate(1.0 + successes, 1.0 + failures)
            # Latency and cost are believed as much as the success evidence: when it has
            # faded (the agent was not tried for a while) so has the penalty, which lets a
            # recovered agent be tried again.
            confidence = (successes + failures) / (1.0 + successes + failures)
            if latency is not None and max_latency > 0:
                score -= confidence * self.latency_weight * latency / max_latency
            if cost is not None and max_cost > 0:
                score -= confidence * self.cost_weight * cost / max_cost
            if score > best_score:
                best, best_score = agent, score
        return best

    def _belief(self, agent: str, mine: _Evidence) -> tuple[float, float, float | None, float | None]:
        """(successes, failures, latency, cost) of `agent`: local evidence blended with the fleet's."""
        fleet = self._fleet.get(agent)
        if fleet is None:
            if self.local_weight == 1.0:
                return mine.successes, mine.failures, mine.latency, mine.cost
            fleet = FleetStats()
        local = self.local_weight
        successes, failures = local * mine.successes, local * mine.failures
        if fleet.success_ratio is not None:
            successes += self.fleet_weight * fleet.success_ratio
            failures += self.fleet_weight * (1.0 - fleet.success_ratio)
        local_n = local * (mine.successes + mine.failures)
        return (successes, failures, _blend(mine.latency, local_n, fleet.latency_seconds, self.fleet_weight),
                _blend(mine.cost, local_n, fleet.cost_usd, self.fleet_weight))


def _blend(local: float | None, local_n: float, fleet: float | None, fleet_n: float) -> float | None:
    """The mean of a local and a fleet estimate, weighted by the evidence behind each."""
    if fleet is None:
        return local
    if local is None or local_n <= 0:
        return fleet
    return (local * local_n + fleet * fleet_n) / (local_n + fleet_n)


def _measured(value: float | None) -> float | None:
    """A latency or cost the averages can take, else None."""
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _smooth(previous: float | None, value: float, alpha: float) -> float:
    return value if previous is None else previous + alpha * (value - previous)
