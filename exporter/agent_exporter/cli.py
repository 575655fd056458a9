"""`agent-exporter serve|demo|render|replay|check|simulate`.

Flags follow Prometheus conventions (`--config.file`, `--web.listen-address`,
`--web.config.file`); logs go to stderr, as the config's `logging` section says
(JSON lines by default, logfmt with `format: text`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .version import __version__


def _configure_logging(config, args) -> None:
    """The process's logging from the config's `logging` section; --log.level wins over its level."""
    from msgspec.structs import replace

    from . import logs
    if args.log_level is not None:
        config = replace(config, logging=replace(config.logging, level=args.log_level))
    if args.stop_log_export is not None:
        args.stop_log_export()
    args.stop_log_export = logs.configure(config)


def _load_config(args):
    """The config of --config.file (or the defaults), with logging configured from it."""
    from .config import default_config, load_config
    config = load_config(args.config_file) if args.config_file else default_config()
    _configure_logging(config, args)
    return config


def _read_secrets(config) -> None:
    """Read the secret files the service reads at start (ValueError naming the key), so that `check`
    fails where `serve` would, and `serve` says so before it starts anything."""
    from .healing.fleet import fleet_clients
    from .server import read_bearer_token
    from .tracing import otlp_headers
    read_bearer_token(config.server.bearer_token_file)
    if config.tracing.export_to_otlp or config.otlp.forward_spans:
        otlp_headers(config.tracing.otlp_headers)       # with OTEL_EXPORTER_OTLP_HEADERS
    if config.logging.export_to_otlp:
        otlp_headers(config.tracing.otlp_headers, "logs")
    if config.healing.enabled:
        fleet_clients(config)


def _token_file_overridden(config) -> str | None:
    """What to say when $AGENT_EXPORTER_BEARER_TOKEN overrides server.bearer_token_file: the file is
    then neither read nor watched, while Alertmanager's rendered webhooks send what the file holds."""
    from .credentials import BEARER_TOKEN_ENV, in_environment
    if not (config.server.bearer_token_file and in_environment(BEARER_TOKEN_ENV)):
        return None
    return (f"{BEARER_TOKEN_ENV} is set, so observability.server.bearer_token_file "
            f"({config.server.bearer_token_file}) is neither read nor watched; Alertmanager's webhooks send "
            "what the file holds, so both must hold the same token")


def _check_forwarding(config, http_address: str, grpc_address: str) -> None:
    """ValueError when otlp.forward_spans would send the spans to this exporter's own receiver
    (tracing.otlp_endpoint left at its default, localhost:4317, beside a gRPC receiver on 4317):
    each span would come back in to be mapped and forwarded again, without end."""
    import socket
    from urllib.parse import urlsplit

    from .server import parse_listen_address
    tracing = config.tracing
    own = grpc_address if tracing.otlp_protocol == "grpc" else http_address
    if not config.otlp.forward_spans or not own:
        return
    endpoint = urlsplit(tracing.otlp_endpoint)
    host, port = parse_listen_address(own)
    target_port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    local = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", socket.gethostname().lower()}
    target = (endpoint.hostname or "").lower()
    if target_port == port and (target == host.lower() or (target in local and host.lower() in local)):
        raise ValueError(f"otlp.forward_spans: tracing.otlp_endpoint {tracing.otlp_endpoint} is this exporter's "
                         f"own OTLP receiver ({own}): every span would come back in and be counted again "
                         "without end; point tracing.otlp_endpoint at your tracing backend")


def _error(message: str) -> int:
    print(f"agent-exporter: {message}", file=sys.stderr)
    return 1


def _stop_on_signals() -> threading.Event:
    """An Event set by SIGTERM, SIGINT (Ctrl-C) or SIGHUP (the terminal closed).

    The processes the demo starts run in sessions of their own (stack.ManagedProcess), so
    these signals reach the demo alone, and it stops what it started."""
    stop = threading.Event()

    def handler(signum, frame):
        stop.set()

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):     # Windows has no SIGHUP
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)
    return stop


