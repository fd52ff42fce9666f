"""Helpers for testing QMP servers, ours or QEMU's: a raw client over real sockets, fake time.

:class:`RawQMPClient` sends exact bytes and reads exact reply lines, so tests (and anyone
checking their own server) can pin the wire format. :func:`start_qemu` runs real QEMU with a
QMP unix socket for differential tests; :func:`schema_shape` compares ``query-qmp-schema``
entries across servers whatever their numbering of types.

:class:`FakeClock` is a :class:`~qmonitor.core.clock.Clock` whose time moves only when the test
moves it (trio's ``MockClock``): give it to a monitor (``Monitor(clock=FakeClock())``) and a
throttle window ends, or a command times out, at the exact instant the test advances to,
without sleeping and whatever the machine's load. :class:`VirtualClockLoop` is an event loop
that reads its time from a FakeClock and, when nothing can run, jumps it to the next timer
(trio's autojump), so whole scenarios with ``asyncio.sleep`` and timeouts run in virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

QEMU_BINARY = "qemu-system-x86_64"
CONNECT_RETRY_SECONDS = 5.0
"""How long a refused connection to a socket that exists is retried (a server between
``bind()`` and ``listen()``, which takes longest on a loaded machine)."""


class RawQMPClient:
    """A QMP client that works in bytes: nothing is hidden, nothing is reordered."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting: dict[str, Any] | None = None

    @classmethod
    async def connect_unix(cls, path: str, *, read_greeting: bool = True) -> RawQMPClient:
        """Connect to a unix socket (and read the greeting).

        A server creates its socket file at ``bind()`` and accepts only from ``listen()`` on;
        a connection refused in between is retried for up to :data:`CONNECT_RETRY_SECONDS`.
        """
        deadline = time.monotonic() + CONNECT_RETRY_SECONDS
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(path, limit=64 * 1024 * 1024)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.01)
        client = cls(reader, writer)
        if read_greeting:
            client.greeting = await client.receive()
        return client

    async def send_raw(self, data: bytes) -> None:
        """Send exact bytes."""
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, message: dict[str, Any]) -> None:
        """Send a message as compact JSON without a newline (as qemu.qmp does)."""
        await self.send_raw(json.dumps(message, separators=(",", ":")).encode())

    async def receive_line(self, timeout: float = 10.0) -> bytes:
        """The next output line, CRLF included."""
        line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)
        return line

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message, parsed."""
        message = json.loads(await self.receive_line(timeout))
        assert isinstance(message, dict)
        return message

    async def receive_reply(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message that is not an event."""
        while True:
            message = await self.receive(timeout)
            if "event" not in message:
                return message

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Send one request and return the next reply (events skipped)."""
        message: dict[str, Any] = {"execute": command, **extra}
        if arguments is not None:
            message["arguments"] = arguments
        await self.send(message)
        return await self.receive_reply()

    async def negotiate(self, enable: list[str] | None = None) -> None:
        """Leave negotiation mode."""
        arguments = {"enable": enable} if enable is not None else None
        reply = await self.execute("qmp_capabilities", arguments)
        assert reply == {"return": {}}, reply

    async def close(self) -> None:
        """Close the connection."""
        self.writer.close()
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            await self.writer.wait_closed()


def qemu_available() -> bool:
    """Whether real QEMU is installed here."""
    return shutil.which(QEMU_BINARY) is not None


def listening_unix_paths() -> set[str] | None:
    """Paths of the listening unix sockets (Linux ``/proc/net/unix``), or None elsewhere.

    A socket file exists from ``bind()``, but accepts only from ``listen()`` on. Reading the
    table instead of connecting keeps the first connection for the test: a probe would get
    the greeting and take a greeting fault meant for the test.
    """
    try:
        with open("/proc/net/unix") as table:
            lines = table.read().splitlines()[1:]
    except OSError:
        return None
    acceptcon = 0x10000  # __SO_ACCEPTCON in the Flags column: listening
    paths = set()
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) == 8 and int(fields[3], 16) & acceptcon:
            paths.add(fields[7])
    return paths


def _listens(socket_path: str) -> bool:
    if not os.path.exists(socket_path):
        return False
    listening = listening_unix_paths()
    return listening is None or socket_path in listening


@contextlib.asynccontextmanager
async def start_server(
    command: list[str],
    socket_path: str,
    *,
    startup_timeout: float = 30.0,
    stderr_path: str | None = None,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Run a monitor process until ``socket_path`` listens; terminate it (then kill) after.

    The path exists from ``bind()`` but accepts only from ``listen()``: QEMU does both, and a
    client that connected in between under load was refused.

    Its standard error goes to ``stderr_path`` (kept, for a test to show when the server dies
    mid-way) or to a temporary file; either is shown if it fails to start.
    """
    stderr_file = open(stderr_path, "w+b") if stderr_path else tempfile.TemporaryFile()  # noqa: SIM115
    with stderr_file as stderr:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            deadline = time.monotonic() + startup_timeout
            while not _listens(socket_path):
                if process.poll() is not None or time.monotonic() > deadline:
                    stderr.seek(0)
                    output = stderr.read().decode(errors="replace")
                    raise RuntimeError(f"{command[0]} did not start: {output}")
                await asyncio.sleep(0.02)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_path)


