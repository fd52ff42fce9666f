"""QEMU's tests/qtest/qmp-test.c, ported case by case against our server.

``test_malformed``, ``test_qmp_protocol`` and ``test_qmp_oob`` are ported literally; QEMU's
commands become the test monitor's (``query-name`` -> ``echo``, ``human-monitor-command``
without arguments -> ``echo`` without arguments, ``blockdev-add`` blocked on a fifo ->
``wait-gate``, ``migrate-pause`` failing OOB -> ``fail-oob``, ``query-cpus-fast`` with
``exec-oob`` -> ``echo`` with ``exec-oob``). Where QEMU's test only checks the error class we
also pin the bytes on the wire when WIRE.md gives the text.

The OOB test runs twice: with ``Monitor(strict_order=True)`` replies come in QEMU's exact
order; with the default ordering rule (docs/PROTOCOL.md) requests that carry an id are not
waited for, so the quick and the malformed in-band requests are answered before the blocked one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Gate, TestServer, build_test_monitor
from qmonitor import Monitor
from qmonitor.testing import RawQMPClient

NEGOTIATION_REQUIRED = (
    b'{"error": {"class": "CommandNotFound", '
    b'"desc": "Expecting capabilities negotiation with \'qmp_capabilities\'"}}\r\n'
)
ALREADY_NEGOTIATED = (
    b'{"error": {"class": "CommandNotFound", '
    b'"desc": "Capabilities negotiation is already complete, command ignored"}}\r\n'
)
NO_SUCH_CMD = (
    b'{"error": {"class": "CommandNotFound", '
    b'"desc": "The command no-such-cmd has not been found"}}\r\n'
)


def generic_error(desc: str, request_id: Any = None, has_id: bool = False) -> bytes:
    """A GenericError reply line, with the member order QEMU writes."""
    error = '{"class": "GenericError", "desc": ' + json.dumps(desc) + "}"
    if has_id:
        return ('{"id": ' + json.dumps(request_id) + ', "error": ' + error + "}\r\n").encode()
    return ('{"error": ' + error + "}\r\n").encode()


def assert_parse_error(line: bytes) -> None:
    """A lexical or syntax error: one GenericError, no id, a ``JSON parse error`` text."""
    message = json.loads(line)
    assert line.endswith(b"\r\n")
    assert list(message) == ["error"], line
    assert list(message["error"]) == ["class", "desc"], line
    assert message["error"]["class"] == "GenericError", line
    assert message["error"]["desc"].startswith("JSON parse error"), line


def version_json(version: dict[str, Any]) -> str:
    """The greeting's version object as QEMU writes it (VersionTriple micro, minor, major)."""
    qemu = version["qemu"]
    return (
        f'{{"qemu": {{"micro": {qemu["micro"]}, "minor": {qemu["minor"]}, '
        f'"major": {qemu["major"]}}}, "package": {json.dumps(version["package"])}}}'
    )


def check_version(version: object) -> None:
    """test_version(): the object visits as a VersionInfo."""
    assert isinstance(version, dict)
    assert set(version) == {"qemu", "package"}
    assert isinstance(version["package"], str)
    assert set(version["qemu"]) == {"major", "minor", "micro"}
    assert all(type(version["qemu"][k]) is int for k in ("major", "minor", "micro"))


async def qmp_send(client: RawQMPClient, text: str) -> None:
    """qtest_qmp_send(): libqmp appends a newline (QEMU, like us, cannot know that a bare
    scalar such as ``null`` has ended until a delimiter follows)."""
    await client.send_raw(text.encode() + b"\n")


async def command(client: RawQMPClient, text: str) -> bytes:
    """qtest_qmp(): send one request and return the reply line."""
    await qmp_send(client, text)
    return await client.receive_line()


async def assert_recovered(client: RawQMPClient, negotiated: bool) -> None:
    line = await command(client, "{ 'execute': 'no-such-cmd' }")
    assert line == (NO_SUCH_CMD if negotiated else NEGOTIATION_REQUIRED)


async def check_malformed(client: RawQMPClient, negotiated: bool) -> None:
    """test_malformed(): every bad input gets one error, and the stream recovers."""
    # syntax error
    await client.send_raw(b"{]\n")
    assert_parse_error(await client.receive_line())
    await assert_recovered(client, negotiated)

    # lexical error: impossible byte outside string
    await client.send_raw(b"{\xff")
    assert_parse_error(await client.receive_line())
    await assert_recovered(client, negotiated)

    # lexical error: funny control character outside string
    await client.send_raw(b"{\x01")
    assert_parse_error(await client.receive_line())
    await assert_recovered(client, negotiated)

    # lexical error: impossible byte in string
    await client.send_raw(b"{'bad \xff")
    assert_parse_error(await client.receive_line())
    await assert_recovered(client, negotiated)

    # lexical error: control character in string
    await client.send_raw(b"{'execute': 'nonexistent', 'id':'\n")
    assert_parse_error(await client.receive_line())
    await assert_recovered(client, negotiated)

    # lexical error: interpolation (qtest's "%%p" is sent as "%p")
    await client.send_raw(b"%p")
    assert_parse_error(await client.receive_line())
    await assert_recovered(client, negotiated)

    # Not even a dictionary
    line = await command(client, "null")
    assert line == generic_error("QMP input must be a JSON object")

    # No "execute" key
    line = await command(client, "{}")
    assert line == generic_error("QMP input lacks member 'execute'")

    # "execute" isn't a string
    line = await command(client, "{ 'execute': true }")
    assert line == generic_error("QMP input member 'execute' must be a string")

    # "arguments" isn't a dictionary
    line = await command(client, "{ 'execute': 'no-such-cmd', 'arguments': [] }")
    assert line == generic_error("QMP input member 'arguments' must be an object")

    # extra key
    line = await command(client, "{ 'execute': 'no-such-cmd', 'extra': true }")
    assert line == generic_error("QMP input member 'extra' is unexpected")


