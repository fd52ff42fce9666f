"""Where a monitor listens or connects: QEMU's chardev address syntax, and the listeners.

Accepted (QEMU's ``-qmp``/``-monitor`` spellings, qemu-options.hx "-chardev"):

* ``unix:PATH,server=on,wait=off`` listen on a unix socket; ``unix:PATH`` connects out to a
  listening client instead (reverse mode: what qemu.qmp's ``accept()`` and ``qmp-shell-wrap``
  expect). ``server``/``wait`` also take QEMU's old boolean spellings (``server``, ``nowait``).
* ``tcp:HOST:PORT,server=on,wait=off`` likewise for TCP; an empty host means 127.0.0.1, never
  every interface, unless ``HOST`` says otherwise.
* ``stdio`` and ``none``.
* An inherited socket (``-chardev socket,fd=N``), which has no text form here: an
  :class:`Address` with ``transport="fd"``. With ``server`` it is a listening socket that the
  launcher bound (libvirt), else a connected one (QEMUMachine's socketpair end), as
  chardev/char-socket.c reads ``fd=`` by ``server=``.

Unix sockets are created mode 0600. A socket path a live server still answers on is never taken
over (:class:`AddressInUse`); a stale one (nothing listening) is replaced. Their connections are
served by :class:`~qmonitor.server.fds.UnixTransport`, which receives the file descriptors a
client passes (SCM_RIGHTS); TCP ones by the event loop's transports.

:class:`HangupWatch` tells a client that only stopped sending from one that went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import socket
import ssl
import stat
import struct
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol

from qmonitor.core.errors import QMonitorError
from qmonitor.core.record import Record
from qmonitor.server.fds import ProtocolFactory, UnixServer, serve_unix_connection

TLS_HANDSHAKE_TIMEOUT: Final = 10.0
"""Seconds a client has to complete the TLS handshake before it is dropped.

