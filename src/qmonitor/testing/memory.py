"""A QMP client and a monitor's real session, connected in memory (trio's
``memory_stream_pair``, h11's connection pairs): no socket, no process, no port.

:func:`memory_transport_pair` joins two asyncio protocols with two transports that hand each
write to the other side's ``data_received`` on the next loop iteration, in order, and honour
``pause_reading``; :func:`memory_pair` puts a monitor's :class:`~qmonitor.server.qmp_session.
QMPSession` (the very session a socket client gets: negotiation, ordering, faults, events) at
one end and a :class:`~qmonitor.testing.RawQMPClient` at the other.

What a memory transport does not have: a socket (so no peer credentials: the session's peer is
``memory``, and a hang-up is the client's :meth:`~qmonitor.testing.RawQMPClient.close`), and a
bounded write buffer (a write is handed over at once, so the session's "client not reading"
limits of docs/PROTOCOL.md never trigger; test those over a socket).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from qmonitor.server.monitor import Monitor
from qmonitor.server.qmp_session import QMPSession
from qmonitor.testing import RawQMPClient


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory connection: what is written here is received by the peer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self.peer: MemoryTransport | None = None
        self._incoming: deque[bytes] = deque()  # written by the peer, not delivered yet
        self._peer_closed = False  # the peer closed: end of input once _incoming is delivered
        self._reading_paused = False
        self._delivery_scheduled = False
        self._closing = False
        self._lost = False

    # -- the writing side ------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        assert self.peer is not None
        self.peer._incoming.append(bytes(data))
        self.peer._schedule_delivery()

    def write_eof(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0  # handed to the peer at once

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Accepted and ignored: nothing is ever buffered on this side (module docstring)."""

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close after what was written (all of it is with the peer already): the peer reads
        it, sees the end of input, and both ends lose the connection."""
        if self._closing:
            return
        self._closing = True
        if self.peer is not None:
            self.peer._peer_closed = True
            self.peer._schedule_delivery()
        self._loop.call_soon(self._connection_lost)

    def abort(self) -> None:
        self.close()

    # -- the reading side ------------------------------------------------------------------

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False
        self._schedule_delivery()

    def is_reading(self) -> bool:
        return not self._reading_paused

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default  # no socket, no peer name

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def _schedule_delivery(self) -> None:
        if not self._delivery_scheduled:
            self._delivery_scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._delivery_scheduled = False
        while self._incoming and not self._reading_paused and not self._lost:
            self._protocol.data_received(self._incoming.popleft())
        if self._peer_closed and not self._incoming and not self._lost:
            # The peer is gone as a closed socket is: end of input, then the connection lost
            # (what this side writes meanwhile goes nowhere).
            self._peer_closed = False
            self._protocol.eof_received()
            self._closing = True
            self._loop.call_soon(self._connection_lost)

    def _connection_lost(self) -> None:
        if not self._lost:
            self._lost = True
            self._protocol.connection_lost(None)


def memory_transport_pair(
    protocol_a: asyncio.Protocol, protocol_b: asyncio.Protocol
) -> tuple[MemoryTransport, MemoryTransport]:
    """Connect two protocols in memory (``connection_made`` is called on both, a first)."""
    loop = asyncio.get_running_loop()
    transport_a = MemoryTransport(loop, protocol_a)
    transport_b = MemoryTransport(loop, protocol_b)
    transport_a.peer, transport_b.peer = transport_b, transport_a
    protocol_a.connection_made(transport_a)
    protocol_b.connection_made(transport_b)
    return transport_a, transport_b


async def memory_pair(monitor: Monitor, *, read_greeting: bool = True) -> RawQMPClient:
    """A client of ``monitor``'s QMP served in memory by a real session; the greeting read.

    ``await client.execute("query-status")`` and the rest of :class:`RawQMPClient` work as over
    a socket; events come in order with the replies. :meth:`RawQMPClient.close` is the client
    leaving: the session sees it as a hang-up and cancels what it was running.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    client_protocol = asyncio.StreamReaderProtocol(reader)
    session = QMPSession(monitor, peer="memory")
    client_transport, _ = memory_transport_pair(client_protocol, session)
    writer = asyncio.StreamWriter(client_transport, client_protocol, reader, loop)
    client = RawQMPClient(reader, writer)
    if read_greeting:
        client.greeting = await client.receive()
    return client
