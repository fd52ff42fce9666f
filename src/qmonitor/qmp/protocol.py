"""One QMP server connection without I/O: greeting, negotiation, command mode.

Bytes go in with :meth:`QMPServerConnection.receive_data`; well-formed requests and invalid
input come out of :meth:`~QMPServerConnection.next_event` in arrival order; replies and events
are turned into bytes by the ``send_*`` methods. Nothing here reads a socket or a clock.

The rules, all from QEMU (docs/interop/qmp-spec.rst and monitor/qmp.c, qapi/qmp-dispatch.c):

* The greeting goes out first, at once (spec section 2.2).
* Capabilities negotiation mode (spec section 4) is handled here entirely: only an in-band
  ``qmp_capabilities`` may run, and it runs here (its arguments checked with QEMU's texts,
  each capability checked against the greeting's: ``Capability X not available``), giving
  :class:`~qmonitor.qmp.messages.Negotiated`; anything else, unknown commands included, is
  answered with CommandNotFound ``Expecting capabilities negotiation with
  'qmp_capabilities'`` (monitor/qmp.c ``qmp_dispatch`` on ``qmp_cap_negotiation_commands``).
  No event is sent in this mode: :attr:`QMPServerConnection.negotiated` says when they may be.
  The caller may refuse ``qmp_capabilities`` before it runs (``negotiation_check``: a roles
  policy), and learns of every request answered here (the events carry it: an audit trail).
* Command mode: every well-formed request is handed to the caller to dispatch, even
  ``qmp_capabilities``, which QEMU dispatches like any command: its arguments are checked,
  then its handler answers CommandNotFound ``Capabilities negotiation is already complete,
  command ignored`` (monitor/qmp-cmds-control.c; qmonitor's built-in command does the same).
* A request is checked before anything runs, in QEMU's order (qmp_dispatch_check_obj): it must
  be an object; each member, walked in QDict order, must be ``execute`` (a string),
  ``exec-oob`` (a string, only once OOB is enabled), ``arguments`` (an object) or ``id``;
  ``execute`` must be present. The ``id`` is taken before any check, so every error about a
  well-formed object carries it.

The state transitions are the table :data:`TRANSITIONS`, keyed by state and :class:`Trigger`;
nothing else changes the state::

    NEGOTIATING ──capabilities-accepted──▶ COMMAND_MODE
         │                                      │
         └──────────────closed──────────────────┴──▶ CLOSED
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any, Final

from qmonitor.core.errors import ErrorClass, QMPError, StateError
from qmonitor.core.qdict import member_order
from qmonitor.qmp.capabilities import CAPABILITIES_SIGNATURE, QMPCapability
from qmonitor.qmp.encode import encode_json, encode_message, quoted_string
from qmonitor.qmp.messages import InvalidRequest, Negotiated, Request
from qmonitor.qmp.stream import NEED_DATA, JSONParseError, JSONStreamFramer, NeedData


class SessionState(Enum):
    """Where a QMP connection is in its life (spec section 4)."""

    NEGOTIATING = "negotiating"  # greeting sent; only qmp_capabilities accepted
    COMMAND_MODE = "command-mode"  # negotiated; commands run and events flow
    CLOSED = "closed"  # the peer went away or we hung up


_COMMAND_MODE: Final = SessionState.COMMAND_MODE  # per request: a global, not an enum lookup


class Trigger(Enum):
    """What moves a connection from one state to another."""

    CAPABILITIES_ACCEPTED = "capabilities-accepted"  # qmp_capabilities succeeded (section 4)
    CLOSED = "closed"  # the peer went away or we hung up


TRANSITIONS: Final[Mapping[tuple[SessionState, Trigger], SessionState]] = {
    (SessionState.NEGOTIATING, Trigger.CAPABILITIES_ACCEPTED): SessionState.COMMAND_MODE,
    (SessionState.NEGOTIATING, Trigger.CLOSED): SessionState.CLOSED,
    (SessionState.COMMAND_MODE, Trigger.CLOSED): SessionState.CLOSED,
}


CAPABILITIES_COMMAND: Final = "qmp_capabilities"

NEGOTIATION_REQUIRED: Final = "Expecting capabilities negotiation with 'qmp_capabilities'"
ALREADY_NEGOTIATED: Final = "Capabilities negotiation is already complete, command ignored"
NOT_AN_OBJECT: Final = "QMP input must be a JSON object"

_EXECUTE = "execute"
# A request is made per request: tuple.__new__ is a C call, a named tuple's own __new__ is not.
_new_request: Final = tuple.__new__
_EXEC_OOB = "exec-oob"


def check_request(message: object, oob_enabled: bool) -> Request | InvalidRequest:
    """Validate a parsed JSON value as a request, QEMU's qmp_dispatch_check_obj rules."""
    if type(message) is not dict:
        return InvalidRequest(QMPError(NOT_AN_OBJECT))
    has_id = "id" in message
    request_id = message.get("id")
    command: str | None = None
    execute_key: str | None = None
    arguments: Any = None
    keys = tuple(message)
    for position in member_order(keys):
        member = keys[position]
        value = message[member]
        if member == _EXECUTE or (member == _EXEC_OOB and oob_enabled):
            if type(value) is not str:
                return _invalid(f"QMP input member '{member}' must be a string", message)
            if execute_key is not None:
                return _invalid(
                    f"QMP input member '{member}' clashes with '{execute_key}'", message
                )
            execute_key = member
            command = value
        elif member == "arguments":
            if type(value) is not dict:
                return _invalid("QMP input member 'arguments' must be an object", message)
            arguments = value
        elif member != "id":
            return _invalid(f"QMP input member '{member}' is unexpected", message)
    if execute_key is None or command is None:
        return _invalid("QMP input lacks member 'execute'", message)
    return Request(command, arguments or {}, request_id, has_id, execute_key == _EXEC_OOB)


