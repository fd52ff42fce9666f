"""How a QMP session ends: a client that stops sending is not a client that went away.

QEMU answers every complete request a client sent before its ``shutdown(SHUT_WR)`` (socat,
``nc -N``, scripts) and then closes; only a real disconnect (the peer closed or reset its
socket) loses what was in flight. docs/PROTOCOL.md, "End of input and hang-ups".
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Gate, build_test_monitor, wait_until
from qmonitor import Monitor
from qmonitor.server.human import register_human_monitor_command
from qmonitor.testing import start_qemu, start_qmonitor


@dataclass
class Served:
    monitor: Monitor
    gate: Gate
    family: socket.AddressFamily
    address: str | tuple[str, int]

    async def connect(self) -> socket.socket:
        """A raw non-blocking client that has read the greeting and negotiated."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, self.address)
        await loop.sock_sendall(sock, b'{"execute":"qmp_capabilities"}')
        received = b""
        while received.count(b"\r\n") < 2:
            received += await loop.sock_recv(sock, 65536)
        assert received.split(b"\r\n")[1:] == [b'{"return": {}}', b""]
        return sock


def hang_up(sock: socket.socket) -> None:
    """Close for good: on TCP with a reset (SO_LINGER 0), which the server sees at once."""
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def receive_lines(sock: socket.socket, count: int) -> list[bytes]:
    """The next ``count`` lines (no partial line is left unread: callers ask for whole replies)."""
    loop = asyncio.get_running_loop()
    received = b""
    async with asyncio.timeout(10):
        while received.count(b"\r\n") < count:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, f"end of output after {received!r}"
            received += chunk
    lines = received.split(b"\r\n")
    assert lines[count:] == [b""], received
    return lines[:count]


def build_monitor(gate: Gate) -> Monitor:
    monitor = build_test_monitor(gate)

    @monitor.command(name="x-hold", hmp="hold")
    async def hold(name: str) -> str:
        """A human command that waits for the test's gate (records a cancellation)."""
        gate.started.append(name)
        try:
            await gate.get(name).wait()
        except asyncio.CancelledError:
            gate.cancelled.append(name)
            raise
        return name

    register_human_monitor_command(monitor)
    return monitor


@contextlib.asynccontextmanager
async def serving(directory: Path, family: str) -> AsyncIterator[Served]:
    """The test monitor listening on a unix socket in ``directory`` or on local TCP."""
    gate = Gate()
    monitor = build_monitor(gate)
    if family == "unix":
        path = str(directory / "qmp.sock")
        await monitor.listen(f"unix:{path},server=on,wait=off")
        served = Served(monitor, gate, socket.AF_UNIX, path)
    else:
        listener = await monitor.listen("tcp:127.0.0.1:0,server=on,wait=off")
        bound = listener.bound_address
        served = Served(monitor, gate, socket.AF_INET, (bound.host, bound.port))
    try:
        yield served
    finally:
        await monitor.close()


@pytest.fixture(params=["unix", "tcp"])
async def served(request: pytest.FixtureRequest, short_tmp: Path) -> AsyncIterator[Served]:
    async with serving(short_tmp, request.param) as served:
        yield served


