"""Render prometheus/, alertmanager/ and grafana/ from one config (`agent-exporter render`).

The files committed under those folders are the render of the default config;
tests fail when they drift, as in the monitoring mixins.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config


def render_all(config: Config, out_dir: Path) -> list[Path]:
    """Write every generated file under `out_dir`; returns the paths written."""
    # Imported here so that importing one renderer does not import the others.
    from .alertmanager import render_alertmanager
    from .dashboards import render_grafana
    from .prometheus import render_prometheus

    out_dir = Path(out_dir)
    return (render_prometheus(config, out_dir) + render_alertmanager(config, out_dir)
            + render_grafana(config, out_dir))
