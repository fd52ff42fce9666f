"""Reply ordering, cancellation, timeouts, crashes, disconnects and the in-flight limit.

The seed scenario first: an async command that takes 2 s runs on one connection while the same
connection (requests with ids) and another connection get answers; an id-less request behind
a slow id-less request waits its turn (docs/PROTOCOL.md, "Ordering and backpressure").
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Gate, TestServer, build_test_monitor, wait_until
from qmonitor import Monitor
from qmonitor.server.monitor import SHUTDOWN_GRACE_SECONDS
from qmonitor.server.qmp_session import BLOCKED_INPUT_MAX
from qmonitor.testing import FakeClock, RawQMPClient, VirtualClockLoop, run_in_virtual_time

CANCEL = "__io.github.qmonitor_cancel"


def line(text: str) -> bytes:
    return text.encode() + b"\r\n"


def request(command: str, arguments: dict[str, Any] | None = None, **extra: Any) -> bytes:
    message: dict[str, Any] = {"execute": command, **extra}
    if arguments is not None:
        message["arguments"] = arguments
    return json.dumps(message, separators=(",", ":")).encode()


class Recorder:
    """Reads lines from several clients and logs them in the order they arrive."""

    def __init__(self) -> None:
        self.log: list[tuple[str, bytes]] = []

    async def read(self, name: str, client: RawQMPClient, count: int) -> None:
        for _ in range(count):
            self.log.append((name, await client.receive_line(timeout=20)))

    def lines(self, name: str) -> list[bytes]:
        return [data for who, data in self.log if who == name]

    def position(self, name: str, data: bytes) -> int:
        return self.log.index((name, data))


async def test_seed_scenario_slow_async_command_does_not_block_others(server: TestServer) -> None:
    """A slow async command (held until the test lets it finish, rather than two seconds of
    wall clock): the same connection (ids) and other connections are answered meanwhile;
    id-less requests behind an id-less slow one wait their turn."""
    a = await server.client()  # routes by id: the slow request carries one
    b = await server.client()  # another connection
    c = await server.client()  # positional: no ids at all
    try:
        recorder = Recorder()
        await a.send_raw(request("wait-gate", {"name": "slow-a"}, id="slow"))
        await c.send_raw(request("wait-gate", {"name": "slow-c"}))
        await c.send_raw(request("echo", {"value": "behind"}))
        await c.send_raw(request("add", {"a": 1, "b": 1}, id="behind-with-id"))
        readers = [
            asyncio.create_task(recorder.read("a", a, 3)),
            asyncio.create_task(recorder.read("c", c, 3)),
        ]
        # while both slow commands run: the same connection, with ids
        await a.send_raw(request("add", {"a": 1, "b": 2}, id="q1"))
        await a.send_raw(request("thread-complete", {"value": 7}, id="q2"))
        # and another connection, with or without ids
        assert await b.execute("echo", {"value": "other"}) == {"return": "other"}
        b_done = await b.execute("sleep", {"seconds": 0.01}, id="b-sleep")
        assert b_done == {"return": "slept 0.01", "id": "b-sleep"}
        recorder.log.append(("b", b"answered"))
        server.gate.open("slow-a")
        server.gate.open("slow-c")
        await asyncio.gather(*readers)

        slow_a = line('{"return": "slow-a", "id": "slow"}')
        assert recorder.lines("a") == [
            line('{"return": 3, "id": "q1"}'),
            line('{"return": 7, "id": "q2"}'),
            slow_a,
        ]
        # b got its answers while a's and c's slow commands were still running
        assert recorder.position("b", b"answered") < recorder.position("a", slow_a)
        slow_c = line('{"return": "slow-c"}')
        assert recorder.position("b", b"answered") < recorder.position("c", slow_c)
        # on c, everything behind the id-less slow request waited its turn, in order
        assert recorder.lines("c") == [
            slow_c,
            line('{"return": "behind"}'),
            line('{"return": 2, "id": "behind-with-id"}'),
        ]
    finally:
        for client in (a, b, c):
            await client.close()


async def test_idless_requests_are_answered_in_arrival_order(server: TestServer) -> None:
    """Pipelined id-less requests (positional clients) come back in exactly the order sent."""
    client = await server.client()
    try:
        pipeline = b"".join(
            [
                request("wait-gate", {"name": "g"}),
                request("add", {"a": 1}),
                request("thread-complete", {"value": 2}),
                request("sleep", {"seconds": 0.01}),
                b"{]",
                request("echo", {"value": "last"}),
            ]
        )
        await client.send_raw(pipeline)
        server.gate.open("g")
        lines = [await client.receive_line() for _ in range(6)]
        assert lines[:4] == [
            line('{"return": "g"}'),
            line('{"return": 1}'),
            line('{"return": 2}'),
            line('{"return": "slept 0.01"}'),
        ]
        assert json.loads(lines[4])["error"]["desc"].startswith("JSON parse error")
        assert lines[5] == line('{"return": "last"}')
    finally:
        await client.close()


async def test_cancel_in_band_with_id(server: TestServer) -> None:
    """__io.github.qmonitor_cancel: the cancel succeeds, the command sees CancelledError,
    and the cancelled request still gets exactly one reply."""
    client = await server.client()
    try:
        await client.send_raw(request("tracked-wait", {"name": "c1"}, id="target"))
        await wait_until(lambda: server.gate.started == ["c1"])
        await client.send_raw(request(CANCEL, {"id": "target"}, id="k"))
        assert await client.receive_line() == line('{"return": {}, "id": "k"}')
        assert await client.receive_line() == line(
            '{"id": "target", "error": {"class": "GenericError", '
            '"desc": "Command \'tracked-wait\' was cancelled by the client"}}'
        )
        assert server.gate.cancelled == ["c1"]
        # exactly one reply: the next line answers the next request
        assert await client.execute("echo", {"value": "after"}, id=1) == {
            "return": "after",
            "id": 1,
        }
    finally:
        await client.close()


async def test_cancel_unknown_id_fails(server: TestServer) -> None:
    """Cancelling an id nobody uses (or a finished request) fails with GenericError."""
    client = await server.client()
    try:
        assert await client.execute("echo", {"value": "done"}, id="finished") == {
            "return": "done",
            "id": "finished",
        }
        for target in ("finished", "never-sent", 1):
            reply = await client.execute(CANCEL, {"id": target}, id="k")
            assert reply["id"] == "k"
            assert reply["error"]["class"] == "GenericError"
            assert reply["error"]["desc"].startswith("No request with id ")
            assert reply["error"]["desc"].endswith(" is in flight on this connection")
    finally:
        await client.close()


async def test_cancel_ids_compare_as_json_values(server: TestServer) -> None:
    """Id 1 and id "1" are different requests; only the one named is cancelled."""
    client = await server.client()
    try:
        await client.send_raw(request("tracked-wait", {"name": "int"}, id=1))
        await client.send_raw(request("tracked-wait", {"name": "str"}, id="1"))
        await wait_until(lambda: server.gate.started == ["int", "str"])
        await client.send_raw(request(CANCEL, {"id": "1"}, id="k"))
        assert await client.receive_line() == line('{"return": {}, "id": "k"}')
        assert await client.receive_line() == line(
            '{"id": "1", "error": {"class": "GenericError", '
            '"desc": "Command \'tracked-wait\' was cancelled by the client"}}'
        )
        server.gate.open("int")
        assert await client.receive_line() == line('{"return": "int", "id": 1}')
        assert server.gate.cancelled == ["str"]
    finally:
        await client.close()


async def test_cancel_is_per_connection(server: TestServer) -> None:
    """A client cannot cancel another connection's request."""
    owner = await server.client()
    other = await server.client()
    try:
        await owner.send_raw(request("tracked-wait", {"name": "mine"}, id="x"))
        await wait_until(lambda: server.gate.started == ["mine"])
        reply = await other.execute(CANCEL, {"id": "x"})
        assert reply["error"]["class"] == "GenericError"
        assert server.gate.cancelled == []
        server.gate.open("mine")
        assert await owner.receive_line() == line('{"return": "mine", "id": "x"}')
    finally:
        await owner.close()
        await other.close()


