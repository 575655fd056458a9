from pathlib import Path

import pytest
import yaml
from msgspec.structs import replace

from agent_exporter.config import (
    Config, ConfigError, ModelPrice, default_config, load_config, parse_config)

from legacy_config import LEGACY_YAML

ROOT = Path(__file__).resolve().parents[2]


def parse(text: str) -> Config:
    return parse_config(yaml.safe_load(text))


def test_legacy_config_loads_with_its_thresholds(tmp_path):
    path = tmp_path / "observability_config.yaml"
    path.write_text(LEGACY_YAML)
    config = load_config(path)
    thresholds = config.alerting.thresholds
    assert (thresholds.error_ratio, thresholds.latency_p95_seconds, thresholds.cost_per_day_usd) == (0.05, 10.0, 100.0)
    assert config.alerting.budget.day_usd == 100.0
    assert config.tracing.export_to_console is True
    assert config.alerting.email.smtp_server == "smtp.gmail.com"
    assert config.alerting.email.to_addresses == ("dev-team@magnus.com",)
    assert config.metrics.collection_interval == 60.0


@pytest.mark.parametrize("condition,field,value", [
    ("error_rate > 5%", "error_ratio", 0.05),
    # The legacy evaluator read the number as a percentage, with or without its sign.
    ("error_rate > 5", "error_ratio", 0.05),
    ("error_rate > 0.5", "error_ratio", 0.005),
    ("error_rate>12.5%", "error_ratio", 0.125),
    ("latency_p95 > 10000", "latency_p95_seconds", 10.0),
    ("latency_p95 > 2500ms", "latency_p95_seconds", 2.5),
    ("latency_p95 > 30s", "latency_p95_seconds", 30.0),
    ("cost_per_day > 100", "cost_per_day_usd", 100.0),
    ("cost_per_day > $250", "cost_per_day_usd", 250.0),
])
def test_legacy_conditions_become_thresholds(condition, field, value):
    config = parse_config({"observability": {"alerting": {"conditions": [condition]}}})
    assert getattr(config.alerting.thresholds, field) == pytest.approx(value)


def test_defaults_equal_default_config():
    assert parse_config(None) == parse_config({"observability": None}) == default_config() == Config()


def test_example_config_loads():
    config = load_config(ROOT / "examples" / "observability.yaml")
    assert config.metrics.prices["gpt-4o"] == ModelPrice(input=2.5, output=10.0)
    assert config.metrics.extra_labels == ("feature",)
    assert config.healing.fallbacks == {"coder-gpt-4o": ("coder-claude-sonnet",)}
    assert config.alerting.budget.owners == ("finops@example.com",)


def test_daily_budget_and_cost_threshold_are_one_number():
    assert parse_config({"observability": {"alerting": {"budget": {"day_usd": 40}}}}).alerting.thresholds.cost_per_day_usd == 40
    config = parse_config({"observability": {"alerting": {"thresholds": {"cost_per_day_usd": 70}}}})
    assert config.alerting.budget.day_usd == 70