def build_remediator(config, telemetry):
    """The healing layer's alert remediator behind /v1/alertmanager, or None when healing is off."""
    if not config.healing.enabled:
        return None
    from .healing import AlertRemediator
    return AlertRemediator(config, telemetry)


def _raise_open_files_limit(log: logging.Logger) -> None:
    """The soft limit of open files up to the hard one, as Go programs (Prometheus, exporters) do at
    start: each client connection is a file, and the usual soft limit of 1024 runs out under load."""
    try:
        import resource
    except ImportError:                 # not a Unix: no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:    # an unlimited hard limit, on some systems
            log.debug("open files limit stays at %d: %s", soft, exc)


# -- commands ------------------------------------------------------------------

def cmd_serve(args) -> int:
    from .config import ConfigError
    from .otlp import OTLPReceiver
    from .server import Service, serve
    from .telemetry import Telemetry
    from .webconfig import WatchedWebConfig, WebConfigError

    log = logging.getLogger("agent_exporter.serve")
    try:
        config = _load_config(args)
        web_config = WatchedWebConfig(args.web_config_file) if args.web_config_file else None
        _read_secrets(config)
        address = args.listen_address or config.server.listen_address
        grpc_address = args.otlp_grpc_listen_address or config.otlp.grpc_listen_address
        _check_forwarding(config, address, grpc_address)
    except (ConfigError, WebConfigError, ValueError) as exc:
        return _error(str(exc))
    # Said at start: otherwise the service answers 200 and shows nothing, with no hint why.
    if not config.enabled:
        log.warning("observability.enabled is false: events are accepted and dropped, and /metrics is empty")
    elif not config.metrics.enabled:
        log.warning("observability.metrics.enabled is false: events are accepted, and /metrics serves no "
                    "metrics at all")
    overridden = _token_file_overridden(config)
    if overridden:
        log.warning(overridden)
    _raise_open_files_limit(log)
    telemetry = Telemetry(config)
    remediator = build_remediator(config, telemetry)
    receiver = OTLPReceiver(telemetry, config)
    try:
        service = Service.from_config(telemetry, web_config=web_config, remediator=remediator, otlp=receiver)
        tls = "enabled" if service.web_config.initial.config.tls is not None else "disabled"
        if grpc_address:
            # Guarded as HTTP is (TLS, credentials, rate limit), and refusing new calls once HTTP drains.
            try:
                grpc = receiver.start_grpc(grpc_address, bearer_token=service.bearer_token,
                                           basic_auth=service.basic_auth, rate_limiter=service.rate_limiter,
                                           draining=lambda: service.draining, web_config=web_config)
            except (OSError, ValueError) as exc:
                return _error(f"cannot serve OTLP/gRPC on {grpc_address}: {exc}")
            log.info("OTLP/gRPC receiver listening on %s (port %d, TLS %s)", grpc_address, grpc.port, tls)
        if remediator is not None:
            remediator.start()        # healing.fleet's pollers, when configured
        # uvicorn handles SIGTERM and SIGINT while serving, then raises the signal again:
        # this handler makes that a normal exit, after the graceful drain.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: None)
        serve(service, address,
              on_started=lambda url: log.info("Listening on %s (TLS %s), version %s", url, tls, __version__))
    except (OSError, ValueError) as exc:
        return _error(f"cannot serve on {address}: {exc}")
    finally:
        if remediator is not None:
            remediator.stop()
        receiver.close()          # records the spans still waiting for their agent, flushes forwarding
        telemetry.shutdown()      # flushes spans still queued
    log.info("bye")
    return 0


def cmd_demo(args) -> int:
    from .config import ConfigError
    from .demo import Incident, Outage, run_demo
    from .stack import StackError
    if args.replicas > 1 and not args.stack:
        return _error("--replicas needs --stack: the replicas share alerts and statistics through it")
    if args.incident_end <= args.incident_start:
        return _error("--incident-end must come after --incident-start")
    if args.outage_end < args.outage_start:
        return _error("--outage-end must not come before --outage-start")
    try:
        config = _load_config(args)
    except ConfigError as exc:
        return _error(str(exc))
    stop = _stop_on_signals()
    try:
        return run_demo(config, duration=args.duration, stack=args.stack, replicas=args.replicas,
                        listen_address=args.listen_address, seed=args.seed, stop=stop,
                        tasks_per_second=args.tasks_per_second, started_at=args.clock_start,
                        incident=Incident(start=args.incident_start, end=args.incident_end,
                                          outage=Outage(start=args.outage_start, end=args.outage_end)
                                          if args.outage_end > args.outage_start else None))
    except (StackError, ValueError) as exc:
        return _error(str(exc))


