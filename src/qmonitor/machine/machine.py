"""The simulated machine: name, uuid, run state, RAM with a dirty-page map, and a guest workload.

The machine exists so that snapshots and migration have real state to carry and real work to
do. Its RAM is anonymous memory (:func:`allocate_ram`) of 4 KiB pages (QEMU's
``TARGET_PAGE_SIZE`` on x86), which the kernel zero-fills when a page is first touched. While the
run state is ``running``, a deterministic guest workload writes pages at the configured dirty
rate: step *n* writes page ``(n * STRIDE + seed) mod pages`` with 4 KiB derived from
``(seed, n)``. So the RAM is a pure function of the seed and the number of steps taken, and
``x-query-ram-digest`` (SHA-256 of the RAM plus the step count) proves that a migration or a
``loadvm`` carried the state bit for bit. ``STRIDE`` is a prime larger than any page count, so
the first ``pages`` steps touch every page exactly once, in a scattered order.

Every write marks its page in :attr:`Machine.dirty` (one byte per page, 1 = dirty: QEMU keeps a
bitmap, a byte map lets ``bytes.count`` and ``re.finditer`` find dirty runs at C speed);
migration takes and clears it with :meth:`Machine.sync_dirty_map` (QEMU's
``migration_bitmap_sync``).

Threads: the workload runs on the event loop, in ticks short enough to keep the monitor
responsive. Heavy readers of the RAM (hashing, snapshot writing, migration) run in worker
threads; they either read while the guest is stopped, or rely on the dirty map to resend pages
written meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from enum import StrEnum
from typing import Final, TypeAlias, TypeVar

T = TypeVar("T")

PAGE_SIZE: Final = 4096
"""Bytes per guest page (x86 ``TARGET_PAGE_SIZE``)."""

STRIDE: Final = 2_654_435_761
"""Step n writes page (n * STRIDE + seed) % pages; a prime (Knuth's multiplicative hash
constant), so coprime with any page count below it (16 TiB of RAM)."""

WORKLOAD_TICK: Final = 0.01
"""Seconds between two workload bursts."""

MAX_PAGES_PER_TICK: Final = 2048
"""A burst writes at most this many pages (about 2 ms of work), so the event loop keeps serving
monitors; a faster dirty rate than this allows is simply not reached."""

_PAGE_PATTERN: Final = struct.Struct("<4sIQ")  # b"QMON", seed, step: 16 bytes, never all zero
ZERO_PAGE: Final = bytes(PAGE_SIZE)
_NONZERO_TO_ONE: Final = bytes([0] + [1] * 255)


def random_uuid() -> str:
    """A random (version 4) UUID, as ``str(uuid.uuid4())`` writes it (RFC 4122 section 4.4:
    version bits 0100, variant bits 10), made here because the ``uuid`` module imports
    ``platform``, a few ms of start-up before the greeting."""
    octets = bytearray(os.urandom(16))
    octets[6] = octets[6] & 0x0F | 0x40
    octets[8] = octets[8] & 0x3F | 0x80
    digits = octets.hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


class RunState(StrEnum):
    """QEMU's ``RunState`` (qapi/run-state.json)."""

    DEBUG = "debug"
    INMIGRATE = "inmigrate"
    INTERNAL_ERROR = "internal-error"
    IO_ERROR = "io-error"
    PAUSED = "paused"
    POSTMIGRATE = "postmigrate"
    PRELAUNCH = "prelaunch"
    FINISH_MIGRATE = "finish-migrate"
    RESTORE_VM = "restore-vm"
    RUNNING = "running"
    SAVE_VM = "save-vm"
    SHUTDOWN = "shutdown"
    SUSPENDED = "suspended"
    WATCHDOG = "watchdog"
    GUEST_PANICKED = "guest-panicked"
    COLO = "colo"


NEEDS_RESET: Final = frozenset(
    {RunState.INTERNAL_ERROR, RunState.SHUTDOWN, RunState.GUEST_PANICKED}
)
"""States ``cont`` refuses until ``system_reset`` (softmmu/runstate.c ``runstate_needs_reset``)."""


def parse_size(text: str, default_suffix: str = "") -> int:
    """A size with an optional K/M/G/T suffix (powers of 1024), like QEMU's ``qemu_strtosz``."""
    multipliers = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip()
    suffix = text[-1:].upper() if text[-1:].isalpha() else default_suffix
    number = text[:-1] if text[-1:].isalpha() else text
    if suffix not in multipliers:
        raise ValueError(f"invalid size suffix in '{text}'")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"invalid size '{text}'") from None
    if value < 0:
        raise ValueError(f"size '{text}' is negative")
    return int(value * multipliers[suffix])


