"""Suite-wide fixtures.  Real components are required by the tests that use them (tests/binaries.py):
a missing binary fails those tests, never skips them, and leaves the others alone."""

import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """Tests that run the CLI in-process configure the root logger (to a stream pytest closes later)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def spans():
    """A tracer provider whose finished spans are kept in memory: (provider, exporter)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()
