"""Configuration: a YAML superset of the legacy observability_config.yaml.

The dataclasses below are the parsed, validated form every other module reads.
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

import yaml

from . import catalog


class ConfigError(ValueError):
    """A config problem; the message starts with the key path, e.g. `observability.metrics.max_series`."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens, by token type.

    The cache and reasoning prices are optional: tokens of a type whose price is
    not set make an execution's cost unknown, never a guess.
    """
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None


@dataclass(frozen=True)
class TracingConfig:
    enabled: bool = True
    backend: str = "opentelemetry"
    export_to_console: bool = False
    export_to_otlp: bool = False
    otlp_endpoint: str = "http://localhost:4317"
    otlp_protocol: str = "grpc"              # "grpc" or "http/protobuf"
    otlp_headers: dict[str, str] = field(default_factory=dict)
    otlp_timeout_seconds: float = 5.0
    trace_all_agents: bool = True
    trace_state_transitions: bool = True
    trace_tool_calls: bool = True
    trace_errors: bool = True
    sampling_rate: float = 1.0
    max_queue_size: int = 2048
    capture_content: bool = False            # prompts/completions never leave unless asked


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    collection_interval: float = 60.0         # legacy key; the scrape interval hint for render
    max_series: int = 10_000
    execution_buckets: tuple[float, ...] = catalog.EXECUTION_BUCKETS
    tool_buckets: tuple[float, ...] = catalog.TOOL_BUCKETS
    time_to_first_token_buckets: tuple[float, ...] = catalog.TIME_TO_FIRST_TOKEN_BUCKETS
    workflow_buckets: tuple[float, ...] = catalog.WORKFLOW_BUCKETS
    extra_labels: tuple[str, ...] = ()        # subset of catalog.EXTRA_LABELS
    prices: dict[str, ModelPrice] = field(default_factory=dict)   # by model name


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    include_traces: bool = True               # trace_id and span_id of the current span on every line
    format: str = "json"                      # "json" or "text" (logfmt)
    export_to_otlp: bool = False              # also send log records to tracing.otlp_endpoint


@dataclass(frozen=True)
class Thresholds:
    """What the alert rules compare against; legacy condition strings parse into these."""
    error_ratio: float = 0.05                 # "error_rate > 5%"
    latency_p95_seconds: float = 10.0         # "latency_p95 > 10000" (ms in the legacy string)
    cost_per_day_usd: float = 100.0           # "cost_per_day > 100"
    tool_error_ratio: float = 0.10
    circuit_open_seconds: float = 300.0       # breaker open longer than this alerts
    rejected_events_ratio: float = 0.01
    time_to_first_token_p95_seconds: float = 5.0
    evaluation_score_floor: float = 0.7       # an agent's mean quality score below this alerts


@dataclass(frozen=True)
class SLOConfig:
    objective: float = 0.99                   # success ratio (of agent executions, or of workflow runs)
    # Multi-window multi-burn-rate pairs: (long window, short window, burn-rate factor).
    page_windows: tuple[tuple[str, str, float], ...] = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
    ticket_windows: tuple[tuple[str, str, float], ...] = (("1d", "2h", 3.0), ("3d", "6h", 1.0))


@dataclass(frozen=True)
class BudgetConfig:
    day_usd: float = 100.0
    month_usd: float = 2000.0
    owners: tuple[str, ...] = ()              # email addresses of the budget owners
    # USD a day per value of the `feature` label (needs metrics.extra_labels: [feature]).
    per_feature: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EmailConfig:
    # Like the other addresses in the rendered files, the defaults are the shipped
    # docker-compose stack's (its Mailpit); a real deployment sets its own.
    smtp_server: str = "mailpit"
    smtp_port: int = 1025
    from_address: str = "alerts@example.com"
    to_addresses: tuple[str, ...] = ()
    username: str = ""
    password_file: str = ""                   # never the password itself
    require_tls: bool = False


@dataclass(frozen=True)
class SlackConfig:
    webhook_url_file: str = "/etc/alertmanager/secrets/slack_webhook_url"
    channel: str = "#orchestrator-alerts"


@dataclass(frozen=True)
class AlertingConfig:
    enabled: bool = True
    # Which receivers render writes: slack, email, and log (every alert to the exporter's
    # /v1/alertmanager, which logs it).  The legacy file says [log] alone; absent, all three.
    channels: tuple[str, ...] = ("log", "slack", "email")
    conditions: tuple[str, ...] = ()          # legacy strings, as written
    thresholds: Thresholds = field(default_factory=Thresholds)
    slo: SLOConfig = field(default_factory=SLOConfig)
    workflow_slo: SLOConfig = field(default_factory=SLOConfig)   # workflow runs (tasks) end to end
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    slack: SlackConfig = field(default_factory=SlackConfig)
    alertmanager_url: str = "http://localhost:9093"
    exporter_url: str = "http://agent-exporter:9464"   # where Alertmanager posts remediation webhooks
    runbook_url: str = "https://github.com/agent-exporter/agent-exporter/blob/main/docs/runbooks.md"
    grafana_url: str = "http://localhost:3000"
    evaluation_interval: str = "30s"
    # The window of the alerts on error ratio, latency and rejections, and how long they
    # must hold before firing.  Demos and tests shorten both; recording rules keep 5m.
    rate_window: str = "5m"
    alert_for: str = "5m"
    # The window of the quality alert: evaluations are sparser than executions.
    evaluation_window: str = "1h"
    # Ratio and mean alerts also need this many events in their window, so one failure
    # in two calls at night, or the first minutes after a restart, page no one.
    min_events: int = 10
    # Prometheus' job label of the exporters: every rule and dashboard selects job="<job>".
    job: str = "agent-exporter"
    # Labels the alerts keep apart (e.g. environment, cluster) when one Prometheus
    # scrapes several deployments; the recording rules aggregate by them too.
    group_labels: tuple[str, ...] = ()
    # Alerts whose firing opens the named agent's circuit breaker (self-healing).
    remediation_alerts: tuple[str, ...] = ("OrchestratorAgentHighErrorRatio",)


@dataclass(frozen=True)
class ServerConfig:
    listen_address: str = "127.0.0.1:9464"
    max_body_bytes: int = 10 * 1024 * 1024
    bearer_token_file: str = ""               # or AGENT_EXPORTER_BEARER_TOKEN in the environment


@dataclass(frozen=True)
class OTLPConfig:
    """OTLP traces in: GenAI spans become events (otlp.py)."""
    grpc_listen_address: str = ""             # HOST:PORT of the OTLP/gRPC receiver; "" = off
    # Received spans forwarded unchanged to tracing.otlp_endpoint (tracing.otlp_protocol).
    forward_spans: bool = False
    forward_queue_size: int = 64              # export requests waiting to be forwarded; past it, dropped
    # How long an inference span waits for its enclosing agent span before it counts
    # as an execution of its own; above the SDK's 5 s export interval.
    attribution_wait_seconds: float = 10.0
    max_buffered_spans: int = 100_000         # spans held for attribution, over all traces


@dataclass(frozen=True)
class SelectorConfig:
    """The adaptive selector: how fast evidence fades and what besides success counts."""
    decay: float = 0.97                       # weight left to old evidence per new outcome of the task
    latency_weight: float = 0.2               # largest score penalty, for the slowest candidate
    cost_weight: float = 0.1                  # largest score penalty, for the most expensive candidate
    # How much a success's evaluation score counts: 0 ignores scores, 1 counts a success as its score.
    quality_weight: float = 0.5


@dataclass(frozen=True)
class HTTPAuthConfig:
    """Credentials for an API the healing layer polls: a bearer token or basic auth, read from files."""
    bearer_token_file: str = ""
    username: str = ""
    password_file: str = ""


@dataclass(frozen=True)
class FleetAlertmanagerConfig:
    """Poll Alertmanager's v2 API for the remediation alerts (healing.fleet.alertmanager)."""
    urls: tuple[str, ...] = ()                # members of one cluster, any answers; none: webhook only
    interval_seconds: float = 10.0
    auth: HTTPAuthConfig = field(default_factory=HTTPAuthConfig)


