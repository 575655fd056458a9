"""agent-exporter: Prometheus and OpenTelemetry telemetry for AI agent orchestrators."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("agent-exporter")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["Telemetry", "__version__"]


def __getattr__(name):
    # Lazy, so `import agent_exporter.events` stays cheap for tools that only decode.
    if name == "Telemetry":
        from .telemetry import Telemetry
        return Telemetry
    raise AttributeError(name)