BAD = [
    ({"metrics": {"max_series": "ten"}}, "observability.metrics.max_series", "integer"),
    ({"metrics": {"max_series": 0}}, "observability.metrics.max_series", "positive"),
    ({"metrics": {"max_series": True}}, "observability.metrics.max_series", "integer"),
    ({"metrics": {"enabled": 1}}, "observability.metrics.enabled", "true or false"),
    ({"metrics": {"execution_buckets": [1, 5, 2]}}, "observability.metrics.execution_buckets[2]", "increase"),
    ({"metrics": {"tool_buckets": []}}, "observability.metrics.tool_buckets", "at least one"),
    ({"metrics": {"tool_buckets": [-1]}}, "observability.metrics.tool_buckets[0]", "positive"),
    ({"metrics": {"extra_labels": ["user"]}}, "observability.metrics.extra_labels[0]", "feature"),
    ({"metrics": {"prices": {"m": {"input": 1}}}}, "observability.metrics.prices.m", "missing"),
    ({"metrics": {"prices": {"m": {"input": -1, "output": 1}}}}, "observability.metrics.prices.m.input", ">= 0"),
    ({"tracing": {"sampling_rate": 1.5}}, "observability.tracing.sampling_rate", "between 0 and 1"),
    ({"tracing": {"otlp_protocol": "thrift"}}, "observability.tracing.otlp_protocol", "grpc"),
    ({"tracing": {"otlp_endpoint": "localhost:4317"}}, "observability.tracing.otlp_endpoint", "URL"),
    ({"tracing": {"colour": "blue"}}, "observability.tracing.colour", "unknown key"),
    # Only an implemented backend is accepted, so a typo or a wish is not silently ignored.
    ({"tracing": {"backend": "jaeger"}}, "observability.tracing.backend", "opentelemetry"),
    ({"logging": {"level": "LOUD"}}, "observability.logging.level", "warn (or warning)"),
    ({"alerting": {"slo": {"objective": 1.0}}}, "observability.alerting.slo.objective", "ratio"),
    ({"alerting": {"slo": {"page_windows": [["1h", "5min", 14.4]]}}}, "observability.alerting.slo.page_windows[0][1]", "duration"),
    ({"alerting": {"channels": ["pager"]}}, "observability.alerting.channels[0]", "slack"),
    ({"alerting": {"email": {"to_addresses": ["nobody"]}}}, "observability.alerting.email.to_addresses[0]", "email"),
    # Alertmanager would refuse an email receiver with no recipient; a placeholder would mail nobody real.
    ({"alerting": {"email": {"to_addresses": []}}}, "observability.alerting.email.to_addresses", "at least one"),
    # rate() needs two samples; Prometheus scrapes out of step with the rules, so four scrapes, at render's 15s.
    ({"alerting": {"rate_window": "45s"}}, "observability.alerting.rate_window", "under four scrapes"),
    ({"alerting": {"evaluation_window": "20s"}}, "observability.alerting.evaluation_window", "under four scrapes"),
    ({"alerting": {"slo": {"page_windows": [["1h", "30s", 14.4]]}}}, "observability.alerting.slo.page_windows[0]",
     "under four scrapes"),
    ({"healing": {"fleet": {"prometheus": {"window": "30s"}}}}, "observability.healing.fleet.prometheus.window",
     "under four scrapes"),
    ({"alerting": {"email": {"password": "hunter2"}}}, "observability.alerting.email.password", "password_file"),
    ({"alerting": {"slack": {"webhook_url": "https://hooks.slack.com/services/T/B/X"}}},
     "observability.alerting.slack.webhook_url", "webhook_url_file"),
    ({"alerting": {"conditions": ["error_rate > lots"]}}, "observability.alerting.conditions[0]", "cannot read"),
    ({"alerting": {"conditions": ["error_rate > 5ms"]}}, "observability.alerting.conditions[0]", "percentage"),
    ({"alerting": {"conditions": ["error_rate > 100%"]}}, "observability.alerting.conditions[0]", "between 0 and 100"),
    ({"alerting": {"conditions": ["throughput > 5"]}}, "observability.alerting.conditions[0]", "unknown condition"),
    ({"alerting": {"conditions": ["error_rate > 5%"], "thresholds": {"error_ratio": 0.1}}},
     "observability.alerting.conditions[0]", "observability.alerting.thresholds.error_ratio"),
    ({"alerting": {"conditions": ["cost_per_day > 100"], "budget": {"day_usd": 50}}},
     "observability.alerting.budget.day_usd", "contradicts"),
    ({"alerting": {"evaluation_interval": "soon"}}, "observability.alerting.evaluation_interval", "duration"),
    ({"alerting": {"remediation_alerts": ["high error ratio"]}}, "observability.alerting.remediation_alerts[0]", "CamelCase"),
    ({"server": {"listen_address": "9464"}}, "observability.server.listen_address", "HOST:PORT"),
    ({"server": {"listen_address": "127.0.0.1:65536"}}, "observability.server.listen_address", "HOST:PORT"),
    ({"healing": {"breaker_error_ratio": 0}}, "observability.healing.breaker_error_ratio", "ratio"),
    ({"healing": {"fallbacks": {"coder": ["coder"]}}}, "observability.healing.fallbacks.coder[0]", "another agent"),
    ({"healing": {"fallbacks": {"coder": "coder-b"}}}, "observability.healing.fallbacks.coder", "list"),
]


