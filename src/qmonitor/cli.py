"""The ``qmonitor`` program: its command line, and the start-up of ``qmonitor run``.

Options take QEMU's spellings where QEMU has them. Their values are checked before anything is
created, and a bad one is reported on one line, ``qmonitor: OPTION VALUE: TEXT`` (the location
prefix QEMU's ``error_report`` gives command-line errors), with QEMU's text where QEMU refuses
the value; then the program exits with status 1, as QEMU does. The texts are gathered below.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Final

from qmonitor import __version__
from qmonitor.core.errors import QMPError
from qmonitor.machine.commands import register_machine_commands
from qmonitor.machine.machine import Machine, parse_size
from qmonitor.machine.snapshots import SnapshotStore
from qmonitor.server.human import register_human_monitor_command, serve_human
from qmonitor.server.listen import Address, AddressError, AddressInUse, parse_address
from qmonitor.server.monitor import DEFAULT_VERSION, Monitor, log_trace

DEFAULT_RAM_SIZE: Final = 128 << 20
"""``-m`` by default, and for ``-m 0``: the default of QEMU's x86 ``pc`` machine (softmmu/vl.c
``parse_memory_options`` leaves a size of 0 out, so the machine's ``default_ram_size`` is
used)."""

RAM_SIZE_ALIGNMENT: Final = 8192
"""QEMU rounds ``-m`` up to 8 KiB (hw/core/machine.c ``machine_set_mem``: ``QEMU_ALIGN_UP``)."""

MAX_RAM_SIZE: Final = 16 << 30
"""The most RAM ``qmonitor run`` simulates. The guest's RAM is a ``bytearray`` in this process,
zeroed (so touched) at start, and ``loadvm`` holds a second copy while it checks the file: a
16 GiB guest can need 32 GiB of the host's memory."""

DEFAULT_DIRTY_RATE: Final = 16 << 20
"""The guest workload's default: 16 MiB/s writes all of a default 128 MiB RAM in 8 s, so a
``savevm`` soon has real data to save, and a migration under the default 128 MiB/s
``max-bandwidth`` still converges. ``--dirty-rate 0`` gives an idle guest."""

# -- what ``qmonitor run`` says about bad option values -----------------------------------------
# QEMU's texts where QEMU refuses the value; ours where QEMU has none (it takes any -name). All
# in one place, for a QEMU command-line parser to take over.

SIZE_EXPECTED: Final = "Parameter 'size' expects a non-negative number below 2^64"
"""util/qemu-option.c ``parse_option_size``: QEMU's text for a ``-m`` that is not a size."""

RAM_ABOVE_LIMIT: Final = "cannot model more than {limit} of RAM"
"""QEMU's wording for a board's RAM limit (hw/arm/sbsa-ref.c, with ``size_to_str``)."""

RAM_NOT_ALLOCATED: Final = "cannot set up guest memory 'ram': Cannot allocate memory"
"""softmmu/physmem.c ``ram_block_add``: QEMU's text (without a location) when the host refuses
the memory, as ``qemu-system-x86_64 -m 1T`` says on a host without 1 TiB."""

NAME_NOT_A_FILE_NAME: Final = (
    "the name names the QMP socket (NAME.qmp) and the snapshot directory, so it cannot be "
    "empty, '.' or '..', or contain '/'"
)

NAME_IN_USE: Final = (
    "{error}; is another 'qmonitor run -name {name}' running? Give this one another -name"
)


class OptionError(Exception):
    """A bad option value; ``str()`` is the line to print after ``qmonitor: ``."""


