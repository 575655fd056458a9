"""logging.export_to_otlp: log records reach the spans' OTLP backend, with the trace context of their span."""

from __future__ import annotations

import io
import logging
import time

import pytest

from agent_exporter import logs
from agent_exporter.config import Config, LoggingConfig, TracingConfig
from agent_exporter.ports import free_port
from agent_exporter.telemetry import Telemetry
from otlp_receiver import GrpcReceiver, HttpReceiver

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("receiver_class, protocol", [(GrpcReceiver, "grpc"), (HttpReceiver, "http/protobuf")])
def test_log_records_go_to_the_spans_backend_with_their_trace(receiver_class, protocol):
    with receiver_class() as receiver:
        config = Config(service_name="orchestrator-under-test",
                        tracing=TracingConfig(export_to_otlp=True, otlp_endpoint=receiver.endpoint,
                                              otlp_protocol=protocol),
                        logging=LoggingConfig(export_to_otlp=True, level="INFO"))
        tel = Telemetry(config)
        handler, provider = logs.otlp_handler(config)
        log = logging.getLogger(f"orchestrator.otlp.{protocol}")
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
        log.propagate = False
        try:
            with tel.agent_execution("planner") as run:
                log.warning("rate limited, retrying")
            log.debug("below the configured level")
            log.info("after the run")
            provider.force_flush()
            tel.shutdown()
            inside, after = receiver.wait_for_logs(2)
            spans = receiver.wait_for_spans(1)
        finally:
            log.removeHandler(handler)
            provider.shutdown()
    assert (inside.body, inside.severity) == ("rate limited, retrying", "WARN")
    assert inside.trace_id == run.trace_id == spans[0].trace_id
    assert inside.span_id == spans[0].span_id
    assert inside.resource["service.name"] == "orchestrator-under-test"
    assert (after.body, after.trace_id) == ("after the run", "")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_stopping_the_log_export_waits_for_a_dead_backend_at_most_its_timeout(protocol):
    # 2048 queued records are four batches, each retried for up to the whole timeout: the CLI's
    # exit took 3.6 times the timeout here before the wait was bounded.
    config = Config(tracing=TracingConfig(export_to_otlp=True, otlp_endpoint=f"http://127.0.0.1:{free_port()}",
                                          otlp_protocol=protocol, otlp_timeout_seconds=3, max_queue_size=2048),
                    logging=LoggingConfig(export_to_otlp=True, level="INFO", format="text"))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    try:
        stop_export = logs.configure(config, out)
        for line in range(2048):
            logging.getLogger("orchestrator").info("line %d", line)
        started = time.monotonic()
        stop_export()
        stopped_in = time.monotonic() - started
    finally:
        root.handlers[:], root.level = saved
    assert stopped_in < 5.5
    assert "the OTLP backend did not take the queued log records within 3s" in out.getvalue()
