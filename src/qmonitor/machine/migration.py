"""Live migration between two ``qmonitor run`` processes: iterative pre-copy, as QEMU does it.

Source (QEMU migration/migration.c ``migration_thread`` and migration/ram.c):

1. *setup*: connect to the URI (``tcp:HOST:PORT``, ``unix:PATH``, ``file:PATH``), mark every page
   dirty, send the stream header;
2. *active*: pass after pass, take the dirty map (``MIGRATION_PASS`` n, ``dirty-sync-count``) and
   send its pages: all-zero pages as a 16-byte record, others in runs of up to 1 MiB, under the
   ``max-bandwidth`` cap (enforced per 100 ms, QEMU's ``XFER_LIMIT_RATIO``). The guest keeps
   running and dirtying pages meanwhile;
3. when what is still dirty could be sent within ``downtime-limit`` at the bandwidth measured on
   the last pass, the guest is stopped (``finish-migrate``, STOP), the last dirty pages are sent
   without the cap, then the device state (workload step, seed, guest clock, run state);
4. the destination confirms it has loaded everything; the source is ``postmigrate``, the
   status ``completed`` and ``downtime`` the time the guest was stopped for.

If anything fails, or ``migrate_cancel`` is called, the connection is closed and the guest goes
back to the state it had (running: RESUME), its RAM untouched: the source only ever reads it.

While a migration exists, source or destination, it is QEMU's yank instance ``{"type":
"migration"}`` (:mod:`qmonitor.core.yank`; migration/migration.c registers it in
``qmp_migrate`` and ``qemu_start_incoming_migration`` and unregisters it when the migration
ends). Yanking it shuts the connection down without telling the migration (a ``file:`` stream
has nothing to shut down), so blocked I/O fails at once: the source's status is then ``failed``
with the socket error, as QEMU's (``Unable to write to socket: Broken pipe``), not
``cancelled``, and the destination fails its load. A destination still waiting for its
connection has nothing to yank yet, as in QEMU (the yank function comes with the channel).

Destination (``-incoming URI`` or ``migrate-incoming``): the run state is ``inmigrate`` and the
guest never runs until the stream's end record has been received and applied; pages are read
straight into guest RAM (the guest is not running, so nothing else writes it). A broken stream
fails the incoming migration; the process then exits with an error, as QEMU's does ("load of
migration failed"), so a half-loaded guest can never be started.

The stream (our own; QEMU's is a sequence of device sections)::

    header  8-byte magic b"QMMIGR\\0\\1", 4-byte length, JSON {"ram-size", "page-size", "name"}
    record  16 bytes: kind (1 = pages follow, 2 = zero pages, 3 = end), count, first page
    end     after a kind-3 record: 4-byte length, JSON device state
    ack     1 byte from the destination once it has loaded the state (not for file:)

Threads: the sending and receiving loops run in worker threads with blocking sockets, so the
bytes go from guest RAM to the kernel without copies (``sendall`` / ``readinto`` on memoryviews)
and without holding the GIL for long; the event loop only takes the dirty map between passes
and keeps serving monitors.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import io
import json
import logging
import os
import re
import socket
import struct
import sys
import threading
import time
import typing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, BinaryIO, Final, Literal

from qmonitor import (
    MIGRATION_INSTANCE,
    FaultPoint,
    FaultRule,
    QMonitorError,
    QMPError,
    YankRegistry,
)
from qmonitor.machine.machine import (
    PAGE_SIZE,
    GuestRam,
    Machine,
    RunState,
    data_page_map,
    is_zero,
    offload,
)
from qmonitor.machine.paths import PathConfinement

MAGIC: Final = b"QMMIGR\x00\x01"
_RECORD = struct.Struct("<BxxxIQ")  # kind, page count, first page
_LENGTH = struct.Struct("<I")
RECORD_PAGES: Final = 1
RECORD_ZERO: Final = 2
RECORD_END: Final = 3
ACK: Final = b"\x06"

CHUNK_PAGES: Final = 256
"""Pages handled per step of the sender (1 MiB): zero-page test, cap and cancellation grain."""
MAX_RECORD_PAGES: Final = 4096
"""The longest run of data pages sent as one record (16 MiB)."""
XFER_LIMIT_RATIO: Final = 10
"""QEMU migration.c: the bandwidth cap is applied per 1/10 s window."""
MAX_DOWNTIME_MS: Final = 2_000_000
"""QEMU migration.c ``MAX_MIGRATE_DOWNTIME`` (ms), the largest ``downtime-limit``."""

_ZERO_CHUNK: Final = bytes(CHUNK_PAGES * PAGE_SIZE)
_RUNS = re.compile(rb"\x01+")
_DATA_OR_ZERO_RUNS = re.compile(rb"\x01+|\x00+")

Notify = Callable[[str, dict[str, Any]], None]
"""How migration sends ``MIGRATION`` / ``MIGRATION_PASS`` (only with the ``events`` capability)."""


class MigrationStatus(StrEnum):
    """qapi/migration.json ``MigrationStatus``."""

    NONE = "none"
    SETUP = "setup"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    ACTIVE = "active"
    POSTCOPY_ACTIVE = "postcopy-active"
    POSTCOPY_PAUSED = "postcopy-paused"
    POSTCOPY_RECOVER = "postcopy-recover"
    COMPLETED = "completed"
    FAILED = "failed"
    COLO = "colo"
    PRE_SWITCHOVER = "pre-switchover"
    DEVICE = "device"
    WAIT_UNPLUG = "wait-unplug"


IN_PROGRESS: Final = frozenset(
    {MigrationStatus.SETUP, MigrationStatus.ACTIVE, MigrationStatus.CANCELLING}
)


@dataclass(slots=True)
class MigrationStats:
    """qapi/migration.json ``MigrationStats`` (the ``ram`` member of ``query-migrate``)."""

    transferred: int = 0
    remaining: int = 0
    total: int = 0
    duplicate: int = 0
    skipped: int = 0
    normal: int = 0
    normal_bytes: int = 0
    dirty_pages_rate: int = 0
    mbps: float = 0.0
    dirty_sync_count: int = 0
    postcopy_requests: int = 0
    page_size: int = PAGE_SIZE
    multifd_bytes: int = 0
    pages_per_second: int = 0
    precopy_bytes: int = 0
    downtime_bytes: int = 0
    postcopy_bytes: int = 0
    dirty_sync_missed_zero_copy: int = 0


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """qapi/sockets.json ``SocketAddress`` as ``query-migrate`` shows a listening destination."""

    type: str
    host: str | None = None
    port: str | None = None
    ipv4: bool | None = None
    path: str | None = None


@dataclass(slots=True)
class MigrationInfo:
    """qapi/migration.json ``MigrationInfo``; absent members are left out, as QEMU does."""

    status: MigrationStatus | None = None
    ram: MigrationStats | None = None
    total_time: int | None = None
    expected_downtime: int | None = None
    downtime: int | None = None
    setup_time: int | None = None
    error_desc: str | None = None
    socket_address: list[SocketAddress] | None = None


@dataclass(slots=True)
class MigrationParameters:
    """The tunables ``migrate-set-parameters`` changes (qapi/migration.json, QEMU 7.2 defaults)."""

    max_bandwidth: int = 128 << 20  # bytes/s; QEMU MAX_THROTTLE; 0 means no cap
    downtime_limit: int = 300  # ms; QEMU DEFAULT_MIGRATE_SET_DOWNTIME


@dataclass(frozen=True, slots=True)
class MigrationAddress:
    """A parsed migration URI."""

    transport: Literal["tcp", "unix", "file"]
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.transport == "tcp":
            return f"{self.host}:{self.port}"
        return self.path


def parse_uri(uri: str) -> MigrationAddress:
    """Parse ``tcp:HOST:PORT``, ``unix:PATH`` or ``file:PATH`` with QEMU's error texts."""
    scheme, _, rest = uri.partition(":")
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise QMPError(f"error parsing address '{rest}'")
        return MigrationAddress("tcp", host=host.strip("[]"), port=int(port))
    if scheme == "unix":
        if not rest:
            raise QMPError("invalid Unix socket address")
        return MigrationAddress("unix", path=rest)
    if scheme == "file":
        if not rest:
            raise QMPError("invalid file path")
        return MigrationAddress("file", path=rest)
    raise QMPError("Parameter 'uri' expects a valid migration protocol")


