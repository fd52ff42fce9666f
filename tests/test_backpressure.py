"""A client that never reads (docs/PROTOCOL.md, "Bounded output per client").

The policy under test: once ``WRITE_HIGH_WATER`` bytes wait in the transport a client counts as
not reading; its requests stop running, and what is written to it is held, in order, up to
``HELD_OUTPUT_MAX`` bytes; an event past that disconnects it (``event.dropped`` is traced, a
warning logged). Other clients are never affected, and the memory it costs stays small.

Every amount here is chosen against the kernel's share: a unix socket holds at most the
sender's ``SO_SNDBUF`` (``net.core.wmem_default``) of data for a peer that does not read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest

from conftest import Gate, TestServer, build_test_monitor, wait_until
from qmonitor import Monitor
from qmonitor.server.qmp_session import HELD_OUTPUT_MAX, WRITE_HIGH_WATER
from qmonitor.testing import RawQMPClient, start_qmonitor

EVENTS_PER_ROUND = 2000  # ~200 bytes each: 400 KB per round, well under a reader's high water
MAX_ROUNDS = 40  # ~16 MB in all; the stuck client must be gone long before
KERNEL_SHARE = int(Path("/proc/sys/net/core/wmem_default").read_text())
HELD_FOR_SURE = KERNEL_SHARE + WRITE_HIGH_WATER  # more than this to a stuck client is held
EVENT_LINE_MIN, EVENT_LINE_MAX = 210, 230  # bytes of one emit-numbered TEST_EVENT line
# Held for sure, and yet less than HELD_OUTPUT_MAX held whatever the kernel takes (nothing
# less than WRITE_HIGH_WATER stays in the transport before holding starts).
PAUSE_EVENTS = HELD_FOR_SURE // EVENT_LINE_MIN + 1
assert PAUSE_EVENTS * EVENT_LINE_MAX < HELD_OUTPUT_MAX + WRITE_HIGH_WATER


class Observed:
    """What the monitor's tracer saw."""

    def __init__(self) -> None:
        self.dropped: list[dict[str, object]] = []
        self.completed: list[object] = []

    def tracer(self, name: str, info: Mapping[str, object]) -> None:
        if name == "event.dropped":
            self.dropped.append(dict(info))
        elif name == "command.complete":
            self.completed.append(info["id"])


def add_flood_commands(monitor: Monitor) -> None:
    """Commands whose reply or effect is large or visible to another client."""

    @monitor.command
    def blob(size: int) -> str:
        """A reply of ``size`` bytes for a request of a few."""
        return "x" * size

    @monitor.command(name="emit-oob", allow_oob=True)
    def emit_oob(n: int) -> None:
        """TEST_EVENT ``n``, out of band."""
        monitor.emit("TEST_EVENT", {"n": n})


@pytest.fixture
async def flood_server(short_tmp: Path) -> AsyncIterator[tuple[TestServer, Observed]]:
    observed = Observed()
    gate = Gate()
    monitor = build_test_monitor(gate, tracer=observed.tracer)
    add_flood_commands(monitor)
    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    try:
        yield TestServer(monitor, path, gate), observed
    finally:
        await monitor.close()


async def connect_stuck_client(path: str, enable: bytes = b"") -> socket.socket:
    """A client with a tiny receive buffer that negotiates and then never reads again."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, path)
    received = b""
    while received.count(b"\r\n") < 1:
        received += await loop.sock_recv(sock, 4096)
    arguments = b',"arguments":{"enable":["' + enable + b'"]}' if enable else b""
    await loop.sock_sendall(sock, b'{"execute":"qmp_capabilities"' + arguments + b"}")
    while received.count(b"\r\n") < 2:
        received += await loop.sock_recv(sock, 4096)
    assert received.split(b"\r\n")[1] == b'{"return": {}}'
    return sock


async def drain_until_closed(sock: socket.socket) -> bytes:
    """Read what the kernel still holds for a disconnected client, up to EOF or reset."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(20):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return bytes(data)


