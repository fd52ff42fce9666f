"""HMP ``info cpus`` and ``cpu N``: ``qmonitor-system-x86_64`` against QEMU 7.2, byte for byte.

Both run the same command line (``-machine none``, and ``-machine pc -accel tcg -smp 2``) with a
human monitor and QMP on unix sockets. Thread ids are the host's, so they are masked; the rest
(which CPU is marked current, ``invalid CPU index``, the argument errors) must be the same bytes.
The current CPU is the monitor's, not the connection's (QEMU's ``mon->mon_cpu_path``): it
survives a reconnection, and ``human-monitor-command`` has its own, from its ``cpu-index``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qmonitor.testing import QEMU_BINARY, start_server
from test_hmp_machine_qemu import Served

pytestmark = pytest.mark.qemu

STANDIN = str(Path(sys.executable).parent / "qmonitor-system-x86_64")

LINES = [
    "info cpus",
    "cpu 1",
    "info cpus",
    "cpu 2",
    "cpu -1",
    "cpu 1x",
    "cpu x",
    "cpu",
    "info cpus",
    "help cpu",
]


def masked(text: bytes) -> bytes:
    return re.sub(rb"thread_id=[0-9]+", b"thread_id=N", text)


@pytest.fixture(params=[["-machine", "none"], ["-machine", "pc", "-accel", "tcg", "-smp", "2"]])
def machine(request: pytest.FixtureRequest) -> list[str]:
    return list(request.param)


async def served(binary: str, machine: list[str], directory: Path) -> AsyncIterator[Served]:
    served = Served(str(directory / "hmp.sock"), str(directory / "qmp.sock"))
    command = [binary, *machine, "-display", "none", "-nodefaults", "-S"]
    # The human monitor first: its socket listens once the QMP socket's file exists (both
    # programs make them in command-line order), so waiting for that file is enough.
    command += ["-monitor", f"unix:{served.hmp_path},server=on,wait=off"]
    command += ["-qmp", f"unix:{served.qmp_path},server=on,wait=off"]
    if binary == STANDIN:
        command += ["--state-dir", str(directory / "state")]
    async with start_server(command, served.qmp_path):
        yield served


async def conversation(served: Served) -> list[bytes]:
    """The lines on the human monitor, again after reconnecting, and through QMP."""
    human = await served.human()
    answers = [masked(await human.output(line)) for line in LINES]
    await human.close()
    human = await served.human()
    answers.append(masked(await human.output("info cpus")))  # still CPU 1 where there is one
    await human.close()
    client = await served.qmp()
    for arguments in ({}, {"cpu-index": 1}):
        for line in ("info cpus", "cpu 0", "info cpus"):
            reply = await client.execute(
                "human-monitor-command", {"command-line": line, **arguments}
            )
            answers.append(masked(repr(reply).encode()))
    await client.close()
    return answers


async def test_info_cpus_and_cpu_match_qemu(machine: list[str], short_tmp: Path) -> None:
    transcripts = []
    for binary in (QEMU_BINARY, STANDIN):
        directory = short_tmp / Path(binary).name
        directory.mkdir()
        async for one in served(binary, machine, directory):
            transcripts.append(await conversation(one))
    assert transcripts[1] == transcripts[0]
    if "-smp" in machine:
        assert transcripts[0][2] == b"  CPU #0: thread_id=N\r\n* CPU #1: thread_id=N\r\n"
