"""One QMP client: read loop, requests in flight, reply ordering, backpressure, output bound.

The protocol logic lives in :mod:`qmonitor.qmp.protocol`; this module only moves bytes and
decides *when* a request runs and *when* its reply is written.

Ordering (DESIGN.md; QEMU runs one in-band request at a time, monitor/qmp.c):
requests start in arrival order. A request **without** an id blocks the connection: nothing
after it starts until it has been answered, so clients that match replies by position
(libvirt, go-qemu, the old ``qmp`` module) see QEMU's behaviour exactly. A request **with** an
id may still be running while later requests start and finish; its reply carries the id, so
clients that route by id (qemu.qmp) get async commands without head-of-line blocking. With
``strict_order`` every request blocks, as in QEMU.

Backpressure, never loss: at most ``max_requests_in_flight`` requests run per connection; past
that, or while blocked, the session stops reading from the socket once
:data:`BLOCKED_INPUT_MAX` bytes of input are buffered (so a client hanging up is still noticed
and its requests cancelled). With OOB enabled it reads
ahead up to :data:`READ_AHEAD_MAX` requests (QEMU's ``QMP_REQ_QUEUE_LEN_MAX``) so that an
``exec-oob`` request can overtake a blocked queue (QMP spec, section 2.3.1).

Bounded output: the transport's write buffer has a high-water mark. While a client is not
reading (buffer above the mark) we stop reading its requests, and events for it are held in a
backlog of at most :data:`EVENT_BACKLOG_MAX`; if that overflows the client is disconnected (and
logged), so a stuck client can neither stall other clients nor grow our memory without limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Final, cast

from qmonitor.core.commands import HandlerStyle
from qmonitor.core.dispatch import Invocation, encode_result, internal_error, invoke, run_sync
from qmonitor.core.errors import CommandNotFound, QMPError
from qmonitor.qmp.messages import InvalidRequest, Request
from qmonitor.qmp.protocol import QMPServerConnection
from qmonitor.qmp.stream import NEED_DATA
from qmonitor.server.listen import describe_peer

if TYPE_CHECKING:
    from qmonitor.server.monitor import Monitor

log = logging.getLogger("qmonitor.qmp")

READ_AHEAD_MAX: Final = 8  # QEMU monitor/qmp.c QMP_REQ_QUEUE_LEN_MAX
MAX_REQUESTS_IN_FLIGHT: Final = 64  # per connection; the session stops reading past it
WRITE_HIGH_WATER: Final = 1024 * 1024  # bytes buffered for a client before it counts as stuck
WRITE_LOW_WATER: Final = 256 * 1024
EVENT_BACKLOG_MAX: Final = 1024  # events held for a stuck client before it is disconnected
BLOCKED_INPUT_MAX: Final = 64 * 1024  # input bytes buffered while blocked before reading pauses


class QMPSession(asyncio.Protocol):
    """An asyncio protocol serving one QMP client of a :class:`Monitor`."""

    def __init__(self, monitor: Monitor, *, peer: str = "") -> None:
        self.monitor = monitor
        self.peer = peer
        self.connection = QMPServerConnection(monitor.version, monitor.capabilities)
        self.transport: asyncio.Transport | None = None
        self.requests_in_flight: dict[int, tuple[Invocation, Request]] = {}
        self._blocking: Invocation | None = None
        self._read_ahead: deque[Request | InvalidRequest] = deque()
        self._reading_paused = False
        self._writing_paused = False
        self._event_backlog: deque[bytes] = deque()
        # Replies produced while handling one read are written with one write (one syscall).
        self._output_batch: list[bytes] | None = None
        self._strict_order = monitor.strict_order
        self._max_in_flight = monitor.max_requests_in_flight
        self.closed = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if not self.peer:
            self.peer = describe_peer(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        self.monitor._session_opened(self)
        transport.write(self.connection.greeting())

    def data_received(self, data: bytes) -> None:
        self.connection.receive_data(data)
        self._pump()

    def eof_received(self) -> bool:
        self.connection.receive_eof()
        self._pump()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.close()
        self.monitor._session_closed(self)
        for invocation, _ in list(self.requests_in_flight.values()):
            invocation.cancel("cancelled: the client disconnected")
        self.requests_in_flight.clear()
        self._event_backlog.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        backlog, self._event_backlog = self._event_backlog, deque()
        if backlog and self.transport is not None:
            self.transport.write(b"".join(backlog))
        self._pump()

    # -- output ----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._output_batch is not None:
            self._output_batch.append(data)
        elif self._event_backlog:  # events are held back: what follows them waits its turn
            self._event_backlog.append(data)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_event(self, data: bytes) -> None:
        """Queue an encoded event line; only called in command mode (the monitor checks)."""
        if self.transport is None or self.transport.is_closing():
            return
        if not self._writing_paused:
            self._write(data)
            return
        self._event_backlog.append(data)
        if len(self._event_backlog) > EVENT_BACKLOG_MAX:
            log.warning(
                "QMP client %s is not reading: %d events held, disconnecting it",
                self.peer or "?",
                len(self._event_backlog),
            )
            dropped = {"peer": self.peer, "count": len(self._event_backlog)}
            self.monitor._trace("event.dropped", dropped)
            self._event_backlog.clear()
            if self.transport is not None:
                self.transport.abort()

    def _reply(self, value: object, request: Request) -> None:
        self._write(self.connection.send_return(value, request.request_id, request.has_id))

    def _reply_error(self, error: QMPError, request_id: object, has_id: bool) -> None:
        self._write(self.connection.send_error(error, request_id, has_id))

    # -- input -----------------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def _pump(self) -> None:
        """Run what may run now, in arrival order, and write the replies in one go."""
        if self._output_batch is not None:  # re-entered from a reply's completion
            self._pump_requests()
            return
        batch: list[bytes] = []
        self._output_batch = batch
        try:
            self._pump_requests()
        finally:
            self._output_batch = None
            if batch:
                self._write(b"".join(batch) if len(batch) > 1 else batch[0])

    def _pump_requests(self) -> None:
        """Run what may run now, in arrival order; stop reading when we may not."""
        if self.monitor.closing:
            return  # shutting down: what is queued behind the cancelled requests never starts
        connection = self.connection
        read_ahead = self._read_ahead
        in_flight = self.requests_in_flight
        max_in_flight = self._max_in_flight
        while True:
            if (
                self._blocking is not None
                or len(in_flight) >= max_in_flight
                or self._writing_paused
            ):
                if (
                    connection.oob_enabled
                    and len(read_ahead) < READ_AHEAD_MAX
                    and not self._writing_paused
                ):
                    event = connection.next_event()
                    if event is NEED_DATA:
                        return
                    if type(event) is Request and event.oob:
                        self._handle(event)
                    else:
                        read_ahead.append(event)
                    continue
                # Keep reading up to a bound even when blocked, so that a client hanging up
                # is seen (and its requests cancelled) while a long command runs.
                if connection.buffered_bytes >= BLOCKED_INPUT_MAX:
                    self._pause_reading()
                return
            event = read_ahead.popleft() if read_ahead else connection.next_event()
            if event is NEED_DATA:
                self._resume_reading()
                return
            self._handle(event)

    def _handle(self, event: Request | InvalidRequest) -> None:
        if type(event) is InvalidRequest:
            self._reply_error(event.error, event.request_id, event.has_id)
            return
        assert type(event) is Request
        request = event
        monitor = self.monitor
        connection = self.connection
        if not connection.negotiated or request.command == "qmp_capabilities":
            error = connection.negotiation_error(request)
            if error is not None:
                self._reply_error(error, request.request_id, request.has_id)
                return
        command = monitor.registry.get_qmp(request.command)
        try:
            if command is None:
                raise CommandNotFound(request.command)
            if request.oob and not command.allow_oob:
                raise QMPError(f"The command {request.command} does not support OOB")
            kwargs = command.signature.convert_arguments(request.arguments)
            if not connection.negotiated:
                self._negotiate(kwargs)
                self._reply({}, request)
                return
            if command.style is HandlerStyle.SYNC:
                result = run_sync(command, kwargs, request.request_id, self, monitor.tracer)
                text = encode_result(command, result, monitor.result_writer(command))
                self._write(connection.send_return_text(text, request.request_id, request.has_id))
                return
        except QMPError as exc:
            self._reply_error(exc, request.request_id, request.has_id)
            return
        invocation = invoke(
            command, kwargs, request_id=request.request_id, session=self, tracer=monitor.tracer
        )
        if invocation.done:
            self._finish(invocation, request)
            return
        key = id(invocation)
        self.requests_in_flight[key] = (invocation, request)
        if self._strict_order or not request.has_id:
            self._blocking = invocation
        invocation.future.add_done_callback(lambda _: self._completed(key, invocation, request))

    def _negotiate(self, kwargs: dict[str, Any]) -> None:
        enable = kwargs.get("enable") or []
        self.connection.accept_capabilities([getattr(c, "value", c) for c in enable])

    def _finish(self, invocation: Invocation, request: Request) -> None:
        exc = invocation.future.exception()
        if exc is None:
            try:
                reply = self.connection.send_return(
                    invocation.future.result(), request.request_id, request.has_id
                )
            except Exception as encode_error:  # a result its type hint denies
                exc = internal_error(invocation.command, encode_error)
            else:
                self._write(reply)
                return
        assert isinstance(exc, QMPError)
        self._reply_error(exc, request.request_id, request.has_id)

    def _completed(self, key: int, invocation: Invocation, request: Request) -> None:
        if self.requests_in_flight.pop(key, None) is None:
            invocation.future.exception()  # the client is gone: nobody to answer
            return
        try:
            self._finish(invocation, request)
        finally:
            if self._blocking is invocation:
                self._blocking = None
        self._pump()

    # -- our extension ---------------------------------------------------------------------

    def cancel_request(self, request_id: object) -> bool:
        """Cancel this session's in-flight request with ``id`` equal to ``request_id``."""
        for invocation, request in self.requests_in_flight.values():
            if (
                request.has_id
                and request.request_id == request_id
                and type(request.request_id) is type(request_id)
            ):
                return invocation.cancel("cancelled by the client")
        return False
