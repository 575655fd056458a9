"""Circuit breakers: stop calling an agent that keeps failing, probe it again later.

closed --(error ratio >= threshold over the window, with at least min_calls calls)--> open
open --(cool-down elapsed)--> half_open --(all probes succeed)--> closed
half_open --(a probe fails)--> open
force_open() holds a breaker open (alert-driven remediation) until release() makes it half-open:
its probes decide, as after a cool-down (an alert can resolve only because the held agent got
no calls, so its resolution says nothing of the agent's health).

acquire() admits a call and returns its permit; the outcome recorded with that
permit counts as a probe only if the call was admitted as one in the current
half-open round (a call admitted before the breaker opened says nothing about
the agent now), and cancel(permit) hands back a probe whose call ended without
an outcome (the task's own error, a cancellation), so another call may probe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

_log = logging.getLogger(__name__)

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"

# listener(agent, old_state, new_state, reason)
StateListener = Callable[[str, str, str, str], None]


class Permit:
    """One admitted call (see CircuitBreaker.acquire); compared by identity.  `probe`: admitted
    as one of a half-open round's probes."""
    __slots__ = ("probe",)

    def __init__(self, probe: bool = False):
        self.probe = probe


class CircuitOpenError(Exception):
    """No agent could be called: every candidate's breaker refused."""

    def __init__(self, agents):
        self.agents = tuple(agents)
        super().__init__(f"circuit open for every candidate: {', '.join(self.agents)}")


class CircuitBreaker:
    """One agent's breaker.  Thread-safe; `clock` is injectable (seconds, monotonic)."""

    def __init__(self, agent: str, *, window_seconds: float = 60.0, error_ratio: float = 0.5,
                 min_calls: int = 10, cooldown_seconds: float = 30.0, half_open_probes: int = 3,
                 clock: Callable[[], float] = time.monotonic, listener: StateListener | None = None):
        if not 0 < error_ratio <= 1:
            raise ValueError("error_ratio must be in (0, 1]")
        if min_calls < 1 or half_open_probes < 1:
            raise ValueError("min_calls and half_open_probes must be at least 1")
        self.agent = agent
        self.window_seconds = window_seconds
        self.error_ratio_threshold = error_ratio
        self.min_calls = min_calls
        self.cooldown_seconds = cooldown_seconds
        self.half_open_probes = half_open_probes
        self.clock = clock
        self.listener = listener
        self._lock = threading.Lock()
        self._state = CLOSED
        self._opened_at = 0.0
        self._calls: deque[tuple[float, bool]] = deque()    # (time, failed) within the window
        self._errors = 0
        self._probes_started = 0
        self._probes_succeeded = 0
        self._probes: set[Permit] = set()      # permits of this half-open round's probes in flight
        self.forced = False
        # Why it last changed state: error_ratio, cooldown, probes, probe_failed, or an alert.
        self.reason = ""

    # -- state ---------------------------------------------------------------

    @property
    def state(self) -> str:
        changes = []
        with self._lock:
            self._advance(changes)
            state = self._state
        self._notify(changes)
        return state

    def allow(self) -> bool:
        """May the agent be called now?  In half-open, each True reserves one probe."""
        return self.acquire() is not None

    def acquire(self) -> Permit | None:
        """Like allow(): None when the agent may not be called, else the call's permit, for
        record_success(permit)/record_failure(permit), or cancel(permit) when it has no outcome."""
        changes = []
        with self._lock:
            self._advance(changes)
            if self._state == CLOSED:
                permit = Permit()
            elif self._state == HALF_OPEN and self._probes_started < self.half_open_probes:
                self._probes_started += 1
                permit = Permit(probe=True)
                self._probes.add(permit)
            else:
                permit = None
        self._notify(changes)
        return permit

    def record_success(self, permit: Permit | None = None) -> None:
        """A call succeeded; without its permit, in half-open it counts as a probe."""
        self._record(failed=False, permit=permit)

    def record_failure(self, permit: Permit | None = None) -> None:
        """A call failed; without its permit, in half-open it counts as a probe."""
        self._record(failed=True, permit=permit)

    def cancel(self, permit: Permit | None) -> None:
        """The call of `permit` ended without an outcome: its probe, if any, goes to another call."""
        with self._lock:
            if permit in self._probes:
                self._probes.discard(permit)
                self._probes_started -= 1

    def force_open(self, reason: str = "forced") -> None:
        """Hold the breaker open (no cool-down, no probes) until release()."""
        changes = []
        with self._lock:
            self.forced = True
            self._transition(OPEN, reason, changes)
        self._notify(changes)

    def release(self, reason: str = "released") -> None:
        """End a force_open(): the breaker goes half-open with a fresh window, and its probes decide."""
        changes = []
        with self._lock:
            if not self.forced:
                return
            self.forced = False
            self._calls.clear()
            self._errors = 0
            self._transition(HALF_OPEN, reason, changes)
        self._notify(changes)

    def window(self) -> tuple[int, int]:
        """(calls, errors) within the sliding window."""
        with self._lock:
            self._prune(self.clock())
            return len(self._calls), self._errors

    def error_ratio(self) -> float:
        calls, errors = self.window()
        return errors / calls if calls else 0.0

    # -- internals (called with the lock held) ------------------------------

    def _record(self, failed: bool, permit: Permit | None) -> None:
        changes = []
        with self._lock:
            now = self.clock()
            self._calls.append((now, failed))
            self._errors += failed
            self._prune(now)
            self._advance(changes)
            probe = permit is None or permit in self._probes
            self._probes.discard(permit)
            # While forced open, outcomes still count in the window, but the state holds.
            if not self.forced:
                if self._state == CLOSED:
                    calls = len(self._calls)
                    if calls >= self.min_calls and self._errors / calls >= self.error_ratio_threshold:
                        self._transition(OPEN, "error_ratio", changes)
                elif self._state == HALF_OPEN and probe:
                    if failed:
                        self._transition(OPEN, "probe_failed", changes)
                    else:
                        self._probes_succeeded += 1
                        if self._probes_succeeded >= self.half_open_probes:
                            self._calls.clear()
                            self._errors = 0
                            self._transition(CLOSED, "probes", changes)
        self._notify(changes)

    def _prune(self, now: float) -> None:
        horizon = now - self.window_seconds
        calls = self._calls
        while calls and calls[0][0] <= horizon:
            self._errors -= calls.popleft()[1]

    def _advance(self, changes: list) -> None:
        if (self._state == OPEN and not self.forced
                and self.clock() - self._opened_at >= self.cooldown_seconds):
            self._transition(HALF_OPEN, "cooldown", changes)

    def _transition(self, state: str, reason: str, changes: list) -> None:
        old = self._state
        self.reason = reason
        if state == OPEN:
            self._opened_at = self.clock()
        if state == HALF_OPEN:
            self._probes_started = self._probes_succeeded = 0
        self._probes.clear()                # a new state: earlier probes are no longer probes
        if state != old:
            self._state = state
            changes.append((old, state, reason))

    def _notify(self, changes: list) -> None:
        # Outside the lock: a listener may read the breaker.
        if self.listener is not None:
            for old, new, reason in changes:
                self.listener(self.agent, old, new, reason)


