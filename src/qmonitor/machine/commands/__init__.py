"""The machine's commands, with QEMU's names, argument and reply shapes.

Run control (qapi/run-state.json, qapi/machine.json, qapi/misc.json), snapshots
(qapi/migration.json ``snapshot-*`` jobs; HMP ``savevm``/``loadvm``/``delvm``/``info
snapshots``), migration (qapi/migration.json), yank (qapi/yank.json: the monitors' socket
chardevs and the migration, :mod:`qmonitor.core.yank`), keyboard and screen (qapi/ui.json
``send-key``, ``screendump``) and our ``x-query-ram-digest``. HMP
renderers get the handler's result (its dataclass) and print what QEMU's ``hmp_info_*``
functions print (monitor/hmp-cmds.c, block/qapi.c ``bdrv_snapshot_dump``).

One module per command group, each with its types and HMP renderers: :mod:`.run_control`,
:mod:`.snapshots`, :mod:`.migration`, :mod:`.yank`, :mod:`.ui`; :mod:`.services` holds what
they act on.
"""

from __future__ import annotations

from collections.abc import Callable

from qmonitor import FaultPoint, JobManager, Monitor, register_fd_commands
from qmonitor.machine.commands.migration import (
    MIGRATION_CANCELLED,
    QEMU_MIGRATION_CAPABILITIES,
    QEMU_MIGRATION_PARAMETERS,
    SIZE_HINT,
    MigrationEventData,
    MigrationPassData,
    migration_progress,
    register_migration,
    render_migrate,
    render_migrate_capabilities,
    render_migrate_parameters,
)
from qmonitor.machine.commands.run_control import (
    NameInfo,
    RamDigest,
    ShutdownData,
    StatusInfo,
    UuidInfo,
    register_run_control,
    render_digest,
    render_name,
    render_status,
    render_uuid,
)
from qmonitor.machine.commands.services import MachineServices
from qmonitor.machine.commands.snapshots import (
    SNAPSHOT_NODE,
    SnapshotEntry,
    register_snapshots,
    render_snapshots,
)
from qmonitor.machine.commands.ui import register_ui
from qmonitor.machine.commands.yank import register_yank
from qmonitor.machine.config import MachineConfig
from qmonitor.machine.machine import Machine
from qmonitor.machine.migration import MigrationManager
from qmonitor.machine.profile import Profile
from qmonitor.machine.snapshots import SnapshotStore
from qmonitor.machine.state_commands import register_machine_state

__all__ = [
    "MIGRATION_CANCELLED",
    "QEMU_MIGRATION_CAPABILITIES",
    "QEMU_MIGRATION_PARAMETERS",
    "SIZE_HINT",
    "SNAPSHOT_NODE",
    "MachineServices",
    "MigrationEventData",
    "MigrationPassData",
    "NameInfo",
    "RamDigest",
    "ShutdownData",
    "SnapshotEntry",
    "StatusInfo",
    "UuidInfo",
    "migration_progress",
    "register_machine_commands",
    "render_digest",
    "render_migrate",
    "render_migrate_capabilities",
    "render_migrate_parameters",
    "render_name",
    "render_snapshots",
    "render_status",
    "render_uuid",
]


def register_machine_commands(
    monitor: Monitor,
    machine: Machine,
    snapshots: SnapshotStore,
    *,
    on_exit: Callable[[int], None],
    no_shutdown: bool = False,
    config: MachineConfig | None = None,
    profile: Profile | None = None,
    faults: FaultPoint | None = None,
) -> MachineServices:
    """Register every command and event of ``machine`` on ``monitor``.

    ``on_exit(status)`` is called when the machine must go away: ``quit``, a guest shutdown
    without ``-no-shutdown``, or a failed incoming migration (status 1). ``config`` describes
    what the machine is made of (default: QEMU's default machine, one CPU) and ``profile``
    answers the probe queries (default: the QEMU 7.2 one shipped with qmonitor). ``faults``
    may fail migrations and snapshots on purpose (docs/TESTING.md, "Injecting faults").
    """

    def incoming_failed(reason: str) -> None:
        from qmonitor import report_error  # the human monitor's module: not for every client

        report_error(monitor, f"qmonitor: load of migration failed: {reason}\n")
        on_exit(1)

    services = MachineServices(
        machine,
        snapshots,
        MigrationManager(machine, monitor.emit, incoming_failed, monitor.yank, faults=faults),
        JobManager(monitor),
        faults,
    )
    register_run_control(monitor, machine, on_exit, no_shutdown)
    register_snapshots(monitor, services)
    register_migration(monitor, services)
    register_yank(monitor)
    register_fd_commands(monitor)
    monitor.fds.vm_running = lambda: machine.running
    config = config or MachineConfig()
    if config.uuid is not None:
        machine.uuid = config.uuid
    register_machine_state(monitor, config, profile or Profile.default())
    register_ui(monitor, config)
    return services
