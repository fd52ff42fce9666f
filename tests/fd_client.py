"""Passing file descriptors to a monitor in tests: a client that sends them, and /proc views.

:class:`FdClient` speaks QMP (or HMP) over a unix socket and can attach descriptors to what it
sends, as libvirt and go-qemu do (the descriptors go with the command's bytes, one
``sendmsg``). :func:`open_fds` and :func:`same_file` look at another process's descriptors.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
from collections.abc import Sequence
from typing import Any

READ_TIMEOUT = 30.0


class FdClient:
    """A client on a unix socket that can pass descriptors with a message."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, path: str, *, qmp: bool = True) -> FdClient:
        """Connect (retrying while the server is between ``bind()`` and ``listen()``); for
        QMP, read the greeting and negotiate."""
        async with asyncio.timeout(READ_TIMEOUT):
            while True:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    await asyncio.get_running_loop().sock_connect(sock, path)
                    break
                except ConnectionRefusedError:
                    sock.close()
                    await asyncio.sleep(0.01)
        client = cls(sock)
        if qmp:
            await client.line()
            assert await client.execute("qmp_capabilities") == {"return": {}}
        return client

    def send(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Send ``data`` in one ``sendmsg``, with ``fds`` attached (small messages only: the
        socket buffer takes them at once)."""
        payload = array.array("i", fds).tobytes()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, payload)] if fds else []
        sent = self.sock.sendmsg([data], ancillary)
        assert sent == len(data)

    def request(self, command: str, fds: Sequence[int] = (), **arguments: Any) -> None:
        """Send one request (compact JSON, as libvirt), with ``fds`` attached; ``_`` in
        argument names is sent as ``-``."""
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = {key.replace("_", "-"): v for key, v in arguments.items()}
        self.send(json.dumps(message, separators=(",", ":")).encode(), fds)

    async def line(self, end: bytes = b"\r\n") -> bytes:
        """The next output up to and including ``end``."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(READ_TIMEOUT):
            while (index := self.buffer.find(end)) < 0:
                data = await loop.sock_recv(self.sock, 65536)
                if not data:
                    raise EOFError(f"connection closed; unread: {bytes(self.buffer)!r}")
                self.buffer += data
        line = bytes(self.buffer[: index + len(end)])
        del self.buffer[: index + len(end)]
        return line

    async def reply(self) -> dict[str, Any]:
        """The next message that is not an event (events are kept in :attr:`events`)."""
        while True:
            message = json.loads(await self.line())
            assert isinstance(message, dict)
            if "event" not in message:
                return message
            self.events.append(message)

    async def execute(self, command: str, fds: Sequence[int] = (), **arguments: Any) -> Any:
        """Send a request and return its whole reply."""
        self.request(command, fds, **arguments)
        return await self.reply()

    async def returns(self, command: str, fds: Sequence[int] = (), **arguments: Any) -> Any:
        """The ``return`` of a request that must succeed."""
        reply = await self.execute(command, fds, **arguments)
        assert "return" in reply, reply
        return reply["return"]

    async def error(self, command: str, fds: Sequence[int] = (), **arguments: Any) -> str:
        """The ``desc`` of a request that must fail."""
        reply = await self.execute(command, fds, **arguments)
        assert "error" in reply, reply
        return str(reply["error"]["desc"])

    def close(self) -> None:
        self.sock.close()


def open_fds(pid: int) -> int:
    """How many descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def descriptor_targets(pid: int) -> list[str]:
    """What each descriptor of process ``pid`` refers to (``socket:[N]``, ``pipe:[N]``, a path).

    A descriptor closed while the directory is read is left out. Counting targets of one kind
    (sockets, one pipe) rather than all descriptors keeps a check exact while the process
    opens and closes files of its own, e.g. a module it imports on first use."""
    targets = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except FileNotFoundError:
            continue
    return targets


def open_sockets(pid: int) -> int:
    """How many sockets process ``pid`` has open (its listeners and its clients)."""
    return sum(target.startswith("socket:") for target in descriptor_targets(pid))


def holds(pid: int, local_fd: int) -> int:
    """How many descriptors of process ``pid`` are the open file ``local_fd`` of ours (both
    ends of a pipe are one ``pipe:[inode]``, so they count together)."""
    mine = os.readlink(f"/proc/self/fd/{local_fd}")
    return descriptor_targets(pid).count(mine)


def same_file(pid: int, remote_fd: int, local_fd: int) -> bool:
    """Whether descriptor ``remote_fd`` of process ``pid`` is the open file ``local_fd`` of
    ours (a pipe's ``pipe:[inode]``, a file's path)."""
    return os.readlink(f"/proc/{pid}/fd/{remote_fd}") == os.readlink(f"/proc/self/fd/{local_fd}")
