"""Standard input and output as one asyncio transport, whatever they are.

``-qmp stdio`` and ``-monitor stdio`` may get a terminal, a pipe, a socket, a regular file
(``qmonitor run < commands > transcript``) or ``/dev/null``. The event loop can only watch the
first three: asyncio refuses the others, and uvloop (libuv) aborts the process on them. So each
side is checked with the system's selector first; a side the loop cannot watch is served with
plain blocking I/O (reading a regular file to its end at once, writing with ``write(2)``), which
never blocks for long on such files.

The end of standard input ends only the input: the session answers what it read and goes on
writing (QEMU keeps sending events to standard output after it). The session is over when the
transport is closed, or when standard output goes away (a pipe whose reader closed).
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

    def __init__(self, target: asyncio.Protocol) -> None:
        self.target = target

    def data_received(self, data: bytes) -> None:
        self.target.data_received(data)

    def eof_received(self) -> bool | None:
        self.target.eof_received()
        return None


class _WriteEvents(asyncio.Protocol):
    """Forwards standard output's flow control and loss to the session's transport."""

    def __init__(self, transport: StdioTransport) -> None:
        self.transport = transport

    def pause_writing(self) -> None:
        self.transport.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.transport.protocol.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport.lost(exc)


class StdioTransport(asyncio.Transport):
    """Standard output to write, standard input to pause and resume (see module docstring)."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.reader: asyncio.ReadTransport | None = None
        self.writer: asyncio.WriteTransport | None = None
        self._closing = False
        self._lost = False

    def lost(self, exc: Exception | None) -> None:
        """The session is over: tell its protocol, once."""
        self._closing = True
        if not self._lost:
            self._lost = True
            if self.reader is not None:
                self.reader.close()
            self.protocol.connection_lost(exc)

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
        """Stop reading; the session ends once what was written has gone out."""
        self._closing = True
        if self.reader is not None:
            self.reader.close()
        if self.writer is not None:
            self.writer.close()  # its connection_lost, after the flush, ends the session
        else:
            asyncio.get_running_loop().call_soon(self.lost, None)

    def abort(self) -> None:
        self._closing = True
        if self.reader is not None:
            self.reader.close()
        if self.writer is not None:
            self.writer.abort()
        else:
            asyncio.get_running_loop().call_soon(self.lost, None)


async def connect_stdio(protocol: asyncio.Protocol) -> StdioTransport:
    """Serve ``protocol`` on standard input and output (see the module docstring)."""
    loop = asyncio.get_running_loop()
    transport = StdioTransport(protocol)
    if loop_can_watch(sys.stdout, selectors.EVENT_WRITE):
        transport.writer, _ = await loop.connect_write_pipe(
            lambda: _WriteEvents(transport), sys.stdout
        )
    protocol.connection_made(transport)
    if loop_can_watch(sys.stdin, selectors.EVENT_READ):
        transport.reader, _ = await loop.connect_read_pipe(lambda: _ReadEvents(protocol), sys.stdin)
    else:
        if sys.stdin is not None:
            protocol.data_received(sys.stdin.buffer.read())
        protocol.eof_received()
    return transport
