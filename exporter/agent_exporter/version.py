"""The version, in a module of its own so that no module imports the package for it.

pyproject.toml reads it from here (setuptools' dynamic `attr`), so the installed distribution's
metadata says the same; a constant, not importlib.metadata, keeps `import agent_exporter` cheap."""

__version__ = "0.1.0"
