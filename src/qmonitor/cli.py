"""The ``qmonitor`` program's command line: parsing and checking only; the work is in the library
and in :mod:`qmonitor.machine.run`.

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
import sys
from collections.abc import Sequence
from typing import Final

from qmonitor import __version__
from qmonitor.core.errors import QMonitorError
from qmonitor.machine.machine import parse_size
from qmonitor.machine.run import DEFAULT_DIRTY_RATE, default_state_dir, run_machine
from qmonitor.server.monitor import DEFAULT_VERSION

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

# -- what ``qmonitor run`` says about bad option values -----------------------------------------
# QEMU's texts where QEMU refuses the value; ours where QEMU has none (it takes any -name). All
# in one place, for a QEMU command-line parser to take over.

SIZE_EXPECTED: Final = "Parameter 'size' expects a non-negative number below 2^64"
"""util/qemu-option.c ``parse_option_size``: QEMU's text for a ``-m`` that is not a size."""

RAM_ABOVE_LIMIT: Final = "cannot model more than {limit} of RAM"
"""QEMU's wording for a board's RAM limit (hw/arm/sbsa-ref.c, with ``size_to_str``)."""


NAME_NOT_A_FILE_NAME: Final = (
    "the name names the QMP socket (NAME.qmp) and the snapshot directory, so it cannot be "
    "empty, '.' or '..', or contain '/'"
)


class OptionError(QMonitorError):
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