QEMU has no such limit (a stalled client holds a chardev's one connection); asyncio's default
is 60 s. Ten seconds is ample for a handshake on any network a monitor should be on, and
bounds what a client that connects and sends nothing costs.
"""

Transport = Literal["unix", "tcp", "fd", "stdio", "none"]


class AddressError(QMonitorError, ValueError):
    """An address string that does not parse."""


class AddressInUse(QMonitorError, OSError):
    """Another live server already answers on this address."""


_TRUE = {"on", "yes", "true", ""}
_FALSE = {"off", "no", "false"}


class Address(Record):
    """A parsed monitor address."""

    __slots__ = ("fd", "host", "path", "port", "server", "transport", "wait")

    transport: Final[Transport]
    path: Final[str]
    host: Final[str]
    port: Final[int]
    server: Final[bool]
    wait: Final[bool]
    fd: Final[int]

    def __init__(
        self,
        transport: Transport,
        path: str = "",
        host: str = "",
        port: int = 0,
        server: bool = True,
        wait: bool = False,
        fd: int = -1,
    ) -> None:
        self.transport = transport
        self.path = path
        self.host = host
        self.port = port
        self.server = server
        self.wait = wait
        self.fd = fd

    def __str__(self) -> str:
        if self.transport == "fd":
            base = f"fd:{self.fd}"
        elif self.transport == "unix":
            base = f"unix:{self.path}"
        elif self.transport == "tcp":
            base = f"tcp:{self.host}:{self.port}"
        else:
            return self.transport
        return f"{base},server=on,wait=off" if self.server else base


def parse_address(text: str) -> Address:
    """Parse QEMU's chardev address syntax (see the module docstring)."""
    if text in ("stdio", "none"):
        return Address(text)  # type: ignore[arg-type]
    head, *options = text.split(",")
    server = False
    wait = True
    for option in options:
        key, _, value = option.partition("=")
        if key in ("server", "wait"):
            if value not in _TRUE | _FALSE:
                raise AddressError(f"invalid value '{value}' for '{key}' in '{text}'")
            flag = value in _TRUE
            if key == "server":
                server = flag
            else:
                wait = flag
        elif key == "nowait" and not value:
            wait = False
        elif key == "nodelay":
            continue
        else:
            raise AddressError(f"unknown option '{key}' in address '{text}'")
    kind, _, rest = head.partition(":")
    if kind == "unix" and rest:
        return Address("unix", path=rest, server=server, wait=wait)
    if kind == "tcp":
        host, _, port_text = rest.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        try:
            port = int(port_text)
        except ValueError:
            raise AddressError(f"invalid port in address '{text}'") from None
        if not 0 <= port <= 65535:
            raise AddressError(f"port out of range in address '{text}'")
        return Address("tcp", host=host, port=port, server=server, wait=wait)
    raise AddressError(
        f"unsupported address '{text}' (expected unix:PATH[,server=on,wait=off], "
        "tcp:HOST:PORT[,server=on,wait=off], stdio or none)"
    )


def _prepare_unix_path(path: str) -> None:
    """Remove a stale socket at ``path``; refuse if a live server answers there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AddressInUse(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise AddressInUse(errno.EADDRINUSE, f"a live server is already listening on {path}")


class Listener:
    """A listening socket serving one kind of session; ``close`` removes a unix path."""

    def __init__(
        self, address: Address, server: asyncio.Server | UnixServer, path: str | None = None
    ) -> None:
        self.address = address
        self.server = server
        self.path = address.path if address.transport == "unix" else path
        """The socket file removed at close: ours, or an inherited listening socket's."""

    @property
    def bound_address(self) -> Address:
        """The address actually bound (the real port when port 0 was asked for)."""
        if self.address.transport == "tcp":
            host, port = self.server.sockets[0].getsockname()[:2]
            return Address("tcp", host=host, port=port)
        return self.address

    async def close(self) -> None:
        """Stop listening; remove the unix socket file, whoever bound it: QEMU removes an
        inherited listening socket's too (io/channel-socket.c ``qio_channel_socket_finalize``
        -> util/qemu-sockets.c ``socket_listen_cleanup``, which unlinks the path the socket
        is bound to)."""
        self.server.close()
        await self.server.wait_closed()
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


async def start_listener(
    address: Address,
    factory: ProtocolFactory,
    *,
    tls: ssl.SSLContext | None = None,
    tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT,
) -> Listener:
    """Listen on ``address`` (unix or tcp, server mode) with sessions from ``factory``.

    With ``tls`` (a server context, :mod:`qmonitor.server.tls`) every connection is TLS: the
    handshake runs in the loop's SSL protocol, never blocking it, and one not done within
    ``tls_handshake_timeout`` seconds is dropped; sessions are made once the handshake is done.
    """
    loop = asyncio.get_running_loop()
    tls_options: dict[str, Any] = {}
    if tls is not None:
        tls_options = {"ssl": tls, "ssl_handshake_timeout": tls_handshake_timeout}
        factory = _after_handshake(factory)
    if address.transport == "unix":
        _prepare_unix_path(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)
            try:
                sock.bind(address.path)
            finally:
                os.umask(old_umask)
            os.chmod(address.path, 0o600)
            sock.listen(1024)
        except BaseException:
            sock.close()
            raise
        return Listener(address, await _unix_server(loop, sock, factory, tls_options))
    if address.transport == "fd":
        sock = inherited_socket(address.fd)
        if sock.family == socket.AF_UNIX:
            bound = sock.getsockname()  # a path; "" unbound; bytes or "\0..." when abstract
            path = bound if isinstance(bound, str) and not bound.startswith("\0") else None
            server = await _unix_server(loop, sock, factory, tls_options)
            return Listener(address, server, path)
        return Listener(address, await loop.create_server(factory, sock=sock, **tls_options))
    if address.transport != "tcp":
        raise AddressError(f"cannot listen on {address.transport}")
    server = await loop.create_server(
        factory, address.host, address.port, reuse_address=True, backlog=1024, **tls_options
    )
    return Listener(address, server)


def _after_handshake(factory: ProtocolFactory) -> ProtocolFactory:
    """``factory`` for a TLS listener: the loop's SSL protocol asks for the application's
    protocol when it accepts, before the handshake; a session is made only once the handshake
    is done (connection_made), so a connection whose handshake fails never gets one."""
    return lambda: _AfterHandshake(factory)


class _AfterHandshake(asyncio.Protocol):
    """A TLS connection until its handshake is done; then its session's."""

    def __init__(self, factory: ProtocolFactory) -> None:
        self._factory = factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        session = self._factory()
        transport.set_protocol(session)
        session.connection_made(transport)


async def _unix_server(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    factory: ProtocolFactory,
    tls_options: dict[str, Any],
) -> UnixServer | asyncio.Server:
    """Serve a listening unix socket: with :class:`~qmonitor.server.fds.UnixServer`, whose
    connections receive the descriptors clients pass (SCM_RIGHTS), or, over TLS (where no
    descriptor can pass), with the loop's own TLS server."""
    if not tls_options:
        return UnixServer(sock, factory)
    return await loop.create_unix_server(factory, sock=sock, **tls_options)


def inherited_socket(fd: int) -> socket.socket:
    """The socket the launcher passed as descriptor ``fd`` (``-chardev socket,fd=N``).

    QEMU takes the descriptor over (util/qemu-sockets.c ``socket_get_fd``); one that is not an
    open socket is refused with ``OSError`` (EBADF, ENOTSOCK) before anything is served on it.
    """
    return socket.socket(fileno=fd)


async def connect_out(address: Address, factory: ProtocolFactory) -> asyncio.BaseTransport:
    """Reverse mode: connect to a listening client and serve it (QEMU without server=on).

    For an inherited connected socket (``fd=`` without ``server``) the connection exists
    already: it is served as it is (a unix one by :class:`~qmonitor.server.fds.UnixTransport`,
    so that it receives descriptors too; another by ``loop.connect_accepted_socket``).
    """
    loop = asyncio.get_running_loop()
    if address.transport == "fd":
        sock = inherited_socket(address.fd)
        if sock.family == socket.AF_UNIX:
            return serve_unix_connection(sock, factory)
        transport, _ = await loop.connect_accepted_socket(factory, sock)
        return transport
    if address.transport == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address.path)
        except BaseException:
            sock.close()
            raise
        return serve_unix_connection(sock, factory)
    if address.transport == "tcp":
        transport, _ = await loop.create_connection(factory, address.host, address.port)
    else:
        raise AddressError(f"cannot connect out to {address.transport}")
    return transport