def cmd_render(args) -> int:
    from .config import ConfigError
    from .credentials import BEARER_TOKEN_ENV, in_environment
    from .render import render_all
    from .render.alertmanager import posts_to_the_exporter
    try:
        config = _load_config(args)
    except ConfigError as exc:
        return _error(str(exc))
    try:
        paths = render_all(config, Path(args.out))
    except OSError as exc:
        return _error(f"cannot write to {args.out}: {exc}")
    for path in paths:
        print(path)
    if posts_to_the_exporter(config) and not config.alerting.exporter_auth.username:
        # serve will ask Alertmanager's webhooks for a token they were not rendered to send, or for another.
        if in_environment(BEARER_TOKEN_ENV) and not config.server.bearer_token_file:
            print(f"agent-exporter: warning: {BEARER_TOKEN_ENV} is set but observability.server.bearer_token_file "
                  "is not: the rendered Alertmanager webhooks to the exporter send no token, and will get 401; "
                  "name a file for Alertmanager", file=sys.stderr)
        elif overridden := _token_file_overridden(config):
            print(f"agent-exporter: warning: {overridden}", file=sys.stderr)
    return 0


def cmd_replay(args) -> int:
    from .credentials import BEARER_TOKEN_ENV, read_secret, read_token
    from .replay import ReplayError, format_summary, replay
    if (args.username is None) != (args.password_file is None):
        return _error("--username and --password-file go together")
    if args.username is not None and (":" in args.username or not args.username.isprintable()):
        return _error("--username: a basic-auth user holds no colon or control character")
    try:
        token = read_token(args.bearer_token_file, "--bearer-token-file", env=BEARER_TOKEN_ENV)
        basic_auth = (args.username, read_secret(args.password_file, "--password-file")) if args.username else None
    except ValueError as exc:
        return _error(str(exc))
    try:
        summary = replay(args.file, args.url, batch_size=args.batch_size, bearer_token=token,
                         basic_auth=basic_auth, ca_file=args.ca_file, timeout=args.timeout)
    except ReplayError as exc:
        return _error(str(exc))
    sys.stdout.write(format_summary(summary, args.url))
    return 0 if not summary.rejected_count else 1


def cmd_check(args) -> int:
    from .config import ConfigError
    from .webconfig import WebConfigError, load_web_config
    try:
        config = _load_config(args)
        web_config = load_web_config(args.web_config_file) if args.web_config_file else None
        _read_secrets(config)
        _check_forwarding(config, config.server.listen_address, config.otlp.grpc_listen_address)
    except (ConfigError, WebConfigError, ValueError) as exc:
        return _error(str(exc))
    sys.stdout.write(describe_config(config, args.config_file))
    if web_config is not None:
        sys.stdout.write(describe_web_config(web_config, args.web_config_file))
    return 0


def cmd_simulate(args) -> int:
    import json
    from .config import ConfigError
    from .healing import simulate, simulate_fleet
    try:
        config = _load_config(args)
    except ConfigError as exc:
        return _error(str(exc))
    if args.mode == "fleet":
        result = simulate_fleet.run_fleet_simulation(args.replicas, seeds=args.seeds, tasks=args.tasks, config=config)
        table = simulate_fleet.format_fleet_table
    elif args.mode == "quality":
        result = simulate.run_quality_simulation(seeds=args.seeds, tasks=args.tasks, config=config)
        table = simulate.format_quality_table
    else:
        result = simulate.run_simulation(seeds=args.seeds, tasks=args.tasks, config=config)
        table = simulate.format_table
    print(json.dumps(result, indent=2) if args.format == "json" else table(result))
    return 0