BACKGROUND_NICENESS: Final = 10
"""How much lower the CPU priority of the threads that copy pages is (Linux ``nice``)."""

GIL_SWITCH_INTERVAL: Final = 0.0005
"""Seconds a copying thread may hold the GIL while the event loop waits for it (CPython's
default is 5 ms, which alone would put a monitor reply 5 ms late during a migration)."""

log = logging.getLogger("qmonitor.migration")

_executor: ThreadPoolExecutor | None = None


def _lower_priority() -> None:
    """Make the calling thread yield the CPU to the event loop when both want it.

    At full speed the sending and receiving threads each keep a CPU busy; on a small machine
    the event loop (and the monitor's clients) would then wait for a time slice. On Linux a
    thread is a task with its own scheduling policy, so only the copying threads are lowered:
    to SCHED_IDLE where allowed (they run only when nothing else wants the CPU, so a monitor
    request never waits behind them), else by ``nice``.
    """
    if sys.platform != "linux":
        return
    thread_id = threading.get_native_id()
    try:
        os.sched_setscheduler(thread_id, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, thread_id, BACKGROUND_NICENESS)


def migration_executor() -> ThreadPoolExecutor:
    """The threads migration copies pages in: two (an outgoing and an incoming migration),
    at a lower CPU priority than the event loop."""
    global _executor
    if _executor is None:
        # The copying threads hold the GIL between system calls (zero-page checks, records);
        # a short switch interval hands it back to the event loop quickly.
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL))
        _executor = ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="qmonitor-migration", initializer=_lower_priority
        )
    return _executor


