"""An exporter serving HTTP on a free loopback port, for the tests that talk to one."""

from __future__ import annotations

from contextlib import contextmanager

from agent_exporter import Telemetry
from agent_exporter.config import Config
from agent_exporter.server import Service, start_server


@contextmanager
def running_exporter():
    """The default config's Telemetry behind the HTTP service; its handle (`.url`), stopped on leaving."""
    telemetry = Telemetry(Config())
    handle = start_server(Service(telemetry), "127.0.0.1:0")
    try:
        yield handle
    finally:
        handle.stop()
        telemetry.shutdown()
