"""Record what a QEMU and its clients say to each other: ``qmonitor record``.

The recorder is a proxy. Clients connect to it instead of QEMU's QMP socket; it passes every
byte through unchanged, in both directions and as it arrives, and writes each message to a
transcript (:mod:`qmonitor.testing.transcript`)::

    qmonitor record --qemu "qemu-system-x86_64 -machine none -display none" \\
        -qmp unix:/tmp/qmp.sock,server=on,wait=off -o session.jsonl
    qmonitor record --connect unix:/run/vm0.qmp -qmp unix:/tmp/qmp.sock,server=on,wait=off \\
        -o session.jsonl

With ``--qemu`` the recorder starts QEMU with one more ``-qmp``, a socket of its own in a
private directory, and stops when QEMU exits (a client's ``quit``, or a signal to the recorder,
which then terminates QEMU). With ``--connect`` it records a QEMU that is already running and
stops on SIGINT or SIGTERM. The transcript appears under its name only once complete
(:class:`~qmonitor.testing.transcript.TranscriptWriter`); an existing file is not replaced
without ``--force``.

**Connections.** Each client connection gets a connection of its own to QEMU, opened when the
client connects. QEMU serves one QMP client per monitor at a time: while one is connected, it
does not accept the next connection (chardev/char-socket.c stops listening), which waits in
the socket's backlog. So a second client of the proxy is connected, but gets QEMU's greeting
only when the first one leaves, exactly as if it had connected to QEMU; what it sends meanwhile
is passed on and answered then. The transcript shows this as connection 2's greeting coming
after connection 1 closed. (To serve several clients at once, give QEMU several ``-qmp``
monitors and record each.)

Back-pressure: when one side stops reading, the proxy stops reading from the other, so it
never holds more than a transport's buffer per direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from typing import cast

from qmonitor.core.errors import QMonitorError
from qmonitor.server.listen import Address, AddressError, Listener, parse_address, start_listener
from qmonitor.testing.transcript import (
    Closer,
    ConnectionRecord,
    Direction,
    MessageRecord,
    MessageSplitter,
    TranscriptWriter,
    one_line,
)

UPSTREAM_START_SECONDS = 30.0
"""How long QEMU has to create its QMP socket (a loaded machine starting TCG takes seconds)."""
UPSTREAM_CONNECT_RETRY_SECONDS = 5.0
"""How long a refused connection to QEMU's socket is retried: QEMU creates the socket file at
``bind()`` and accepts from ``listen()`` on."""
CLOSE_WAIT_SECONDS = 5.0
"""How long connections may take to finish after QEMU exited before they are cut."""


class RecordError(QMonitorError):
    """The recording cannot start or go on; the text says why."""


class _Half:
    """One direction of a proxied connection: the recorder's view of what one side sent."""

    def __init__(self, proxy: RecordingProxy, number: int, direction: Direction) -> None:
        self._proxy = proxy
        self._number = number
        self._direction = direction
        self._splitter = MessageSplitter()

    def record(self, data: bytes) -> None:
        for message in self._splitter.receive_data(data):
            self._proxy.write_message(self._number, self._direction, message)

    def finish(self) -> None:
        """The stream ended: keep the bytes of a message it left unfinished."""
        remainder = self._splitter.remainder()
        if remainder:
            self._proxy.write_message(self._number, self._direction, remainder)