class MigrationStreamError(QMonitorError):
    """The incoming stream is not one this machine can load: another format, another RAM
    size, or a damaged record. The migration fails with this text; the machine is not
    started."""


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """The JSON object of a stream's ``what``, or :class:`MigrationStreamError`."""
    try:
        value = json.loads(data)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise MigrationStreamError(f"bad {what}: {exc}") from None
    if not isinstance(value, dict):
        raise MigrationStreamError(f"bad {what}")
    return value


class _Cancelled(Exception):
    """The sender saw ``migrate_cancel``."""


class _Channel:
    """A blocking byte stream (a socket or a file), used from one worker thread at a time."""

    def __init__(self, sock: socket.socket | None = None, file: BinaryIO | None = None) -> None:
        self.sock = sock
        self.file = file
        self.reader: io.BufferedIOBase | None = None
        if sock is not None:
            sock.setblocking(True)
            self.reader = typing.cast(io.BufferedIOBase, sock.makefile("rb", buffering=1 << 16))
        elif isinstance(file, io.BufferedIOBase):
            self.reader = file

    def send(self, data: bytes | memoryview) -> None:
        if self.sock is not None:
            self.sock.sendall(data)
        else:
            assert self.file is not None
            self.file.write(data)

    def read_exact(self, size: int) -> bytes:
        assert self.reader is not None
        data = self.reader.read(size)
        if len(data) != size:
            raise EOFError("the migration stream ended early")
        return data

    def read_into(self, view: memoryview) -> None:
        assert self.reader is not None
        if self.reader.readinto(view) != len(view):
            raise EOFError("the migration stream ended early")

    def finish_file(self) -> None:
        """Flush and fsync a file stream (the whole state must be on disk)."""
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def interrupt(self) -> None:
        """Make blocked I/O in another thread fail at once (migrate_cancel)."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for closable in (self.reader, self.file, self.sock):
            if closable is not None:
                with contextlib.suppress(OSError):
                    closable.close()


def _connect(address: MigrationAddress) -> _Channel:
    """Open the outgoing stream (in a worker thread); QEMU's error texts."""
    try:
        if address.transport == "file":
            return _Channel(file=open(address.path, "wb"))  # _Channel closes it
        if address.transport == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(address.path)
            except OSError:
                sock.close()
                raise
            return _Channel(sock=sock)
        return _Channel(sock=socket.create_connection((address.host, address.port)))
    except OSError as exc:
        verb = "open" if address.transport == "file" else "connect to"
        raise QMPError(f"Failed to {verb} '{address}': {exc.strerror}") from None


def _injected_reset() -> OSError:
    """The error an injected migration failure raises: the peer resetting the connection,
    so the source takes the path of a real socket failure (``failed``, the guest resumed)."""
    return OSError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))