@pytest.mark.parametrize("section,path,words", BAD, ids=[b[1] for b in BAD])
def test_bad_values_name_the_key_path(section, path, words):
    with pytest.raises(ConfigError) as info:
        parse_config({"observability": section})
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    assert words in str(info.value)


def test_unknown_top_level_key():
    with pytest.raises(ConfigError) as info:
        parse_config({"observability": {}, "observabilty": {}})
    assert info.value.path == "observabilty"


def test_unreadable_and_invalid_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("observability: [unclosed")
    with pytest.raises(ConfigError) as info:
        load_config(broken)
    assert info.value.path == str(broken)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
    assert replace(Config(), service_name="x").service_name == "x"


# -- alerting: channels, job, grouping labels, minimum events, new signals, budgets per feature --


def test_alerting_defaults():
    alerting = Config().alerting
    assert alerting.channels == ("log", "slack", "email")
    assert alerting.job == "agent-exporter" and alerting.group_labels == ()
    assert alerting.min_events == 10 and alerting.evaluation_window == "1h"
    assert alerting.workflow_slo == alerting.slo
    assert alerting.thresholds.time_to_first_token_p95_seconds == 5.0
    assert alerting.thresholds.evaluation_score_floor == 0.7
    assert alerting.budget.per_feature == {}


def test_the_legacy_file_keeps_its_log_channel_alone():
    assert parse(LEGACY_YAML).alerting.channels == ("log",)


def test_alerting_keys_load():
    config = parse_config({"observability": {
        "metrics": {"extra_labels": ["feature"]},
        "alerting": {
            "channels": ["email"], "job": "orchestrator", "group_labels": ["environment", "cluster"],
            "min_events": 25, "evaluation_window": "30m",
            "thresholds": {"time_to_first_token_p95_seconds": 2.5, "evaluation_score_floor": 0.8},
            "workflow_slo": {"objective": 0.95, "page_windows": [["1h", "5m", 14.4]]},
            "budget": {"per_feature": {"login": 20, "search": 35.5}},
        }}})
    alerting = config.alerting
    assert alerting.channels == ("email",)
    assert (alerting.job, alerting.group_labels) == ("orchestrator", ("environment", "cluster"))
    assert (alerting.min_events, alerting.evaluation_window) == (25, "30m")
    assert alerting.thresholds.time_to_first_token_p95_seconds == 2.5
    assert alerting.thresholds.evaluation_score_floor == 0.8
    assert alerting.workflow_slo.objective == 0.95
    assert alerting.workflow_slo.page_windows == (("1h", "5m", 14.4),)
    assert alerting.slo == Config().alerting.slo
    assert alerting.budget.per_feature == {"login": 20.0, "search": 35.5}


def test_a_shorter_scrape_interval_allows_shorter_windows():
    config = parse_config({"observability": {"metrics": {"collection_interval": 5}, "alerting": {"rate_window": "20s"}}})
    assert config.alerting.rate_window == "20s"


def test_the_example_config_documents_the_alerting_keys():
    config = load_config(ROOT / "examples" / "observability.yaml")
    assert config.alerting.budget.per_feature
    assert config.alerting.channels == ("log", "slack", "email")


