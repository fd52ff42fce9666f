"""File descriptors passed to a monitor over its unix socket (SCM_RIGHTS), and where they are kept.

QEMU lets a client hand it open files through a monitor's unix socket: ``getfd`` names one for
later commands (``migrate fd:NAME``), ``add-fd`` puts one in a numbered fd set. libvirt's
``virsh save`` and go-qemu's ``RunWithFile`` depend on it. Three places hold them, as in QEMU:

* :class:`ReceivedFds`, per connection: what came with the client's messages and no command has
  taken yet (chardev/char-socket.c ``read_msgfds``). A message that brings descriptors replaces
  (closes) those still held from an earlier one (``tcp_chr_recv``); a command that takes one
  takes the first and closes the others (``tcp_get_msgfds`` with one slot, through
  ``qemu_chr_fe_get_msgfd``). What is left is closed when the connection closes
  (``tcp_chr_disconnect``).
* :class:`NamedFds`, per monitor: ``getfd``'s names (monitor/misc.c ``mon->fds``). They belong
  to the monitor, not to a connection: they outlive a client that disconnects, and the next
  client of the same monitor can ``closefd`` them. Here a monitor is one chardev (one ``-qmp``
  or ``-monitor`` option, one socket); every connection accepted on it shares its names, as
  QEMU's successive clients of one monitor do.
* :class:`FdSets`, per process: ``add-fd``'s numbered sets (monitor/misc.c ``mon_fdsets``),
  shared by every monitor.

Positions. QEMU reads a monitor socket one byte at a time (``monitor_can_read`` returns 1), so
descriptors are held from the first byte of the message they came with, and a command sees
exactly those that arrived before its last byte. qmonitor reads up to :data:`READ_SIZE` bytes
at once and goes on reading while a command runs, so :class:`ReceivedFds` records where in the
byte stream each batch arrived and a command takes only from batches that arrived before the end
of its request. Linux hands over descriptors with the read that reaches the end of the message
carrying them, which may also hold earlier messages: the batch is placed at the start of that
read, so a request sent in the same read before the carrying message can take it too, where
QEMU would not have it yet (docs/STANDIN.md, "File descriptors").

:class:`UnixTransport` is an asyncio transport for unix stream sockets that reads with
``recvmsg`` and room for :data:`MAX_FDS_PER_MESSAGE` descriptors: the event loops' own
transports read with ``recv``, and the kernel closes descriptors sent to a ``recv``.
:class:`UnixServer` accepts connections for it.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import errno
import itertools
import logging
import os
import socket
import weakref
from collections.abc import Callable, Iterable
from typing import Final, cast

from qmonitor.core.errors import QMPError

log = logging.getLogger("qmonitor.fds")

MAX_FDS_PER_MESSAGE: Final = 16
"""Descriptors received with one message; the kernel closes the rest (chardev/char-socket.c
``TCP_MAX_FDS``, io/channel-socket.c ``SOCKET_MAX_FDS``)."""

MAX_FD_MESSAGES_AHEAD: Final = 16
"""Messages with descriptors kept ahead of the request being run. QEMU holds one message's (it
reads no further); a client that pipelines more has the oldest closed, as QEMU closes what a
later message replaces."""

READ_SIZE: Final = 64 * 1024
"""Bytes read at most per ``recvmsg`` (libuv's read size). Larger ones cost: ``recvmsg``
allocates the whole size for every read, and past glibc's mmap threshold (128 KiB) that is a
``mmap`` each time."""

_SEND_AT_ONCE: Final = 64 * 1024
"""Bytes written at which the transport sends without waiting for the end of the loop
iteration (:class:`_QueuedWrites`): bounds what waits unsent."""

_ANCILLARY_SIZE: Final = socket.CMSG_SPACE(MAX_FDS_PER_MESSAGE * array.array("i").itemsize)
_MSG_CMSG_CLOEXEC: Final = socket.MSG_CMSG_CLOEXEC
_IOV_MAX: Final = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16
_ACCEPT_RETRY_SECONDS: Final = 1.0  # asyncio's ACCEPT_RETRY_DELAY after EMFILE and the like
_ACCEPT_RESOURCE_ERRORS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
)

NO_FD_SUPPLIED: Final = "No file descriptor supplied via SCM_RIGHTS"
"""monitor/misc.c ``qmp_getfd``/``qmp_add_fd``: the command came without a descriptor."""


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class ReceivedFds:
    """The descriptors one connection received that no command has taken yet.

    Each batch is kept with its position: how many bytes of the stream the transport had handed
    to the session before the read that brought it. A command passes how far the session has
    parsed (see the module docstring).
    """

    __slots__ = ("_arrived", "_held")

    def __init__(self) -> None:
        self._arrived: collections.deque[tuple[int, list[int]]] = collections.deque()
        self._held: list[int] = []

    def arrived(self, fds: list[int], position: int) -> None:
        """A read that starts at byte ``position`` of the stream brought ``fds``."""
        if len(self._arrived) == MAX_FD_MESSAGES_AHEAD:
            _, dropped = self._arrived.popleft()
            log.warning("closing %d descriptors: more than %d messages with descriptors ahead",
                        len(dropped), MAX_FD_MESSAGES_AHEAD)  # fmt: skip
            _close_all(dropped)
        self._arrived.append((position, fds))

    def take(self, parsed: int) -> int | None:
        """One descriptor for the command whose request ends at byte ``parsed``, or None.

        Batches that arrived before that byte replace one another in order (``tcp_chr_recv``);
        the first descriptor of the one left is taken and its others are closed
        (``tcp_get_msgfds``). The caller owns the descriptor returned.
        """
        arrived = self._arrived
        while arrived and arrived[0][0] < parsed:
            _close_all(self._held)
            self._held = arrived.popleft()[1]
        if not self._held:
            return None
        taken, *others = self._held
        self._held = []
        _close_all(others)
        return taken

    def close(self) -> None:
        """Close everything still held or waiting (the connection is gone)."""
        _close_all(self._held)
        self._held = []
        while self._arrived:
            _close_all(self._arrived.popleft()[1])


class NamedFds:
    """One monitor's named descriptors (``getfd``, ``closefd``, ``fd:NAME``)."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def add(self, name: str, fd: int) -> None:
        """``getfd``: name ``fd``; a descriptor that had the name is closed (qapi/misc.json)."""
        replaced = self._fds.get(name)
        self._fds[name] = fd
        if replaced is not None:
            _close_all((replaced,))

    def close_named(self, name: str) -> None:
        """``closefd``, with QEMU's error (monitor/misc.c ``qmp_closefd``)."""
        fd = self._fds.pop(name, None)
        if fd is None:
            raise QMPError(f"File descriptor named '{name}' not found")
        _close_all((fd,))

    def take(self, name: str) -> int:
        """Give up the descriptor called ``name`` to the caller (``monitor_get_fd``)."""
        fd = self._fds.pop(name, None)
        if fd is None:
            raise QMPError(f"File descriptor named '{name}' has not been found")
        return fd

    def close(self) -> None:
        """Close every named descriptor."""
        _close_all(self._fds.values())
        self._fds.clear()


class _FdsetMember:
    __slots__ = ("fd", "opaque", "removed")

    fd: int
    opaque: str | None
    removed: bool

    def __init__(self, fd: int, opaque: str | None, removed: bool = False) -> None:
        self.fd = fd
        self.opaque = opaque
        self.removed = removed


class FdSets:
    """``add-fd``'s numbered sets, as monitor/misc.c keeps ``mon_fdsets``.

    A set's descriptors are closed by :meth:`cleanup` only while the guest runs
    (``monitor_fdset_cleanup`` checks ``runstate_is_running()``): those ``remove-fd`` marked,
    and, once no monitor has a client, all of them (QEMU would keep those a device opened
    through ``/dev/fdset/N``; nothing here opens one). A set without descriptors is gone.
    """

    def __init__(self) -> None:
        self._sets: dict[int, list[_FdsetMember]] = {}

    def add(self, fd: int, fdset_id: int | None, opaque: str | None) -> int:
        """``monitor_fdset_add_fd``: into set ``fdset_id``, else into a new set with the lowest
        free id, whose id is returned; the caller's ``fd`` belongs to the set from here, unless
        this raises."""
        if fdset_id is None:
            fdset_id = next(i for i in itertools.count() if i not in self._sets)
        elif fdset_id not in self._sets and fdset_id < 0:
            raise QMPError("Parameter 'fdset-id' expects a non-negative value")
        self._sets.setdefault(fdset_id, []).append(_FdsetMember(fd, opaque))
        return fdset_id

    def remove(self, fdset_id: int, fd: int | None, *, running: bool) -> None:
        """``qmp_remove_fd``: mark ``fd`` (without it, every descriptor) of set ``fdset_id``
        removed, then clean the set."""
        members = self._sets.get(fdset_id, [])
        chosen = members if fd is None else [m for m in members if m.fd == fd][:1]
        if not chosen:
            shown = f"fdset-id:{fdset_id}" if fd is None else f"fdset-id:{fdset_id}, fd:{fd}"
            raise QMPError(f"File descriptor named '{shown}' not found")
        for member in chosen:
            member.removed = True
        self._clean(fdset_id, monitors_connected=True, running=running)

    def query(self) -> list[tuple[int, list[tuple[int, str | None]]]]:
        """``qmp_query_fdsets``: each set's id and its descriptors with their ``opaque``,
        highest id first, each set's descriptors oldest first."""
        return [
            (fdset_id, [(m.fd, m.opaque) for m in self._sets[fdset_id]])
            for fdset_id in sorted(self._sets, reverse=True)
        ]

    def cleanup(self, *, monitors_connected: bool, running: bool) -> None:
        """``monitor_fdsets_cleanup``, run when a monitor's client goes away."""
        for fdset_id in list(self._sets):
            self._clean(fdset_id, monitors_connected=monitors_connected, running=running)

    def _clean(self, fdset_id: int, *, monitors_connected: bool, running: bool) -> None:
        members = self._sets[fdset_id]
        if running:
            kept = [m for m in members if not m.removed and monitors_connected]
            _close_all(m.fd for m in members if m.removed or not monitors_connected)
            members[:] = kept
        if not members:
            del self._sets[fdset_id]

    def close(self) -> None:
        """Close every descriptor of every set."""
        for members in self._sets.values():
            _close_all(m.fd for m in members)
        self._sets.clear()


class MonitorFds:
    """Everything a :class:`~qmonitor.server.monitor.Monitor` holds of passed descriptors.

    ``vm_running`` tells whether the guest runs (for :class:`FdSets`); a monitor without a
    machine counts as running, like QEMU's ``-machine none`` without ``-S``.
    """

    def __init__(self) -> None:
        self.fdsets = FdSets()
        self.vm_running: Callable[[], bool] = lambda: True
        self._named: dict[object, NamedFds] = {}

    def named(self, owner: object | None) -> NamedFds:
        """The names of the monitor ``owner`` (a chardev); a fresh, empty table for None (a
        session that is no monitor's, as QEMU's temporary one for ``human-monitor-command``)."""
        if owner is None:
            return NamedFds()
        table = self._named.get(owner)
        if table is None:
            table = self._named[owner] = NamedFds()
        return table

    def client_gone(self, clients_left: int) -> None:
        """A monitor's client went away (QEMU's ``CHR_EVENT_CLOSED``): clean the fd sets."""
        self.fdsets.cleanup(monitors_connected=clients_left > 0, running=self.vm_running())

    def close(self) -> None:
        """Close every descriptor held (the monitor is shutting down)."""
        self.fdsets.close()
        for table in self._named.values():
            table.close()
        self._named.clear()


class _QueuedWrites:
    """The transports of one event loop with writes waiting for the end of the loop iteration.

    A reply is not sent from inside ``data_received``: the transport queues it here and every
    transport's queued bytes are sent once the loop has handled all the reads it was woken
    for, as uvloop's own transports do (``UVStream._initiate_write`` queues the stream on the
    loop). Sending each reply at once wakes its client in the middle of the batch; where the
    client shares the server's CPU it then preempts the server once per reply, not once per
    batch (bench_qmp.py's 50 clients: about three times the context switches, and twice the
    p99 latency, of the same protocol on uvloop's transport; docs/PERFORMANCE.md). The loop's
    only connection is not queued (see :attr:`connections`).
    """

    __slots__ = ("_loop", "_transports", "connections")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transports: list[UnixTransport] = []
        # Connections open on the loop. With one, nothing is queued: there is no other read
        # to finish first, and queueing would cost a loop callback per reply.
        self.connections = 0

    def add(self, transport: UnixTransport) -> None:
        if not self._transports:
            self._loop.call_soon(self._send_all)
        self._transports.append(transport)

    def _send_all(self) -> None:
        transports = self._transports
        self._transports = []
        for transport in transports:
            transport._send_queued()


_queued_writes_of: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _QueuedWrites] = (
    weakref.WeakKeyDictionary()
)