async def test_a_disconnect_during_human_monitor_command_logs_nothing(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """The HMP command behind a cancelled human-monitor-command is cancelled too, and its
    outcome, which nobody waits for any more, is not reported as never retrieved."""
    caplog.set_level(logging.DEBUG)
    client = await served.connect()
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(
        client,
        b'{"execute":"human-monitor-command","arguments":{"command-line":"hold h"},"id":1}',
    )
    await wait_until(lambda: served.gate.started == ["h"])
    hang_up(client)
    await wait_until(lambda: served.gate.cancelled == ["h"])
    await wait_until(lambda: not served.monitor.qmp_sessions)
    # a round trip on a new connection: whatever the cancellation scheduled has run
    other = await served.connect()
    await loop.sock_sendall(other, b'{"execute":"echo","arguments":{"value":"x"}}')
    assert await receive_lines(other, 1) == [b'{"return": "x"}']
    other.close()
    gc.collect()  # a future with an exception nobody saw reports it when it is collected
    assert "never retrieved" not in caplog.text
    assert "Traceback" not in caplog.text


async def test_half_close_answers_every_complete_request(served: Served) -> None:
    """Requests sent before ``shutdown(SHUT_WR)`` are all answered, slow ones included, with
    and without ids; a partial message at the end is dropped as QEMU does; then the server
    closes. QEMU 7.2 answers all of them too."""
    await check_half_close_answers_every_complete_request(served)


async def check_half_close_answers_every_complete_request(served: Served) -> None:
    client = await served.connect()
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(
        client,
        b'{"execute":"tracked-wait","arguments":{"name":"a"}}'  # id-less: the rest waits
        b'{"execute":"echo","arguments":{"value":"after a"}}'
        b'{"execute":"tracked-wait","arguments":{"name":"b"},"id":1}'
        b'{"execute":"add","arguments":{"a":1,"b":2},"id":2}'
        b'{"execute":"echo","argu',
    )
    client.shutdown(socket.SHUT_WR)
    await wait_until(lambda: served.gate.started == ["a"])
    served.gate.open("a")
    assert await receive_lines(client, 3) == [
        b'{"return": "a"}',
        b'{"return": "after a"}',
        b'{"return": 3, "id": 2}',
    ]
    await wait_until(lambda: served.gate.started == ["a", "b"])
    served.gate.open("b")
    assert await receive_lines(client, 1) == [b'{"return": "b", "id": 1}']
    assert await loop.sock_recv(client, 1) == b""  # then the server closes
    assert served.gate.cancelled == []
    await wait_until(lambda: not served.monitor.qmp_sessions)
    client.close()


async def test_nothing_in_flight_at_half_close_closes_at_once(served: Served) -> None:
    client = await served.connect()
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(client, b'{"execute":"echo","arguments":{"value":"v"}}')
    client.shutdown(socket.SHUT_WR)
    assert await receive_lines(client, 1) == [b'{"return": "v"}']
    assert await loop.sock_recv(client, 1) == b""
    client.close()


async def test_a_hang_up_after_a_half_close_cancels(served: Served) -> None:
    """A client that half-closed and then really goes away loses what was in flight, and
    nothing queued behind it starts."""
    await check_a_hang_up_after_a_half_close_cancels(served)


async def check_a_hang_up_after_a_half_close_cancels(served: Served) -> None:
    client = await served.connect()
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(
        client,
        b'{"execute":"tracked-wait","arguments":{"name":"a"}}'
        b'{"execute":"count-start","arguments":{"name":"after"}}',
    )
    client.shutdown(socket.SHUT_WR)
    await wait_until(lambda: served.gate.started == ["a"])
    hang_up(client)
    await wait_until(lambda: served.gate.cancelled == ["a"])
    await wait_until(lambda: not served.monitor.qmp_sessions)
    assert served.gate.started == ["a"]


async def test_a_tcp_close_is_seen_when_its_reply_is_written(short_tmp: Path) -> None:
    """TCP cannot tell a close from a half-close until data reaches the peer: the reply that
    does is refused with a reset, and what runs after it is cancelled."""
    gate = Gate()
    monitor = build_monitor(gate)
    listener = await monitor.listen("tcp:127.0.0.1:0,server=on,wait=off")
    bound = listener.bound_address
    served = Served(monitor, gate, socket.AF_INET, (bound.host, bound.port))
    try:
        client = await served.connect()
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(
            client,
            b'{"execute":"tracked-wait","arguments":{"name":"a"}}'
            b'{"execute":"tracked-wait","arguments":{"name":"b"}}',
        )
        client.close()  # a FIN, as after shutdown(SHUT_WR)
        await wait_until(lambda: gate.started == ["a"])
        gate.open("a")  # its reply reaches a closed socket: reset
        await wait_until(lambda: not monitor.qmp_sessions)
        await wait_until(lambda: gate.running == 0)
        assert gate.cancelled in ([], ["b"])  # cancelled before or after it started
    finally:
        await monitor.close()


def replies(output: bytes) -> list[dict[str, object]]:
    """The messages of ``output`` that are not events (nor the greeting)."""
    messages = [json.loads(line) for line in output.split(b"\r\n") if line]
    return [m for m in messages if "event" not in m and "QMP" not in m]


async def test_savevm_through_a_half_closed_socket_is_answered_and_kept(
    short_tmp: Path,
) -> None:
    """The reference machine: ``savevm`` through human-monitor-command, then SHUT_WR (what
    ``socat`` does at the end of its input). The snapshot is saved and every request is
    answered, as QEMU does, and the process logs nothing."""
    path = str(short_tmp / "qmp.sock")
    state = str(short_tmp / "state")
    stderr_path = str(short_tmp / "stderr")
    loop = asyncio.get_running_loop()
    async with start_qmonitor(
        path, "-m", "16M", "--dirty-rate", "64M", "--state-dir", state, stderr_path=stderr_path
    ):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, path)
        await loop.sock_sendall(
            sock,
            b'{"execute":"qmp_capabilities"}'
            b'{"execute":"human-monitor-command","arguments":{"command-line":"savevm s1"}}'
            b'{"execute":"human-monitor-command","arguments":{"command-line":"info snapshots"}}'
            b'{"execute":"query-status"}',
        )
        sock.shutdown(socket.SHUT_WR)
        output = b""
        async with asyncio.timeout(30):
            while chunk := await loop.sock_recv(sock, 65536):
                output += chunk
        sock.close()
        answered = replies(output)
        assert answered[:2] == [{"return": {}}, {"return": ""}]
        assert " s1 " in str(answered[2]["return"])
        assert answered[3:] == [
            {"return": {"status": "running", "singlestep": False, "running": True}}
        ]
    start_up = ("qmonitor: QMP socket ", "qmonitor: connect with: ", "qmonitor: snapshots in ")
    lines = Path(stderr_path).read_text().splitlines()
    assert [line for line in lines if not line.startswith(start_up)] == [
        "qmonitor: terminating on signal 15"
    ]


