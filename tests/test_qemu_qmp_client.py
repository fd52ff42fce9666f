"""QEMU's own Python client, ``qemu.qmp``, drives our server without noticing.

QMPClient (connect, execute, pipelining by id, events, ExecuteError, OOB), the legacy
synchronous QEMUMonitorProtocol, ``accept()`` mode with our monitor connecting out, and the
``qmp-shell`` script fed from a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import EventListener, ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

from conftest import TestServer, wait_until

BIN = Path(sys.executable).parent


@pytest.fixture
async def qmp(server: TestServer) -> AsyncIterator[QMPClient]:
    client = QMPClient("test")
    await client.connect(server.path)
    try:
        yield client
    finally:
        await client.disconnect()


async def test_connect_and_execute(qmp: QMPClient, server: TestServer) -> None:
    """The greeting parses as QEMU's, negotiation succeeds, commands of every style run."""
    assert qmp.greeting is not None
    version: Any = qmp.greeting.QMP.version
    assert version == server.monitor.version
    assert version["qemu"]["major"] == 7 and version["qemu"]["minor"] == 2
    assert await qmp.execute("echo", {"value": "hello"}) == "hello"
    assert await qmp.execute("add", {"a": 40, "b": 2}) == 42
    assert await qmp.execute("sleep", {"seconds": 0.01}) == "slept 0.01"
    assert await qmp.execute("thread-complete", {"value": 9}) == 9
    assert await qmp.execute("query-version") == version
    commands: Any = await qmp.execute("query-commands")
    names = {c["name"] for c in commands}
    assert {"echo", "add", "sleep", "qmp_capabilities", "query-version"} <= names


async def test_pipelined_gather_of_100_commands(qmp: QMPClient) -> None:
    """100 commands in flight at once (sync, coroutine, completion style): every result back."""
    calls: list[tuple[str, dict[str, Any], object]] = []
    for i in range(100):
        kind = i % 4
        if kind == 0:
            calls.append(("add", {"a": i, "b": 1000}, i + 1000))
        elif kind == 1:
            calls.append(("sleep", {"seconds": 0.05}, "slept 0.05"))
        elif kind == 2:
            calls.append(("thread-complete", {"value": i}, i))
        else:
            calls.append(("echo", {"value": f"v{i}"}, f"v{i}"))
    results = await asyncio.gather(*(qmp.execute(name, args) for name, args, _ in calls))
    assert list(results) == [expected for _, _, expected in calls]


async def test_events_via_listener(qmp: QMPClient) -> None:
    """An EventListener hears TEST_EVENT with QEMU's timestamp shape."""
    listener = EventListener("TEST_EVENT")
    with qmp.listen(listener):
        await qmp.execute("emit", {"count": 3})
        events = [await asyncio.wait_for(listener.get(), 10) for _ in range(3)]
    for event in events:
        assert event["event"] == "TEST_EVENT"
        assert event["data"] == {"payload": "x" * 100}
        timestamp: Any = event["timestamp"]
        assert set(timestamp) == {"seconds", "microseconds"}


async def test_events_via_async_for(qmp: QMPClient) -> None:
    """The default listener, ``async for event in qmp.events``, as the README does."""
    await qmp.execute("emit", {"count": 2})
    seen: list[str] = []
    async with asyncio.timeout(10):
        async for event in qmp.events:
            seen.append(str(event["event"]))
            if len(seen) == 2:
                break
    assert seen == ["TEST_EVENT", "TEST_EVENT"]


async def test_execute_error_classes(qmp: QMPClient) -> None:
    """Failures raise ExecuteError with QEMU's error classes and texts."""
    with pytest.raises(ExecuteError) as failed:
        await qmp.execute("fail-now", {"message": "it failed"})
    assert failed.value.error_class == "GenericError"
    assert str(failed.value) == "it failed"

    with pytest.raises(ExecuteError) as missing:
        await qmp.execute("no-such-command")
    assert missing.value.error_class == "CommandNotFound"
    assert str(missing.value) == "The command no-such-command has not been found"

    with pytest.raises(ExecuteError) as bad_argument:
        await qmp.execute("add", {"a": "one"})
    assert bad_argument.value.error_class == "GenericError"
    assert str(bad_argument.value) == "Invalid parameter type for 'a', expected: integer"

    # the connection is still fine
    assert await qmp.execute("echo", {"value": "ok"}) == "ok"


async def test_oob_via_qemu_qmp(qmp: QMPClient) -> None:
    """qemu.qmp enables the offered oob capability; exec-oob works for allow_oob commands."""
    assert await qmp.execute("quick-oob", oob=True) == "quick"
    with pytest.raises(ExecuteError) as refused:
        await qmp.execute("echo", {"value": "x"}, oob=True)
    assert str(refused.value) == "The command echo does not support OOB"


async def test_async_command_does_not_block_qemu_qmp(qmp: QMPClient, server: TestServer) -> None:
    """qemu.qmp routes by id: a blocked async command does not hold up later ones."""
    blocked = asyncio.ensure_future(qmp.execute("wait-gate", {"name": "g"}))
    assert await qmp.execute("echo", {"value": "meanwhile"}) == "meanwhile"
    assert not blocked.done()
    server.gate.open("g")
    assert await blocked == "g"


