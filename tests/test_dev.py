"""``dev.py`` on a fresh clone: it says what it does while it makes ``.venv``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_first_use_announces_each_step(short_tmp: Path) -> None:
    """The first two steps (the venv, then pip) each say so before they start; the test stops
    dev.py once pip has begun, so it needs no package index and takes seconds."""
    clone = short_tmp / "clone"
    clone.mkdir()
    for name in ("dev.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, clone / name)
    process = subprocess.Popen(
        [sys.executable, "dev.py", "venv"],
        cwd=clone,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # so that the pip it starts is stopped with it
    )
    try:
        assert process.stderr is not None
        said: list[str] = []
        while not said or not said[-1].startswith("dev.py: upgrading pip"):
            line = process.stderr.readline().decode()
            assert line, f"dev.py ended first; it said {said}"
            if line.startswith("dev.py: "):
                said.append(line.rstrip("\n"))
        assert said == [
            "dev.py: creating .venv (python3 -m venv)",
            "dev.py: upgrading pip in .venv",
        ]
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
