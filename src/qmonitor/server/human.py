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

Human sessions end when the monitor closes (:meth:`Monitor.close`).

:func:`register_human_monitor_command` adds QMP's ``human-monitor-command`` (qapi/misc.json),
which runs one line and returns its text with ``\\r\\n`` line ends; a command's error is part of
that text (``Error: ...``), not a QMP error, as in QEMU.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from qmonitor.core.errors import QMPError
from qmonitor.hmp.builtins import register_hmp_builtins
from qmonitor.hmp.table import command_table
from qmonitor.server.hmp_session import CapturedSession, HMPSession, HumanSession
from qmonitor.server.listen import (
    Address,
    AddressError,
    connect_out,
    describe_peer,
    parse_address,
    start_listener,
)
from qmonitor.server.monitor import Monitor
from qmonitor.server.stdio import connect_stdio

SessionHook = Callable[[HumanSession], None]


def _session_hooks(monitor: Monitor) -> tuple[SessionHook, SessionHook]:
    """``on_open``/``on_close`` of a human session: the monitor closes it, and traces it."""

    def opened(session: HumanSession) -> None:
        monitor.human_sessions.add(session)
        transport = session.transport if isinstance(session, HMPSession) else None
        monitor._trace_session_opened("HMP", session, describe_peer(transport))

    def closed(session: HumanSession) -> None:
        monitor.human_sessions.discard(session)
        monitor._trace_session_closed(session)

    return opened, closed


async def _serve_stdio_plain(monitor: Monitor) -> None:
    """QEMU's byte protocol on stdin/stdout (``-monitor stdio`` without a terminal)."""
    opened, closed = _session_hooks(monitor)
    session = HMPSession(monitor, on_open=opened, on_close=closed, close_at_eof=False)
    await connect_stdio(session, eof_is_hangup=False)


async def serve_human(monitor: Monitor, address: str | Address, *, interactive: bool) -> None:
    """Serve the human monitor on ``address`` (see the module docstring); returns once serving.

    Raises :class:`AddressError` for an address that cannot serve, ``OSError`` when binding or
    connecting fails, and ValueError when a command's human syntax is unusable (checked here,
    before anyone types).
    """
    register_hmp_builtins(monitor.registry)
    command_table(monitor.registry)
    parsed = parse_address(address) if isinstance(address, str) else address
    opened, closed = _session_hooks(monitor)

    def factory() -> HMPSession:
        return HMPSession(monitor, interactive=interactive, on_open=opened, on_close=closed)

    if parsed.transport == "none":
        return
    if parsed.transport == "stdio":
        if interactive and sys.stdin.isatty() and sys.stdout.isatty():
            from qmonitor.server.console import start_console

            start_console(monitor, opened, closed)
        else:
            await _serve_stdio_plain(monitor)
    elif parsed.server:
        monitor.listeners.append(await start_listener(parsed, factory))
    elif parsed.transport in ("unix", "tcp"):
        await connect_out(parsed, factory)
    else:
        raise AddressError(f"cannot serve the human monitor on '{address}'")


CPU_INDEX_ERROR = "Parameter 'cpu-index' expects a CPU number"
"""QEMU's ``QERR_INVALID_PARAMETER_VALUE`` for a cpu-index that names no CPU."""


def register_human_monitor_command(monitor: Monitor) -> None:
    """Add ``human-monitor-command`` to QMP and ``help``/``info`` to the human monitor."""
    register_hmp_builtins(monitor.registry)
    if "human-monitor-command" in monitor.registry:
        return

    @monitor.command(name="human-monitor-command")
    async def human_monitor_command(command_line: str, cpu_index: int | None = None) -> str:
        """Execute a command on the human monitor and return the output.

        The output is the text a person would see, ``\\r\\n`` line ends, errors included as
        text (``Error: ...``). ``cpu-index`` selects QEMU's current CPU for commands that use
        one; the monitor emulates a machine without CPUs (QEMU's ``-machine none``), where any
        index is refused with QEMU's error.
        """
        if cpu_index is not None:
            raise QMPError(CPU_INDEX_ERROR)
        return await CapturedSession(monitor).run(command_line)
