"""Shared timing helpers for the benchmarks: best of several rounds, in microseconds per call."""

from __future__ import annotations

import time


def per_call_us(fn, calls: int, rounds: int = 5) -> float:
    """Best-of-`rounds` mean time of `fn()` in µs; the best round is the least disturbed by noise."""
    return interleaved_us({fn: fn}, calls, rounds)[fn]


def interleaved_us(fns: dict, calls: int, rounds: int = 15) -> dict:
    """per_call_us for several functions whose ratio is the figure: their rounds alternate, so a
    noisy stretch of the machine's time falls on all of them rather than on one."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return {name: seconds * 1e6 for name, seconds in best.items()}


def row(name: str, us: float, baseline_us: float | None = None) -> str:
    ratio = f"{baseline_us / us:6.1f}x faster" if baseline_us else ""
    return f"  {name:<44} {us:9.3f} µs  {ratio}"