BAD_ALERTING = [
    ({"alerting": {"channels": ["log", "log"]}}, "observability.alerting.channels", "duplicate"),
    ({"alerting": {"job": 'agent"exporter'}}, "observability.alerting.job", "quotes"),
    ({"alerting": {"job": ""}}, "observability.alerting.job", "non-empty"),
    ({"alerting": {"group_labels": ["environment", "2nd"]}}, "observability.alerting.group_labels[1]", "label name"),
    ({"alerting": {"group_labels": ["__name__"]}}, "observability.alerting.group_labels[0]", "label name"),
    ({"alerting": {"group_labels": ["agent"]}}, "observability.alerting.group_labels[0]", "already use"),
    ({"alerting": {"group_labels": ["cluster", "cluster"]}}, "observability.alerting.group_labels", "duplicate"),
    ({"alerting": {"exporter_url": "http://agent-exporter:metrics"}}, "observability.alerting.exporter_url", "Port"),
    ({"alerting": {"exporter_url": "http://:9464"}}, "observability.alerting.exporter_url", "no host"),
    ({"alerting": {"min_events": 0}}, "observability.alerting.min_events", "positive"),
    ({"alerting": {"min_events": 2.5}}, "observability.alerting.min_events", "integer"),
    ({"alerting": {"evaluation_window": "an hour"}}, "observability.alerting.evaluation_window", "duration"),
    ({"alerting": {"thresholds": {"evaluation_score_floor": 1.2}}},
     "observability.alerting.thresholds.evaluation_score_floor", "ratio"),
    ({"alerting": {"thresholds": {"time_to_first_token_p95_seconds": 0}}},
     "observability.alerting.thresholds.time_to_first_token_p95_seconds", "positive"),
    ({"alerting": {"thresholds": {"time_to_first_token_p95_seconds": 60}}},
     "observability.alerting.thresholds.time_to_first_token_p95_seconds", "time_to_first_token_buckets"),
    ({"alerting": {"thresholds": {"latency_p95_seconds": 0.01}}},
     "observability.alerting.thresholds.latency_p95_seconds", "execution_buckets"),
    ({"alerting": {"conditions": ["latency_p95 > 900s"]}},
     "observability.alerting.thresholds.latency_p95_seconds", "can be measured"),
    ({"alerting": {"workflow_slo": {"objective": 1}}}, "observability.alerting.workflow_slo.objective", "ratio"),
    ({"alerting": {"budget": {"per_feature": {"login": 20}}}},
     "observability.alerting.budget.per_feature", "observability.metrics.extra_labels"),
    ({"metrics": {"extra_labels": ["feature"]}, "alerting": {"budget": {"per_feature": {"login": -1}}}},
     "observability.alerting.budget.per_feature.login", ">= 0"),
    ({"metrics": {"extra_labels": ["feature"]}, "alerting": {"budget": {"per_feature": {'lo"gin': 1}}}},
     "observability.alerting.budget.per_feature", "quotes"),
    ({"metrics": {"extra_labels": ["feature"]}, "alerting": {"budget": {"per_feature": ["login"]}}},
     "observability.alerting.budget.per_feature", "mapping"),
]


@pytest.mark.parametrize("section,path,words", BAD_ALERTING, ids=[b[1] for b in BAD_ALERTING])
def test_bad_alerting_values_name_the_key_path(section, path, words):
    with pytest.raises(ConfigError) as info:
        parse_config({"observability": section})
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    assert words in str(info.value)


# -- healing.selector and healing.fleet ---------------------------------------------------------

FLEET_YAML = """
observability:
  healing:
    selector:
      decay: 0.9
      quality_weight: 1.0
    fleet:
      alertmanager:
        urls: [http://alertmanager-0:9093, http://alertmanager-1:9093]
        interval_seconds: 5
        auth: {bearer_token_file: /run/secrets/am_token}
      prometheus:
        url: https://prometheus.example.com
        fleet_weight: 15
        local_weight: 2
        auth: {username: fleet, password_file: /run/secrets/prom_password}
      jitter: 0.1
      backoff_max_seconds: 30
      timeout_seconds: 1.5
"""


def test_fleet_and_selector_keys_load():
    from agent_exporter.config import HTTPAuthConfig
    healing = parse(FLEET_YAML).healing
    assert (healing.selector.decay, healing.selector.quality_weight, healing.selector.latency_weight) == (0.9, 1.0, 0.2)
    fleet = healing.fleet
    assert fleet.alertmanager.urls == ("http://alertmanager-0:9093", "http://alertmanager-1:9093")
    assert fleet.alertmanager.interval_seconds == 5.0
    assert fleet.alertmanager.auth == HTTPAuthConfig(bearer_token_file="/run/secrets/am_token")
    assert (fleet.prometheus.url, fleet.prometheus.fleet_weight, fleet.prometheus.local_weight) == (
        "https://prometheus.example.com", 15.0, 2.0)
    assert fleet.prometheus.auth == HTTPAuthConfig(username="fleet", password_file="/run/secrets/prom_password")
    assert (fleet.jitter, fleet.backoff_max_seconds, fleet.timeout_seconds) == (0.1, 30.0, 1.5)


