"""The `agent-exporter` command: check, render, replay (legacy metrics JSON and JSONL), simulate."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent_exporter import Telemetry, __version__, catalog
from agent_exporter.cli import main
from agent_exporter.config import Config
from agent_exporter.server import Service, start_server
from agent_exporter.webconfig import WatchedWebConfig

from exporters import running_exporter

LEGACY_CONFIG = """\
observability:
  enabled: true
  tracing:
    enabled: true
    backend: opentelemetry
    export_to_console: false
    export_to_otlp: false
    otlp_endpoint: "http://localhost:4317"
    sampling_rate: 0.5
  metrics:
    enabled: true
    collection_interval: 60
    prices:
      gpt-4o: {input: 2.5, output: 10}
  logging:
    level: INFO
    include_traces: true
    format: json
  alerting:
    enabled: true
    channels: [log]
    conditions:
      - "error_rate > 7%"
      - "latency_p95 > 20000"
      - "cost_per_day > 250"
"""

# As the legacy collector's save_metrics() wrote it: no per-execution records, only aggregates.
LEGACY_METRICS = {
    "timestamp": "2025-01-15T10:30:00",
    "summary": {"total_executions": 7, "success_rate": 5 / 7, "total_cost": 0.3, "total_tokens": 10001,
                "average_latency_ms": 1500.0, "agents_used": 3},
    "detailed_metrics": {
        "latencies": {"planner": [1200.0, 800.0, 2500.0], "coder": [3000.0, 1000.0, 1500.0], "tester": [500.0]},
        "token_usage": {"planner": 3001, "coder": 7000, "tester": 0},
        "costs": {"planner": 0.1, "coder": 0.2, "tester": 0.0},
        "success_counts": {"planner": 3, "coder": 1, "tester": 1},
        "failure_counts": {"coder": 2},
    },
}


def series(url: str) -> dict:
    import requests
    text = requests.get(url + "/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def exporter():
    with running_exporter() as handle:
        yield handle


def test_version_from_the_console_script():
    result = subprocess.run([str(Path(sys.executable).with_name("agent-exporter")), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"agent-exporter {__version__}"


# -- check -----------------------------------------------------------------------

def checked(tmp_path, capsys, text: str) -> str:
    """What `agent-exporter check` prints for a config file holding `text`; it must exit 0."""
    path = tmp_path / "observability.yaml"
    path.write_text(text)
    assert main(["check", "--config.file", str(path)]) == 0
    return capsys.readouterr().out


def test_check_prints_what_it_understood(tmp_path, capsys):
    out = checked(tmp_path, capsys, LEGACY_CONFIG)
    assert f"config {tmp_path / 'observability.yaml'}: OK" in out
    assert "error_ratio > 7.00%" in out
    assert "latency p95 > 20s" in out
    assert "cost per day > $250" in out
    assert "gpt-4o: 2.5 / 10" in out
    assert "sampling_rate=0.5" in out
    assert "execution buckets (s): " + " ".join(f"{b:g}" for b in catalog.EXECUTION_BUCKETS) in out


def test_check_prints_every_section(tmp_path, capsys):
    token = tmp_path / "am"
    token.write_text("s3cret\n")
    out = checked(tmp_path, capsys, LEGACY_CONFIG + f"""\
  otlp:
    grpc_listen_address: 127.0.0.1:4317
  healing:
    selector: {{decay: 0.9}}
    fleet:
      alertmanager: {{urls: [http://alertmanager:9093], auth: {{bearer_token_file: {token}}}}}
""")
    assert "logging: level=INFO format=json include_traces=on otlp=off" in out
    assert "otlp: grpc_listen_address=127.0.0.1:4317 forward_spans=off" in out
    assert "selector: decay=0.9 latency_weight=0.2" in out
    assert f"fleet alertmanager: http://alertmanager:9093 every 10s, bearer token from {token}" in out
    assert "fleet prometheus: off" in out


def test_check_prints_prices_budgets_and_where_spans_are_forwarded_in_full(tmp_path, capsys):
    out = checked(tmp_path, capsys, """\
observability:
  tracing: {otlp_endpoint: "http://jaeger:4317"}
  metrics:
    extra_labels: [feature]
    prices:
      o3: {input: 2, output: 8, cache_read: 0.5, reasoning: 8}
      gpt-4o: {input: 2.5, output: 10}
  alerting:
    budget: {per_feature: {login: 20, search: 35}}
  otlp: {forward_spans: true}
  healing: {enabled: false}
""")
    assert "    o3: 2 / 8, cache_read 0.5, reasoning 8\n" in out
    assert "    gpt-4o: 2.5 / 10\n" in out
    assert "; per feature: login $20/day, search $35/day\n" in out
    assert "forward_spans=on -> http://jaeger:4317 (grpc) (queue 64)" in out
    assert "remediation alerts: none (healing disabled)\n" in out
    assert "healing: disabled\n" in out


def test_check_prints_the_addresses_render_mails(tmp_path, capsys):
    out = checked(tmp_path, capsys, "observability: {}\n")
    assert " to=oncall@example.com require_tls=off\n" in out
    assert "owners=the on-call (email.to_addresses)" in out
    rendered = tmp_path / "rendered"
    assert main(["render", "--config.file", str(tmp_path / "observability.yaml"), "--out", str(rendered)]) == 0
    mailed = {config["to"] for receiver in yaml.safe_load((rendered / "alertmanager" / "alertmanager.yml").read_text())
              ["receivers"] for config in receiver.get("email_configs", [])}
    assert mailed == {"oncall@example.com"}


def test_check_prints_every_key_that_is_not_a_secret(tmp_path, capsys):
    """The trace_* switches, thresholds, links and windows were understood but never shown."""
    out = checked(tmp_path, capsys, "observability:\n  tracing: {trace_tool_calls: false, capture_content: true}\n"
                                    "  metrics: {collection_interval: 60}\n"
                                    "  alerting: {evaluation_window: 2h, task_error_types: [BadInput],\n"
                                    "             thresholds: {evaluation_score_floor: 0.6}}\n")
    for shown in ("tool_calls=off", "capture_content=on", "collection_interval=60s (scraped every 15s)",
                  "evaluation_window=2h", "task_error_types=BadInput", "evaluation score < 0.6",
                  "time to first token p95 > 5s", "links: runbooks https://"):
        assert shown in out, shown


def test_check_says_when_the_sdk_is_disabled_by_its_variable(tmp_path, capsys, monkeypatch):
    """OTEL_SDK_DISABLED turns every span off in the SDK; check said tracing was on."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert "\ntracing: disabled by OTEL_SDK_DISABLED=true\n" in checked(tmp_path, capsys, "observability: {}\n")


def test_check_names_the_bad_key_and_exits_1(tmp_path, capsys):
    path = tmp_path / "observability.yaml"
    path.write_text(LEGACY_CONFIG.replace("collection_interval: 60", "colection_interval: 60"))
    assert main(["check", "--config.file", str(path)]) == 1
    assert "observability.metrics.colection_interval" in capsys.readouterr().err


@pytest.mark.parametrize("section,key", [
    ("server: {bearer_token_file: MISSING}", "observability.server.bearer_token_file"),
    ("healing: {fleet: {prometheus: {url: 'http://127.0.0.1:9', auth: {username: u, password_file: MISSING}}}}",
     "observability.healing.fleet.prometheus.auth.password_file"),
])
def test_check_and_serve_refuse_a_secret_file_serve_cannot_read(tmp_path, capsys, monkeypatch, section, key):
    # As promtool checks the credentials files a config names: `check` fails where `serve` would.
    monkeypatch.delenv("AGENT_EXPORTER_BEARER_TOKEN", raising=False)
    path = tmp_path / "observability.yaml"
    path.write_text("observability:\n  " + section.replace("MISSING", str(tmp_path / "missing")) + "\n")
    assert main(["check", "--config.file", str(path)]) == 1
    assert capsys.readouterr().err == f"agent-exporter: {key}: cannot read {tmp_path / 'missing'}: No such file or directory\n"
    assert main(["serve", "--config.file", str(path), "--web.listen-address", "127.0.0.1:0"]) == 1
    assert capsys.readouterr().err == f"agent-exporter: {key}: cannot read {tmp_path / 'missing'}: No such file or directory\n"


@pytest.mark.parametrize("content, why", [
    ("FIRST\nSECOND\n", "holds a line break or another control character: a secret is one line"),
    ("tok\tSECOND\n", "holds a line break or another control character: a secret is one line"),
    ("tokén-SECOND\n", "a bearer token is ASCII, as an Authorization header carries it"),
])
def test_check_and_serve_refuse_a_token_no_header_can_carry_without_repeating_it(tmp_path, capsys, monkeypatch,
                                                                                   content, why):
    """A two-line token file used to pass `check`, and its lines reached a warning and /v1/agents
    in requests' "Invalid header value"; a non-ASCII one passed `check` and failed `serve`."""
    monkeypatch.delenv("AGENT_EXPORTER_BEARER_TOKEN", raising=False)
    token = tmp_path / "token"
    token.write_text(content)
    path = tmp_path / "observability.yaml"
    path.write_text(f"observability:\n  server: {{bearer_token_file: {token}}}\n")
    expected = f"agent-exporter: observability.server.bearer_token_file: {token}: {why}\n".replace(": holds", " holds")
    assert main(["check", "--config.file", str(path)]) == 1
    assert capsys.readouterr().err == expected
    assert main(["serve", "--config.file", str(path), "--web.listen-address", "127.0.0.1:0"]) == 1
    assert capsys.readouterr().err == expected
    assert main(["replay", str(path), "--url", "http://127.0.0.1:9", "--bearer-token-file", str(token)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("agent-exporter: --bearer-token-file: ") and "SECOND" not in err


@pytest.mark.parametrize("otlp, tracing, flags", [
    # The default endpoint, localhost:4317 over gRPC, beside a gRPC receiver on 4317.
    ({"grpc_listen_address": "0.0.0.0:4317"}, {}, []),
    ({}, {}, ["--otlp.grpc-listen-address", "127.0.0.1:4317"]),
    ({}, {"otlp_protocol": "http/protobuf", "otlp_endpoint": "http://127.0.0.1:9464"}, []),
])
def test_check_and_serve_refuse_to_forward_spans_to_their_own_receiver(tmp_path, capsys, otlp, tracing, flags):
    """Each forwarded span would come back in, be counted and forwarded again, without end."""
    path = tmp_path / "observability.yaml"
    path.write_text(yaml.safe_dump({"observability": {"otlp": {"forward_spans": True, **otlp}, "tracing": tracing,
                                                      "server": {"listen_address": "127.0.0.1:9464"}}}))
    if not flags:
        assert main(["check", "--config.file", str(path)]) == 1
        assert "is this exporter's own OTLP receiver" in capsys.readouterr().err
    assert main(["serve", "--config.file", str(path), *flags]) == 1
    assert capsys.readouterr().err.startswith("agent-exporter: otlp.forward_spans: tracing.otlp_endpoint ")


def test_spans_may_be_forwarded_to_another_port_or_host(tmp_path, capsys):
    path = tmp_path / "observability.yaml"
    for endpoint in ("http://127.0.0.1:14317", "http://jaeger:4317"):
        path.write_text(yaml.safe_dump({"observability": {
            "otlp": {"forward_spans": True, "grpc_listen_address": "0.0.0.0:4317"},
            "tracing": {"otlp_endpoint": endpoint}}}))
        assert main(["check", "--config.file", str(path)]) == 0, capsys.readouterr().err
        assert f"forward_spans=on -> {endpoint} (grpc)" in capsys.readouterr().out


@pytest.mark.parametrize("before, after, level", [
    (["--log.level", "debug"], [], logging.DEBUG),
    ([], ["--log.level", "DEBUG"], logging.DEBUG),       # after the command, any case, as Prometheus takes it
    ([], ["--log.level", "warn"], logging.WARNING),
])
def test_the_log_level_flag_before_or_after_the_command(tmp_path, capsys, before, after, level):
    path = tmp_path / "observability.yaml"
    path.write_text("observability:\n  logging: {level: ERROR}\n")
    root = logging.getLogger()
    saved = root.level, root.handlers[:]
    try:
        assert main([*before, "check", "--config.file", str(path), *after]) == 0
        assert root.level == level
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def test_check_a_web_config(tmp_path, capsys):
    config = tmp_path / "observability.yaml"
    config.write_text(LEGACY_CONFIG)
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  alice: plaintext\n")
    assert main(["check", "--config.file", str(config), "--web.config.file", str(web)]) == 1
    assert "basic_auth_users.alice" in capsys.readouterr().err


# -- render ----------------------------------------------------------------------

def test_render_writes_the_three_trees(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["render", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed and all(p.startswith(str(out)) for p in printed)
    for tree in ("prometheus", "alertmanager", "grafana"):
        assert any(out.joinpath(tree).rglob("*")), tree


def test_render_warns_when_the_token_alertmanager_needs_is_only_in_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AGENT_EXPORTER_BEARER_TOKEN", "t0ken")
    assert main(["render", "--out", str(tmp_path / "env")]) == 0        # the default: remediation webhooks
    assert "AGENT_EXPORTER_BEARER_TOKEN is set but observability.server.bearer_token_file is not" in (
        capsys.readouterr().err)
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    config = tmp_path / "observability.yaml"
    config.write_text("observability:\n  healing: {enabled: false}\n  alerting: {channels: [email]}\n")
    assert main(["render", "--config.file", str(config), "--out", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().err == ""            # no webhook to the exporter: nothing to warn of
    # Both: the file, which Alertmanager reads, is not what serve checks.
    config.write_text(f"observability:\n  server: {{bearer_token_file: {token}}}\n")
    for command in (["render", "--out", str(tmp_path / "both")], ["check"]):
        assert main([*command, "--config.file", str(config)]) == 0
        captured = capsys.readouterr()
        assert "overridden by AGENT_EXPORTER_BEARER_TOKEN" in captured.out if command == ["check"] else (
            "neither read nor watched; Alertmanager's webhooks send what the file holds" in captured.err)
    monkeypatch.delenv("AGENT_EXPORTER_BEARER_TOKEN")
    assert main(["render", "--config.file", str(config), "--out", str(tmp_path / "file")]) == 0
    assert capsys.readouterr().err == ""


def test_render_to_a_place_it_cannot_write_is_one_line_naming_it(tmp_path, capsys):
    taken = tmp_path / "a-file"
    taken.write_text("")
    assert main(["render", "--out", str(taken)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"agent-exporter: cannot write to {taken}: ") and err.count("\n") == 1


# -- replay ----------------------------------------------------------------------

def test_replay_of_a_legacy_metrics_file_keeps_the_totals(tmp_path, exporter, capsys):
    path = tmp_path / "metrics_20250115_103000.json"
    path.write_text(json.dumps(LEGACY_METRICS, indent=2))
    assert main(["replay", str(path), "--url", exporter.url, "--batch-size", "2"]) == 0
    assert "7 events (legacy metrics)" in capsys.readouterr().out

    got = series(exporter.url)
    executions = catalog.AGENT_EXECUTIONS.name
    assert got[(executions, (("agent", "planner"), ("status", "success")))] == 3
    assert got[(executions, (("agent", "coder"), ("status", "success")))] == 1
    assert got[(executions, (("agent", "coder"), ("status", "error")))] == 2
    assert got[(executions, (("agent", "tester"), ("status", "success")))] == 1
    tokens = catalog.LLM_TOKENS.name
    assert got[(tokens, (("agent", "planner"), ("model", "unknown"), ("type", "unsplit")))] == 3001
    assert got[(tokens, (("agent", "coder"), ("model", "unknown"), ("type", "unsplit")))] == 7000
    cost = catalog.LLM_COST.name
    assert got[(cost, (("agent", "planner"), ("model", "unknown")))] == 0.1      # exactly, not approximately
    assert got[(cost, (("agent", "coder"), ("model", "unknown")))] == 0.2
    assert got[(catalog.USAGE_UNKNOWN.name, (("agent", "tester"),))] == 1       # no tokens, no cost: unknown
    duration_sum = catalog.AGENT_EXECUTION_DURATION.name + "_sum"
    assert got[(duration_sum, (("agent", "planner"),))] == pytest.approx(4.5)


def test_replay_of_a_compat_metrics_file_sends_its_records(tmp_path, exporter, capsys):
    records = [{"timestamp": "2025-01-15T10:30:00", "agent_name": "planner", "duration_ms": 900.0,
                "success": False, "tokens_used": 12, "cost": 0.001}]
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({**LEGACY_METRICS, "agent_executions": records}))
    assert main(["replay", str(path), "--url", exporter.url]) == 0
    got = series(exporter.url)
    assert got[(catalog.AGENT_EXECUTIONS.name, (("agent", "planner"), ("status", "error")))] == 1
    assert (catalog.AGENT_EXECUTIONS.name, (("agent", "coder"), ("status", "error"))) not in got


def test_replay_of_a_jsonl_log_reports_bad_lines(tmp_path, exporter, capsys):
    lines = [
        json.dumps({"type": "agent_execution", "agent": "planner", "status": "success", "duration_seconds": 2.0,
                    "model": "gpt-4o", "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.5}),
        json.dumps({"type": "tool_call", "tool": "web_search", "status": "error", "duration_seconds": 0.1}),
        "",
        json.dumps({"type": "agent_execution", "agent": "planner"}),
        json.dumps({"agent_name": "coder", "duration_ms": 1000, "success": True, "tokens_used": 5, "cost": 0.25}),
    ] * 3
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert main(["replay", str(path), "--url", exporter.url, "--batch-size", "4"]) == 1
    out = capsys.readouterr().out
    assert "12 events (jsonl)" in out
    assert "9 accepted, 3 rejected" in out
    assert "line 4: " in out and "line 9: " in out and "line 14: " in out

    got = series(exporter.url)
    assert got[(catalog.AGENT_EXECUTIONS.name, (("agent", "planner"), ("status", "success")))] == 3
    assert got[(catalog.LLM_COST.name, (("agent", "planner"), ("model", "gpt-4o")))] == 1.5
    assert got[(catalog.LLM_COST.name, (("agent", "coder"), ("model", "unknown")))] == 0.75
    assert got[(catalog.TOOL_CALLS.name, (("status", "error"), ("tool", "web_search")))] == 3
    assert got[(catalog.EXPORTER_EVENTS_REJECTED.name, (("reason", "missing_field"),))] == 3


def test_replay_counts_the_rejections_an_answer_does_not_list(tmp_path, exporter, capsys):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"type": "agent_execution", "agent": "planner"}) + "\n" + "7\n" * 1499)
    assert main(["replay", str(path), "--url", exporter.url, "--batch-size", "1500"]) == 1
    out = capsys.readouterr().out
    assert "0 accepted, 1,500 rejected" in out
    assert "line 1: " in out
    assert ("line 1 to line 1500: 500 more rejected, not listed (the exporter lists the first 1,000 of a request; "
            "--batch-size 1000 lists them all)") in out


def test_replay_splits_batches_the_exporter_finds_too_large(tmp_path):
    telemetry = Telemetry(Config())
    with start_server(Service(telemetry, max_body_bytes=600), "127.0.0.1:0") as handle:
        event = {"type": "tool_call", "tool": "file_read", "status": "success", "duration_seconds": 0.01}
        path = tmp_path / "events.jsonl"
        path.write_text("\n".join(json.dumps(event) for _ in range(40)) + "\n")
        assert main(["replay", str(path), "--url", handle.url, "--batch-size", "40"]) == 0
        assert series(handle.url)[(catalog.TOOL_CALLS.name, (("status", "success"), ("tool", "file_read")))] == 40


def test_replay_with_a_bearer_token(tmp_path, capsys):
    telemetry = Telemetry(Config())
    with start_server(Service(telemetry, bearer_token="s3cret"), "127.0.0.1:0") as handle:
        path = tmp_path / "events.jsonl"
        path.write_text(json.dumps({"type": "retry", "agent": "coder", "attempt": 2}) + "\n")
        assert main(["replay", str(path), "--url", handle.url]) == 1
        assert "401" in capsys.readouterr().err
        token = tmp_path / "token"
        token.write_text("s3cret\n")
        assert main(["replay", str(path), "--url", handle.url, "--bearer-token-file", str(token)]) == 0


def test_replay_with_basic_auth_in_the_url_never_prints_the_password(tmp_path, capsys):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    special = bcrypt.hashpw(b"p#ss/w@rd", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  alice: '{hashed}'\n  bob: '{special}'\n")
    telemetry = Telemetry(Config())
    with start_server(Service(telemetry, web_config=WatchedWebConfig(web)), "127.0.0.1:0") as handle:
        path = tmp_path / "events.jsonl"
        path.write_text(json.dumps({"type": "retry", "agent": "coder", "attempt": 2}) + "\n")
        url = handle.url.replace("http://", "http://alice:s3cret@")
        assert main(["replay", str(path), "--url", url, "--log.level", "debug"]) == 0
        out = capsys.readouterr().out
        assert "to http://alice:***@127.0.0.1:" in out and "s3cret" not in out
        assert main(["replay", str(path), "--url", url.replace(":s3cret@", ":s3cret:%23@")]) == 1     # another password
        assert "401" in capsys.readouterr().err
        # RFC 3986: a password holding # / @ is percent-encoded, and sent decoded.
        assert main(["replay", str(path), "--url", handle.url.replace("http://", "http://bob:p%23ss%2Fw%40rd@")]) == 0
        assert main(["replay", str(path), "--url", "http://alice:x@127.0.0.1:99999"]) == 1
        assert capsys.readouterr().err == ("agent-exporter: --url 'http://alice:***@127.0.0.1:99999': "
                                           "expected http(s)://HOST:PORT\n")
    telemetry.shutdown()


def test_replay_with_basic_auth_from_a_password_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AGENT_EXPORTER_BEARER_TOKEN", raising=False)
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  alice: '{bcrypt.hashpw(b's3cret', bcrypt.gensalt(rounds=4)).decode()}'\n")
    password, token = tmp_path / "password", tmp_path / "token"
    password.write_text("s3cret\n")
    token.write_text("t0ken\n")
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"type": "retry", "agent": "coder", "attempt": 2}) + "\n")
    telemetry = Telemetry(Config())
    with start_server(Service(telemetry, web_config=WatchedWebConfig(web)), "127.0.0.1:0") as handle:
        replay = ["replay", str(path), "--url", handle.url]
        assert main([*replay, "--username", "alice", "--password-file", str(password)]) == 0
        assert "s3cret" not in capsys.readouterr().out
        assert main([*replay, "--username", "bob", "--password-file", str(password)]) == 1
        assert "401" in capsys.readouterr().err
        refused = {
            ("--username", "alice"): "--username and --password-file go together",
            ("--username", "al:ice", "--password-file", str(password)):
                "--username: a basic-auth user holds no colon or control character",
            ("--username", "alice", "--password-file", str(password), "--bearer-token-file", str(token)):
                "a bearer token (--bearer-token-file or $AGENT_EXPORTER_BEARER_TOKEN) and --username: "
                "give one credential",
        }
        for flags, error in refused.items():
            assert main([*replay, *flags]) == 1
            assert capsys.readouterr().err == f"agent-exporter: {error}\n"
        in_url = handle.url.replace("http://", "http://alice:s3cret@")
        assert main(["replay", str(path), "--url", in_url, "--username", "alice",
                     "--password-file", str(password)]) == 1
        assert capsys.readouterr().err == "agent-exporter: --username and a user in --url: give one credential\n"
        retried = [s.value for family in text_string_to_metric_families(telemetry.render().decode())
                   for s in family.samples if s.name == catalog.RETRIES.name]
        assert retried == [1]        # the one replay that got in
    telemetry.shutdown()


# -- simulate ----------------------------------------------------------------------

def test_simulate_json_shape():
    result = subprocess.run([sys.executable, "-m", "agent_exporter", "simulate", "--format", "json", "--seeds", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document["policies"]) == {"static", "round_robin", "retry_only", "full"}
    for figures in document["policies"].values():
        assert set(figures) >= {"success_rate", "p95_task_seconds", "cost_per_task_usd"}
        assert 0 <= figures["success_rate"] <= 1
    assert set(document["selector"]) >= {"tasks_to_shift", "share_on_failing_after_shift", "tasks_to_return"}
