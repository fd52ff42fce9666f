"""Serving the human monitor: sockets, stdio, the console, and ``human-monitor-command``.

:func:`serve_human` takes QEMU's ``-monitor`` address syntax (:mod:`qmonitor.server.listen`):

- ``unix:PATH,server=on,wait=off`` / ``tcp:HOST:PORT,server=on,wait=off``: a listener; every
  connection is a session of its own, as plain text with QEMU's echo, usable with ``socat`` or
  ``nc`` (QEMU serves one connection per ``-monitor`` socket; here they do not queue);
- ``unix:PATH`` / ``tcp:HOST:PORT`` without ``server``: connect out to a listening client;
- ``stdio``: the interactive console (:mod:`qmonitor.server.console`) when ``interactive`` and
  standard input and output are a terminal, else QEMU's byte protocol on standard input and
  output (either may be a pipe or a regular file: ``qmonitor run < commands > transcript``);
- ``none``: nothing.

``interactive`` also asks socket sessions for the extras of the console (progress lines,
events, outcome of detached commands); without it they behave exactly as QEMU's.

Human sessions end when the monitor closes (:meth:`Monitor.close`). Each address served is a
chardev named as QEMU names it (:mod:`qmonitor.server.chardev`), in one count with QMP's.

:func:`register_human_monitor_command` adds QMP's ``human-monitor-command`` (qapi/misc.json),
which runs one line and returns its text with ``\\r\\n`` line ends; a command's error is part of
that text (``Error: ...``), not a QMP error, as in QEMU.

Every human monitor also has (:func:`register_human_commands`): QEMU's ``help``, ``info`` and
``info version`` (``hmp_info_version``: ``MAJOR.MINOR.MICROPACKAGE`` from ``query-version``), and
our ``events [on|off]``, which shows or hides QMP events in the session that types it (QEMU's
human monitor shows none: off by default except at the console).

:func:`report_error` prints what no command asked for (QEMU's ``error_report`` outside a
command) on standard error, clear of the console's prompt.

The human sessions (:mod:`qmonitor.server.hmp_session`: the parser, the renderer, the line
editor) are imported when a human monitor is served or ``human-monitor-command`` first runs,
not with this module: a QMP-only stand-in starts without them (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from qmonitor.core.commands import Context, HumanSyntax
from qmonitor.core.errors import QMPError
from qmonitor.server.listen import (
    Address,
    AddressError,
    connect_out,
    describe_peer,
    parse_address,
    start_listener,
)
from qmonitor.server.monitor import Monitor
from qmonitor.server.peer import Admit, gated
from qmonitor.server.stdio import connect_stdio

if TYPE_CHECKING:
    from qmonitor.server.hmp_session import HMPSession, HumanSession

SessionHook = Callable[["HumanSession"], None]


def _session_hooks(monitor: Monitor) -> tuple[SessionHook, SessionHook]:
    """``on_open``/``on_close`` of a human session: the monitor closes it, and traces it."""

    from qmonitor.server.hmp_session import HMPSession

    def opened(session: HumanSession) -> None:
        monitor.human_sessions.add(session)
        transport = session.transport if isinstance(session, HMPSession) else None
        monitor.trace_session_opened("hmp", session, describe_peer(transport))

    def closed(session: HumanSession) -> None:
        monitor.human_session_closed(session)
        monitor.trace_session_closed(session)

    return opened, closed


async def _serve_stdio_plain(monitor: Monitor) -> None:
    """QEMU's byte protocol on stdin/stdout (``-monitor stdio`` without a terminal)."""
    from qmonitor.server.hmp_session import HMPSession

    opened, closed = _session_hooks(monitor)
    session = HMPSession(monitor, on_open=opened, on_close=closed, close_at_eof=False)
    await connect_stdio(session)


