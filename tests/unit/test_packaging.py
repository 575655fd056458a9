"""The package's imports against pyproject.toml's dependencies, as deptry reads them.

A module imported only through another package's dependencies (requests came with
opentelemetry-exporter-otlp-proto-http 1.45.1, not 1.45.0), or declared only in the
test extra, breaks a user's install that every test here passes on.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_the_package_imports_is_one_of_its_declared_dependencies():
    result = subprocess.run([sys.executable, "-m", "deptry", "--no-ansi", "exporter/agent_exporter"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No dependency issues found" in result.stdout + result.stderr