def start_qemu(socket_path: str, *extra_args: str) -> AbstractAsyncContextManager[Any]:
    """Run ``qemu-system-x86_64 -machine none`` with QMP on ``socket_path``."""
    command = [QEMU_BINARY, "-machine", "none", "-display", "none", "-nodefaults"]
    command += ["-qmp", f"unix:{socket_path},server=on,wait=off", *extra_args]
    return start_server(command, socket_path, startup_timeout=20.0)


def start_qmonitor(
    socket_path: str, *extra_args: str, stderr_path: str | None = None
) -> AbstractAsyncContextManager[Any]:
    """Run ``python -m qmonitor run`` (no human monitor) with QMP on ``socket_path``.

    The guest is idle (``--dirty-rate 0``), like QEMU's ``-machine none`` it is compared with.
    """
    command = [sys.executable, "-m", "qmonitor", "run", "-name", "vm0", "--dirty-rate", "0"]
    command += ["-qmp", f"unix:{socket_path},server=on,wait=off", "-monitor", "none"]
    return start_server([*command, *extra_args], socket_path, stderr_path=stderr_path)


def schema_shape(entries: list[dict[str, Any]], name: str) -> object:
    """The type ``name`` of ``query-qmp-schema`` as a nested structure, free of the numbers
    QEMU (and qmonitor) give types: builtins by name, ``[T]`` for an array, ``{"enum":
    values}``, ``{"members": [[name, type], ...]}`` with ``?`` after an optional member's name,
    plus ``tag`` and ``variants`` (``[[case, type], ...]``) for a union."""
    by_name = {entry["name"]: entry for entry in entries}
    entry = by_name[name]
    meta_type = entry["meta-type"]
    if meta_type == "builtin":
        return name
    if meta_type == "array":
        return [schema_shape(entries, entry["element-type"])]
    if meta_type == "enum":
        assert [member["name"] for member in entry["members"]] == entry["values"]
        return {"enum": entry["values"]}
    assert meta_type == "object", entry
    shape: dict[str, object] = {
        "members": [
            [
                member["name"] + ("?" if "default" in member else ""),
                schema_shape(entries, member["type"]),
            ]
            for member in entry["members"]
        ]
    }
    if "variants" in entry:
        shape["tag"] = entry["tag"]
        shape["variants"] = [
            [variant["case"], schema_shape(entries, variant["type"])]
            for variant in entry["variants"]
        ]
    return shape


def command_shape(entries: list[dict[str, Any]], name: str) -> dict[str, object]:
    """The command ``name`` of ``query-qmp-schema``: its argument and result shapes
    (:func:`schema_shape`), ``allow-oob`` and features."""
    (entry,) = [e for e in entries if e["name"] == name and e["meta-type"] == "command"]
    return {
        "arg-type": schema_shape(entries, entry["arg-type"]),
        "ret-type": schema_shape(entries, entry["ret-type"]),
        "allow-oob": entry.get("allow-oob", False),
        "features": entry.get("features", []),
    }


