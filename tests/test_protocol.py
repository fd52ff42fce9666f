"""The sans-I/O QMP connection: negotiation decided in one place, by a table of transitions."""

from __future__ import annotations

import pytest

from qmonitor import ErrorClass, StateError
from qmonitor.qmp.messages import InvalidRequest, Negotiated, Request
from qmonitor.qmp.protocol import (
    ALREADY_NEGOTIATED,
    NEGOTIATION_REQUIRED,
    TRANSITIONS,
    QMPServerConnection,
    SessionState,
    Trigger,
)
from qmonitor.qmp.stream import NEED_DATA

VERSION = {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}


def feed(connection: QMPServerConnection, data: bytes) -> object:
    connection.receive_data(data)
    event = connection.next_event()
    assert connection.next_event() is NEED_DATA
    return event


def test_negotiation_mode_refuses_everything_but_capabilities_and_runs_them_itself() -> None:
    connection = QMPServerConnection(VERSION)
    refused = feed(connection, b'{"execute":"query-status","id":1}')
    assert type(refused) is InvalidRequest
    assert (refused.error.desc, refused.error.error_class) == (
        NEGOTIATION_REQUIRED,
        ErrorClass.COMMAND_NOT_FOUND,
    )
    assert (refused.request_id, refused.has_id) == (1, True)
    assert not connection.negotiated

    bad = feed(connection, b'{"execute":"qmp_capabilities","arguments":{"enable":"oob"}}')
    assert type(bad) is InvalidRequest
    assert bad.error.desc == "Invalid parameter type for 'enable', expected: array"
    assert connection.state is SessionState.NEGOTIATING

    accepted = feed(connection, b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}')
    assert accepted == Negotiated(
        None, False, Request("qmp_capabilities", {"enable": ["oob"]}, None, False, False)
    )
    assert connection.negotiated and connection.oob_enabled
    assert connection.state is SessionState.COMMAND_MODE


def test_command_mode_hands_every_request_to_the_dispatcher_capabilities_included() -> None:
    """QEMU dispatches qmp_capabilities in command mode like any command (its handler says
    ``ALREADY_NEGOTIATED``), so its arguments are checked first, as for any command."""
    connection = QMPServerConnection(VERSION)
    feed(connection, b'{"execute":"qmp_capabilities"}')
    assert not connection.oob_enabled
    again = feed(connection, b'{"execute":"qmp_capabilities","arguments":{"foo":1},"id":2}')
    assert again == Request("qmp_capabilities", {"foo": 1}, 2, True, False)
    assert ALREADY_NEGOTIATED.startswith("Capabilities negotiation is already complete")


def test_a_capability_not_offered_is_refused_and_negotiation_goes_on() -> None:
    connection = QMPServerConnection(VERSION, capabilities=())
    refused = feed(connection, b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}')
    assert type(refused) is InvalidRequest
    assert refused.error.desc == "Capability oob not available"
    accepted = feed(connection, b'{"execute":"qmp_capabilities"}')
    assert accepted == Negotiated(None, False, Request("qmp_capabilities", {}))


def test_negotiated_follows_the_state_through_the_table() -> None:
    connection = QMPServerConnection(VERSION)
    assert set(TRANSITIONS) == {
        (SessionState.NEGOTIATING, Trigger.CAPABILITIES_ACCEPTED),
        (SessionState.NEGOTIATING, Trigger.CLOSED),
        (SessionState.COMMAND_MODE, Trigger.CLOSED),
    }
    feed(connection, b'{"execute":"qmp_capabilities"}')
    assert connection.negotiated
    connection.close()
    assert connection.state is SessionState.CLOSED and not connection.negotiated
    connection.close()  # idempotent
    with pytest.raises(StateError, match="closed"):
        connection.receive_data(b'{"execute":"qmp_capabilities"}')