@dataclass(frozen=True)
class FleetPrometheusConfig:
    """Seed and refresh the selector from the fleet's recording rules (healing.fleet.prometheus)."""
    url: str = ""                             # none: each replica learns alone
    interval_seconds: float = 30.0
    fleet_weight: float = 10.0                # observations the fleet's success ratio counts as
    local_weight: float = 1.0                 # multiplier of the replica's own decayed outcomes
    auth: HTTPAuthConfig = field(default_factory=HTTPAuthConfig)


@dataclass(frozen=True)
class FleetConfig:
    """Every replica acts on the same alerts and statistics, through Alertmanager and Prometheus."""
    alertmanager: FleetAlertmanagerConfig = field(default_factory=FleetAlertmanagerConfig)
    prometheus: FleetPrometheusConfig = field(default_factory=FleetPrometheusConfig)
    jitter: float = 0.2                       # each wait is its interval times a factor in 1 +- jitter
    backoff_max_seconds: float = 60.0         # failing polls back off exponentially up to this
    timeout_seconds: float = 2.0              # per HTTP request


@dataclass(frozen=True)
class HealingConfig:
    enabled: bool = True
    max_attempts: int = 3
    backoff_initial_seconds: float = 0.1
    backoff_max_seconds: float = 5.0
    breaker_window_seconds: float = 60.0
    breaker_error_ratio: float = 0.5
    breaker_min_calls: int = 10
    breaker_cooldown_seconds: float = 30.0
    breaker_half_open_probes: int = 3
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)   # agent -> ordered alternatives
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)


