"""Configuration: a YAML superset of the legacy observability_config.yaml.

The Structs below are the parsed, validated form every other module reads.  They
are decoded by msgspec (validation.decode): types and the constraints in their
Annotated Meta are checked while decoding, checks between keys in __post_init__
(which also runs when a Struct is built or replaced in code), and every error
names the key path.  The legacy condition strings and the daily budget become
thresholds after decoding (parse_config).  config.json_schema() describes the
file for editors (schemas/observability.schema.json).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
import yaml
from msgspec import Meta, field

from . import catalog, durations
from .validation import REDACTED, Invalid, Section, decode, join, load_yaml


class ConfigError(ValueError):
    """A config problem; the message starts with the key path, e.g. `observability.metrics.max_series`."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


# -- value types: what each key takes, said once -------------------------------

# Bounded, so that a number no queue or buffer can take fails check, not serve (OverflowError).
PositiveInt = Annotated[int, Meta(gt=0, le=2**31 - 1, description="a positive integer up to 2147483647")]
Positive = Annotated[float, Meta(gt=0, description="a positive number")]
NonNegative = Annotated[float, Meta(ge=0, description="a number >= 0")]
Ratio = Annotated[float, Meta(gt=0, lt=1, description="a ratio between 0 and 1 (exclusive)")]
RatioUpToOne = Annotated[float, Meta(gt=0, le=1, description="a ratio in (0, 1]")]
NonEmpty = Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$(?!\n)",
                               description="a non-empty string on one line")]
# Patterns end in $(?!\n), as Python's $ also matches before a final line break (JSON Schema's does
# not), and spell digits [0-9], as Python's \d takes every script's: either would pass a value that
# Prometheus, Alertmanager or amtool then refuses.
# No user:password@: credentials come from files (or the environment), never from the config.
_URL = r"https?://[^\s/@]+(/\S*)?$(?!\n)"
URL = Annotated[str, Meta(pattern=f"^{_URL}", description="an http(s) URL without user:password@")]
OptionalURL = Annotated[str, Meta(pattern=f"^$(?!\\n)|^{_URL}",
                                  description='an http(s) URL without user:password@, or "" for none')]
Email = Annotated[str, Meta(pattern=r"^[^@\s]+@[^@\s]+$(?!\n)", description="an email address")]
Duration = Annotated[str, Meta(pattern=durations.PROMETHEUS_PATTERN,
                               description="a Prometheus duration such as 30s, 5m or 1h")]
# The port 0..65535: grpcio binds the remainder of a larger one.
_HOST_PORT = (r"(\[[0-9a-fA-F:.]+\]|[^\s:]*):([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]"
              r"|6553[0-5])$(?!\n)")
HostPort = Annotated[str, Meta(pattern=f"^{_HOST_PORT}", description="HOST:PORT")]
OptionalHostPort = Annotated[str, Meta(pattern=f"^$(?!\\n)|^{_HOST_PORT}", description='HOST:PORT, or "" for off')]
AlertName = Annotated[str, Meta(pattern=r"^[A-Z][A-Za-z0-9]*$(?!\n)", description="an alert name in CamelCase")]
LabelName = Annotated[str, Meta(pattern=r"^(?!__)[a-zA-Z_][a-zA-Z0-9_]*$(?!\n)",
                                description="a Prometheus label name")]
# A label value the rules write inside a PromQL string: no quoting needed.
LabelValue = Annotated[str, Meta(pattern=r'^(?![\s\S]*["\\\n])[\s\S]*\S',
                                 description="a non-empty value without quotes, backslashes or line breaks")]
# A header both HTTP (RFC 9110's token) and gRPC metadata (printable ASCII values) can carry.
HEADER_NAME, HEADER_VALUE = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", r"[ -~]*"
HeaderName = Annotated[str, Meta(pattern=f"^{HEADER_NAME}$(?!\\n)", description="an HTTP header name")]
HeaderValue = Annotated[str, Meta(pattern=f"^{HEADER_VALUE}$(?!\\n)", description="a header value of printable ASCII"),
                        REDACTED]