# -- check's report --------------------------------------------------------------

def _seconds(value: float) -> str:
    return f"{value:g}s"


def _on(value: bool) -> str:
    return "on" if value else "off"


def _auth(auth) -> str:
    if auth.bearer_token_file:
        return f"bearer token from {auth.bearer_token_file}"
    return f"basic auth as {auth.username}" if auth.username else "no auth"


def _price(price) -> str:
    extra = ((kind, getattr(price, kind)) for kind in ("cache_read", "cache_write", "reasoning"))
    return f"{price.input:g} / {price.output:g}" + "".join(
        f", {kind} {usd:g}" for kind, usd in extra if usd is not None)


def describe_config(config, path: str | None) -> str:
    """What `check` understood, one fact per line, grouped like the YAML."""
    from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
    m, a, t, s, h = config.metrics, config.alerting, config.alerting.thresholds, config.server, config.healing
    lg, o = config.logging, config.otlp
    lines = [
        f"config {path or '(built-in defaults)'}: OK",
        " ".join(filter(None, ("service:", config.service_name, config.service_version,
                               f"environment={config.environment}"))),
        "tracing: " + (
            "disabled" if not config.tracing.enabled else
            # As the SDK's TracerProvider reads it: every span is off, whatever the config says.
            "disabled by OTEL_SDK_DISABLED=true" if os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true"
            else
            f"sampling_rate={config.tracing.sampling_rate:g}"
            + (f" otlp={config.tracing.otlp_endpoint} ({config.tracing.otlp_protocol})"
               if config.tracing.export_to_otlp else " otlp=off")
            + (" console=on" if config.tracing.export_to_console else "")
            + f" spans of: agents={_on(config.tracing.trace_all_agents)} "
              f"state_transitions={_on(config.tracing.trace_state_transitions)} "
              f"tool_calls={_on(config.tracing.trace_tool_calls)} errors={_on(config.tracing.trace_errors)} "
              f"capture_content={_on(config.tracing.capture_content)}"),
        f"metrics: max_series={m.max_series} extra_labels={','.join(m.extra_labels) or 'none'} "
        f"collection_interval={_seconds(m.collection_interval)}"
        + (f" (scraped every {_seconds(m.scrape_interval_seconds)})"
           if m.scrape_interval_seconds != m.collection_interval else ""),
        "  execution buckets (s): " + " ".join(f"{b:g}" for b in m.execution_buckets),
        "  tool buckets (s): " + " ".join(f"{b:g}" for b in m.tool_buckets),
        "  time to first token buckets (s): " + " ".join(f"{b:g}" for b in m.time_to_first_token_buckets),
        "  workflow buckets (s): " + " ".join(f"{b:g}" for b in m.workflow_buckets),
    ]
    if m.prices:
        lines.append("  prices (USD per 1M tokens, input / output, then the cache and reasoning prices set):")
        lines += [f"    {model}: {_price(price)}" for model, price in sorted(m.prices.items())]
    else:
        lines.append("  prices: none (token usage without a cost is counted as unknown, never $0)")
    lines += [
        f"logging: level={lg.level} format={lg.format} include_traces={'on' if lg.include_traces else 'off'} "
        f"otlp={'on' if lg.export_to_otlp else 'off'}",
        f"alerting: {'enabled' if a.enabled else 'disabled'} channels={','.join(a.channels) or 'none'} "
        f"evaluation_interval={a.evaluation_interval} rate_window={a.rate_window} for={a.alert_for}",
        f"  job={a.job} group_labels={','.join(a.group_labels) or 'none'} min_events={a.min_events} "
        f"evaluation_window={a.evaluation_window}",
        "  deployment_labels=" + (",".join(f"{k}={v}" for k, v in a.deployment_labels.items()) or "none")
        + " task_error_types=" + (",".join(a.task_error_types) or "none"),
        f"  thresholds: error_ratio > {t.error_ratio:.2%}, latency p95 > {_seconds(t.latency_p95_seconds)}, "
        f"cost per day > ${t.cost_per_day_usd:g}, tool error_ratio > {t.tool_error_ratio:.2%}, "
        f"circuit open > {_seconds(t.circuit_open_seconds)}, rejected events > {t.rejected_events_ratio:.2%}, "
        f"spans not forwarded > {t.unforwarded_spans_ratio:.2%}, "
        f"time to first token p95 > {_seconds(t.time_to_first_token_p95_seconds)}, "
        f"evaluation score < {t.evaluation_score_floor:g}",
        f"  links: runbooks {a.runbook_url} grafana {a.grafana_url}",
    ]
    if a.conditions:
        lines.append("  legacy conditions: " + "; ".join(a.conditions))
    for name, slo in (("SLO", a.slo), ("workflow SLO", a.workflow_slo)):
        lines.append(
            f"  {name}: objective {slo.objective:.3%}; page "
            + ", ".join(f"{long}/{short} x{factor:g}" for long, short, factor in slo.page_windows)
            + "; ticket " + ", ".join(f"{long}/{short} x{factor:g}" for long, short, factor in slo.ticket_windows))
    fleet = h.fleet
    lines += [
        f"  budget: ${a.budget.day_usd:g}/day ${a.budget.month_usd:g}/month owners={','.join(a.budget.owners) or 'the on-call (email.to_addresses)'}"
        + ("; per feature: " + ", ".join(f"{feature} ${usd:g}/day" for feature, usd in a.budget.per_feature.items())
           if a.budget.per_feature else ""),
        f"  email: {a.email.smtp_server}:{a.email.smtp_port} from={a.email.from_address} "
        f"to={','.join(a.email.to_addresses) or 'none'} "  # none is allowed without the email channel
        f"require_tls={_on(a.email.require_tls)}"
        + (f" auth as {a.email.username} (password_file={a.email.password_file})" if a.email.username else ""),
        f"  slack: channel={a.slack.channel} webhook_url_file={a.slack.webhook_url_file}",
        f"  exporter (scraped, and its webhooks): {a.exporter_url}, "
        + (f"basic auth as {a.exporter_auth.username}" if a.exporter_auth.username else "no basic auth")
        + (f", CA {a.exporter_auth.ca_file}" if a.exporter_auth.ca_file else ""),
        f"  alertmanager: {a.alertmanager_url}; remediation alerts: " + (
            f"{','.join(a.remediation_alerts)} -> {a.exporter_url}/v1/alertmanager"
            if h.enabled and a.remediation_alerts else "none" if h.enabled else "none (healing disabled)"),
        f"server: listen_address={s.listen_address} max_body_bytes={s.max_body_bytes} "
        f"bearer_token_file={s.bearer_token_file or 'none'}"
        + (" (overridden by AGENT_EXPORTER_BEARER_TOKEN)" if _token_file_overridden(config) else ""),
        f"otlp: grpc_listen_address={o.grpc_listen_address or 'off'} "
        + (f"forward_spans=on -> {config.tracing.otlp_endpoint} ({config.tracing.otlp_protocol}) "
           if o.forward_spans else "forward_spans=off ") + f"(queue {o.forward_queue_size}) "
        f"attribution_wait={_seconds(o.attribution_wait_seconds)} max_buffered_spans={o.max_buffered_spans}",
        "healing: " + ("disabled" if not h.enabled else
                       f"max_attempts={h.max_attempts} backoff={_seconds(h.backoff_initial_seconds)}.."
                       f"{_seconds(h.backoff_max_seconds)} breaker: error_ratio>={h.breaker_error_ratio:g} "
                       f"over {_seconds(h.breaker_window_seconds)} (min {h.breaker_min_calls} calls), "
                       f"cooldown {_seconds(h.breaker_cooldown_seconds)}, "
                       f"{h.breaker_half_open_probes} half-open probes"),
        f"  selector: decay={h.selector.decay:g} latency_weight={h.selector.latency_weight:g} "
        f"cost_weight={h.selector.cost_weight:g} quality_weight={h.selector.quality_weight:g}",
        "  fleet alertmanager: " + (
            f"{','.join(fleet.alertmanager.urls)} every {_seconds(fleet.alertmanager.interval_seconds)}, "
            f"{_auth(fleet.alertmanager.auth)}" if fleet.alertmanager.urls else "off (webhook only)"),
        "  fleet prometheus: " + (
            f"{fleet.prometheus.url} every {_seconds(fleet.prometheus.interval_seconds)}, "
            f"window {fleet.prometheus.window}, fleet_weight={fleet.prometheus.fleet_weight:g} "
            f"local_weight={fleet.prometheus.local_weight:g}, "
            f"{_auth(fleet.prometheus.auth)}" if fleet.prometheus.url else "off (each replica learns alone)"),
        f"  fleet polling: jitter={fleet.jitter:g} backoff_max={_seconds(fleet.backoff_max_seconds)} "
        f"timeout={_seconds(fleet.timeout_seconds)}",
    ]
    for agent, chain in sorted(h.fallbacks.items()):
        lines.append(f"  fallback: {agent} -> {' -> '.join(chain)}")
    return "\n".join(lines) + "\n"


