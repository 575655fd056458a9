"""The metric catalog: every metric the exporter exposes, in one place.

Names, types and label names here are part of the public contract (DESIGN §3):
dashboards, rules and users' PromQL depend on them.  Everything else in the
package takes names from here instead of spelling them again.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "orchestrator"

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"

# 10 is a bound so that "p95 > 10 s" is exact rather than interpolated.
EXECUTION_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 7.5, 10, 15, 30, 60, 120, 300, 600,
)
TOOL_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)
# Streaming: the first token usually comes within a second or two; 10 s is a bound
# so that a p95 threshold there is exact.
TIME_TO_FIRST_TOKEN_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60,
)
# A workflow run is several agent executions, retries and fallbacks end to end.
WORKFLOW_BUCKETS: tuple[float, ...] = (
    0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200,
)
EVALUATION_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

# The disjoint token types of orchestrator_llm_tokens_total: a sum over `type` is every token
# processed.  Each split type counts an event's `{type}_tokens`; `unsplit` holds totals that do not
# say how they split (legacy records, spans with only a total).
SPLIT_TOKEN_TYPES: tuple[str, ...] = ("input", "output", "cache_read", "cache_write", "reasoning")
UNSPLIT_TOKEN_TYPE = "unsplit"

# The label values of the exporter's own counters.  Their series are there at 0 from the start:
# a series that first appears at 1 shows no increase to rate(), so the first rejection or drop
# would be missed by the alerts.
REJECTION_REASONS: tuple[str, ...] = (
    "missing_field", "invalid_type", "invalid_value", "unknown_type", "not_an_object", "invalid_json",  # an event
    "invalid_body", "body_too_large", "unsupported_media_type")                                      # a request
OTLP_SPAN_OUTCOMES: tuple[str, ...] = ("mapped", "ignored", "rejected")
NOT_FORWARDED_OUTCOMES: tuple[str, ...] = ("dropped", "failed")      # spans the tracing backend never got
FORWARDED_SPAN_OUTCOMES: tuple[str, ...] = ("sent", *NOT_FORWARDED_OUTCOMES)

# Label values a series folds into once its metric reaches max_series.
OVERFLOW_VALUE = "__overflow__"

# Optional labels an operator may add to the agent-execution metrics.
EXTRA_LABELS: tuple[str, ...] = ("feature", "priority")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    # Whether configured extra labels (feature, priority) are appended.
    takes_extra_labels: bool = False
    # Whether its label values come from the exporter's own code and config, a fixed
    # few, never from events: metrics.max_series (a guard against events) leaves it alone.
    fixed_label_values: bool = False

    @property
    def family(self) -> str:
        """The OpenMetrics family name (a counter's name without `_total`)."""
        if self.type == COUNTER and self.name.endswith("_total"):
            return self.name[: -len("_total")]
        return self.name


def _spec(name, type_, help_, labels, buckets=(), extra=False, fixed=False) -> MetricSpec:
    return MetricSpec(f"{NAMESPACE}_{name}", type_, help_, tuple(labels), tuple(buckets), extra, fixed)


AGENT_EXECUTIONS = _spec(
    "agent_executions_total", COUNTER,
    "Agent executions, by outcome.", ("agent", "status"), extra=True)
AGENT_EXECUTION_DURATION = _spec(
    "agent_execution_duration_seconds", HISTOGRAM,
    "Wall time of agent executions.", ("agent",), EXECUTION_BUCKETS, extra=True)
AGENT_ERRORS = _spec(
    "agent_errors_total", COUNTER,
    "Failed agent executions, by error type.", ("agent", "error_type"), extra=True)
LLM_TOKENS = _spec(
    "llm_tokens_total", COUNTER,
    "LLM tokens used by agents.", ("agent", "model", "type"), extra=True)
LLM_TIME_TO_FIRST_TOKEN = _spec(
    "llm_time_to_first_token_seconds", HISTOGRAM,
    "Time from an agent's LLM request to the first streamed token.", ("agent", "model"),
    TIME_TO_FIRST_TOKEN_BUCKETS, extra=True)
LLM_COST = _spec(
    "llm_cost_usd_total", COUNTER,
    "LLM spend in US dollars.", ("agent", "model"), extra=True)
USAGE_UNKNOWN = _spec(
    "usage_unknown_total", COUNTER,
    "Agent executions whose token usage or cost is unknown (never counted as $0).",
    ("agent",), extra=True)
TOOL_CALLS = _spec(
    "tool_calls_total", COUNTER, "Tool calls, by outcome.", ("tool", "status"))
TOOL_CALL_DURATION = _spec(
    "tool_call_duration_seconds", HISTOGRAM,
    "Wall time of tool calls.", ("tool",), TOOL_BUCKETS)
STATE_TRANSITIONS = _spec(
    "state_transitions_total", COUNTER,
    "Workflow state machine transitions.", ("workflow", "from_state", "to_state"))
WORKFLOW_RUNS = _spec(
    "workflow_runs_total", COUNTER, "Workflow runs (tasks), by outcome.", ("workflow", "status"))
WORKFLOW_DURATION = _spec(
    "workflow_duration_seconds", HISTOGRAM,
    "Wall time of workflow runs, end to end.", ("workflow",), WORKFLOW_BUCKETS)
EVALUATION_SCORE = _spec(
    "evaluation_score", HISTOGRAM,
    "Quality scores (0 to 1) of agents' answers, by evaluator.", ("agent", "evaluator"), EVALUATION_BUCKETS)
RETRIES = _spec(
    "retries_total", COUNTER, "Retried agent executions.", ("agent", "error_type"))
FALLBACKS = _spec(
    "fallbacks_total", COUNTER,
    "Work handed from a failing agent to a fallback.", ("from_agent", "to_agent"))
CIRCUIT_BREAKER_STATE = _spec(
    "circuit_breaker_state", GAUGE,
    "Circuit breaker state per agent (0 closed, 1 half-open, 2 open).", ("agent",))
SELECTOR_WEIGHT = _spec(
    "selector_weight", GAUGE,
    "Share of a task type the adaptive selector gives an agent.", ("task", "agent"))
COST_BUDGET = _spec(
    "cost_budget_usd", GAUGE, "Configured LLM spend budget.", ("period",), fixed=True)
FLEET_SOURCE_UP = _spec(
    "fleet_source_up", GAUGE,
    "Whether the last poll of a healing.fleet source (alertmanager, prometheus) succeeded (1) or not (0).",
    ("source",), fixed=True)
EXPORTER_EVENTS = _spec(
    "exporter_events_total", COUNTER, "Events accepted, by type.", ("type",), fixed=True)
EXPORTER_EVENTS_REJECTED = _spec(
    "exporter_events_rejected_total", COUNTER, "Events rejected, by reason.", ("reason",), fixed=True)
EXPORTER_SERIES_OVERFLOW = _spec(
    "exporter_series_overflow_total", COUNTER,
    "Observations of new label sets folded into the __overflow__ series because a metric hit max_series.",
    ("metric",), fixed=True)
EXPORTER_BUILD_INFO = _spec(
    "exporter_build_info", GAUGE, "Exporter build information (always 1).", ("version",), fixed=True)
EXPORTER_HTTP_REQUESTS = _spec(
    "exporter_http_requests_total", COUNTER,
    "HTTP requests the exporter answered, by handler and status code.", ("handler", "code"), fixed=True)
EXPORTER_GRPC_REQUESTS = _spec(
    "exporter_grpc_requests_total", COUNTER,
    "OTLP/gRPC calls the exporter answered, by method and gRPC status code.", ("method", "code"), fixed=True)
EXPORTER_OTLP_SPANS = _spec(
    "exporter_otlp_spans_total", COUNTER,
    "OTLP spans received: mapped to events, ignored (no GenAI meaning) or rejected.", ("outcome",), fixed=True)
EXPORTER_OTLP_FORWARDED_SPANS = _spec(
    "exporter_otlp_forwarded_spans_total", COUNTER,
    "OTLP spans passed on to the tracing backend (otlp.forward_spans): sent (the backend took them), "
    "dropped (the forwarding queue was full, or still held them at shutdown) or failed (the backend "
    "refused them or could not be reached).", ("outcome",), fixed=True)

CATALOG: tuple[MetricSpec, ...] = (
    AGENT_EXECUTIONS, AGENT_EXECUTION_DURATION, AGENT_ERRORS, LLM_TOKENS, LLM_TIME_TO_FIRST_TOKEN,
    LLM_COST, USAGE_UNKNOWN, TOOL_CALLS, TOOL_CALL_DURATION, STATE_TRANSITIONS, WORKFLOW_RUNS,
    WORKFLOW_DURATION, EVALUATION_SCORE, RETRIES, FALLBACKS, CIRCUIT_BREAKER_STATE, SELECTOR_WEIGHT,
    FLEET_SOURCE_UP, COST_BUDGET, EXPORTER_EVENTS, EXPORTER_EVENTS_REJECTED, EXPORTER_SERIES_OVERFLOW,
    EXPORTER_BUILD_INFO, EXPORTER_HTTP_REQUESTS, EXPORTER_GRPC_REQUESTS, EXPORTER_OTLP_SPANS,
    EXPORTER_OTLP_FORWARDED_SPANS,
)
BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOG}

CIRCUIT_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


def sample_names() -> frozenset[str]:
    """Every sample name a scrape can contain (histograms expand to _bucket/_sum/_count)."""
    names = set()
    for spec in CATALOG:
        if spec.type == HISTOGRAM:
            names.update(spec.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(spec.name)
    return frozenset(names)