async def test_cancel_exec_oob_overtakes_idless_blocking_request(server: TestServer) -> None:
    """With oob, the cancel overtakes a queue blocked by an id-less request."""
    client = await RawQMPClient.connect_unix(server.path)
    try:
        await client.negotiate(["oob"])
        await client.send_raw(request("tracked-wait", {"name": "target"}, id="t"))
        await client.send_raw(request("wait-gate", {"name": "blocker"}))  # id-less: blocks
        await client.send_raw(request("echo", {"value": "queued"}))
        await wait_until(lambda: server.gate.started == ["target"])
        await client.send_raw(
            json.dumps({"exec-oob": CANCEL, "arguments": {"id": "t"}, "id": "k"}).encode()
        )
        assert await client.receive_line() == line('{"return": {}, "id": "k"}')
        assert await client.receive_line() == line(
            '{"id": "t", "error": {"class": "GenericError", '
            '"desc": "Command \'tracked-wait\' was cancelled by the client"}}'
        )
        server.gate.open("blocker")
        assert await client.receive_line() == line('{"return": "blocker"}')
        assert await client.receive_line() == line('{"return": "queued"}')
        assert server.gate.cancelled == ["target"]
    finally:
        await client.close()


@pytest.fixture
async def strict_server(short_tmp: Path) -> AsyncIterator[TestServer]:
    gate = Gate()
    monitor = build_test_monitor(gate, strict_order=True)
    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    try:
        yield TestServer(monitor, path, gate)
    finally:
        await monitor.close()


