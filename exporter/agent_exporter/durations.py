"""Durations as Prometheus and Go write them, and their length in seconds.

Two forms, for two readers:

* Prometheus durations (the config's windows and intervals, written into rules and
  prometheus.yml): whole numbers with the units ms, s, m, h, d, w and y, e.g. `1h30m`.
  No fractions, and no bare `0`.
* Go durations (time.ParseDuration; the exporter-toolkit web config's
  rate_limit.interval): decimal numbers with the units ns, us (or µs), ms, s, m and h,
  e.g. `1.5s` or `1m30s`, and a bare `0`.  No days, weeks or years.

Neither form takes a sign here: every duration we read is a length of time.
The patterns are JSON Schema compatible, so the config schema carries them too.
"""

from __future__ import annotations

import re

# [0-9], not \d, which takes every script's digits in Python; $(?!\n) because Python's $ also
# matches before a final line break, which JSON Schema's does not (nor Prometheus, nor Go).
PROMETHEUS_PATTERN = r"^([0-9]+(ms|s|m|h|d|w|y))+$(?!\n)"
GO_PATTERN = r"^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+)$(?!\n)"

_PROMETHEUS = re.compile(PROMETHEUS_PATTERN)
_PROMETHEUS_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_PROMETHEUS_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}

_GO = re.compile(GO_PATTERN)
_GO_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def prometheus_seconds(text: str) -> float:
    """Seconds in a Prometheus duration; ValueError for anything else."""
    if not isinstance(text, str) or not _PROMETHEUS.fullmatch(text):
        raise ValueError(f"expected a Prometheus duration such as 30s, 5m or 1h, got {text!r}")
    return sum(int(n) * _PROMETHEUS_UNITS[u] for n, u in _PROMETHEUS_PART.findall(text))


def prometheus_duration(seconds: float) -> str:
    """A Prometheus duration for a whole number of seconds, in the largest whole unit up to days."""
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def go_seconds(text: str) -> float:
    """Seconds in a Go duration; ValueError for anything else."""
    if not isinstance(text, str) or not _GO.fullmatch(text):
        raise ValueError(f"expected a duration such as 1s or 250ms, got {text!r}")
    return sum(float(n) * _GO_UNITS[u] for n, u in _GO_PART.findall(text))
