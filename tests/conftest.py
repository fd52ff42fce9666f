"""Shared fixtures: a monitor with test commands served on a real unix socket."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qmonitor import Completion, Context, Monitor, QMPError
from qmonitor.testing import RawQMPClient, qemu_available


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``qemu`` skip without QEMU, except in CI where they must run."""
    if qemu_available():
        return
    if os.environ.get("QMONITOR_REQUIRE_QEMU"):
        raise pytest.UsageError("QMONITOR_REQUIRE_QEMU is set but qemu-system-x86_64 is missing")
    skip = pytest.mark.skip(reason="qemu-system-x86_64 is not installed")
    for item in items:
        if "qemu" in item.keywords:
            item.add_marker(skip)


REAL_PROGRAM_MARKERS = ("qemu", "libvirt", "go_qemu", "host_facility")
"""Markers of tests that need real programs (QEMU, libvirt, go-qemu) or host facilities (the
installed GLib, mounting a tmpfs as root): they skip where those are missing, but CI has them
all (.ci/run installs them and runs as root), so there a skip is a failure."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (QMONITOR_REQUIRE_QEMU), a skipped test that needs a real program is a failure."""
    report = yield
    needs = [marker for marker in REAL_PROGRAM_MARKERS if marker in item.keywords]
    if (
        os.environ.get("QMONITOR_REQUIRE_QEMU")
        and needs
        and report.skipped  # type: ignore[attr-defined]
        and not hasattr(report, "wasxfail")
    ):
        report.outcome = "failed"  # type: ignore[attr-defined]
        report.longrepr = f"test needing {'/'.join(needs)} was skipped in CI: {report.longrepr}"  # type: ignore[attr-defined]
    return report


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory (unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="qm-") as directory:
        yield Path(directory)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds (polling the loop); fail after a generous ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@dataclass
class Gate:
    """Lets a test hold a command until it says so (the port of qmp-test.c's fifo)."""

    events: dict[str, asyncio.Event] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)  # tracked-wait names, in start order
    cancelled: list[str] = field(default_factory=list)  # tracked-wait names that saw a cancel
    running: int = 0  # tracked-wait commands running now
    max_running: int = 0  # the most tracked-wait commands ever running at once

    def get(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())

    def open(self, name: str) -> None:
        self.get(name).set()


@dataclass
class TestServer:
    __test__ = False  # not a test class, though its name says Test

    monitor: Monitor
    path: str
    gate: Gate

    async def client(self, negotiate: bool = True) -> RawQMPClient:
        client = await RawQMPClient.connect_unix(self.path)
        if negotiate:
            await client.negotiate()
        return client


def build_test_monitor(gate: Gate, **options: object) -> Monitor:
    """A monitor with one command of each style, and some that block or fail on purpose."""
    mon = Monitor("test", **options)  # type: ignore[arg-type]
    mon.event("TEST_EVENT")
    mon.event("THROTTLED", throttle=0.2, throttle_key="id")

    @mon.command
    def echo(value: str) -> str:
        return value

    @mon.command
    def add(a: int, b: int = 0) -> int:
        return a + b

    @mon.command
    async def sleep(seconds: float, ctx: Context) -> str:
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @mon.command(name="wait-gate")
    async def wait_gate(name: str) -> str:
        await gate.get(name).wait()
        return name

    @mon.command(name="thread-complete")
    def thread_complete(value: int, complete: Completion[int]) -> None:
        threading.Thread(target=complete.succeed, args=(value,)).start()

    @mon.command(name="fail-now")
    def fail_now(message: str) -> None:
        raise QMPError(message)

    @mon.command(name="fail-oob", allow_oob=True)
    def fail_oob() -> None:
        raise QMPError("fail-oob always fails")

    @mon.command(name="quick-oob", allow_oob=True)
    def quick_oob() -> str:
        return "quick"

    @mon.command
    def crash() -> None:
        raise ZeroDivisionError("boom")

    @mon.command(timeout=0.2)
    async def hang() -> None:
        await asyncio.Event().wait()

    @mon.command
    def emit(count: int = 1) -> None:
        for _ in range(count):
            mon.emit("TEST_EVENT", {"payload": "x" * 100})

    @mon.command(name="emit-numbered")
    def emit_numbered(first: int, count: int) -> None:
        """Emit TEST_EVENT ``count`` times with ``n`` = first, first + 1, ..."""
        for n in range(first, first + count):
            mon.emit("TEST_EVENT", {"n": n, "payload": "x" * 100})

    @mon.command(name="tracked-wait")
    async def tracked_wait(name: str) -> str:
        """wait-gate that records when it starts, how many run at once, and cancellation."""
        gate.started.append(name)
        gate.running += 1
        gate.max_running = max(gate.max_running, gate.running)
        try:
            await gate.get(name).wait()
        except asyncio.CancelledError:
            gate.cancelled.append(name)
            raise
        finally:
            gate.running -= 1
        return name

    @mon.command(name="emit-throttled")
    def emit_throttled(ids: list[str]) -> None:
        """Emit THROTTLED once per entry of ``ids``, with ``n`` counting per id from 1."""
        counts: dict[str, int] = {}
        for key in ids:
            counts[key] = counts.get(key, 0) + 1
            mon.emit("THROTTLED", {"id": key, "n": counts[key]})

    @mon.command(name="bad-result")
    async def bad_result() -> Counted:
        """Returns what its own type hint denies (a bug in a handler)."""
        return Counted(object())  # type: ignore[arg-type]

    @mon.command(name="bad-cancel-callback")
    def bad_cancel_callback(complete: Completion[None]) -> None:
        """Never completes; its cancel callback raises (a bug in a handler)."""

        def broken() -> None:
            raise RuntimeError("broken cancel callback")

        complete.add_cancel_callback(broken)
        complete.add_cancel_callback(lambda: gate.cancelled.append("bad-cancel-callback"))

    @mon.command(name="count-start")
    def count_start(name: str) -> None:
        gate.started.append(name)

    return mon


@dataclass
class Counted:
    count: int


@pytest.fixture
async def server(short_tmp: Path) -> AsyncIterator[TestServer]:
    gate = Gate()
    monitor = build_test_monitor(gate)
    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    try:
        yield TestServer(monitor, path, gate)
    finally:
        await monitor.close()