def test_fleet_is_off_by_default_and_in_the_example():
    fleet = Config().healing.fleet
    assert fleet.alertmanager.urls == () and fleet.prometheus.url == ""
    example = load_config(ROOT / "examples" / "observability.yaml").healing
    assert example.fleet == fleet and example.selector == Config().healing.selector


FLEET_BAD = [
    ({"selector": {"decay": 0}}, "observability.healing.selector.decay", "(0, 1]"),
    ({"selector": {"quality_weight": 1.5}}, "observability.healing.selector.quality_weight", "between 0 and 1"),
    ({"selector": {"cost_weight": -0.1}}, "observability.healing.selector.cost_weight", ">= 0"),
    ({"fleet": {"alertmanager": {"urls": ["alertmanager:9093"]}}},
     "observability.healing.fleet.alertmanager.urls[0]", "URL"),
    ({"fleet": {"alertmanager": {"urls": "http://alertmanager:9093"}}},
     "observability.healing.fleet.alertmanager.urls", "list"),
    ({"fleet": {"alertmanager": {"interval_seconds": 0}}},
     "observability.healing.fleet.alertmanager.interval_seconds", "positive"),
    ({"fleet": {"prometheus": {"url": "prometheus:9090"}}}, "observability.healing.fleet.prometheus.url", "URL"),
    ({"fleet": {"prometheus": {"fleet_weight": 0}}}, "observability.healing.fleet.prometheus.fleet_weight",
     "positive"),
    ({"fleet": {"prometheus": {"local_weight": -1}}}, "observability.healing.fleet.prometheus.local_weight",
     "positive"),
    ({"fleet": {"prometheus": {"auth": {"bearer_token_file": "/t", "username": "u", "password_file": "/p"}}}},
     "observability.healing.fleet.prometheus.auth", "not both"),
    ({"fleet": {"alertmanager": {"auth": {"username": "u"}}}},
     "observability.healing.fleet.alertmanager.auth", "password_file"),
    ({"fleet": {"alertmanager": {"auth": {"password": "hunter2"}}}},
     "observability.healing.fleet.alertmanager.auth.password", "password_file"),
    ({"fleet": {"prometheus": {"auth": {"bearer_token": "abc"}}}},
     "observability.healing.fleet.prometheus.auth.bearer_token", "bearer_token_file"),
    ({"fleet": {"jitter": 1}}, "observability.healing.fleet.jitter", "[0, 1)"),
    ({"fleet": {"backoff_max_seconds": 0}}, "observability.healing.fleet.backoff_max_seconds", "positive"),
    ({"fleet": {"timeout_seconds": -1}}, "observability.healing.fleet.timeout_seconds", "positive"),
    ({"fleet": {"prometheus": {"urls": []}}}, "observability.healing.fleet.prometheus.urls", "unknown key"),
]


@pytest.mark.parametrize("section,path,words", FLEET_BAD, ids=[b[1] for b in FLEET_BAD])
def test_bad_fleet_and_selector_values_name_the_key_path(section, path, words):
    with pytest.raises(ConfigError) as info:
        parse_config({"observability": {"healing": section}})
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")


def test_otlp_section_defaults_and_example():
    otlp = Config().otlp
    assert (otlp.grpc_listen_address, otlp.forward_spans) == ("", False)
    assert otlp.attribution_wait_seconds == 30.0 and otlp.max_buffered_spans == 100_000
    assert load_config(ROOT / "examples" / "observability.yaml").otlp == otlp
    config = parse_config({"observability": {"otlp": {
        "grpc_listen_address": "127.0.0.1:4317", "forward_spans": True, "forward_queue_size": 8,
        "attribution_wait_seconds": 2.5, "max_buffered_spans": 500}}})
    assert config.otlp.grpc_listen_address == "127.0.0.1:4317" and config.otlp.forward_spans is True
    assert (config.otlp.forward_queue_size, config.otlp.attribution_wait_seconds,
            config.otlp.max_buffered_spans) == (8, 2.5, 500)


