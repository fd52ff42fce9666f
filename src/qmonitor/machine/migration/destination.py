"""The destination side of a migration: wait for the stream, load it, start the guest (or not)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

from qmonitor import MIGRATION_INSTANCE, QMPError, YankRegistry
from qmonitor.machine.machine import PAGE_SIZE, Machine, RunState, is_zero, offload
from qmonitor.machine.migration.channel import _Channel, migration_executor
from qmonitor.machine.migration.types import MigrationInfo, MigrationStatus, Notify, SocketAddress
from qmonitor.machine.migration.uri import MigrationAddress
from qmonitor.machine.migration.wire import (
    _ZERO_CHUNK,
    ACK,
    LENGTH_SIZE,
    MAGIC,
    RECORD_END,
    RECORD_PAGES,
    RECORD_SIZE,
    MigrationStreamError,
    check_magic,
    parse_device_state,
    parse_header,
    parse_length,
    parse_record,
)


class IncomingMigration:
    """The destination side: wait for the stream, load it, start the guest (or not)."""

    def __init__(
        self,
        machine: Machine,
        address: MigrationAddress,
        notify: Notify,
        on_failure: Callable[[str], None],
        yank: YankRegistry,
        channel: _Channel | None = None,
    ) -> None:
        self.machine = machine
        self.address = address
        self._yank = yank
        self.status = MigrationStatus.NONE
        self.error_desc: str | None = None
        self.socket_address: list[SocketAddress] | None = None
        self.done = asyncio.get_running_loop().create_future()
        self._notify = notify
        self._on_failure = on_failure
        self._listener: socket.socket | None = None
        self._channel = channel  # given for fd:, opened by start() for file:
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen (or open the file) now, so that errors reach the command; load in a task.

        An ``fd:`` stream is given open, and loaded as soon as it has bytes.
        """
        address = self.address
        try:
            if address.transport == "file":
                self._channel = _Channel(file=open(address.path, "rb"))  # noqa: SIM115
            elif address.transport == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address.path)
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(address.path)
                self._listener = listener
                self.socket_address = [SocketAddress("unix", path=address.path)]
            elif address.transport == "tcp":
                listener = socket.create_server((address.host, address.port))
                self._listener = listener
                host, port = listener.getsockname()[:2]
                self.socket_address = [
                    SocketAddress(
                        "inet", host=host, port=str(port), ipv4=listener.family == socket.AF_INET
                    )
                ]
        except OSError as exc:
            raise QMPError(f"Failed to bind socket: {exc.strerror}") from None
        if self._listener is not None:
            self._listener.listen(1)
            self._listener.setblocking(False)
        self._yank.register(MIGRATION_INSTANCE, self.yank)
        self._set_status(MigrationStatus.SETUP)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="incoming")

    def yank(self) -> None:
        """``yank``: shut the accepted connection down (nothing while still listening)."""
        if self._channel is not None:
            self._channel.interrupt()

    def _release_yank_instance(self) -> None:
        if MIGRATION_INSTANCE in self._yank:
            self._yank.unregister(MIGRATION_INSTANCE)

    def info(self) -> MigrationInfo:
        """``query-migrate`` on the destination (QEMU ``fill_destination_migration_info``)."""
        status = None if self.status is MigrationStatus.NONE else self.status
        return MigrationInfo(
            status=status,
            socket_address=self.socket_address if self._listener is not None else None,
            error_desc=self.error_desc if status is MigrationStatus.FAILED else None,
        )

    def _set_status(self, status: MigrationStatus) -> None:
        self.status = status
        self._notify("MIGRATION", {"status": status.value})

    async def close(self) -> None:
        """Stop waiting or loading (the process is going away)."""
        if self._channel is not None:
            self._channel.interrupt()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._close_listener()
        self._release_yank_instance()  # also when the task was cancelled before it ran

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            if self.address.transport == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.address.path)

    async def _run(self) -> None:
        try:
            if self._listener is not None:
                loop = asyncio.get_running_loop()
                connection, _ = await loop.sock_accept(self._listener)
                self._close_listener()
                self._channel = _Channel(sock=connection)
            self._set_status(MigrationStatus.ACTIVE)
            channel = self._channel
            assert channel is not None
            state = await offload(lambda: self._receive(channel), migration_executor())
            self._apply(state)
            if not self.address.one_way:
                await offload(lambda: channel.send(ACK))
            self._set_status(MigrationStatus.COMPLETED)
        except (
            QMPError,
            MigrationStreamError,
            OSError,
            EOFError,
            ValueError,
            KeyError,
            TypeError,
        ) as exc:
            # ValueError, KeyError, TypeError: device state with a member of the wrong kind.
            self.error_desc = exc.desc if isinstance(exc, QMPError) else str(exc)
            self._set_status(MigrationStatus.FAILED)
            self._on_failure(self.error_desc)
        finally:
            if self._channel is not None:
                self._channel.close()
            self._release_yank_instance()
            if not self.done.done():
                self.done.set_result(None)

    def _receive(self, channel: _Channel) -> dict[str, Any]:
        """Read the whole stream into guest RAM (worker thread); return the device state."""
        ram = self.machine.ram
        check_magic(channel.read_exact(len(MAGIC)))
        length = parse_length(channel.read_exact(LENGTH_SIZE))
        parse_header(channel.read_exact(length), len(ram))
        view = memoryview(ram)
        pages = len(ram) // PAGE_SIZE
        while True:
            kind, count, first = parse_record(channel.read_exact(RECORD_SIZE), pages)
            if kind == RECORD_END:
                length = parse_length(channel.read_exact(LENGTH_SIZE))
                return parse_device_state(channel.read_exact(length))
            start, end = first * PAGE_SIZE, (first + count) * PAGE_SIZE
            if kind == RECORD_PAGES:
                channel.read_into(view[start:end])
            elif not is_zero(_ZERO_CHUNK, view[start:end]):
                view[start:end] = bytes(end - start)

    def _apply(self, state: dict[str, Any]) -> None:
        """Take the device state; start the guest if QEMU would.

        migration/migration.c ``process_incoming_migration_bh``: a guest that ran on the
        source runs here unless ``-S`` (autostart off); otherwise it keeps the source's state.
        """
        machine = self.machine
        machine.workload_step = int(state["workload-step"])
        machine.seed = int(state["seed"])
        machine.vm_clock_ns = int(state["vm-clock-nsec"])
        machine.mark_all_dirty()
        source_state = RunState(state.get("run-state", RunState.RUNNING.value))
        if source_state is RunState.RUNNING:
            machine.set_run_state(RunState.RUNNING if machine.autostart else RunState.PAUSED)
        elif source_state in (RunState.PRELAUNCH, RunState.SUSPENDED):
            machine.set_run_state(source_state)
        else:
            machine.set_run_state(RunState.PAUSED)
