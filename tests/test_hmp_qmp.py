"""``human-monitor-command`` over QMP: the captured text, errors as success text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hmp_app import DemoState, add_demo_commands
from qmonitor import Context, HumanSyntax, Monitor
from qmonitor.server.human import HUMAN_MONITOR_COMMANDS, register_human_monitor_command
from qmonitor.testing import RawQMPClient


@pytest.fixture
async def qmp(short_tmp: Path) -> AsyncIterator[RawQMPClient]:
    monitor = Monitor("hmc-test")
    add_demo_commands(monitor.registry, DemoState())

    @monitor.command(
        name="x-detachable", hmp=HumanSyntax(name="migrate", activity="migration"), detachable=True
    )
    async def detachable(ctx: Context) -> None:
        """runs until cancelled"""
        await asyncio.Event().wait()

    @monitor.command(name="x-later", hmp="later")
    async def later(text: str) -> str:
        """answer after a moment"""
        await asyncio.sleep(0.05)
        return text

    register_human_monitor_command(monitor)
    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    client = await RawQMPClient.connect_unix(path)
    await client.negotiate()
    try:
        yield client
    finally:
        await client.close()
        await monitor.close()


async def hmc(client: RawQMPClient, line: str, **extra: object) -> bytes:
    await client.send(
        {"execute": "human-monitor-command", "arguments": {"command-line": line, **extra}}
    )
    return await client.receive_line()


async def test_output_comes_back_with_crlf_line_ends(qmp: RawQMPClient) -> None:
    # QEMU 7.2: the same line, byte for byte.
    assert await hmc(qmp, "info status") == b'{"return": "VM status: running\\r\\n"}\r\n'
    assert await hmc(qmp, "info snapshots") == (
        b'{"return": "id  tag\\r\\n1   alpha\\r\\n2   beta\\r\\n3   production\\r\\n"}\r\n'
    )
    assert await hmc(qmp, "") == b'{"return": ""}\r\n'
    assert await hmc(qmp, "stop") == b'{"return": ""}\r\n'


async def test_errors_are_text_in_a_successful_reply(qmp: RawQMPClient) -> None:
    # QEMU 7.2 texts.
    assert await hmc(qmp, "xyz") == b'{"return": "unknown command: \'xyz\'\\r\\n"}\r\n'
    assert await hmc(qmp, "stop now") == (
        b'{"return": "stop|s: extraneous characters at the end of line\\r\\n'
        b'Try \\"help stop\\" for more information\\r\\n"}\r\n'
    )
    assert await hmc(qmp, "balloon 5") == (
        b'{"return": "Error: No balloon device has been activated\\r\\n"}\r\n'
    )
    assert await hmc(qmp, "info status\ninfo status") == (
        b'{"return": "status: extraneous characters at the end of line\\r\\n'
        b'Try \\"help info status\\" for more information\\r\\n"}\r\n'
    )


async def test_qmp_errors_are_qemus(qmp: RawQMPClient) -> None:
    assert await hmc(qmp, "info status", **{"cpu-index": 0}) == (
        b'{"error": {"class": "GenericError", '
        b'"desc": "Parameter \'cpu-index\' expects a CPU number"}}\r\n'
    )
    assert await qmp.execute("human-monitor-command", {}) == {
        "error": {"class": "GenericError", "desc": "Parameter 'command-line' is missing"}
    }


async def test_an_async_command_is_waited_for(qmp: RawQMPClient) -> None:
    assert await hmc(qmp, "later done") == b'{"return": "done\\r\\n"}\r\n'


async def test_a_detachable_command_continues_detached(qmp: RawQMPClient) -> None:
    # QEMU 7.2 says this for "migrate URI" through human-monitor-command.
    assert await hmc(qmp, "migrate") == (
        b'{"return": "terminal does not allow synchronous migration, '
        b'continuing detached\\r\\n"}\r\n'
    )
    assert await hmc(qmp, "migrate -d") == b'{"return": ""}\r\n'


async def test_help_and_info_are_human_only(qmp: RawQMPClient) -> None:
    reply = await qmp.execute("query-commands")
    names = {command["name"] for command in reply["return"]}
    assert "human-monitor-command" in names
    assert not names & {"help", "info", "loadvm"}
    text = (await qmp.execute("human-monitor-command", {"command-line": "help"}))["return"]
    assert "help|? [cmd] -- show the help\r\n" in text


def test_the_declared_human_commands_are_those_registered() -> None:
    """The program defers the human monitor's commands by their names
    (``register_human_monitor_command(..., deferred=True)``): the names must be exactly what
    registering them adds, or a lookup would not find a command not yet loaded."""
    monitor = Monitor("names")
    before = {command.name for command in monitor.registry}
    register_human_monitor_command(monitor)
    assert {command.name for command in monitor.registry} - before == HUMAN_MONITOR_COMMANDS