OTLP_BAD = [
    ({"grpc_listen_address": "4317"}, "observability.otlp.grpc_listen_address", "HOST:PORT"),
    ({"grpc_listen_address": "127.0.0.1:84764"}, "observability.otlp.grpc_listen_address", "HOST:PORT"),
    ({"forward_spans": "yes"}, "observability.otlp.forward_spans", "true or false"),
    ({"forward_queue_size": 0}, "observability.otlp.forward_queue_size", "positive"),
    ({"attribution_wait_seconds": -1}, "observability.otlp.attribution_wait_seconds", "positive"),
    ({"max_buffered_spans": 1.5}, "observability.otlp.max_buffered_spans", "integer"),
    ({"listen": ":4317"}, "observability.otlp.listen", "unknown key"),
]


@pytest.mark.parametrize("section,path,words", OTLP_BAD, ids=[b[1] for b in OTLP_BAD])
def test_bad_otlp_values_name_the_key_path(section, path, words):
    with pytest.raises(ConfigError) as info:
        parse_config({"observability": {"otlp": section}})
    assert info.value.path == path
    assert words in str(info.value)


# -- the JSON Schema, and what msgspec decoding adds -------------------------------------------


def test_published_json_schema_is_exactly_what_the_code_generates():
    """Byte for byte, and what `python -m agent_exporter.config` writes (an installed package has no
    schemas/ directory)."""
    import subprocess
    import sys

    from agent_exporter.config import json_schema_text
    published = (ROOT / "schemas" / "observability.schema.json").read_text()
    assert published == json_schema_text()
    written = subprocess.run([sys.executable, "-m", "agent_exporter.config"], capture_output=True, check=True,
                             timeout=60, cwd="/")
    assert written.stdout.decode() == published


