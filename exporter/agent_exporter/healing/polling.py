"""A poll on a schedule, in a background thread: interval with jitter, exponential backoff on failure.

Each wait is the interval times a random factor in [1 - jitter, 1 + jitter],
so replicas started together do not poll in step.  After n failures in a row
the wait is min(backoff_max, interval * 2**(n-1)) (never less than the
interval), jittered alike; the first success returns to the interval.  The
poll runs in the poller's own thread, never in the orchestrator's: a slow or
dead source costs at most one request timeout per attempt there.  The first
failure after a success and the first success after failures are logged, and
status() reports the source's health for /v1/agents and the metrics.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

_log = logging.getLogger("agent_exporter.healing.fleet")


class Poller:
    """Calls `poll()` now and then; `on_failure(exc)` after each failed poll, `on_result(ok)` after each poll.

    `name` labels logs and status ("alertmanager", "prometheus").  `rng`,
    `clock` (unix seconds, for status) are injectable for tests.
    """

    def __init__(self, name: str, poll: Callable[[], None], *, interval: float, jitter: float,
                 backoff_max: float, on_failure: Callable[[Exception], None] | None = None,
                 on_result: Callable[[bool], None] | None = None,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.time):
        if interval <= 0 or not 0 <= jitter < 1:
            raise ValueError("interval must be positive and jitter in [0, 1)")
        self.name = name
        self._poll = poll
        self.interval = interval
        self.jitter = jitter
        self.backoff_max = backoff_max
        self._on_failure = on_failure
        self._on_result = on_result
        self._rng = rng or random.Random()
        self._clock = clock
        self._stop = threading.Event()
        self._failed_with: type | None = None       # the kind of the last failure
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failures = 0                 # in a row
        self.polls = 0
        self.last_success: float | None = None
        self.last_error: str | None = None

    @property
    def up(self) -> bool | None:
        """Whether the last poll succeeded (None before the first)."""
        if self.polls == 0:
            return None
        return self.failures == 0

    def poll_once(self) -> bool:
        """Poll now, in the caller's thread; True when it succeeded."""
        try:
            self._poll()
        except Exception as exc:  # noqa: BLE001 - any failure of a source is the source being unavailable
            with self._lock:
                self.polls += 1
                self.failures += 1
                # Said when the source fails, and again when it fails otherwise (refused, then
                # answering nonsense): not at each poll.
                said = self.failures == 1 or type(exc) is not self._failed_with
                self._failed_with = type(exc)
                self.last_error = str(exc) or type(exc).__name__
            if said:
                _log.warning("fleet source %s unavailable, keeping the last state: %s", self.name, self.last_error)
            if self._on_failure is not None:
                self._on_failure(exc)
            if self._on_result is not None:
                self._on_result(False)
            return False
        with self._lock:
            recovered = self.failures > 0
            self.polls += 1
            self.failures = 0
            self.last_success = self._clock()
        if recovered:
            _log.info("fleet source %s available again", self.name)
        if self._on_result is not None:
            self._on_result(True)
        return True

    def delay(self) -> float:
        """The wait before the next poll."""
        base = self.interval
        if self.failures:
            # Capped doublings: 2**n is no float past n = 1023, and the wait is backoff_max long before.
            doublings = min(self.failures - 1, 1000)
            base = max(self.interval, min(self.backoff_max, self.interval * 2.0 ** doublings))
        return base * self._rng.uniform(1 - self.jitter, 1 + self.jitter)

    def start(self, *, poll_first: bool = True) -> "Poller":
        """Start polling in the background; with `poll_first`, poll once before returning."""
        if poll_first:
            self.poll_once()
        self._thread = threading.Thread(target=self._run, name=f"fleet-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.delay()):
            self.poll_once()

    def status(self) -> dict:
        with self._lock:
            return {"up": self.up, "consecutive_failures": self.failures, "last_success": self.last_success,
                    "last_error": self.last_error if self.failures else None,
                    "interval_seconds": self.interval}
