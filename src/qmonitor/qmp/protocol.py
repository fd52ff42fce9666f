"""One QMP server connection without I/O: greeting, negotiation, command mode.

Bytes go in with :meth:`QMPServerConnection.receive_data`; well-formed requests and invalid
input come out of :meth:`~QMPServerConnection.next_event` in arrival order; replies and events
are turned into bytes by the ``send_*`` methods. Nothing here reads a socket or a clock.

The rules, all from QEMU (docs/interop/qmp-spec.rst and monitor/qmp.c, qapi/qmp-dispatch.c):

* The greeting goes out first, at once (spec section 2.2).
* Capabilities negotiation mode (spec section 4): only ``qmp_capabilities`` may run; anything
  else, unknown commands included, is answered with CommandNotFound ``Expecting capabilities
  negotiation with 'qmp_capabilities'``, and no event is sent.
* Command mode: ``qmp_capabilities`` is an ordinary command (``exec-oob`` of it, or bad
  arguments, get the usual errors), whose handler answers CommandNotFound ``Capabilities
  negotiation is already complete, command ignored`` (:mod:`qmonitor.server.builtins`).
* A request is checked before anything runs, in QEMU's order (qmp_dispatch_check_obj): it must
  be an object; each member, walked in QDict order, must be ``execute`` (a string),
  ``exec-oob`` (a string, only once OOB is enabled), ``arguments`` (an object) or ``id``;
  ``execute`` must be present. The ``id`` is taken before any check, so every error about a
  well-formed object carries it.

The state transitions are the table :data:`TRANSITIONS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, Final

from qmonitor.core.errors import ErrorClass, QMPError
from qmonitor.core.qdict import member_order
from qmonitor.qmp.encode import encode_json, encode_message, quoted_string
from qmonitor.qmp.messages import InvalidRequest, Request
from qmonitor.qmp.stream import NEED_DATA, JSONMessage, JSONParseError, JSONStreamFramer, NeedData


class SessionState(Enum):
    """Where a QMP connection is in its life (spec section 4)."""

    NEGOTIATING = "negotiating"  # greeting sent; only qmp_capabilities accepted
    COMMAND_MODE = "command-mode"  # negotiated; commands run and events flow
    CLOSED = "closed"  # the peer went away or we hung up


class StateError(RuntimeError):
    """An operation was asked of a connection in a state that does not allow it."""


TRANSITIONS: Final[Mapping[tuple[SessionState, str], SessionState]] = {
    (SessionState.NEGOTIATING, "capabilities-accepted"): SessionState.COMMAND_MODE,
    (SessionState.NEGOTIATING, "close"): SessionState.CLOSED,
    (SessionState.COMMAND_MODE, "close"): SessionState.CLOSED,
}

NEGOTIATION_REQUIRED: Final = "Expecting capabilities negotiation with 'qmp_capabilities'"
ALREADY_NEGOTIATED: Final = "Capabilities negotiation is already complete, command ignored"
NOT_AN_OBJECT: Final = "QMP input must be a JSON object"

_EXECUTE = "execute"
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
    # Fast path for the shape every client sends; falls through to the exact walk otherwise.
    if len(message) <= 3:
        command = message.get(_EXECUTE)
        arguments = message.get("arguments")
        if (
            type(command) is str
            and len(message) == 1 + has_id + ("arguments" in message)
            and (arguments is None or type(arguments) is dict)
            and (arguments is not None or "arguments" not in message)
        ):
            return Request(command, arguments or {}, request_id, has_id, False)
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
    ) -> None:
        self.version = version  # shared by every connection; never changed
        self.capabilities = tuple(capabilities)
        self.state = SessionState.NEGOTIATING
        self.negotiated = False  # in command mode (events may be sent); kept with ``state``
        self.oob_enabled = False
        self._framer = framer or JSONStreamFramer()

    # -- state -----------------------------------------------------------------------------

    def _transition(self, trigger: str) -> None:
        try:
            self.state = TRANSITIONS[(self.state, trigger)]
        except KeyError:
            raise StateError(f"cannot {trigger} in state {self.state.value}") from None
        self.negotiated = self.state is SessionState.COMMAND_MODE

    def negotiation_error(self, request: Request) -> QMPError | None:
        """The error QEMU gives ``request`` in negotiation mode, if the state alone decides it
        (monitor/qmp.c: only ``qmp_capabilities`` is in ``qmp_cap_negotiation_commands``)."""
        if self.state is SessionState.NEGOTIATING and request.command != "qmp_capabilities":
            return QMPError(NEGOTIATION_REQUIRED, ErrorClass.COMMAND_NOT_FOUND)
        return None

    def accept_capabilities(self, enable: Sequence[str]) -> None:
        """Finish negotiation with the capabilities the client enabled.

        Raises :class:`QMPError` ``Capability X not available`` (monitor/qmp-cmds-control.c
        ``qmp_caps_accept``), X listing every one asked for that the server did not offer, as
        often as asked (``oob, oob``); the connection then stays in negotiation mode.
        """
        unavailable = [c for c in enable if c not in self.capabilities]
        if unavailable:
            raise QMPError(f"Capability {', '.join(unavailable)} not available")
        self._transition("capabilities-accepted")
        self.oob_enabled = "oob" in enable

    def close(self) -> None:
        """Mark the connection closed (idempotent)."""
        if self.state is not SessionState.CLOSED:
            self._transition("close")

    # -- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client."""
        self._framer.receive_data(data)

    def receive_eof(self) -> None:
        """The client closed its side: complete messages still drain; a partial one is dropped
        silently, as QEMU does (monitor_qmp_event CHR_EVENT_CLOSED resets the parser)."""
        self._framer.receive_eof()

    @property
    def buffered_bytes(self) -> int:
        """Input bytes held and not yet turned into events."""
        return self._framer.buffered_bytes

    def next_event(self) -> Request | InvalidRequest | NeedData:
        """The next request or invalid input, or :data:`NEED_DATA`."""
        event = self._framer.next_event()
        if type(event) is JSONMessage:
            return check_request(event.value, self.oob_enabled)
        if type(event) is JSONParseError:
            return InvalidRequest(QMPError(event.desc))
        return NEED_DATA

    # -- output ----------------------------------------------------------------------------

    def greeting(self) -> bytes:
        """The greeting line (spec section 2.2): version and offered capabilities."""
        return encode_message(
            {"QMP": {"version": self.version, "capabilities": list(self.capabilities)}}
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
            id_text = (
                quoted_string(request_id) if type(request_id) is str else encode_json(request_id)
            )
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
