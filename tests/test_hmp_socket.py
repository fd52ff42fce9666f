"""The human monitor on a unix socket, driven by a plain socket client (as with socat or nc)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hmp_app import DemoState, StatusInfo, add_demo_commands
from qmonitor import Context, HumanSyntax, Monitor
from qmonitor.server.hmp_session import INPUT_HIGH_WATER, HMPSession, HumanSession
from qmonitor.server.human import serve_human

PROMPT = b"(qemu) "
BANNER = b"QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) "


class HMPClient:
    """Reads QEMU's human monitor output: the echo of a line ends with ESC [ K CR LF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: str) -> HMPClient:
        reader, writer = await asyncio.open_unix_connection(path)
        client = cls(reader, writer)
        assert await client.read_until(PROMPT) == BANNER
        return client

    async def read_until(self, marker: bytes) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(marker), 10)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def output(self) -> bytes:
        """The output of the next line run: what follows its echo, up to the next prompt."""
        await self.read_until(b"\x1b[K\r\n")
        return (await self.read_until(PROMPT)).removesuffix(PROMPT)

    async def run(self, line: str) -> bytes:
        await self.send(line.encode() + b"\n")
        return await self.output()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@dataclass
class Held:
    """The ``hold`` command waits for the test; ``hold_prompt`` suspends its session twice."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: list[HumanSession] = field(default_factory=list)


@dataclass
class Served:
    monitor: Monitor
    path: str
    held: Held

    async def client(self) -> HMPClient:
        return await HMPClient.connect(self.path)


def build_monitor(held: Held) -> Monitor:
    monitor = Monitor("hmp-socket-test")
    monitor.event("STOP")
    add_demo_commands(monitor.registry, DemoState())

    @monitor.command(name="x-hold", hmp="hold", detachable=True)
    async def hold(ctx: Context) -> str:
        """wait until the test opens the gate"""
        ctx.progress(1, 2, "held")
        await held.gate.wait()
        return "released"

    @monitor.command(name="x-hold-prompt", hmp=HumanSyntax(name="hold_prompt"))
    def hold_prompt(ctx: Context) -> None:
        """suspend this session twice more; the test resumes it"""
        assert isinstance(ctx.session, HumanSession)
        ctx.session.suspend()
        ctx.session.suspend()
        held.sessions.append(ctx.session)

    @monitor.command(hmp="x_emit")
    def x_emit() -> None:
        """send a STOP event"""
        monitor.emit("STOP")

    @monitor.command(name="x-crash", hmp="crash")
    def crash() -> None:
        """fail with a bug"""
        raise ZeroDivisionError("boom")

    @monitor.command(name="x-bad-result", hmp="bad_result")
    def bad_result() -> StatusInfo:
        """return what the type hint denies"""
        return "not a StatusInfo"  # type: ignore[return-value]

    return monitor


async def serve(short_tmp: Path, *, interactive: bool) -> AsyncIterator[Served]:
    held = Held()
    monitor = build_monitor(held)
    path = str(short_tmp / "hmp.sock")
    await serve_human(monitor, f"unix:{path},server=on,wait=off", interactive=interactive)
    try:
        yield Served(monitor, path, held)
    finally:
        held.gate.set()
        await monitor.close()


@pytest.fixture
async def served(short_tmp: Path) -> AsyncIterator[Served]:
    async for value in serve(short_tmp, interactive=False):
        yield value


@pytest.fixture
async def served_interactive(short_tmp: Path) -> AsyncIterator[Served]:
    async for value in serve(short_tmp, interactive=True):
        yield value


def typed(text: bytes) -> bytes:
    """QEMU's echo of ``text`` typed in one go on a socket: the line redrawn after each
    character (cursor back, the line so far, erase to the end), then CR LF at the Enter."""
    return b"".join(b"\x1b[D" * n + text[: n + 1] + b"\x1b[K" for n in range(len(text))) + b"\r\n"


async def test_a_line_is_echoed_and_answered_byte_for_byte_as_qemu(served: Served) -> None:
    client = await served.client()
    await client.send(b"info status\n")
    # QEMU 7.2.22, -monitor unix:...,server=on,wait=off, the same line:
    expected = (
        b"i\x1b[K\x1b[Din\x1b[K\x1b[D\x1b[Dinf\x1b[K\x1b[D\x1b[D\x1b[Dinfo\x1b[K"
        + b"".join(b"\x1b[D" * n + b"info status"[: n + 1] + b"\x1b[K" for n in range(4, 11))
        + b"\r\nVM status: running\r\n(qemu) "
    )
    assert expected == typed(b"info status") + b"VM status: running\r\n(qemu) "
    assert await client.read_until(PROMPT) == expected
    await client.close()


async def test_a_bad_line_then_a_good_one(served: Served) -> None:
    client = await served.client()
    await client.send(b"xyz\nstop now\ninfo status\n")
    assert await client.output() == b"unknown command: 'xyz'\r\n"
    assert await client.output() == (
        b"stop|s: extraneous characters at the end of line\r\n"
        b'Try "help stop" for more information\r\n'
    )
    assert await client.output() == b"VM status: running\r\n"
    assert await client.run("balloon 5") == b"Error: No balloon device has been activated\r\n"
    await client.close()


async def test_a_failing_command_prints_an_error_and_the_prompt_returns(served: Served) -> None:
    client = await served.client()
    assert await client.run("crash") == (
        b"Error: Command 'x-crash' failed: ZeroDivisionError: boom\r\n"
    )
    assert (await client.run("bad_result")).startswith(b"Error: Command 'x-bad-result' failed: ")
    assert await client.run("info status") == b"VM status: running\r\n"
    await client.close()


async def test_input_sent_during_a_suspension_runs_after_it(served: Served) -> None:
    client = await served.client()
    other = await served.client()
    await client.send(b"hold\ninfo status\n")  # one write: the server reads both lines at once
    await client.read_until(b"hold\x1b[K\r\n")
    # Suspended: no prompt, the next line not even echoed; other sessions carry on. Their
    # replies also show the server has done all it would do for the client meanwhile.
    assert await other.run("stop") == b""
    assert await other.run("info status") == b"VM status: paused\r\n"
    served.held.gate.set()
    # Nothing between the echo of hold and its result: info status ran only then (after stop).
    assert await client.read_until(PROMPT) == b"released\r\n(qemu) "
    assert await client.read_until(PROMPT) == typed(b"info status") + (
        b"VM status: paused\r\n(qemu) "
    )
    await client.close()
    await other.close()


async def test_suspensions_nest_and_the_prompt_returns_at_zero(served: Served) -> None:
    client = await served.client()
    other = await served.client()
    await client.send(b"hold_prompt\necho one\n")
    await client.read_until(b"hold_prompt\x1b[K\r\n")
    session = served.held.sessions[0]
    assert session.suspend_count == 2
    session.resume()  # one of two: still suspended, for input already read and input to come
    await client.send(b"info status\n")
    assert await other.run("echo sync") == b"sync\r\n"  # the server has read the line since
    assert await other.run("stop") == b""  # a change the line shows if it runs only later
    session.resume()
    # The prompt came back once, at the second resume, and both lines ran only then.
    assert await client.read_until(b"VM status: ") == (
        PROMPT + typed(b"echo one") + b"one\r\n" + PROMPT + typed(b"info status") + b"VM status: "
    )
    assert await client.read_until(PROMPT) == b"paused\r\n(qemu) "
    with pytest.raises(RuntimeError):
        session.resume()
    await client.close()
    await other.close()


async def test_end_of_input_still_answers_pending_lines(served: Served) -> None:
    client = await served.client()
    await client.send(b"hold\necho last\n")
    client.writer.write_eof()
    await client.read_until(b"hold\x1b[K\r\n")
    served.held.gate.set()
    rest = await asyncio.wait_for(client.reader.read(), 10)
    assert rest.startswith(b"released\r\n(qemu) ")
    assert rest.endswith(b"\x1b[K\r\nlast\r\n(qemu) ")
    await client.close()


async def test_detached_command_gives_the_prompt_back_at_once(served: Served) -> None:
    client = await served.client()
    assert await client.run("hold -d") == b""
    assert await client.run("info status") == b"VM status: running\r\n"
    served.held.gate.set()
    assert await client.run("echo still here") == b"still here\r\n"
    await client.close()


async def test_tab_completes_a_value(served: Served) -> None:
    client = await served.client()
    await client.send(b"loadvm pro\t")
    assert (await client.read_until(b"loadvm production \x1b[K")).endswith(
        b"loadvm pro\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D"
        b"loadvm production \x1b[K"
    )
    await client.send(b"\n")
    assert await client.read_until(PROMPT) == b"\r\n(qemu) "
    await client.close()


async def test_interactive_socket_draws_progress_and_shows_events(
    served_interactive: Served,
) -> None:
    client = await served_interactive.client()
    other = await served_interactive.client()
    await client.send(b"hold\n")
    await client.read_until(b"\rhold: [##########----------]  50% held\x1b[K")
    assert (await other.run("x_emit")).endswith(b"] STOP\r\n")  # shown there too
    event_line = await client.read_until(b"\r\n")
    assert event_line.startswith(b"\r\x1b[K[") and event_line.endswith(b"] STOP\r\n")
    assert await client.read_until(b"\x1b[K") == b"\rhold: [##########----------]  50% held\x1b[K"
    served_interactive.held.gate.set()
    assert await client.read_until(PROMPT) == b"\r\x1b[Kreleased\r\n(qemu) "
    await client.send(b"info st")
    await client.read_until(b"info st\x1b[K")
    await other.run("x_emit")
    redraw = await client.read_until(b"(qemu) info st\x1b[K")
    assert redraw.startswith(b"\r\x1b[K[") and b"] STOP\r\n" in redraw
    await client.close()
    await other.close()


async def test_sessions_end_when_the_monitor_closes(served: Served) -> None:
    client = await served.client()
    await client.send(b"hold\n")
    await client.read_until(b"hold\x1b[K\r\n")
    await served.monitor.close()
    assert await asyncio.wait_for(client.reader.read(), 10) == b""
    await client.close()


async def test_tcp_listener_and_connect_out(short_tmp: Path) -> None:
    monitor = build_monitor(Held())
    await serve_human(monitor, "tcp:127.0.0.1:0,server=on,wait=off", interactive=False)
    port = monitor.listeners[-1].bound_address.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    tcp_client = HMPClient(reader, writer)
    assert await tcp_client.read_until(PROMPT) == BANNER
    assert await tcp_client.run("info status") == b"VM status: running\r\n"

    accepted: asyncio.Future[HMPClient] = asyncio.get_running_loop().create_future()
    path = str(short_tmp / "client.sock")
    server = await asyncio.start_unix_server(
        lambda r, w: accepted.set_result(HMPClient(r, w)), path
    )
    await serve_human(monitor, f"unix:{path}", interactive=False)  # reverse mode
    reverse_client = await asyncio.wait_for(accepted, 10)
    assert await reverse_client.read_until(PROMPT) == BANNER
    assert await reverse_client.run("echo reversed") == b"reversed\r\n"
    await tcp_client.close()
    await reverse_client.close()
    server.close()
    await monitor.close()


@pytest.mark.parametrize("from_file", [False, True])
async def test_stdio_without_a_terminal_speaks_the_socket_protocol(
    short_tmp: Path, from_file: bool
) -> None:
    script = b"info status\nslow 0.1\necho done\nquit\n"
    app = str(Path(__file__).with_name("hmp_app.py"))
    if from_file:
        (short_tmp / "script").write_bytes(script)
        stdin = (short_tmp / "script").open("rb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        app,
        str(short_tmp / "qmp.sock"),
        stdin=stdin if from_file else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        if from_file:
            stdin.close()
        else:
            assert process.stdin is not None
            process.stdin.write(script)
        stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert stdout.startswith(BANNER)
    assert b"\x1b[K\r\nVM status: running\r\n(qemu) " in stdout
    assert b"\x1b[K\r\nslow: finished after 0.1 s\r\n(qemu) " in stdout
    assert b"\x1b[K\r\ndone\r\n(qemu) " in stdout


class _RecordingTransport(asyncio.Transport):
    """A transport that keeps what is written, to look at a session without a socket."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def test_a_person_not_reading_gets_no_event_lines_until_they_read_again() -> None:
    """Interactive extras are dropped while the client's buffer is full: output stays bounded."""
    monitor = Monitor("bounded")
    session = HMPSession(monitor, interactive=True)
    transport = _RecordingTransport()
    session.connection_made(transport)
    session.pause_writing()
    before = len(transport.written)
    for _ in range(1000):
        monitor.emit("TEST_EVENT", {"n": 1})
    session.draw_progress("savevm: 50%")
    assert len(transport.written) == before
    session.resume_writing()
    monitor.emit("TEST_EVENT", {"n": 2})
    assert b"TEST_EVENT" in transport.written[before:]
    session.connection_lost(None)


async def test_input_kept_while_suspended_is_bounded() -> None:
    """INPUT_HIGH_WATER: a suspended session stops reading; it reads again once it drains."""
    monitor = Monitor("bounded-input")
    session = HMPSession(monitor)
    transport = _RecordingTransport()
    session.connection_made(transport)
    session.suspend()
    chunk = b"info version\n" * 1000
    while transport.reading:
        session.data_received(chunk)
    assert INPUT_HIGH_WATER < len(session.pending_input) <= INPUT_HIGH_WATER + len(chunk)
    session.resume()
    assert transport.reading
    session.connection_lost(None)
