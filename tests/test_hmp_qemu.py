"""Differential tests: the same bytes to QEMU 7.2's human monitor and to ours, same bytes back.

QEMU runs as ``-machine none`` with ``-monitor unix:...`` and ``-qmp unix:...``; ours serves the
demo commands of ``hmp_app.py``, which share QEMU's names, arguments and texts for the lines
used here (``info status``, ``stop|s``, ``cont|c``, ``balloon``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hmp_app import DemoState, add_demo_commands
from qmonitor import Monitor
from qmonitor.server.human import register_human_monitor_command, serve_human
from qmonitor.testing import RawQMPClient, start_qemu

pytestmark = pytest.mark.qemu

PROMPT = b"(qemu) "

# Each step: bytes sent, and how many prompts end its answer.
CONVERSATION: list[tuple[bytes, int]] = [
    (b"info status\n", 1),
    (b"xyz\n", 1),
    (b"  xyz abc\n", 1),
    (b"info bogus\n", 1),
    (b"help stop\n", 1),
    (b"help info status\n", 1),
    (b"help xyz\n", 1),
    (b"help info xyz\n", 1),
    (b"stop now\n", 1),
    (b"info status extra\n", 1),
    (b"balloon -5\n", 1),
    (b"balloon 1+\n", 1),
    (b"balloon (2\n", 1),
    (b"balloon 5\n", 1),
    (b"s\n", 1),
    (b"info status\n", 1),
    (b"c\r\n", 2),
    (b"infx\x7fo status\n", 1),
    (b"\x1b[A\x1b[A\n", 1),
    (b"info stat\x01\x1b[C\x05us\n", 1),
    (b'help "unterminated\n', 1),
]


async def converse(path: str) -> list[bytes]:
    """Send the conversation; return the banner and each step's answer."""
    reader, writer = await asyncio.open_unix_connection(path)
    answers = [await asyncio.wait_for(reader.readuntil(PROMPT), 10)]
    for data, prompts in CONVERSATION:
        writer.write(data)
        await writer.drain()
        answer = b""
        for _ in range(prompts):
            answer += await asyncio.wait_for(reader.readuntil(PROMPT), 10)
        answers.append(answer)
    writer.close()
    await writer.wait_closed()
    return answers


@pytest.fixture
async def qemu(short_tmp: Path) -> AsyncIterator[tuple[str, str]]:
    qmp_path, hmp_path = str(short_tmp / "qemu.qmp"), str(short_tmp / "qemu.hmp")
    async with start_qemu(qmp_path, "-monitor", f"unix:{hmp_path},server=on,wait=off"):
        while not os.path.exists(hmp_path):
            await asyncio.sleep(0.02)
        yield qmp_path, hmp_path


@pytest.fixture
async def ours(short_tmp: Path) -> AsyncIterator[tuple[str, str]]:
    qmp_path, hmp_path = str(short_tmp / "ours.qmp"), str(short_tmp / "ours.hmp")
    monitor = Monitor("differential")
    add_demo_commands(monitor.registry, DemoState())
    register_human_monitor_command(monitor)
    await monitor.listen(f"unix:{qmp_path},server=on,wait=off")
    await serve_human(monitor, f"unix:{hmp_path},server=on,wait=off", interactive=False)
    try:
        yield qmp_path, hmp_path
    finally:
        await monitor.close()


async def test_socket_monitor_bytes_match_qemu(
    qemu: tuple[str, str], ours: tuple[str, str]
) -> None:
    expected = await converse(qemu[1])
    got = await converse(ours[1])
    assert expected[0] == b"QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) "
    for (sent, _), qemu_answer, our_answer in zip(
        [(b"<connect>", 0), *CONVERSATION], expected, got, strict=True
    ):
        assert our_answer == qemu_answer, sent


async def test_human_monitor_command_replies_match_qemu(
    qemu: tuple[str, str], ours: tuple[str, str]
) -> None:
    requests = [
        {"command-line": "info status"},
        {"command-line": "xyz"},
        {"command-line": ""},
        {"command-line": "stop now"},
        {"command-line": "help stop"},
        {"command-line": "balloon 5"},
        {"command-line": "info status", "cpu-index": 0},
        {"command-line": "info status", "cpu-index": "x"},
        {},
    ]
    replies: list[list[bytes]] = []
    for qmp_path, _ in (qemu, ours):
        client = await RawQMPClient.connect_unix(qmp_path)
        await client.negotiate()
        lines = []
        for arguments in requests:
            await client.send({"execute": "human-monitor-command", "arguments": arguments, "id": 7})
            lines.append(await client.receive_line())
        await client.close()
        replies.append(lines)
    assert replies[0][0] == b'{"return": "VM status: running\\r\\n", "id": 7}\r\n'
    assert replies[1] == replies[0]
