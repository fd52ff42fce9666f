"""``qmonitor run``: the reference machine and its monitors, for as long as it lives.

The command line (:mod:`qmonitor.cli`) only parses; this starts the machine, registers its
commands on a monitor, serves the monitors asked for and runs until the machine goes away.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile

from qmonitor import (
    AddressError,
    Monitor,
    QMPError,
    parse_address,
    register_human_monitor_command,
    serve_human,
)
from qmonitor.machine.commands import register_machine_commands
from qmonitor.machine.config import MachineConfig, monitor_chardevs
from qmonitor.machine.machine import Machine
from qmonitor.machine.profile import Profile, ProfileError
from qmonitor.machine.snapshots import SnapshotStore


def default_socket_dir() -> str:
    """Where ``qmonitor run`` puts its QMP socket when none is given."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "qmonitor")
    return os.path.join(tempfile.gettempdir(), f"qmonitor-{os.getuid()}")


def default_state_dir(name: str) -> str:
    """Where snapshots live without ``--state-dir``: like a disk image, they persist."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "qmonitor", "vms", name)


async def run_machine(options: argparse.Namespace) -> int:
    """Start the machine and its monitors; return the exit status when it goes away."""
    monitor = Monitor(options.name, strict_order=options.strict_order)
    machine = Machine(
        options.name,
        ram_size=options.ram_size,
        start_paused=options.start_paused,
        incoming=options.incoming is not None,
        dirty_rate=options.dirty_rate,
    )
    snapshots = SnapshotStore(options.state_dir or default_state_dir(options.name))
    exit_status = 0
    closing: set[asyncio.Future[None]] = set()

    def exit_machine(status: int) -> None:
        nonlocal exit_status
        exit_status = max(exit_status, status)
        closing.add(asyncio.ensure_future(monitor.close()))

    def terminate(signum: int) -> None:
        print(f"qmonitor: terminating on signal {signum}", file=sys.stderr, flush=True)
        monitor.emit("SHUTDOWN", {"guest": False, "reason": "host-signal"})
        exit_machine(0)

    try:
        profile = Profile.file(options.profile).load() if options.profile else Profile.default()
    except ProfileError as exc:
        print(f"qmonitor: {exc}", file=sys.stderr)
        return 1
    monitors: list[tuple[str, str]] = list(options.monitors)
    qmp_addresses = [text for kind, text in monitors if kind == "qmp"]
    if not qmp_addresses:
        directory = default_socket_dir()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        monitors.append(("qmp", f"unix:{directory}/{options.name}.qmp,server=on,wait=off"))
    if all(kind != "monitor" for kind, _ in monitors) and "stdio" not in qmp_addresses:
        monitors.append(("monitor", "stdio"))
    config = MachineConfig(
        ram_size=options.ram_size, chardevs=monitor_chardevs([text for _, text in monitors])
    )
    services = register_machine_commands(
        monitor,
        machine,
        snapshots,
        on_exit=exit_machine,
        no_shutdown=options.no_shutdown,
        config=config,
        profile=profile,
    )
    try:
        # Every command is registered before any monitor serves: a stdio client's first
        # requests may be read as soon as its session starts.
        register_human_monitor_command(monitor)
        snapshots.open()
        for kind, text in monitors:
            address = parse_address(text)
            if kind == "qmp":
                await monitor.serve(address)
            else:
                stdio = address.transport == "stdio"
                await serve_human(monitor, address, interactive=stdio and sys.stdin.isatty())
            if address.transport in ("unix", "tcp") and address.server:
                shown = monitor.listeners[-1].bound_address
                label = "QMP" if kind == "qmp" else "HMP"
                print(f"qmonitor: {label} on {shown}", file=sys.stderr, flush=True)
        if options.incoming not in (None, "defer"):
            await services.migration.start_incoming(options.incoming)
    except (AddressError, OSError, QMPError) as exc:
        print(f"qmonitor: {exc}", file=sys.stderr)
        await monitor.close()
        return 1
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, terminate, signum)
    machine.start_workload()
    await monitor.serve_forever()
    await services.migration.close()
    await services.jobs.close()
    await machine.close()
    return exit_status
