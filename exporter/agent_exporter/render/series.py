"""The series the rendered rules, rule tests and dashboards read.

Catalog metric names, the recording rules' names (`level:metric:operations`),
and the scope from the config: the job selector every rule and dashboard uses
and the grouping labels (environment, cluster, ...) the alerts keep apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import catalog
from ..config import Config

EXECUTIONS = catalog.AGENT_EXECUTIONS.name
AGENT_ERRORS = catalog.AGENT_ERRORS.name
DURATION = catalog.AGENT_EXECUTION_DURATION.name
TIME_TO_FIRST_TOKEN = catalog.LLM_TIME_TO_FIRST_TOKEN.name
TOOL_CALLS = catalog.TOOL_CALLS.name
TOOL_DURATION = catalog.TOOL_CALL_DURATION.name
WORKFLOW_RUNS = catalog.WORKFLOW_RUNS.name
WORKFLOW_DURATION = catalog.WORKFLOW_DURATION.name
EVALUATION_SCORE = catalog.EVALUATION_SCORE.name
COST = catalog.LLM_COST.name
TOKENS = catalog.LLM_TOKENS.name
CIRCUIT = catalog.CIRCUIT_BREAKER_STATE.name
EVENTS = catalog.EXPORTER_EVENTS.name
REJECTED = catalog.EXPORTER_EVENTS_REJECTED.name
BUILD_INFO = catalog.EXPORTER_BUILD_INFO.name
OVERFLOW = catalog.EXPORTER_SERIES_OVERFLOW.name
USAGE_UNKNOWN = catalog.USAGE_UNKNOWN.name
FLEET_SOURCE_UP = catalog.FLEET_SOURCE_UP.name
FORWARDED_SPANS = catalog.EXPORTER_OTLP_FORWARDED_SPANS.name
OTLP_SPANS = catalog.EXPORTER_OTLP_SPANS.name
HTTP_REQUESTS = catalog.EXPORTER_HTTP_REQUESTS.name
GRPC_REQUESTS = catalog.EXPORTER_GRPC_REQUESTS.name

ERROR = 'status="error"'
NOT_FORWARDED = f'outcome=~"{"|".join(catalog.NOT_FORWARDED_OUTCOMES)}"'
# Received spans with a GenAI meaning: mapped to events, or rejected (the ignored ones have none).
GENAI_SPANS = 'outcome=~"mapped|rejected"'
# What clients send the exporter, in one selector: HTTP requests to /v1/* and OTLP/gRPC calls
# (which have no handler label); and those refused for their credentials, a limit or the
# exporter's own state, rather than for what they carried.
INGEST_REQUESTS = f'__name__=~"{HTTP_REQUESTS}|{GRPC_REQUESTS}", handler=~"/v1/.+|"'
REQUEST_REFUSED = 'code=~"401|403|429|503|UNAUTHENTICATED|PERMISSION_DENIED|RESOURCE_EXHAUSTED|UNAVAILABLE"'
SPAN_REJECTED = 'outcome="rejected"'


# RE2's metacharacters, each escaped with a backslash (doubled: it is in a PromQL string).
_REGEX_ESCAPES = str.maketrans({c: "\\\\" + c for c in ".+*?()|[]{}^$"})


def task_error_matcher(error_types: tuple[str, ...]) -> str:
    """The matcher of alerting.task_error_types on agent_errors_total, each matched as written
    (config.LabelValue: no quote or backslash to escape)."""
    return 'error_type=~"' + "|".join(t.translate(_REGEX_ESCAPES) for t in error_types) + '"'


def without_task_faults(failed: str, task_faults: str) -> str:
    """The failures per series of `failed` (summed, with status="error"), less the task's own faults
    (`task_faults`, agent_errors_total of alerting.task_error_types summed by the same labels; where
    an agent has none, nothing is taken away).  Each task fault is also one of the failures, so the
    difference is the agent's own; clamp_min: the two rates are extrapolated apart."""
    return f"clamp_min(\n  {failed}\n  -\n  ({task_faults} or {failed} * 0),\n  0)"


EXECUTION_RATE_RULE = f"agent:{catalog.AGENT_EXECUTIONS.family}:rate5m"
# The agent latency quantiles are recorded over the dashboards' window and over the fleet statistics'.
DASHBOARD_LATENCY_WINDOW = "5m"


