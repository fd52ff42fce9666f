"""``qmonitor run``: the reference machine and its monitors, for as long as it lives.

The command line (:mod:`qmonitor.cli`) only parses; this starts the machine, registers its
commands on a monitor, serves the monitors asked for and runs until the machine goes away.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
from typing import Final

from qmonitor import (
    Address,
    AddressError,
    AddressInUse,
    FaultRuleError,
    FaultSet,
    Monitor,
    PolicyError,
    QMPError,
    insecure_tcp_error,
    install_faults,
    load_policy,
    parse_address,
    parse_faults,
    register_human_monitor_command,
    serve_human,
)
from qmonitor.machine.commands import register_machine_commands
from qmonitor.machine.config import MachineConfig, monitor_chardevs
from qmonitor.machine.machine import Machine
from qmonitor.machine.paths import PathConfinement
from qmonitor.machine.profile import Profile, ProfileError
from qmonitor.machine.snapshots import SnapshotStore

DEFAULT_DIRTY_RATE: Final = 16 << 20
"""The guest workload's default: 16 MiB/s writes all of a default 128 MiB RAM in 8 s, so a
``savevm`` soon has real data to save, and a migration under the default 128 MiB/s
``max-bandwidth`` still converges. ``--dirty-rate 0`` gives an idle guest."""

RAM_NOT_ALLOCATED: Final = "cannot set up guest memory 'ram': Cannot allocate memory"
"""softmmu/physmem.c ``ram_block_add``: QEMU's text (without a location) when the host refuses
the memory, as ``qemu-system-x86_64 -m 1T`` says on a host without 1 TiB."""

NAME_IN_USE: Final = (
    "{error}; is another 'qmonitor run -name {name}' running? Give this one another -name"
)
"""What a second ``qmonitor run`` of the same name (so the same default socket) is told."""


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


def _client_command(address: Address, protocol: str) -> str:
    """A command line that connects to ``address``, ready to paste into a shell."""
    if protocol == "HMP":
        # QEMU's line editor echoes and edits: the terminal must pass keys through as typed.
        target = (
            f"UNIX-CONNECT:{address.path}"
            if address.transport == "unix"
            else (f"TCP:{address.host}:{address.port}")
        )
        return f"socat -,echo=0,icanon=0 {shlex.quote(target)}"
    target = address.path if address.transport == "unix" else f"{address.host}:{address.port}"
    if shutil.which("qmp-shell"):
        return f"qmp-shell {shlex.quote(target)}"
    beside = os.path.join(os.path.dirname(sys.executable), "qmp-shell")
    if os.access(beside, os.X_OK):
        return f"{shlex.quote(beside)} {shlex.quote(target)}"
    return f"qmp-shell {shlex.quote(target)}  # from: pip install qemu.qmp"


def _where(protocol: str, address: Address) -> list[str]:
    """The lines saying where a listening monitor is, and how to connect to it."""
    where = address.path if address.transport == "unix" else f"{address.host}:{address.port}"
    return [
        f"qmonitor: {protocol} socket {where}",
        f"qmonitor: connect with: {_client_command(address, protocol)}",
    ]


def load_faults(path: str | None) -> FaultSet:
    """The fault rules of ``--faults FILE`` (none without it): every run has a FaultSet, so
    that rules can be added at run time (``__io.github.qmonitor_fault-add``). Raises
    :class:`FaultRuleError` (or ``OSError``) with the file's name."""
    faults = FaultSet()
    if path is not None:
        with open(path, encoding="utf-8") as file:
            text = file.read()
        for rule in parse_faults(text, path):
            faults.add(rule)
    return faults


def _security_refusal(options: argparse.Namespace) -> str | None:
    """Why ``qmonitor run`` must not start as asked (issue 9 item 7), checked before anything
    is created, so that nothing listens: a TCP monitor on a non-loopback address without TLS,
    unless ``--allow-insecure-tcp``."""
    if options.allow_insecure_tcp:
        return None
    for _, text in options.monitors:
        with contextlib.suppress(AddressError):  # reported when it is served
            refusal = insecure_tcp_error(parse_address(text), tls=False)
            if refusal is not None:
                return refusal
    return None


def _secured_monitor(options: argparse.Namespace) -> Monitor:
    """The monitor, with ``--policy`` read and ``--audit-log`` opened (PolicyError, OSError)."""
    policy = load_policy(options.policy) if options.policy else None
    return Monitor(
        options.name,
        strict_order=options.strict_order,
        policy=policy,
        audit=options.audit_log,
        allow_insecure_tcp=options.allow_insecure_tcp,
    )


