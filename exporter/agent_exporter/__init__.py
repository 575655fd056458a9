"""agent-exporter: Prometheus and OpenTelemetry telemetry for AI agent orchestrators."""

from typing import TYPE_CHECKING

from .version import __version__

if TYPE_CHECKING:       # what the lazy __getattr__ returns, as type checkers must see it
    from .telemetry import Telemetry

__all__ = ["Telemetry", "__version__"]

if not TYPE_CHECKING:   # hidden from type checkers, so a name not exported is an error there
    def __getattr__(name):
        # Lazy, so `import agent_exporter.events` stays cheap for tools that only decode.
        if name == "Telemetry":
            from .telemetry import Telemetry
            return Telemetry
        raise AttributeError(name)