async def serve_human(
    monitor: Monitor,
    address: str | Address,
    *,
    interactive: bool,
    tls: ssl.SSLContext | None = None,
    admit: Admit | None = None,
    label: str | None = None,
) -> None:
    """Serve the human monitor on ``address`` (see the module docstring); returns once serving.

    A listener takes ``tls`` and ``admit`` as :meth:`Monitor.listen` does (and under a policy
    refuses a client without a role, before the banner).

    Raises :class:`AddressError` for an address that cannot serve, ``OSError`` when binding or
    connecting fails, and ValueError when a command's human syntax is unusable (checked here,
    before anyone types).
    """
    from qmonitor.hmp.table import command_table
    from qmonitor.server.hmp_session import HMPSession

    register_human_commands(monitor)
    command_table(monitor.registry)
    parsed = parse_address(address) if isinstance(address, str) else address
    opened, closed = _session_hooks(monitor)

    def factory() -> HMPSession:
        return HMPSession(monitor, interactive=interactive, on_open=opened, on_close=closed)

    if parsed.transport == "none":
        return
    monitor.check_exposure(parsed, tls=tls is not None)
    chardev = monitor.open_chardev(parsed, label)  # counted like QEMU's -monitor, stdio too
    try:
        if parsed.transport == "stdio":
            if interactive and sys.stdin.isatty() and sys.stdout.isatty():
                from qmonitor.server.console import start_console

                start_console(monitor, opened, closed)
            else:
                await _serve_stdio_plain(monitor)
        elif parsed.server:
            protocols: Callable[[], asyncio.Protocol] = chardev.track(factory)
            check = monitor.admission(admit)
            if check is not None:
                protocols = gated(protocols, check)
            monitor.listeners.append(await start_listener(parsed, protocols, tls=tls))
        elif parsed.transport in ("unix", "tcp", "fd"):
            await connect_out(parsed, chardev.track(factory))
        else:
            raise AddressError(f"cannot serve the human monitor on '{address}'")
    except BaseException:
        monitor.close_chardev(chardev)
        raise


def human_session_factory(monitor: Monitor) -> Callable[[], HMPSession]:
    """Sessions of a human monitor served on a chardev backend (a pty, a pipe, a file, a
    ring: :mod:`qmonitor.server.backends`), QEMU's byte protocol as on a socket."""
    from qmonitor.hmp.table import command_table
    from qmonitor.server.hmp_session import HMPSession

    register_human_commands(monitor)
    command_table(monitor.registry)
    opened, closed = _session_hooks(monitor)
    return lambda: HMPSession(monitor, interactive=False, on_open=opened, on_close=closed)


@runtime_checkable
class CpuSelection(Protocol):
    """What keeps a monitor's current CPU: a chardev (:class:`qmonitor.server.chardev.Chardev`)
    or a session that is a monitor of its own."""

    cpu_index: int | None


def cpu_selection(monitor: Monitor, session: object) -> CpuSelection:
    """Where the current CPU of the monitor ``session`` is served on is kept.

    QEMU keeps it per monitor (``mon->mon_cpu_path``, monitor/hmp.c ``monitor_set_cpu``), so
    it outlives a client of a socket monitor: here the chardev the session is served on. A
    session served on none is a monitor of its own (``human-monitor-command``'s temporary one,
    whose CPU is its ``cpu-index``; the console) and keeps it itself.
    """
    owner = next((chardev for chardev in monitor.chardevs if chardev.serves(session)), None)
    if owner is not None:
        return owner
    assert isinstance(session, CpuSelection)
    return session


CPU_INDEX_ERROR = "Parameter 'cpu-index' expects a CPU number"
"""QEMU's ``QERR_INVALID_PARAMETER_VALUE`` for a cpu-index that names no CPU."""

EVENTS_SYNTAX = HumanSyntax(
    name="events",
    args_type="state:b?",
    params="[on|off]",
    help="show or hide QMP events in this session (without argument: say which)",
)


