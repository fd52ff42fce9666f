"""How a QMP session ends: a client that stops sending is not a client that went away.

QEMU answers every complete request a client sent before its ``shutdown(SHUT_WR)`` (socat,
``nc -N``, scripts) and then closes; only a real disconnect (the peer closed or reset its
socket) loses what was in flight. docs/PROTOCOL.md, "End of input and hang-ups".
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Gate, build_test_monitor, wait_until
from qmonitor import Monitor
from qmonitor.server.human import register_human_monitor_command


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


@pytest.fixture(params=["unix", "tcp"])
async def served(request: pytest.FixtureRequest, short_tmp: Path) -> AsyncIterator[Served]:
    gate = Gate()
    monitor = build_monitor(gate)
    if request.param == "unix":
        path = str(short_tmp / "qmp.sock")
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
