"""The blocking byte streams migration runs over (sockets, files, passed descriptors) and the
worker threads that copy pages through them."""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import io
import os
import re
import select
import socket
import stat
import sys
import termios
import threading
import typing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Final

from qmonitor import QMPError
from qmonitor.machine.migration.uri import MigrationAddress

TakeNamedFd = Callable[[str], int]
"""Gives up the monitor's descriptor called NAME to the caller, or raises QEMU's error
(monitor/misc.c ``monitor_get_fd``): the names of the monitor the command came from."""

_INT_MAX: Final = 2**31 - 1
_STRTOL_NUMBER = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+")


def parse_fd_number(text: str) -> int:
    """util/osdep.c ``qemu_parse_fd``: ``strtol`` base 10, whole string, 0..INT_MAX."""
    if _STRTOL_NUMBER.fullmatch(text) is None or not 0 <= int(text) <= _INT_MAX:
        raise QMPError(f"Invalid file descriptor number '{text}'")
    return int(text)


def incoming_fd(text: str, take_named_fd: TakeNamedFd | None) -> int:
    """The descriptor of ``migrate-incoming fd:TEXT`` (monitor/misc.c ``monitor_fd_param``).

    A name (not starting with a digit) is taken from the monitor's; a number is a descriptor
    the process inherited (libvirt's ``virsh restore``). Without a monitor (``-incoming`` on
    the command line) every text is read as a number.
    """
    if take_named_fd is not None and not (text[:1].isdigit() and text[:1].isascii()):
        return take_named_fd(text)
    return parse_fd_number(text)


BACKGROUND_NICENESS: Final = 10
"""How much lower the CPU priority of the threads that copy pages is (Linux ``nice``)."""

GIL_SWITCH_INTERVAL: Final = 0.0005
"""Seconds a copying thread may hold the GIL while the event loop waits for it (CPython's
default is 5 ms, which alone would put a monitor reply 5 ms late during a migration)."""

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


_HOST_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")  # a pipe buffer's unit


class _Descriptor(io.RawIOBase):
    """A passed descriptor that is not a socket (a pipe, a file), interruptible.

    A blocked read or write on a pipe cannot be woken by another thread, and QEMU cannot shut a
    pipe down either (only socket channels have ``qio_channel_shutdown``); but a migration to a
    pipe whose reader stopped reading must still be cancellable, and ``quit`` must not wait for
    it. So every read and write first waits in ``poll`` for the descriptor and for a wake-up
    pipe, and a write to a pipe is no longer than the room the pipe has (:meth:`_pipe_room`),
    so that it does not block. :meth:`interrupt` then acts as a socket's ``shutdown``: reads
    see the end of the stream, writes fail with EPIPE.
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._wake_reader, self._wake_writer = os.pipe()
        self._pipe_size = 0  # bytes the pipe holds (F_GETPIPE_SZ); 0: not a pipe
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            self._pipe_size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)

    def _pipe_room(self) -> int:
        """Bytes the pipe, reported writable, takes without blocking.

        Its size less what it holds (FIONREAD), less one page: a pipe keeps its bytes in pages,
        and the one its reader is part-way through still takes a whole page. At least
        ``PIPE_BUF``: a pipe is reported writable once a page is free.
        """
        queued = array.array("i", [0])
        fcntl.ioctl(self._fd, termios.FIONREAD, queued)
        return max(self._pipe_size - queued[0] - _HOST_PAGE_SIZE, select.PIPE_BUF)

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def _ready(self, event: int) -> bool:
        """Wait until the descriptor is ready for ``event``; False once interrupted."""
        poller = select.poll()
        poller.register(self._fd, event)
        poller.register(self._wake_reader, select.POLLIN)
        return all(fd != self._wake_reader for fd, _ in poller.poll())

    def readinto(self, buffer: typing.Any) -> int:
        if not self._ready(select.POLLIN):
            return 0
        return os.readv(self._fd, [buffer])

    def write(self, data: typing.Any) -> int:
        if not self._ready(select.POLLOUT):
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
        size = self._pipe_room() if self._pipe_size else len(data)
        return os.write(self._fd, memoryview(data)[:size])

    def interrupt(self) -> None:
        """Make waiting I/O, and all I/O after it, stop (see the class docstring)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_writer, b"\0")

    def close(self) -> None:
        if not self.closed:
            for fd in (self._fd, self._wake_reader, self._wake_writer):
                with contextlib.suppress(OSError):
                    os.close(fd)
        super().close()


class _Channel:
    """A blocking byte stream (a socket, a file, or a passed :class:`_Descriptor`), used from
    one worker thread at a time."""

    def __init__(
        self,
        sock: socket.socket | None = None,
        file: BinaryIO | None = None,
        descriptor: _Descriptor | None = None,
    ) -> None:
        self.sock = sock
        self.file = file
        self.descriptor = descriptor
        self.reader: io.BufferedIOBase | None = None
        if descriptor is not None:
            self.reader = io.BufferedReader(descriptor, buffer_size=1 << 16)
            self.file = typing.cast(BinaryIO, io.BufferedWriter(descriptor, buffer_size=1 << 16))
        elif sock is not None:
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

    def finish(self, address: MigrationAddress) -> None:
        """Write out what is buffered; fsync a ``file:`` stream (the whole state must be on
        disk). A passed descriptor is not synced: QEMU does not, and its owner decides (libvirt
        syncs the saved image itself)."""
        if self.file is not None:
            self.file.flush()
            if address.transport == "file":
                os.fsync(self.file.fileno())

    def interrupt(self) -> None:
        """Make blocked I/O in another thread fail at once (migrate_cancel)."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        if self.descriptor is not None:
            self.descriptor.interrupt()

    def close(self) -> None:
        # The writer first: closing the reader of a descriptor closes the descriptor under it.
        for closable in (self.file, self.reader, self.descriptor, self.sock):
            if closable is not None:
                with contextlib.suppress(OSError):
                    closable.close()


def fd_channel(fd: int) -> _Channel:
    """The stream over a passed descriptor, which it owns from here (io/channel-util.c
    ``qio_channel_new_fd``): a socket if it is one, so that cancel and yank shut it down,
    else a :class:`_Descriptor`. QMPError if ``fd`` is not open (it is then not closed)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise QMPError(f"Unable to use file descriptor {fd}: {exc.strerror}") from None
    if stat.S_ISSOCK(mode):
        return _Channel(sock=socket.socket(fileno=fd))
    return _Channel(descriptor=_Descriptor(fd))


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