async def test_cancel_exec_oob_in_strict_order(strict_server: TestServer) -> None:
    """strict_order: the blocked request itself is cancelled out of band (PROTOCOL.md example)."""
    client = await RawQMPClient.connect_unix(strict_server.path)
    try:
        await client.negotiate(["oob"])
        await client.send_raw(request("sleep", {"seconds": 60.0}, id="save-1"))
        await client.send_raw(request("echo", {"value": "queued"}, id="e"))
        await client.send_raw(
            json.dumps({"exec-oob": CANCEL, "arguments": {"id": "save-1"}}).encode()
        )
        assert await client.receive_line() == line('{"return": {}}')
        assert await client.receive_line() == line(
            '{"id": "save-1", "error": {"class": "GenericError", '
            '"desc": "Command \'sleep\' was cancelled by the client"}}'
        )
        assert await client.receive_line() == line('{"return": "queued", "id": "e"}')
    finally:
        await client.close()


async def test_timeout_reply(short_tmp: Path) -> None:
    """A command registered with timeout=0.2 that never completes is answered with an error,
    0.2 s after it started (on the monitor's clock), not before."""
    clock = FakeClock()
    monitor = build_test_monitor(Gate(), clock=clock)
    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    client = await RawQMPClient.connect_unix(path)
    await client.negotiate()
    try:
        await client.send_raw(request("hang", id="h"))
        assert await client.execute("echo", {"value": "e"}, id="e") == {"return": "e", "id": "e"}
        clock.advance(0.199)
        assert await client.execute("echo", {"value": "f"}, id="f") == {"return": "f", "id": "f"}
        clock.advance(0.001)
        assert await client.receive_line() == line(
            '{"id": "h", "error": {"class": "GenericError", '
            '"desc": "Command \'hang\' timed out after 0.2 s"}}'
        )
        await client.send_raw(request("hang"))
        await wait_until(lambda: clock.next_deadline() is not None)  # it started
        clock.advance(0.2)
        assert await client.receive_line() == line(
            '{"error": {"class": "GenericError", "desc": "Command \'hang\' timed out after 0.2 s"}}'
        )
    finally:
        await client.close()
        await monitor.close()


