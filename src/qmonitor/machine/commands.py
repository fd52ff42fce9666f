"""The machine's commands, with QEMU's names, argument and reply shapes.

Run control (qapi/run-state.json, qapi/machine.json, qapi/misc.json), snapshots
(qapi/migration.json ``snapshot-*`` jobs; HMP ``savevm``/``loadvm``/``delvm``/``info
snapshots``), migration (qapi/migration.json), yank (qapi/yank.json: the monitors' socket
chardevs and the migration, :mod:`qmonitor.core.yank`) and our ``x-query-ram-digest``. HMP
renderers get the command's result as JSON data (QMP member names) and print what QEMU's
``hmp_info_*`` functions print (monitor/hmp-cmds.c, block/qapi.c ``bdrv_snapshot_dump``).

Run state changes are reported by one listener: leaving ``running`` sends STOP, entering it
sends RESUME, which is when QEMU's ``vm_stop``/``vm_start`` send them; because the change
happens inside the command, the event goes out before the command's reply, as in QEMU.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from qmonitor import (
    AnyYankInstance,
    Context,
    FaultPoint,
    HumanSyntax,
    Job,
    JobManager,
    Monitor,
    QMPError,
    QMPName,
    SizeError,
    named_fds,
    register_fd_commands,
    report_error,
    strtosz,
)
from qmonitor.machine.config import MachineConfig
from qmonitor.machine.machine import NEEDS_RESET, Machine, RunState
from qmonitor.machine.migration import (
    MigrationInfo,
    MigrationManager,
    MigrationStatus,
    OutgoingMigration,
    TakeNamedFd,
)
from qmonitor.machine.migration_settings import (
    MigrationCapability,
    MigrationCapabilityStatus,
    MigrationParametersInfo,
    MigrationSettings,
    register_migrate_set_parameters,
)
from qmonitor.machine.profile import Profile
from qmonitor.machine.snapshots import (
    SnapshotStore,
    human_size,
    load_snapshot,
    save_snapshot,
    snapshot_missing,
)
from qmonitor.machine.state_commands import register_machine_state

SNAPSHOT_NODE = "disk0"
"""The one block node snapshots can name in ``vmstate`` and ``devices``: the state directory
(QEMU keeps snapshots in qcow2 nodes; qapi/migration.json's examples call theirs disk0)."""

_JobId = Annotated[str, QMPName("job-id")]
_INT64_MAX = 2**63 - 1

QEMU_MIGRATION_PARAMETERS = frozenset(
    {
        "announce-initial", "announce-max", "announce-rounds", "announce-step",
        "compress-level", "compress-threads", "decompress-threads", "compress-wait-thread",
        "throttle-trigger-threshold", "cpu-throttle-initial", "cpu-throttle-increment",
        "cpu-throttle-tailslow", "tls-creds", "tls-hostname", "tls-authz", "max-bandwidth",
        "downtime-limit", "x-checkpoint-delay", "block-incremental", "multifd-channels",
        "xbzrle-cache-size", "max-postcopy-bandwidth", "max-cpu-throttle",
        "multifd-compression", "multifd-zlib-level", "multifd-zstd-level",
        "block-bitmap-mapping",
    }
)  # fmt: skip
"""qapi/migration.json ``MigrationParameter`` (QEMU 7.2): names HMP knows, implemented or not."""

QEMU_MIGRATION_CAPABILITIES = frozenset(
    {
        "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
        "postcopy-ram", "x-colo", "release-ram", "block", "return-path",
        "pause-before-switchover", "multifd", "dirty-bitmaps", "postcopy-blocktime",
        "late-block-activate", "x-ignore-shared", "validate-uuid", "background-snapshot",
        "zero-copy-send", "postcopy-preempt",
    }
)  # fmt: skip
"""qapi/migration.json ``MigrationCapability`` (QEMU 7.2)."""

MIGRATION_CANCELLED = "Migration cancelled; the VM stays here as it was"
"""What HMP ``migrate`` ends with when the migration is cancelled (Ctrl-C or migrate_cancel).

QEMU prints nothing then (its ``hmp_migrate_status_cb`` reports only an ``error-desc``); a person
who pressed Ctrl-C should read that the migration, not some internal command, was cancelled,
and that the source goes on (``docs/HMP.md``)."""

SIZE_HINT = (
    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
    "and exabytes, respectively."
)
"""The hint QEMU's ``parse_option_size`` appends to a bad size (util/qemu-option.c)."""


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """qapi/run-state.json ``StatusInfo`` as QEMU 7.2 returns it."""

    running: bool
    singlestep: bool
    status: RunState


@dataclass(frozen=True, slots=True)
class NameInfo:
    """qapi/machine.json ``NameInfo``."""

    name: str | None = None


@dataclass(frozen=True, slots=True)
class UuidInfo:
    """qapi/machine.json ``UuidInfo``."""

    UUID: str


@dataclass(frozen=True, slots=True)
class ShutdownData:
    """The SHUTDOWN and RESET events' data (qapi/run-state.json)."""

    guest: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RamDigest:
    """``x-query-ram-digest``: SHA-256 of guest RAM and the workload step it belongs to."""

    digest: str
    workload_step: int


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """One line of ``info snapshots`` (block/qapi.c ``bdrv_snapshot_dump``'s fields), and
    whether ``loadvm`` would take it (see ``snapshots.read_info``)."""

    tag: str
    vm_state_size: int
    date_sec: int
    vm_clock_nsec: int
    loadable: bool


@dataclass(frozen=True, slots=True)
class MigrationEventData:
    """The MIGRATION event's data."""

    status: MigrationStatus


@dataclass(frozen=True, slots=True)
class MigrationPassData:
    """The MIGRATION_PASS event's data."""

    pass_: int = field(metadata={"qmp_name": "pass"})


# -- human renderers (the result as JSON data in, QEMU's text out) ----------------------------


def render_status(status: object) -> str:
    """``info status`` (monitor/hmp-cmds.c ``hmp_info_status``)."""
    assert isinstance(status, dict)
    text = "VM status: " + ("running" if status["running"] else "paused")
    if not status["running"] and status["status"] != RunState.PAUSED:
        text += f" ({status['status']})"
    return text + "\n"


def render_name(info: object) -> str:
    """``info name``: the name alone, nothing without one."""
    assert isinstance(info, dict)
    return f"{info['name']}\n" if info.get("name") is not None else ""


def render_uuid(info: object) -> str:
    """``info uuid``."""
    assert isinstance(info, dict)
    return f"{info['UUID']}\n"


def render_digest(info: object) -> str:
    """``info ram-digest`` (ours): the digest and its step."""
    assert isinstance(info, dict)
    return f"{info['digest']} (workload step {info['workload-step']})\n"


def render_snapshots(entries: object) -> str:
    """``info snapshots`` (block/monitor/block-hmp-cmds.c ``hmp_info_snapshots``, block/qapi.c
    ``bdrv_snapshot_dump``, QEMU 7.2 layout).

    Files ``loadvm`` would refuse on their header go in QEMU's second section, "List of
    partial (non-loadable) snapshots on 'disk0':", which QEMU uses for snapshots missing from
    some disk: there too the tag is taken but cannot be loaded. The first section then says
    "None" if it has nothing, as QEMU's does.
    """
    assert isinstance(entries, list)
    if not entries:
        return "There is no snapshot available.\n"
    header = f"{'ID':<10}{'TAG':<17}{'VM SIZE':>8}{'DATE':>20}{'VM CLOCK':>13}{'ICOUNT':>11}"
    loadable = [entry for entry in entries if entry["loadable"]]
    lines = ["List of snapshots present on all disks:"]
    lines += [header, *map(_snapshot_line, loadable)] if loadable else ["None"]
    refused = [entry for entry in entries if not entry["loadable"]]
    if refused:
        lines += ["", f"List of partial (non-loadable) snapshots on '{SNAPSHOT_NODE}':", header]
        lines += map(_snapshot_line, refused)
    return "\n".join(lines) + "\n"


def _snapshot_line(entry: dict[str, Any]) -> str:
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["date-sec"]))
    milliseconds = entry["vm-clock-nsec"] // 1_000_000
    seconds, milliseconds = divmod(milliseconds, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}.{milliseconds:03d}"
    size = human_size(entry["vm-state-size"])
    return f"{'--':<9} {entry['tag']:<16} {size:>8}{date:>20}{clock:>13}{'':>11}"