class _ClientSide(asyncio.Protocol):
    """A client of the proxy, and its connection to QEMU (:class:`_UpstreamSide`)."""

    def __init__(self, proxy: RecordingProxy) -> None:
        self.proxy = proxy
        self.number = proxy.next_connection_number()
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.from_client = _Half(proxy, self.number, "client")
        self.from_server = _Half(proxy, self.number, "server")
        self.closed_by: Closer | None = None
        self.ended_by: Closer | None = None  # the side that ended its stream first
        self.finished = asyncio.get_running_loop().create_future()
        self._connecting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.proxy.connections.add(self)
        self.proxy.write(ConnectionRecord(self.proxy.now(), self.number, "open"))
        self.transport.pause_reading()  # until QEMU is connected
        self._connecting = asyncio.ensure_future(self._connect_upstream())

    async def _connect_upstream(self) -> None:
        try:
            transport = await self.proxy.connect_upstream(lambda: _UpstreamSide(self))
        except OSError as exc:
            print(f"qmonitor record: cannot connect to QEMU: {exc}", file=sys.stderr)
            self.hang_up("server")
            return
        if self.transport is None or self.transport.is_closing():
            transport.close()
            return
        self.upstream = transport
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        assert self.upstream is not None
        self.upstream.write(data)
        self.from_client.record(data)

    def eof_received(self) -> bool:
        # The client stopped sending; QEMU answers what it has and then closes, and that
        # close ends the connection (_UpstreamSide.connection_lost).
        self.ended_by = self.ended_by or "client"
        if self.upstream is not None and self.upstream.can_write_eof():
            self.upstream.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.hang_up("client")

    def hang_up(self, closed_by: Closer) -> None:
        """End the connection (both sides), recording the side that ended it first: the one
        whose stream ended first, else ``closed_by``."""
        if self.closed_by is not None:
            return
        self.closed_by = self.ended_by or closed_by
        if self._connecting is not None:
            self._connecting.cancel()
        self.from_client.finish()
        self.from_server.finish()
        self.proxy.write(ConnectionRecord(self.proxy.now(), self.number, "closed", self.closed_by))
        for transport in (self.transport, self.upstream):
            if transport is not None:
                transport.close()
        self.proxy.connections.discard(self)
        self.finished.set_result(None)


class _UpstreamSide(asyncio.Protocol):
    """The proxy's connection to QEMU on behalf of one client."""

    def __init__(self, client: _ClientSide) -> None:
        self._client = client

    def data_received(self, data: bytes) -> None:
        client = self._client
        assert client.transport is not None
        client.transport.write(data)
        client.from_server.record(data)

    def eof_received(self) -> bool:
        self._client.ended_by = self._client.ended_by or "server"
        return False  # the transport closes, and connection_lost ends the connection

    def pause_writing(self) -> None:
        if self._client.transport is not None:
            self._client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._client.transport is not None:
            self._client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._client.hang_up("server")