# -- fake time ------------------------------------------------------------------------------

FAKE_EPOCH = 1_700_000_000.0
"""The wall time a :class:`FakeClock` starts at unless told (2023-11-14 22:13:20 UTC)."""


class FakeTimer:
    """A callback waiting in a :class:`FakeClock` (its ``TimerHandle``)."""

    __slots__ = ("_args", "_callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when = when  # the clock's monotonic time at which it runs
        self.cancelled = False
        self._callback = callback
        self._args = args

    def cancel(self) -> None:
        """Do not run it (nothing happens if it has run)."""
        self.cancelled = True

    def run(self) -> None:
        """Call the callback (unless cancelled meanwhile)."""
        if not self.cancelled:
            self.cancelled = True  # a timer runs once
            self._callback(*self._args)


class FakeClock:
    """A clock that stands still until :meth:`advance` moves it (see the module docstring).

    Wall time starts at ``wall_time`` and monotonic time at 0; both move together. Timers run
    in the order of their times, each with the clock showing exactly its time, on the thread
    that calls :meth:`advance` (the event loop's: a FakeClock is used from one thread).
    """

    def __init__(self, wall_time: float = FAKE_EPOCH) -> None:
        self._wall_at_zero = wall_time
        self._now = 0.0
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()  # timers due at the same time run in call order

    def time(self) -> float:
        return self._wall_at_zero + self._now

    def monotonic(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        timer = FakeTimer(self._now + max(delay, 0.0), callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def next_deadline(self) -> float | None:
        """When the next timer runs (monotonic time), or None if none is waiting."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def advance(self, seconds: float) -> None:
        """Move time ``seconds`` on, running every timer due on the way (those they schedule
        within the span too), each at its own time."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        target = self._now + seconds
        while (when := self.next_deadline()) is not None and when <= target:
            for timer in self._jump_to(when):
                timer.run()
        self._now = target

    def _jump_to(self, when: float) -> list[FakeTimer]:
        """Move to ``when`` (no later than the next deadline); the timers due, in order."""
        self._now = max(self._now, when)
        due = []
        while self._timers and self._timers[0][0] <= self._now:
            timer = heapq.heappop(self._timers)[2]
            if not timer.cancelled:
                due.append(timer)
        return due


class _AutojumpSelector(selectors.DefaultSelector):
    """Waits for I/O; when none is ready and the loop would wait for a timer, jumps the fake
    clock to the earliest timer, the loop's or the clock's, instead of waiting."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.loop: asyncio.AbstractEventLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        deadlines = [self.clock.next_deadline()]
        if timeout is not None:
            deadlines.append(self.clock.monotonic() + timeout)
        known = [deadline for deadline in deadlines if deadline is not None]
        if not known:  # no timer at all: only I/O can wake the loop
            return super().select(None)
        assert self.loop is not None
        for timer in self.clock._jump_to(min(known)):
            self.loop.call_soon(timer.run)  # run by the loop, not inside select()
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on a :class:`FakeClock` (``loop.clock``): time stands still while anything
    can run and jumps to the next timer when nothing can. Timers (``call_later``,
    ``asyncio.sleep``, timeouts, and the monitor's when it is given ``loop.clock``) fire in
    order at exact virtual times, however loaded the machine, and "wait one second" costs no
    real time. I/O is real (sockets in this process).

    Only for scenarios where nothing runs in other threads or processes: the loop cannot know
    that a thread is about to wake it, and would jump ahead meanwhile.
    """

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        selector = _AutojumpSelector(self.clock)
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self.clock.monotonic()

    async def sleep_until(self, when: float) -> None:
        """Return at virtual time ``when``, once every timer due before it has run and
        everything it caused (writes, reads, callbacks) has settled."""
        assert when > self.time()
        await asyncio.sleep(when - self.time())


def run_in_virtual_time(
    scenario: Callable[[VirtualClockLoop], Coroutine[Any, Any, None]],
) -> None:
    """Run ``scenario(loop)`` on a fresh :class:`VirtualClockLoop`."""
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, VirtualClockLoop)
        runner.run(scenario(loop))
