"""The migration state of one machine: parameters, capabilities, the current migrations."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qmonitor import FaultPoint, QMPError, YankRegistry
from qmonitor.machine.machine import Machine, RunState
from qmonitor.machine.migration.channel import TakeNamedFd, fd_channel, incoming_fd
from qmonitor.machine.migration.destination import IncomingMigration
from qmonitor.machine.migration.source import OutgoingMigration
from qmonitor.machine.migration.types import MigrationInfo, MigrationParameters, MigrationStatus
from qmonitor.machine.migration.uri import INVALID_PROTOCOL, MigrationAddress, parse_uri
from qmonitor.machine.paths import PathConfinement


@dataclass(slots=True)
class MigrationManager:
    """The migration state of one machine: parameters, capabilities, the current migrations."""

    machine: Machine
    emit: Callable[[str, dict[str, Any]], None]
    on_incoming_failure: Callable[[str], None]
    yank: YankRegistry = field(default_factory=YankRegistry)  # the monitor's, to be yankable
    parameters: MigrationParameters = field(default_factory=MigrationParameters)
    events: bool = False  # the "events" capability
    outgoing: OutgoingMigration | None = None
    incoming: IncomingMigration | None = None
    faults: FaultPoint | None = None  # asked once per outgoing migration
    incoming_started: bool = False
    # Where file: URIs may point (--allow-path and the state directory); None: anywhere.
    file_paths: PathConfinement | None = None

    def _confined(self, address: MigrationAddress) -> MigrationAddress:
        """``address`` with a ``file:`` path resolved inside :attr:`file_paths` (QMPError
        outside them, before anything is opened)."""
        if address.transport != "file" or self.file_paths is None:
            return address
        return dataclasses.replace(address, path=self.file_paths.resolve(address.path))

    refused: MigrationInfo | None = None  # a migrate that failed to start, for query-migrate

    def _notify(self, name: str, data: dict[str, Any]) -> None:
        if self.events:
            self.emit(name, data)

    def start_outgoing(
        self, uri: str, take_named_fd: TakeNamedFd | None = None
    ) -> OutgoingMigration:
        """``migrate``: checks in QEMU's order (migration.c ``migrate_prepare``), then start.

        ``fd:NAME`` takes the descriptor of that name from ``take_named_fd`` (the names of the
        monitor the command came from; none without one), as QEMU's
        ``fd_start_outgoing_migration``: the migration writes to it and closes it at the end.

        A URI that cannot be used leaves the migration ``failed``, as in QEMU (``setup`` then
        ``failed`` events): with QEMU's ``error-desc``, except for an unknown protocol, which
        QEMU reports to the command only.
        """
        if self.outgoing is not None and self.outgoing.in_progress:
            raise QMPError("There's a migration process in progress")
        if self.machine.run_state is RunState.INMIGRATE:
            raise QMPError("Guest is waiting for an incoming migration")
        if self.machine.in_transient_state:
            raise QMPError(f"The VM is busy ({self.machine.run_state})")
        try:
            address = parse_uri(uri)
            channel = None
            if address.transport == "fd":
                if take_named_fd is None:
                    raise QMPError(f"File descriptor named '{address.path}' has not been found")
                channel = fd_channel(take_named_fd(address.path))
        except QMPError as error:
            self._notify("MIGRATION", {"status": MigrationStatus.SETUP.value})
            self._notify("MIGRATION", {"status": MigrationStatus.FAILED.value})
            shown = None if error.desc == INVALID_PROTOCOL else error.desc
            self.refused = MigrationInfo(status=MigrationStatus.FAILED, error_desc=shown)
            raise
        address = self._confined(address)
        fault = self.faults.migration_fault() if self.faults is not None else None
        self.refused = None
        self.outgoing = OutgoingMigration(
            self.machine,
            address,
            self.parameters,
            self._notify,
            self.yank,
            fault=fault,
            channel=channel,
        )
        self.outgoing.start()
        return self.outgoing

    def cancel(self) -> None:
        """``migrate_cancel``: a no-op when nothing is migrating."""
        if self.outgoing is not None:
            self.outgoing.cancel()

    async def start_incoming(self, uri: str, take_named_fd: TakeNamedFd | None = None) -> None:
        """``migrate-incoming`` (and ``-incoming URI`` at startup).

        ``fd:NAME`` takes a named descriptor from ``take_named_fd``, ``fd:N`` uses descriptor
        N of the process (:func:`incoming_fd`); the migration reads it and closes it.
        """
        if self.incoming_started:
            raise QMPError("The incoming migration has already been started")
        if self.machine.run_state is not RunState.INMIGRATE:
            raise QMPError("'-incoming' was not specified on the command line")
        address = self._confined(parse_uri(uri))
        channel = None
        if address.transport == "fd":
            channel = fd_channel(incoming_fd(address.path, take_named_fd))
        incoming = IncomingMigration(
            self.machine, address, self._notify, self.on_incoming_failure, self.yank, channel
        )
        await incoming.start()
        self.incoming = incoming
        self.incoming_started = True

    def info(self) -> MigrationInfo:
        """``query-migrate``: the source's view if this machine migrated out, else the
        destination's (QEMU fills the destination's first, then the source's over it)."""
        if self.refused is not None:
            return self.refused
        if self.outgoing is not None:
            return self.outgoing.info()
        if self.incoming is not None:
            return self.incoming.info()
        return MigrationInfo()

    async def close(self) -> None:
        """Cancel what is in flight and wait for it (shutdown)."""
        if self.outgoing is not None:
            self.outgoing.cancel()
            await self.outgoing.wait()
        if self.incoming is not None:
            await self.incoming.close()
