"""agent-exporter: Prometheus and OpenTelemetry telemetry for AI agent orchestrators."""

from .version import __version__

__all__ = ["Telemetry", "__version__"]


def __getattr__(name):
    # Lazy, so `import agent_exporter.events` stays cheap for tools that only decode.
    if name == "Telemetry":
        from .telemetry import Telemetry
        return Telemetry
    raise AttributeError(name)