Bucket = Annotated[float, Meta(gt=0, description="a finite positive bound")]
Buckets = Annotated[tuple[Bucket, ...], Meta(min_length=1, description="a list of at least one bucket bound")]
ExtraLabel = Literal[catalog.EXTRA_LABELS]
Channel = Literal["log", "slack", "email"]
# A legacy key that named a secret: accepted only empty, as the legacy default was.
LegacySecret = Annotated[str, Meta(description="nothing (secrets go in files: set the matching *_file key)",
                                   extra_json_schema={"maxLength": 0}), REDACTED] | None
# (long window, short window, burn-rate factor)
BurnRateWindows = tuple[tuple[Duration, Duration, Positive], ...]


def _refuse_secret(value, key: str, instead: str) -> None:
    if value:
        raise Invalid(key, f"secrets are never written in the config: use {instead} instead")


def _unique(values, key: str) -> None:
    if len(set(values)) != len(values):
        raise Invalid(key, "duplicate entries")


# -- sections ------------------------------------------------------------------


class ModelPrice(Section):
    """USD per million tokens, by token type.

    The cache and reasoning prices are optional: tokens of a type whose price is
    not set make an execution's cost unknown, never a guess.
    """
    input: NonNegative
    output: NonNegative
    cache_read: NonNegative | None = None
    cache_write: NonNegative | None = None
    reasoning: NonNegative | None = None


class TracingConfig(Section):
    enabled: bool = True
    backend: Literal["opentelemetry"] = "opentelemetry"
    export_to_console: bool = False
    export_to_otlp: bool = False
    otlp_endpoint: URL = "http://localhost:4317"
    otlp_protocol: Literal["grpc", "http/protobuf"] = "grpc"
    # Values are often API keys: an error never repeats them.  OTEL_EXPORTER_OTLP_HEADERS keeps them out of the file.
    otlp_headers: dict[HeaderName, HeaderValue] = {}
    otlp_timeout_seconds: Positive = 5.0
    trace_all_agents: bool = True
    trace_state_transitions: bool = True
    trace_tool_calls: bool = True
    trace_errors: bool = True
    sampling_rate: Annotated[float, Meta(ge=0, le=1, description="a rate between 0 and 1")] = 1.0
    max_queue_size: PositiveInt = 2048
    capture_content: bool = False            # prompts/completions never leave unless asked


# render scrapes at metrics.collection_interval, at most this: the legacy 60 s would leave alerts late.
MAX_SCRAPE_INTERVAL_SECONDS = 15


class MetricsConfig(Section):
    enabled: bool = True
    collection_interval: Positive = 60.0      # legacy key; the scrape interval hint for render
    max_series: PositiveInt = 10_000
    execution_buckets: Buckets = catalog.EXECUTION_BUCKETS
    tool_buckets: Buckets = catalog.TOOL_BUCKETS
    time_to_first_token_buckets: Buckets = catalog.TIME_TO_FIRST_TOKEN_BUCKETS
    workflow_buckets: Buckets = catalog.WORKFLOW_BUCKETS
    extra_labels: tuple[ExtraLabel, ...] = ()
    prices: dict[str, ModelPrice] = {}        # by model name

    def __post_init__(self):
        for key in ("execution_buckets", "tool_buckets", "time_to_first_token_buckets", "workflow_buckets"):
            bounds = getattr(self, key)
            for i in range(1, len(bounds)):
                if bounds[i] <= bounds[i - 1]:
                    raise Invalid(f"{key}[{i}]",
                                  f"bounds must increase strictly, {bounds[i]!r} follows {bounds[i - 1]!r}")
        _unique(self.extra_labels, "extra_labels")

    @property
    def scrape_interval_seconds(self) -> float:
        """How often the Prometheus that render configures scrapes the exporter."""
        return min(self.collection_interval, MAX_SCRAPE_INTERVAL_SECONDS)


