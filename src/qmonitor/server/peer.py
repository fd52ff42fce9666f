"""Who is on the other end of a connection, and refusing them before the greeting.

:func:`connection_identity` reads what a transport knows about its peer into a
:class:`~qmonitor.security.policy.Identity`: the remote address, the verified TLS client
certificate's distinguished name (as QEMU writes it), and on a unix socket the peer's
credentials (``SO_PEERCRED``, socket(7): the pid, uid and gid of the process that connected,
as the kernel recorded them at ``connect()``; the peer cannot forge them).

:func:`gated` wraps a session factory so that each new connection is first offered to a
decision function; a refused connection is closed before any session exists, so it never sees
a greeting (QEMU closes a client its ``tls-authz`` refuses after the handshake, before the
monitor starts). :func:`tls_authz_gate` is that decision for a ``tls-authz=ID`` listener.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pwd
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from qmonitor.core.session import Identity
from qmonitor.security.errors import DistinguishedNameError
from qmonitor.server.listen import peer_credentials

if TYPE_CHECKING:
    from qmonitor.server.authorize import Authorizer

log = logging.getLogger("qmonitor.peer")


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _address_text(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address or "")


def connection_identity(transport: asyncio.BaseTransport) -> Identity:
    """The identity of a connection's peer (see the module docstring).

    ``peer`` is the remote ``HOST:PORT`` on TCP and the listening socket's path on a unix
    socket (its peers have no address of their own). Raises
    :class:`~qmonitor.security.x509dn.DistinguishedNameError` for a client certificate whose
    subject QEMU cannot write either.
    """
    sock = transport.get_extra_info("socket")
    ssl_object = transport.get_extra_info("ssl_object")
    tls_dn = None
    if ssl_object is not None:
        # the certificate reader only on TLS connections: a plain monitor does not load it
        from qmonitor.server.tls import peer_distinguished_name

        tls_dn = peer_distinguished_name(ssl_object)
    family = getattr(sock, "family", None)
    if family == socket.AF_UNIX:
        credentials = peer_credentials(sock)
        path = transport.get_extra_info("sockname") or transport.get_extra_info("peername")
        peer = path.decode("utf-8", "replace") if isinstance(path, bytes) else str(path or "")
        if credentials is None:
            return Identity("unix", peer, tls_dn=tls_dn)
        return Identity(
            "unix",
            peer,
            tls_dn=tls_dn,
            uid=credentials.uid,
            gid=credentials.gid,
            pid=credentials.pid,
            user=_user_name(credentials.uid),
        )
    if family in (socket.AF_INET, socket.AF_INET6):
        return Identity("tcp", _address_text(transport.get_extra_info("peername")), tls_dn=tls_dn)
    return Identity("stdio", "stdio")


@functools.cache
def process_identity() -> Identity:
    """The identity of a session on standard input and output, or of the console: the user
    this process runs as. Whoever holds its terminal or pipes started it (or was handed them
    by whoever did), so the policy treats them as that user (a grant by ``uid`` applies)."""
    uid = os.getuid()
    return Identity(
        "stdio", "stdio", uid=uid, gid=os.getgid(), pid=os.getpid(), user=_user_name(uid)
    )


def session_identity(transport: asyncio.BaseTransport | None) -> Identity:
    """The identity a session records when its connection is made (see :class:`Identity`).

    A connection without a socket (standard input and output, or no transport: the console)
    is :func:`process_identity`. A client certificate whose subject cannot be written gives
    an identity without a DN; a listener with TLS refuses such a client before any session
    exists (:meth:`qmonitor.Monitor.admission`).
    """
    if transport is None or transport.get_extra_info("socket") is None:
        return process_identity()
    try:
        return connection_identity(transport)
    except DistinguishedNameError:
        return Identity("tcp", _address_text(transport.get_extra_info("peername")))


Admit = Callable[[asyncio.BaseTransport], bool]
"""Decides whether a new connection may have a session; called once the TLS handshake is done."""


class _Gate(asyncio.Protocol):
    """A connection waiting for its admission; hands the transport over once admitted."""

    def __init__(self, factory: Callable[[], asyncio.BaseProtocol], admit: Admit) -> None:
        self._factory = factory
        self._admit = admit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            admitted = self._admit(transport)
        except Exception:
            log.exception("admission check failed; refusing the connection")
            admitted = False
        if not admitted:
            transport.close()
            return
        session = self._factory()
        transport.set_protocol(session)
        session.connection_made(transport)


def gated(
    factory: Callable[[], asyncio.BaseProtocol], admit: Admit
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory that admits each connection with ``admit`` before ``factory()``.

    The admitted session gets the transport as if it had been made directly (the transport's
    protocol becomes the session); a refused connection is closed and no session is made.
    """
    return lambda: _Gate(factory, admit)


def tls_authz_gate(
    authorizer: Authorizer,
    authz_id: str,
    on_refused: Callable[[Identity], None] | None = None,
) -> Admit:
    """The admission of a ``tls-creds=...,tls-authz=AUTHZ_ID`` listener.

    The client's distinguished name is asked of the authz object; a client without one (the
    credentials have ``verify-peer=off``) is admitted, as QEMU admits it without asking
    (crypto/tlssession.c checks the peer only with ``verify-peer``). A subject QEMU cannot
    write, or an authz id that does not exist, refuses the client (QEMU: "Cannot get client
    distinguished name", "Cannot find QAuthZ object ID"). ``on_refused`` hears of each refusal
    (for the audit trail's ``auth.refused``).
    """

    def admit(transport: asyncio.BaseTransport) -> bool:
        try:
            identity = connection_identity(transport)
        except DistinguishedNameError as error:
            log.warning("TLS client refused: cannot get its distinguished name: %s", error)
            refused = Identity("tcp", _address_text(transport.get_extra_info("peername")))
            if on_refused is not None:
                on_refused(refused)
            return False
        if identity.tls_dn is None:
            return True
        if authz_id not in authorizer:
            log.warning("TLS client refused: Cannot find QAuthZ object ID %s", authz_id)
            allowed = False
        else:
            allowed = authorizer.is_allowed(authz_id, identity.tls_dn)
        if not allowed:
            log.info("TLS x509 authz check for %s is denied", identity.tls_dn)
            if on_refused is not None:
                on_refused(identity)
        return allowed

    return admit
