"""Listeners and addresses: unix socket safety, TCP on loopback, reverse mode, the syntax."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from conftest import Gate, TestServer, build_test_monitor
from qmonitor import Monitor
from qmonitor.server.listen import Address, AddressError, AddressInUse, parse_address
from qmonitor.testing import RawQMPClient


async def test_unix_socket_is_created_mode_0600(server: TestServer) -> None:
    """Only the owner may connect: the socket file is 0600 whatever the umask."""
    mode = os.stat(server.path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


async def test_unix_socket_mode_ignores_a_permissive_umask(short_tmp: Path) -> None:
    path = str(short_tmp / "open.sock")
    monitor = Monitor("umask")
    old = os.umask(0)
    try:
        await monitor.listen(f"unix:{path},server=on,wait=off")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        await monitor.close()


async def test_refuse_to_take_over_a_live_servers_socket(server: TestServer) -> None:
    """A second monitor on a live server's path gets AddressInUse; the first keeps serving."""
    intruder = Monitor("intruder")
    try:
        with pytest.raises(AddressInUse):
            await intruder.listen(f"unix:{server.path},server=on,wait=off")
    finally:
        await intruder.close()
    client = await server.client()
    try:
        assert await client.execute("echo", {"value": "still mine"}) == {"return": "still mine"}
    finally:
        await client.close()


async def test_replace_a_stale_socket_file(short_tmp: Path) -> None:
    """A socket file nobody listens on (a crashed server's) is replaced."""
    path = str(short_tmp / "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nothing listens
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    monitor = build_test_monitor(Gate())
    await monitor.listen(f"unix:{path},server=on,wait=off")
    try:
        client = await RawQMPClient.connect_unix(path)
        try:
            await client.negotiate()
            assert await client.execute("add", {"a": 1, "b": 2}) == {"return": 3}
        finally:
            await client.close()
    finally:
        await monitor.close()


async def test_refuse_to_replace_a_file_that_is_not_a_socket(short_tmp: Path) -> None:
    """A regular file at the path is never deleted."""
    path = short_tmp / "precious"
    path.write_text("data")
    monitor = Monitor("careful")
    try:
        with pytest.raises(AddressInUse):
            await monitor.listen(f"unix:{path},server=on,wait=off")
    finally:
        await monitor.close()
    assert path.read_text() == "data"


async def test_close_removes_the_socket_file(short_tmp: Path) -> None:
    path = str(short_tmp / "gone.sock")
    monitor = Monitor("tidy")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    assert os.path.exists(path)
    await monitor.close()
    assert not os.path.exists(path)


@pytest.mark.parametrize("spelling", ["tcp::0,server=on,wait=off", "tcp::0,server,nowait"])
async def test_tcp_binds_loopback_by_default(spelling: str) -> None:
    """An empty host means 127.0.0.1, never every interface; port 0 gives a real port."""
    monitor = build_test_monitor(Gate())
    listener = await monitor.listen(spelling)
    try:
        bound = listener.bound_address
        assert bound.transport == "tcp"
        assert bound.host == "127.0.0.1"
        assert bound.port != 0
        sockets = listener.server.sockets
        assert [s.getsockname()[0] for s in sockets] == ["127.0.0.1"]
        reader, writer = await asyncio.open_connection("127.0.0.1", bound.port)
        try:
            greeting = json.loads(await asyncio.wait_for(reader.readuntil(b"\r\n"), 10))
            assert "QMP" in greeting
            writer.write(
                b'{"execute":"qmp_capabilities"}{"execute":"echo","arguments":{"value":"t"}}'
            )
            assert await asyncio.wait_for(reader.readuntil(b"\r\n"), 10) == b'{"return": {}}\r\n'
            assert await asyncio.wait_for(reader.readuntil(b"\r\n"), 10) == b'{"return": "t"}\r\n'
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        await monitor.close()


async def test_tcp_explicit_host() -> None:
    monitor = Monitor("tcp")
    listener = await monitor.listen("tcp:127.0.0.1:0,server=on,wait=off")
    try:
        assert listener.bound_address.host == "127.0.0.1"
        assert listener.bound_address.port > 0
    finally:
        await monitor.close()


async def test_reverse_mode_connects_out(short_tmp: Path) -> None:
    """``unix:PATH`` without server=on: the monitor connects to a listening client."""
    path = str(short_tmp / "client.sock")
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    listening = await asyncio.start_unix_server(on_connect, path)
    monitor = build_test_monitor(Gate())
    try:
        await monitor.serve(f"unix:{path}")
        reader, writer = await asyncio.wait_for(accepted.get(), 10)
        client = RawQMPClient(reader, writer)
        client.greeting = await client.receive()
        assert client.greeting["QMP"]["version"] == monitor.version
        await client.negotiate()
        assert await client.execute("echo", {"value": "out"}) == {"return": "out"}
        await client.close()
    finally:
        await monitor.close()
        listening.close()
        await listening.wait_closed()


async def test_listen_refuses_a_connect_out_address(short_tmp: Path) -> None:
    monitor = Monitor("nope")
    try:
        with pytest.raises(AddressError):
            await monitor.listen(f"unix:{short_tmp / 'x.sock'}")
        with pytest.raises(AddressError):
            await monitor.listen("stdio")
    finally:
        await monitor.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "unix:/run/vm.qmp,server=on,wait=off",
            Address("unix", path="/run/vm.qmp", server=True, wait=False),
        ),
        ("unix:/run/vm.qmp", Address("unix", path="/run/vm.qmp", server=False, wait=True)),
        (
            "unix:/run/vm.qmp,server,nowait",
            Address("unix", path="/run/vm.qmp", server=True, wait=False),
        ),
        (
            "unix:/run/vm.qmp,server=on",
            Address("unix", path="/run/vm.qmp", server=True, wait=True),
        ),
        (
            "tcp:localhost:4444,server=on,wait=off",
            Address("tcp", host="localhost", port=4444, server=True, wait=False),
        ),
        (
            "tcp::4444,server,nowait",
            Address("tcp", host="127.0.0.1", port=4444, server=True, wait=False),
        ),
        (
            "tcp:0.0.0.0:4444,server=on,wait=off",
            Address("tcp", host="0.0.0.0", port=4444, server=True, wait=False),
        ),
        (
            "tcp:[::1]:4444,server=on,wait=off",
            Address("tcp", host="::1", port=4444, server=True, wait=False),
        ),
        (
            "tcp:127.0.0.1:4444",
            Address("tcp", host="127.0.0.1", port=4444, server=False, wait=True),
        ),
        ("stdio", Address("stdio")),
        ("none", Address("none")),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    """QEMU's chardev spellings, old boolean forms included."""
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "unix:",
        "udp:127.0.0.1:4444",
        "tcp:127.0.0.1",
        "tcp:127.0.0.1:http",
        "tcp:127.0.0.1:70000",
        "unix:/run/vm.qmp,server=maybe",
        "unix:/run/vm.qmp,bogus=1",
        "/run/vm.qmp",
    ],
)
def test_parse_address_errors(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


def test_address_round_trips_through_str() -> None:
    for text in ("unix:/run/vm.qmp,server=on,wait=off", "tcp:127.0.0.1:4444", "stdio"):
        assert parse_address(str(parse_address(text))) == parse_address(text)
