"""Snapshots: the ``snapshot-*`` jobs (qapi/migration.json) and HMP ``savevm``/``loadvm``/
``delvm``/``info snapshots``, with their types and the ``info snapshots`` renderer (block/qapi.c
``bdrv_snapshot_dump``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from qmonitor import Context, HumanSyntax, Job, Monitor, QMPError, QMPName
from qmonitor.machine.commands.services import MachineServices
from qmonitor.machine.machine import RunState
from qmonitor.machine.snapshots import (
    human_size,
    load_snapshot,
    save_snapshot,
    snapshot_missing,
)

SNAPSHOT_NODE = "disk0"
"""The one block node snapshots can name in ``vmstate`` and ``devices``: the state directory
(QEMU keeps snapshots in qcow2 nodes; qapi/migration.json's examples call theirs disk0)."""

_JobId = Annotated[str, QMPName("job-id")]


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """One line of ``info snapshots`` (block/qapi.c ``bdrv_snapshot_dump``'s fields), and
    whether ``loadvm`` would take it (see ``snapshots.read_info``)."""

    tag: str
    vm_state_size: int
    date_sec: int
    vm_clock_nsec: int
    loadable: bool


def render_snapshots(entries: list[SnapshotEntry]) -> str:
    """``info snapshots`` (block/monitor/block-hmp-cmds.c ``hmp_info_snapshots``, block/qapi.c
    ``bdrv_snapshot_dump``, QEMU 7.2 layout).

    Files ``loadvm`` would refuse on their header go in QEMU's second section, "List of
    partial (non-loadable) snapshots on 'disk0':", which QEMU uses for snapshots missing from
    some disk: there too the tag is taken but cannot be loaded. The first section then says
    "None" if it has nothing, as QEMU's does.
    """
    if not entries:
        return "There is no snapshot available.\n"
    header = f"{'ID':<10}{'TAG':<17}{'VM SIZE':>8}{'DATE':>20}{'VM CLOCK':>13}{'ICOUNT':>11}"
    loadable = [entry for entry in entries if entry.loadable]
    lines = ["List of snapshots present on all disks:"]
    lines += [header, *map(_snapshot_line, loadable)] if loadable else ["None"]
    refused = [entry for entry in entries if not entry.loadable]
    if refused:
        lines += ["", f"List of partial (non-loadable) snapshots on '{SNAPSHOT_NODE}':", header]
        lines += map(_snapshot_line, refused)
    return "\n".join(lines) + "\n"


def _snapshot_line(entry: SnapshotEntry) -> str:
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.date_sec))
    milliseconds = entry.vm_clock_nsec // 1_000_000
    seconds, milliseconds = divmod(milliseconds, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}.{milliseconds:03d}"
    size = human_size(entry.vm_state_size)
    return f"{'--':<9} {entry.tag:<16} {size:>8}{date:>20}{clock:>13}{'':>11}"


# -- registration -----------------------------------------------------------------------------


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


def register_snapshots(monitor: Monitor, services: MachineServices) -> None:
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
        """Save a VM snapshot, replacing one with the same tag (HMP only, as in QEMU).

        Only a missing tag is made up (migration/savevm.c ``save_snapshot``: ``vm-%Y%m%d%H%M%S``
        when ``name`` is NULL); ``savevm ""`` names the empty tag, which QEMU saves and
        :func:`~qmonitor.machine.snapshots.check_tag` refuses (docs/MACHINE.md).
        """
        _check_snapshot_allowed(services)
        tag = time.strftime("vm-%Y%m%d%H%M%S") if name is None else name
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