async def test_stdio_end_of_input_answers_everything_and_events_go_on(short_tmp: Path) -> None:
    """``-qmp stdio``: at the end of standard input every request is answered (a savevm
    included); as in QEMU the session goes on, so the SHUTDOWN of a later SIGTERM still
    reaches standard output."""
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "qmonitor", "run", "-name", "stdio-end", "-m", "16M"],
        *["--dirty-rate", "64M", "--state-dir", str(short_tmp), "-qmp", "stdio"],
        *["-monitor", "none"],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(
            b'{"execute":"qmp_capabilities"}'
            b'{"execute":"human-monitor-command","arguments":{"command-line":"savevm s1"}}'
            b'{"execute":"query-status","id":1}'
        )
        process.stdin.close()
        output = b""
        async with asyncio.timeout(30):
            while len(replies(output)) < 3:
                output += await process.stdout.readuntil(b"\r\n")
        assert replies(output) == [
            {"return": {}},
            {"return": ""},
            {"return": {"status": "running", "singlestep": False, "running": True}, "id": 1},
        ]
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rest, errors = await process.communicate()
        assert b'"event": "SHUTDOWN"' in rest, (rest, errors)
        assert process.returncode == 0
        assert (short_tmp / "s1.qmsnap").exists()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def half_closed_transcript(path: str) -> bytes:
    """Send requests, shut down the sending side, return everything after the greeting."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, path)
        await loop.sock_sendall(
            sock,
            b'{"execute":"qmp_capabilities"}{"execute":"query-status"}'
            b'{"execute":"query-status","id":1}{"execute":"nosuch"}\n'
            b'{"execute":"human-monitor-command","arguments":{"command-line":"info status"}}'
            b'{"execute":"query-status","arg',
        )
        sock.shutdown(socket.SHUT_WR)
        output = b""
        async with asyncio.timeout(30):
            while chunk := await loop.sock_recv(sock, 65536):
                output += chunk
    return output.split(b"\r\n", 1)[1]


@pytest.mark.qemu
async def test_half_close_is_answered_as_qemu_answers_it(short_tmp: Path) -> None:
    async with start_qemu(str(short_tmp / "qemu.sock")):
        expected = await half_closed_transcript(str(short_tmp / "qemu.sock"))
    path = str(short_tmp / "qmonitor.sock")
    async with start_qmonitor(path, "-m", "16M", "--state-dir", str(short_tmp / "state")):
        assert await half_closed_transcript(path) == expected
    assert expected.count(b"\r\n") == 5


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_end_of_input_and_hang_ups_on_uvloop(short_tmp: Path, family: str) -> None:
    """The same on uvloop, the loop ``qmonitor run`` uses: its transports keep a half-closed
    connection open, and its sockets and readers serve the hang-up watch."""
    uvloop = pytest.importorskip("uvloop")

    async def scenarios() -> None:
        async with serving(short_tmp, family) as served:
            await check_half_close_answers_every_complete_request(served)
        async with serving(short_tmp, family) as served:
            await check_a_hang_up_after_a_half_close_cancels(served)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenarios())