def describe_web_config(web_config, path: str) -> str:
    tls = web_config.tls
    lines = [f"web config {path}: OK"]
    if tls is None:
        lines.append("  TLS: disabled")
    else:
        lines.append(f"  TLS: {tls.min_version}..{tls.max_version}, client auth {tls.client_auth_type}")
    users = sorted(web_config.basic_auth_users)
    lines.append(f"  basic auth users: {', '.join(users) if users else 'none'}")
    if web_config.rate_limit.interval_seconds:
        lines.append(f"  rate limit: one request per {_seconds(web_config.rate_limit.interval_seconds)}, "
                     f"burst {web_config.rate_limit.burst}")
    return "\n".join(lines) + "\n"


# -- argument parsing -----------------------------------------------------------------

def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be a number >= 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value



def _log_level_flag(parser, default, *, when_not_given: str = "the config's logging.level") -> None:
    from .config import LOG_LEVELS
    parser.add_argument("--log.level", dest="log_level", default=default, type=str.lower, choices=tuple(LOG_LEVELS),
                        help=f"log level (default: {when_not_given}); the format is logging.format")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-exporter",
        description="Prometheus/OpenTelemetry exporter for AI agent orchestrators.")
    parser.add_argument("--version", action="version", version=f"agent-exporter {__version__}")
    _log_level_flag(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_flag(p, help_text="observability YAML (default: built-in defaults)", required=False):
        p.add_argument("--config.file", dest="config_file", metavar="FILE", help=help_text, required=required)
        # Also after the command, where Prometheus's own binaries take it (SUPPRESS: given before it, it stays);
        # replay, which reads no config, adds it itself.
        _log_level_flag(p, argparse.SUPPRESS)

    serve = commands.add_parser("serve",
                                help="run the exporter: /metrics, /v1/events, OTLP /v1/traces, /v1/alertmanager")
    config_flag(serve)
    serve.add_argument("--web.listen-address", dest="listen_address", metavar="HOST:PORT",
                       help="address to listen on (default: server.listen_address, 127.0.0.1:9464)")
    serve.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                       help="exporter-toolkit web config: TLS and basic auth")
    serve.add_argument("--otlp.grpc-listen-address", dest="otlp_grpc_listen_address", metavar="HOST:PORT",
                       help="also receive OTLP/gRPC traces here (default: otlp.grpc_listen_address; off)")
    serve.set_defaults(func=cmd_serve)

    demo = commands.add_parser("demo", help="exporter plus a simulated orchestrator with an incident")
    config_flag(demo)
    demo.add_argument("--duration", type=_positive_float, metavar="SECONDS",
                      help="stop after this long (default: run until Ctrl-C)")
    demo.add_argument("--stack", action="store_true",
                      help="also run Prometheus, Alertmanager and local Slack and SMTP sinks")
    demo.add_argument("--web.listen-address", dest="listen_address", metavar="HOST:PORT",
                      default="127.0.0.1:9464",
                      help="exporter address (default 127.0.0.1:9464; with --replicas, free loopback ports)")
    demo.add_argument("--seed", type=int, default=1, help="random seed of the simulated workload")
    demo.add_argument("--replicas", type=_positive_int, default=1, metavar="N",
                      help="with --stack: run N orchestrator processes sharing alerts and statistics")
    demo.add_argument("--tasks-per-second", type=_positive_float, default=20.0, metavar="RATE",
                      help="tasks each orchestrator starts per second (default 20)")
    demo.add_argument("--incident-start", type=_non_negative_float, default=20.0, metavar="SECONDS",
                      help="when the incident starts, seconds into the run (default 20)")
    demo.add_argument("--incident-end", type=_non_negative_float, default=80.0, metavar="SECONDS",
                      help="when it ends (default 80)")
    demo.add_argument("--outage-start", type=_non_negative_float, default=40.0, metavar="SECONDS",
                      help="when the workspace's file writes go down for every coder (default 40)")
    demo.add_argument("--outage-end", type=_non_negative_float, default=55.0, metavar="SECONDS",
                      help="when they come back (default 55; equal to --outage-start: no outage)")
    demo.add_argument("--clock-start", type=_non_negative_float, metavar="UNIX_TIME",
                      help="the run's t=0 (default now), so that replicas share one incident")
    demo.set_defaults(func=cmd_demo)

    render = commands.add_parser("render", help="write Prometheus rules, Alertmanager config and dashboards")
    config_flag(render)
    render.add_argument("--out", required=True, metavar="DIR", help="output directory")
    render.set_defaults(func=cmd_render)

    replay = commands.add_parser("replay", help="send a JSONL event log or a legacy metrics JSON to an exporter")
    replay.add_argument("file", metavar="FILE", help="JSONL events, a JSON array of events, or a legacy metrics JSON")
    replay.add_argument("--url", required=True, help="exporter base URL, e.g. http://127.0.0.1:9464 "
                        "(http://USER:PASSWORD@HOST:PORT works too, but ps shows it: prefer --password-file)")
    replay.add_argument("--batch-size", type=_positive_int, default=1000, help="events per request (default: 1000)")
    replay.add_argument("--bearer-token-file", metavar="FILE",
                        help="token for /v1/* (AGENT_EXPORTER_BEARER_TOKEN in the environment wins over it)")
    replay.add_argument("--username", metavar="USER", help="a user of the web config's basic auth")
    replay.add_argument("--password-file", metavar="FILE", help="file holding that user's password")
    replay.add_argument("--ca-file", metavar="FILE", help="CA bundle to verify an https exporter")
    replay.add_argument("--timeout", type=_positive_float, default=30.0,
                        help="per-request timeout, seconds (default: 30)")
    _log_level_flag(replay, argparse.SUPPRESS, when_not_given="info")
    replay.set_defaults(func=cmd_replay)

    check = commands.add_parser("check", help="validate a config and print what it means")
    config_flag(check, "observability YAML to check", required=True)
    check.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                       help="also check an exporter-toolkit web config")
    check.set_defaults(func=cmd_check)

    simulate = commands.add_parser("simulate", help="compare self-healing policies on a scripted degradation")
    config_flag(simulate)
    simulate.add_argument("--mode", choices=("policies", "quality", "fleet"), default="policies",
                          help="policies: static .. full on failures; quality: an agent that answers badly, "
                               "scores weighed or not; fleet: replicas learning alone or sharing statistics")
    simulate.add_argument("--replicas", type=_positive_int, default=3, help="fleet mode: number of replicas")
    simulate.add_argument("--format", choices=("table", "json"), default="table")
    simulate.add_argument("--seeds", type=_positive_int, default=5, help="number of random seeds")
    simulate.add_argument("--tasks", type=_positive_int, default=2000, help="tasks per run")
    simulate.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .config import default_config
    args = build_parser().parse_args(argv)
    args.stop_log_export = None
    _configure_logging(default_config(), args)       # until a command has read its config
    try:
        return args.func(args)
    finally:
        if args.stop_log_export is not None:
            args.stop_log_export()               # sends log records still queued for OTLP


if __name__ == "__main__":
    sys.exit(main())
