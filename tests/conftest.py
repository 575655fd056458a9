"""Suite-wide checks.  Real components are required: a missing binary fails, never skips."""

import shutil

import pytest

REQUIRED_BINARIES = ("prometheus", "promtool", "prometheus-alertmanager", "amtool", "docker-compose")


def pytest_sessionstart(session):
    missing = [name for name in REQUIRED_BINARIES if shutil.which(name) is None]
    if missing:
        raise pytest.UsageError(
            f"missing required binaries: {', '.join(missing)} (run scripts/install-deps)")
