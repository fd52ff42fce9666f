#!/usr/bin/env python3
"""Bootstrap and run qmonitor from a fresh clone with nothing but python3.

``python3 dev.py run [ARGS...]``   creates ``.venv`` (once), installs qmonitor into it and runs
                                   ``qmonitor run ARGS...``.
``python3 dev.py test [ARGS...]``  also installs the test dependencies and runs the whole suite
                                   (``pytest ARGS...``).

The virtual environment is reused while ``pyproject.toml`` is unchanged; a stamp file records
the hash of the ``pyproject.toml`` it was installed from.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"


def _stamp_for(extra: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return f"{extra}:{digest}"


def _create_venv() -> None:
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    except subprocess.CalledProcessError:
        # Debian splits ensurepip into python3-venv; install it when we are allowed to.
        shutil.rmtree(VENV, ignore_errors=True)
        if os.geteuid() == 0 and shutil.which("apt-get"):
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            subprocess.run(["apt-get", "update"], check=False)
            subprocess.run(
                [
                    "apt-get",
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "python3-venv",
                    f"python{version}-venv",
                ],
                check=False,
            )
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        else:
            sys.exit("dev.py: cannot create a virtual environment; install python3-venv")


def ensure_venv(extra: str) -> None:
    """Create ``.venv`` and install qmonitor (with ``extra`` dependencies) if not done yet."""
    if not PYTHON.exists():
        _create_venv()
    stamp_file = VENV / f".qmonitor-{extra or 'base'}"
    wanted = _stamp_for(extra)
    if stamp_file.exists() and stamp_file.read_text() == wanted:
        return
    target = f"{ROOT}[{extra}]" if extra else str(ROOT)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", target], check=True)
    stamp_file.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "venv"}:
        print(__doc__)
        return 2
    verb, rest = argv[0], argv[1:]
    if verb == "run":
        ensure_venv("")
        os.execv(str(VENV / "bin" / "qmonitor"), ["qmonitor", "run", *rest])
    ensure_venv("test")
    if verb == "venv":
        return 0
    os.chdir(ROOT)
    return subprocess.run([str(PYTHON), "-m", "pytest", *rest]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
