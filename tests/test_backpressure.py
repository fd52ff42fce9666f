"""A client that never reads while events flood (docs/PROTOCOL.md, "Bounded output").

The policy under test: above ``WRITE_HIGH_WATER`` buffered bytes a client counts as not
reading; events for it wait in a backlog of at most ``EVENT_BACKLOG_MAX``; when that overflows
the client is disconnected and ``event.dropped`` is traced. Other clients are never affected.
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
from qmonitor.core.events import Event
from qmonitor.server.qmp_session import EVENT_BACKLOG_MAX, WRITE_HIGH_WATER, QMPSession
from qmonitor.testing import RawQMPClient

EVENTS_PER_ROUND = 2000  # ~200 bytes each: 400 KB per round, well under a reader's high water
MAX_ROUNDS = 40  # ~16 MB in all; the stuck client must be gone long before


class Observed:
    """What the monitor's tracer and event listener saw, and the sessions' transports.

    A transport whose write buffer goes above ``WRITE_HIGH_WATER`` tells its protocol to stop
    writing (asyncio's ``pause_writing``) until its client reads: every event broadcast after
    that, while the buffer stays up, is one the session holds back rather than writes.
    """

    def __init__(self) -> None:
        self.traces: list[tuple[str, dict[str, object]]] = []
        self.held = 0  # events broadcast while some session's buffer was above the high water
        self.max_write_buffer = 0
        self.sessions: set[QMPSession] = set()
        self._full: set[QMPSession] = set()

    def tracer(self, name: str, info: Mapping[str, object]) -> None:
        if name == "event.dropped":
            self.traces.append((name, dict(info)))

    def after_event(self, _: Event) -> None:
        """Runs after each broadcast: sample every session's transport buffer."""
        for session in self.sessions:
            transport = session.transport
            if transport is None or transport.is_closing():
                continue
            if session in self._full:
                self.held += 1
            size = transport.get_write_buffer_size()
            self.max_write_buffer = max(self.max_write_buffer, size)
            if size > WRITE_HIGH_WATER:
                self._full.add(session)


@pytest.fixture
async def flood_server(short_tmp: Path) -> AsyncIterator[tuple[TestServer, Observed]]:
    observed = Observed()
    gate = Gate()
    monitor = build_test_monitor(gate, tracer=observed.tracer)
    observed.sessions = monitor.qmp_sessions
    monitor.add_event_listener(observed.after_event)
    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    try:
        yield TestServer(monitor, path, gate), observed
    finally:
        await monitor.close()


async def connect_stuck_client(path: str) -> socket.socket:
    """A client with a tiny receive buffer that negotiates and then never reads again."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, path)
    received = b""
    while received.count(b"\r\n") < 1:
        received += await loop.sock_recv(sock, 4096)
    await loop.sock_sendall(sock, b'{"execute":"qmp_capabilities"}')
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


async def test_stuck_client_does_not_stall_others_and_is_disconnected(
    flood_server: tuple[TestServer, Observed], caplog: pytest.LogCaptureFixture
) -> None:
    """Flood events while one client never reads: the others keep getting replies, the stuck
    one is disconnected per the policy, and what we hold for it stays bounded."""
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
        # bounded: dropped once more than EVENT_BACKLOG_MAX events were held, and the
        # transport buffer no bigger than the high-water mark plus one write
        assert [(name, info["count"]) for name, info in observed.traces] == [
            ("event.dropped", EVENT_BACKLOG_MAX + 1)
        ]
        assert "is not reading" in caplog.text
        assert observed.held >= EVENT_BACKLOG_MAX  # held back before it was dropped
        assert observed.max_write_buffer <= WRITE_HIGH_WATER + 64 * 1024

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
    """One stuck client: one warning, one ``event.dropped`` trace."""
    server, observed = flood_server
    caplog.set_level(logging.WARNING, logger="qmonitor.qmp")
    stuck = await connect_stuck_client(server.path)
    driver = await server.client()
    try:
        rounds = 0
        while not observed.held:  # until its events are held back (under 500 held)
            assert rounds < MAX_ROUNDS
            assert await driver.execute("emit", {"count": 500}) == {"return": {}}
            rounds += 1
        # one burst of more than twice the backlog limit
        reply = await driver.execute("emit", {"count": 2 * EVENT_BACKLOG_MAX + 1000})
        assert reply == {"return": {}}
        await wait_until(lambda: len(server.monitor.qmp_sessions) == 1)
        assert len(observed.traces) == 1
        assert caplog.text.count("is not reading") == 1
    finally:
        stuck.close()
        await driver.close()


async def test_slow_reader_catches_up_without_loss(
    flood_server: tuple[TestServer, Observed],
) -> None:
    """A client that only pauses (below the backlog limit) gets every event, in order."""
    server, observed = flood_server
    loop = asyncio.get_running_loop()
    slow = await connect_stuck_client(server.path)
    driver = await server.client()
    try:
        # emit in rounds smaller than the backlog until the client's output is held back
        count = 500
        rounds = 0
        while not observed.held:
            assert rounds < MAX_ROUNDS, "the client never counted as not reading"
            reply = await driver.execute("emit-numbered", {"first": rounds * count, "count": count})
            assert reply == {"return": {}}
            rounds += 1
        data = bytearray()
        expected = rounds * count
        async with asyncio.timeout(30):
            while data.count(b"\r\n") < expected:
                chunk = await loop.sock_recv(slow, 65536)
                assert chunk, "disconnected"
                data += chunk
        lines = bytes(data).split(b"\r\n")[:-1]
        assert len(lines) == expected
        assert [json.loads(raw)["data"]["n"] for raw in lines] == list(range(expected))
        assert observed.traces == []
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
        count = 500
        rounds = 0
        while not observed.held:  # until events for the slow client are held back
            assert rounds < MAX_ROUNDS, "the client never counted as not reading"
            reply = await driver.execute("emit-numbered", {"first": rounds * count, "count": count})
            assert reply == {"return": {}}
            rounds += 1
        server.gate.open("held")
        expected = rounds * count + 1
        data = bytearray()
        async with asyncio.timeout(30):
            while data.count(b"\r\n") < expected:
                chunk = await loop.sock_recv(slow, 65536)
                assert chunk, "disconnected"
                data += chunk
        lines = [json.loads(raw) for raw in bytes(data).split(b"\r\n")[:-1]]
        assert lines[-1] == {"return": "held", "id": "mine"}
        assert [line["data"]["n"] for line in lines[:-1]] == list(range(expected - 1))
    finally:
        slow.close()
        await driver.close()