def legacy_session(path: str) -> dict[str, Any]:
    """Drive the server with the synchronous legacy client (runs its own event loop)."""
    qmp = QEMUMonitorProtocol(path)
    out: dict[str, Any] = {}
    try:
        out["greeting"] = qmp.connect()
        out["cmd"] = qmp.cmd("echo", value="legacy")
        out["cmd_raw"] = qmp.cmd_raw("add", {"a": 2, "b": 3})
        out["error"] = qmp.cmd_raw("no-such-command")
        out["cmd_obj"] = qmp.cmd_obj(
            {"execute": "echo", "arguments": {"value": "v"}, "id": "seven"}
        )
        qmp.cmd("emit", count=1)
        out["events"] = qmp.get_events(wait=10.0)
    finally:
        qmp.close()
        qmp._aloop.close()  # the loop the shim made for this thread
        asyncio.set_event_loop(None)
    return out


async def test_legacy_qemu_monitor_protocol(server: TestServer) -> None:
    """qemu.qmp.legacy.QEMUMonitorProtocol, the synchronous shim iotests use."""
    out = await asyncio.to_thread(legacy_session, server.path)
    assert out["greeting"]["QMP"]["version"] == server.monitor.version
    assert out["cmd"] == "legacy"
    assert out["cmd_raw"] == {"return": 5}
    assert out["error"] == {
        "error": {
            "class": "CommandNotFound",
            "desc": "The command no-such-command has not been found",
        }
    }
    assert out["cmd_obj"] == {"return": "v", "id": "seven"}
    assert [e["event"] for e in out["events"]] == ["TEST_EVENT"]
    assert out["events"][0]["data"] == {"payload": "x" * 100}


async def test_accept_mode_monitor_connects_out(server: TestServer, short_tmp: Path) -> None:
    """QMPClient listens (``accept()``); our monitor connects out (QEMU's unix:PATH)."""
    path = str(short_tmp / "client.sock")
    qmp = QMPClient("acceptor")
    await qmp.start_server(path)
    try:
        connecting = asyncio.ensure_future(server.monitor.connect(f"unix:{path}"))
        await asyncio.wait_for(qmp.accept(), 10)
        session = await connecting
        assert qmp.greeting is not None
        assert qmp.greeting.QMP.version == server.monitor.version
        assert await qmp.execute("echo", {"value": "reverse"}) == "reverse"
        assert await qmp.execute("sleep", {"seconds": 0.01}) == "slept 0.01"
        listener = EventListener("TEST_EVENT")
        with qmp.listen(listener):
            await qmp.execute("emit")
            event = await asyncio.wait_for(listener.get(), 10)
        assert event["data"] == {"payload": "x" * 100}
    finally:
        await qmp.disconnect()
    await asyncio.wait_for(session.closed, 10)
    assert session not in server.monitor.qmp_sessions


async def run_qmp_shell(socket: str, commands: str, home: Path) -> tuple[int, str, str]:
    """Run ``qmp-shell SOCKET`` with ``commands`` on a pipe; the server keeps running here."""
    env = {**os.environ, "HOME": str(home)}  # qmp-shell writes ~/.qmp-shell_history
    process = await asyncio.create_subprocess_exec(
        str(BIN / "qmp-shell"),
        socket,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(commands.encode()), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_qmp_shell_piped(server: TestServer, short_tmp: Path) -> None:
    """``echo 'CMD args' | qmp-shell PATH`` against the in-process test monitor."""
    code, out, err = await run_qmp_shell(
        server.path, "echo value=hello\nadd a=1 b=2\nno-such-command\n", short_tmp
    )
    assert code == 0, err
    assert "Connected to QEMU 7.2.22" in out
    assert '(QEMU) {"return": "hello"}' in out
    assert '(QEMU) {"return": 3}' in out
    assert (
        '(QEMU) {"error": {"class": "CommandNotFound", '
        '"desc": "The command no-such-command has not been found"}}' in out
    )


async def test_qmp_shell_against_qmonitor_run(short_tmp: Path) -> None:
    """``qmp-shell`` against ``python -m qmonitor run -qmp unix:...,server=on,wait=off``."""
    path = str(short_tmp / "vm.qmp")
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qmonitor",
        "run",
        "-qmp",
        f"unix:{path},server=on,wait=off",
        "-monitor",
        "none",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_until(lambda: os.path.exists(path) or server.returncode is not None, 30)
        assert server.returncode is None, "qmonitor run exited early"
        code, out, err = await run_qmp_shell(path, "query-status\n", short_tmp)
        assert code == 0, err
        assert (
            '(QEMU) {"return": {"status": "running", "singlestep": false, "running": true}}' in out
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()
            await server.wait()
        assert server.stderr is not None
        await server.stderr.read()


async def test_qmp_shell_wrap_launches_qmonitor_run_as_it_would_qemu(short_tmp: Path) -> None:
    """``qmp-shell-wrap qmonitor run``: it adds ``-qmp unix:PATH`` (connect out) and drives us;
    like QEMU, the machine runs on after the shell's input ends, so the last command is quit."""
    env = {**os.environ, "HOME": str(short_tmp)}
    process = await asyncio.create_subprocess_exec(
        str(BIN / "qmp-shell-wrap"),
        str(BIN / "qmonitor"),
        "run",
        "-name",
        "wrapped",
        "-monitor",
        "none",
        "--state-dir",
        str(short_tmp / "state"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=short_tmp,
        start_new_session=True,  # so that a failure can stop the machine it started too
    )
    try:
        stdout, stderr = await asyncio.wait_for(
            process.communicate(b"query-status\nquery-name\nquit\n"), 60
        )
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    out = stdout.decode()
    assert '(QEMU) {"return": {"status": "running", "singlestep": false, "running": true}}' in out
    assert '(QEMU) {"return": {"name": "wrapped"}}' in out, stderr.decode()
