"""Suite-wide checks.  Real components are required: a missing binary fails, never skips."""

import shutil

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

REQUIRED_BINARIES = ("prometheus", "promtool", "prometheus-alertmanager", "amtool", "docker-compose")


def pytest_sessionstart(session):
    missing = [name for name in REQUIRED_BINARIES if shutil.which(name) is None]
    if missing:
        raise pytest.UsageError(
            f"missing required binaries: {', '.join(missing)} (run scripts/install-deps)")


@pytest.fixture
def spans():
    """A tracer provider whose finished spans are kept in memory: (provider, exporter)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()