async def test_crash_gives_one_generic_error_and_server_lives(server: TestServer) -> None:
    """An unexpected exception: one GenericError, a logged traceback, and service goes on."""
    client = await server.client()
    try:
        await client.send_raw(request("crash", id=5))
        await client.send_raw(request("echo", {"value": "still here"}, id=6))
        assert await client.receive_line() == line(
            '{"id": 5, "error": {"class": "GenericError", '
            '"desc": "Command \'crash\' failed: ZeroDivisionError: boom"}}'
        )
        assert await client.receive_line() == line('{"return": "still here", "id": 6}')
        other = await server.client()
        try:
            assert await other.execute("add", {"a": 40, "b": 2}) == {"return": 42}
        finally:
            await other.close()
    finally:
        await client.close()


async def test_cancel_before_the_command_starts(server: TestServer) -> None:
    """A cancel in the same read as its target: still exactly one reply for each."""
    client = await server.client()
    try:
        await client.send_raw(
            request("tracked-wait", {"name": "early"}, id="target")
            + request(CANCEL, {"id": "target"}, id="k")
            + request("echo", {"value": "next"}, id="n")
        )
        lines = [await client.receive_line() for _ in range(3)]
        assert lines[0] == line('{"return": {}, "id": "k"}')
        assert sorted(lines[1:]) == sorted(
            [
                line('{"return": "next", "id": "n"}'),
                line(
                    '{"id": "target", "error": {"class": "GenericError", '
                    '"desc": "Command \'tracked-wait\' was cancelled by the client"}}'
                ),
            ]
        )
        assert server.gate.running == 0
    finally:
        await client.close()


async def test_disconnect_cancels_in_flight_commands(server: TestServer) -> None:
    """A client that goes away cancels its running commands; other sessions are untouched."""
    stays = await server.client()
    leaves = await server.client()
    try:
        await stays.send_raw(request("tracked-wait", {"name": "kept"}, id="k"))
        await leaves.send_raw(request("tracked-wait", {"name": "gone-1"}, id=1))
        await leaves.send_raw(request("tracked-wait", {"name": "gone-2"}, id=2))
        await wait_until(lambda: len(server.gate.started) == 3)
        await leaves.close()
        await wait_until(lambda: sorted(server.gate.cancelled) == ["gone-1", "gone-2"])
        await wait_until(lambda: len(server.monitor.qmp_sessions) == 1)
        server.gate.open("kept")
        assert await stays.receive_line() == line('{"return": "kept", "id": "k"}')
        assert sorted(server.gate.cancelled) == ["gone-1", "gone-2"]
    finally:
        await stays.close()


async def test_disconnect_cancels_a_running_idless_command(server: TestServer) -> None:
    """The hangup is noticed even while an id-less request blocks the connection."""
    leaves = await server.client()
    await leaves.send_raw(request("tracked-wait", {"name": "idless"}))
    await wait_until(lambda: server.gate.started == ["idless"])
    await leaves.close()
    await wait_until(lambda: server.gate.cancelled == ["idless"], timeout=3)
    await wait_until(lambda: len(server.monitor.qmp_sessions) == 0, timeout=3)


@pytest.fixture
async def limited_server(short_tmp: Path) -> AsyncIterator[TestServer]:
    gate = Gate()
    monitor = build_test_monitor(gate, max_requests_in_flight=4)
    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    try:
        yield TestServer(monitor, path, gate)
    finally:
        await monitor.close()


async def test_in_flight_limit_stops_reading_and_drops_nothing(limited_server: TestServer) -> None:
    """max_requests_in_flight=4: 10 pipelined requests, only 4 run at once, all 10 answered."""
    gate = limited_server.gate
    client = await limited_server.client()
    observer = await limited_server.client()
    try:
        names = [f"g{i}" for i in range(10)]
        await client.send_raw(b"".join(request("tracked-wait", {"name": n}, id=n) for n in names))
        await wait_until(lambda: len(gate.started) == 4)
        # the session is not reading: other clients are served, and still only 4 run
        assert await observer.execute("echo", {"value": "ok"}) == {"return": "ok"}
        assert gate.started == names[:4]
        # each completion lets exactly one more request in, in arrival order
        for index, name in enumerate(names):
            gate.open(name)
            assert await client.receive_line() == line(f'{{"return": "{name}", "id": "{name}"}}')
            expected_started = min(10, index + 5)
            await wait_until(lambda: len(gate.started) == expected_started)  # noqa: B023
            assert gate.running <= 4
        assert gate.started == names
        assert gate.max_running == 4
        assert gate.cancelled == []
    finally:
        await client.close()
        await observer.close()


