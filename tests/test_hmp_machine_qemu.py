"""Differential tests of the machine's human commands: ``qmonitor run`` against QEMU 7.2.

Both serve ``-monitor unix:...,server=on,wait=off`` and ``-qmp unix:...``; QEMU runs as
``-machine none``. The same lines go to both and the same bytes must come back: migration
settings and their errors, ``migrate`` errors (also while a migration runs), ``info version``,
``quit``, and no event lines in a socket session unless it asks for them (``events on``).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qmonitor.testing import QEMU_BINARY, RawQMPClient, start_server

pytestmark = pytest.mark.qemu

PROMPT = b"(qemu) "
END_OF_ECHO = b"\x1b[K\r\n"  # readline's last redraw of a line, then Enter


@dataclass
class Served:
    """One monitor process: its human monitor and QMP sockets."""

    hmp_path: str
    qmp_path: str

    async def qmp(self) -> RawQMPClient:
        client = await RawQMPClient.connect_unix(self.qmp_path)
        await client.negotiate()
        return client

    async def human(self) -> Human:
        reader, writer = await asyncio.open_unix_connection(self.hmp_path)
        human = Human(reader, writer)
        await human.read_until(PROMPT)  # the banner
        return human


class Human:
    """A person on the human monitor socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read_until(self, marker: bytes) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(marker), 10)

    async def send(self, line: str) -> None:
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()

    async def answer(self, line: str) -> bytes:
        """Everything ``line`` brings back: its echo, its output, the next prompt."""
        await self.send(line)
        return await self.read_until(PROMPT)

    async def output(self, line: str) -> bytes:
        """What ``line`` prints after its echo, up to the next prompt (excluded)."""
        answer = await self.answer(line)
        return answer.rpartition(END_OF_ECHO)[2].removesuffix(PROMPT)

    async def rest(self) -> bytes:
        """Everything until the monitor closes the connection."""
        return await asyncio.wait_for(self.reader.read(), 10)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def qemu(short_tmp: Path) -> AsyncIterator[Served]:
    served = Served(str(short_tmp / "qemu.hmp"), str(short_tmp / "qemu.qmp"))
    command = [QEMU_BINARY, "-machine", "none", "-display", "none", "-nodefaults"]
    command += ["-qmp", f"unix:{served.qmp_path},server=on,wait=off"]
    command += ["-monitor", f"unix:{served.hmp_path},server=on,wait=off"]
    async with start_server(command, served.hmp_path):
        yield served


@pytest.fixture
async def ours(short_tmp: Path) -> AsyncIterator[Served]:
    served = Served(str(short_tmp / "ours.hmp"), str(short_tmp / "ours.qmp"))
    command = [sys.executable, "-m", "qmonitor", "run", "-m", "16M"]
    command += ["--state-dir", str(short_tmp / "state")]
    command += ["-qmp", f"unix:{served.qmp_path},server=on,wait=off"]
    command += ["-monitor", f"unix:{served.hmp_path},server=on,wait=off"]
    async with start_server(command, served.hmp_path):
        yield served


SETTINGS = [
    "migrate_set_parameter nosuch 1",
    "migrate_set_parameter block-bitmap-mapping 1",
    *(
        f"migrate_set_parameter downtime-limit {value}"
        for value in (
            "abc", "-1", "1.5", "1e3", "0x", "0x1.8", '""', "2000001", "2M",
            "18446744073709551615", "18446744073709551616", "16E", "17E", "99x",
            "0x10", "1k", "1.5k", "010", "1.", "1.k", "+5", "5b", "2000000", "0x1k",
        )
    ),
    *(
        f"migrate_set_parameter max-bandwidth {value}"
        for value in (
            "abc", "-1", "1e3", "0x", "1.5b", "8192P", "9223372036854775808B",
            "1.5", "10K", "0x10", "8191P", "1E", "0", "9223372036854775807B", "1.k", "+5",
            "0x1k", "32",
        )
    ),
    "migrate_set_capability nosuch on",
    "migrate_set_capability events maybe",
    "migrate_set_capability events",
    "migrate_set_capability events on extra",
    "migrate_set_capability events on",
    "migrate_set_capability events off",
    "migrate -d nosuch:x",
    "migrate -d tcp:127.0.0.1",
    "migrate -d unix:",
    "migrate nosuch:x",
    "migrate_cancel",
]  # fmt: skip