# Log levels in any case, as Prometheus spells them (warn) and as Python does (WARNING); read as Python's.
LOG_LEVELS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "warning": "WARNING", "error": "ERROR",
              "critical": "CRITICAL"}


class LoggingConfig(Section):
    level: Annotated[Literal[tuple(sorted({*LOG_LEVELS, *map(str.upper, LOG_LEVELS)}))], Meta(
        description="a log level: debug, info, warn (or warning), error or critical, in any case")] = "INFO"
    include_traces: bool = True               # trace_id and span_id of the current span on every line
    format: Literal["json", "text"] = "json"  # text is logfmt
    export_to_otlp: bool = False              # also send log records to tracing.otlp_endpoint

    def __post_init__(self):     # Python's name, whichever was written
        msgspec.structs.force_setattr(self, "level", LOG_LEVELS[self.level.lower()])


class Thresholds(Section):
    """What the alert rules compare against; legacy condition strings parse into these."""
    error_ratio: Ratio = 0.05                 # "error_rate > 5%"
    latency_p95_seconds: Positive = 10.0      # "latency_p95 > 10000" (ms in the legacy string)
    cost_per_day_usd: NonNegative = 100.0     # "cost_per_day > 100"
    tool_error_ratio: Ratio = 0.10
    circuit_open_seconds: Positive = 300.0    # breaker open longer than this alerts
    rejected_events_ratio: Ratio = 0.01
    unforwarded_spans_ratio: Ratio = 0.10     # spans otlp.forward_spans dropped or failed to send
    time_to_first_token_p95_seconds: Positive = 5.0
    evaluation_score_floor: Ratio = 0.7       # an agent's mean quality score below this alerts


class SLOConfig(Section):
    objective: Ratio = 0.99                   # success ratio (of agent executions, or of workflow runs)
    # Multi-window multi-burn-rate pairs.
    page_windows: BurnRateWindows = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
    ticket_windows: BurnRateWindows = (("1d", "2h", 3.0), ("3d", "6h", 1.0))


class BudgetConfig(Section):
    day_usd: NonNegative = 100.0
    month_usd: NonNegative = 2000.0
    owners: tuple[Email, ...] = ()            # email addresses of the budget owners; none: the on-call's
    # USD a day per value of the `feature` label (needs metrics.extra_labels: [feature]).
    per_feature: dict[LabelValue, NonNegative] = {}


class EmailConfig(Section):
    # Like the other addresses in the rendered files, the defaults are the shipped
    # docker-compose stack's (its Mailpit); a real deployment sets its own.
    smtp_server: NonEmpty = "mailpit"
    smtp_port: Annotated[int, Meta(gt=0, lt=65536, description="a TCP port")] = 1025
    from_address: Email = "alerts@example.com"
    to_addresses: tuple[Email, ...] = ("oncall@example.com",)     # the on-call
    username: str = ""
    password_file: str = ""                   # never the password itself
    require_tls: bool = False
    password: LegacySecret = None

    def __post_init__(self):
        _refuse_secret(self.password, "password", "password_file (a file holding the password)")


class SlackConfig(Section):
    webhook_url_file: str = "/etc/alertmanager/secrets/slack_webhook_url"
    channel: str = "#orchestrator-alerts"
    webhook_url: LegacySecret = None          # the legacy file's key, there empty

    def __post_init__(self):
        _refuse_secret(self.webhook_url, "webhook_url", "webhook_url_file (a file holding the URL)")


# Labels the rules already aggregate by or set, which a grouping label must not repeat.
_RULE_LABELS = frozenset({
    "job", "instance", "agent", "tool", "workflow", "model", "evaluator", "type", "status", "le", "quantile",
    "alertname", "alertstate", "severity", "slo", "category", *catalog.EXTRA_LABELS})