def _invalid(desc: str, message: dict[str, Any]) -> InvalidRequest:
    return InvalidRequest(QMPError(desc), message.get("id"), "id" in message)


class QMPServerConnection:
    """The server side of one QMP connection (see the module docstring)."""

    def __init__(
        self,
        version: Mapping[str, object],
        capabilities: Sequence[str] = ("oob",),
        framer: JSONStreamFramer | None = None,
        pretty: bool = False,
        negotiation_check: Callable[[Request], QMPError | None] | None = None,
    ) -> None:
        self.version = version  # shared by every connection; never changed
        # Asked before qmp_capabilities runs: an error refuses it (the connection stays in
        # negotiation mode), before its arguments are looked at, as a policy refuses a command.
        self.negotiation_check = negotiation_check
        # A ``pretty=on`` monitor's connection (``-qmp-pretty``): its output is laid out by
        # qmonitor.qmp.encode.pretty_lines (the send_* methods stay compact, for everyone).
        self.pretty = pretty
        self.capabilities = tuple(capabilities)
        self.state = SessionState.NEGOTIATING
        self.oob_enabled = False
        # Public for the session's read loop, which asks it whether a read is used up (drained).
        self.framer = framer or JSONStreamFramer()

    # -- state -----------------------------------------------------------------------------

    @property
    def negotiated(self) -> bool:
        """Whether the connection is in command mode: commands run and events may be sent."""
        return self.state is SessionState.COMMAND_MODE

    def _transition(self, trigger: Trigger) -> None:
        try:
            self.state = TRANSITIONS[(self.state, trigger)]
        except KeyError:
            raise StateError(
                f"no transition on {trigger.value} in state {self.state.value}"
            ) from None

    def _negotiate(self, request: Request) -> Negotiated | InvalidRequest:
        """A request in negotiation mode: run it if it is ``qmp_capabilities``, else refuse it.

        The arguments are checked with the same converter as any command's (QEMU's texts), then
        the capabilities against those offered: ``Capability X not available``
        (monitor/qmp-cmds-control.c ``qmp_caps_accept``), X listing every one asked for that
        the server did not offer, as often as asked (``oob, oob``). A refused negotiation
        leaves the connection in negotiation mode.
        """
        if request.command != CAPABILITIES_COMMAND or request.oob:
            error = QMPError(NEGOTIATION_REQUIRED, ErrorClass.COMMAND_NOT_FOUND)
            return InvalidRequest(error, request.request_id, request.has_id, request)
        check = self.negotiation_check
        refusal = check(request) if check is not None else None
        if refusal is not None:
            return InvalidRequest(refusal, request.request_id, request.has_id, request)
        try:
            arguments = CAPABILITIES_SIGNATURE.convert_arguments(request.arguments)
            enable = typing.cast(list[QMPCapability], arguments["enable"] or [])
            unavailable = [c.value for c in enable if c not in self.capabilities]
            if unavailable:
                raise QMPError(f"Capability {', '.join(unavailable)} not available")
        except QMPError as error:
            return InvalidRequest(error, request.request_id, request.has_id, request)
        self._transition(Trigger.CAPABILITIES_ACCEPTED)
        self.oob_enabled = QMPCapability.OOB in enable
        return Negotiated(request.request_id, request.has_id, request)

    def close(self) -> None:
        """Mark the connection closed (idempotent)."""
        if self.state is not SessionState.CLOSED:
            self._transition(Trigger.CLOSED)

    # -- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; raises :class:`StateError` once closed."""
        if self.state is SessionState.CLOSED:
            raise StateError("receive_data() on a closed connection")
        self.framer.receive_data(data)

    def receive_eof(self) -> None:
        """The client closed its side: complete messages still drain; a partial one is dropped
        silently, as QEMU does (monitor_qmp_event CHR_EVENT_CLOSED resets the parser)."""
        self.framer.receive_eof()

    @property
    def buffered_bytes(self) -> int:
        """Input bytes held and not yet turned into events."""
        return self.framer.buffered_bytes

    def next_event(self) -> Request | InvalidRequest | Negotiated | NeedData:
        """The next event, or :data:`NEED_DATA`.

        :class:`~qmonitor.qmp.messages.Request`: a request to dispatch (command mode only);
        :class:`~qmonitor.qmp.messages.InvalidRequest`: input to answer with its error;
        :class:`~qmonitor.qmp.messages.Negotiated`: capabilities accepted, answer ``{}``.
        """
        value = self.framer.next_value()
        if type(value) is dict and self.state is _COMMAND_MODE:
            # The shape every client sends, checked here rather than by check_request's walk:
            # a string "execute", an object "arguments" or none, maybe an "id", nothing else.
            command = value.get(_EXECUTE)
            if type(command) is str:
                has_id = "id" in value
                arguments = value.get("arguments")
                if type(arguments) is dict:
                    if len(value) == 2 + has_id:
                        return _new_request(
                            Request, (command, arguments, value.get("id"), has_id, False)
                        )
                elif arguments is None and len(value) == 1 + has_id:  # no "arguments" member
                    return _new_request(Request, (command, {}, value.get("id"), has_id, False))
        elif value is NEED_DATA:
            return NEED_DATA
        elif type(value) is JSONParseError:
            return InvalidRequest(QMPError(value.desc))
        request = check_request(value, self.oob_enabled)
        if self.state is _COMMAND_MODE or type(request) is not Request:
            return request
        return self._negotiate(request)

    # -- output ----------------------------------------------------------------------------

    def greeting(self) -> bytes:
        """The greeting line (spec section 2.2): version and offered capabilities."""
        return encode_message(
            {"QMP": {"version": self.version, "capabilities": list(self.capabilities)}},
            self.pretty,
        )

    # The envelopes are written directly: QDict order puts "return" before "id" and "id"
    # before "error", and "class" before "desc" (see qmonitor.qmp.encode).

    @staticmethod
    def send_return(value: object, request_id: object = None, has_id: bool = False) -> bytes:
        """A success reply (spec section 2.4.1); the id, if the request had one, echoed."""
        return QMPServerConnection.send_return_text(encode_json(value), request_id, has_id)

    @staticmethod
    def send_return_text(result_text: str, request_id: object, has_id: bool) -> bytes:
        """A success reply whose return value is already JSON text (see encode.result_writer)."""
        if has_id:
            if type(request_id) is int:  # the usual id (qemu.qmp counts): json-writer.c's
                id_text = str(request_id)
            elif type(request_id) is str:
                id_text = quoted_string(request_id)
            else:
                id_text = encode_json(request_id)
            text = f'{{"return": {result_text}, "id": {id_text}}}\r\n'
        else:
            text = f'{{"return": {result_text}}}\r\n'
        return text.encode("ascii")

    @staticmethod
    def send_error(error: QMPError, request_id: object = None, has_id: bool = False) -> bytes:
        """An error reply (spec section 2.4.2)."""
        body = (
            f'{{"class": {quoted_string(error.error_class.value)}, '
            f'"desc": {quoted_string(error.desc)}}}'
        )
        if has_id:
            text = f'{{"id": {encode_json(request_id)}, "error": {body}}}\r\n'
        else:
            text = f'{{"error": {body}}}\r\n'
        return text.encode("ascii")