def render_migrate(info: object) -> str:
    """``info migrate`` (monitor/hmp-cmds.c ``hmp_info_migrate``, without QEMU's globals)."""
    assert isinstance(info, dict)
    lines = []
    if "status" in info:
        status = f"Migration status: {info['status']}"
        if info["status"] == MigrationStatus.FAILED and "error-desc" in info:
            status += f" ({info['error-desc']})"
        lines.append(status)
        lines.append(f"total time: {info.get('total-time', 0)} ms")
        for key, label in (
            ("expected-downtime", "expected downtime"),
            ("downtime", "downtime"),
            ("setup-time", "setup"),
        ):
            if key in info:
                lines.append(f"{label}: {info[key]} ms")
    ram = info.get("ram")
    if ram is not None:
        lines += [
            f"transferred ram: {ram['transferred'] >> 10} kbytes",
            f"throughput: {ram['mbps']:0.2f} mbps",
            f"remaining ram: {ram['remaining'] >> 10} kbytes",
            f"total ram: {ram['total'] >> 10} kbytes",
            f"duplicate: {ram['duplicate']} pages",
            f"skipped: {ram['skipped']} pages",
            f"normal: {ram['normal']} pages",
            f"normal bytes: {ram['normal-bytes'] >> 10} kbytes",
            f"dirty sync count: {ram['dirty-sync-count']}",
            f"page size: {ram['page-size'] >> 10} kbytes",
            f"multifd bytes: {ram['multifd-bytes'] >> 10} kbytes",
            f"pages-per-second: {ram['pages-per-second']}",
        ]
        if ram["dirty-pages-rate"]:
            lines.append(f"dirty pages rate: {ram['dirty-pages-rate']} pages")
        if ram["precopy-bytes"]:
            lines.append(f"precopy ram: {ram['precopy-bytes'] >> 10} kbytes")
        if ram["downtime-bytes"]:
            lines.append(f"downtime ram: {ram['downtime-bytes'] >> 10} kbytes")
    if "socket-address" in info:
        lines.append("socket address: [")
        for address in info["socket-address"]:
            if address["type"] == "unix":
                lines.append(f"\tunix:{address['path']}")
            else:
                lines.append(f"\ttcp:{address['host']}:{address['port']}")
        lines.append("]")
    return "".join(line + "\n" for line in lines)


