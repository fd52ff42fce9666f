"""Benchmark: the Python work per QMP request, in one process, without sockets.

``bench_qmp.py`` measures whole servers, so its figures include system calls and the kernel's
scheduling, and on a shared machine they move by 10-30 % between runs. This one feeds
``query-status`` requests straight into a :class:`~qmonitor.server.qmp_session.QMPSession`
of the machine ``qmonitor run`` serves (its commands registered the same way, on uvloop), with
a transport that only counts what is written, and reports the process CPU time per request:
the framing, request checks, dispatch, handler, reply writing and bookkeeping that issue 8
asks to cut, and nothing else. The best of several repetitions is reported, which makes an A/B
comparison of two versions of the code (alternate them: ``PYTHONPATH=OTHER/src``) reliable to
a few percent where the whole-server figures are not.

Loads: ``sequential`` (one request per read, no id), ``ids`` (one per read, with ids) and
``pipelined`` (128 requests with ids per read, as ``bench_qmp.py``'s 128 in flight delivers
them).

``sockets`` is the per-read path as ``bench_qmp.py``'s 50 clients use it: :data:`CLIENTS`
unix socket pairs, each served by qmonitor's own transport
(:class:`~qmonitor.server.fds.UnixTransport`, as every unix-socket monitor is) and a session,
the client ends driven from the same process with blocking ``send``/``recv``: each round sends
one request on every client, lets the loop run until all are answered, and reads the replies.
The same rounds are run against the floor (``bench_qmp.py --floor``'s protocol on uvloop's own
transport) on the same kind of sockets, so the report gives both per request and their
difference, the transport's and session's extra cost per read (the client's work is in both).

Usage: ``.venv/bin/python bench/bench_request_path.py [--load L] [--profile]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import socket
import tempfile
import time

import orjson
import uvloop

from qmonitor.core.faults import FaultSet
from qmonitor.machine.commands import register_machine_commands
from qmonitor.machine.machine import Machine
from qmonitor.machine.snapshots import SnapshotStore
from qmonitor.server.faults import install_faults
from qmonitor.server.fds import serve_unix_connection
from qmonitor.server.monitor import Monitor
from qmonitor.server.qmp_session import QMPSession

REQUESTS = 25600
REPETITIONS = 7
LOADS = ("sequential", "ids", "pipelined", "sockets")
CLIENTS = 50
QUERY_STATUS = b'{"execute":"query-status"}'


class CountingTransport(asyncio.Transport):
    """Takes what the session writes and counts the writes; reads nothing itself."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def reads_for(load: str) -> list[bytes]:
    """The data of each read: one request per read, or 128 with ids."""
    if load == "sequential":
        return [b'{"execute":"query-status"}'] * REQUESTS
    requests = [b'{"execute":"query-status","id":%d}' % number for number in range(REQUESTS)]
    per_read = 128 if load == "pipelined" else 1
    return [b"".join(requests[i : i + per_read]) for i in range(0, REQUESTS, per_read)]


def monitor_of_the_machine() -> Monitor:
    """The monitor ``qmonitor run`` makes (its commands, faults installed with no rule,
    signatures compiled at first use)."""
    monitor = Monitor("vm0")
    monitor.registry.defer_signatures = True
    install_faults(monitor, FaultSet())
    machine = Machine("vm0", ram_size=128 << 20, start_paused=False, incoming=False, dirty_rate=0)
    snapshots = SnapshotStore(tempfile.mkdtemp(prefix="qm-bench-"))
    register_machine_commands(monitor, machine, snapshots, on_exit=lambda status: None)
    return monitor


def session_of_the_machine() -> tuple[QMPSession, CountingTransport]:
    """A negotiated QMP session of :func:`monitor_of_the_machine`."""
    session = QMPSession(monitor_of_the_machine(), peer="bench")
    transport = CountingTransport()
    session.connection_made(transport)
    session.data_received(b'{"execute":"qmp_capabilities"}')
    return session, transport


