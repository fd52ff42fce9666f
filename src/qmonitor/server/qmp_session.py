"""One QMP client: read loop, requests in flight, reply ordering, backpressure, output bound.

The protocol logic lives in :mod:`qmonitor.qmp.protocol` (negotiation included); what a
request does is decided by the monitor's one point of dispatch
(:meth:`~qmonitor.server.host.SessionHost.submit`). This module only moves bytes and decides
*when* a request runs and *when* its reply is written.

Ordering (DESIGN.md; QEMU runs one in-band request at a time, monitor/qmp.c):
requests start in arrival order. A request **without** an id blocks the connection: nothing
after it starts until it has been answered, so clients that match replies by position
(libvirt, go-qemu, the old ``qmp`` module) see QEMU's behaviour exactly. A request **with** an
id may still be running while later requests start and finish; its reply carries the id, so
clients that route by id (qemu.qmp) get async commands without head-of-line blocking. With
``strict_order`` every request blocks, as in QEMU.

Backpressure, never loss: at most ``max_requests_in_flight`` requests run per connection; past
that, or while blocked, the session stops reading from the socket once
:data:`BLOCKED_INPUT_MAX` bytes of input are buffered (so the end of input, and a hang-up, is
still noticed). With OOB enabled it reads ahead up to :data:`READ_AHEAD_MAX` requests (QEMU's
``QMP_REQ_QUEUE_LEN_MAX``) so that an ``exec-oob`` request can overtake a blocked queue (QMP
spec, section 2.3.1).

End of input is not a hang-up (docs/PROTOCOL.md): a client that shut down its sending side is
answered in full, then the connection closes; a client that closed its socket (seen through
:class:`~qmonitor.server.listen.HangupWatch`, or a failed write) has its requests cancelled.

Bounded output (docs/PROTOCOL.md, "Bounded output per client"): once the transport holds
:data:`WRITE_HIGH_WATER` bytes the client counts as not reading. We then stop running its
requests, and hold what is written to it (events, and replies of requests already running) in
one byte buffer of our own; past :data:`HELD_OUTPUT_MAX` bytes the client is disconnected (and
logged). When the transport has drained, the held bytes go to it in one write. Holding them
here rather than in the transport is what bounds the memory: an event loop's transport keeps
every small write as an object of its own (uvloop: a write request with its own buffers per
event loop iteration, about ten times the size of a 100-byte event), while the held buffer
costs its bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final, cast

from qmonitor.core.dispatch import Invocation, internal_error
from qmonitor.core.errors import QMPError
from qmonitor.core.faults import REPLY_ACTIONS, FaultRule
from qmonitor.core.session import SessionKind
from qmonitor.qmp.encode import pretty_lines
from qmonitor.qmp.messages import InvalidRequest, Negotiated, Request
from qmonitor.qmp.protocol import QMPServerConnection
from qmonitor.qmp.stream import NEED_DATA
from qmonitor.server.faults import faulty_reply, write_greeting
from qmonitor.server.host import SessionHost
from qmonitor.server.listen import HangupWatch, describe_peer
from qmonitor.server.peer import session_identity

log = logging.getLogger("qmonitor.qmp")

send_return_text: Final = QMPServerConnection.send_return_text  # per request: a global

READ_AHEAD_MAX: Final = 8  # QEMU monitor/qmp.c QMP_REQ_QUEUE_LEN_MAX
MAX_REQUESTS_IN_FLIGHT: Final = 64  # per connection; the session stops reading past it
WRITE_HIGH_WATER: Final = 64 * 1024  # bytes in the transport before a client counts as stuck
WRITE_LOW_WATER: Final = 0  # it counts as reading again once the transport has drained
HELD_OUTPUT_MAX: Final = 1024 * 1024  # bytes held for a stuck client before it is disconnected
BLOCKED_INPUT_MAX: Final = 64 * 1024  # input bytes buffered while blocked before reading pauses


class QMPSession(asyncio.Protocol):
    """An asyncio protocol serving one QMP client of a monitor (its :class:`SessionHost`)."""

    kind = SessionKind.QMP

    def __init__(
        self,
        host: SessionHost,
        *,
        peer: str = "",
        close_at_eof: bool = True,
        pretty: bool = False,
    ) -> None:
        self.host = host
        self.peer = peer
        self.identity = session_identity(None)  # until the connection is made
        self._close_at_eof = close_at_eof
        self._input_ended = False  # end of input seen: answer what was read, then close
        self._watched_socket: int | None = None  # watched for a hang-up after end of input
        self.connection = QMPServerConnection(
            host.version,
            host.capabilities,
            pretty=pretty,
            negotiation_check=lambda request: host.negotiation_refusal(request, self),
        )
        self._pretty = pretty  # output goes through pretty_lines (a -qmp-pretty monitor)
        self.transport: asyncio.Transport | None = None
        self.requests_in_flight: dict[int, tuple[Invocation, Request]] = {}
        self._blocking: Invocation | None = None
        self._read_ahead: deque[Request | InvalidRequest | Negotiated] = deque()
        self._reading_paused = False
        self._writing_paused = False
        # Output for a client that is not reading (WRITE_HIGH_WATER), in order, and how many
        # messages it holds.
        self._held_output = bytearray()
        self._held_messages = 0
        # Replies produced while handling one read are written with one write (one syscall),
        # or one per WRITE_HIGH_WATER bytes of them.
        self._output_batch: list[bytes] | None = None
        self._output_batch_bytes = 0
        self._strict_order = host.strict_order
        self._max_in_flight = host.max_requests_in_flight
        # Reply faults (qmonitor.server.faults) of requests not answered yet, by id(request).
        self._reply_faults: dict[int, FaultRule] = {}
        self.closed = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if not self.peer:
            self.peer = describe_peer(transport)
        self.identity = session_identity(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        self.host.session_opened(self)
        greeting = self.connection.greeting()
        faults = self.host.faults
        rule = faults.greeting_fault(self.peer) if faults is not None else None
        if rule is not None:
            write_greeting(transport, greeting, rule, self.host.clock)
        else:
            transport.write(greeting)

    def data_received(self, data: bytes) -> None:
        self.connection.receive_data(data)
        self._pump()

    def eof_received(self) -> bool:
        """End of input is not a hang-up: every complete request is still answered.

        The client may only have shut down its sending side (``shutdown(SHUT_WR)``: socat,
        ``nc -N``, scripts), and QEMU answers it. The connection stays open for the replies
        and closes once the last one is written (:meth:`_pump`); meanwhile the socket is
        watched for a real hang-up, which cancels what runs (:meth:`connection_lost`).
        """
        self._input_ended = True
        self.connection.receive_eof()
        self._pump()
        transport = self.transport
        if transport is not None and transport.get_extra_info("ssl_object") is not None:
            # TLS: the end of input is the end of the session; asyncio/sslproto.py shuts the
            # connection down whatever we answer (and warns on stderr when it is True).
            return False
        if transport is not None and not transport.is_closing() and self._close_at_eof:
            self._watch_for_hangup(transport)
        return True

    def _watch_for_hangup(self, transport: asyncio.Transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is None or not HangupWatch.available:
            return
        self._watched_socket = sock.fileno()
        self.host.hangups.watch(self._watched_socket, self._hung_up)

    def _hung_up(self) -> None:
        self._watched_socket = None
        log.debug("QMP client %s hung up", self.peer or "?")
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watched_socket is not None:
            self.host.hangups.unwatch(self._watched_socket, self._hung_up)
            self._watched_socket = None
        self.connection.close()
        self.host.session_closed(self)
        self.cancel_all("cancelled: the client disconnected")
        self.requests_in_flight.clear()  # nobody to answer
        self._reply_faults.clear()
        self._drop_held_output()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        """The transport has drained: what was held goes out in one write."""
        self._writing_paused = False
        if self._held_output and self.transport is not None and not self.transport.is_closing():
            held = self._held_output
            self._drop_held_output()  # the transport owns ``held`` from here
            self.transport.write(held)
        self._pump()

    # -- output ----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Queue a reply (compact, as QMPServerConnection writes it)."""
        self._write_laid_out(pretty_lines(data) if self._pretty else data)

    def _write_laid_out(self, data: bytes) -> None:
        batch = self._output_batch
        if batch is None:
            self._send(data)
            return
        batch.append(data)
        self._output_batch_bytes += len(data)
        if self._output_batch_bytes >= WRITE_HIGH_WATER:
            # Written now, so that the transport can say the client is not reading (and the
            # pump stops running its requests) within one read of pipelined requests too.
            self._flush_output_batch()

    def _flush_output_batch(self) -> None:
        batch = self._output_batch
        if batch:
            data = b"".join(batch) if len(batch) > 1 else batch[0]
            batch.clear()
            self._output_batch_bytes = 0
            self._send(data)

    def _send(self, data: bytes) -> None:
        if self._writing_paused:
            self._hold(data)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _hold(self, data: bytes) -> None:
        self._held_output += data
        self._held_messages += data.count(b"\n")

    def _drop_held_output(self) -> None:
        self._held_output = bytearray()
        self._held_messages = 0

    def send_event(self, data: bytes) -> None:
        """Queue an encoded event line, in command mode only (QMP spec, section 4: qemu.qmp
        reads the message after its ``qmp_capabilities`` as the reply to it).

        A client that is not reading has it held, unless that would hold more than
        :data:`HELD_OUTPUT_MAX` bytes: then it is disconnected.
        """
        transport = self.transport
        if transport is None or transport.is_closing() or not self.connection.negotiated:
            return
        if self._pretty:
            data = pretty_lines(data)
        if not self._writing_paused or self._output_batch is not None:
            self._write_laid_out(data)
            return
        if len(self._held_output) + len(data) <= HELD_OUTPUT_MAX:
            self._hold(data)
            return
        log.warning(
            "QMP client %s is not reading: %d bytes (%d messages) held, disconnecting it",
            self.peer or "?",
            len(self._held_output),
            self._held_messages,
        )
        dropped = {"peer": self.peer, "count": self._held_messages}
        self.host.trace("event.dropped", dropped)
        self._drop_held_output()
        transport.abort()

    def _reply_error(self, error: QMPError, request_id: object, has_id: bool) -> None:
        self._write(self.connection.send_error(error, request_id, has_id))

    def _write_reply(self, data: bytes, request: Request) -> None:
        """Write ``request``'s reply, as a reply fault says if one fired for it."""
        rule = self._reply_faults.pop(id(request), None) if self._reply_faults else None
        if rule is None:
            self._write(data)
        elif rule.action != "disconnect":
            self._write(faulty_reply(data, rule))
        else:
            if rule.when == "after-reply":
                self._write(data)
            self._flush_output_batch()
            if self.transport is not None:
                self.transport.close()

    # -- input -----------------------------------------------------------------------------

    def _pause_reading(self) -> None:
        # After end of input the transport reads nothing more; pausing and resuming it would
        # only make it report the end of input again.
        if not self._reading_paused and not self._input_ended and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def _pump(self) -> None:
        """Run what may run now, in arrival order, and write the replies in one go (one
        write per WRITE_HIGH_WATER bytes of them)."""
        if self._output_batch is not None:  # re-entered from a reply's completion
            self._pump_requests()
            return
        batch: list[bytes] = []
        self._output_batch = batch
        try:
            answered_all = self._pump_requests()
        finally:
            self._output_batch = None
            if batch:  # _flush_output_batch, inlined: once per read
                self._output_batch_bytes = 0
                self._send(b"".join(batch) if len(batch) > 1 else batch[0])
        if answered_all and self._close_at_eof and self.transport is not None:
            self.transport.close()  # after the replies still buffered have gone out

    def _pump_requests(self) -> bool:
        """Run what may run now, in arrival order; stop reading when we may not.

        Returns True once the input has ended and every request in it has been answered.
        """
        if self.host.closing:
            return False  # shutting down: what is queued behind the cancelled requests never starts

        connection = self.connection
        framer = connection.framer
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
                        return False
                    if type(event) is Request and event.oob:
                        self._handle(event)
                    else:
                        read_ahead.append(event)
                    continue
                # Keep reading up to a bound even when blocked, so that the end of input, and
                # so a client hanging up, is seen while a long command runs.
                if connection.buffered_bytes >= BLOCKED_INPUT_MAX:
                    self._pause_reading()
                return False
            if read_ahead:
                event = read_ahead.popleft()
            elif framer.drained:  # the read's last request was the last byte: no call needed
                event = NEED_DATA
            else:
                event = connection.next_event()
            if event is NEED_DATA:
                if self._reading_paused:
                    self._resume_reading()
                return self._input_ended and not in_flight
            self._handle(event)

    def _handle(self, event: Request | InvalidRequest | Negotiated) -> None:
        if type(event) is not Request:  # tested first: nearly every event is a Request
            self._handle_other(cast("InvalidRequest | Negotiated", event))
            return
        request = event
        command_name, arguments, request_id, has_id, oob = request
        host = self.host
        faults = host.faults
        if faults is not None and faults.has_command_rules:
            rule = faults.command_fault(command_name, arguments, REPLY_ACTIONS, self.peer)
            if rule is not None:
                self._reply_faults[id(request)] = rule
        try:
            outcome = host.submit(
                command_name, arguments, session=self, request_id=request_id, oob=oob
            )
            if isinstance(outcome, tuple):  # Returned: a sync command's result
                command, value = outcome
                writer = command.result_text or host.result_writer(command)
                try:
                    text = writer(value)
                except Exception as exc:  # a result its type hint denies
                    raise internal_error(command, exc) from exc
                reply = send_return_text(text, request_id, has_id)
                batch = self._output_batch
                if batch is None or self._pretty or self._reply_faults:
                    self._write_reply(reply, request)
                    return
                # _write_laid_out, inlined: this is every sync request's way out.
                batch.append(reply)
                self._output_batch_bytes += len(reply)
                if self._output_batch_bytes >= WRITE_HIGH_WATER:
                    self._flush_output_batch()
                return
        except QMPError as exc:
            self._write_reply(self.connection.send_error(exc, request_id, has_id), request)
            return
        self._await(outcome, request)

    def _await(self, invocation: Invocation, request: Request) -> None:
        """A command that did not return at once: answered when it completes.

        Apart from :meth:`_handle` because of the callback: a function making a closure has
        its variables in a frame object made on every call once compiled (mypyc).
        """
        if invocation.done:
            self._finish(invocation, request)
            return
        key = id(invocation)
        self.requests_in_flight[key] = (invocation, request)
        if self._strict_order or not request.has_id:
            self._blocking = invocation
        invocation.future.add_done_callback(lambda _: self._completed(key, invocation, request))

    def _handle_other(self, event: InvalidRequest | Negotiated) -> None:
        """Input answered with an error, or ``qmp_capabilities`` run in negotiation mode."""
        if isinstance(event, InvalidRequest):
            if event.request is not None:  # answered in negotiation mode
                self.host.trace_negotiation(event.request, self, event.error)
            self._reply_error(event.error, event.request_id, event.has_id)
            return
        if event.request is not None:
            self.host.trace_negotiation(event.request, self, None)
        self._write(self.connection.send_return({}, event.request_id, event.has_id))

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
                self._write_reply(reply, request)
                return
        assert isinstance(exc, QMPError)
        self._write_reply(
            self.connection.send_error(exc, request.request_id, request.has_id), request
        )

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

    @property
    def unparsed_input_bytes(self) -> int:
        """Bytes received and not parsed yet: where the request being run ends, counted from
        the end of the input (for descriptors passed with it, :mod:`qmonitor.server.fds`)."""
        return self.connection.buffered_bytes

    # -- for the monitor and the commands (HostedSession, Session) -------------------------

    def cancel_all(self, reason: str) -> list[asyncio.Future[object]]:
        """Cancel every request in flight; their outcomes, to wait for the replies."""
        outcomes = []
        for invocation, _ in list(self.requests_in_flight.values()):
            invocation.cancel(reason)
            outcomes.append(invocation.future)
        return outcomes

    def close(self) -> None:
        """Close the connection once what is written has gone out."""
        if self.transport is not None:
            self.transport.close()

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
