"""The installed distribution's version, in a module of its own so that no module imports the package."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("agent-exporter")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
