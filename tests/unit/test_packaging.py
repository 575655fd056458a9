"""The package's dependencies: its imports against pyproject.toml (as deptry reads them), and
the versions CI installs (constraints.txt) against pyproject.toml's ranges.

A module imported only through another package's dependencies (requests came with
opentelemetry-exporter-otlp-proto-http 1.45.1, not 1.45.0), or declared only in the
test extra, breaks a user's install that every test here passes on.
"""

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_the_package_imports_is_one_of_its_declared_dependencies():
    result = subprocess.run([sys.executable, "-m", "deptry", "--no-ansi", "exporter/agent_exporter"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No dependency issues found" in result.stdout + result.stderr


def test_constraints_pin_every_dependency_inside_its_range():
    """What install-deps installs: each requirement of the package and of its test and demo extras
    is pinned in constraints.txt, at a version its range allows (a new dependency, or a floor
    raised past the pin, needs `make lock`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(line) for line in [*project["dependencies"], *project["optional-dependencies"]["test"],
                                               *project["optional-dependencies"]["demo"]]]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    checked = 0
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        if name == "agent-exporter" or (requirement.marker is not None and not requirement.marker.evaluate()):
            continue
        assert name in pins, f"{requirement} is not in constraints.txt: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (str(requirement), str(pins[name]))
        checked += 1
    assert checked >= 30