class RecordingProxy:
    """Proxies clients to ``upstream`` and writes what passes to ``writer``.

    ``clock`` gives the seconds that records are stamped with, counted from the proxy's
    creation (a monotonic clock by default).
    """

    def __init__(
        self,
        upstream: Address,
        writer: TranscriptWriter,
        *,
        clock: Callable[[], float] = time.monotonic,
        started: float | None = None,
    ) -> None:
        self.upstream = upstream
        self.writer = writer
        self._clock = clock
        self._started = clock() if started is None else started
        self._connection_count = 0
        self.connections: set[_ClientSide] = set()
        self.listeners: list[Listener] = []

    def now(self) -> float:
        """Seconds since the recording started."""
        return self._clock() - self._started

    def next_connection_number(self) -> int:
        self._connection_count += 1
        return self._connection_count

    def write(self, record: ConnectionRecord | MessageRecord) -> None:
        self.writer.write(record)

    def write_message(self, number: int, direction: Direction, data: bytes) -> None:
        self.writer.write(MessageRecord(self.now(), number, direction, data))

    async def serve(self, address: Address) -> Listener:
        """Accept clients on ``address`` (a listening unix or tcp address)."""
        if address.transport not in ("unix", "tcp") or not address.server:
            raise AddressError(
                f"'{address}' is not a listening address "
                "(unix:PATH,server=on,wait=off or tcp:HOST:PORT,server=on,wait=off)"
            )
        listener = await start_listener(address, lambda: _ClientSide(self))
        self.listeners.append(listener)
        return listener

    async def connect_upstream(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
        """A connection to QEMU, retried while its socket refuses (see the constant)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UPSTREAM_CONNECT_RETRY_SECONDS
        upstream = self.upstream
        while True:
            try:
                if upstream.transport == "unix":
                    transport, _ = await loop.create_unix_connection(factory, upstream.path)
                else:
                    transport, _ = await loop.create_connection(
                        factory, upstream.host, upstream.port
                    )
                return transport
            except ConnectionRefusedError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.01)

    async def close(self, wait: float = 0.0) -> None:
        """Stop accepting; give open connections ``wait`` seconds to end, then cut them."""
        for listener in self.listeners:
            await listener.close()
        self.listeners.clear()
        pending = [client.finished for client in self.connections]
        if pending and wait > 0:
            await asyncio.wait(pending, timeout=wait)
        for client in list(self.connections):
            client.hang_up("recorder")


# -- the command ----------------------------------------------------------------------------------


def record_command(
    *, qemu: str | None, connect: str | None, qmp: str, output: str, force: bool
) -> int:
    """``qmonitor record``: 0 when the recording is written, else 1 (or QEMU's own status)."""
    try:
        listen = parse_address(qmp)
        upstream = parse_address(connect) if connect is not None else None
        if upstream is not None and upstream.transport not in ("unix", "tcp"):
            raise RecordError(f"--connect needs unix:PATH or tcp:HOST:PORT, not '{connect}'")
        if os.path.exists(output) and not force:
            raise RecordError(f"{output} exists (use --force to replace it)")
        if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
            raise RecordError(f"cannot write {output}: no such directory")
        command = shlex.split(qemu) if qemu is not None else None
        if command == []:
            raise RecordError("--qemu needs a command line")
        return asyncio.run(_record(command, upstream, listen, output))
    except (RecordError, AddressError, ValueError, OSError) as exc:
        print(f"qmonitor record: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the signal handlers are in place
        return 130


async def _record(
    command: list[str] | None, upstream: Address | None, listen: Address, output: str
) -> int:
    started = time.monotonic()
    recorded = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    # Signals are handled from the start: a recorder stopped while QEMU starts still stops it.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    process: asyncio.subprocess.Process | None = None
    writer: TranscriptWriter | None = None
    with tempfile.TemporaryDirectory(prefix="qmonitor-record-") as private:
        try:
            if command is not None:
                socket_path = os.path.join(private, "qmp.sock")
                process = await _start_qemu(command, socket_path, stop)
                upstream = Address("unix", path=socket_path, server=False)
            assert upstream is not None
            source = shlex.join(command) if command is not None else str(upstream)
            writer = TranscriptWriter.create(output, recorded=recorded, upstream=source)
            proxy = RecordingProxy(upstream, writer, started=started)
            listener = await proxy.serve(listen)
            status = await _until_done(proxy, listener, process, output, stop)
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
        finally:
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        writer.commit()
    connections = "1 connection" if writer.connections == 1 else f"{writer.connections} connections"
    print(
        f"qmonitor record: wrote {output} ({connections}, {writer.messages} messages)",
        file=sys.stderr,
    )
    return status


async def _start_qemu(
    command: list[str], socket_path: str, stop: asyncio.Event
) -> asyncio.subprocess.Process:
    """Run QEMU with a QMP monitor on ``socket_path``; return once the socket exists.

    QEMU does not outlive a start that fails (or is stopped)."""
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            "-qmp",
            f"unix:{socket_path},server=on,wait=off",
            stdin=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        raise RecordError(f"cannot run {command[0]}: {exc.strerror}") from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + UPSTREAM_START_SECONDS
    try:
        while not os.path.exists(socket_path):
            if process.returncode is not None:
                raise RecordError(
                    f"{command[0]} exited with status {process.returncode} before its QMP "
                    "socket appeared"
                )
            if stop.is_set():
                raise RecordError(f"stopped before {command[0]} created its QMP socket")
            if loop.time() > deadline:
                raise RecordError(f"{command[0]} did not create its QMP socket")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.02)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    return process


async def _until_done(
    proxy: RecordingProxy,
    listener: Listener,
    process: asyncio.subprocess.Process | None,
    output: str,
    stop: asyncio.Event,
) -> int:
    """Record until QEMU exits or ``stop`` is set; return the exit status to give."""
    print(
        f"qmonitor record: QMP on {listener.bound_address}, recording to {output}",
        file=sys.stderr,
        flush=True,
    )
    stopping = asyncio.ensure_future(stop.wait())
    waits: set[asyncio.Future[object]] = {cast(asyncio.Future[object], stopping)}
    if process is not None:
        waits.add(asyncio.ensure_future(process.wait()))
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for future in waits:
        future.cancel()
    status = 0
    if process is not None:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        elif not stop.is_set():
            # QEMU's own status; killed by a signal, the shell's 128 + N.
            code = process.returncode
            status = code if code >= 0 else 128 - code
    # QEMU closing its sockets ends each connection; what is still open is cut.
    await proxy.close(wait=CLOSE_WAIT_SECONDS if process is not None else 0.0)
    return status
