"""The character devices monitors are served on: QEMU's names for them, and yanking them.

QEMU turns every ``-qmp`` and ``-monitor`` option into a chardev labelled ``compat_monitorN``, N
counting those options in command-line order (softmmu/vl.c ``monitor_parse``; ``-monitor none``
makes none and is not counted). A socket chardev (``unix:`` or ``tcp:``, listening or
connecting out) is a yank instance ``{"type": "chardev", "id": LABEL}`` for as long as it exists
(chardev/char.c ``qemu_chardev_new``: ``supports_yank``); yanking it shuts its connected socket
down (chardev/char-socket.c ``char_socket_yank_iochannel``), which the monitor then sees as the
client hanging up, and a listening chardev goes on accepting. ``stdio`` is counted but is no
yank instance.

One difference, from serving many clients per socket (docs/PROTOCOL.md): QEMU's socket chardev
has at most one client, ours as many as connect, so yanking a listening monitor shuts down every
connection it accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from typing import Protocol, TypeVar

from qmonitor.core.yank_keys import YankKey, chardev_key
from qmonitor.server.listen import Address


class _Session(Protocol):
    """A monitor session: what a chardev needs of it."""

    transport: asyncio.Transport | None
    closed: asyncio.Future[None]  # done once its connection is lost


SessionT = TypeVar("SessionT", bound=_Session)


def shutdown_socket(transport: asyncio.BaseTransport) -> None:
    """``shutdown(SHUT_RDWR)`` on the socket under ``transport``, as qio_channel_shutdown does.

    Through a duplicate of its descriptor: uvloop's transports do not let their socket be shut
    down, but the connection is the same whichever descriptor names it.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(sock.fileno())) as duplicate:
        duplicate.shutdown(socket.SHUT_RDWR)


class Chardev:
    """One monitor's character device: its label and the sessions served on it."""

    def __init__(self, label: str, address: Address) -> None:
        self.label = label
        self.address = address
        # The sessions made and not yet closed: an explicit registry, not weak references,
        # since a session compiled by mypyc (setup.py) must not be weakly referenced (its
        # deallocation leaves the reference dangling). Sessions are only made for connections
        # that are made (listen.start_listener: after the TLS handshake), so each one leaves.
        self._sessions: set[_Session] = set()
        self.cpu_index: int | None = None
        """The current CPU of the monitor on this chardev (QEMU's ``mon->mon_cpu_path``, set by
        HMP ``cpu``); None: the first CPU, which QEMU's ``mon_get_cpu`` picks when unset."""
        self.served = asyncio.Event()
        """Set once a first session is made on it: what start-up waits for on a listening
        chardev with ``wait=on`` (chardev/char-socket.c ``tcp_chr_accept_server_sync``)."""

    @property
    def yank_key(self) -> YankKey | None:
        """Its yank instance's key: socket chardevs only."""
        if self.address.transport in ("unix", "tcp", "fd"):
            return chardev_key(self.label)
        return None

    def track(self, factory: Callable[[], SessionT]) -> Callable[[], SessionT]:
        """``factory``, remembering every session it makes as served on this chardev until
        its connection is lost."""

        def make_session() -> SessionT:
            session = factory()
            self._sessions.add(session)
            session.closed.add_done_callback(lambda _: self._sessions.discard(session))
            self.served.set()
            return session

        return make_session

    def serves(self, session: object) -> bool:
        """Whether ``session`` was made by :meth:`track` of this chardev."""
        return session in self._sessions

    def yank(self) -> None:
        """Shut down the connection of every session served on this chardev."""
        for session in list(self._sessions):
            transport = session.transport
            if transport is not None and not transport.is_closing():
                shutdown_socket(transport)