def ram_size(text: str) -> int:
    """``-m``'s value in bytes, as QEMU reads it (MiB without a suffix, ``0`` the default,
    rounded up to :data:`RAM_SIZE_ALIGNMENT`), within :data:`MAX_RAM_SIZE`."""
    try:
        size = parse_size(text, default_suffix="M")
    except ValueError:
        raise OptionError(f"-m {text}: {SIZE_EXPECTED}") from None
    if size == 0:
        return DEFAULT_RAM_SIZE
    size = -(-size // RAM_SIZE_ALIGNMENT) * RAM_SIZE_ALIGNMENT
    if size > MAX_RAM_SIZE:
        limit = f"{MAX_RAM_SIZE >> 30} GiB"
        raise OptionError(f"-m {text}: {RAM_ABOVE_LIMIT.format(limit=limit)}")
    return size


def check_file_name(name: str) -> None:
    """Refuse a ``-name`` that cannot name a file (:data:`NAME_NOT_A_FILE_NAME`).

    Called only where the name does name a file: QEMU takes any name, and so does
    ``qmonitor run`` given ``-qmp`` and ``--state-dir``.
    """
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise OptionError(f"-name {shlex.quote(name)}: {NAME_NOT_A_FILE_NAME}")


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


def _rate(text: str) -> int:
    """``--dirty-rate``: bytes per second, with an optional K/M/G suffix."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


DESCRIPTION = """\
QEMU's monitor, rebuilt in Python: a QMP server that QEMU's own clients (qemu.qmp, qmp-shell,
libvirt-style tools) drive as they would drive QEMU, and QEMU's human monitor."""

RUN_DESCRIPTION = """\
Run the reference machine: a simulated VM whose guest keeps writing its RAM, with snapshots
and live migration, behind QEMU's monitors. Without -qmp, a QMP socket is created in
$XDG_RUNTIME_DIR/qmonitor/NAME.qmp (or /tmp/qmonitor-UID/); without -monitor, the human
monitor is on this terminal. SIGTERM, SIGHUP, SIGINT and 'quit' shut down cleanly."""

RUN_EPILOG = """\
examples:
  qmonitor run                                    the console here; the QMP socket is printed
  qmonitor run -name big -m 1G --dirty-rate 64M   a bigger machine, a busier guest
  qmonitor run -name dst -S -incoming tcp:127.0.0.1:4444
                                                  wait, paused, for a live migration
  qmonitor run -qmp unix:/tmp/vm.qmp,server=on,wait=off -monitor none --dirty-rate 0
                                                  QMP only, on a socket of your choice, idle

docs/MACHINE.md in the source describes the machine; docs/HMP.md the human monitor."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; options share QEMU's spellings where QEMU has them."""
    parser = argparse.ArgumentParser(prog="qmonitor", description=DESCRIPTION)
    parser.add_argument(
        "--version",
        action="version",
        version=f"qmonitor {__version__} (QEMU {DEFAULT_VERSION.qemu.major}."
        f"{DEFAULT_VERSION.qemu.minor}.{DEFAULT_VERSION.qemu.micro}'s monitor)",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    run = verbs.add_parser(
        "run",
        help="run the reference machine (a simulated VM) with its monitors",
        description=RUN_DESCRIPTION,
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("-name", dest="name", default="vm0", help="machine name (default vm0)")
    run.add_argument(
        "-m",
        dest="ram_size",
        default="128M",
        metavar="SIZE",
        help=f"guest RAM: MiB, or with a K/M/G/T suffix (default 128M, at most "
        f"{MAX_RAM_SIZE >> 30}G)",
    )
    run.add_argument("-S", dest="start_paused", action="store_true", help="start paused")
    run.add_argument(
        "-incoming",
        dest="incoming",
        metavar="URI|defer",
        help="wait for an incoming migration (tcp:HOST:PORT, unix:PATH, file:PATH, defer)",
    )
    run.add_argument(
        "-no-shutdown",
        dest="no_shutdown",
        action="store_true",
        help="stay in 'shutdown' when the guest powers off instead of exiting",
    )
    run.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where snapshots are kept (default $XDG_STATE_HOME/qmonitor/vms/NAME)",
    )
    run.add_argument(
        "--dirty-rate",
        type=_rate,
        default=DEFAULT_DIRTY_RATE,
        metavar="RATE",
        help="bytes of guest RAM the workload writes per second while running, with a K/M/G "
        f"suffix (default {DEFAULT_DIRTY_RATE >> 20}M; 0: an idle guest)",
    )
    run.add_argument(
        "-qmp",
        dest="qmp",
        action="append",
        default=[],
        metavar="ADDR",
        help="QMP monitor address, QEMU syntax, repeatable: unix:PATH,server=on,wait=off, "
        "tcp:HOST:PORT,server=on,wait=off, unix:PATH (connect out), stdio, none",
    )
    run.add_argument(
        "-monitor",
        dest="monitor",
        action="append",
        default=[],
        metavar="ADDR",
        help="human monitor address, as -qmp (default stdio: this terminal)",
    )
    run.add_argument(
        "--strict-order",
        action="store_true",
        help="answer each client's requests one at a time, in order, as QEMU does (default: "
        "only requests without an id wait for the ones before them)",
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log sessions (who connects and leaves) and failed commands; twice (-vv): "
        "every command too",
    )
    run.add_argument(
        "--log", metavar="FILE", help="write the log to FILE (appended) instead of stderr"
    )
    return parser


def _log_command_trace(name: str, info: Mapping[str, object]) -> None:
    """The tracer of ``-v``: the monitor logs its own traces, but commands reach the tracer only."""
    if name.startswith("command."):
        log_trace(name, info)


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


async def run_machine(options: argparse.Namespace) -> int:
    """Start the machine and its monitors; return the exit status when it goes away."""
    monitor = Monitor(
        options.name,
        strict_order=options.strict_order,
        tracer=_log_command_trace if options.verbose else None,
    )
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
    snapshots = SnapshotStore(options.state_dir)
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

    services = register_machine_commands(
        monitor, machine, snapshots, on_exit=exit_machine, no_shutdown=options.no_shutdown
    )
    qmp_addresses = list(options.qmp)
    default_socket = not qmp_addresses
    if default_socket:
        directory = default_socket_dir()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        qmp_addresses.append(f"unix:{directory}/{options.name}.qmp,server=on,wait=off")
    try:
        snapshots.open()
        shown: list[str] = []
        for text in qmp_addresses:
            address = parse_address(text)
            await monitor.serve(address)
            if address.transport in ("unix", "tcp") and address.server:
                shown += _where("QMP", monitor.listeners[-1].bound_address)
        register_human_monitor_command(monitor)
        human_texts = options.monitor or (["stdio"] if "stdio" not in qmp_addresses else [])
        human_addresses = [parse_address(text) for text in human_texts]
        for address in human_addresses:
            if address.transport != "stdio":
                await serve_human(monitor, address, interactive=False)
                if address.transport in ("unix", "tcp") and address.server:
                    shown += _where("HMP", monitor.listeners[-1].bound_address)
        shown.append(f"qmonitor: snapshots in {snapshots.directory}")
        print("\n".join(shown), file=sys.stderr, flush=True)
        for address in human_addresses:  # the console last: its banner follows these lines
            if address.transport == "stdio":
                await serve_human(monitor, address, interactive=sys.stdin.isatty())
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


def _event_loop_runner() -> asyncio.Runner:
    with contextlib.suppress(ImportError):
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def _ensure_standard_streams() -> None:
    """Put /dev/null on standard descriptors we were started without.

    Otherwise the first socket we open becomes descriptor 0, 1 or 2, and libuv (uvloop) aborts
    the process when it closes it; and a closed stdin would read as "no console".
    """
    for fileno, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fileno)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fileno:
                os.dup2(opened, fileno)
                os.close(opened)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fileno, mode, closefd=False))  # noqa: SIM115 - process-long


def _check_options(options: argparse.Namespace) -> None:
    """Turn option values into what the machine takes; :class:`OptionError` for a bad one."""
    options.ram_size = ram_size(options.ram_size)
    if not options.qmp:
        check_file_name(options.name)
    if options.state_dir is None:
        check_file_name(options.name)
        options.state_dir = default_state_dir(options.name)


def _configure_logging(options: argparse.Namespace) -> None:
    levels = {0: logging.WARNING, 1: logging.INFO}
    try:
        logging.basicConfig(
            level=levels.get(options.verbose, logging.DEBUG),
            format="%(asctime)s %(name)s %(levelname)s: %(message)s",
            filename=options.log,
        )
    except OSError as exc:
        raise OptionError(f"--log {options.log}: {exc.strerror}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qmonitor`` console script."""
    _ensure_standard_streams()
    options = build_parser().parse_args(argv)
    try:
        _check_options(options)
        _configure_logging(options)
    except OptionError as exc:
        print(f"qmonitor: {exc}", file=sys.stderr)
        return 1
    with _event_loop_runner() as runner:
        return runner.run(run_machine(options))


if __name__ == "__main__":
    sys.exit(main())