async def test_qmp_protocol(server: TestServer) -> None:
    """qmp-test.c test_qmp_protocol: greeting, negotiation, malformed input, ids."""
    client = await RawQMPClient.connect_unix(server.path, read_greeting=False)
    try:
        # Test greeting
        line = await client.receive_line()
        greeting = json.loads(line)
        check_version(greeting["QMP"]["version"])
        assert isinstance(greeting["QMP"]["capabilities"], list)
        version = server.monitor.version
        assert (
            line
            == (
                '{"QMP": {"version": ' + version_json(version) + ', "capabilities": ["oob"]}}\r\n'
            ).encode()
        )

        # Test valid command before handshake
        assert await command(client, "{ 'execute': 'query-version' }") == NEGOTIATION_REQUIRED

        # Test malformed commands before handshake
        await check_malformed(client, negotiated=False)

        # Test handshake
        assert await command(client, "{ 'execute': 'qmp_capabilities' }") == b'{"return": {}}\r\n'

        # Test repeated handshake
        assert await command(client, "{ 'execute': 'qmp_capabilities' }") == ALREADY_NEGOTIATED

        # Test valid command
        line = await command(client, "{ 'execute': 'query-version' }")
        check_version(json.loads(line)["return"])
        assert line == ('{"return": ' + version_json(version) + "}\r\n").encode()

        # Test malformed commands
        await check_malformed(client, negotiated=True)

        # Test 'id' (QEMU: query-name)
        line = await command(
            client, "{ 'execute': 'echo', 'arguments': {'value': 'x'}, 'id': 'cookie#1' }"
        )
        assert line == b'{"return": "x", "id": "cookie#1"}\r\n'
        line = await command(client, "{ 'execute': 'query-version', 'id': 'cookie#1' }")
        assert line == ('{"return": ' + version_json(version) + ', "id": "cookie#1"}\r\n').encode()

        # Test command failure with 'id' (QEMU: human-monitor-command without its argument)
        line = await command(client, "{ 'execute': 'echo', 'id': 2 }")
        assert line == generic_error("Parameter 'value' is missing", 2, has_id=True)
        assert json.loads(line)["id"] == 2
    finally:
        await client.close()


async def test_enabling_a_capability_not_offered_is_refused(short_tmp: Path) -> None:
    """qmp_caps_accept (monitor/qmp-cmds-control.c): a capability the server did not offer
    is a GenericError naming each one asked for (``oob, oob`` when asked twice), and the
    connection stays in negotiation mode."""
    monitor = Monitor(capabilities=())
    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    client = await RawQMPClient.connect_unix(path, read_greeting=False)
    try:
        line = await client.receive_line()
        version = version_json(monitor.version)
        assert line == ('{"QMP": {"version": ' + version + ', "capabilities": []}}\r\n').encode()
        enable_oob = "{ 'execute': 'qmp_capabilities', 'arguments': { 'enable': [ 'oob' ] } }"
        assert await command(client, enable_oob) == (
            b'{"error": {"class": "GenericError", "desc": "Capability oob not available"}}\r\n'
        )
        line = await command(
            client,
            "{ 'execute': 'qmp_capabilities', 'arguments': { 'enable': [ 'oob' ] }, 'id': 1 }",
        )
        assert line == generic_error("Capability oob not available", 1, has_id=True)
        line = await command(
            client, "{ 'execute': 'qmp_capabilities', 'arguments': { 'enable': [ 'oob', 'oob' ] } }"
        )
        assert line == generic_error("Capability oob, oob not available")
        assert await command(client, "{ 'execute': 'query-version' }") == NEGOTIATION_REQUIRED
        assert await command(client, "{ 'execute': 'qmp_capabilities' }") == b'{"return": {}}\r\n'
        line = await command(client, "{ 'exec-oob': 'echo', 'arguments': { 'value': 1 } }")
        assert line == generic_error("QMP input member 'exec-oob' is unexpected")
    finally:
        await client.close()
        await monitor.close()


@pytest.fixture(params=["strict", "default"])
async def oob_server(request: pytest.FixtureRequest, short_tmp: Path) -> AsyncIterator[TestServer]:
    """The test monitor with ``strict_order=True`` (QEMU's order) or the default rule."""
    gate = Gate()
    monitor = build_test_monitor(gate, strict_order=request.param == "strict")
    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    try:
        yield TestServer(monitor, path, gate)
    finally:
        await monitor.close()


