"""Retry policy: how many attempts, which errors, and exponential backoff with full jitter."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable


def _retryable_check(retryable) -> Callable[[BaseException], bool]:
    """Exception classes (one or a tuple) or a predicate, as one predicate."""
    if isinstance(retryable, type) and issubclass(retryable, BaseException):
        retryable = (retryable,)
    if isinstance(retryable, tuple):
        if not all(isinstance(c, type) and issubclass(c, BaseException) for c in retryable):
            raise TypeError("retryable must be exception classes or a predicate")
        return lambda exc: isinstance(exc, retryable)
    if callable(retryable):
        return retryable
    raise TypeError("retryable must be exception classes or a predicate")


class RetryPolicy:
    """Up to `max_attempts` attempts per agent; between them, full-jitter exponential backoff.

    The delay after failed attempt n (1-based) is uniform in [0, min(max_backoff,
    initial * multiplier**(n-1))] ("full jitter": callers that failed together do
    not retry together).  `retryable` decides which errors are worth another try:
    exception classes or a predicate.  `rng`, `sleep` and `async_sleep` are
    injectable so tests and the simulator run without waiting.
    """

    def __init__(self, max_attempts: int = 3, initial: float = 0.1, max_backoff: float = 5.0,
                 multiplier: float = 2.0, *, retryable=Exception, rng: random.Random | None = None,
                 sleep: Callable[[float], None] = time.sleep, async_sleep=asyncio.sleep):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if initial < 0 or max_backoff < 0:
            raise ValueError("backoff delays must not be negative")
        if multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        self.max_attempts = max_attempts
        self.initial = initial
        self.max_backoff = max_backoff
        self.multiplier = multiplier
        self._is_retryable = _retryable_check(retryable)
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.async_sleep = async_sleep

    @classmethod
    def from_config(cls, healing, **kwargs) -> "RetryPolicy":
        """From a config.HealingConfig; keyword arguments as for the constructor."""
        return cls(healing.max_attempts, healing.backoff_initial_seconds, healing.backoff_max_seconds,
                   **kwargs)

    def is_retryable(self, exc: BaseException) -> bool:
        return bool(self._is_retryable(exc))

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt `attempt` (1-based)."""
        return min(self.max_backoff, self.initial * self.multiplier ** (attempt - 1))

    def backoff(self, attempt: int) -> float:
        """A jittered delay after failed attempt `attempt` (1-based)."""
        return self.rng.uniform(0.0, self.ceiling(attempt))

    def delays(self) -> list[float]:
        """The jittered delays between all attempts of one agent (max_attempts - 1 of them)."""
        return [self.backoff(attempt) for attempt in range(1, self.max_attempts)]
