"""Durations as Prometheus and Go write them: the seconds they stand for, and back."""

import pytest

from agent_exporter.durations import go_seconds, prometheus_duration, prometheus_seconds


@pytest.mark.parametrize("text, seconds", [
    ("1h30m", 5400),
    ("1y", 31536000),               # Prometheus' year is 365 days
    ("1w2d", 777600),
    ("500ms", 0.5),
])
def test_prometheus_durations(text, seconds):
    assert prometheus_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    "1.5h",                         # no fractions
    "0",                            # no bare 0
    "",
    "-5m",                          # no sign
    "5m\n",                         # Python's $ matches before a final line break; Prometheus does not
    "\u0665m",                      # an Arabic-Indic 5: \d would take it, Prometheus does not
    "1d1",                          # a number without its unit
])
def test_bad_prometheus_durations(text):
    with pytest.raises(ValueError):
        prometheus_seconds(text)


@pytest.mark.parametrize("text, seconds", [
    (".5s", 0.5),
    ("1.5h", 5400),
    ("3µs", 3e-6),
    ("2us", 2e-6),
    ("1h30m", 5400),
    ("0", 0),                       # the one number Go takes without a unit
])
def test_go_durations(text, seconds):
    assert go_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1d", "", "1.", "us", "5s\n", "\u0665s", "-1s"])
def test_bad_go_durations(text):
    """Go has no days, and no digits but 0-9."""
    with pytest.raises(ValueError):
        go_seconds(text)


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"),
    (59, "59s"),
    (90, "90s"),                    # the largest *whole* unit: not 1.5m
    (90.9, "90s"),                  # fractions of a second are dropped
    (60, "1m"),
    (3600, "1h"),
    (86400, "1d"),
    (172800, "2d"),
    (604800, "7d"),                 # days at most
])
def test_prometheus_duration_uses_the_largest_whole_unit(seconds, text):
    assert prometheus_duration(seconds) == text
    assert prometheus_seconds(text) == int(seconds)
