"""Drop-in shims for the legacy observability API (the old `observability` package).

    from agent_exporter.compat.tracer import get_tracer
    from agent_exporter.compat.metrics_collector import get_metrics_collector
    from agent_exporter.compat.alerting import get_alerting_system
    from agent_exporter.compat.dashboard_generator import generate_dashboard

The legacy API is made of process-wide singletons, so the shims share one
`Telemetry`: the package's only global, created on first use from the legacy
config file (DEFAULT_CONFIG_FILE, relative to the working directory, where the
legacy alerting read it too), or the defaults when there is none.  An
application that wants another config path, exporters or /metrics server hands its
Telemetry to the shims before first use, its config read as theirs is (lenient, with
the legacy tracer's resource):

    tel = Telemetry(agent_exporter.compat.load_legacy_config("observability_config.yaml"))
    agent_exporter.compat.set_default_telemetry(tel)
    tel.serve("0.0.0.0:9464")
"""

from __future__ import annotations

import logging
import re
import threading

import msgspec

from ..config import Config, ConfigError, parse_config, read_document
from ..telemetry import Telemetry

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_default: Telemetry | None = None

DEFAULT_CONFIG_FILE = ".claude/orchestrator/observability/observability_config.yaml"
# The resource the legacy tracer gave its spans: traces keep being found under the old service name.
LEGACY_SERVICE = {"service_name": "magnus-orchestrator", "service_version": "2.0"}


def load_legacy_config(path=DEFAULT_CONFIG_FILE) -> Config:
    """The config at `path`, read as the legacy package read it: a missing or unreadable file means
    the defaults, and a key that does not validate takes its default, each loudly; the rest of the
    file applies (a file that turns tracing or alerting off never has it turned back on).  The service
    is named as the legacy tracer named it (LEGACY_SERVICE) unless the file names it."""
    try:
        document = read_document(path, unique_keys=False)   # the legacy package let the last one win
    except ConfigError as exc:
        _log.warning("could not load the observability config, using defaults: %s", exc)
        return Config(**LEGACY_SERVICE)
    if isinstance(document, dict) and isinstance(document.get("observability"), dict):
        for key, value in LEGACY_SERVICE.items():
            document["observability"].setdefault(key, value)
    while True:     # bounded: each turn takes a key out of the document
        try:
            return parse_config(document)
        except ConfigError as exc:
            if not _remove(document, exc.path):
                _log.warning("could not load the observability config %s, using defaults: %s", path, exc)
                return Config(**LEGACY_SERVICE)
            _log.warning("observability config %s: %s; that key takes its default", path, exc)


def _remove(document, path: str) -> bool:
    """Take the key a ConfigError's `path` names out of `document` (a list, whole); whether it was there."""
    parts = re.sub(r"\[\d+\]", "", path).split(".")
    if len(parts) < 2:
        return False        # the document itself is wrong: nothing of it can be kept
    node, i = document, 0
    while isinstance(node, dict):
        # The longest key first: map keys such as model names hold dots.
        key = next((".".join(parts[i:j]) for j in range(len(parts), i, -1) if ".".join(parts[i:j]) in node), None)
        if key is None:
            return False
        i += key.count(".") + 1
        if i == len(parts):
            del node[key]
            return True
        node = node[key]
    return False


def default_telemetry(service_name: str | None = None) -> Telemetry:
    """The Telemetry the legacy singletons record into (created lazily).  `service_name`, the
    legacy tracer's argument, names the service if it comes first; later, the name stays."""
    global _default
    if service_name is not None:
        # The config's own check of the name, whether or not it comes first.
        service_name = parse_config({"observability": {"service_name": service_name}}).service_name
    with _lock:
        if _default is None:
            config = load_legacy_config()
            if service_name is not None:
                config = msgspec.structs.replace(config, service_name=service_name)
            _default = Telemetry(config)
        elif service_name is not None and service_name != _default.config.service_name:
            _log.warning("service_name %r: the legacy API's Telemetry already runs as %r "
                         "(set observability.service_name in its config)", service_name,
                         _default.config.service_name)
        return _default


def set_default_telemetry(telemetry: Telemetry) -> None:
    """Make the legacy singletons record into `telemetry` (call before their first use)."""
    global _default
    with _lock:
        _default = telemetry


__all__ = ["DEFAULT_CONFIG_FILE", "LEGACY_SERVICE", "default_telemetry", "load_legacy_config", "set_default_telemetry"]