def _mebibytes(size: float) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def migration_progress(outgoing: OutgoingMigration) -> str:
    """The progress line of HMP ``migrate`` (QEMU's shows none).

    Pass, what is still dirty, the speed of the last 100 ms: the remaining amount goes up as
    well as down while the guest runs, so no percentage is shown. When the passes stop
    shrinking (``OutgoingMigration.converging``) the line says so and how fast the guest
    dirties memory, which is what ``max-bandwidth`` has to beat.
    """
    info = outgoing.info()
    ram = info.ram
    if info.status is MigrationStatus.CANCELLING:
        return "cancelling"
    if ram is None or not ram.dirty_sync_count:
        return "setting up"
    text = (
        f"pass {ram.dirty_sync_count}, {_mebibytes(ram.remaining)} remaining, "
        f"{_mebibytes(ram.mbps * 1e6 / 8)}/s"
    )
    if outgoing.machine.run_state is RunState.FINISH_MIGRATE:
        return text + ", guest stopped for the last pass"
    if not outgoing.converging:
        dirty_rate = ram.dirty_pages_rate * ram.page_size
        text += f", not converging: the guest dirties {_mebibytes(dirty_rate)}/s"
    return text


def render_migrate_parameters(parameters: object) -> str:
    """``info migrate_parameters`` (``hmp_info_migrate_parameters``, our members)."""
    assert isinstance(parameters, dict)
    return (
        f"max-bandwidth: {parameters['max-bandwidth']} bytes/second\n"
        f"downtime-limit: {parameters['downtime-limit']} ms\n"
    )


def render_migrate_capabilities(capabilities: object) -> str:
    """``info migrate_capabilities``."""
    assert isinstance(capabilities, list)
    return "".join(f"{c['capability']}: {'on' if c['state'] else 'off'}\n" for c in capabilities)


# -- registration -----------------------------------------------------------------------------


@dataclass(slots=True)
class MachineServices:
    """What the machine's commands act on; made by :func:`register_machine_commands`."""

    machine: Machine
    snapshots: SnapshotStore
    migration: MigrationManager
    jobs: JobManager
    faults: FaultPoint | None = None


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
        report_error(monitor, f"qmonitor: load of migration failed: {reason}\n")
        on_exit(1)

    services = MachineServices(
        machine,
        snapshots,
        MigrationManager(machine, monitor.emit, incoming_failed, monitor.yank, faults=faults),
        JobManager(monitor),
        faults,
    )
    _register_run_control(monitor, machine, on_exit, no_shutdown)
    _register_snapshots(monitor, services)
    _register_migration(monitor, services)
    _register_yank(monitor)
    register_fd_commands(monitor)
    monitor.fds.vm_running = lambda: machine.running
    config = config or MachineConfig()
    if config.uuid is not None:
        machine.uuid = config.uuid
    register_machine_state(monitor, config, profile or Profile.default())
    return services


