"""The ``qmonitor`` program's command line: parsing and checking only; the work is in the library
and in :mod:`qmonitor.machine.run`.

``qmonitor run`` takes QEMU's command line, read by :mod:`qmonitor.cmdline` as QEMU 7.2 reads
it (:mod:`qmonitor.launch` wires it to the machine), plus our own ``--double-dash`` options.
Everything is checked before anything is created, and a bad value is reported on one line,
``qmonitor: OPTION VALUE: TEXT`` (the location prefix QEMU's ``error_report`` gives command-line
errors), with QEMU's text where QEMU refuses the value; then the program exits with status 1,
as QEMU does. The other verbs (``profile``, ``record``, ``replay``, ``transcript``) use argparse.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from qmonitor import __version__
from qmonitor.form import running_form
from qmonitor.launch import LaunchError, ensure_standard_streams, event_loop_runner
from qmonitor.server.monitor import DEFAULT_VERSION

DESCRIPTION = """\
QEMU's monitor, rebuilt in Python: a QMP server that QEMU's own clients (qemu.qmp, qmp-shell,
libvirt-style tools) drive as they would drive QEMU, and QEMU's human monitor."""


RUN_HELP = """\
usage: qmonitor run [QEMU options] [--state-dir DIR] [--dirty-rate RATE] [--strict-order]
                    [--profile FILE] [--verbose [--verbose]] [--log FILE]

Run the reference machine: a simulated VM whose guest keeps writing its RAM, with snapshots
and live migration, behind QEMU's monitors. The options are QEMU's, read as QEMU 7.2 reads
them (docs/STANDIN.md), and qmonitor's own with two dashes. Without a QMP monitor (-qmp, -mon
mode=control), a QMP socket is created in $XDG_RUNTIME_DIR/qmonitor/NAME.qmp (or
/tmp/qmonitor-UID/); without -monitor, the human monitor is on this terminal. SIGTERM, SIGHUP,
SIGINT and 'quit' shut down cleanly.

QEMU options most used here:
  -name NAME            machine name (default vm0)
  -m SIZE               guest RAM: MiB, or with a K/M/G/T suffix (default 128M, at most 16G)
  -smp N,...            CPUs; -uuid UUID; -machine TYPE; -cpu MODEL
  -S                    start paused
  -incoming URI|defer   wait for an incoming migration (tcp:HOST:PORT, unix:PATH, file:PATH)
  -no-shutdown          stay in 'shutdown' when the guest powers off instead of exiting
  -qmp ADDR             QMP monitor, repeatable: unix:PATH,server=on,wait=off,
                        tcp:HOST:PORT,server=on,wait=off, unix:PATH (connect out), stdio
  -monitor ADDR         human monitor, as -qmp, or none (default: this terminal)
  -chardev socket,id=ID,path=P|host=H,port=N|fd=N[,server=on,wait=off] -mon ID,mode=control
  -help, -version       this help; the version

qmonitor's own options:
  --state-dir DIR       where snapshots are kept (default $XDG_STATE_HOME/qmonitor/vms/NAME)
  --dirty-rate RATE     bytes of guest RAM the workload writes per second while running, with
                        a K/M/G suffix (default 16M; 0: an idle guest)
  --strict-order        answer each client's requests one at a time, in order, as QEMU does
                        (default: only requests without an id wait for the ones before them)
  --profile FILE        capability profile answering the probe queries (default: QEMU 7.2's)
  --verbose             log sessions (who connects and leaves) and failed commands; twice:
                        every command too
  --log FILE            write the log to FILE (appended) instead of stderr

examples:
  qmonitor run                                    the console here; the QMP socket is printed
  qmonitor run -name big -m 1G --dirty-rate 64M   a bigger machine, a busier guest
  qmonitor run -name dst -S -incoming tcp:127.0.0.1:4444
                                                  wait, paused, for a live migration
  qmonitor run -qmp unix:/tmp/vm.qmp,server=on,wait=off -monitor none --dirty-rate 0
                                                  QMP only, on a socket of your choice, idle

qmonitor-system-x86_64 takes the same options with QEMU's defaults (no default monitor, an
idle guest, -pidfile, -daemonize). docs/MACHINE.md in the source describes the machine,
docs/HMP.md the human monitor, docs/STANDIN.md the stand-in.
"""


def version_text() -> str:
    """What ``--version`` prints: the version, QEMU's it answers as, and the form running
    (pure Python or compiled: qmonitor.form)."""
    qemu = DEFAULT_VERSION["qemu"]
    return (
        f"qmonitor {__version__} (QEMU {qemu['major']}.{qemu['minor']}.{qemu['micro']}'s monitor; "
        f"{running_form()})"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the verbs other than ``run`` (which takes QEMU's options)."""
    parser = argparse.ArgumentParser(prog="qmonitor", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=version_text())
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    verbs.add_parser(
        "run",
        help="run the reference machine (a simulated VM) with its monitors; "
        "'qmonitor run --help' lists its options",
        add_help=False,
    )
    add_profile_parser(verbs)
    add_record_parser(verbs)
    add_replay_parser(verbs)
    add_transcript_parser(verbs)
    return parser


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


def _configure_logging(verbose: int, log: str | None) -> None:
    levels = {0: logging.WARNING, 1: logging.INFO}
    try:
        logging.basicConfig(
            level=levels.get(verbose, logging.DEBUG),
            format="%(asctime)s %(name)s %(levelname)s: %(message)s",
            filename=log,
        )
    except OSError as exc:
        raise LaunchError(f"--log {log}: {exc.strerror}") from None


def run_command(arguments: Sequence[str]) -> int:
    """``qmonitor run``: QEMU's command line (:mod:`qmonitor.launch`), a person's defaults."""
    from qmonitor.cmdline import CommandLineError
    from qmonitor.launch import RUN_OWN_OPTIONS, print_reports, read_command_line, run_launch
    from qmonitor.machine.run import run_machine

    try:
        command_line, objects = read_command_line(arguments, RUN_OWN_OPTIONS)
    except CommandLineError as error:
        sys.stderr.write(error.render("qmonitor"))
        return 1
    print_reports(command_line.reports, "qmonitor")
    if command_line.help:
        sys.stdout.write(RUN_HELP)
        return 0
    if command_line.version:
        print(version_text())
        return 0
    try:
        launch = run_launch(command_line, objects)
        _configure_logging(launch.verbose, launch.log)
    except LaunchError as exc:
        print(f"qmonitor: {exc}", file=sys.stderr)
        return 1
    with event_loop_runner() as runner:
        return runner.run(run_machine(launch.plan))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qmonitor`` console script."""
    ensure_standard_streams()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["run"]:
        return run_command(arguments[1:])
    options = build_parser().parse_args(arguments)
    if options.verb == "profile":
        return profile_command(options)
    return testing_command(options)


if __name__ == "__main__":
    sys.exit(main())