class ExporterAuthConfig(Section):
    """How Prometheus and Alertmanager reach an exporter behind its web config (alerting.exporter_auth):
    a user of its basic_auth_users, and the CA of its TLS certificate; the files are read by them."""
    username: str = ""
    password_file: str = ""
    ca_file: str = ""                         # PEM; "" for the system's CAs
    password: LegacySecret = None

    def __post_init__(self):
        _refuse_secret(self.password, "password", "password_file (a file holding the password)")
        if bool(self.username) != bool(self.password_file):
            raise Invalid("", "basic auth needs both username and password_file")


class AlertingConfig(Section):
    enabled: bool = True
    # Which receivers render writes: slack, email, and log (every alert to the exporter's
    # /v1/alertmanager, which logs it).  The legacy file says [log] alone; absent, all three.
    channels: tuple[Channel, ...] = ("log", "slack", "email")
    conditions: tuple[str, ...] = ()          # legacy strings, as written; parse_config reads them
    thresholds: Thresholds = field(default_factory=Thresholds)
    slo: SLOConfig = field(default_factory=SLOConfig)
    workflow_slo: SLOConfig = field(default_factory=SLOConfig)   # workflow runs (tasks) end to end
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    slack: SlackConfig = field(default_factory=SlackConfig)
    # Where agent_exporter.compat's send_alert() posts, from the orchestrator's process.  The
    # rendered prometheus.yml sends its alerts to the compose stack's alertmanager:9093.
    alertmanager_url: URL = "http://localhost:9093"
    # Where the monitoring stack reaches the exporter: Alertmanager posts its webhooks there,
    # and the rendered prometheus.yml scrapes its /metrics there (scheme, host, port, mount path).
    exporter_url: URL = "http://agent-exporter:9464"
    # The credentials and CA they use there, when the exporter's web config asks for them.
    exporter_auth: ExporterAuthConfig = field(default_factory=ExporterAuthConfig)
    runbook_url: URL = "https://github.com/agent-exporter/agent-exporter/blob/main/docs/runbooks.md"
    grafana_url: URL = "http://localhost:3000"
    evaluation_interval: Duration = "30s"
    # The window of the alerts on error ratio, latency and rejections, and how long they
    # must hold before firing.  Demos and tests shorten both; recording rules keep 5m.
    rate_window: Duration = "5m"
    alert_for: Duration = "5m"
    # The window of the quality alert: evaluations are sparser than executions.
    evaluation_window: Duration = "1h"
    # Ratio, mean and p95 alerts also need this many events in their window, so one failure
    # in two calls at night, or the first minutes after a restart, page no one.
    min_events: PositiveInt = 10
    # Prometheus' job label of the exporters: every rule and dashboard selects job="<job>".
    job: LabelValue = "agent-exporter"
    # Labels the alerts keep apart (e.g. environment, cluster) when one Prometheus
    # scrapes several deployments; the recording rules aggregate by them too.
    group_labels: tuple[LabelName, ...] = ()
    # This deployment's values of group_labels (environment: production): its self-healing acts
    # only on the alerts that carry them and learns from its own deployment's statistics.
    deployment_labels: dict[LabelName, LabelValue] = {}
    # Alerts whose firing opens the named agent's circuit breaker (self-healing).
    remediation_alerts: tuple[AlertName, ...] = ("OrchestratorAgentHighErrorRatio",)
    # error_type values that are the task's own fault (a bad input), not the agent's: the agent
    # error ratio, its SLO, their alerts and dashboards, and so remediation and the fleet's
    # statistics, leave them out.  They still count in agent_executions_total{status="error"}
    # and agent_errors_total.
    task_error_types: tuple[LabelValue, ...] = ()

    def __post_init__(self):
        _unique(self.channels, "channels")
        try:    # render scrapes the exporter there: host:port
            exporter = urlsplit(self.exporter_url)
            exporter.port
        except ValueError as e:
            raise Invalid("exporter_url", str(e)) from None
        if not exporter.hostname:
            raise Invalid("exporter_url", f"{self.exporter_url!r} names no host")
        if self.exporter_auth.ca_file and exporter.scheme != "https":
            raise Invalid("exporter_auth.ca_file", "verifies an https exporter; exporter_url is http")
        if "email" in self.channels and not self.email.to_addresses:
            raise Invalid("email.to_addresses", "empty; the email channel needs at least one address "
                                                "(or leave email out of channels)")
        for i, label in enumerate(self.group_labels):
            if label in _RULE_LABELS:
                raise Invalid(f"group_labels[{i}]", f"{label!r} is a label the rules already use; "
                                                    "expected a deployment label such as environment or cluster")
        _unique(self.group_labels, "group_labels")
        _unique(self.task_error_types, "task_error_types")
        for label in self.deployment_labels:
            if label not in self.group_labels:
                raise Invalid(f"deployment_labels.{label}", f"{label!r} is not one of group_labels, "
                                                            "the only labels the alerts and recording rules keep")


