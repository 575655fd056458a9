"""Values as Prometheus computes them, for the rendered rule tests' expectations.

The annotations' Go templates (`humanizePercentage`, `humanizeDuration`,
`printf`, `urlquery`, `with`), a ratio of counter increases over a window, and `predict_linear`:
each written the way Prometheus 2.42 does it, for the exact inputs the tests use.
"""

from __future__ import annotations

import math
import re
from urllib.parse import quote_plus


def go_float(value: float) -> str:
    """Go's %.4g."""
    return f"{value:.4g}"


def humanize_percentage(value: float) -> str:
    return f"{go_float(value * 100)}%"


def humanize_duration(value: float) -> str:
    if value == 0:
        return "0s"
    if abs(value) >= 1:
        total = int(value)
        seconds, minutes, hours, days = total % 60, (total // 60) % 60, (total // 3600) % 24, total // 86400
        if days:
            return f"{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{minutes}m {seconds}s"
        return f"{go_float(value)}s"
    return f"{go_float(value * 1000)}ms"


_TEMPLATE = re.compile(r"\{\{\s*(?:\$labels\.(?P<label>\w+)(?P<urlquery>\s*\|\s*urlquery)?"
                       r"|\$value(?:\s*\|\s*(?P<function>\w+)(?:\s+\"(?P<format>[^\"]*)\")?)?)\s*\}\}")


_WITH_LABEL = re.compile(r"\{\{\s*with \$labels\.(?P<label>\w+)\s*\}\}(?P<body>.*?)\{\{\s*end\s*\}\}")


def expand(template: str, labels: dict, value: float | None) -> str:
    """The few Go-template forms our annotations use, as Prometheus expands them."""
    def with_label(match):      # {{ with $labels.x }}...{{ . | urlquery }}...{{ end }}: only if x is set
        text = labels.get(match["label"], "")
        return match["body"].replace("{{ . | urlquery }}", quote_plus(text, safe="")) if text else ""

    template = _WITH_LABEL.sub(with_label, template)

    def substitute(match):
        if match["label"]:
            text = labels.get(match["label"], "")
            # Go's url.QueryEscape leaves letters, digits and -_.~ as they are, as quote_plus does.
            return quote_plus(text, safe="") if match["urlquery"] else text
        function = match["function"]
        if function == "humanizePercentage":
            return humanize_percentage(value)
        if function == "humanizeDuration":
            return humanize_duration(value)
        if function == "printf":
            return match["format"] % value
        return go_float(value)
    return _TEMPLATE.sub(substitute, template)


def window_increase(counter_at, at: int, window: float, step: int) -> float:
    """A counter's increase over [at - window, at] from its values at sample indexes,
    for counters that start at 0 on a step (no extrapolation then)."""
    first = max(0, math.ceil((at - window) / step))
    return counter_at(at // step) - counter_at(first)


def window_ratio(errors_at, successes_at, at: int, window: float, step: int) -> float | None:
    """An error ratio over [at - window, at]; None without traffic."""
    errors = window_increase(errors_at, at, window, step)
    total = errors + window_increase(successes_at, at, window, step)
    return errors / total if total else None


def predict_linear(points: list[tuple[float, float]], at: float, horizon: float) -> float:
    """predict_linear() over (time, value) points: least squares, intercept at `at`."""
    n = len(points)
    xs = [t - at for t, _ in points]
    ys = [v for _, v in points]
    sum_x, sum_y = sum(xs), sum(ys)
    slope = ((sum(x * y for x, y in zip(xs, ys)) - sum_x * sum_y / n)
             / (sum(x * x for x in xs) - sum_x * sum_x / n))
    return sum_y / n - slope * sum_x / n + slope * horizon


def unambiguous_cents(*values: float) -> bool:
    """Whether printf "%.2f" gives the same text for every value whatever its last bits."""
    return all(abs(v * 100 - math.floor(v * 100) - 0.5) > 1e-6 for v in values)