async def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    """Read until ``count`` complete lines have arrived; return them."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(30):
        while data.count(b"\r\n") < count:
            chunk = await loop.sock_recv(sock, 1 << 20)
            assert chunk, "disconnected"
            data += chunk
    lines = bytes(data).split(b"\r\n")
    assert lines[count:] == [b""]
    return lines[:count]


async def flood_until(driver: RawQMPClient, done: Callable[[], bool]) -> int:
    """Have ``driver`` emit rounds of events (reading every one) until ``done()``."""
    rounds = 0
    while not done():
        assert rounds < MAX_ROUNDS, f"not done after {rounds} rounds"
        await driver.send_raw(
            json.dumps({"execute": "emit", "arguments": {"count": EVENTS_PER_ROUND}}).encode()
        )
        events = 0
        while True:  # every event reaches the reading client, then the reply
            message = await driver.receive(timeout=30)
            if "event" not in message:
                break
            assert message["event"] == "TEST_EVENT"
            events += 1
        assert message == {"return": {}}
        assert events == EVENTS_PER_ROUND
        rounds += 1
    return rounds


def numbered_events(count: int) -> bytes:
    """An ``emit-numbered`` request for ``count`` events numbered from 0."""
    request = {"execute": "emit-numbered", "arguments": {"first": 0, "count": count}}
    return json.dumps(request).encode()


async def read_replies(sock: socket.socket, count: int) -> list[dict[str, object]]:
    """Read until ``count`` replies have arrived; return them (events skipped)."""
    loop = asyncio.get_running_loop()
    data = b""
    replies: list[dict[str, object]] = []
    async with asyncio.timeout(30):
        while len(replies) < count:
            chunk = await loop.sock_recv(sock, 1 << 20)
            assert chunk, "disconnected"
            *lines, data = (data + chunk).split(b"\r\n")
            messages = [json.loads(line) for line in lines]
            replies += [message for message in messages if "event" not in message]
    assert len(replies) == count and not data
    return replies


async def test_stuck_client_does_not_stall_others_and_is_disconnected(
    flood_server: tuple[TestServer, Observed], caplog: pytest.LogCaptureFixture
) -> None:
    """Flood events while one client never reads: the others keep getting replies, the stuck
    one is disconnected per the policy, and what reached it is a clean prefix."""
    server, observed = flood_server
    caplog.set_level(logging.WARNING, logger="qmonitor.qmp")
    stuck = await connect_stuck_client(server.path)
    driver = await server.client()  # triggers the flood and reads every event
    bystander = await server.client()  # keeps asking while the flood goes on
    try:
        await wait_until(lambda: len(server.monitor.qmp_sessions) == 3)
        bystander_replies = 0

        async def bystander_loop(stop: asyncio.Event) -> None:
            nonlocal bystander_replies
            while not stop.is_set():
                reply = await bystander.execute("add", {"a": bystander_replies, "b": 1}, id="b")
                assert reply == {"return": bystander_replies + 1, "id": "b"}
                bystander_replies += 1

        stop = asyncio.Event()
        bystander_task = asyncio.create_task(bystander_loop(stop))
        rounds = await flood_until(driver, lambda: len(server.monitor.qmp_sessions) < 3)
        stop.set()
        await asyncio.wait_for(bystander_task, 30)

        # the stuck client was disconnected, the two readers were not
        assert len(server.monitor.qmp_sessions) == 2, f"still connected after {rounds} rounds"
        assert bystander_replies > 0
        assert len(observed.dropped) == 1
        assert "is not reading" in caplog.text

        # what reached the stuck client is a clean prefix of the event stream
        data = await drain_until_closed(stuck)
        lines = data.split(b"\r\n")
        complete = lines[:-1]
        assert complete, "the stuck client got no events at all"
        for raw in complete:
            assert json.loads(raw)["event"] == "TEST_EVENT"

        # the readers are still served, and a new client is too
        assert await driver.execute("echo", {"value": "after"}) == {"return": "after"}
        assert await bystander.execute("echo", {"value": "after"}) == {"return": "after"}
        newcomer = await server.client()
        try:
            assert await newcomer.execute("add", {"a": 1, "b": 1}) == {"return": 2}
        finally:
            await newcomer.close()
    finally:
        stuck.close()
        await driver.close()
        await bystander.close()


async def test_stuck_client_is_dropped_once(
    flood_server: tuple[TestServer, Observed], caplog: pytest.LogCaptureFixture
) -> None:
    """One burst of twice what may be held: one warning, one ``event.dropped`` trace."""
    server, observed = flood_server
    caplog.set_level(logging.WARNING, logger="qmonitor.qmp")
    stuck = await connect_stuck_client(server.path)
    driver = await server.client()
    try:
        count = (HELD_FOR_SURE + 2 * HELD_OUTPUT_MAX) // EVENT_LINE_MIN
        await driver.send_raw(numbered_events(count))
        for _ in range(count):
            assert (await driver.receive())["event"] == "TEST_EVENT"
        assert await driver.receive() == {"return": {}}
        await wait_until(lambda: len(server.monitor.qmp_sessions) == 1)
        assert len(observed.dropped) == 1
        assert caplog.text.count("is not reading") == 1
    finally:
        stuck.close()
        await driver.close()


async def test_slow_reader_catches_up_without_loss(
    flood_server: tuple[TestServer, Observed],
) -> None:
    """A client that only pauses (less than HELD_OUTPUT_MAX held) gets every event, in order."""
    server, observed = flood_server
    slow = await connect_stuck_client(server.path)
    driver = await server.client()
    try:
        # more than the kernel and the transport take: some of it is held
        await driver.send_raw(numbered_events(PAUSE_EVENTS))
        assert (await driver.receive_reply()) == {"return": {}}
        lines = await read_lines(slow, PAUSE_EVENTS)
        assert [json.loads(raw)["data"]["n"] for raw in lines] == list(range(PAUSE_EVENTS))
        assert observed.dropped == []
        assert len(server.monitor.qmp_sessions) == 2
    finally:
        slow.close()
        await driver.close()


async def test_negotiating_client_gets_no_events_during_flood(server: TestServer) -> None:
    """A client still negotiating holds nothing for events: its first reply is its own."""
    waiting = await RawQMPClient.connect_unix(server.path)
    driver = await server.client()
    try:
        assert await driver.execute("emit", {"count": 3000}) == {"return": {}}
        await waiting.send_raw(b'{"execute":"qmp_capabilities"}')
        assert await waiting.receive_line() == b'{"return": {}}\r\n'
        await waiting.send_raw(b'{"execute":"echo","arguments":{"value":"first"}}')
        assert await waiting.receive_line() == b'{"return": "first"}\r\n'
    finally:
        await waiting.close()
        await driver.close()


async def test_a_reply_never_overtakes_events_held_for_a_slow_reader(
    flood_server: tuple[TestServer, Observed],
) -> None:
    """Events emitted before a reply reach a client that is not reading before that reply."""
    server, observed = flood_server
    loop = asyncio.get_running_loop()
    slow = await connect_stuck_client(server.path)
    driver = await server.client()
    try:
        await loop.sock_sendall(
            slow, b'{"execute":"wait-gate","arguments":{"name":"held"},"id":"mine"}'
        )
        count = PAUSE_EVENTS
        await driver.send_raw(numbered_events(count))
        assert (await driver.receive_reply()) == {"return": {}}
        server.gate.open("held")
        await wait_until(lambda: "mine" in observed.completed)
        # a round trip: the reply, written once the command completed, is held by now
        assert await driver.execute("echo", {"value": "sync"}) == {"return": "sync"}
        lines = [json.loads(raw) for raw in await read_lines(slow, count + 1)]
        assert lines[-1] == {"return": "held", "id": "mine"}
        assert [line["data"]["n"] for line in lines[:-1]] == list(range(count))
    finally:
        slow.close()
        await driver.close()


@pytest.mark.parametrize("oob", [False, True], ids=["in-band", "oob"])
async def test_a_client_that_does_not_read_its_replies_stops_being_served(
    flood_server: tuple[TestServer, Observed], oob: bool
) -> None:
    """Pipelined requests whose replies are not read: once the transport holds
    WRITE_HIGH_WATER bytes no further request of that client runs, in-band or out of band
    (no reading ahead either), even within one read; when it reads again everything is
    answered, in order."""
    server, _ = flood_server
    loop = asyncio.get_running_loop()
    stuck = await connect_stuck_client(server.path, b"oob" if oob else b"")
    observer = await server.client()
    try:
        size = 2 * (KERNEL_SHARE + WRITE_HIGH_WATER)  # one reply fills the kernel's share
        blob = b'{"execute":"blob","arguments":{"size":%d}}' % size
        if oob:
            marker = b'{"exec-oob":"emit-oob","arguments":{"n":%d}}'
        else:
            marker = b'{"execute":"emit-numbered","arguments":{"first":%d,"count":1}}'
        await loop.sock_sendall(stuck, marker % 0 + blob + blob + marker % 1)
        first = await observer.receive()
        assert first["event"] == "TEST_EVENT" and first["data"]["n"] == 0  # they were read
        # Within that read the session stopped after the first blob: the last marker has not
        # run (a round trip of the observer shows no event came before its reply).
        await observer.send({"execute": "echo", "arguments": {"value": "meanwhile"}})
        assert await observer.receive() == {"return": "meanwhile"}
        # the client reads again: every reply, in order, then the last marker runs
        replies = await read_replies(stuck, 4)
        assert replies == [
            {"return": {}},
            {"return": "x" * size},
            {"return": "x" * size},
            {"return": {}},
        ]
        last = await observer.receive()
        assert last["event"] == "TEST_EVENT" and last["data"]["n"] == 1
    finally:
        stuck.close()
        await observer.close()


def rss_kib(pid: int) -> int:
    """The resident set of process ``pid`` (``VmRSS`` in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def stop_cont_pairs(path: str, pairs: int) -> None:
    """A client running ``pairs`` stop/cont pairs one request at a time (every one an event)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(b'{"execute":"qmp_capabilities"}')
        pending = b""
        replies = 0
        for index in range(2 * pairs + 1):
            if index:
                sock.sendall(b'{"execute":"cont"}' if index % 2 == 0 else b'{"execute":"stop"}')
            while replies <= index:
                data = sock.recv(1 << 16)
                assert data, "the server closed"
                pending += data
                *lines, pending = pending.split(b"\r\n")
                replies += sum(1 for line in lines if line.startswith(b'{"return"'))


async def test_a_client_that_never_reads_costs_little_memory(short_tmp: Path) -> None:
    """The reference machine (uvloop, as run): a negotiated client with a 4 KiB receive buffer
    never reads while another runs stop/cont pairs. Its server grows by under 4 MiB (it grew
    by 9.6 MiB when each event sat in the transport as a write of its own; QEMU 7.2 grows by
    7.9 MiB for 50,000 pairs), and the stuck client is let go."""
    path = str(short_tmp / "qmp.sock")
    state = str(short_tmp / "state")
    async with start_qmonitor(path, "-m", "16M", "--dirty-rate", "0", "--state-dir", state) as vm:
        await asyncio.to_thread(stop_cont_pairs, path, 200)  # warm up
        before = rss_kib(vm.pid)
        stuck = await connect_stuck_client(path)
        try:
            # 16,000 events: well past what is held for it (the growth stops there)
            await asyncio.to_thread(stop_cont_pairs, path, 8000)
            after = rss_kib(vm.pid)
            assert after - before < 4 * 1024, f"grew by {(after - before) / 1024:.1f} MiB"
            await drain_until_closed(stuck)  # it was disconnected
        finally:
            stuck.close()