async def test_in_flight_limit_with_gates_opened_at_once(limited_server: TestServer) -> None:
    """Opening every gate at once: all 10 replies arrive, never more than 4 running."""
    gate = limited_server.gate
    client = await limited_server.client()
    try:
        names = [f"h{i}" for i in range(10)]
        await client.send_raw(
            b"".join(request("tracked-wait", {"name": n}, id=i) for i, n in enumerate(names))
        )
        await wait_until(lambda: len(gate.started) == 4)
        for name in names:
            gate.open(name)
        replies = [json.loads(await client.receive_line()) for _ in names]
        assert sorted(r["id"] for r in replies) == list(range(10))
        assert all(r["return"] == names[r["id"]] for r in replies)
        assert gate.max_running == 4
    finally:
        await client.close()


async def test_many_clients_negotiate_on_their_own(server: TestServer) -> None:
    """50 clients on one socket: each gets a greeting and its own negotiation state."""

    async def one(index: int) -> None:
        client = await RawQMPClient.connect_unix(server.path)
        try:
            assert client.greeting is not None and "QMP" in client.greeting
            reply = await client.execute("echo", {"value": "early"}, id=index)
            assert reply == {
                "id": index,
                "error": {
                    "class": "CommandNotFound",
                    "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
                },
            }
            if index % 2:
                await client.negotiate()
                reply = await client.execute("echo", {"value": f"client {index}"}, id=index)
                assert reply == {"return": f"client {index}", "id": index}
            else:  # stays in negotiation while the others are in command mode
                reply = await client.execute("echo", {"value": "late"})
                assert reply["error"]["class"] == "CommandNotFound"
                await client.negotiate(["oob"])
                reply = await client.execute("add", {"a": index, "b": 1}, id=index)
                assert reply == {"return": index + 1, "id": index}
        finally:
            await client.close()

    await asyncio.gather(*(one(i) for i in range(50)))


async def test_closing_the_monitor_answers_what_is_in_flight(server: TestServer) -> None:
    """SIGTERM/quit: every in-flight request gets its one reply before the connection closes."""
    client = await server.client()
    await client.send_raw(request("wait-gate", {"name": "never-a"}, id="a"))
    await client.send_raw(request("sleep", {"seconds": 60}, id="b"))
    await client.send_raw(request("echo", {"value": "ping"}, id="c"))
    assert await client.receive() == {"return": "ping", "id": "c"}
    await server.monitor.close()
    replies = [await client.receive(), await client.receive()]
    assert sorted(reply["id"] for reply in replies) == ["a", "b"]
    for reply in replies:
        assert reply["error"]["desc"].endswith("was cancelled: the monitor is shutting down")
    assert await client.reader.read() == b""
    await client.close()


async def test_an_async_result_that_cannot_be_encoded_is_one_error(server: TestServer) -> None:
    """A handler returning what its hint denies: a GenericError, and the connection goes on."""
    client = await server.client()
    await client.send_raw(request("bad-result"))  # id-less: it blocks what follows until answered
    await client.send_raw(request("echo", {"value": "after"}))
    reply = await client.receive()
    assert reply["error"]["class"] == "GenericError"
    assert reply["error"]["desc"].startswith("Command 'bad-result' failed: TypeError")
    assert await client.receive() == {"return": "after"}
    await client.close()


async def test_a_failing_cancel_callback_does_not_stop_the_others(server: TestServer) -> None:
    """Disconnecting runs every cancel callback even if one raises, and the session ends."""
    client = await server.client()
    await client.send_raw(request("bad-cancel-callback", id=1))
    await client.send_raw(request("echo", {"value": "sync"}, id=2))
    assert await client.receive() == {"return": "sync", "id": 2}
    [session] = server.monitor.qmp_sessions
    await client.close()
    await asyncio.wait_for(session.closed, 5)
    assert server.gate.cancelled == ["bad-cancel-callback"]
    assert not session.requests_in_flight