@dataclass(frozen=True)
class Config:
    enabled: bool = True
    service_name: str = "agent-orchestrator"
    service_version: str = ""
    environment: str = "production"
    tracing: TracingConfig = field(default_factory=TracingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    otlp: OTLPConfig = field(default_factory=OTLPConfig)
    healing: HealingConfig = field(default_factory=HealingConfig)


# -- loading -----------------------------------------------------------------
#
# One schema walker: each dataclass field is read from the YAML key of the same
# name, converted by its type annotation, then checked by the validator listed
# for it in _CHECKS.  Every error names the full key path.


ROOT_KEY = "observability"

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_ALERT_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[^\s:]*):\d{1,5}$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Labels the rules already aggregate by or set, which a grouping label must not repeat.
_RULE_LABELS = frozenset({
    "job", "instance", "agent", "tool", "workflow", "model", "evaluator", "type", "status", "le", "quantile",
    "alertname", "alertstate", "severity", "slo", "category", *catalog.EXTRA_LABELS})
_CONDITION = re.compile(
    r"^\s*(?P<metric>[a-z_0-9]+)\s*>\s*\$?\s*(?P<value>\d+(\.\d+)?)\s*(?P<unit>%|ms|s)?\s*$")


def _check(predicate, message):
    def check(value, path):
        if not predicate(value):
            raise ConfigError(path, f"{message}, got {value!r}")
    return check


def _each(check):
    def check_all(values, path):
        for i, value in enumerate(values):
            check(value, f"{path}[{i}]")
    return check_all


_positive = _check(lambda v: v > 0, "expected a positive number")
_non_negative = _check(lambda v: v >= 0, "expected a number >= 0")
_ratio = _check(lambda v: 0 < v < 1, "expected a ratio between 0 and 1 (exclusive)")
_non_empty = _check(lambda v: v.strip() != "", "expected a non-empty string")
_url = _check(lambda v: _URL.match(v), "expected an http(s) URL")
_duration = _check(lambda v: _DURATION.match(v), "expected a Prometheus duration such as 30s, 5m or 1h")
_emails = _each(_check(lambda v: _EMAIL.match(v), "expected an email address"))
# A label value the rules write inside a PromQL string: no quoting needed.
_label_value = _check(lambda v: v.strip() != "" and not set(v) & set('"\\\n'),
                      "expected a non-empty value without quotes, backslashes or line breaks")


def _one_of(*choices):
    return _check(lambda v: v in choices, f"expected one of {', '.join(map(repr, choices))}")


def _subset_of(*choices):
    def check(values, path):
        for i, value in enumerate(values):
            if value not in choices:
                raise ConfigError(f"{path}[{i}]", f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
        if len(set(values)) != len(values):
            raise ConfigError(path, "duplicate entries")
    return check


def _buckets(values, path):
    if not values:
        raise ConfigError(path, "expected at least one bucket bound")
    for i, value in enumerate(values):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{path}[{i}]", f"expected a finite positive bound, got {value!r}")
        if i and value <= values[i - 1]:
            raise ConfigError(f"{path}[{i}]", f"bounds must increase strictly, {value!r} follows {values[i - 1]!r}")


def _windows(values, path):
    for i, (long_window, short_window, factor) in enumerate(values):
        _duration(long_window, f"{path}[{i}][0]")
        _duration(short_window, f"{path}[{i}][1]")
        _positive(factor, f"{path}[{i}][2]")


def _group_labels(values, path):
    for i, value in enumerate(values):
        if not _LABEL_NAME.match(value) or value.startswith("__"):
            raise ConfigError(f"{path}[{i}]", f"expected a Prometheus label name, got {value!r}")
        if value in _RULE_LABELS:
            raise ConfigError(f"{path}[{i}]", f"{value!r} is a label the rules already use; "
                                              "expected a deployment label such as environment or cluster")
    if len(set(values)) != len(values):
        raise ConfigError(path, "duplicate entries")


def _feature_budgets(values, path):
    for feature, usd in values.items():
        _label_value(feature, path)
        _non_negative(usd, f"{path}.{feature}")


def _optional_url(value, path):
    if value:
        _url(value, path)


def _auth(auth, path):
    if auth.bearer_token_file and (auth.username or auth.password_file):
        raise ConfigError(path, "expected a bearer token or basic auth, not both")
    if bool(auth.username) != bool(auth.password_file):
        raise ConfigError(path, "basic auth needs both username and password_file")


def _prices(values, path):
    for model, price in values.items():
        for kind in ("input", "output", "cache_read", "cache_write", "reasoning"):
            value = getattr(price, kind)
            if value is not None:
                _non_negative(value, f"{path}.{model}.{kind}")


_CHECKS = {
    Config: {"service_name": _non_empty, "environment": _non_empty},
    TracingConfig: {
        "backend": _one_of("opentelemetry"), "otlp_protocol": _one_of("grpc", "http/protobuf"),
        "otlp_endpoint": _url, "otlp_timeout_seconds": _positive,
        "sampling_rate": _check(lambda v: 0 <= v <= 1, "expected a rate between 0 and 1"),
        "max_queue_size": _positive,
    },
    MetricsConfig: {
        "collection_interval": _positive, "max_series": _positive,
        "execution_buckets": _buckets, "tool_buckets": _buckets,
        "time_to_first_token_buckets": _buckets, "workflow_buckets": _buckets,
        "extra_labels": _subset_of(*catalog.EXTRA_LABELS), "prices": _prices,
    },
    LoggingConfig: {
        "level": _one_of("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "format": _one_of("json", "text"),
    },
    Thresholds: {
        "error_ratio": _ratio, "latency_p95_seconds": _positive, "cost_per_day_usd": _non_negative,
        "tool_error_ratio": _ratio, "circuit_open_seconds": _positive, "rejected_events_ratio": _ratio,
        "time_to_first_token_p95_seconds": _positive, "evaluation_score_floor": _ratio,
    },
    SLOConfig: {"objective": _ratio, "page_windows": _windows, "ticket_windows": _windows},
    BudgetConfig: {"day_usd": _non_negative, "month_usd": _non_negative, "owners": _emails,
                   "per_feature": _feature_budgets},
    EmailConfig: {
        "smtp_server": _non_empty,
        "smtp_port": _check(lambda v: 0 < v < 65536, "expected a TCP port"),
        "from_address": _check(lambda v: _EMAIL.match(v), "expected an email address"),
        "to_addresses": _emails,
    },
    AlertingConfig: {
        "channels": _subset_of("log", "email", "slack"),
        "alertmanager_url": _url, "exporter_url": _url, "runbook_url": _url, "grafana_url": _url,
        "evaluation_interval": _duration, "rate_window": _duration, "alert_for": _duration,
        "evaluation_window": _duration, "min_events": _positive, "job": _label_value,
        "group_labels": _group_labels,
        "remediation_alerts": _each(_check(lambda v: _ALERT_NAME.match(v), "expected an alert name in CamelCase")),
    },
    ServerConfig: {
        "listen_address": _check(lambda v: _HOST_PORT.match(v), "expected HOST:PORT"),
        "max_body_bytes": _positive,
    },
    OTLPConfig: {
        "grpc_listen_address": _check(lambda v: v == "" or _HOST_PORT.match(v), "expected HOST:PORT, or \"\" for off"),
        "forward_queue_size": _positive, "attribution_wait_seconds": _positive, "max_buffered_spans": _positive,
    },
    HealingConfig: {
        "max_attempts": _positive, "backoff_initial_seconds": _positive, "backoff_max_seconds": _positive,
        "breaker_window_seconds": _positive,
        "breaker_error_ratio": _check(lambda v: 0 < v <= 1, "expected a ratio in (0, 1]"),
        "breaker_min_calls": _positive, "breaker_cooldown_seconds": _positive,
        "breaker_half_open_probes": _positive,
    },
    SelectorConfig: {
        "decay": _check(lambda v: 0 < v <= 1, "expected a ratio in (0, 1]"),
        "latency_weight": _non_negative, "cost_weight": _non_negative,
        "quality_weight": _check(lambda v: 0 <= v <= 1, "expected a weight between 0 and 1"),
    },
    FleetAlertmanagerConfig: {
        "urls": _each(_url), "interval_seconds": _positive, "auth": _auth,
    },
    FleetPrometheusConfig: {
        "url": _optional_url, "interval_seconds": _positive, "fleet_weight": _positive,
        "local_weight": _positive, "auth": _auth,
    },
    FleetConfig: {
        "jitter": _check(lambda v: 0 <= v < 1, "expected a fraction in [0, 1)"),
        "backoff_max_seconds": _positive, "timeout_seconds": _positive,
    },
}

# Keys that are accepted but do not map onto a field: the legacy Slack URL (only
# empty, as the legacy default was) and secrets that must come from files.
_SECRET_KEYS = {
    SlackConfig: {"webhook_url": "use webhook_url_file (a file holding the URL) instead of the URL itself"},
    EmailConfig: {"password": "use password_file (a file holding the password) instead of the password itself"},
    HTTPAuthConfig: {
        "password": "use password_file (a file holding the password) instead of the password itself",
        "bearer_token": "use bearer_token_file (a file holding the token) instead of the token itself",
    },
}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(tp, value, path: str):
    """`value` from YAML converted to the annotated type `tp`, or a ConfigError at `path`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        return _convert(args[0], value, path)
    if is_dataclass(tp):
        return _build(tp, value, path)
    if tp is bool:
        if type(value) is not bool:
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if type(value) is not int:
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise ConfigError(path, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if type(value) is not str:
            raise ConfigError(path, f"expected a string, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(path, f"expected a list of {len(args)} items, got {value!r}")
        return tuple(_convert(arg, item, f"{path}[{i}]") for i, (arg, item) in enumerate(zip(args, value)))
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {value!r}")
        return {_convert(key_type, k, path): _convert(value_type, v, f"{path}.{k}") for k, v in value.items()}
    raise TypeError(f"no conversion for {tp!r}")  # a new field type needs a branch here


def _build(cls, data, path: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    secrets = _SECRET_KEYS.get(cls, {})
    checks = _CHECKS.get(cls, {})
    kwargs = {}
    for key, value in data.items():
        key_path = f"{path}.{key}"
        if key in secrets:
            if value not in (None, ""):
                raise ConfigError(key_path, f"secrets are never written in the config: {secrets[key]}")
            continue
        if key not in names:
            raise ConfigError(key_path, f"unknown key; {_type_name(cls)} takes {', '.join(sorted(names | set(secrets)))}")
        converted = _convert(hints[key], value, key_path)
        if key in checks:
            checks[key](converted, key_path)
        kwargs[key] = converted
    missing = [f.name for f in fields(cls)
               if f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ConfigError(path, f"missing required key {missing[0]!r}")
    return cls(**kwargs)


def _parse_condition(text: str, path: str) -> tuple[str, float]:
    """A legacy condition string as (Thresholds field, value)."""
    match = _CONDITION.match(text) if isinstance(text, str) else None
    if not match:
        raise ConfigError(path, f"cannot read condition {text!r}; expected e.g. 'error_rate > 5%', "
                                "'latency_p95 > 10000' (ms), 'cost_per_day > 100'")
    metric, value, unit = match["metric"], float(match["value"]), match["unit"]
    if metric == "error_rate":
        if unit == "%":
            value /= 100
        elif unit is not None or value > 1:
            raise ConfigError(path, f"error_rate takes a percentage ('5%') or a ratio ('0.05'), got {text!r}")
        _ratio(value, path)
        return "error_ratio", value
    if metric == "latency_p95":
        if unit == "%":
            raise ConfigError(path, f"latency_p95 takes milliseconds, or an explicit unit ms or s, got {text!r}")
        seconds = value if unit == "s" else value / 1000   # the legacy string counts milliseconds
        _positive(seconds, path)
        return "latency_p95_seconds", seconds
    if metric == "cost_per_day":
        if unit is not None:
            raise ConfigError(path, f"cost_per_day takes US dollars, got {text!r}")
        return "cost_per_day_usd", value
    raise ConfigError(path, f"unknown condition metric {metric!r}; expected error_rate, latency_p95 or cost_per_day")


def _explicit(data, *keys) -> bool:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


def parse_config(mapping) -> Config:
    """A Config from the parsed YAML document (with its top key `observability`)."""
    if mapping is None:
        return Config()
    if not isinstance(mapping, dict):
        raise ConfigError(ROOT_KEY, f"expected a mapping with the top key {ROOT_KEY!r}")
    unknown = set(mapping) - {ROOT_KEY}
    if unknown:
        raise ConfigError(sorted(unknown)[0], f"unknown top-level key; the config lives under {ROOT_KEY!r}")
    raw = mapping.get(ROOT_KEY) or {}
    config = _build(Config, raw, ROOT_KEY)
    alerting = config.alerting
    thresholds_path = f"{ROOT_KEY}.alerting.thresholds"

    # Legacy condition strings become thresholds; an explicit threshold that says otherwise is an error.
    derived: dict[str, tuple[float, str]] = {}
    for i, condition in enumerate(alerting.conditions):
        path = f"{ROOT_KEY}.alerting.conditions[{i}]"
        field, value = _parse_condition(condition, path)
        if field in derived and derived[field][0] != value:
            raise ConfigError(path, f"contradicts {derived[field][1]}")
        derived[field] = (value, path)
    thresholds = alerting.thresholds
    for field, (value, path) in derived.items():
        if _explicit(raw, "alerting", "thresholds", field) and getattr(thresholds, field) != value:
            raise ConfigError(path, f"contradicts {thresholds_path}.{field} = {getattr(thresholds, field)!r}")
        thresholds = replace(thresholds, **{field: value})

    # The daily cost threshold and the daily budget are one number, set either way.
    budget = alerting.budget
    cost_set = _explicit(raw, "alerting", "thresholds", "cost_per_day_usd") or "cost_per_day_usd" in derived
    budget_set = _explicit(raw, "alerting", "budget", "day_usd")
    if cost_set and budget_set and budget.day_usd != thresholds.cost_per_day_usd:
        raise ConfigError(f"{ROOT_KEY}.alerting.budget.day_usd",
                          f"{budget.day_usd!r} contradicts the daily cost threshold {thresholds.cost_per_day_usd!r}")
    if cost_set:
        budget = replace(budget, day_usd=thresholds.cost_per_day_usd)
    elif budget_set:
        thresholds = replace(thresholds, cost_per_day_usd=budget.day_usd)

    if budget.per_feature and "feature" not in config.metrics.extra_labels:
        raise ConfigError(f"{ROOT_KEY}.alerting.budget.per_feature",
                          f"budgets per feature need the feature label: "
                          f"add feature to {ROOT_KEY}.metrics.extra_labels")
    # A p95 is measured between bucket bounds: at or above the largest one it can never be
    # exceeded, and below the smallest one it is a guess.
    for threshold, buckets in (("latency_p95_seconds", "execution_buckets"),
                               ("time_to_first_token_p95_seconds", "time_to_first_token_buckets")):
        bounds, value = getattr(config.metrics, buckets), getattr(thresholds, threshold)
        if not bounds[0] <= value < bounds[-1]:
            raise ConfigError(f"{thresholds_path}.{threshold}",
                              f"{value!r} is not within {ROOT_KEY}.metrics.{buckets} (from {bounds[0]!r} "
                              f"to below {bounds[-1]!r}), where a p95 can be measured against it")

    for agent, alternatives in config.healing.fallbacks.items():
        for i, name in enumerate(alternatives):
            if not name or name == agent:
                raise ConfigError(f"{ROOT_KEY}.healing.fallbacks.{agent}[{i}]",
                                  f"expected another agent's name, got {name!r}")
    return replace(config, alerting=replace(alerting, thresholds=thresholds, budget=budget))


def load_config(path) -> Config:
    """Read and validate a YAML config file; errors name the file and the key path."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the config: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"invalid YAML: {exc}") from None
    return parse_config(document)


def default_config() -> Config:
    return Config()