def _rate(text: str) -> int:
    """``--dirty-rate``: bytes per second, with an optional K/M/G suffix."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _MonitorAddress(argparse.Action):
    """``-qmp``/``-monitor``: kept with their kind, in command-line order, in ``monitors``.

    QEMU names the monitors' chardevs ``compat_monitorN`` in that order (softmmu/vl.c
    ``monitor_parse``), which ``query-yank`` shows, so they are served in that order.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        namespace.monitors = [*namespace.monitors, (self.dest, values)]


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
    run.set_defaults(monitors=[])
    run.add_argument(
        "-qmp",
        dest="qmp",
        action=_MonitorAddress,
        metavar="ADDR",
        help="QMP monitor address, QEMU syntax, repeatable: unix:PATH,server=on,wait=off, "
        "tcp:HOST:PORT,server=on,wait=off, unix:PATH (connect out), stdio, none",
    )
    run.add_argument(
        "-monitor",
        dest="monitor",
        action=_MonitorAddress,
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
        "--profile",
        metavar="FILE",
        help="capability profile answering the probe queries (default: the QEMU 7.2 one)",
    )
    run.add_argument(
        "--faults",
        metavar="FILE",
        help='inject faults: a JSON file {"faults": [RULE, ...]} (docs/TESTING.md)',
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
    add_security_options(run)
    add_profile_parser(verbs)
    add_record_parser(verbs)
    add_replay_parser(verbs)
    add_transcript_parser(verbs)
    return parser


def add_security_options(run: argparse.ArgumentParser) -> None:
    """``qmonitor run``'s options of issue 9 (docs/SECURITY.md), each a plain ``--OPTION``."""
    run.add_argument(
        "--policy",
        metavar="FILE",
        help="roles policy (TOML): which commands each connection may run",
    )
    run.add_argument(
        "--audit-log",
        metavar="FILE",
        help="append one JSON record per session and request to FILE (mode 0600)",
    )
    run.add_argument(
        "--allow-path",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory migrate file: URIs may use (repeatable; the state directory always)",
    )
    run.add_argument(
        "--allow-insecure-tcp",
        action="store_true",
        help="serve a TCP monitor on a non-loopback address without TLS",
    )


def add_profile_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``qmonitor profile capture``: record a real QEMU's answers (machine/capture.py)."""
    profile = verbs.add_parser("profile", help="capability profiles captured from a real QEMU")
    actions = profile.add_subparsers(dest="profile_action", required=True)
    capture = actions.add_parser(
        "capture", help="run a QEMU binary, send it the probe queries, write its replies"
    )
    capture.add_argument("--qemu", required=True, metavar="BINARY", help="QEMU to capture")
    capture.add_argument("-o", "--output", required=True, metavar="FILE", help="profile to write")
    capture.add_argument(
        "--accel", default="tcg", help="accelerator QEMU runs with (default tcg: host-neutral)"
    )
    capture.add_argument(
        "--machine",
        action="append",
        metavar="TYPE",
        help="machine type to capture besides the probe's 'none' (repeatable; default pc, q35)",
    )


def add_record_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``qmonitor record``: a proxy writing a transcript (testing/record.py)."""
    record = verbs.add_parser(
        "record", help="proxy a QEMU's QMP socket and write what passes to a transcript"
    )
    upstream = record.add_mutually_exclusive_group(required=True)
    upstream.add_argument(
        "--qemu", metavar="COMMAND", help="QEMU command line to run (a -qmp of ours is added)"
    )
    upstream.add_argument(
        "--connect", metavar="ADDR", help="QMP socket of a running QEMU (unix:PATH, tcp:H:P)"
    )
    record.add_argument(
        "-qmp", required=True, metavar="ADDR", help="where clients connect (unix:P,server=on,...)"
    )
    record.add_argument("-o", "--output", required=True, metavar="FILE", help="transcript")
    record.add_argument("--force", action="store_true", help="replace an existing FILE")


def add_replay_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``qmonitor replay``: serve a transcript (testing/replay.py)."""
    replay = verbs.add_parser("replay", help="serve a transcript as the recorded QEMU")
    replay.add_argument("file", metavar="FILE", help="transcript, or a libvirt .replies file")
    replay.add_argument("-qmp", required=True, metavar="ADDR", help="where to listen")
    replay.add_argument(
        "--strict", action="store_true", help="requests must come in the recorded order"
    )


def add_transcript_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``qmonitor transcript``: show a transcript (testing/transcript_view.py)."""
    view = verbs.add_parser("transcript", help="print a transcript as a timeline")
    view.add_argument("file", metavar="FILE", help="transcript, or a libvirt .replies file")
    view.add_argument("--json", action="store_true", help="print the transcript as JSON lines")
    view.add_argument("--full", action="store_true", help="do not shorten long messages")


def profile_command(options: argparse.Namespace) -> int:
    """Run ``qmonitor profile capture``; a failure is one line on stderr and status 1."""
    from qmonitor.machine.capture import CaptureError, capture, write_profile
    from qmonitor.machine.profile import CAPTURED_MACHINES

    machines = options.machine or list(CAPTURED_MACHINES)
    try:
        profile = asyncio.run(capture(options.qemu, accel=options.accel, machines=machines))
        write_profile(profile, options.output)
    except (CaptureError, OSError) as exc:
        print(f"qmonitor: profile capture: {exc}", file=sys.stderr)
        return 1
    replies = len(profile["probe"]["replies"]) + sum(
        len(entry["replies"]) for entry in profile["machines"].values()
    )
    print(f"qmonitor: wrote {options.output} ({replies} replies)", file=sys.stderr)
    return 0


def testing_command(options: argparse.Namespace) -> int:
    """Run ``qmonitor record``, ``replay`` or ``transcript`` (the qmonitor.testing package)."""
    if options.verb == "record":
        from qmonitor.testing.record import record_command

        return record_command(
            qemu=options.qemu,
            connect=options.connect,
            qmp=options.qmp,
            output=options.output,
            force=options.force,
        )
    if options.verb == "replay":
        from qmonitor.testing.replay import replay_command

        return replay_command(options.file, options.qmp, strict=options.strict)
    from qmonitor.testing.transcript_view import transcript_command

    return transcript_command(options.file, as_json=options.json, full=options.full)


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
    if all(kind != "qmp" for kind, _ in options.monitors):
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
    if options.verb == "profile":
        return profile_command(options)
    if options.verb in ("record", "replay", "transcript"):
        return testing_command(options)
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