def page_content(seed: int, step: int) -> bytes:
    """The 4 KiB that workload step ``step`` writes."""
    return _PAGE_PATTERN.pack(b"QMON", seed & 0xFFFFFFFF, step) * (PAGE_SIZE // 16)


GuestRam: TypeAlias = mmap.mmap | bytearray
"""Guest RAM: what :func:`allocate_ram` returns (both index, slice and export their buffer)."""


def allocate_ram(size: int) -> GuestRam:
    """``size`` bytes of zeroed guest RAM that costs nothing until a page is written.

    QEMU maps guest RAM anonymously (util/mmap-alloc.c ``qemu_ram_mmap``: ``MAP_PRIVATE |
    MAP_ANONYMOUS``) and the kernel provides a zero page on first touch, so an idle guest's RAM
    is not resident. A ``bytearray`` would be zeroed, hence resident, at once. Raises
    :class:`MemoryError` when the host refuses the mapping, as ``bytearray`` would. No RAM
    (``-machine none`` without ``-m``) is an empty ``bytearray``: a mapping cannot be empty.
    """
    if size == 0:
        return bytearray()
    try:
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError as exc:
        if exc.errno == errno.ENOMEM:
            raise MemoryError(size) from None
        raise


def is_zero(zeros: bytes, data: memoryview) -> bool:
    """Whether ``data`` is all zero bytes, given ``zeros`` at least as long (else false).

    ``bytes.startswith`` takes any buffer and compares with ``memcmp`` without a copy, which
    ``memoryview.__eq__`` (byte by byte) and slicing an ``mmap`` (a copy) do not.
    """
    return zeros.startswith(data)


def data_page_map(ram: GuestRam, first: int, count: int) -> bytearray:
    """One byte per page of ``ram[first:first + count]``: 1 if it holds data, 0 if all zero.

    QEMU tests every page with ``buffer_is_zero``; here the first byte of every page is read in
    one strided slice (C speed), and only pages starting with a zero byte are compared in full.
    """
    start = first * PAGE_SIZE
    page_map = bytearray(
        ram[start : start + count * PAGE_SIZE : PAGE_SIZE].translate(_NONZERO_TO_ONE)
    )
    view = memoryview(ram)
    index = page_map.find(0)
    while index != -1:
        offset = start + index * PAGE_SIZE
        if not is_zero(ZERO_PAGE, view[offset : offset + PAGE_SIZE]):
            page_map[index] = 1
        index = page_map.find(0, index + 1)
    return page_map


class Machine:
    """The state of the simulated VM (see the module docstring).

    ``autostart`` is QEMU's flag of the same name: whether the guest starts running when an
    incoming migration completes (false with ``-S``).
    """

    def __init__(
        self,
        name: str | None = "vm0",
        *,
        ram_size: int = 128 << 20,
        start_paused: bool = False,
        incoming: bool = False,
        dirty_rate: int = 0,
        seed: int = 0,
    ) -> None:
        if ram_size < 0 or ram_size % PAGE_SIZE:
            raise ValueError(f"RAM size must be a multiple of {PAGE_SIZE} bytes")
        self.name = name
        self.uuid = random_uuid()
        self.ram = allocate_ram(ram_size)
        self.pages = ram_size // PAGE_SIZE
        self.dirty = bytearray(self.pages)
        self.seed = seed
        self.workload_step = 0
        self.dirty_rate = dirty_rate
        self._workload_wakeup = asyncio.Event()
        self.autostart = not start_paused
        if incoming:
            self.run_state = RunState.INMIGRATE
        else:
            self.run_state = RunState.PRELAUNCH if start_paused else RunState.RUNNING
        self.vm_clock_ns = 0  # guest time: advances only while running (QEMU_CLOCK_VIRTUAL)
        self._running_since: float | None = None
        self._resume_state: RunState | None = None
        self._freeze_count = 0
        self._state_listeners: list[Callable[[RunState, RunState], None]] = []
        self._workload_task: asyncio.Task[None] | None = None
        if self.running:
            self._running_since = time.monotonic()

    # -- run state -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the guest's vCPUs run (``query-status`` ``running``)."""
        return self.run_state is RunState.RUNNING

    def add_state_listener(self, listener: Callable[[RunState, RunState], None]) -> None:
        """Call ``listener(old, new)`` on every run state change."""
        self._state_listeners.append(listener)

    def set_run_state(self, new_state: RunState) -> None:
        """Move to ``new_state``; the guest clock runs only in ``running``."""
        old_state, self.run_state = self.run_state, new_state
        if old_state is new_state:
            return
        now = time.monotonic()
        if self._running_since is not None:
            self.vm_clock_ns += int((now - self._running_since) * 1e9)
            self._running_since = None
        if new_state is RunState.RUNNING:
            self._running_since = now
        self._workload_wakeup.set()
        for listener in self._state_listeners:
            listener(old_state, new_state)

    @property
    def in_transient_state(self) -> bool:
        """Whether a snapshot or the end of a migration holds the guest (see below)."""
        return self._resume_state is not None

    def enter_transient(self, state: RunState) -> None:
        """Hold the guest in ``save-vm``, ``restore-vm`` or ``finish-migrate`` for a while.

        QEMU does this with the big lock held, so no command can run meanwhile; here other
        commands do run, so the state to go back to is kept and ``stop`` may change it.
        """
        if self._resume_state is not None:
            raise RuntimeError(f"the VM is already held in '{self.run_state}'")
        self._resume_state = self.run_state
        self.set_run_state(state)

    @property
    def resume_state(self) -> RunState | None:
        """The state :meth:`leave_transient` goes back to, while in a transient state."""
        return self._resume_state

    def request_stop_after_transient(self) -> None:
        """``stop`` during a transient state: come back paused rather than running."""
        if self._resume_state is RunState.RUNNING:
            self._resume_state = RunState.PAUSED

    def leave_transient(self, state: RunState | None = None) -> None:
        """Go back to the state before :meth:`enter_transient` (or to ``state``)."""
        resume_state, self._resume_state = self._resume_state, None
        assert resume_state is not None
        self.set_run_state(state or resume_state)

    def guest_clock_ns(self) -> int:
        """The guest's virtual clock: nanoseconds it has spent running."""
        extra = 0
        if self._running_since is not None:
            extra = int((time.monotonic() - self._running_since) * 1e9)
        return self.vm_clock_ns + extra

    # -- the workload ----------------------------------------------------------------------

    def advance(self, steps: int) -> None:
        """Take ``steps`` workload steps: write their pages and mark them dirty."""
        ram, dirty, pages, seed = self.ram, self.dirty, self.pages, self.seed
        first = self.workload_step
        for step in range(first, first + steps):
            page = (step * STRIDE + seed) % pages
            offset = page * PAGE_SIZE
            ram[offset : offset + PAGE_SIZE] = page_content(seed, step)
            dirty[page] = 1
        self.workload_step += steps

    def start_workload(self) -> None:
        """Run the guest workload on the running event loop until :meth:`close`."""
        if self._workload_task is None:
            self._workload_task = asyncio.get_running_loop().create_task(
                self._workload(), name="guest-workload"
            )

    def _workload_active(self) -> bool:
        return self.running and not self._freeze_count and self.dirty_rate > 0 and self.pages > 0

    async def _workload(self) -> None:
        # Ticks only while the guest runs and writes: an idle or paused machine costs no CPU
        # (it waits for a run state change or the end of a freeze instead of polling).
        while True:
            if not self._workload_active():
                self._workload_wakeup.clear()
                await self._workload_wakeup.wait()
                continue
            budget = 0.0
            last = time.monotonic()
            while True:
                await asyncio.sleep(WORKLOAD_TICK)
                if not self._workload_active():
                    break
                now = time.monotonic()
                elapsed, last = now - last, now
                budget += self.dirty_rate * elapsed / PAGE_SIZE
                steps = min(int(budget), MAX_PAGES_PER_TICK)
                budget = min(budget - steps, float(MAX_PAGES_PER_TICK))
                if steps:
                    self.advance(steps)

    @contextlib.contextmanager
    def workload_frozen(self) -> Iterator[None]:
        """Hold the workload still (the guest is not told: its clock keeps running)."""
        self._freeze_count += 1
        try:
            yield
        finally:
            self._freeze_count -= 1
            self._workload_wakeup.set()

    async def digest(self) -> tuple[str, int]:
        """SHA-256 of the RAM and the workload step it belongs to, hashed off the loop."""
        with self.workload_frozen():
            step = self.workload_step
            import hashlib  # for this command only (start-up time)

            digest = await offload(lambda: hashlib.sha256(self.ram).hexdigest())
        return digest, step

    # -- dirty tracking and whole-state replacement ----------------------------------------

    def mark_all_dirty(self) -> None:
        """Every page needs sending (the start of a migration)."""
        self.dirty = bytearray(b"\x01") * self.pages

    def sync_dirty_map(self) -> bytes:
        """Take the dirty map and start a clean one (QEMU's ``migration_bitmap_sync``)."""
        taken = bytes(self.dirty)
        self.dirty = bytearray(self.pages)
        return taken

    def dirty_pages(self) -> int:
        """How many pages are dirty now."""
        return self.dirty.count(1)

    def replace_state(self, ram: GuestRam, workload_step: int, seed: int, vm_clock_ns: int) -> None:
        """Take a whole new guest state (a loaded snapshot)."""
        if len(ram) != len(self.ram):
            raise ValueError("RAM size mismatch")
        self.ram = ram
        self.workload_step = workload_step
        self.seed = seed
        self.vm_clock_ns = vm_clock_ns
        if self._running_since is not None:
            self._running_since = time.monotonic()
        self.mark_all_dirty()

    async def close(self) -> None:
        """Stop the workload."""
        if self._workload_task is not None:
            self._workload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._workload_task
            self._workload_task = None


async def offload(function: Callable[[], T], executor: Executor | None = None) -> T:
    """Run ``function`` in a worker thread; if cancelled, let it finish before re-raising.

    ``asyncio.to_thread`` abandons the thread on cancellation while it keeps running, which
    would let cleanup code (deleting a half-written snapshot, restoring the run state) race
    with it. Cancellation still lands here, at the next checkpoint after the thread returns.
    ``executor`` defaults to the loop's default thread pool.
    """
    future = asyncio.get_running_loop().run_in_executor(executor, function)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise
