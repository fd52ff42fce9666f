"""The source side of a migration: iterative pre-copy (see :mod:`qmonitor.machine.migration`)."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import re
import threading
import time
from typing import Final

from qmonitor import MIGRATION_INSTANCE, FaultRule, QMPError, YankRegistry
from qmonitor.machine.machine import (
    PAGE_SIZE,
    GuestRam,
    Machine,
    RunState,
    data_page_map,
    is_zero,
    offload,
)
from qmonitor.machine.migration.channel import _Channel, _connect, migration_executor
from qmonitor.machine.migration.types import (
    IN_PROGRESS,
    MigrationInfo,
    MigrationParameters,
    MigrationStats,
    MigrationStatus,
    Notify,
)
from qmonitor.machine.migration.uri import MigrationAddress
from qmonitor.machine.migration.wire import (
    _ZERO_CHUNK,
    ACK,
    CHUNK_PAGES,
    MAX_RECORD_PAGES,
    RECORD_SIZE,
    end_record,
    pages_record,
    stream_header,
    zero_record,
)

log = logging.getLogger("qmonitor.migration")

XFER_LIMIT_RATIO: Final = 10
"""QEMU migration.c: the bandwidth cap is applied per 1/10 s window."""

_RUNS = re.compile(rb"\x01+")
_DATA_OR_ZERO_RUNS = re.compile(rb"\x01+|\x00+")


class _Cancelled(Exception):
    """The sender saw ``migrate_cancel``."""


def _injected_reset() -> OSError:
    """The error an injected migration failure raises: the peer resetting the connection,
    so the source takes the path of a real socket failure (``failed``, the guest resumed)."""
    return OSError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))


class OutgoingMigration:
    """One run of the source side (see :mod:`qmonitor.machine.migration`)."""

    def __init__(
        self,
        machine: Machine,
        address: MigrationAddress,
        parameters: MigrationParameters,
        notify: Notify,
        yank: YankRegistry,
        fault: FaultRule | None = None,
        channel: _Channel | None = None,
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
        self._channel = channel  # given for fd:, opened by the migration otherwise
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
            if self._channel is None:
                self._channel = await offload(lambda: _connect(self.address))
            if self._cancel.is_set():
                raise _Cancelled
            header = stream_header(len(machine.ram), machine.name)
            channel = self._channel
            await offload(lambda: channel.send(header))
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
        end = end_record(
            {
                "workload-step": machine.workload_step,
                "seed": machine.seed,
                "vm-clock-nsec": machine.guest_clock_ns(),
                "run-state": (machine.resume_state or RunState.PAUSED).value,
            }
        )
        await offload(functools.partial(self._send_final, dirty_map, end), migration_executor())
        self.downtime = int((time.monotonic() - stopped_at) * 1000)
        self.stats.precopy_bytes = precopy_bytes
        self.stats.downtime_bytes = self.stats.transferred - precopy_bytes
        self.stats.remaining = 0
        machine.leave_transient(RunState.POSTMIGRATE)

    # -- the sender (worker thread side) -----------------------------------------------------

    def _send_final(self, dirty_map: bytes, end: bytes) -> None:
        """The last dirty pages, then ``end`` (:func:`~.wire.end_record`: the device state)."""
        channel = self._channel
        assert channel is not None
        self._send_pages(dirty_map)
        channel.send(end)
        self.stats.transferred += len(end)
        if self.address.one_way:
            channel.finish(self.address)
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
        channel.send(zero_record(first, count))
        self.stats.duplicate += count
        self._account(RECORD_SIZE, count)

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
        self._account(RECORD_SIZE, 0)
        channel.send(pages_record(first, count))
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