class HangupWatch:
    """Calls back when the peer of a socket is gone for good, not merely done sending.

    After a client's ``shutdown(SHUT_WR)`` its socket reads as end of input, exactly as after
    its ``close()``: the read side cannot tell them apart. The kernel can: it reports
    ``EPOLLHUP`` on a unix socket once its peer has closed (both directions are then shut
    down), and ``EPOLLHUP``/``EPOLLERR`` on a TCP socket reset by its peer (which a peer that
    closed does as soon as data reaches it; a TCP close without a reset is indistinguishable
    from a half-close until then). Sockets are registered with an empty event mask in one
    ``epoll`` set of our own, which reports nothing else (so a half-closed socket, readable
    forever, does not wake the loop), and the loop watches that set's descriptor: one
    descriptor however many sockets are watched. Linux only; elsewhere :attr:`available` is
    False and a hang-up is noticed when a write to the peer fails.
    """

    available = hasattr(select, "epoll")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._epoll: select.epoll | None = None

    def watch(self, fileno: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once when the peer of socket ``fileno`` is gone."""
        if self._epoll is None:
            self._epoll = select.epoll()
            self._loop.add_reader(self._epoll.fileno(), self._ready)
        self._epoll.register(fileno, 0)  # EPOLLHUP and EPOLLERR are always reported
        self._callbacks[fileno] = callback

    def unwatch(self, fileno: int, callback: Callable[[], None]) -> None:
        """Stop watching ``fileno`` for ``callback`` (a no-op if it is no longer watched).

        A closed socket leaves the epoll set by itself, and its number may already serve a
        newer socket: only a registration made for ``callback`` is removed.
        """
        if self._callbacks.get(fileno) is not callback or self._epoll is None:
            return
        del self._callbacks[fileno]
        with contextlib.suppress(OSError):  # closed already, or a newer, unwatched socket
            self._epoll.unregister(fileno)

    def _ready(self) -> None:
        assert self._epoll is not None
        for fileno, _ in self._epoll.poll(0):
            callback = self._callbacks.pop(fileno, None)
            with contextlib.suppress(OSError):
                self._epoll.unregister(fileno)
            if callback is not None:
                callback()

    def close(self) -> None:
        """Stop watching everything."""
        if self._epoll is not None:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
        self._callbacks.clear()


_UCRED: Final = struct.Struct("3i")
"""``struct ucred`` (socket(7)): pid, uid, gid, three C ints."""


class _HasSockopt(Protocol):
    family: int

    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...


class PeerCredentials(Record):
    """A unix socket peer's ``struct ucred``."""

    __slots__ = ("gid", "pid", "uid")

    pid: Final[int]
    uid: Final[int]
    gid: Final[int]

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid = pid
        self.uid = uid
        self.gid = gid


def peer_credentials(sock: _HasSockopt) -> PeerCredentials | None:
    """``SO_PEERCRED`` of a connected unix socket; None for other sockets or platforms.

    Takes a ``socket.socket`` or the ``TransportSocket`` of an asyncio transport
    (``transport.get_extra_info("socket")``).
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or sock.family != socket.AF_UNIX:
        return None
    try:
        pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size))
    except OSError:
        return None
    return PeerCredentials(pid, uid, gid)


def describe_peer(transport: asyncio.BaseTransport | None) -> str:
    """Who is at the other end of a session, for logs.

    ``127.0.0.1:40312`` for TCP; for a unix socket, which has no peer address, the peer's
    process id from ``SO_PEERCRED`` and the socket's path; ``stdio``; ``the terminal`` for a
    session without a transport (the console).
    """
    if transport is None:
        return "the terminal"
    sock = transport.get_extra_info("socket")
    if sock is None:
        return "stdio"
    if sock.family == socket.AF_UNIX:
        path = transport.get_extra_info("sockname") or transport.get_extra_info("peername")
        credentials = peer_credentials(sock)
        return f"unix:{path}" if credentials is None else f"pid {credentials.pid} on {path}"
    host, port = transport.get_extra_info("peername")[:2]
    return f"{host}:{port}"