async def test_migration_settings_and_their_errors_match_qemu(qemu: Served, ours: Served) -> None:
    answers = []
    for served in (qemu, ours):
        human = await served.human()
        answers.append([await human.answer(line) for line in SETTINGS])
        await human.close()
    assert answers[0][0].endswith(b"Error: invalid parameter value: nosuch\r\n(qemu) ")
    for line, qemu_answer, our_answer in zip(SETTINGS, *answers, strict=True):
        assert our_answer == qemu_answer, line


async def test_migrate_while_a_migration_runs_matches_qemu(
    qemu: Served, ours: Served, short_tmp: Path
) -> None:
    # QEMU's migration waits before switching over; ours waits for a destination that took
    # the connection into its backlog and never answers. Both are "in progress".
    qemu_human = await qemu.human()
    await qemu_human.answer("migrate_set_capability pause-before-switchover on")
    await qemu_human.answer('migrate -d "exec:cat > /dev/null"')
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(short_tmp / "silent.sock"))
    silent.listen(1)
    our_human = await ours.human()
    assert await our_human.output(f"migrate -d unix:{short_tmp}/silent.sock") == b""
    for line in ("migrate -d unix:/elsewhere", "migrate unix:/elsewhere"):
        expected = await qemu_human.output(line)
        assert expected == b"Error: There's a migration process in progress\r\n"
        assert await our_human.output(line) == expected, line
    for human in (qemu_human, our_human):
        await human.output("migrate_cancel")
        await human.close()
    silent.close()


async def test_info_version_prints_query_version_as_qemu_does(qemu: Served, ours: Served) -> None:
    for served in (qemu, ours):
        qmp = await served.qmp()
        version = (await qmp.execute("query-version"))["return"]
        await qmp.close()
        triple = version["qemu"]
        human = await served.human()
        assert (
            await human.output("info version")
            == (
                f"{triple['major']}.{triple['minor']}.{triple['micro']}{version['package']}\r\n"
            ).encode()
        )
        await human.close()


async def test_quit_is_followed_by_no_prompt_as_in_qemu(qemu: Served, ours: Served) -> None:
    transcripts = []
    for served in (qemu, ours):
        human = await served.human()
        await human.send("quit")
        transcripts.append(await human.rest())
        await human.close()
    assert transcripts[0].endswith(b"quit\x1b[K\r\n")  # the echo of "quit", then nothing
    assert transcripts[1] == transcripts[0]


async def test_events_reach_a_socket_session_only_when_it_asks(qemu: Served, ours: Served) -> None:
    answers = []
    for served in (qemu, ours):
        human = await served.human()
        qmp = await served.qmp()
        for command in ("stop", "cont", "stop"):
            assert (await qmp.execute(command))["return"] == {}
        answers.append(await human.answer("info status"))  # no STOP/RESUME lines before it
        await qmp.close()
        await human.close()
    assert answers[0].endswith(b"\r\nVM status: paused\r\n(qemu) ")
    assert answers[1] == answers[0]

    human = await ours.human()
    assert await human.output("events") == b"events: off\r\n"
    assert await human.output("events on") == b""
    qmp = await ours.qmp()
    assert (await qmp.execute("cont"))["return"] == {}
    event = await human.read_until(PROMPT)
    assert event.startswith(b"\r\x1b[K[") and event.endswith(b"] RESUME\r\n(qemu) ")
    assert await human.output("events off") == b""
    assert (await qmp.execute("stop"))["return"] == {}
    assert await human.output("info status") == b"VM status: paused\r\n"
    await qmp.close()
    await human.close()


async def test_migrate_through_human_monitor_command_matches_qemu(
    qemu: Served, ours: Served, short_tmp: Path
) -> None:
    """QEMU starts the migration first: an error is printed instead of "continuing detached"."""
    lines = [
        "migrate nosuch:x",
        "migrate -d nosuch:x",
        "migrate -d unix:",
        f"migrate unix:{short_tmp}/nobody.sock",  # starts, then fails to connect
    ]
    replies = []
    for served in (qemu, ours):
        qmp = await served.qmp()
        replies.append(
            [await qmp.execute("human-monitor-command", {"command-line": line}) for line in lines]
        )
        await qmp.close()
    assert replies[0][0] == {
        "return": "Error: Parameter 'uri' expects a valid migration protocol\r\n"
    }
    assert replies[0][3] == {
        "return": "terminal does not allow synchronous migration, continuing detached\r\n"
    }
    assert replies[1] == replies[0]
