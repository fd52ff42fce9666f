#!/usr/bin/env python3
"""Bootstrap and run qmonitor from a fresh clone with nothing but python3.

``python3 dev.py run [ARGS...]``   creates ``.venv`` (once), installs qmonitor into it (with
                                   qemu.qmp's ``qmp-shell``) and runs ``qmonitor run ARGS...``.
``python3 dev.py test [ARGS...]``  also installs the test dependencies and runs the whole suite
                                   (``pytest ARGS...``).
``python3 dev.py venv``            only makes ``.venv``, with the test dependencies.

The virtual environment is reused while ``pyproject.toml`` is unchanged; a stamp file records
the hash of the ``pyproject.toml`` it was installed from. The first use takes a while (half a
minute on a slow network): each step is announced on stderr.
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


def _step(text: str) -> None:
    """Say what is being done, before a step that may take seconds."""
    print(f"dev.py: {text}", file=sys.stderr, flush=True)


def _stamp_for(extra: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return f"{extra}:{digest}"


def _create_venv() -> None:
    _step(f"creating {VENV.name} (python3 -m venv)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    except subprocess.CalledProcessError:
        # Debian splits ensurepip into python3-venv; install it when we are allowed to.
        shutil.rmtree(VENV, ignore_errors=True)
        if os.geteuid() == 0 and shutil.which("apt-get"):
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            _step("python3 lacks venv: installing python3-venv with apt-get")
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
    stamp_file = VENV / f".qmonitor-{extra}"
    wanted = _stamp_for(extra)
    if stamp_file.exists() and stamp_file.read_text() == wanted:
        return
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    _step(f"upgrading pip in {VENV.name}")
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    _step(f"installing qmonitor[{extra}] and its dependencies into {VENV.name} (pip)")
    subprocess.run([*pip, "-e", f"{ROOT}[{extra}]"], check=True)
    stamp_file.write_text(wanted)
    _step(f"{VENV.name} is ready (reused until pyproject.toml changes)")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "venv"}:
        print(__doc__)
        return 2
    verb, rest = argv[0], argv[1:]
    if verb == "run":
        ensure_venv("client")
        os.execv(str(VENV / "bin" / "qmonitor"), ["qmonitor", "run", *rest])
    ensure_venv("test")
    if verb == "venv":
        return 0
    os.chdir(ROOT)
    return subprocess.run([str(PYTHON), "-m", "pytest", *rest]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
