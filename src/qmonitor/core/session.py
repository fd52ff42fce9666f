"""What a command knows of the session that sent it, and the hook that authorises it.

Every request reaches the monitor from a session: a QMP connection, a human monitor (socket,
stdio, the console), or one ``human-monitor-command`` line run on behalf of a QMP connection.
A handler sees its session as ``ctx.session`` (:class:`~qmonitor.core.commands.Context`), typed
by the :class:`Session` protocol below; the monitor hands the same object to the
:data:`Authorizer` hook and puts its :attr:`Session.peer` into every trace record, so the policy,
the audit log and the handler agree on who asked (:attr:`Session.identity` says who that is).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Final, Protocol

from qmonitor.core.errors import QMPError
from qmonitor.core.record import Record


class SessionKind(StrEnum):
    """How a request reached the monitor."""

    QMP = "qmp"  # a QMP connection: sees QMP commands only
    HMP = "hmp"  # a human monitor (socket, stdio, console): sees human commands too
    HUMAN_MONITOR_COMMAND = "human-monitor-command"  # one HMP line sent over QMP


class Identity(Record):
    """Who is on the other end of a connection, as far as the server can tell.

    ``transport`` is ``unix``, ``tcp`` or ``stdio``; ``peer`` the remote address
    (``127.0.0.1:51234``, or the unix socket's path). ``tls_dn`` is the client certificate's
    distinguished name (:mod:`qmonitor.security.x509dn`) on a TLS connection that verified one;
    ``uid``/``gid``/``pid`` are a unix peer's credentials (SO_PEERCRED), ``user`` its user
    name where it has one.
    """

    __slots__ = ("gid", "peer", "pid", "tls_dn", "transport", "uid", "user")

    transport: Final[str]
    peer: Final[str]
    tls_dn: Final[str | None]
    uid: Final[int | None]
    gid: Final[int | None]
    pid: Final[int | None]
    user: Final[str | None]

    def __init__(
        self,
        transport: str,
        peer: str = "",
        tls_dn: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        pid: int | None = None,
        user: str | None = None,
    ) -> None:
        self.transport = transport
        self.peer = peer
        self.tls_dn = tls_dn
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.user = user

    @property
    def label(self) -> str | None:
        """One string for logs and the audit trail: the DN, or ``uid=1000(alice) gid=1000
        pid=4242``; None for an anonymous peer (plain TCP)."""
        if self.tls_dn is not None:
            return self.tls_dn
        if self.uid is None:
            return None
        user = f"({self.user})" if self.user else ""
        return f"uid={self.uid}{user} gid={self.gid} pid={self.pid}"


class Session(Protocol):
    """A session as commands, the policy and the trace see it."""

    @property
    def kind(self) -> SessionKind:
        """How its requests arrive."""
        ...

    @property
    def peer(self) -> str:
        """Who is at the other end, for logs, traces and the policy: ``127.0.0.1:4444``, a
        unix socket path, ``stdio``, ``console``; for ``human-monitor-command``, the QMP
        connection it came from."""
        ...

    @property
    def identity(self) -> Identity:
        """Who is at the other end, as the roles policy and the audit trail see it: set when
        the connection is made (the TLS client's distinguished name, a unix peer's
        credentials); for ``human-monitor-command``, the QMP connection's."""
        ...

    def cancel_request(self, request_id: object) -> bool:
        """Cancel this session's in-flight request whose id equals ``request_id``; False if
        there is none (human sessions have no request ids)."""
        ...


Authorizer = Callable[[Session, str, Mapping[str, object]], QMPError | None]
"""``authorize(session, command_name, arguments)``: None to allow, or the error to answer with.

Called by :meth:`qmonitor.Monitor.submit` for every request from every kind of session, after
the command was found and its arguments validated (``arguments`` as the client sent them, with
QMP member names), before the handler runs; a refused request never reaches its handler.
"""
