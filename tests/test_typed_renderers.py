"""Human renderers get the handler's own return value, and mypy holds them to its type.

A renderer (``human=``) is typed ``HumanRenderer[R]``, ``R`` the handler's return type: it is
called with what the handler returned (a dataclass instance here), however the handler
delivered it, while QMP still sends the JSON encoded from it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qmonitor import Completion, Monitor, register_human_monitor_command, serve_human
from qmonitor.testing import RawQMPClient

ROOT = Path(__file__).resolve().parent.parent
PROMPT = b"(qemu) "


@dataclass(frozen=True, slots=True)
class Disk:
    name: str
    size_bytes: int


def describe(disk: Disk) -> str:
    """Uses what only the dataclass has: attributes, its Python name, its type."""
    return f"{type(disk).__name__} {disk.name}: {disk.size_bytes} bytes\n"


def describe_nothing(nothing: None) -> str:
    return f"nothing to show: {nothing!r}\n"


@dataclass
class Served:
    hmp_path: str
    qmp: RawQMPClient


@pytest.fixture
async def served(short_tmp: Path) -> AsyncIterator[Served]:
    monitor = Monitor("typed-renderers")

    @monitor.command(name="x-disk-sync", hmp="disk_sync", human=describe)
    def disk_sync() -> Disk:
        """a sync handler"""
        return Disk("sync0", 512)

    @monitor.command(name="x-disk-async", hmp="disk_async", human=describe)
    async def disk_async() -> Disk:
        """a coroutine handler"""
        await asyncio.sleep(0)
        return Disk("async0", 1024)

    @monitor.command(name="x-disk-completion", hmp="disk_completion", human=describe)
    def disk_completion(complete: Completion[Disk]) -> None:
        """a completion-style handler, completed from another thread"""
        threading.Thread(target=complete.succeed, args=(Disk("thread0", 2048),)).start()

    @monitor.command(name="x-nothing", hmp="nothing", human=describe_nothing)
    def nothing() -> None:
        """no result: QMP sends {}, the renderer gets None"""

    register_human_monitor_command(monitor)
    hmp_path = str(short_tmp / "hmp.sock")
    qmp_path = str(short_tmp / "qmp.sock")
    await serve_human(monitor, f"unix:{hmp_path},server=on,wait=off", interactive=False)
    await monitor.listen(f"unix:{qmp_path},server=on,wait=off")
    qmp = await RawQMPClient.connect_unix(qmp_path)
    await qmp.negotiate()
    try:
        yield Served(hmp_path, qmp)
    finally:
        await qmp.close()
        await monitor.close()


async def run_lines(path: str, *lines: str) -> list[bytes]:
    """Each line's output on a human monitor socket: what follows its echo, up to the prompt."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        await asyncio.wait_for(reader.readuntil(PROMPT), 10)  # the banner
        outputs = []
        for line in lines:
            writer.write(line.encode() + b"\n")
            await asyncio.wait_for(reader.readuntil(b"\x1b[K\r\n"), 10)  # the echo's end
            outputs.append((await asyncio.wait_for(reader.readuntil(PROMPT), 10))[: -len(PROMPT)])
        return outputs
    finally:
        writer.close()
        await writer.wait_closed()


async def test_renderers_get_the_handlers_dataclass_over_a_human_socket(served: Served) -> None:
    assert await run_lines(
        served.hmp_path, "disk_sync", "disk_async", "disk_completion", "nothing"
    ) == [
        b"Disk sync0: 512 bytes\r\n",
        b"Disk async0: 1024 bytes\r\n",
        b"Disk thread0: 2048 bytes\r\n",
        b"nothing to show: None\r\n",
    ]


async def test_human_monitor_command_renders_the_same_value(served: Served) -> None:
    await served.qmp.send(
        {"execute": "human-monitor-command", "arguments": {"command-line": "disk_async"}}
    )
    assert await served.qmp.receive_line() == b'{"return": "Disk async0: 1024 bytes\\r\\n"}\r\n'


async def test_qmp_still_sends_the_encoded_json(served: Served) -> None:
    for command, name, size in (
        ("x-disk-sync", "sync0", 512),
        ("x-disk-async", "async0", 1024),
        ("x-disk-completion", "thread0", 2048),
    ):
        await served.qmp.send({"execute": command})
        assert await served.qmp.receive_line() == (
            b'{"return": {"name": "%s", "size-bytes": %d}}\r\n' % (name.encode(), size)
        )
    await served.qmp.send({"execute": "x-nothing"})
    assert await served.qmp.receive_line() == b'{"return": {}}\r\n'


MYPY_SNIPPET = """\
from dataclasses import dataclass

from qmonitor import Completion, Monitor


@dataclass
class Disk:
    name: str


@dataclass
class Network:
    name: str


def describe(disk: Disk) -> str:
    return disk.name


monitor = Monitor()


@monitor.command(human=describe)
def matching() -> Disk:
    return Disk("d")


@monitor.command(human=describe)
async def matching_async() -> Disk:
    return Disk("d")


@monitor.command(human=describe)  # MISMATCH
def mismatched() -> Network:
    return Network("n")


@monitor.command(human=describe)  # MISMATCH
async def mismatched_async() -> Network:
    return Network("n")


def network() -> Network:
    return Network("n")


@monitor.command(human=describe)
def completed(complete: Completion[Disk]) -> None:
    complete.succeed(Disk("d"))


@monitor.command(human=describe)  # NOT CHECKED: the result type is in a parameter
def completed_mismatched(complete: Completion[Network]) -> None:
    complete.succeed(Network("n"))


monitor.registry.register(network, name="x-network", human=describe)  # MISMATCH
"""


def test_mypy_rejects_a_renderer_that_does_not_take_the_handlers_return_type(
    tmp_path: Path,
) -> None:
    snippet = tmp_path / "renderers.py"
    snippet.write_text(MYPY_SNIPPET)
    # From the project root: its mypy configuration (strict) and its cache of the package.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(snippet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    lines = MYPY_SNIPPET.splitlines()
    expected = {number for number, text in enumerate(lines, 1) if text.endswith("# MISMATCH")}
    reported = {int(line.split(":")[1]) for line in errors}
    assert result.returncode == 1, result.stdout + result.stderr
    # A completion-style handler's result type is its Completion[T] parameter's, which mypy
    # cannot pick out of a signature: its renderer is not checked (docs/HMP.md, "Rendering").
    assert reported == expected, textwrap.indent(result.stdout, "  ")
