"""Chardev backends on the host: ``file``, ``pipe``, ``pty``, and the in-memory ``ringbuf``.

QEMU opens a chardev when it creates it, monitor or not (chardev/char.c ``qemu_chardev_new``),
so these are opened at start-up, in command-line order, with QEMU's errors:

- ``file,path=P[,append=on]`` (chardev/char-file.c): ``P`` created 0666 (less the umask) and
  truncated, or appended to; written, never read.
- ``pipe,path=P`` (chardev/char-pipe.c): ``P.in`` to read and ``P.out`` to write when both
  open, else ``P`` for both; opened read-write, so opening a FIFO does not wait for its other
  end.
- ``pty`` (chardev/char-pty.c): a new pseudo-terminal in raw mode; QEMU prints ``char device
  redirected to /dev/pts/N (label ID)`` on standard output (``qemu_printf`` outside a
  monitor), and ``query-chardev`` says ``pty:/dev/pts/N``.
- ``ringbuf``/``memory`` (chardev/char-ringbuf.c): a ring of ``size`` bytes (a power of two)
  that keeps the newest bytes written; QMP ``ringbuf-write``/``ringbuf-read`` write into it and
  take from it.

A monitor on one of them is a real one (:func:`serve_on_backend`): on a ``file`` or a ring it
writes its output there and reads nothing (its banner or greeting is what the file or ring then
holds, as in QEMU); on a ``pipe`` it reads ``P.in`` and writes ``P.out``; on a ``pty`` a session
starts each time a program opens the terminal's other side, and ends when it closes it, as
char-pty.c's connection polling makes QEMU's monitor see ``CHR_EVENT_OPENED`` and ``CLOSED``
(it checks for the other side once a second: ``pty_chr_rearm_timer``). A ``null`` chardev
takes a monitor and does nothing with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from qmonitor.core.errors import QMonitorError
from qmonitor.server.listen import Address
from qmonitor.server.ringbuf import RingBuffer

if TYPE_CHECKING:
    from qmonitor.server.hmp_session import HMPSession
    from qmonitor.server.monitor import Monitor
    from qmonitor.server.qmp_session import QMPSession

PTY_POLL_SECONDS: Final = 1.0
"""How often a pty without a connected program is checked for one (char-pty.c: 1000 ms)."""


class BackendError(QMonitorError):
    """A backend QEMU could not open: ``str()`` is QEMU's text after the option's location."""


@dataclass(slots=True)
class OpenedBackend:
    """One backend opened for a chardev: its descriptors, its ring, its pty's name."""

    label: str
    kind: str
    read_fd: int | None = None
    write_fd: int | None = None
    ring: RingBuffer | None = None
    device: str | None = None  # a pty's /dev/pts/N

    def close(self) -> None:
        """Close its descriptors (once)."""
        for fd in {self.read_fd, self.write_fd} - {None}:
            assert fd is not None
            with contextlib.suppress(OSError):
                os.close(fd)
        self.read_fd = self.write_fd = None


def _could_not_open(path: str, exc: OSError) -> BackendError:
    """util/osdep.c ``qemu_open_internal``: QEMU's text for a file it cannot open."""
    return BackendError(f"Could not open '{path}': {os.strerror(exc.errno or 0)}")