class ServerConfig(Section):
    listen_address: HostPort = "127.0.0.1:9464"
    max_body_bytes: PositiveInt = 10 * 1024 * 1024
    bearer_token_file: str = ""               # AGENT_EXPORTER_BEARER_TOKEN in the environment wins (credentials.py)


class OTLPConfig(Section):
    """OTLP traces in: GenAI spans become events (otlp.py)."""
    grpc_listen_address: OptionalHostPort = ""   # HOST:PORT of the OTLP/gRPC receiver; "" = off
    # Received spans forwarded unchanged to tracing.otlp_endpoint (tracing.otlp_protocol).
    forward_spans: bool = False
    forward_queue_size: PositiveInt = 64      # export requests waiting to be forwarded; past it, dropped
    # How long an inference span waits for its enclosing agent span, which arrives when the agent
    # ends, before it counts as an execution of its own: seconds without any span of its trace
    # arriving (so a long agent run that goes on calling models is waited for); well above the
    # SDK's 5 s export interval and an agent's longest pause between calls.
    attribution_wait_seconds: Positive = 30.0
    max_buffered_spans: PositiveInt = 100_000  # spans held for attribution, over all traces


class SelectorConfig(Section):
    """The adaptive selector: how fast evidence fades and what besides success counts."""
    decay: RatioUpToOne = 0.97                # weight left to old evidence per new outcome of the task
    latency_weight: NonNegative = 0.2         # largest score penalty, for the slowest candidate
    cost_weight: NonNegative = 0.1            # largest score penalty, for the most expensive candidate
    # How much a success's evaluation score counts: 0 ignores scores, 1 counts a success as its score.
    quality_weight: Annotated[float, Meta(ge=0, le=1, description="a weight between 0 and 1")] = 0.5


class HTTPAuthConfig(Section):
    """Credentials for an API the healing layer polls: a bearer token or basic auth, read from files."""
    bearer_token_file: str = ""
    username: str = ""
    password_file: str = ""
    password: LegacySecret = None
    bearer_token: LegacySecret = None

    def __post_init__(self):
        _refuse_secret(self.password, "password", "password_file (a file holding the password)")
        _refuse_secret(self.bearer_token, "bearer_token", "bearer_token_file (a file holding the token)")
        if self.bearer_token_file and (self.username or self.password_file):
            raise Invalid("", "expected a bearer token or basic auth, not both")
        if bool(self.username) != bool(self.password_file):
            raise Invalid("", "basic auth needs both username and password_file")


class FleetAlertmanagerConfig(Section):
    """Poll Alertmanager's v2 API for the remediation alerts (healing.fleet.alertmanager)."""
    urls: tuple[URL, ...] = ()                # members of one cluster, any answers; none: webhook only
    interval_seconds: Positive = 10.0
    auth: HTTPAuthConfig = field(default_factory=HTTPAuthConfig)