class OutgoingMigration:
    """One run of the source side (see the module docstring)."""

    def __init__(
        self,
        machine: Machine,
        address: MigrationAddress,
        parameters: MigrationParameters,
        notify: Notify,
        yank: YankRegistry,
        fault: FaultRule | None = None,
    ) -> None:
        self.machine = machine
        # An injected failure (docs/TESTING.md, "Injecting faults"): the socket "resets" at
        # the start of that pass, or once that many bytes are sent, as a real one would.
        self._fail_at_pass = fault.at_pass if fault is not None else None
        self._fail_after_bytes = fault.after_bytes if fault is not None else None
        self.address = address
        self.parameters = parameters
        self._yank = yank
        self.status = MigrationStatus.NONE
        self.stats = MigrationStats(total=len(machine.ram))
        self.error_desc: str | None = None
        self.start_time = time.monotonic()
        self.setup_time = 0
        self.total_time = 0
        self.downtime = 0
        self.expected_downtime = 0
        self.done = asyncio.get_running_loop().create_future()
        self._notify = notify
        self._cancel = threading.Event()
        self._channel: _Channel | None = None
        self._pass_pages = 0
        self._pass_done = 0
        self._final_stage = False
        self.converging = True  # see _sync
        self._pending = (0, 0)  # first page and count of data pages not sent yet
        self._window_start = time.monotonic()
        self._window_bytes = 0
        self._window_pages = 0
        self._task: asyncio.Task[None] | None = None

    # -- control ---------------------------------------------------------------------------

    def start(self) -> None:
        """Begin (status ``setup``); the work goes on in a task, which is the yank instance's
        until it ends."""
        self._yank.register(MIGRATION_INSTANCE, self.yank)
        self._set_status(MigrationStatus.SETUP)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="migration")

    def yank(self) -> None:
        """``yank``: shut the connection down, leaving the migration to fail on it."""
        if self._channel is not None:
            self._channel.interrupt()

    def cancel(self) -> None:
        """``migrate_cancel``: stop as soon as possible, leaving the source as it was."""
        if self.status not in (MigrationStatus.SETUP, MigrationStatus.ACTIVE):
            return
        self._set_status(MigrationStatus.CANCELLING)
        self._cancel.set()
        if self._channel is not None:
            self._channel.interrupt()

    async def wait(self) -> None:
        """Wait until the migration has ended, however it ended."""
        await asyncio.shield(self.done)

    @property
    def in_progress(self) -> bool:
        """Whether the migration has not ended yet."""
        return self.status in IN_PROGRESS

    def info(self) -> MigrationInfo:
        """``query-migrate`` (QEMU ``fill_source_migration_info``)."""
        status = self.status
        if status in (MigrationStatus.ACTIVE, MigrationStatus.CANCELLING):
            self.stats.remaining = (
                self._pass_pages - self._pass_done + self.machine.dirty_pages()
            ) * PAGE_SIZE
            return MigrationInfo(
                status=status,
                ram=self.stats,
                total_time=int((time.monotonic() - self.start_time) * 1000),
                expected_downtime=self.expected_downtime,
                setup_time=self.setup_time,
            )
        if status is MigrationStatus.COMPLETED:
            return MigrationInfo(
                status=status,
                ram=self.stats,
                total_time=self.total_time,
                downtime=self.downtime,
                setup_time=self.setup_time,
            )
        if status is MigrationStatus.FAILED:
            return MigrationInfo(status=status, error_desc=self.error_desc)
        return MigrationInfo(status=status)

    def _set_status(self, status: MigrationStatus) -> None:
        self.status = status
        self._notify("MIGRATION", {"status": status.value})

    # -- the migration (event loop side) -----------------------------------------------------

    async def _run(self) -> None:
        machine = self.machine
        try:
            self._channel = await offload(lambda: _connect(self.address))
            if self._cancel.is_set():
                raise _Cancelled
            header = json.dumps(
                {"ram-size": len(machine.ram), "page-size": PAGE_SIZE, "name": machine.name}
            ).encode()
            channel = self._channel
            await offload(lambda: channel.send(MAGIC + _LENGTH.pack(len(header)) + header))
            machine.mark_all_dirty()
            await self._precopy()
            await self._complete()
            self.total_time = int((time.monotonic() - self.start_time) * 1000)
            self._set_status(MigrationStatus.COMPLETED)
        except (_Cancelled, asyncio.CancelledError):
            self._fail(None)
        except (QMPError, OSError, EOFError) as exc:
            self._fail(exc)
        except Exception as exc:  # a bug: still leave the source running, and say so
            log.exception("migration failed unexpectedly")
            self._fail(exc)
        finally:
            if self._channel is not None:
                self._channel.close()
            self._yank.unregister(MIGRATION_INSTANCE)
            if not self.done.done():
                self.done.set_result(None)

    def _fail(self, exc: BaseException | None) -> None:
        """Put the source back as it was; status ``cancelled`` or ``failed``, in QEMU's order.

        QEMU 7.2 migration/migration.c: ``migration_completion`` sets ``failed`` as soon as
        the last pass fails, then ``migration_iteration_finish`` restarts a guest stopped for
        it (RESUME); a cancelled migration is ``cancelling`` until ``migrate_fd_cleanup``,
        which runs after that restart. So: failed, RESUME; but cancelling, RESUME, cancelled.
        """
        cancelled = exc is None or self._cancel.is_set()
        if not cancelled:
            if isinstance(exc, QMPError):
                self.error_desc = exc.desc
            elif isinstance(exc, OSError):
                self.error_desc = f"Unable to write to socket: {exc.strerror or exc}"
            else:
                self.error_desc = str(exc)
            self._set_status(MigrationStatus.FAILED)
        if self.machine.in_transient_state:
            self.machine.leave_transient()
        if cancelled:
            self._set_status(MigrationStatus.CANCELLED)

    def _sync(self) -> bytes:
        """Take the dirty map: one more pass (``MIGRATION_PASS``, ``dirty-sync-count``).

        ``converging`` turns false when a pre-copy pass has no fewer pages to send than the one
        before: the guest dirties memory at least as fast as it is sent, so the passes never
        shrink to what fits in ``downtime-limit`` (QEMU would need ``auto-converge``, a higher
        ``max-bandwidth`` or a stopped guest). A later pass that shrinks makes it true again.
        """
        dirty_map = self.machine.sync_dirty_map()
        self.stats.dirty_sync_count += 1
        self._notify("MIGRATION_PASS", {"pass": self.stats.dirty_sync_count})
        if self.stats.dirty_sync_count == self._fail_at_pass:
            raise _injected_reset()
        previous_pages, self._pass_pages = self._pass_pages, dirty_map.count(1)
        if self.stats.dirty_sync_count > 1 and not self._final_stage:
            self.converging = self._pass_pages < previous_pages
        self._pass_done = 0
        return dirty_map

    async def _precopy(self) -> None:
        machine = self.machine
        last_sync = time.monotonic()
        while True:
            dirty_map = self._sync()
            now = time.monotonic()
            if self.stats.dirty_sync_count == 1:
                self.setup_time = int((now - self.start_time) * 1000)
                self._set_status(MigrationStatus.ACTIVE)
            else:
                self.stats.dirty_pages_rate = int(self._pass_pages / max(now - last_sync, 1e-3))
            last_sync = now
            sent_before = self.stats.transferred
            await offload(functools.partial(self._send_pages, dirty_map), migration_executor())
            elapsed = time.monotonic() - now
            bandwidth = (self.stats.transferred - sent_before) / max(elapsed, 1e-3)
            remaining = machine.dirty_pages() * PAGE_SIZE
            self.expected_downtime = int(remaining / max(bandwidth, 1.0) * 1000)
            if remaining <= bandwidth * self.parameters.downtime_limit / 1000:
                return

    async def _complete(self) -> None:
        """Stop the guest, send what is left and the device state, wait for the destination."""
        machine = self.machine
        machine.enter_transient(RunState.FINISH_MIGRATE)
        stopped_at = time.monotonic()
        self._final_stage = True
        dirty_map = self._sync()
        precopy_bytes = self.stats.transferred
        state = json.dumps(
            {
                "workload-step": machine.workload_step,
                "seed": machine.seed,
                "vm-clock-nsec": machine.guest_clock_ns(),
                "run-state": (machine.resume_state or RunState.PAUSED).value,
            }
        ).encode()
        await offload(functools.partial(self._send_final, dirty_map, state), migration_executor())
        self.downtime = int((time.monotonic() - stopped_at) * 1000)
        self.stats.precopy_bytes = precopy_bytes
        self.stats.downtime_bytes = self.stats.transferred - precopy_bytes
        self.stats.remaining = 0
        machine.leave_transient(RunState.POSTMIGRATE)

    # -- the sender (worker thread side) -----------------------------------------------------

    def _send_final(self, dirty_map: bytes, state: bytes) -> None:
        channel = self._channel
        assert channel is not None
        self._send_pages(dirty_map)
        channel.send(_RECORD.pack(RECORD_END, 0, 0) + _LENGTH.pack(len(state)) + state)
        self.stats.transferred += _RECORD.size + _LENGTH.size + len(state)
        if self.address.transport == "file":
            channel.finish_file()
            return
        if channel.read_exact(1) != ACK:
            raise QMPError("The destination did not confirm the migration")

    def _send_pages(self, dirty_map: bytes) -> None:
        """Send every page marked in ``dirty_map``, a chunk at a time."""
        ram = self.machine.ram
        view = memoryview(ram)
        for run in _RUNS.finditer(dirty_map):
            first, end = run.span()
            while first < end:
                if self._cancel.is_set():
                    raise _Cancelled
                count = min(end - first, self._throttle(view))
                self._send_chunk(ram, view, first, count)
                self._pass_done += count
                first += count
        self._flush(view)

    def _send_chunk(self, ram: GuestRam, view: memoryview, first: int, count: int) -> None:
        """Zero pages go out at once as records; data pages join the pending run."""
        channel = self._channel
        assert channel is not None
        start = first * PAGE_SIZE
        if is_zero(_ZERO_CHUNK, view[start : start + count * PAGE_SIZE]):
            self._send_zero(channel, first, count)
            return
        page_map = data_page_map(ram, first, count)
        for run in _DATA_OR_ZERO_RUNS.finditer(page_map):
            run_first, run_end = run.span()
            if page_map[run_first]:
                self._queue_data(view, first + run_first, run_end - run_first)
            else:
                self._send_zero(channel, first + run_first, run_end - run_first)

    def _send_zero(self, channel: _Channel, first: int, count: int) -> None:
        channel.send(_RECORD.pack(RECORD_ZERO, count, first))
        self.stats.duplicate += count
        self._account(_RECORD.size, count)

    def _queue_data(self, view: memoryview, first: int, count: int) -> None:
        """Add data pages to the pending run, sending it first if they do not extend it.

        Sending runs of up to :data:`MAX_RECORD_PAGES` in one ``sendall`` rather than a
        record per chunk is what brings the copy close to a plain socket copy.
        """
        pending_first, pending_count = self._pending
        if pending_count and (
            pending_first + pending_count != first or pending_count + count > MAX_RECORD_PAGES
        ):
            self._flush(view)
            pending_first, pending_count = first, 0
        elif not pending_count:
            pending_first = first
        self._pending = (pending_first, pending_count + count)
        self.stats.normal += count
        self.stats.normal_bytes += count * PAGE_SIZE
        self._account(count * PAGE_SIZE, count)

    def _flush(self, view: memoryview) -> None:
        """Send the pending run of data pages."""
        first, count = self._pending
        if not count:
            return
        channel = self._channel
        assert channel is not None
        self._pending = (0, 0)
        self._account(_RECORD.size, 0)
        channel.send(_RECORD.pack(RECORD_PAGES, count, first))
        channel.send(view[first * PAGE_SIZE : (first + count) * PAGE_SIZE])

    def _account(self, sent: int, pages: int) -> None:
        self.stats.transferred += sent
        if self._fail_after_bytes is not None and self.stats.transferred > self._fail_after_bytes:
            raise _injected_reset()
        self._window_bytes += sent
        self._window_pages += pages

    def _throttle(self, view: memoryview) -> int:
        """Close the 100 ms window if it is over (updating ``mbps``), waiting if the cap says
        so; return how many pages may be sent next."""
        limit = 0 if self._final_stage else self.parameters.max_bandwidth // XFER_LIMIT_RATIO
        now = time.monotonic()
        window_end = self._window_start + 1 / XFER_LIMIT_RATIO
        if limit and self._window_bytes >= limit and now < window_end:
            self._flush(view)
            if self._cancel.wait(window_end - now):
                raise _Cancelled
            now = time.monotonic()
        if now >= window_end:
            elapsed = now - self._window_start
            self.stats.mbps = round(self._window_bytes * 8 / 1e6 / elapsed, 3)
            self.stats.pages_per_second = int(self._window_pages / elapsed)
            self._window_start = now
            self._window_bytes = 0
            self._window_pages = 0
        if not limit:
            return CHUNK_PAGES
        return max(1, min(CHUNK_PAGES, (limit - self._window_bytes) // PAGE_SIZE))


class IncomingMigration:
    """The destination side: wait for the stream, load it, start the guest (or not)."""

    def __init__(
        self,
        machine: Machine,
        address: MigrationAddress,
        notify: Notify,
        on_failure: Callable[[str], None],
        yank: YankRegistry,
    ) -> None:
        self.machine = machine
        self.address = address
        self._yank = yank
        self.status = MigrationStatus.NONE
        self.error_desc: str | None = None
        self.socket_address: list[SocketAddress] | None = None
        self.done = asyncio.get_running_loop().create_future()
        self._notify = notify
        self._on_failure = on_failure
        self._listener: socket.socket | None = None
        self._channel: _Channel | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen (or open the file) now, so that errors reach the command; load in a task."""
        address = self.address
        try:
            if address.transport == "file":
                self._channel = _Channel(file=open(address.path, "rb"))  # noqa: SIM115
            elif address.transport == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address.path)
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(address.path)
                self._listener = listener
                self.socket_address = [SocketAddress("unix", path=address.path)]
            else:
                listener = socket.create_server((address.host, address.port))
                self._listener = listener
                host, port = listener.getsockname()[:2]
                self.socket_address = [
                    SocketAddress(
                        "inet", host=host, port=str(port), ipv4=listener.family == socket.AF_INET
                    )
                ]
        except OSError as exc:
            raise QMPError(f"Failed to bind socket: {exc.strerror}") from None
        if self._listener is not None:
            self._listener.listen(1)
            self._listener.setblocking(False)
        self._yank.register(MIGRATION_INSTANCE, self.yank)
        self._set_status(MigrationStatus.SETUP)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="incoming")

    def yank(self) -> None:
        """``yank``: shut the accepted connection down (nothing while still listening)."""
        if self._channel is not None:
            self._channel.interrupt()

    def _release_yank_instance(self) -> None:
        if MIGRATION_INSTANCE in self._yank:
            self._yank.unregister(MIGRATION_INSTANCE)

    def info(self) -> MigrationInfo:
        """``query-migrate`` on the destination (QEMU ``fill_destination_migration_info``)."""
        status = None if self.status is MigrationStatus.NONE else self.status
        return MigrationInfo(
            status=status,
            socket_address=self.socket_address if self._listener is not None else None,
            error_desc=self.error_desc if status is MigrationStatus.FAILED else None,
        )

    def _set_status(self, status: MigrationStatus) -> None:
        self.status = status
        self._notify("MIGRATION", {"status": status.value})

    async def close(self) -> None:
        """Stop waiting or loading (the process is going away)."""
        if self._channel is not None:
            self._channel.interrupt()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._close_listener()
        self._release_yank_instance()  # also when the task was cancelled before it ran

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            if self.address.transport == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.address.path)

    async def _run(self) -> None:
        try:
            if self._listener is not None:
                loop = asyncio.get_running_loop()
                connection, _ = await loop.sock_accept(self._listener)
                self._close_listener()
                self._channel = _Channel(sock=connection)
            self._set_status(MigrationStatus.ACTIVE)
            channel = self._channel
            assert channel is not None
            state = await offload(lambda: self._receive(channel), migration_executor())
            self._apply(state)
            if self.address.transport != "file":
                await offload(lambda: channel.send(ACK))
            self._set_status(MigrationStatus.COMPLETED)
        except (
            QMPError,
            MigrationStreamError,
            OSError,
            EOFError,
            ValueError,
            KeyError,
            TypeError,
        ) as exc:
            # ValueError, KeyError, TypeError: device state with a member of the wrong kind.
            self.error_desc = exc.desc if isinstance(exc, QMPError) else str(exc)
            self._set_status(MigrationStatus.FAILED)
            self._on_failure(self.error_desc)
        finally:
            if self._channel is not None:
                self._channel.close()
            self._release_yank_instance()
            if not self.done.done():
                self.done.set_result(None)

    def _receive(self, channel: _Channel) -> dict[str, Any]:
        """Read the whole stream into guest RAM (worker thread); return the device state."""
        ram = self.machine.ram
        if channel.read_exact(len(MAGIC)) != MAGIC:
            raise MigrationStreamError("not a qmonitor migration stream")
        (length,) = _LENGTH.unpack(channel.read_exact(_LENGTH.size))
        header = _json_object(channel.read_exact(length), "header")
        if header.get("ram-size") != len(ram) or header.get("page-size") != PAGE_SIZE:
            raise MigrationStreamError(
                f"RAM size mismatch: the source has {header.get('ram-size')} bytes, "
                f"this VM has {len(ram)}"
            )
        view = memoryview(ram)
        pages = len(ram) // PAGE_SIZE
        while True:
            kind, count, first = _RECORD.unpack(channel.read_exact(_RECORD.size))
            if kind == RECORD_END:
                (length,) = _LENGTH.unpack(channel.read_exact(_LENGTH.size))
                return _json_object(channel.read_exact(length), "device state")
            if first + count > pages or kind not in (RECORD_PAGES, RECORD_ZERO):
                raise MigrationStreamError(f"bad record {kind} for pages {first}..{first + count}")
            start, end = first * PAGE_SIZE, (first + count) * PAGE_SIZE
            if kind == RECORD_PAGES:
                channel.read_into(view[start:end])
            elif not is_zero(_ZERO_CHUNK, view[start:end]):
                view[start:end] = bytes(end - start)

    def _apply(self, state: dict[str, Any]) -> None:
        """Take the device state; start the guest if QEMU would.

        migration/migration.c ``process_incoming_migration_bh``: a guest that ran on the
        source runs here unless ``-S`` (autostart off); otherwise it keeps the source's state.
        """
        machine = self.machine
        machine.workload_step = int(state["workload-step"])
        machine.seed = int(state["seed"])
        machine.vm_clock_ns = int(state["vm-clock-nsec"])
        machine.mark_all_dirty()
        source_state = RunState(state.get("run-state", RunState.RUNNING.value))
        if source_state is RunState.RUNNING:
            machine.set_run_state(RunState.RUNNING if machine.autostart else RunState.PAUSED)
        elif source_state in (RunState.PRELAUNCH, RunState.SUSPENDED):
            machine.set_run_state(source_state)
        else:
            machine.set_run_state(RunState.PAUSED)


@dataclass(slots=True)
class MigrationManager:
    """The migration state of one machine: parameters, capabilities, the current migrations."""

    machine: Machine
    emit: Callable[[str, dict[str, Any]], None]
    on_incoming_failure: Callable[[str], None]
    yank: YankRegistry = field(default_factory=YankRegistry)  # the monitor's, to be yankable
    parameters: MigrationParameters = field(default_factory=MigrationParameters)
    events: bool = False  # the "events" capability
    outgoing: OutgoingMigration | None = None
    incoming: IncomingMigration | None = None
    faults: FaultPoint | None = None  # asked once per outgoing migration
    incoming_started: bool = False
    # Where file: URIs may point (--allow-path and the state directory); None: anywhere.
    file_paths: PathConfinement | None = None

    def _confined(self, address: MigrationAddress) -> MigrationAddress:
        """``address`` with a ``file:`` path resolved inside :attr:`file_paths` (QMPError
        outside them, before anything is opened)."""
        if address.transport != "file" or self.file_paths is None:
            return address
        return dataclasses.replace(address, path=self.file_paths.resolve(address.path))

    def _notify(self, name: str, data: dict[str, Any]) -> None:
        if self.events:
            self.emit(name, data)

    def start_outgoing(self, uri: str) -> OutgoingMigration:
        """``migrate``: checks in QEMU's order (migration.c ``migrate_prepare``), then start."""
        if self.outgoing is not None and self.outgoing.in_progress:
            raise QMPError("There's a migration process in progress")
        if self.machine.run_state is RunState.INMIGRATE:
            raise QMPError("Guest is waiting for an incoming migration")
        if self.machine.in_transient_state:
            raise QMPError(f"The VM is busy ({self.machine.run_state})")
        try:
            address = parse_uri(uri)
        except QMPError:
            self._notify("MIGRATION", {"status": MigrationStatus.SETUP.value})
            self._notify("MIGRATION", {"status": MigrationStatus.FAILED.value})
            raise
        address = self._confined(address)
        fault = self.faults.migration_fault() if self.faults is not None else None
        self.outgoing = OutgoingMigration(
            self.machine, address, self.parameters, self._notify, self.yank, fault
        )
        self.outgoing.start()
        return self.outgoing

    def cancel(self) -> None:
        """``migrate_cancel``: a no-op when nothing is migrating."""
        if self.outgoing is not None:
            self.outgoing.cancel()

    async def start_incoming(self, uri: str) -> None:
        """``migrate-incoming`` (and ``-incoming URI`` at startup)."""
        if self.incoming_started:
            raise QMPError("The incoming migration has already been started")
        if self.machine.run_state is not RunState.INMIGRATE:
            raise QMPError("'-incoming' was not specified on the command line")
        address = self._confined(parse_uri(uri))
        incoming = IncomingMigration(
            self.machine, address, self._notify, self.on_incoming_failure, self.yank
        )
        await incoming.start()
        self.incoming = incoming
        self.incoming_started = True

    def info(self) -> MigrationInfo:
        """``query-migrate``: the source's view if this machine migrated out, else the
        destination's (QEMU fills the destination's first, then the source's over it)."""
        if self.outgoing is not None:
            return self.outgoing.info()
        if self.incoming is not None:
            return self.incoming.info()
        return MigrationInfo()

    async def close(self) -> None:
        """Cancel what is in flight and wait for it (shutdown)."""
        if self.outgoing is not None:
            self.outgoing.cancel()
            await self.outgoing.wait()
        if self.incoming is not None:
            await self.incoming.close()