async def send_cmd_that_blocks(client: RawQMPClient, request_id: str, gate: str) -> None:
    await qmp_send(
        client,
        f"{{ 'execute': 'wait-gate', 'id': '{request_id}', 'arguments': {{ 'name': '{gate}' }} }}",
    )


async def send_oob_cmd_that_fails(client: RawQMPClient, request_id: str) -> None:
    await qmp_send(client, f"{{ 'exec-oob': 'fail-oob', 'id': '{request_id}' }}")


async def recv_cmd_id(client: RawQMPClient, expected: bytes) -> None:
    """recv_cmd_id(), but pinning the whole reply line."""
    assert await client.receive_line() == expected


IB_BLOCKS_1 = b'{"return": "g1", "id": "ib-blocks-1"}\r\n'
IB_QUICK_1 = b'{"return": "quick", "id": "ib-quick-1"}\r\n'
OOB_1 = generic_error("fail-oob always fails", "oob-1", has_id=True)
BLOCKS_2 = b'{"return": "g2", "id": "blocks-2"}\r\n'
ERR_2 = generic_error("QMP input lacks member 'execute'", "err-2", has_id=True)


async def test_qmp_oob(oob_server: TestServer) -> None:
    """qmp-test.c test_qmp_oob: capability checks, exec-oob rules, OOB overtaking in-band."""
    strict = oob_server.monitor.strict_order
    gate = oob_server.gate
    client = await RawQMPClient.connect_unix(oob_server.path, read_greeting=False)
    try:
        # Check the greeting message.
        greeting = json.loads(await client.receive_line())
        capabilities = greeting["QMP"]["capabilities"]
        assert capabilities and capabilities[0] == "oob"

        # Try a fake capability, it should fail.
        line = await command(
            client,
            "{ 'execute': 'qmp_capabilities', "
            "  'arguments': { 'enable': [ 'cap-does-not-exist' ] } }",
        )
        reply = json.loads(line)
        assert list(reply) == ["error"] and reply["error"]["class"] == "GenericError", line

        # Now, enable OOB in current QMP session, it should succeed.
        line = await command(
            client, "{ 'execute': 'qmp_capabilities',   'arguments': { 'enable': [ 'oob' ] } }"
        )
        assert line == b'{"return": {}}\r\n'

        # Try any command that does not support OOB but with OOB flag. We should get failure.
        line = await command(client, "{ 'exec-oob': 'echo' }")
        assert line == generic_error("The command echo does not support OOB")

        # OOB command overtakes slow in-band command
        await send_cmd_that_blocks(client, "ib-blocks-1", "g1")
        await qmp_send(
            client, "{ 'execute': 'echo', 'arguments': { 'value': 'quick' }, 'id': 'ib-quick-1' }"
        )
        await send_oob_cmd_that_fails(client, "oob-1")
        if strict:  # QEMU's order, literally
            await recv_cmd_id(client, OOB_1)
            gate.open("g1")
            await recv_cmd_id(client, IB_BLOCKS_1)
            await recv_cmd_id(client, IB_QUICK_1)
        else:  # the blocked request has an id, so nothing waits for it
            await recv_cmd_id(client, IB_QUICK_1)
            await recv_cmd_id(client, OOB_1)
            gate.open("g1")
            await recv_cmd_id(client, IB_BLOCKS_1)

        # Even malformed in-band command fails in-band
        await send_cmd_that_blocks(client, "blocks-2", "g2")
        await qmp_send(client, "{ 'id': 'err-2' }")
        if strict:
            gate.open("g2")
            await recv_cmd_id(client, BLOCKS_2)
            await recv_cmd_id(client, ERR_2)
        else:
            await recv_cmd_id(client, ERR_2)
            gate.open("g2")
            await recv_cmd_id(client, BLOCKS_2)
    finally:
        await client.close()


async def test_qmp_oob_idless_blocking_request(oob_server: TestServer) -> None:
    """Without an id, the default rule is QEMU's order too: the id-less request blocks."""
    client = await RawQMPClient.connect_unix(oob_server.path)
    try:
        await client.negotiate(["oob"])
        await qmp_send(client, "{ 'execute': 'wait-gate', 'arguments': { 'name': 'g1' } }")
        await qmp_send(client, "{ 'execute': 'echo', 'arguments': { 'value': 'quick' } }")
        await send_oob_cmd_that_fails(client, "oob-1")
        await recv_cmd_id(client, OOB_1)
        oob_server.gate.open("g1")
        await recv_cmd_id(client, b'{"return": "g1"}\r\n')
        await recv_cmd_id(client, b'{"return": "quick"}\r\n')

        # a malformed request behind an id-less blocked one keeps its place
        await qmp_send(client, "{ 'execute': 'wait-gate', 'arguments': { 'name': 'g2' } }")
        await qmp_send(client, "{ 'id': 'err-2' }")
        oob_server.gate.open("g2")
        await recv_cmd_id(client, b'{"return": "g2"}\r\n')
        await recv_cmd_id(client, ERR_2)
    finally:
        await client.close()
