"""The linter and the type checker are part of the suite, so CI runs them: ruff over the whole
tree, mypy strict on the order domain and the Redis floor (pyproject.toml, [tool.mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_is_clean() -> None:
    done = run("ruff", "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_types_check_strictly_in_the_domain_and_state() -> None:
    done = run("mypy", "--cache-dir", str(ROOT / ".oms" / "mypy-cache"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout
