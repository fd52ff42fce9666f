"""Differential: passed descriptors, the same conversation with real QEMU 7.2 and ``qmonitor run``.

Each scenario sends the same requests, with the same descriptors attached, to
``qemu-system-x86_64 -machine none`` and to ``qmonitor run``, and compares the reply lines byte
for byte once the descriptor numbers are masked (each server numbers its own descriptors:
``"fd": 12`` becomes ``"fd": #1`` for the first number seen, and so on). Covered: ``getfd``,
``closefd``, ``add-fd``, ``remove-fd``, ``query-fdsets`` (errors, reply shapes, member order, the
order of sets and of their descriptors), the fd sets kept while the guest is paused and
cleaned when the last client leaves while it runs, names kept across clients, the
``human-monitor-command`` spellings, and the ``fd:`` migration URI errors.

Not compared: ``migrate-incoming fd:N`` with N not open, which QEMU 7.2 accepts and then waits
on forever, where qmonitor refuses it (docs/STANDIN.md, "File descriptors").
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from conftest import wait_until
from fd_client import FdClient, holds, open_sockets
from qmonitor.testing import start_qemu, start_server

pytestmark = pytest.mark.qemu

Transcript = list[bytes]
Scenario = Callable[[str, int, Transcript], Awaitable[None]]

_FD_NUMBER = re.compile(rb'"fd": (\d+)')


def masked(transcript: Transcript) -> Transcript:
    """The lines with descriptor numbers replaced by their order of first appearance."""
    numbers: dict[bytes, int] = {}

    def mask(match: re.Match[bytes]) -> bytes:
        number = numbers.setdefault(match.group(1), len(numbers) + 1)
        return b'"fd": #%d' % number

    return [_FD_NUMBER.sub(mask, line) for line in transcript]


@contextlib.contextmanager
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    try:
        yield read_end, write_end
    finally:
        os.close(read_end)
        os.close(write_end)


class Recorder:
    """A client that records every reply line (events left out)."""

    def __init__(self, client: FdClient, transcript: Transcript) -> None:
        self.client = client
        self.transcript = transcript

    @classmethod
    async def connect(cls, path: str, transcript: Transcript) -> Recorder:
        return cls(await FdClient.connect(path), transcript)

    async def __call__(self, command: str, fds: tuple[int, ...] = (), **arguments: object) -> None:
        self.client.request(command, fds, **arguments)
        await self.record()

    async def record(self) -> None:
        while b'"event"' in (line := await self.client.line()):
            pass
        self.transcript.append(line)


async def commands(path: str, pid: int, transcript: Transcript) -> None:
    """Every command's errors and replies, on a running guest."""
    send = await Recorder.connect(path, transcript)
    with pipe() as (read_end, write_end):
        await send("getfd", fdname="x")
        await send("getfd", (read_end,), fdname="1x")
        await send("getfd", (read_end,), fdname="")
        await send("closefd", fdname="")
        await send("getfd", (read_end, write_end), fdname="a")
        await send("closefd", fdname="a")
        await send("closefd", fdname="a")
        await send("getfd")
        await send("add-fd")
        await send("add-fd", (read_end,))
        await send("add-fd", (write_end,), fdset_id=5, opaque="hello")
        await send("add-fd", (read_end,), fdset_id=5)
        await send("add-fd", (read_end,))
        await send("add-fd", (read_end,), fdset_id=-1)
        await send("add-fd", (read_end,), fdset_id="x")
        await send("query-fdsets")
        await send("remove-fd", fdset_id=7)
        await send("remove-fd", fdset_id=5, fd=99999)
        await send("remove-fd", fdset_id=1)
        await send("remove-fd")
        await send("query-fdsets")
        await send("remove-fd", fdset_id=5)
        await send("query-fdsets")
        # qemu.qmp's send_fd_scm: a space carries the descriptor, the command follows.
        send.client.send(b" ", (write_end,))
        await send("getfd", fdname="b")
        await send("migrate", uri="fd:nope")
        await send("query-migrate")
        await send("migrate", uri="fd:5")
        await send("migrate", uri="fd:")
        await send("migrate", uri="foo:bar")
        await send("query-migrate")
        await send("migrate-incoming", uri="fd:b")
        hmp = "human-monitor-command"
        await send(hmp, (read_end,), command_line="getfd z")
        await send(hmp, command_line="closefd b")
        await send(hmp, command_line="help getfd")
        await send(hmp, command_line="help closefd")
        await send(hmp, command_line="getfd")
        await send(hmp, command_line="migrate fd:b")
        await send("closefd", fdname="b")
    send.client.close()


async def fdsets_while_paused(path: str, pid: int, transcript: Transcript) -> None:
    """With ``-S``: nothing is closed, removed or not, until a clean-up finds the guest running."""
    idle = open_sockets(pid)
    send = await Recorder.connect(path, transcript)
    with pipe() as (read_end, write_end):
        await send("add-fd", (read_end,), fdset_id=3)
        await send("add-fd", (write_end,), fdset_id=3)
        await send("remove-fd", fdset_id=3)
        await send("query-fdsets")
        send.client.close()
        # The client is gone (its socket closed), the set kept (both ends of the pipe held).
        await wait_until(lambda: open_sockets(pid) == idle and holds(pid, read_end) == 2)
    send = await Recorder.connect(path, transcript)
    await send("query-fdsets")
    await send("cont")
    await send("query-fdsets")
    await send("remove-fd", fdset_id=3)
    await send("query-fdsets")
    send.client.close()


async def cleanup_when_the_last_client_leaves(path: str, pid: int, transcript: Transcript) -> None:
    """Running, no client left: the fd sets are closed; the monitor's names are kept."""
    idle = open_sockets(pid)
    send = await Recorder.connect(path, transcript)
    with pipe() as (read_end, write_end):
        await send("add-fd", (read_end,), opaque="r")
        await send("getfd", (write_end,), fdname="keep")
        send.client.close()
        # The client is gone, its fd set closed; only "keep" (one end) is left.
        await wait_until(lambda: open_sockets(pid) == idle and holds(pid, read_end) == 1)
    send = await Recorder.connect(path, transcript)
    await send("query-fdsets")
    await send("closefd", fdname="keep")
    send.client.close()


async def incoming_errors(path: str, pid: int, transcript: Transcript) -> None:
    """``-incoming defer``: ``migrate-incoming fd:`` texts (monitor_fd_param, qemu_parse_fd)."""
    send = await Recorder.connect(path, transcript)
    for uri in ("fd:1x", "fd:", "fd:-1", "fd:x", "fd:99999999999"):
        await send("migrate-incoming", uri=uri)
    await send("query-migrate")
    send.client.close()


@contextlib.asynccontextmanager
async def qmonitor(path: str, *options: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "qmonitor", "run", "-name", "vm0", "-m", "16M"]
    command += ["-qmp", f"unix:{path},server=on,wait=off", "-monitor", "none", *options]
    async with start_server(command, path) as process:
        yield process


@pytest.mark.parametrize(
    ("scenario", "options"),
    [
        (commands, ()),
        (fdsets_while_paused, ("-S",)),
        (cleanup_when_the_last_client_leaves, ()),
        (incoming_errors, ("-incoming", "defer")),
    ],
    ids=["commands", "paused", "last-client", "incoming"],
)
async def test_same_replies_as_qemu(
    scenario: Scenario, options: tuple[str, ...], short_tmp: Path
) -> None:
    transcripts: list[Transcript] = []
    for server in (start_qemu, qmonitor):
        path = str(short_tmp / f"{server.__name__}.sock")
        transcript: Transcript = []
        async with server(path, *options) as process:
            await scenario(path, process.pid, transcript)
        transcripts.append(masked(transcript))
    qemu, ours = transcripts
    assert qemu
    assert ours == qemu
