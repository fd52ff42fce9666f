"""The engineering standards, checked like any other behaviour: mypy strict and ruff clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_the_package_is_mypy_strict_clean() -> None:
    result = run("mypy")  # configuration in pyproject.toml: strict, files = src/qmonitor
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_ruff_clean_and_formatted() -> None:
    lint = run("ruff", "check", "src", "tests", "bench", "tools", "dev.py")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatting = run("ruff", "format", "--check", "src", "tests", "bench", "tools", "dev.py")
    assert formatting.returncode == 0, formatting.stdout + formatting.stderr
