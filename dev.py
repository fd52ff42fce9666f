#!/usr/bin/env python3
"""Bootstrap and run qmonitor from a fresh clone with nothing but python3.

``python3 dev.py run [ARGS...]``   creates ``.venv`` (once), installs qmonitor into it (with
                                   qemu.qmp's ``qmp-shell``) and runs ``qmonitor run ARGS...``.
``python3 dev.py test [ARGS...]``  also installs the test dependencies and runs the whole suite
                                   (``pytest ARGS...``).
``python3 dev.py venv``            only makes ``.venv``, with the test dependencies.
``python3 dev.py test-compiled [ARGS...]``  the same suite on the compiled form: makes
                                   ``.venv-compiled``, where qmonitor is installed with its
                                   request path compiled by mypyc (``QMONITOR_COMPILE=mypyc``,
                                   setup.py; needs a C compiler), and runs ``pytest ARGS...``
                                   there. CI runs both suites.

``.venv`` is reused while ``pyproject.toml`` is unchanged; a stamp file records the hash of the
``pyproject.toml`` it was installed from (``.venv-compiled``'s, of every source: it is rebuilt
when one changes). The first use takes a while (half a minute on a slow network): each step
is announced on stderr.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
COMPILED_VENV = ROOT / ".venv-compiled"


def _step(text: str) -> None:
    """Say what is being done, before a step that may take seconds."""
    print(f"dev.py: {text}", file=sys.stderr, flush=True)


def _stamp_for(extra: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return f"{extra}:{digest}"


def _create_venv(venv: Path = VENV) -> None:
    _step(f"creating {venv.name} (python3 -m venv)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    except subprocess.CalledProcessError:
        # Debian splits ensurepip into python3-venv; install it when we are allowed to.
        shutil.rmtree(venv, ignore_errors=True)
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
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
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


def _sources_digest() -> str:
    """A digest of everything the compiled installation is built from."""
    digest = hashlib.sha256()
    paths = [ROOT / "pyproject.toml", ROOT / "setup.py", *sorted((ROOT / "src").rglob("*"))]
    for path in paths:
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ensure_compiled_venv() -> Path:
    """Make ``.venv-compiled``: qmonitor[test] installed (not editable) with the request path
    compiled by mypyc; rebuilt whenever a source changes. Returns its Python."""
    python = COMPILED_VENV / "bin" / "python"
    stamp_file = COMPILED_VENV / ".qmonitor-compiled"
    wanted = _sources_digest()
    if python.exists() and stamp_file.exists() and stamp_file.read_text() == wanted:
        return python
    if not python.exists():
        _create_venv(COMPILED_VENV)
    stamp_file.unlink(missing_ok=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    _step(f"upgrading pip in {COMPILED_VENV.name}")
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    # mypyc type-checks the package as it compiles it, against its dependencies: they are
    # installed first, and the build runs in this environment (no build isolation).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    _step(f"installing qmonitor's dependencies, test and build ones into {COMPILED_VENV.name}")
    subprocess.run([*pip, "install", "setuptools>=77", *requirements], check=True)
    _step(f"compiling qmonitor with mypyc and installing it into {COMPILED_VENV.name}")
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' copies of earlier sources
    subprocess.run(
        [*pip, "install", "--no-build-isolation", "--no-deps", "--force-reinstall", str(ROOT)],
        check=True,
        env={**os.environ, "QMONITOR_COMPILE": "mypyc"},
        cwd=ROOT,
    )
    version = subprocess.run(
        [str(python), "-m", "qmonitor", "--version"],
        check=True,
        capture_output=True,
        text=True,
        cwd=COMPILED_VENV,  # not the checkout, whose src/ is not on the path anyway
    ).stdout.strip()
    if "compiled with mypyc" not in version:
        sys.exit(f"dev.py: {COMPILED_VENV.name} is not the compiled form: {version}")
    stamp_file.write_text(wanted)
    _step(f"{COMPILED_VENV.name} is ready: {version}")
    return python


def main(argv: list[str]) -> int:
    if argv and argv[0] == "test-compiled":
        python = ensure_compiled_venv()
        os.chdir(ROOT)
        return subprocess.run([str(python), "-m", "pytest", *argv[1:]]).returncode
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
