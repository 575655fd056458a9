"""Log lines with trace context: the `logging` section of the config, for the exporter and for orchestrators.

    handler = tel.log_handler()                 # or logs.handler(config.logging)
    logging.getLogger().addHandler(handler)     # every line: level, logger, message, trace_id, span_id

`format: json` writes one JSON object per line (ts, level, logger, msg, and
trace_id/span_id of the current span when `include_traces` is on, exc_info and
stack_info as strings, and the record's `extra=` fields, as their str() where
JSON has no type for them, never replacing the fields before); `format: text`
writes the same as logfmt (`ts=... level=info logger=... msg="..." trace_id=...`),
as Prometheus components do.  `level` is the handler's level.
With `export_to_otlp`, the records also go over OTLP to the backend the spans
go to (tracing.otlp_endpoint and otlp_protocol), through the OpenTelemetry
logs SDK, behind a bounded queue: a dead collector never blocks logging.
The CLI configures its own logging from the same section.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import time
from collections.abc import Callable

import msgspec
from opentelemetry import trace

from .config import Config, LoggingConfig

# An `extra=` value JSON has no type for (a Path, an exception, any object) is written as its str().
_encode = msgspec.json.Encoder(enc_hook=str).encode

# Attributes every LogRecord has; anything else on a record came from `extra=` and is written too,
# but for uvicorn's copy of its message with terminal colours.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "color_message"}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the current span, when there is a valid one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class _Formatter(logging.Formatter):
    def __init__(self, include_traces: bool):
        super().__init__()
        self.include_traces = include_traces

    def fields(self, record: logging.LogRecord) -> dict:
        fields = {"ts": _timestamp(record), "level": record.levelname.lower(), "logger": record.name,
                  "msg": record.getMessage()}
        if self.include_traces and (ids := _trace_ids()) is not None:
            fields["trace_id"], fields["span_id"] = ids
        for key, value in record.__dict__.items():
            # An `extra=` of the caller's never replaces the line's own ts, level, logger or msg.
            if key not in _STANDARD and key not in fields:
                fields[str(key)] = value
        if record.exc_info:
            fields["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            fields["stack_info"] = self.formatStack(record.stack_info)
        return fields


class JSONFormatter(_Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        try:
            return _encode(fields).decode("utf-8", "replace")
        except (TypeError, msgspec.EncodeError):    # a mapping with keys JSON cannot have, say: as text
            return _encode({key: value if isinstance(value, str) else str(value)
                            for key, value in fields.items()}).decode("utf-8", "replace")


class LogfmtFormatter(_Formatter):
    """key=value pairs, values quoted when they need it."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{_logfmt_key(key)}={_logfmt_value(value)}" for key, value in self.fields(record).items())


# As go-logfmt (Prometheus's logs) quotes: a value with a space, '=', '"' or a control character
# is quoted, with every control character escaped, so that no value can start a line of its own.
_LOGFMT_ESCAPES = {**{c: f"\\u{c:04x}" for c in range(0x20)}, ord("\\"): "\\\\", ord('"'): '\\"',
                   ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
_LOGFMT_QUOTED = re.compile(r'[\x00-\x20="\\]')


def _logfmt_key(key: str) -> str:
    """A key logfmt can read: what would end it (a space, '=', '"', a control character) becomes '_'."""
    return _LOGFMT_QUOTED.sub("_", key) or "_"


def _logfmt_value(value) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and not _LOGFMT_QUOTED.search(text):
        return text
    return '"' + text.translate(_LOGFMT_ESCAPES) + '"'


def formatter(config: LoggingConfig) -> logging.Formatter:
    cls = JSONFormatter if config.format == "json" else LogfmtFormatter
    return cls(config.include_traces)


def handler(config: LoggingConfig, stream=None) -> logging.Handler:
    """A handler writing `config.format` lines at `config.level` and above to `stream` (stderr)."""
    result = logging.StreamHandler(stream if stream is not None else sys.stderr)
    result.setFormatter(formatter(config))
    result.setLevel(config.level)
    return result


def otlp_handler(config: Config):
    """An OpenTelemetry LoggingHandler exporting to the spans' OTLP backend, and its LoggerProvider.

    The caller owns the provider (shutdown() flushes).
    """
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    from .tracing import build_resource, otlp_log_exporter

    provider = LoggerProvider(resource=build_resource(config))
    provider.add_log_record_processor(BatchLogRecordProcessor(
        otlp_log_exporter(config.tracing), max_queue_size=config.tracing.max_queue_size))
    result = LoggingHandler(level=config.logging.level, logger_provider=provider)
    result.addFilter(_not_about_exporting)
    return result, provider


# Loggers of the export's own machinery.  Their records stay out of the OTLP export: a failed
# export's warning, exported, fails again and logs again, once a second for as long as the backend
# is down, with nothing else going on.  (They still reach the process's own handler.)
_EXPORTING_LOGGERS = ("opentelemetry", "urllib3", "grpc")


def _not_about_exporting(record: logging.LogRecord) -> bool:
    return record.name.partition(".")[0] not in _EXPORTING_LOGGERS


def configure(config: Config, stream=None) -> Callable[[], None] | None:
    """The process's logging from the config (the CLI's): the root logger's handlers, its level,
    and the OTLP log handler when `logging.export_to_otlp`.

    Returns what stops the OTLP log export, or None: it sends what is queued, waiting for a
    dead backend at most `tracing.otlp_timeout_seconds`, so the process's exit is not held up.
    """
    root = logging.getLogger()
    handlers = [handler(config.logging, stream)]
    stop_export = None
    if config.logging.export_to_otlp:
        otlp, provider = otlp_handler(config)
        handlers.append(otlp)
        stop_export = functools.partial(_stop_export, provider, config.tracing.otlp_timeout_seconds)
        # The OTLP handler's own warnings go to a logger of theirs that does not propagate (it would
        # reach that handler again) and writes bare lines to stderr: ours, in the configured format.
        logging.getLogger(type(otlp).__module__ + ".internal").handlers[:] = [handlers[0]]
    root.handlers[:] = handlers
    root.setLevel(config.logging.level)
    return stop_export


def _stop_export(provider, seconds: float) -> None:
    from .tracing import shutdown_within

    if not shutdown_within(provider, seconds):
        logging.getLogger(__name__).warning(
            "the OTLP backend did not take the queued log records within %gs (tracing.otlp_timeout_seconds); "
            "those still queued are lost", seconds)
