"""Log lines with trace context: tel.log_handler() and the `logging` section (level, format, include_traces)."""

import io
import json
import logging
import re

import pytest

from agent_exporter import logs
from agent_exporter.config import Config, LoggingConfig, TracingConfig
from agent_exporter.telemetry import Telemetry


def logger_with(handler: logging.Handler, name: str = "orchestrator") -> logging.Logger:
    logger = logging.getLogger(f"{name}.{id(handler)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def test_a_json_line_inside_an_agent_execution_carries_its_trace_id(spans):
    provider, exporter = spans
    tel = Telemetry(Config(), tracer_provider=provider)
    out = io.StringIO()
    log = logger_with(tel.log_handler(out))
    with tel.agent_execution("planner") as run:
        log.info("planning %s", "login", extra={"step": 2})
    log.warning("outside any run")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    (span,) = exporter.get_finished_spans()
    assert inside["trace_id"] == f"{span.context.trace_id:032x}" == run.trace_id
    assert inside["span_id"] == f"{span.context.span_id:016x}"
    assert (inside["level"], inside["msg"], inside["step"]) == ("info", "planning login", 2)
    assert inside["logger"] == log.name and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", inside["ts"])
    assert "trace_id" not in outside and outside["level"] == "warning"


def test_text_format_is_logfmt_with_the_trace_id(spans):
    tel = Telemetry(Config(logging=LoggingConfig(format="text")), tracer_provider=spans[0])
    out = io.StringIO()
    log = logger_with(tel.log_handler(out))
    with tel.agent_execution("coder") as run:
        log.error('tests "failed"\nsecond line')
    (line,) = out.getvalue().splitlines()
    assert re.fullmatch(r'ts=\S+ level=error logger=\S+ msg="tests \\"failed\\"\\nsecond line" '
                        rf"trace_id={run.trace_id} span_id=[0-9a-f]{{16}}", line), line


def test_no_control_character_of_a_value_reaches_a_logfmt_line_raw(spans):
    """An alert's labels come from any client of /v1/alertmanager: a carriage return in one must not
    rewrite the line on a terminal or split it in a log shipper."""
    tel = Telemetry(Config(logging=LoggingConfig(format="text")), tracer_provider=spans[0])
    out = io.StringIO()
    log = logger_with(tel.log_handler(out))
    log.warning("alert", extra={"agent": "a\rb", "tab": "x\ty", "bell": "\x07", "plain": "ok"})
    (line,) = out.getvalue().splitlines()
    assert not re.search(r"[\x00-\x1f]", line), repr(line)
    assert ' agent="a\\rb" tab="x\\ty" bell="\\u0007" plain=ok' in line, line


def test_include_traces_false_leaves_the_ids_out(spans):
    tel = Telemetry(Config(logging=LoggingConfig(include_traces=False)), tracer_provider=spans[0])
    out = io.StringIO()
    log = logger_with(tel.log_handler(out))
    with tel.agent_execution("coder"):
        log.info("no ids")
    assert set(json.loads(out.getvalue())) == {"ts", "level", "logger", "msg"}


def test_level_filters_lines():
    out = io.StringIO()
    log = logger_with(logs.handler(LoggingConfig(level="WARNING"), out))
    log.info("dropped")
    log.warning("kept")
    assert [json.loads(line)["msg"] for line in out.getvalue().splitlines()] == ["kept"]


def test_exceptions_are_one_field():
    out = io.StringIO()
    log = logger_with(logs.handler(LoggingConfig(), out))
    try:
        raise ValueError("bad plan")
    except ValueError:
        log.exception("planning failed")
    line = json.loads(out.getvalue())
    assert line["msg"] == "planning failed"
    assert line["exc_info"].startswith("Traceback") and "ValueError: bad plan" in line["exc_info"]


@pytest.mark.parametrize("fmt, pattern", [("json", r'^\{"ts":".*"level":"info","logger":"agent_exporter\.cli\.test"'),
                                          ("text", r"^ts=\S+ level=info logger=agent_exporter\.cli\.test ")])
def test_configure_sets_the_root_logger(fmt, pattern):
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        assert logs.configure(Config(logging=LoggingConfig(format=fmt, level="INFO")), out) is None
        logging.getLogger("agent_exporter.cli.test").info("hello")
        logging.getLogger("agent_exporter.cli.test").debug("below the level")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    (line,) = out.getvalue().splitlines()
    assert re.match(pattern, line), line


def test_the_export_machinerys_own_records_are_not_exported_over_otlp():
    """A failed export's warning, exported, failed again: a line a second, for as long as the
    backend was down, with nothing else going on."""
    config = Config(tracing=TracingConfig(otlp_endpoint="http://127.0.0.1:9", otlp_protocol="http/protobuf"),
                    logging=LoggingConfig(export_to_otlp=True))
    otlp, provider = logs.otlp_handler(config)
    try:
        def record(name):
            return logging.LogRecord(name, logging.WARNING, __file__, 1, "failed to export", None, None)
        for name in ("opentelemetry.exporter.otlp.proto.http._log_exporter", "urllib3.connectionpool",
                     "grpc._plugin_wrapping"):
            assert not otlp.filter(record(name)), name
        assert otlp.filter(record("agent_exporter.server")) and otlp.filter(record("orchestrator"))
    finally:
        provider.shutdown()


def test_the_otlp_handlers_own_warnings_are_written_in_the_configured_format():
    """They went to a bare stderr handler of the SDK's: a line neither JSON nor logfmt."""
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    config = Config(tracing=TracingConfig(otlp_endpoint="http://127.0.0.1:9", otlp_protocol="http/protobuf",
                                          otlp_timeout_seconds=1),
                    logging=LoggingConfig(export_to_otlp=True, format="json"))
    try:
        stop = logs.configure(config, out)
        logging.getLogger("opentelemetry.instrumentation.logging.handler.internal").warning("recursive logging")
        stop()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert any(line["msg"] == "recursive logging" for line in lines)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_extras_of_any_type_or_name_never_lose_the_line_nor_replace_its_own_fields(fmt):
    """tel.log_handler() is the orchestrator's: a Path in `extra=` lost the whole JSON line, a key with
    a space broke logfmt, and an extra named level or ts replaced the line's own."""
    import pathlib
    out = io.StringIO()
    log = logging.getLogger(f"orchestrator.extras.{fmt}")
    log.addHandler(logs.handler(LoggingConfig(format=fmt), out))
    log.propagate = False
    log.warning("planned", extra={"path": pathlib.Path("/plans/a"), "error": ValueError("bad"), "by": {(1, 2): 3},
                                  "a b": "c", "k=v": 1, "level": "info", "ts": "fake"})
    log.warning("where", stack_info=True)
    first, second = out.getvalue().splitlines()
    if fmt == "json":
        line = json.loads(first)
        assert (line["level"], line["path"], line["error"], line["by"]) == ("warning", "/plans/a", "bad", {"(1, 2)": 3})
        assert line["ts"] != "fake" and line["a b"] == "c"
        assert json.loads(second)["stack_info"].startswith("Stack (most recent call last)")
    else:
        assert " level=warning " in first and "ts=fake" not in first
        assert " path=/plans/a error=bad " in first and " a_b=c k_v=1" in first
        assert 'stack_info="Stack (most recent call last):' in second
