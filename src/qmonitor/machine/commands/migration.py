"""Migration: ``migrate``, ``migrate-incoming``, ``migrate_cancel``, ``query-migrate``, the
parameters and capabilities (qapi/migration.json) and their HMP spellings, with the event types
and the HMP renderers (monitor/hmp-cmds.c ``hmp_info_migrate*``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from qmonitor import (
    Context,
    HumanSyntax,
    Monitor,
    QMPError,
    SizeError,
    named_fds,
    strtosz,
)
from qmonitor.machine.commands.services import MachineServices
from qmonitor.machine.machine import RunState
from qmonitor.machine.migration import (
    MigrationInfo,
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
class MigrationEventData:
    """The MIGRATION event's data."""

    status: MigrationStatus


@dataclass(frozen=True, slots=True)
class MigrationPassData:
    """The MIGRATION_PASS event's data."""

    pass_: int = field(metadata={"qmp_name": "pass"})


def render_migrate(info: MigrationInfo) -> str:
    """``info migrate`` (monitor/hmp-cmds.c ``hmp_info_migrate``, without QEMU's globals)."""
    lines = []
    if info.status is not None:
        status = f"Migration status: {info.status}"
        if info.status == MigrationStatus.FAILED and info.error_desc is not None:
            status += f" ({info.error_desc})"
        lines.append(status)
        lines.append(f"total time: {info.total_time or 0} ms")
        for milliseconds, label in (
            (info.expected_downtime, "expected downtime"),
            (info.downtime, "downtime"),
            (info.setup_time, "setup"),
        ):
            if milliseconds is not None:
                lines.append(f"{label}: {milliseconds} ms")
    ram = info.ram
    if ram is not None:
        lines += [
            f"transferred ram: {ram.transferred >> 10} kbytes",
            f"throughput: {ram.mbps:0.2f} mbps",
            f"remaining ram: {ram.remaining >> 10} kbytes",
            f"total ram: {ram.total >> 10} kbytes",
            f"duplicate: {ram.duplicate} pages",
            f"skipped: {ram.skipped} pages",
            f"normal: {ram.normal} pages",
            f"normal bytes: {ram.normal_bytes >> 10} kbytes",
            f"dirty sync count: {ram.dirty_sync_count}",
            f"page size: {ram.page_size >> 10} kbytes",
            f"multifd bytes: {ram.multifd_bytes >> 10} kbytes",
            f"pages-per-second: {ram.pages_per_second}",
        ]
        if ram.dirty_pages_rate:
            lines.append(f"dirty pages rate: {ram.dirty_pages_rate} pages")
        if ram.precopy_bytes:
            lines.append(f"precopy ram: {ram.precopy_bytes >> 10} kbytes")
        if ram.downtime_bytes:
            lines.append(f"downtime ram: {ram.downtime_bytes >> 10} kbytes")
    if info.socket_address is not None:
        lines.append("socket address: [")
        for address in info.socket_address:
            if address.type == "unix":
                lines.append(f"\tunix:{address.path}")
            else:
                lines.append(f"\ttcp:{address.host}:{address.port}")
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


def render_migrate_parameters(parameters: MigrationParametersInfo) -> str:
    """``info migrate_parameters`` (``hmp_info_migrate_parameters``, our members)."""
    return (
        f"max-bandwidth: {parameters.max_bandwidth} bytes/second\n"
        f"downtime-limit: {parameters.downtime_limit} ms\n"
    )


def render_migrate_capabilities(capabilities: list[MigrationCapabilityStatus]) -> str:
    """``info migrate_capabilities``."""
    return "".join(f"{c.capability}: {'on' if c.state else 'off'}\n" for c in capabilities)


# -- registration -----------------------------------------------------------------------------


def register_migration(monitor: Monitor, services: MachineServices) -> None:
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
            from qmonitor import HumanSession  # loaded with the first human session

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