class FleetPrometheusConfig(Section):
    """Seed and refresh the selector from the fleet's recording rules (healing.fleet.prometheus)."""
    url: OptionalURL = ""                     # none: each replica learns alone
    interval_seconds: Positive = 30.0
    # The statistics' window, rendered as recording rules beside the alerts' windows.  Short, because a
    # replica that joins mid-incident trusts these first: over 5m the failing agent still looks healthy.
    window: Duration = "1m"
    fleet_weight: Positive = 10.0             # observations the fleet's success ratio counts as
    local_weight: Positive = 1.0              # multiplier of the replica's own decayed outcomes
    auth: HTTPAuthConfig = field(default_factory=HTTPAuthConfig)


class FleetConfig(Section):
    """Every replica acts on the same alerts and statistics, through Alertmanager and Prometheus."""
    alertmanager: FleetAlertmanagerConfig = field(default_factory=FleetAlertmanagerConfig)
    prometheus: FleetPrometheusConfig = field(default_factory=FleetPrometheusConfig)
    # Each wait is its interval times a factor in 1 +- jitter.
    jitter: Annotated[float, Meta(ge=0, lt=1, description="a fraction in [0, 1)")] = 0.2
    backoff_max_seconds: Positive = 60.0      # failing polls back off exponentially up to this
    timeout_seconds: Positive = 2.0           # per HTTP request


class HealingConfig(Section):
    enabled: bool = True
    max_attempts: PositiveInt = 3
    backoff_initial_seconds: Positive = 0.1
    backoff_max_seconds: Positive = 5.0
    breaker_window_seconds: Positive = 60.0
    breaker_error_ratio: RatioUpToOne = 0.5
    breaker_min_calls: PositiveInt = 10
    breaker_cooldown_seconds: Positive = 30.0
    breaker_half_open_probes: PositiveInt = 3
    fallbacks: dict[str, tuple[str, ...]] = {}   # agent -> ordered alternatives
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)

    def __post_init__(self):
        for agent, alternatives in self.fallbacks.items():
            for i, name in enumerate(alternatives):
                if not name or name == agent:
                    raise Invalid(f"fallbacks.{agent}[{i}]", f"expected another agent's name, got {name!r}")


ROOT_KEY = "observability"


