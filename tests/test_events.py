"""Events on the wire: only in command mode, QEMU's shape and member order, throttling."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from pathlib import Path
from typing import TypedDict

from conftest import TestServer
from qmonitor import Monitor
from qmonitor.testing import RawQMPClient

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


async def test_throttling_first_sent_latest_kept_keyed_by_id(server: TestServer) -> None:
    """THROTTLED (0.2 s, keyed by data 'id'): 5 with id a and 1 with id b in one burst give
    a#1 and b#1 at once, a#5 when the window ends, and nothing else."""
    client = await server.client()
    try:
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
        # the latest of a's window, when it ends
        flushed = await client.receive_line()
        assert EVENT_LINE.fullmatch(flushed), flushed
        assert json.loads(flushed)["event"] == "THROTTLED"
        assert json.loads(flushed)["data"] == {"id": "a", "n": 5}
        # let the next window (opened by the flush) end empty, then check nothing else came
        await asyncio.sleep(0.5)
        await client.send_raw(b'{"execute":"echo","arguments":{"value":"end"}}')
        assert await client.receive_line() == b'{"return": "end"}\r\n'

        # a window that ended empty closed the key: the next one is sent at once again
        await client.send_raw(b'{"execute":"emit-throttled","arguments":{"ids":["a"]}}')
        assert json.loads(await client.receive_line())["data"] == {"id": "a", "n": 1}
        assert await client.receive_line() == b'{"return": {}}\r\n'
    finally:
        await client.close()


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


async def test_throttled_emit_from_another_thread(server: TestServer) -> None:
    """Throttling also applies to events emitted from other threads."""
    client = await server.client()
    try:

        def burst() -> None:
            for n in range(1, 4):
                server.monitor.emit("THROTTLED", {"id": "t", "n": n})

        thread = threading.Thread(target=burst)
        thread.start()
        await asyncio.to_thread(thread.join)
        first = json.loads(await client.receive_line())
        last = json.loads(await client.receive_line())
        assert (first["data"], last["data"]) == ({"id": "t", "n": 1}, {"id": "t", "n": 3})
    finally:
        await client.close()


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
