"""The pure-Python form serves QMP, whichever form the suite runs on.

CI runs the whole suite on the compiled form (``dev.py test-compiled``, setup.py); this test
copies the package's sources alone (no extension module) and runs ``qmonitor`` from the copy,
as a machine without a C compiler installs it, to show that form still answers QEMU's client.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

from qemu.qmp import QMPClient

import qmonitor
from qmonitor.form import COMPILED_MODULES

PURE_VERSION = b"qmonitor 0.1.0 (QEMU 7.2.22's monitor; pure Python)\n"


def pure_copy(directory: Path) -> dict[str, str]:
    """The package's sources and data copied under ``directory`` without any extension module
    (nor byte code), and the environment that imports qmonitor from there."""
    package = Path(qmonitor.__file__).parent
    shutil.copytree(
        package,
        directory / "qmonitor",
        ignore=shutil.ignore_patterns("*.so", "__pycache__"),
    )
    for name in COMPILED_MODULES:
        assert (directory / (name.replace(".", "/") + ".py")).is_file()
    return {**os.environ, "PYTHONPATH": str(directory)}


async def test_the_pure_python_form_serves_a_qmp_session(short_tmp: Path) -> None:
    environment = pure_copy(short_tmp / "pure")
    version = subprocess.run(
        [sys.executable, "-m", "qmonitor", "--version"],
        env=environment,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert version.stdout == PURE_VERSION
    path = str(short_tmp / "client.sock")
    qmp = QMPClient("pure")
    await qmp.start_server(path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qmonitor", "run", "-name", "pure", "-m", "16M",
        "-qmp", f"unix:{path}", "-monitor", "none",
        env=environment, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.wait_for(qmp.accept(), 30)  # the monitor connects out (QEMU's unix:PATH)
        assert await qmp.execute("query-status") == {
            "status": "running",
            "singlestep": False,
            "running": True,
        }
        assert await qmp.execute("query-name") == {"name": "pure"}
    finally:
        await qmp.disconnect()
        if process.returncode is None:
            process.kill()
        await process.wait()