def register_human_commands(monitor: Monitor) -> None:
    """Add ``help``, ``info``, ``info version`` and ``events`` (once; later calls do nothing)."""
    from qmonitor.hmp.builtins import register_hmp_builtins  # with its table and parser

    register_hmp_builtins(monitor.registry, monitor.commands_for)
    if "hmp-events" in monitor.registry:
        return

    @monitor.command(
        name="hmp-info-version",
        qmp=False,
        hmp=HumanSyntax(name="info version", help="show the version of QEMU"),
    )
    def info_version() -> str:
        """``hmp_info_version``: ``query-version`` as ``7.2.22PACKAGE`` (no space, as QEMU)."""
        version = monitor.version_info
        triple = version["qemu"]
        return f"{triple['major']}.{triple['minor']}.{triple['micro']}{version['package']}\n"

    @monitor.command(name="hmp-events", qmp=False, hmp=EVENTS_SYNTAX)
    def events(ctx: Context, state: bool | None = None) -> str:
        """Show or hide QMP events, one line each above the prompt, in this session only."""
        from qmonitor.server.hmp_session import HumanSession

        session = ctx.session
        if not isinstance(session, HumanSession) or not session.can_show_events:
            raise QMPError("this session ends with its command: it has no events to show")
        if state is None:
            return f"events: {'on' if session.events_shown else 'off'}\n"
        session.events_shown = state
        return ""


def report_error(monitor: Monitor, text: str) -> None:
    """Print ``text`` on standard error, as QEMU's ``error_report`` does outside a command.

    The console shares the terminal with standard error: it prints the text above its prompt
    and draws the prompt again, so the line is not glued to ``(qemu) ``.
    """
    from qmonitor.server.console import Console

    for session in monitor.human_sessions:
        if isinstance(session, Console):
            session.print_above_prompt(text, sys.stderr)
            return
    sys.stderr.write(text)
    sys.stderr.flush()


HUMAN_MONITOR_COMMANDS: Final = frozenset(
    {"help", "info", "hmp-info-version", "hmp-events", "human-monitor-command"}
)
"""What :func:`register_human_monitor_command` registers (``help`` and ``info`` are
:mod:`qmonitor.hmp.builtins`')."""


def register_human_monitor_command(
    monitor: Monitor, *, cpus: int = 0, deferred: bool = False
) -> None:
    """Add ``human-monitor-command`` to QMP and the human commands to the human monitor.

    ``cpus`` is how many CPUs the machine has: the ``cpu-index`` values that name one. With
    ``deferred`` they are registered when the registry is first iterated or asked for one of
    their names (:meth:`~qmonitor.core.commands.CommandRegistry.defer`): a client that never
    uses the human monitor does not load it (start-up time).
    """
    if deferred:
        monitor.registry.defer(
            lambda: register_human_monitor_command(monitor, cpus=cpus), HUMAN_MONITOR_COMMANDS
        )
        return
    register_human_commands(monitor)
    if "human-monitor-command" in monitor.registry:
        return

    @monitor.command(name="human-monitor-command")
    async def human_monitor_command(
        command_line: str, ctx: Context, cpu_index: int | None = None
    ) -> str:
        """Execute a command on the human monitor and return the output.

        The output is the text a person would see, ``\\r\\n`` line ends, errors included as
        text (``Error: ...``). ``cpu-index`` selects QEMU's current CPU for commands that use
        one: an index that names no CPU (any, on a machine without CPUs such as ``-machine
        none``) is refused with QEMU's error (monitor/hmp-cmds.c ``qmp_human_monitor_command``,
        ``monitor_set_cpu``); without it the line runs with the first CPU (``info cpus``).
        """
        if cpu_index is not None and not 0 <= cpu_index < cpus:
            raise QMPError(CPU_INDEX_ERROR)
        from qmonitor.server.hmp_session import CapturedSession

        session = CapturedSession(monitor, via=ctx.session)
        session.cpu_index = cpu_index
        return await session.run(command_line)