class CircuitBreakers:
    """The breakers of all agents, made on first use with shared settings.

    State changes go to `telemetry` (orchestrator_circuit_breaker_state) and to
    every listener added with add_listener().
    """

    def __init__(self, *, window_seconds: float = 60.0, error_ratio: float = 0.5, min_calls: int = 10,
                 cooldown_seconds: float = 30.0, half_open_probes: int = 3,
                 clock: Callable[[], float] = time.monotonic, telemetry=None):
        self._settings = dict(window_seconds=window_seconds, error_ratio=error_ratio, min_calls=min_calls,
                              cooldown_seconds=cooldown_seconds, half_open_probes=half_open_probes)
        self.clock = clock
        self.telemetry = telemetry
        self._breakers: dict[str, CircuitBreaker] = {}
        self._listeners: list[StateListener] = []
        self._lock = threading.Lock()
        if telemetry is not None:
            telemetry.refresh_on_scrape(self.advance)

    @classmethod
    def from_config(cls, healing, **kwargs) -> "CircuitBreakers":
        return cls(window_seconds=healing.breaker_window_seconds, error_ratio=healing.breaker_error_ratio,
                   min_calls=healing.breaker_min_calls, cooldown_seconds=healing.breaker_cooldown_seconds,
                   half_open_probes=healing.breaker_half_open_probes, **kwargs)

    def add_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def get(self, agent: str) -> CircuitBreaker:
        breaker = self._breakers.get(agent)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(agent)
            if breaker is None:
                breaker = CircuitBreaker(agent, clock=self.clock, listener=self._changed, **self._settings)
                if self.telemetry is not None:
                    # The gauge exists from the first call, set before another thread can change
                    # the breaker (and its gauge) and be overwritten.
                    self.telemetry.set_circuit_state(agent, CLOSED)
                self._breakers[agent] = breaker
        return breaker

    def __contains__(self, agent: str) -> bool:
        return agent in self._breakers

    def __iter__(self):
        return iter(list(self._breakers.values()))

    def advance(self) -> None:
        """Bring every breaker up to its clock: one open past its cool-down becomes half-open (and
        says so to the telemetry and listeners) though no call came to find out."""
        for breaker in self:
            breaker.state       # reading the state advances it

    def agent_count(self) -> int:     # not __len__: an empty registry must stay truthy for `breakers or ...`
        return len(self._breakers)

    def force_open(self, agent: str, reason: str = "forced") -> None:
        self.get(agent).force_open(reason)

    def release(self, agent: str, reason: str = "released") -> None:
        self.get(agent).release(reason)

    def _changed(self, agent: str, old: str, new: str, reason: str) -> None:
        # Every decision of the healing layer that takes an agent out of use, or back, is a line:
        # at most a few per agent per cool-down.
        _log.info("circuit breaker of %s: %s -> %s (%s)", agent, old, new, reason)
        if self.telemetry is not None:
            self.telemetry.set_circuit_state(agent, new)
        for listener in self._listeners:
            listener(agent, old, new, reason)