def latency_quantile_rule(window: str) -> str:
    return f"agent_quantile:{DURATION}:histogram_quantile{window}"


LATENCY_QUANTILE_RULE = latency_quantile_rule(DASHBOARD_LATENCY_WINDOW)
TIME_TO_FIRST_TOKEN_QUANTILE_RULE = f"agent_model_quantile:{TIME_TO_FIRST_TOKEN}:histogram_quantile5m"
TOOL_RATE_RULE = f"tool:{catalog.TOOL_CALLS.family}:rate5m"
TOOL_ERROR_RATIO_RULE = f"tool:{catalog.TOOL_CALLS.family}:error_ratio_rate5m"
TOOL_QUANTILE_RULE = f"tool_quantile:{TOOL_DURATION}:histogram_quantile5m"
WORKFLOW_RATE_RULE = f"workflow:{catalog.WORKFLOW_RUNS.family}:rate5m"
WORKFLOW_QUANTILE_RULE = f"workflow_quantile:{WORKFLOW_DURATION}:histogram_quantile5m"
COST_1H_RULE = f"agent_model:{catalog.LLM_COST.family}:increase1h"
COST_1D_RULE = f"agent_model:{catalog.LLM_COST.family}:increase1d"
TOKENS_RULE = f"agent_model_type:{catalog.LLM_TOKENS.family}:rate5m"

QUANTILES = (0.5, 0.95, 0.99)

# How far ahead the cost forecast looks: time to act before the money is spent, and
# short enough that a trailing day still filling up (the first day of any spend, when
# the whole day's rise reads as a trend) is overestimated by at most 4/24.
FORECAST_HORIZON_SECONDS = 4 * 3600


def cost_forecast(trailing_day: str) -> str:
    """The trailing day's spend FORECAST_HORIZON_SECONDS from now, per series of the
    recorded `trailing_day` spend (COST_1D_RULE with any matchers); sum it to compare.

    clamp_min: a series whose old spend is leaving the window cannot forecast less
    than nothing and hide another's growth."""
    return f"clamp_min(predict_linear({trailing_day}[1h], {FORECAST_HORIZON_SECONDS}), 0)"


@dataclass(frozen=True)
class SLI:
    """A success objective's series: the counter with a `status` label, the label it is
    kept per, and its recording rules (error ratio and event count per window)."""
    label: str                 # agent or workflow
    counter: str
    ratio_prefix: str          # the recorded error ratio's name, but for the window
    count_prefix: str          # the recorded event count's name, but for the window

    def error_ratio_rule(self, window: str) -> str:
        return self.ratio_prefix + window

    def count_rule(self, window: str) -> str:
        return self.count_prefix + window

    @property
    def slo_label(self) -> str:
        return f"{self.label}-success"


AGENT_SLI = SLI("agent", EXECUTIONS, f"agent:{catalog.AGENT_EXECUTIONS.family}:error_ratio_rate",
                f"agent:{catalog.AGENT_EXECUTIONS.family}:increase")
WORKFLOW_SLI = SLI("workflow", WORKFLOW_RUNS, f"workflow:{catalog.WORKFLOW_RUNS.family}:error_ratio_rate",
                   f"workflow:{catalog.WORKFLOW_RUNS.family}:increase")


@dataclass(frozen=True)
class Scope:
    """The job every rule selects and the grouping labels every aggregation keeps."""
    job: str
    group_labels: tuple[str, ...] = ()

    @classmethod
    def of(cls, config: Config) -> "Scope":
        return cls(config.alerting.job, config.alerting.group_labels)

    @property
    def job_matcher(self) -> str:
        return f'job="{self.job}"'

    def select(self, name: str, *matchers: str) -> str:
        """A selector of a raw exporter series: the job matcher first."""
        return f"{name}{{{', '.join((self.job_matcher, *matchers))}}}"

    def by(self, *labels: str) -> str:
        """The labels an aggregation keeps: the grouping labels, then `labels`."""
        return ", ".join((*self.group_labels, *labels))

    def sum(self, expr: str, *labels: str) -> str:
        by = self.by(*labels)
        return f"sum by ({by}) ({expr})" if by else f"sum({expr})"
