"""The lint gate: ruff and mypy (strict) pass, so the README's test command is also the CI gate.

Both run from the interpreter running the tests, so a fresh ``pip install -e '.[test]'``
is all CI needs.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_ruff_is_clean() -> None:
    r = run("ruff", "check", "--no-cache", "src", "tests")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_is_clean() -> None:
    r = run("mypy")  # files and strictness come from pyproject.toml
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success: no issues found" in r.stdout
