"""Standard input and output as one asyncio transport, whatever they are.

``-qmp stdio`` and ``-monitor stdio`` may get a terminal, a pipe, a socket, a regular file
(``qmonitor run < commands > transcript``) or ``/dev/null``. The event loop can only watch the
first three: asyncio refuses the others, and uvloop (libuv) aborts the process on them. So each
side is checked with the system's selector first; a side the loop cannot watch is served with
plain blocking I/O (reading a regular file to its end at once, writing with ``write(2)``), which
never blocks for long on such files.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import sys
from typing import TextIO


def loop_can_watch(stream: TextIO | None, event: int) -> bool:
    """Whether an event loop can watch ``stream`` (epoll refuses files and ``/dev/null``).

    A closed standard stream (None, as when a process is started without one) cannot be.
    """
    if stream is None:
        return False
    try:
        fileno = stream.fileno()
    except (OSError, ValueError):
        return False
    with selectors.DefaultSelector() as selector:
        try:
            selector.register(fileno, event)
        except (OSError, ValueError):
            return False
    return True


class _ReadEvents(asyncio.Protocol):
    """Forwards standard input to the session's protocol."""

    def __init__(self, target: asyncio.Protocol, eof_is_hangup: bool) -> None:
        self.target = target
        self.eof_is_hangup = eof_is_hangup

    def data_received(self, data: bytes) -> None:
        self.target.data_received(data)

    def eof_received(self) -> bool | None:
        self.target.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.eof_is_hangup:
            self.target.connection_lost(exc)


class _WriteEvents(asyncio.Protocol):
    """Forwards standard output's flow control to the session's protocol."""

    def __init__(self, target: asyncio.Protocol) -> None:
        self.target = target

    def pause_writing(self) -> None:
        self.target.pause_writing()

    def resume_writing(self) -> None:
        self.target.resume_writing()


class StdioTransport(asyncio.Transport):
    """Standard output to write, standard input to pause and resume (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.reader: asyncio.ReadTransport | None = None
        self.writer: asyncio.WriteTransport | None = None
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.writer is not None:
            self.writer.write(data)
            return
        if sys.stdout is None:
            return  # no standard output at all: nothing can be shown
        view = memoryview(data)
        while view:
            view = view[os.write(sys.stdout.fileno(), view) :]

    def pause_reading(self) -> None:
        if self.reader is not None and not self.reader.is_closing():
            self.reader.pause_reading()

    def resume_reading(self) -> None:
        if self.reader is not None and not self.reader.is_closing():
            self.reader.resume_reading()

    def is_reading(self) -> bool:
        return self.reader is not None and self.reader.is_reading()

    def is_closing(self) -> bool:
        return self._closing or (self.writer is not None and self.writer.is_closing())

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.writer is not None:
            self.writer.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.writer.get_write_buffer_size() if self.writer is not None else 0

    def close(self) -> None:
        self._closing = True
        if self.reader is not None:
            self.reader.close()
        if self.writer is not None:
            self.writer.close()

    def abort(self) -> None:
        self._closing = True
        if self.reader is not None:
            self.reader.close()
        if self.writer is not None:
            self.writer.abort()


async def connect_stdio(protocol: asyncio.Protocol, *, eof_is_hangup: bool) -> StdioTransport:
    """Serve ``protocol`` on standard input and output.

    ``eof_is_hangup``: whether the end of standard input ends the session (QMP: yes, the client
    is gone) or only its input (the human monitor: ``qmonitor run < script`` goes on running).
    """
    loop = asyncio.get_running_loop()
    transport = StdioTransport()
    if loop_can_watch(sys.stdout, selectors.EVENT_WRITE):
        transport.writer, _ = await loop.connect_write_pipe(
            lambda: _WriteEvents(protocol), sys.stdout
        )
    protocol.connection_made(transport)
    if loop_can_watch(sys.stdin, selectors.EVENT_READ):
        transport.reader, _ = await loop.connect_read_pipe(
            lambda: _ReadEvents(protocol, eof_is_hangup), sys.stdin
        )
    else:
        if sys.stdin is not None:
            protocol.data_received(sys.stdin.buffer.read())
        protocol.eof_received()
        if eof_is_hangup:
            protocol.connection_lost(None)
    return transport
