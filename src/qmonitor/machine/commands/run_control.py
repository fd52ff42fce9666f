"""Run control: ``query-status``, ``query-name``, ``query-uuid``, ``stop``, ``cont``,
``system_reset``, ``system_powerdown``, ``quit`` (qapi/run-state.json, qapi/machine.json,
qapi/misc.json) and our ``x-query-ram-digest``, with their types and HMP renderers.

Run state changes are reported by one listener: leaving ``running`` sends STOP, entering it
sends RESUME, which is when QEMU's ``vm_stop``/``vm_start`` send them; because the change
happens inside the command, the event goes out before the command's reply, as in QEMU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from qmonitor import Context, HumanSyntax, Monitor, QMPError
from qmonitor.machine.machine import NEEDS_RESET, Machine, RunState


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


# -- human renderers (the handler's result in, QEMU's text out) ------------------------------


def render_status(status: StatusInfo) -> str:
    """``info status`` (monitor/hmp-cmds.c ``hmp_info_status``)."""
    text = "VM status: " + ("running" if status.running else "paused")
    if not status.running and status.status != RunState.PAUSED:
        text += f" ({status.status})"
    return text + "\n"


def render_name(info: NameInfo) -> str:
    """``info name``: the name alone, nothing without one."""
    return f"{info.name}\n" if info.name is not None else ""


def render_uuid(info: UuidInfo) -> str:
    """``info uuid``."""
    return f"{info.UUID}\n"


def render_digest(info: RamDigest) -> str:
    """``info ram-digest`` (ours): the digest and its step."""
    return f"{info.digest} (workload step {info.workload_step})\n"


# -- registration -----------------------------------------------------------------------------


def register_run_control(
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
    # query-status's answer, one per run state (a StatusInfo is immutable and depends on the
    # state alone): the monitor's most frequent request then builds no object (issue 8).
    status_by_state: dict[RunState, StatusInfo] = {}

    @command(
        name="query-status",
        hmp=HumanSyntax(name="info status", help="show the current VM status (running|paused)"),
        human=render_status,
    )
    def query_status() -> StatusInfo:
        """Query the run status of the VM."""
        state = machine.run_state
        status = status_by_state.get(state)
        if status is None:
            status = status_by_state[state] = StatusInfo(state is RunState.RUNNING, False, state)
        return status

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
