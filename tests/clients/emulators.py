"""The emulators the real-client tests launch: real QEMU 7.2, and qmonitor as its stand-in.

Both sets of tests (libvirt, go-qemu) are parametrised over :data:`EMULATORS`, so every check
made against QEMU is made against the stand-in too. Until the ``qmonitor-system-x86_64``
console script exists (issue 12 item 1), its cases are reported as expected failures with the
reason, rather than skipped or failed; the moment the script is installed they run for real.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Emulator:
    """An emulator binary as libvirt sees it: a program named like ``qemu-system-x86_64``."""

    id: str
    program: str
    missing: str
    """Why the program may be absent, reported as the expected failure's reason."""
    guest_acts_on_powerdown: bool
    """Whether ``system_powerdown`` ends the machine. Real QEMU without a guest OS only has
    SeaBIOS, which ignores the ACPI power button; qmonitor's simulated guest powers off
    (machine/commands/run_control.py ``system_powerdown``)."""
    has_ram_digest: bool
    """Whether it answers ``x-query-ram-digest`` (qmonitor's; QEMU has no such command)."""

    def find(self) -> str | None:
        """The program on PATH, or beside this interpreter (a virtual environment's bin/,
        where ``pip install`` puts console scripts, need not be on PATH)."""
        beside_python = Path(sys.executable).parent
        return shutil.which(self.program) or shutil.which(self.program, path=str(beside_python))

    def require(self) -> str:
        """The program's absolute path; an expected failure (pytest.xfail) while it is absent."""
        path = self.find()
        if path is None:
            pytest.xfail(f"{self.program} is not installed yet: {self.missing}")
        return str(Path(path).absolute())


QEMU = Emulator(
    id="qemu",
    program="qemu-system-x86_64",
    missing="install qemu-system-x86 (Debian)",
    guest_acts_on_powerdown=False,
    has_ram_digest=False,
)

QMONITOR = Emulator(
    id="qmonitor",
    program="qmonitor-system-x86_64",
    missing=(
        "the console script that parses QEMU's command line (issue 12 item 1) is not wired "
        "into pyproject's [project.scripts] yet"
    ),
    guest_acts_on_powerdown=True,
    has_ram_digest=True,
)

EMULATORS = [
    pytest.param(QEMU, id=QEMU.id, marks=pytest.mark.qemu),
    pytest.param(QMONITOR, id=QMONITOR.id),
]