class Floor(asyncio.Protocol):
    """``bench_qmp.py``'s floor server protocol: answers ``query-status`` and nothing else."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        out = []
        start = 0
        while (end := buffer.find(b"}", start)) >= 0:
            request = orjson.loads(buffer[start : end + 1])
            start = end + 1
            out.append(b'{"return": {"status": "running", "singlestep": false, "running": true}')
            if "id" in request:
                out.append(b', "id": ' + orjson.dumps(request["id"]))
            out.append(b"}\r\n")
        self.buffer = buffer[start:]
        if out:
            self.transport.write(b"".join(out))


async def line_read(client: socket.socket) -> None:
    """Read from ``client`` (non-blocking) up to the end of a line, letting the loop run."""
    while True:
        try:
            if client.recv(4096).endswith(b"\r\n"):
                return
        except BlockingIOError:
            await asyncio.sleep(0)


async def answered(clients: list[socket.socket], request: bytes) -> None:
    """Send ``request`` on every client, let the loop serve them, read every reply line."""
    for client in clients:
        client.send(request)
    for client in clients:
        await line_read(client)


async def per_read_cost(server: str) -> float:
    """Process CPU seconds per request of ``server`` ("qmonitor" or "floor") with
    :data:`CLIENTS` clients sending one request each per round (best of the repetitions)."""
    loop = asyncio.get_running_loop()
    monitor = monitor_of_the_machine() if server == "qmonitor" else None
    clients = []
    for _ in range(CLIENTS):
        client, served = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        clients.append(client)
        if monitor is not None:
            serve_unix_connection(served, lambda: QMPSession(monitor, peer="bench"))
        else:
            await loop.connect_accepted_socket(Floor, served)
    if monitor is not None:
        for client in clients:  # the greeting
            await line_read(client)
        await answered(clients, b'{"execute":"qmp_capabilities"}')
    rounds = REQUESTS // CLIENTS
    for _ in range(100):  # warm-up
        await answered(clients, QUERY_STATUS)
    best = float("inf")
    for _ in range(REPETITIONS):
        start = time.process_time()
        for _ in range(rounds):
            await answered(clients, QUERY_STATUS)
        best = min(best, time.process_time() - start)
    for client in clients:
        client.close()
    await asyncio.sleep(0.01)
    return best / (rounds * CLIENTS)


def measure_sockets() -> None:
    ours = uvloop.run(per_read_cost("qmonitor"))
    floor = uvloop.run(per_read_cost("floor"))
    print(
        f"sockets: {ours * 1e6:.3f} us CPU per request, floor {floor * 1e6:.3f} us, "
        f"qmonitor - floor {(ours - floor) * 1e6:.3f} us ({CLIENTS} clients, one request per "
        f"read, client side included; best of {REPETITIONS} x {REQUESTS // CLIENTS * CLIENTS:,})"
    )


async def measure(load: str, profile: bool) -> None:
    session, transport = session_of_the_machine()
    reads = reads_for(load)
    for data in reads[:100]:  # warm-up: signatures compiled, writers generated
        session.data_received(data)
    best = float("inf")
    for repetition in range(REPETITIONS):
        profiler = cProfile.Profile() if profile and repetition == REPETITIONS - 1 else None
        if profiler is not None:
            profiler.enable()
        start = time.process_time()
        for data in reads:
            session.data_received(data)
        elapsed = time.process_time() - start
        if profiler is not None:
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            print(text.getvalue())
        else:
            best = min(best, elapsed)
    print(
        f"{load}: {best / REQUESTS * 1e6:.3f} us CPU per request "
        f"(best of {REPETITIONS - profile} x {REQUESTS:,} requests, {transport.writes:,} writes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", choices=LOADS, action="append", help="default: all three")
    parser.add_argument("--profile", action="store_true", help="cProfile the last repetition")
    options = parser.parse_args()
    for load in options.load or LOADS:
        if load == "sockets":
            measure_sockets()
        else:
            uvloop.run(measure(load, options.profile))


if __name__ == "__main__":
    main()