class Config(Section):
    enabled: bool = True
    service_name: NonEmpty = "agent-orchestrator"
    service_version: str = ""
    environment: NonEmpty = "production"
    tracing: TracingConfig = field(default_factory=TracingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    otlp: OTLPConfig = field(default_factory=OTLPConfig)
    healing: HealingConfig = field(default_factory=HealingConfig)

    def __post_init__(self):
        if self.alerting.budget.per_feature and "feature" not in self.metrics.extra_labels:
            raise Invalid("alerting.budget.per_feature", "budgets per feature need the feature label: "
                                                         f"add feature to {ROOT_KEY}.metrics.extra_labels")
        # A p95 is measured between bucket bounds: at or above the largest one it can never be
        # exceeded, and below the smallest one it is a guess.
        thresholds = self.alerting.thresholds
        for threshold, buckets in (("latency_p95_seconds", "execution_buckets"),
                                   ("time_to_first_token_p95_seconds", "time_to_first_token_buckets")):
            bounds, value = getattr(self.metrics, buckets), getattr(thresholds, threshold)
            if not bounds[0] <= value < bounds[-1]:
                raise Invalid(f"alerting.thresholds.{threshold}",
                              f"{value!r} is not within {ROOT_KEY}.metrics.{buckets} (from {bounds[0]!r} "
                              f"to below {bounds[-1]!r}), where a p95 can be measured against it")
        # Prometheus scrapes at its own phase, not the rules': a window of fewer than four scrapes often
        # holds one sample, and rate() over it is empty, so an alert on it never fires.
        scrape = self.metrics.scrape_interval_seconds
        windows = [("alerting.rate_window", self.alerting.rate_window),
                   ("alerting.evaluation_window", self.alerting.evaluation_window),
                   ("healing.fleet.prometheus.window", self.healing.fleet.prometheus.window)]
        for slo in ("slo", "workflow_slo"):
            for kind in ("page_windows", "ticket_windows"):
                pairs = getattr(getattr(self.alerting, slo), kind)
                windows += [(f"alerting.{slo}.{kind}[{i}]", short) for i, (_, short, _) in enumerate(pairs)]
        for key, window in windows:
            if durations.prometheus_seconds(window) < 4 * scrape:
                raise Invalid(key, f"{window} is under four scrapes at the scrape interval render writes "
                                   f"({scrape:g}s: {ROOT_KEY}.metrics.collection_interval, at most "
                                   f"{MAX_SCRAPE_INTERVAL_SECONDS}s); rate() over it is often empty")


# -- loading -----------------------------------------------------------------

_CONDITION = re.compile(
    r"^\s*(?P<metric>[a-z_0-9]+)\s*>\s*\$?\s*(?P<value>\d+(\.\d+)?)\s*(?P<unit>%|ms|s)?\s*$")


def _parse_condition(text: str, path: str) -> tuple[str, float]:
    """A legacy condition string as (Thresholds field, value)."""
    match = _CONDITION.match(text) if isinstance(text, str) else None
    if not match:
        raise ConfigError(path, f"cannot read condition {text!r}; expected e.g. 'error_rate > 5%', "
                                "'latency_p95 > 10000' (ms), 'cost_per_day > 100'")
    metric, value, unit = match["metric"], float(match["value"]), match["unit"]
    if metric == "error_rate":
        # A percentage with or without its sign: the legacy evaluator divided by 100 either way.
        if unit not in (None, "%"):
            raise ConfigError(path, f"error_rate takes a percentage ('5%' or '5'), got {text!r}")
        if not 0 < value < 100:
            raise ConfigError(path, f"expected a percentage between 0 and 100 (exclusive), got {value!r}")
        return "error_ratio", value / 100
    if metric == "latency_p95":
        if unit == "%":
            raise ConfigError(path, f"latency_p95 takes milliseconds, or an explicit unit ms or s, got {text!r}")
        seconds = value if unit == "s" else value / 1000   # the legacy string counts milliseconds
        if not seconds > 0:
            raise ConfigError(path, f"expected a positive number, got {seconds!r}")
        return "latency_p95_seconds", seconds
    if metric == "cost_per_day":
        if unit is not None:
            raise ConfigError(path, f"cost_per_day takes US dollars, got {text!r}")
        return "cost_per_day_usd", value
    raise ConfigError(path, f"unknown condition metric {metric!r}; expected error_rate, latency_p95 or cost_per_day")


def _explicit(data, *keys) -> bool:
    """Whether the document sets the key at `keys` (a null value sets nothing)."""
    for key in keys:
        if not isinstance(data, dict) or data.get(key) is None:
            return False
        data = data[key]
    return True


def _with_legacy_thresholds(config: Config, raw) -> Config:
    """`config` with its legacy condition strings and its daily budget read into the thresholds."""
    alerting = config.alerting
    thresholds_path = f"{ROOT_KEY}.alerting.thresholds"

    # Legacy condition strings become thresholds; an explicit threshold that says otherwise is an error.
    derived: dict[str, tuple[float, str]] = {}
    for i, condition in enumerate(alerting.conditions):
        path = f"{ROOT_KEY}.alerting.conditions[{i}]"
        name, value = _parse_condition(condition, path)
        if name in derived and derived[name][0] != value:
            raise ConfigError(path, f"contradicts {derived[name][1]}")
        derived[name] = (value, path)
    thresholds = alerting.thresholds
    for name, (value, path) in derived.items():
        if _explicit(raw, "alerting", "thresholds", name) and getattr(thresholds, name) != value:
            raise ConfigError(path, f"contradicts {thresholds_path}.{name} = {getattr(thresholds, name)!r}")
        thresholds = msgspec.structs.replace(thresholds, **{name: value})

    # The daily cost threshold and the daily budget are one number, set either way.
    budget = alerting.budget
    cost_set = _explicit(raw, "alerting", "thresholds", "cost_per_day_usd") or "cost_per_day_usd" in derived
    budget_set = _explicit(raw, "alerting", "budget", "day_usd")
    if cost_set and budget_set and budget.day_usd != thresholds.cost_per_day_usd:
        raise ConfigError(f"{ROOT_KEY}.alerting.budget.day_usd",
                          f"{budget.day_usd!r} contradicts the daily cost threshold {thresholds.cost_per_day_usd!r}")
    if cost_set:
        budget = msgspec.structs.replace(budget, day_usd=thresholds.cost_per_day_usd)
    elif budget_set:
        thresholds = msgspec.structs.replace(thresholds, cost_per_day_usd=budget.day_usd)
    alerting = msgspec.structs.replace(alerting, thresholds=thresholds, budget=budget)
    try:
        return msgspec.structs.replace(config, alerting=alerting)
    except Invalid as exc:         # Config's checks of the thresholds, now with the derived values
        raise ConfigError(join(ROOT_KEY, exc.key), exc.message) from None


def parse_config(mapping) -> Config:
    """A Config from the parsed YAML document (with its top key `observability`)."""
    if mapping is None:
        return Config()
    if not isinstance(mapping, dict):
        raise ConfigError(ROOT_KEY, f"expected a mapping with the top key {ROOT_KEY!r}")
    unknown = set(mapping) - {ROOT_KEY}
    if unknown:
        raise ConfigError(sorted(map(str, unknown))[0], f"unknown top-level key; the config lives under {ROOT_KEY!r}")
    raw = mapping.get(ROOT_KEY)
    if raw is None:             # `observability:` left empty: the defaults, as for any key
        raw = {}
    config = decode(raw, Config, root=ROOT_KEY, error=ConfigError)
    return _with_legacy_thresholds(config, raw)


def load_config(path) -> Config:
    """Read and validate a YAML config file; errors name the file and the key path."""
    return parse_config(read_document(path))


def read_document(path, *, unique_keys: bool = True):
    """The YAML document of a config file, not yet validated (ConfigError naming the file).
    A key given twice in one mapping is an error unless `unique_keys` is false (the legacy
    package's reading, where the last one wins)."""
    path = Path(path)
    try:
        return load_yaml(path.read_bytes(), unique_keys=unique_keys)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the config: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"invalid YAML: {exc}") from None


