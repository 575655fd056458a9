"""py.typed is shipped: a user's code on the README's API type-checks under mypy --strict."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "typing" / "readme_api.py"


def test_the_readme_api_type_checks_strictly(tmp_path):
    # --follow-imports=silent: the library's types are used, its internals are not this test's subject.
    # --strict includes --warn-unused-ignores, so each `type: ignore` there is an error mypy must find.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-error-summary",
         "--cache-dir", str(tmp_path / "cache"), str(SCRIPT)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