def _schema_keys(document, schema, defs, path="") -> list[str]:
    """The keys of `document` that `schema` does not describe (following $ref and nested objects)."""
    while "$ref" in schema or "anyOf" in schema:       # a key's schema is its type's, or null
        schema = defs[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema["anyOf"][0]
    missing = []
    for key, value in document.items():
        # A section names its keys; a mapping (prices, fallbacks) describes every value alike.
        described = schema["properties"].get(key) if "properties" in schema else schema.get("additionalProperties")
        if described is None:
            missing.append(f"{path}{key}")
        elif isinstance(value, dict):
            missing += _schema_keys(value, described, defs, f"{path}{key}.")
    return missing


def test_the_schema_describes_the_top_key_and_every_key_of_the_example():
    from agent_exporter.config import json_schema
    schema = json_schema()
    assert list(schema["properties"]) == ["observability"] and schema["additionalProperties"] is False
    assert schema["$defs"]["Config"]["additionalProperties"] is False
    example = yaml.safe_load((ROOT / "examples" / "observability.yaml").read_text())
    assert _schema_keys(example, schema, schema["$defs"]) == []
    assert _schema_keys({"observability": {"tracing": {"colour": "blue"}}}, schema, schema["$defs"]) == [
        "observability.tracing.colour"]
    rate_window = schema["$defs"]["AlertingConfig"]["properties"]["rate_window"]
    assert rate_window["anyOf"][0]["pattern"] and "Prometheus duration" in rate_window["description"]


def test_a_key_left_empty_takes_its_default_and_the_schema_says_so():
    text = "observability:\n  tracing:\n  metrics:\n    max_series:\n    prices:\n"
    assert parse(text) == Config()
    from jsonschema import Draft202012Validator

    from agent_exporter.config import json_schema
    validator = Draft202012Validator(json_schema())
    assert list(validator.iter_errors(yaml.safe_load(text))) == []        # editors used to flag it
    assert list(validator.iter_errors({"observability": None})) == []
    assert not validator.is_valid({"observability": {"metrics": {"max_series": "many"}}})
    assert not validator.is_valid({"observability": {"alerting": {"email": {"password": "x"}}}})   # as check
    assert validator.is_valid({"observability": {"alerting": {"email": {"password": ""}}}})


def test_infinite_numbers_are_refused_with_the_key_path():
    with pytest.raises(ConfigError) as info:
        parse("observability:\n  healing:\n    backoff_max_seconds: .inf\n")
    assert info.value.path == "observability.healing.backoff_max_seconds" and "finite" in str(info.value)


def test_sections_built_in_code_are_checked_too():
    from agent_exporter.config import MetricsConfig
    with pytest.raises(ValueError, match=r"^execution_buckets\[1\]: bounds must increase"):
        MetricsConfig(execution_buckets=(2.0, 1.0))
    with pytest.raises(ValueError, match="alerting.thresholds.latency_p95_seconds"):
        replace(Config(), metrics=MetricsConfig(execution_buckets=(0.1, 1.0)))


def _key_paths(struct_type, prefix=()):
    """Every key of a config Struct type, as paths; a map (prices, fallbacks) is one key, and the
    legacy secret keys (refused when set) are left out."""
    import msgspec
    for field in msgspec.structs.fields(struct_type):
        path = prefix + (field.encode_name,)
        if field.default is None:
            continue
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            yield from _key_paths(field.type, path)
        else:
            yield path


def _example_keys() -> dict[tuple, list[str]]:
    """Each key path of the example -> its line and the comment lines just above it."""
    text = (ROOT / "examples" / "observability.yaml").read_text()
    lines = text.splitlines()
    found = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                line = key.start_mark.line
                above = line
                while above > 0 and lines[above - 1].lstrip().startswith("#"):
                    above -= 1
                found[path + (key.value,)] = lines[above:line + 1]
                walk(value, path + (key.value,))

    walk(yaml.compose(text).value[0][1], ())
    return found


def test_the_example_config_has_every_key_and_says_where_it_is_not_the_default():
    import msgspec
    example = _example_keys()
    assert [".".join(path) for path in _key_paths(Config) if path not in example] == []
    loaded = msgspec.to_builtins(load_config(ROOT / "examples" / "observability.yaml"))
    defaults = msgspec.to_builtins(Config())
    not_said = []
    for path in _key_paths(Config):
        value, default = loaded, defaults
        for key in path:
            value, default = value[key], default[key]
        if value != default and not any("default" in line.partition("#")[2].lower() for line in example[path]):
            not_said.append(".".join(path))
    assert not_said == []


@pytest.mark.parametrize("document, key, expected", [
    ({"tracing": {"otlp_endpoint": "http://user:URLSECRET@collector:4318"}}, "tracing.otlp_endpoint",
     "expected an http(s) URL without user:password@, got a URL with user:password@ (credentials go in files)"),
    ({"alerting": {"exporter_url": "https://u:URLSECRET@agent-exporter:9464"}}, "alerting.exporter_url",
     "expected an http(s) URL without user:password@, got a URL with user:password@ (credentials go in files)"),
    ({"alerting": {"email": {"password": 48151623}}}, "alerting.email.password",
     "expected nothing (secrets go in files: set the matching *_file key)"),
    ({"alerting": {"slack": {"webhook_url": ["https://hooks.slack.com/URLSECRET"]}}}, "alerting.slack.webhook_url",
     "expected nothing (secrets go in files: set the matching *_file key)"),
    ({"tracing": {"otlp_headers": {"x-api-key": 48151623}}}, "tracing.otlp_headers.x-api-key",
     "expected a header value of printable ASCII"),
    ({"tracing": {"otlp_headers": {"x-api-key": "SECRET\nKEY"}}}, "tracing.otlp_headers.x-api-key",
     "expected a header value of printable ASCII"),
])
def test_secrets_in_the_config_are_refused_and_never_repeated(document, key, expected):
    """A password in a URL was accepted, then printed by `check` and logged by the forwarder; a
    secret that was not a string was repeated in the error."""
    with pytest.raises(ConfigError) as raised:
        parse_config({"observability": document})
    assert str(raised.value) == f"observability.{key}: {expected}"
    assert "SECRET" not in str(raised.value) and "48151623" not in str(raised.value)



@pytest.mark.parametrize("alerting, key", [
    ({"rate_window": "5m\n"}, "rate_window"),           # Python's $ matches before a final line break
    ({"evaluation_interval": "30s\n"}, "evaluation_interval"),
    ({"rate_window": "\u0665m"}, "rate_window"),        # an Arabic-Indic 5: Python's \d, not Prometheus
    ({"group_labels": ["env\n"]}, "group_labels[0]"),
    ({"exporter_url": "http://x:9464\n"}, "exporter_url"),
    ({"remediation_alerts": ["Foo\n"]}, "remediation_alerts[0]"),
    ({"email": {"smtp_server": "mailpit\n"}}, "email.smtp_server"),
])
def test_values_prometheus_or_alertmanager_would_refuse_are_refused_here(alerting, key):
    """Each passed `check`, then broke `render` or the rendered files; the first one printed the
    whole document, secrets included, as the error of the top key."""
    with pytest.raises(ConfigError) as raised:
        parse_config({"observability": {"tracing": {"otlp_headers": {"authorization": "Bearer SECRET"}},
                                         "alerting": alerting}})
    assert raised.value.path == f"observability.alerting.{key}"
    assert "SECRET" not in str(raised.value)


def test_an_error_shows_a_mapping_or_a_list_by_its_kind_only():
    with pytest.raises(ConfigError) as raised:
        parse_config({"observability": {"tracing": [{"otlp_headers": {"authorization": "Bearer SECRET"}}]}})
    assert str(raised.value) == "observability.tracing: expected a mapping, got a list"


@pytest.mark.parametrize("value", [False, 0, "", [], "off"])
def test_a_top_key_that_is_not_a_mapping_is_refused_not_read_as_the_defaults(value):
    with pytest.raises(ConfigError, match="^observability: expected a mapping"):
        parse_config({"observability": value})


def test_a_key_given_twice_is_an_error_naming_it_and_its_line(tmp_path):
    """As Prometheus and Alertmanager refuse it: the first block was silently lost."""
    path = tmp_path / "observability.yaml"
    path.write_text("observability:\n  metrics: {max_series: 5}\nobservability:\n  alerting: {job: other}\n")
    with pytest.raises(ConfigError, match=r"the key 'observability' is given twice in one mapping") as raised:
        load_config(path)
    assert raised.value.path == str(path) and "line 3" in str(raised.value)
    path.write_text("x: &defaults {max_series: 5}\nobservability:\n  metrics: {<<: *defaults, max_series: 7}\n")
    with pytest.raises(ConfigError, match="unknown top-level key"):     # a merge key may be overridden
        load_config(path)


def test_the_legacy_reading_lets_the_last_key_win(tmp_path, caplog):
    from agent_exporter.compat import load_legacy_config
    path = tmp_path / "observability_config.yaml"
    path.write_text("observability:\n  metrics: {max_series: 5}\n  metrics: {max_series: 7}\n")
    assert load_legacy_config(path).metrics.max_series == 7


def test_a_utf16_config_is_read_and_one_in_no_yaml_encoding_names_the_file(tmp_path):
    """PowerShell 5's `>` writes UTF-16; that used to be a traceback in render and simulate."""
    path = tmp_path / "observability.yaml"
    path.write_bytes("observability:\n  metrics: {max_series: 5}\n".encode("utf-16"))
    assert load_config(path).metrics.max_series == 5
    path.write_bytes("observability:\n  service_name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == (f"{path}: invalid YAML: not UTF-8 text (nor UTF-16 with a byte order mark): "
                                 "invalid continuation byte at byte 34")


@pytest.mark.parametrize("section, key", [("tracing", "max_queue_size"), ("metrics", "max_series"),
                                          ("server", "max_body_bytes")])
def test_a_count_no_queue_could_take_fails_check_not_serve(section, key):
    """max_queue_size: 10**26 passed check, then serve died in the SDK with OverflowError."""
    with pytest.raises(ConfigError, match=f"^observability.{section}.{key}: expected a positive integer up to"):
        parse_config({"observability": {section: {key: 10**26}}})


@pytest.mark.parametrize("written, level", [("info", "INFO"), ("WARN", "WARNING"), ("Warning", None),
                                            ("critical", "CRITICAL"), ("DEBUG", "DEBUG")])
def test_the_log_level_is_taken_in_either_case_as_prometheus_spells_it(written, level):
    if level is None:       # mixed case is neither spelling
        with pytest.raises(ConfigError, match="^observability.logging.level: expected a log level"):
            parse_config({"observability": {"logging": {"level": written}}})
    else:
        assert parse_config({"observability": {"logging": {"level": written}}}).logging.level == level