def default_config() -> Config:
    return Config()


def json_schema() -> dict:
    """JSON Schema of the config file, for editors (schemas/observability.schema.json)."""
    (schema,), components = msgspec.json.schema_components([Config], ref_template="#/$defs/{name}")
    for component in components.values():      # a class's docstring, indented before msgspec 0.23
        if "description" in component:
            component["description"] = inspect.cleandoc(component["description"])
        for key, value in component.get("properties", {}).items():
            component["properties"][key] = _or_empty(value)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://agent-exporter.dev/schemas/observability.schema.json",
        "title": "agent-exporter configuration (observability.yaml)",
        "description": "Every key is optional; a key left empty takes its default. "
                       "Secrets are never written here: the *_file keys name files that hold them.",
        "type": "object",
        "properties": {ROOT_KEY: _or_empty(schema)},
        "additionalProperties": False,
        "$defs": components,
    }


def _or_empty(schema: dict) -> dict:
    """A key's schema, taking null too: a key left empty takes its default (validation.decode)."""
    if {"type": "null"} in schema.get("anyOf", ()):
        return schema
    # What editors show of a key stays at its top, beside the alternatives.
    shown = {name: schema.pop(name) for name in ("default", "description", "title") if name in schema}
    return {**shown, "anyOf": [schema, {"type": "null"}]}


def json_schema_text() -> str:
    """The published file's text: json_schema() with sorted keys, two-space indents, a final newline."""
    import json
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":      # python -m agent_exporter.config > schemas/observability.schema.json
    import sys
    sys.stdout.write(json_schema_text())
