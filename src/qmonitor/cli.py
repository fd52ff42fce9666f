"""``qmonitor`` command line: argument parsing only; the work is in the library."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from qmonitor.machine.machine import parse_size
from qmonitor.machine.run import run_machine


def _ram_size(text: str) -> int:
    """QEMU's ``-m``: MiB without a suffix."""
    try:
        return parse_size(text, default_suffix="M")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; options share QEMU's spellings where QEMU has them."""
    parser = argparse.ArgumentParser(prog="qmonitor", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="run the reference machine with its monitors")
    run.add_argument("-name", dest="name", default="vm0", help="machine name (default vm0)")
    run.add_argument(
        "-m",
        dest="ram_size",
        type=_ram_size,
        default=128 << 20,
        metavar="SIZE",
        help="guest RAM size (MiB, or with a K/M/G suffix; default 128M)",
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
        default=0,
        metavar="RATE",
        help="bytes of guest RAM the workload writes per second while running (K/M/G)",
    )
    run.set_defaults(monitors=[])
    run.add_argument(
        "-qmp",
        dest="qmp",
        action=_MonitorAddress,
        metavar="ADDR",
        help="QMP monitor address (QEMU syntax, repeatable)",
    )
    run.add_argument(
        "-monitor",
        dest="monitor",
        action=_MonitorAddress,
        metavar="ADDR",
        help="human monitor address (QEMU syntax, repeatable)",
    )
    run.add_argument("--strict-order", action="store_true", help="QEMU's one-at-a-time order")
    run.add_argument(
        "--profile",
        metavar="FILE",
        help="capability profile answering the probe queries (default: the QEMU 7.2 one)",
    )
    run.add_argument("-v", "--verbose", action="count", default=0)
    add_profile_parser(verbs)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qmonitor`` console script."""
    _ensure_standard_streams()
    options = build_parser().parse_args(argv)
    if options.verb == "profile":
        return profile_command(options)
    logging.basicConfig(
        level=logging.DEBUG
        if options.verbose > 1
        else logging.INFO
        if options.verbose
        else logging.WARNING,
        format="qmonitor: %(levelname)s %(name)s: %(message)s",
    )
    with _event_loop_runner() as runner:
        return runner.run(run_machine(options))


if __name__ == "__main__":
    sys.exit(main())