def open_backend(
    label: str, kind: str, *, path: str | None = None, append: bool = False, size: int = 0
) -> OpenedBackend:
    """Open a ``file``, ``pipe``, ``pty``, ``ringbuf`` or ``memory`` backend as QEMU does (see
    the module docstring); :class:`BackendError` with QEMU's text if it cannot be."""
    if kind in ("ringbuf", "memory"):
        return OpenedBackend(label, kind, ring=RingBuffer(size))
    if kind == "file":
        assert path is not None
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        try:
            fd = os.open(path, flags | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise _could_not_open(path, exc) from None
        return OpenedBackend(label, kind, write_fd=fd)
    if kind == "pipe":
        assert path is not None
        return _open_pipe(label, path)
    if kind == "pty":
        return _open_pty(label)
    raise ValueError(f"no backend of kind {kind!r} is opened here")


def _open_pipe(label: str, path: str) -> OpenedBackend:
    """char-pipe.c ``qemu_chr_open_pipe``: ``PATH.in``/``PATH.out``, else ``PATH`` for both."""
    flags = os.O_RDWR | os.O_CLOEXEC
    opened: list[int] = []
    try:
        for name in (f"{path}.in", f"{path}.out"):
            opened.append(os.open(name, flags))
        return OpenedBackend(label, "pipe", read_fd=opened[0], write_fd=opened[1])
    except OSError:
        for fd in opened:
            os.close(fd)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _could_not_open(path, exc) from None
    return OpenedBackend(label, "pipe", read_fd=fd, write_fd=fd)


def _open_pty(label: str) -> OpenedBackend:
    """char-pty.c ``char_pty_open``: ``openpty``, raw mode, the slave's name kept, and the
    slave closed (a program opens it to talk to the chardev)."""
    import termios  # only for a pty
    import tty

    master, slave = os.openpty()
    try:
        tty.setraw(slave, termios.TCSANOW)  # qemu_openpty_raw: cfmakeraw
        device = os.ttyname(slave)
    finally:
        os.close(slave)
    os.set_inheritable(master, False)
    return OpenedBackend(label, "pty", read_fd=master, write_fd=master, device=device)


class SinkTransport(asyncio.Transport):
    """A chardev a monitor only writes to (a file, a ring): no input ever comes."""

    def __init__(self, protocol: asyncio.Protocol, sink: Callable[[bytes], None]) -> None:
        super().__init__()
        self._protocol = protocol
        self._sink = sink
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._sink(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        """Nothing is read."""

    def resume_reading(self) -> None:
        """Nothing is read."""

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Nothing is buffered: each write is done at once."""


def _write_all(fd: int) -> Callable[[bytes], None]:
    """A regular file's writes (never short for long, never would-block)."""

    def write(data: bytes) -> None:
        view = memoryview(data)
        with contextlib.suppress(OSError):  # a full disk: QEMU drops the output too
            while view:
                view = view[os.write(fd, view) :]

    return write


class FdTransport(asyncio.Transport):
    """A chardev's descriptors as a transport: read ``read_fd`` when the loop says it can be,
    write ``write_fd`` (buffering what would block until it can take more). A read error
    (EIO from a pty whose other side closed) or end of file ends the session; the
    descriptors are duplicates, closed with the transport."""

    def __init__(self, protocol: asyncio.Protocol, read_fd: int, write_fd: int) -> None:
        super().__init__()
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._read_fd = os.dup(read_fd)
        self._write_fd = self._read_fd if write_fd == read_fd else os.dup(write_fd)
        for fd in {self._read_fd, self._write_fd}:
            os.set_blocking(fd, False)
        self._pending = bytearray()
        self._reading = False
        self._closing = False

    def start(self) -> None:
        """Greet (``connection_made``), then read."""
        self._protocol.connection_made(self)
        self.resume_reading()

    def _read_ready(self) -> None:
        try:
            data = os.read(self._read_fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        self._protocol.data_received(data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        if self._pending:
            self._pending += data
            return
        view = memoryview(bytes(data))
        try:
            while view:
                view = view[os.write(self._write_fd, view) :]
        except BlockingIOError:
            self._pending += view
            self._loop.add_writer(self._write_fd, self._write_ready)
        except OSError as exc:
            self._lost(exc)

    def _write_ready(self) -> None:
        try:
            written = os.write(self._write_fd, self._pending)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self._pending[:written]
        if not self._pending:
            self._loop.remove_writer(self._write_fd)

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._read_fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._read_fd, self._read_ready)

    def is_reading(self) -> bool:
        return self._reading

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return len(self._pending)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Everything pending is kept: a monitor's output is small."""

    def close(self) -> None:
        self._lost(None)

    def abort(self) -> None:
        self._lost(None)

    def _lost(self, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        self.pause_reading()
        if self._pending:
            self._loop.remove_writer(self._write_fd)
        for fd in {self._read_fd, self._write_fd}:
            os.close(fd)
        self._loop.call_soon(self._protocol.connection_lost, exc)


async def serve_on_backend(opened: OpenedBackend, factory: Callable[[], asyncio.Protocol]) -> None:
    """Serve the sessions ``factory`` makes on ``opened`` (see the module docstring)."""
    if opened.ring is not None:
        ring = opened.ring
        session = factory()
        session.connection_made(SinkTransport(session, ring.write))
    elif opened.kind == "file":
        assert opened.write_fd is not None
        session = factory()
        session.connection_made(SinkTransport(session, _write_all(opened.write_fd)))
    elif opened.kind == "pipe":
        assert opened.read_fd is not None and opened.write_fd is not None
        FdTransport(factory(), opened.read_fd, opened.write_fd).start()
    elif opened.kind == "pty":
        PtyServer(opened, factory).check()


async def serve_monitor_on_backend(
    monitor: Monitor,
    opened: OpenedBackend,
    mode: Literal["control", "readline"],
    *,
    label: str | None = None,
    pretty: bool = False,
) -> None:
    """Serve a QMP (``control``) or human (``readline``) monitor on ``opened``, as a chardev
    of ``monitor`` labelled ``label`` (its named descriptors, current CPU, ...)."""
    chardev = monitor.open_chardev(Address("none"), label)
    factory: Callable[[], QMPSession | HMPSession]
    if mode == "control":
        factory = monitor.pretty_session_factory if pretty else monitor.qmp_session_factory
    else:
        from qmonitor.server.human import human_session_factory

        factory = human_session_factory(monitor)
    tracked: Callable[[], QMPSession | HMPSession] = chardev.track(factory)
    await serve_on_backend(opened, tracked)


class PtyServer:
    """A monitor on a pty: a session while a program has the other side open (char-pty.c)."""

    def __init__(self, opened: OpenedBackend, factory: Callable[[], asyncio.Protocol]) -> None:
        self.opened = opened
        self.factory = factory
        self._loop = asyncio.get_running_loop()

    def check(self) -> None:
        """``pty_chr_update_read_handler``: without ``POLLHUP`` someone has the other side
        open: start a session, and look again once it ends; else look again in a second."""
        master = self.opened.read_fd
        if master is None:
            return  # closed: the machine is going away
        poller = select.poll()
        poller.register(master, select.POLLOUT)
        if any(events & select.POLLHUP for _, events in poller.poll(0)):
            self._loop.call_later(PTY_POLL_SECONDS, self.check)
            return
        session = self.factory()
        lost = session.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            lost(exc)
            self._loop.call_soon(self.check)

        session.connection_lost = connection_lost  # type: ignore[method-assign]
        FdTransport(session, master, master).start()