async def run_machine(options: argparse.Namespace) -> int:
    """Start the machine and its monitors; return the exit status when it goes away."""
    try:
        faults = load_faults(options.faults)
    except OSError as exc:
        print(f"qmonitor: {options.faults}: {exc.strerror}", file=sys.stderr)
        return 1
    except FaultRuleError as exc:
        print(f"qmonitor: {exc}", file=sys.stderr)
        return 1
    refusal = _security_refusal(options)
    if refusal is not None:
        print(f"qmonitor: {refusal}", file=sys.stderr)
        return 1
    try:
        monitor = _secured_monitor(options)
    except PolicyError as exc:
        print(f"qmonitor: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"qmonitor: {options.audit_log}: {exc.strerror}", file=sys.stderr)
        return 1
    install_faults(monitor, faults)
    try:
        machine = Machine(
            options.name,
            ram_size=options.ram_size,
            start_paused=options.start_paused,
            incoming=options.incoming is not None,
            dirty_rate=options.dirty_rate,
        )
    except MemoryError:
        print(f"qmonitor: {RAM_NOT_ALLOCATED}", file=sys.stderr)
        return 1
    snapshots = SnapshotStore(options.state_dir or default_state_dir(options.name))
    exit_status = 0
    closing: set[asyncio.Future[None]] = set()

    def exit_machine(status: int) -> None:
        nonlocal exit_status
        exit_status = max(exit_status, status)
        closing.add(asyncio.ensure_future(monitor.close()))

    def terminate(signum: int) -> None:
        """QEMU's ``termsig_handler`` (os-posix.c): SIGINT, SIGHUP and SIGTERM shut down."""
        monitor.emit("SHUTDOWN", {"guest": False, "reason": "host-signal"})
        exit_machine(0)
        # After SIGHUP the terminal may be gone: writing to it fails, which changes nothing.
        with contextlib.suppress(OSError):
            print(f"qmonitor: terminating on signal {signum}", file=sys.stderr, flush=True)

    try:
        profile = Profile.file(options.profile).load() if options.profile else Profile.default()
    except ProfileError as exc:
        print(f"qmonitor: {exc}", file=sys.stderr)
        return 1
    monitors: list[tuple[str, str]] = list(options.monitors)
    qmp_addresses = [text for kind, text in monitors if kind == "qmp"]
    default_socket = not qmp_addresses
    if default_socket:
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
        faults=faults,
    )
    services.migration.file_paths = PathConfinement([snapshots.directory, *options.allow_path])
    try:
        # Every command is registered before any monitor serves: a stdio client's first
        # requests may be read as soon as its session starts.
        register_human_monitor_command(monitor)
        if monitor.policy is not None:
            for unmatched in monitor.policy.unmatched_entries(monitor.registry):
                source = monitor.policy.source
                print(f"qmonitor: warning: {source}: {unmatched} names no command", file=sys.stderr)
        snapshots.open()
        # Where each socket monitor is and how to reach it, then where snapshots go: printed
        # before the console's banner (the console comes last unless -monitor stdio is given
        # before other monitors: the monitors are served in command-line order, QEMU's
        # compat_monitorN numbering).
        shown: list[str] = [f"qmonitor: snapshots in {snapshots.directory}"]
        for kind, text in monitors:
            address = parse_address(text)
            if kind == "qmp":
                await monitor.serve(address)
            elif address.transport == "stdio":
                print("\n".join(shown), file=sys.stderr, flush=True)
                shown = []
                await serve_human(monitor, address, interactive=sys.stdin.isatty())
            else:
                await serve_human(monitor, address, interactive=False)
            if address.transport in ("unix", "tcp") and address.server:
                label = "QMP" if kind == "qmp" else "HMP"
                shown[-1:-1] = _where(label, monitor.listeners[-1].bound_address)
        if shown:
            print("\n".join(shown), file=sys.stderr, flush=True)
        if options.incoming not in (None, "defer"):
            await services.migration.start_incoming(options.incoming)
    except (AddressError, OSError, QMPError) as exc:
        message = str(exc)
        if isinstance(exc, OSError) and exc.strerror:  # without "[Errno N]"
            message = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
        if isinstance(exc, AddressInUse) and default_socket:
            message = NAME_IN_USE.format(error=message, name=shlex.quote(options.name))
        print(f"qmonitor: {message}", file=sys.stderr)
        await monitor.close()
        return 1
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, terminate, signum)
    machine.start_workload()
    await monitor.serve_forever()
    await services.migration.close()
    await services.jobs.close()
    await machine.close()
    return exit_status
