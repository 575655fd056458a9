"""The real binaries the tests need: a missing one fails the test that needs it, with the fix, never skips it."""

from __future__ import annotations

import shutil

import pytest

PACKAGES = {"prometheus": "prometheus", "promtool": "prometheus", "prometheus-alertmanager": "prometheus-alertmanager",
            "amtool": "prometheus-alertmanager", "docker-compose": "docker-compose", "wrk": "wrk"}


def binary(name: str) -> str:
    """The path of `name` on PATH; the test fails when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is required: apt-get install {PACKAGES.get(name, name)} (or scripts/install-deps)",
                    pytrace=False)
    return path