def _register_run_control(
    monitor: Monitor, machine: Machine, on_exit: Callable[[int], None], no_shutdown: bool
) -> None:
    command = monitor.command
    monitor.event("STOP")
    monitor.event("RESUME")
    monitor.event("RESET", ShutdownData)
    monitor.event("POWERDOWN")
    monitor.event("SHUTDOWN", ShutdownData)

    def announce(old: RunState, new: RunState) -> None:
        if old is RunState.RUNNING:
            monitor.emit("STOP")
        elif new is RunState.RUNNING:
            monitor.emit("RESUME")

    machine.add_state_listener(announce)

    @command(
        name="query-status",
        hmp=HumanSyntax(name="info status", help="show the current VM status (running|paused)"),
        human=render_status,
    )
    def query_status() -> StatusInfo:
        """Query the run status of the VM."""
        return StatusInfo(machine.running, False, machine.run_state)

    @command(
        name="query-name",
        hmp=HumanSyntax(name="info name", help="show the current VM name"),
        human=render_name,
    )
    def query_name() -> NameInfo:
        """Return the name information of the guest."""
        return NameInfo(machine.name)

    @command(
        name="query-uuid",
        hmp=HumanSyntax(name="info uuid", help="show the current VM UUID"),
        human=render_uuid,
    )
    def query_uuid() -> UuidInfo:
        """Query the guest UUID information."""
        return UuidInfo(machine.uuid)

    @command(name="stop", hmp=HumanSyntax(name="stop", aliases=("s",), help="stop emulation"))
    def stop() -> None:
        """Stop all guest VCPU execution (softmmu/runstate.c ``qmp_stop``)."""
        if machine.run_state is RunState.INMIGRATE:
            machine.autostart = False
        elif machine.in_transient_state:
            machine.request_stop_after_transient()
        elif machine.running:
            machine.set_run_state(RunState.PAUSED)

    @command(name="cont", hmp=HumanSyntax(name="cont", aliases=("c",), help="resume emulation"))
    def cont() -> None:
        """Resume guest VCPU execution (monitor/qmp-cmds.c ``qmp_cont``)."""
        state = machine.run_state
        if state in NEEDS_RESET:
            raise QMPError("Resetting the Virtual Machine is required")
        if state is RunState.FINISH_MIGRATE:
            raise QMPError("Migration is not finalized yet")
        if machine.in_transient_state:
            raise QMPError(f"The VM cannot be resumed while in state '{state}'")
        if state is RunState.INMIGRATE:
            machine.autostart = True
        elif state is not RunState.SUSPENDED:
            machine.set_run_state(RunState.RUNNING)

    @command(name="system_reset", hmp=HumanSyntax(name="system_reset", help="reset the system"))
    def system_reset() -> None:
        """Perform a hard reset of the VM (softmmu/runstate.c ``main_loop_should_exit``)."""
        monitor.emit("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
        if (
            machine.run_state
            not in (
                RunState.RUNNING,
                RunState.INMIGRATE,
                RunState.FINISH_MIGRATE,
            )
            and not machine.in_transient_state
        ):
            machine.set_run_state(RunState.PRELAUNCH)

    @command(
        name="system_powerdown",
        hmp=HumanSyntax(name="system_powerdown", help="send system power down event"),
    )
    def system_powerdown() -> None:
        """Press the ACPI power button; a running guest shuts down."""
        monitor.emit("POWERDOWN")
        if machine.running:
            asyncio.get_running_loop().call_soon(guest_shutdown)

    def guest_shutdown() -> None:
        monitor.emit("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
        if no_shutdown:
            machine.set_run_state(RunState.SHUTDOWN)
        else:
            on_exit(0)

    @command(name="quit", hmp=HumanSyntax(name="quit", aliases=("q",), help="quit the emulator"))
    def quit_(ctx: Context) -> None:
        """Exit the emulator, after the reply has been sent.

        A human session stays suspended (monitor/hmp-cmds.c ``hmp_quit`` calls
        ``monitor_suspend``), so no prompt follows ``quit``.
        """
        from qmonitor import HumanSession  # loaded with the first human session

        if isinstance(ctx.session, HumanSession):
            ctx.session.suspend()
        monitor.emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        asyncio.get_running_loop().call_soon(on_exit, 0)

    @command(
        name="x-query-ram-digest",
        hmp=HumanSyntax(name="info ram-digest", help="show the SHA-256 digest of guest RAM"),
        human=render_digest,
    )
    async def x_query_ram_digest() -> RamDigest:
        """SHA-256 of guest RAM and the workload step it belongs to (our extension)."""
        digest, step = await machine.digest()
        return RamDigest(digest, step)


def _check_snapshot_nodes(devices: list[str], vmstate: str | None = None) -> None:
    """QEMU's checks of ``devices`` and ``vmstate`` (block/snapshot.c, migration/savevm.c)."""
    if not devices:
        raise QMPError("At least one device is required for snapshot")
    for device in devices:
        if device != SNAPSHOT_NODE:
            raise QMPError(f"No block device node '{device}'")
    if vmstate is not None and vmstate != SNAPSHOT_NODE:
        raise QMPError(f"vmstate block device '{vmstate}' does not exist")


def _check_snapshot_allowed(services: MachineServices) -> None:
    machine = services.machine
    outgoing = services.migration.outgoing
    if outgoing is not None and outgoing.in_progress:
        raise QMPError("There's a migration process in progress")
    if machine.run_state is RunState.INMIGRATE:
        raise QMPError("Guest is waiting for an incoming migration")
    if machine.in_transient_state:
        raise QMPError(f"The VM is busy ({machine.run_state})")


def _register_snapshots(monitor: Monitor, services: MachineServices) -> None:
    command = monitor.command
    machine, store, jobs = services.machine, services.snapshots, services.jobs
    tag_completion = {"name": store.tags}

    def job_progress(job: Job) -> Callable[[int, int], None]:
        return lambda done, total: job.progress(done, total)

    def context_progress(ctx: Context, verb: str) -> Callable[[int, int], None]:
        return lambda done, total: ctx.progress(done, total, verb)

    @command(name="snapshot-save")
    def snapshot_save(job_id: _JobId, tag: str, vmstate: str, devices: list[str]) -> None:
        """Save a VM snapshot as a job (qapi/migration.json ``snapshot-save``)."""

        async def run(job: Job) -> None:
            _check_snapshot_allowed(services)
            _check_snapshot_nodes(devices)
            if store.exists(tag):
                raise QMPError(f"Snapshot '{tag}' already exists in one or more devices")
            _check_snapshot_nodes(devices, vmstate)
            await save_snapshot(
                machine, store, tag, job_progress(job), job.pause_point, services.faults
            )

        jobs.start(job_id, "snapshot-save", run)

    @command(name="snapshot-load")
    def snapshot_load(job_id: _JobId, tag: str, vmstate: str, devices: list[str]) -> None:
        """Load a VM snapshot as a job (qapi/migration.json ``snapshot-load``)."""

        async def run(job: Job) -> None:
            _check_snapshot_allowed(services)
            _check_snapshot_nodes(devices)
            if not store.exists(tag):
                raise snapshot_missing(tag)
            _check_snapshot_nodes(devices, vmstate)
            await load_snapshot(machine, store, tag, job_progress(job), job.pause_point)

        jobs.start(job_id, "snapshot-load", run)

    @command(name="snapshot-delete")
    def snapshot_delete(job_id: _JobId, tag: str, devices: list[str]) -> None:
        """Delete a VM snapshot as a job (qapi/migration.json ``snapshot-delete``)."""

        async def run(job: Job) -> None:
            _check_snapshot_nodes(devices)
            await asyncio.to_thread(store.delete, tag)
            job.progress(1, 1)

        jobs.start(job_id, "snapshot-delete", run)

    @command(
        name="savevm",
        qmp=False,
        hmp=HumanSyntax(
            name="savevm",
            args_type="name:s?",
            params="[tag]",
            help="save a VM snapshot. If no tag is provided, a new snapshot is created",
            completers=tag_completion,
        ),
    )
    async def savevm(ctx: Context, name: str | None = None) -> None:
        """Save a VM snapshot, replacing one with the same tag (HMP only, as in QEMU)."""
        _check_snapshot_allowed(services)
        tag = name or time.strftime("vm-%Y%m%d%H%M%S")
        await save_snapshot(
            machine, store, tag, context_progress(ctx, "saving"), ctx.checkpoint, services.faults
        )

    @command(
        name="loadvm",
        qmp=False,
        hmp=HumanSyntax(
            name="loadvm",
            args_type="name:s",
            params="tag",
            help="restore a VM snapshot from its tag",
            completers=tag_completion,
        ),
    )
    async def loadvm(name: str, ctx: Context) -> None:
        """Restore a VM snapshot (HMP only, as in QEMU)."""
        _check_snapshot_allowed(services)
        if not store.exists(name):
            raise snapshot_missing(name)
        await load_snapshot(machine, store, name, context_progress(ctx, "loading"), ctx.checkpoint)

    @command(
        name="delvm",
        qmp=False,
        hmp=HumanSyntax(
            name="delvm",
            args_type="name:s",
            params="tag",
            help="delete a VM snapshot from its tag",
            completers=tag_completion,
        ),
    )
    async def delvm(name: str) -> None:
        """Delete a VM snapshot; deleting a missing one is not an error, as in QEMU."""
        await asyncio.to_thread(store.delete, name)

    @command(
        name="info-snapshots",
        qmp=False,
        hmp=HumanSyntax(name="info snapshots", help="show the currently saved VM snapshots"),
        human=render_snapshots,
    )
    async def info_snapshots() -> list[SnapshotEntry]:
        """List the snapshots (HMP only, as in QEMU)."""
        infos = await asyncio.to_thread(store.entries)
        return [
            SnapshotEntry(
                info.tag, info.vm_state_size, info.date_sec, info.vm_clock_nsec, info.loadable
            )
            for info in infos
        ]


def _register_migration(monitor: Monitor, services: MachineServices) -> None:
    command = monitor.command
    migration = services.migration
    monitor.event("MIGRATION", MigrationEventData)
    monitor.event("MIGRATION_PASS", MigrationPassData)

    def names(ctx: Context) -> TakeNamedFd:
        """``fd:NAME`` takes from the names of the monitor the command came from."""
        return named_fds(monitor, ctx.session).take

    @command(name="migrate")
    def migrate(
        uri: str,
        ctx: Context,
        blk: bool | None = None,
        inc: bool | None = None,
        detach: bool | None = None,
        resume: bool | None = None,
    ) -> None:
        """Migrate to ``uri``; returns at once, follow it with query-migrate or events.

        QEMU 7.2's arguments (qapi/migration.json), as libvirt sends them (``virsh save`` sends
        ``resume: false``): ``detach`` is ignored, as by QEMU; ``blk``/``inc`` ask for block
        migration, which has nothing to copy on a machine without disks; ``resume`` continues
        a paused postcopy migration, which this machine never has (QEMU's error, checked
        first as in migration.c ``migrate_prepare``).
        """
        if resume:
            raise QMPError("Cannot resume if there is no paused migration")
        migration.start_outgoing(uri, names(ctx))

    @command(
        name="hmp-migrate",
        qmp=False,
        detachable=True,
        hmp=HumanSyntax(
            name="migrate",
            params="[-d] uri",
            help="migrate to URI (using -d to not wait for completion)",
            activity="migration",
        ),
    )
    async def hmp_migrate(uri: str, ctx: Context, detach: bool = False) -> None:
        """Migrate to ``uri``; unless detached, wait for the end, showing progress.

        As QEMU's ``hmp_migrate``: the migration is started first, so its errors are printed
        with or without ``-d``; detached, the prompt comes back once it has started. Cancelling
        the command (Ctrl-C at the console) cancels the migration and returns once the source
        is back as it was.
        """
        outgoing = migration.start_outgoing(uri, names(ctx))
        if detach:
            return
        try:
            while outgoing.in_progress:
                ctx.progress(0, None, migration_progress(outgoing))
                await asyncio.wait({outgoing.done}, timeout=0.2)
        except asyncio.CancelledError:
            outgoing.cancel()
            await outgoing.wait()
            raise QMPError(MIGRATION_CANCELLED) from None
        if outgoing.status is MigrationStatus.FAILED:
            raise QMPError(outgoing.error_desc or "migration failed")
        if outgoing.status is MigrationStatus.CANCELLED:
            raise QMPError(MIGRATION_CANCELLED)

    @command(
        name="migrate_cancel",
        hmp=HumanSyntax(name="migrate_cancel", help="cancel the current VM migration"),
    )
    def migrate_cancel() -> None:
        """Cancel the current outgoing migration; the source goes on as before."""
        migration.cancel()

    @command(
        name="migrate-incoming",
        hmp=HumanSyntax(
            name="migrate_incoming",
            params="uri",
            help="Continue an incoming migration from an -incoming defer",
        ),
    )
    async def migrate_incoming(uri: str, ctx: Context) -> None:
        """Start an incoming migration on a VM started with ``-incoming defer``."""
        await migration.start_incoming(uri, names(ctx))

    @command(
        name="query-migrate",
        hmp=HumanSyntax(name="info migrate", help="show migration status"),
        human=render_migrate,
    )
    def query_migrate() -> MigrationInfo:
        """Return information about the current migration."""
        return migration.info()

    settings = MigrationSettings(migration)
    register_migrate_set_parameters(monitor, settings)
    migrate_set_parameters = settings.set_parameters

    @command(
        name="migrate_set_parameter",
        qmp=False,
        hmp=HumanSyntax(
            name="migrate_set_parameter",
            args_type="parameter:s,value:s",
            params="parameter value",
            help="Set the parameter for migration",
            completers={"parameter": lambda: ["max-bandwidth", "downtime-limit"]},
        ),
    )
    def migrate_set_parameter(parameter: str, value: str, ctx: Context) -> None:
        """HMP spelling of migrate-set-parameters (monitor/hmp-cmds.c, QEMU's texts).

        ``max-bandwidth`` is read by ``qemu_strtosz_MiB`` (MiB without a suffix, at most
        INT64_MAX, else ``Invalid size``), ``downtime-limit`` by the string input visitor's
        ``parse_option_size`` (bytes-style size, its two errors), then checked like QMP's. A
        parameter QEMU has and this machine does not is refused, naming what it has.
        """
        if parameter not in QEMU_MIGRATION_PARAMETERS:
            raise QMPError(f"invalid parameter value: {parameter}")  # qapi_enum_parse
        if parameter == "block-bitmap-mapping":
            raise QMPError("The block-bitmap-mapping parameter can only be set through QMP")
        if parameter not in ("max-bandwidth", "downtime-limit"):
            raise QMPError(
                f"Migration parameter '{parameter}' is not implemented by this machine "
                "(it has max-bandwidth and downtime-limit)"
            )

        def warn(text: str) -> None:  # QEMU's warn_report, printed in the monitor
            from qmonitor import HumanSession

            if isinstance(ctx.session, HumanSession):
                ctx.session.write(f"warning: {text}\n")

        if parameter == "max-bandwidth":
            try:
                bandwidth = strtosz(value, "M", warn=warn)
            except SizeError:
                bandwidth = -1
            if not 0 <= bandwidth <= _INT64_MAX:
                raise QMPError(f"Invalid size {value}")
            migrate_set_parameters(max_bandwidth=bandwidth)
            return
        try:
            downtime = strtosz(value, warn=warn)
        except SizeError as error:
            if error.out_of_range:
                raise QMPError(
                    f"Value '{value}' is out of range for parameter '{parameter}'"
                ) from None
            raise QMPError(
                f"Parameter '{parameter}' expects a non-negative number below 2^64\n{SIZE_HINT}"
            ) from None
        migrate_set_parameters(downtime_limit=downtime)

    @command(
        name="query-migrate-parameters",
        hmp=HumanSyntax(name="info migrate_parameters", help="show current migration parameters"),
        human=render_migrate_parameters,
    )
    def query_migrate_parameters() -> MigrationParametersInfo:
        """Return the current migration parameters (all of QEMU 7.2's)."""
        return settings.parameters()

    @command(name="migrate-set-capabilities")
    def migrate_set_capabilities(capabilities: list[MigrationCapabilityStatus]) -> None:
        """Enable or disable migration capabilities (only ``events`` can be on here)."""
        settings.set_capabilities(capabilities)

    @command(
        name="migrate_set_capability",
        qmp=False,
        hmp=HumanSyntax(
            name="migrate_set_capability",
            args_type="capability:s,state:b",
            params="capability state",
            help="Enable/Disable the usage of a capability for migration",
            completers={"capability": lambda: [c.value for c in MigrationCapability]},
        ),
    )
    def migrate_set_capability(capability: str, state: bool) -> None:
        """HMP spelling of migrate-set-capabilities (QEMU's ``qapi_enum_parse`` text first)."""
        if capability not in QEMU_MIGRATION_CAPABILITIES:
            raise QMPError(f"invalid parameter value: {capability}")
        if capability not in set(MigrationCapability):
            raise QMPError(
                f"Migration capability '{capability}' is not implemented by this machine "
                f"(it has {', '.join(MigrationCapability)})"
            )
        migrate_set_capabilities(
            [MigrationCapabilityStatus(MigrationCapability(capability), state)]
        )

    @command(
        name="query-migrate-capabilities",
        hmp=HumanSyntax(
            name="info migrate_capabilities", help="show current migration capabilities"
        ),
        human=render_migrate_capabilities,
    )
    def query_migrate_capabilities() -> list[MigrationCapabilityStatus]:
        """Return the migration capabilities and whether they are on (all of QEMU 7.2's)."""
        return settings.capabilities()


def _register_yank(monitor: Monitor) -> None:
    """QEMU's ``yank`` and ``query-yank`` (util/yank.c), out-of-band as in QEMU; no HMP
    command, as QEMU 7.2 has none."""
    registry = monitor.yank

    @monitor.command(name="yank", allow_oob=True)
    def yank(instances: list[AnyYankInstance]) -> None:
        """Recover from a hang by shutting down the connections of the given instances.

        All must exist (else DeviceNotFound ``Instance not found`` and nothing is yanked).
        Yanking ``migration`` fails the migration rather than cancelling it.
        """
        registry.yank(instances)

    @monitor.command(name="query-yank", allow_oob=True)
    def query_yank() -> list[AnyYankInstance]:
        """The yank instances, in the order they appeared."""
        return registry.instances()
