"""Events on the wire: only in command mode, QEMU's shape and member order, throttling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypedDict

from conftest import Gate, TestServer, build_test_monitor
from qmonitor import Monitor
from qmonitor.core.events import Event, EventSpec, EventThrottle
from qmonitor.testing import FAKE_EPOCH, FakeClock, RawQMPClient

EVENT_LINE = re.compile(
    rb'\{"timestamp": \{"seconds": (\d+), "microseconds": (\d+)\}, '
    rb'"event": "([A-Z_]+)"(?:, "data": (\{.*\}))?\}\r\n'
)


async def test_events_only_after_negotiation(server: TestServer) -> None:
    """A client in negotiation mode gets no events; once negotiated it gets new ones."""
    negotiated = await server.client()
    waiting = await RawQMPClient.connect_unix(server.path)
    try:
        assert await negotiated.execute("emit", {"count": 2}, id="e1") == {
            "return": {},
            "id": "e1",
        }
        server.monitor.emit("TEST_EVENT", {"payload": "in-process"})
        # the negotiation reply is the very next message (qemu.qmp relies on it)
        await waiting.send_raw(b'{"execute":"qmp_capabilities"}')
        assert await waiting.receive_line() == b'{"return": {}}\r\n'
        assert await negotiated.execute("emit-numbered", {"first": 1, "count": 1}) == {"return": {}}
        line = await waiting.receive_line()
        assert json.loads(line)["data"] == {"n": 1, "payload": "x" * 100}
        assert await waiting.execute("echo", {"value": "x"}) == {"return": "x"}
    finally:
        await negotiated.close()
        await waiting.close()


async def test_event_before_reply_of_the_command_that_caused_it(server: TestServer) -> None:
    """Events a command emits go out before its reply (as QEMU's STOP before ``stop``)."""
    client = await server.client()
    try:
        await client.send_raw(b'{"execute":"emit","arguments":{"count":2},"id":1}')
        first, second, reply = [await client.receive_line() for _ in range(3)]
        assert EVENT_LINE.fullmatch(first) and EVENT_LINE.fullmatch(second)
        assert reply == b'{"return": {}, "id": 1}\r\n'
    finally:
        await client.close()


async def test_event_bytes_and_timestamp(server: TestServer) -> None:
    """Exact member order ``timestamp, event, data`` and wall-clock int timestamps."""
    client = await server.client()
    try:
        before = time.time()
        await client.send_raw(b'{"execute":"emit"}')
        line = await client.receive_line()
        after = time.time()
        match = EVENT_LINE.fullmatch(line)
        assert match, line
        seconds, microseconds = int(match.group(1)), int(match.group(2))
        assert match.group(3) == b"TEST_EVENT"
        assert match.group(4) == b'{"payload": "' + b"x" * 100 + b'"}'
        assert 0 <= microseconds < 1_000_000
        stamp = seconds + microseconds / 1_000_000
        assert before - 1 <= stamp <= after + 1  # the wall clock, not a monotonic one
        message = json.loads(line)
        assert list(message) == ["timestamp", "event", "data"]
        assert list(message["timestamp"]) == ["seconds", "microseconds"]
        assert type(message["timestamp"]["seconds"]) is int
        assert type(message["timestamp"]["microseconds"]) is int
        assert await client.receive_line() == b'{"return": {}}\r\n'

        # without data there is no data member at all
        server.monitor.emit("TEST_EVENT")
        line = await client.receive_line()
        match = EVENT_LINE.fullmatch(line)
        assert match and match.group(4) is None, line
        assert list(json.loads(line)) == ["timestamp", "event"]
    finally:
        await client.close()


async def test_event_goes_to_every_negotiated_session(server: TestServer) -> None:
    """Broadcast: every session in command mode gets the same line."""
    clients = [await server.client() for _ in range(3)]
    try:
        server.monitor.emit("TEST_EVENT", {"n": 3})
        lines = [await client.receive_line() for client in clients]
        assert len(set(lines)) == 1
        assert json.loads(lines[0])["data"] == {"n": 3}
    finally:
        for client in clients:
            await client.close()


async def events_before_reply(client: RawQMPClient, value: str) -> list[object]:
    """Send an ``echo`` and return the data of the events that come before its reply: what
    the server had sent this client by the time it read the request."""
    await client.send_raw(json.dumps({"execute": "echo", "arguments": {"value": value}}).encode())
    events: list[object] = []
    while "event" in (message := await client.receive()):
        events.append(message.get("data"))
    assert message == {"return": value}
    return events


@contextlib.asynccontextmanager
async def served_on_fake_clock(
    short_tmp: Path,
) -> AsyncIterator[tuple[Monitor, RawQMPClient, FakeClock]]:
    """The test monitor on a :class:`FakeClock`, and a negotiated client."""
    clock = FakeClock()
    monitor = build_test_monitor(Gate(), clock=clock)
    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    client = await RawQMPClient.connect_unix(path)
    await client.negotiate()
    try:
        yield monitor, client, clock
    finally:
        await client.close()
        await monitor.close()


async def test_throttling_first_sent_latest_kept_keyed_by_id(short_tmp: Path) -> None:
    """THROTTLED (0.2 s, keyed by data 'id'): 5 with id a and 1 with id b in one burst give
    a#1 and b#1 at once, a#5 when the window ends, and nothing else."""
    async with served_on_fake_clock(short_tmp) as (_, client, clock):
        await client.send_raw(
            b'{"execute":"emit-throttled","arguments":{"ids":["a","a","b","a","a","a"]}}'
        )
        lines = [await client.receive_line() for _ in range(3)]
        # both firsts go out at once, before the reply of the command that emitted them
        assert [json.loads(x).get("data") for x in lines[:2]] == [
            {"id": "a", "n": 1},
            {"id": "b", "n": 1},
        ]
        assert lines[2] == b'{"return": {}}\r\n'
        assert all(EVENT_LINE.fullmatch(x) for x in lines[:2])
        clock.advance(0.199)
        assert await events_before_reply(client, "t=0.199") == []  # the window is still open
        clock.advance(0.001)  # a's window ends: its latest goes out; b's ends empty
        flushed = await client.receive_line()
        assert EVENT_LINE.fullmatch(flushed), flushed
        assert json.loads(flushed)["event"] == "THROTTLED"
        assert json.loads(flushed)["data"] == {"id": "a", "n": 5}
        # the next window (opened by the flush) ends empty: nothing else came
        clock.advance(0.2)
        assert await events_before_reply(client, "end") == []
        # a window that ended empty closed the key: the next one is sent at once again
        await client.send_raw(b'{"execute":"emit-throttled","arguments":{"ids":["a"]}}')
        assert json.loads(await client.receive_line())["data"] == {"id": "a", "n": 1}
        assert await client.receive_line() == b'{"return": {}}\r\n'


async def test_an_event_offered_after_a_flush_is_held_for_that_window(short_tmp: Path) -> None:
    """QEMU monitor.c ``monitor_qapi_event_handler``: sending the held event re-arms the
    timer, so the window that opens with the flush holds the next event too, which goes out
    when that window ends (and a window that ends empty closes the key)."""
    async with served_on_fake_clock(short_tmp) as (monitor, client, clock):
        monitor.event("RTC_CHANGE", throttle=1.0)
        monitor.emit("RTC_CHANGE", {"n": 1})  # t=0: sent, window until 1.0
        assert await events_before_reply(client, "t=0") == [{"n": 1}]
        clock.advance(0.5)
        monitor.emit("RTC_CHANGE", {"n": 2})
        assert await events_before_reply(client, "t=0.5") == []  # held
        clock.advance(1.0)  # n=2 went out at 1.0, opening a window until 2.0
        assert await events_before_reply(client, "t=1.5 before") == [{"n": 2}]
        monitor.emit("RTC_CHANGE", {"n": 3})
        assert await events_before_reply(client, "t=1.5") == []  # held in that window
        clock.advance(1.0)  # n=3 went out at 2.0, opening a window until 3.0
        assert await events_before_reply(client, "t=2.5") == [{"n": 3}]
        clock.advance(1.0)  # that window ended empty at 3.0: the key is closed
        monitor.emit("RTC_CHANGE", {"n": 4})
        assert await events_before_reply(client, "t=3.5") == [{"n": 4}]


async def test_event_timestamps_come_from_the_monitors_clock(short_tmp: Path) -> None:
    """The timestamp is the wall time at emit, to the microsecond; a throttled event held in
    a window keeps its own, as QEMU's queued QDict does (monitor/monitor.c)."""
    async with served_on_fake_clock(short_tmp) as (monitor, client, clock):
        monitor.event("RTC_CHANGE", throttle=1.0)
        clock.advance(0.25)
        monitor.emit("RTC_CHANGE", {"n": 1})
        clock.advance(0.5)
        monitor.emit("RTC_CHANGE", {"n": 2})  # held until 1.25
        clock.advance(0.5)
        stamps = [(await client.receive())["timestamp"] for _ in range(2)]
        seconds = int(FAKE_EPOCH)
        assert stamps == [
            {"seconds": seconds, "microseconds": 250000},
            {"seconds": seconds, "microseconds": 750000},
        ]


def test_throttle_holds_the_event_after_a_flush_until_that_window_ends() -> None:
    """The sans-I/O rule, with explicit times: offer says send-or-hold and when the window
    ends; ``window_ended`` hands over the held event and keeps the key's window open."""
    spec = EventSpec("RTC_CHANGE", throttle_seconds=1.0)
    throttle = EventThrottle()

    def event(n: int) -> Event:
        return Event("RTC_CHANGE", {"n": n}, 0, 0)

    key = EventThrottle.key_for(spec, event(1))
    assert throttle.offer(spec, event(1), now=0.0) == (True, 1.0)
    assert throttle.offer(spec, event(2), now=0.5) == (False, None)
    assert throttle.window_ended(key) == event(2)  # at 1.0: sent, and a window opens
    assert throttle.offer(spec, event(3), now=1.5) == (False, None)  # held in it
    assert throttle.offer(spec, event(4), now=1.8) == (False, None)  # the latest is kept
    assert throttle.window_ended(key) == event(4)  # at 2.0
    assert throttle.window_ended(key) is None  # at 3.0, empty: the key closes
    assert throttle.offer(spec, event(5), now=3.5) == (True, 4.5)


async def test_emit_from_another_thread(server: TestServer) -> None:
    """monitor.emit is callable from any thread; the event reaches the client."""
    client = await server.client()
    try:
        thread = threading.Thread(
            target=server.monitor.emit, args=("TEST_EVENT", {"from": "thread"})
        )
        thread.start()
        await asyncio.to_thread(thread.join)
        line = await client.receive_line()
        assert EVENT_LINE.fullmatch(line), line
        assert json.loads(line)["data"] == {"from": "thread"}
    finally:
        await client.close()


async def test_throttled_emit_from_another_thread(short_tmp: Path) -> None:
    """Throttling also applies to events emitted from other threads."""
    async with served_on_fake_clock(short_tmp) as (monitor, client, clock):

        def burst() -> None:
            for n in range(1, 4):
                monitor.emit("THROTTLED", {"id": "t", "n": n})

        thread = threading.Thread(target=burst)
        thread.start()
        await asyncio.to_thread(thread.join)
        # all three reached the loop before this request did: only the first went out
        assert await events_before_reply(client, "after the burst") == [{"id": "t", "n": 1}]
        clock.advance(0.2)
        last = json.loads(await client.receive_line())
        assert last["data"] == {"id": "t", "n": 3}


async def test_a_throttled_event_before_any_session_does_not_silence_later_ones(
    short_tmp: Path,
) -> None:
    """Emitted before the monitor serves anything, an event opens no throttling window."""
    monitor = Monitor("early")
    monitor.event("RTC_CHANGE", throttle=1.0)
    monitor.emit("RTC_CHANGE", {"offset": 1})
    path = str(short_tmp / "early.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    client = await RawQMPClient.connect_unix(path)
    await client.negotiate()
    monitor.emit("RTC_CHANGE", {"offset": 2})
    event = await client.receive()
    assert event["event"] == "RTC_CHANGE"
    assert event["data"] == {"offset": 2}
    await client.close()
    await monitor.close()


async def test_the_tracer_sees_sync_and_async_commands(short_tmp: Path) -> None:
    """One hook for command.started/.complete/.failed, whatever the handler style."""
    traces: list[tuple[str, object]] = []
    monitor = Monitor(
        "traced", tracer=lambda name, info: traces.append((name, info.get("command")))
    )

    @monitor.command
    def quick() -> None: ...

    @monitor.command
    async def slow() -> None:
        await asyncio.sleep(0)

    path = str(short_tmp / "traced.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    client = await RawQMPClient.connect_unix(path)
    await client.negotiate()
    assert await client.execute("quick") == {"return": {}}
    assert await client.execute("slow") == {"return": {}}
    await client.close()
    await monitor.close()
    assert [trace for trace in traces if trace[1] in ("quick", "slow")] == [
        ("command.started", "quick"),
        ("command.complete", "quick"),
        ("command.started", "slow"),
        ("command.complete", "slow"),
    ]


def test_the_schema_follows_a_redeclared_event() -> None:
    """query-qmp-schema is cached, but never stale."""

    class Data(TypedDict):
        value: int

    monitor = Monitor("schema")
    monitor.event("CHANGED")
    before = [entry for entry in monitor.schema() if entry.get("name") == "CHANGED"]
    monitor.event("CHANGED", Data)
    after = [entry for entry in monitor.schema() if entry.get("name") == "CHANGED"]
    assert before != after
