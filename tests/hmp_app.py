"""A small program that embeds a Monitor with commands for the human monitor tests.

``python tests/hmp_app.py QMP_SOCKET [HMP_SOCKET]`` serves QMP on ``QMP_SOCKET``, the human
monitor on stdio (the console when stdin is a terminal) and, if given, on ``HMP_SOCKET``. It
exits when ``quit`` is typed. The tests import :func:`add_demo_commands` too.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from qmonitor import Context, HumanSyntax, Monitor, QMPError
from qmonitor.core.commands import CommandRegistry


class Mode(StrEnum):
    FAST = "fast"
    SAFE = "safe"


@dataclass(frozen=True, slots=True)
class StatusInfo:
    running: bool
    singlestep: bool
    status: str


@dataclass
class DemoState:
    running: bool = True
    snapshots: list[str] = field(default_factory=lambda: ["alpha", "beta", "production"])
    loaded: str | None = None
    mode: Mode = Mode.SAFE


def render_status(status: StatusInfo) -> str:
    """``info status`` as QEMU prints it (monitor/hmp-cmds.c hmp_info_status)."""
    return "VM status: " + ("running" if status.running else "paused") + "\n"


def add_demo_commands(registry: CommandRegistry, state: DemoState) -> None:
    """Commands covering each argument letter, renderer, completer and handler style."""
    command = registry.command

    @command(name="query-status", hmp="info status", human=render_status)
    def query_status() -> StatusInfo:
        """show the current VM status (running|paused)"""
        return StatusInfo(state.running, False, "running" if state.running else "paused")

    @command(hmp=HumanSyntax(aliases=("s",), help="stop emulation"))
    def stop() -> None:
        """Stop the guest."""
        state.running = False

    @command(hmp=HumanSyntax(aliases=("c",), help="resume emulation"))
    def cont() -> None:
        """Resume the guest."""
        state.running = True

    @command(name="x-slow", hmp="slow", detachable=True)
    async def slow(ctx: Context, seconds: float = 2.0) -> str:
        """run for a while, reporting progress"""
        steps = 20
        for step in range(steps):
            ctx.progress(step, steps, "working")
            await asyncio.sleep(seconds / steps)
        return f"slow: finished after {seconds:g} s"

    @command(
        name="loadvm",
        qmp=False,
        hmp=HumanSyntax(
            args_type="name:s",
            params="tag",
            help="restore a VM snapshot from its tag",
            completers={"name": lambda: list(state.snapshots)},
        ),
    )
    def loadvm(name: str) -> None:
        """Load a snapshot."""
        if name not in state.snapshots:
            raise QMPError(f"Snapshot '{name}' does not exist in one or more devices")
        state.loaded = name

    @command(
        hmp=HumanSyntax(
            args_type="value:M",
            params="target",
            help="request VM to change its memory allocation (in MB)",
        )
    )
    def balloon(value: int) -> None:
        """Change the balloon target."""
        raise QMPError("No balloon device has been activated")

    @command(name="x-echo", hmp=HumanSyntax(name="echo", args_type="text:S"))
    def echo(text: str) -> str:
        """print the rest of the line"""
        return text

    @command(name="x-size", hmp=HumanSyntax(name="size", args_type="value:o"))
    def size(value: int) -> int:
        """print a size in bytes"""
        return value

    @command(name="x-set-mode", hmp="set_mode")
    def set_mode(mode: Mode, verbose: bool = False) -> dict[str, Any]:
        """choose how to run"""
        state.mode = mode
        return {"mode": mode.value, "verbose": verbose}

    @command(name="query-snapshots", hmp="info snapshots")
    def query_snapshots() -> list[dict[str, Any]]:
        """show the currently saved VM snapshots"""
        return [{"id": i, "tag": tag} for i, tag in enumerate(state.snapshots, 1)]


async def main(argv: list[str]) -> None:
    from qmonitor.server.human import register_human_monitor_command, serve_human

    monitor = Monitor("hmp-test")
    monitor.event("STOP")
    add_demo_commands(monitor.registry, DemoState())

    @monitor.command(hmp="quit")
    def quit_() -> None:
        """quit the emulator"""
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(monitor.close()))

    @monitor.command(hmp="x_emit")
    def x_emit() -> None:
        """send a STOP event"""
        monitor.emit("STOP")

    register_human_monitor_command(monitor)
    await monitor.listen(f"unix:{argv[0]},server=on,wait=off")
    if len(argv) > 1:
        await serve_human(monitor, f"unix:{argv[1]},server=on,wait=off", interactive=False)
    await serve_human(monitor, "stdio", interactive=sys.stdin.isatty())
    await monitor.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