@pytest.mark.parametrize("oob", [False, True])
async def test_closing_starts_nothing_queued_behind_the_cancelled(
    server: TestServer, oob: bool
) -> None:
    """Requests waiting behind an id-less one never start once the monitor shuts down, whether
    still unread input or (with oob) already parsed into the read-ahead queue."""
    client = await RawQMPClient.connect_unix(server.path)
    await client.negotiate(["oob"] if oob else None)
    # One write: the server reads both at once, the second queued behind the first.
    await client.send_raw(
        request("tracked-wait", {"name": "never-b"}) + request("count-start", {"name": "queued"})
    )
    await wait_until(lambda: server.gate.started == ["never-b"])
    if oob:  # an out-of-band reply: everything before it has been parsed
        await client.send_raw(json.dumps({"exec-oob": "quick-oob", "id": "fence"}).encode())
        assert await client.receive() == {"return": "quick", "id": "fence"}
    await server.monitor.close()
    reply = await client.receive()
    assert reply["error"]["desc"].endswith("was cancelled: the monitor is shutting down")
    assert await client.reader.read() == b""
    assert server.gate.started == ["never-b"]
    await client.close()


async def test_a_blocked_session_buffers_a_bounded_amount_then_stops_reading(
    server: TestServer,
) -> None:
    """BLOCKED_INPUT_MAX: behind an id-less request, reading pauses; nothing is lost."""
    client = await server.client()
    await client.send_raw(request("wait-gate", {"name": "hold"}))
    count = 3000  # ~50 bytes each: well past BLOCKED_INPUT_MAX (64 KiB)
    lines = b"".join(request("echo", {"value": f"v{n}"}, id=n) for n in range(count))
    assert len(lines) > 2 * BLOCKED_INPUT_MAX
    sender = asyncio.ensure_future(client.send_raw(lines))
    [session] = server.monitor.qmp_sessions
    await wait_until(lambda: session.connection.buffered_bytes >= BLOCKED_INPUT_MAX)
    assert session.transport is not None and not session.transport.is_reading()
    assert session.connection.buffered_bytes < BLOCKED_INPUT_MAX + 512 * 1024  # one read more
    server.gate.open("hold")
    await sender
    assert await client.receive() == {"return": "hold"}
    for n in range(count):
        assert await client.receive() == {"return": f"v{n}", "id": n}
    await client.close()


def test_shutdown_does_not_wait_forever_for_a_command_that_ignores_cancel(
    short_tmp: Path,
) -> None:
    """SHUTDOWN_GRACE_SECONDS bounds how long close() waits for a cancelled command: it waits
    that long (on a virtual clock), then disconnects with the command still running."""

    async def scenario(loop: VirtualClockLoop) -> None:
        monitor = Monitor("stubborn", clock=loop.clock)  # its timers jump with the loop's
        started, cancelled, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

        @monitor.command
        async def stubborn() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                await release.wait()  # ignores the cancellation until told

        path = str(short_tmp / "stubborn.sock")
        await monitor.listen(f"unix:{path},server=on,wait=off")
        client = await RawQMPClient.connect_unix(path)
        await client.negotiate()
        await client.send_raw(request("stubborn", id=1))
        await started.wait()
        closing_at = loop.time()
        closing = asyncio.create_task(monitor.close())
        done, _ = await asyncio.wait({closing}, timeout=SHUTDOWN_GRACE_SECONDS + 1)
        assert closing in done, "close() is still waiting for the stubborn command"
        assert loop.time() - closing_at == SHUTDOWN_GRACE_SECONDS
        assert cancelled.is_set() and not release.is_set()  # it gave up on a running command
        assert await client.reader.read() == b""
        release.set()
        await client.close()

    run_in_virtual_time(scenario)