def _queued_writes(loop: asyncio.AbstractEventLoop) -> _QueuedWrites:
    queued = _queued_writes_of.get(loop)
    if queued is None:
        queued = _queued_writes_of[loop] = _QueuedWrites(loop)
    return queued


class UnixTransport(asyncio.Transport):
    """A unix stream socket as an asyncio transport that also receives descriptors.

    It does what the sessions use of the event loop's transports: buffered writes with the
    protocol's ``pause_writing``/``resume_writing`` around the write buffer limits, reading
    paused and resumed, end of input (``eof_received``; reading stops, writing goes on if it
    returns true), ``close`` after the buffer drains, ``abort``, and ``get_extra_info`` for
    ``socket``, ``sockname`` and ``peername``. Descriptors that come with a read go to
    :attr:`received_fds` before its bytes go to the protocol. Writes are sent at the end of
    the loop iteration (:class:`_QueuedWrites`), or at once when :data:`_SEND_AT_ONCE` bytes
    or more wait, so that what waits unsent stays bounded and ``pause_writing`` comes as
    early as with a transport that sends at once.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.Protocol
    ) -> None:
        extra: dict[str, object] = {"socket": sock, "sockname": sock.getsockname()}
        with contextlib.suppress(OSError):
            extra["peername"] = sock.getpeername()
        super().__init__(extra)
        sock.setblocking(False)
        self._loop = loop
        self._sock = sock
        self._fileno = sock.fileno()
        self._protocol = protocol
        # Bound once: the read and write of every request go through them.
        self._recvmsg = sock.recvmsg
        self._send = sock.send
        self._data_received = protocol.data_received
        self.received_fds = ReceivedFds()
        self.delivered = 0  # bytes handed to the protocol so far: where the stream is
        self._write_buffer: collections.deque[bytes] = collections.deque()
        self._write_buffer_size = 0
        self._queued_writes = _queued_writes(loop)
        self._queued_writes.connections += 1
        self._queued = False  # the buffer waits for the end of the loop iteration
        self._waiting_writable = False  # the buffer waits for the socket (add_writer)
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024
        self._protocol_paused = False  # pause_writing() called, resume_writing() not yet
        self._reading_paused = False
        self._input_ended = False
        self._closing = False
        self._lost = False  # connection_lost is scheduled or done
        loop.call_soon(self._start)

    def _start(self) -> None:
        self._protocol.connection_made(self)
        if not self._closing and not self._reading_paused:
            self._loop.add_reader(self._fileno, self._read_ready)

    # -- reading ---------------------------------------------------------------------------

    def _read_ready(self) -> None:
        try:
            data, ancillary, flags, _ = self._recvmsg(READ_SIZE, _ANCILLARY_SIZE, _MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        if ancillary:
            self._fds_arrived(ancillary, flags)
        if data:
            self.delivered += len(data)
            self._data_received(data)
        else:
            self._end_of_input()

    def _fds_arrived(self, ancillary: list[tuple[int, int, bytes]], flags: int) -> None:
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if flags & socket.MSG_CTRUNC:
            log.warning("a message brought more than %d descriptors; the kernel closed the rest",
                        MAX_FDS_PER_MESSAGE)  # fmt: skip
        for fd in fds:
            # chardev/char-socket.c tcp_chr_recv: "O_NONBLOCK is preserved across SCM_RIGHTS
            # so reset it".
            with contextlib.suppress(OSError):
                os.set_blocking(fd, True)
        if fds:
            self.received_fds.arrived(fds.tolist(), self.delivered)

    def _end_of_input(self) -> None:
        self._input_ended = True
        self._loop.remove_reader(self._fileno)
        if not self._protocol.eof_received():
            self.close()

    def pause_reading(self) -> None:
        if self._closing or self._reading_paused:
            return
        self._reading_paused = True
        self._loop.remove_reader(self._fileno)

    def resume_reading(self) -> None:
        if self._closing or not self._reading_paused:
            return
        self._reading_paused = False
        if not self._input_ended:
            self._loop.add_reader(self._fileno, self._read_ready)

    def is_reading(self) -> bool:
        return not (self._closing or self._reading_paused or self._input_ended)

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._lost or not data:
            return
        if not self._write_buffer and self._queued_writes.connections == 1:
            # The loop's only connection: no other read to finish first, sent at once.
            sent = self._send_now(data)
            if sent < 0:
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self._waiting_writable = True
            self._loop.add_writer(self._fileno, self._write_ready)
        chunk = data if type(data) is bytes else bytes(data)
        self._write_buffer.append(chunk)
        self._write_buffer_size += len(chunk)
        if self._waiting_writable:
            self._check_high_water()
        elif self._write_buffer_size >= _SEND_AT_ONCE or self._queued_writes.connections == 1:
            self._send_queued()
        elif not self._queued:
            self._queued = True
            self._queued_writes.add(self)

    def _send_now(self, data: bytes | bytearray | memoryview) -> int:
        """Send what the socket takes of ``data`` now (0 if nothing); -1 when the connection
        is lost, which closes it."""
        try:
            return self._send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._force_close(exc)
            return -1

    def _send_queued(self) -> None:
        """Send what is buffered; what the socket does not take waits for it to be writable."""
        self._queued = False
        if self._waiting_writable or self._lost:
            return
        buffer = self._write_buffer
        if len(buffer) == 1:
            data = buffer[0]
            sent = self._send_now(data)
            if sent < 0:
                return
            if sent == len(data):
                buffer.clear()
                self._write_buffer_size = 0
                if self._closing:
                    self._connection_lost(None)
                return
            buffer[0] = data[sent:]
            self._write_buffer_size -= sent
        elif buffer and not self._sent_from_buffer():
            return
        if buffer:
            self._waiting_writable = True
            self._loop.add_writer(self._fileno, self._write_ready)
            self._check_high_water()
        elif self._closing:
            self._connection_lost(None)

    def _check_high_water(self) -> None:
        if not self._protocol_paused and self._write_buffer_size > self._high_water:
            self._protocol_paused = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def _sent_from_buffer(self) -> bool:
        """One ``sendmsg`` of the buffer's head; False if that closed the connection."""
        buffer = self._write_buffer
        try:
            sent = self._sock.sendmsg(itertools.islice(buffer, _IOV_MAX))
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            self._force_close(exc)
            return False
        self._write_buffer_size -= sent
        while sent:
            head = buffer[0]
            if len(head) > sent:
                buffer[0] = head[sent:]
                break
            sent -= len(head)
            buffer.popleft()
        return True

    def _write_ready(self) -> None:
        if not self._sent_from_buffer():
            return
        if self._protocol_paused and self._write_buffer_size <= self._low_water:
            self._protocol_paused = False
            self._protocol.resume_writing()  # may write: appended behind what waits
        if not self._write_buffer:
            self._waiting_writable = False
            self._loop.remove_writer(self._fileno)
            if self._closing:
                self._connection_lost(None)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low

    def get_write_buffer_size(self) -> int:
        return self._write_buffer_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    # -- closing ---------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; close once what is buffered has been written."""
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fileno)
        if self._queued or not self._write_buffer:
            self._send_queued()  # closes once what is buffered has gone out

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        if exc is not None and not isinstance(exc, ConnectionError):
            log.debug("unix socket error: %s", exc)
        self._closing = True
        self._loop.remove_reader(self._fileno)
        self._write_buffer.clear()
        self._write_buffer_size = 0
        if self._waiting_writable:
            self._waiting_writable = False
            self._loop.remove_writer(self._fileno)
        self._connection_lost(exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._queued_writes.connections -= 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            self.received_fds.close()

    # -- the protocol ----------------------------------------------------------------------

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = cast(asyncio.Protocol, protocol)
        self._data_received = self._protocol.data_received


ProtocolFactory = Callable[[], asyncio.Protocol]


class UnixServer:
    """Accepts connections on a listening unix socket, each served by a :class:`UnixTransport`.

    After ``EMFILE`` and the like it stops accepting for :data:`_ACCEPT_RETRY_SECONDS`, as
    asyncio's servers do, rather than spin on a connection it cannot take.
    """

    def __init__(self, sock: socket.socket, factory: ProtocolFactory) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._factory = factory
        self._serving = True
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept_ready)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening socket, while serving."""
        return (self._sock,) if self._serving else ()

    def _accept_ready(self) -> None:
        while self._serving:
            try:
                connection, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_RESOURCE_ERRORS:
                    raise
                log.warning("cannot accept a connection (%s); retrying in %s s",
                            exc.strerror, _ACCEPT_RETRY_SECONDS)  # fmt: skip
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(_ACCEPT_RETRY_SECONDS, self._resume_accepting)
                return
            serve_unix_connection(connection, self._factory)

    def _resume_accepting(self) -> None:
        if self._serving:
            self._loop.add_reader(self._sock.fileno(), self._accept_ready)

    def close(self) -> None:
        """Stop accepting (connections already made go on) and close the listening socket."""
        if self._serving:
            self._serving = False
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    async def wait_closed(self) -> None:
        """Nothing to wait for once :meth:`close` has returned (asyncio.Server's interface)."""


def serve_unix_connection(sock: socket.socket, factory: ProtocolFactory) -> UnixTransport:
    """Serve the connected unix stream socket ``sock`` with a protocol from ``factory``."""
    return UnixTransport(asyncio.get_running_loop(), sock, factory())


def take_received_fd(transport: object, unparsed: int) -> int | None:
    """A descriptor received on ``transport`` for the command being run, or None.

    ``unparsed`` is how many of the bytes the session got it has not parsed yet: the command's
    request ends that many bytes before the end of what was delivered. Only a
    :class:`UnixTransport` receives descriptors.
    """
    if not isinstance(transport, UnixTransport):
        return None
    return transport.received_fds.take(transport.delivered - unparsed)
