"""QEMU's commands for passed file descriptors: ``getfd``, ``closefd``, ``add-fd``, ``remove-fd``,
``query-fdsets`` (qapi/misc.json, monitor/misc.c), with QEMU's error texts.

A descriptor comes with the command's message over a unix socket (SCM_RIGHTS); where it is
kept, and which command gets it, is :mod:`qmonitor.server.fds`. ``getfd`` and ``closefd`` are
human monitor commands too (hmp-commands.hx); a human monitor on a unix socket receives
descriptors as a QMP one does. ``human-monitor-command`` runs its line in a monitor of its own
that has no socket and no names, as QEMU's temporary monitor: ``getfd`` there always says no
descriptor came, ``closefd`` finds nothing.

:func:`named_fds` gives the names of the monitor a command came from, for ``migrate fd:NAME``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from qmonitor.core.commands import Context, HumanSyntax
from qmonitor.core.errors import QMPError
from qmonitor.server.fds import NO_FD_SUPPLIED, NamedFds, take_received_fd
from qmonitor.server.fdset_info import AddfdInfo, FdsetFdInfo, FdsetInfo
from qmonitor.server.qmp_session import QMPSession

if TYPE_CHECKING:
    from qmonitor.server.monitor import Monitor

FDNAME_STARTS_WITH_DIGIT = "Parameter 'fdname' expects a name not starting with a digit"
"""monitor/misc.c ``qmp_getfd``: QERR_INVALID_PARAMETER_VALUE; such names are descriptor
numbers to ``monitor_fd_param``."""


def named_fds(monitor: Monitor, session: object) -> NamedFds:
    """The named descriptors of the monitor (chardev) ``session`` is served on."""
    owner = next((chardev for chardev in monitor.chardevs if chardev.serves(session)), None)
    return monitor.fds.named(owner)


def _take_received(ctx: Context) -> int:
    """The descriptor that came for this command (``qemu_chr_fe_get_msgfd``), or QEMU's error."""
    session = ctx.session
    fd = None
    if isinstance(session, QMPSession):
        fd = take_received_fd(session.transport, session.unparsed_input_bytes)
    else:
        # The human sessions' module is loaded by the first human session, not by a QMP-only
        # program (start-up time).
        from qmonitor.server.hmp_session import HMPSession

        if isinstance(session, HMPSession):
            fd = take_received_fd(session.transport, session.unparsed_input_bytes)
    if fd is None:
        raise QMPError(NO_FD_SUPPLIED)
    return fd


def register_fd_commands(monitor: Monitor) -> None:
    """Add the descriptor commands to ``monitor`` (once; later calls do nothing)."""
    if "getfd" in monitor.registry:
        return
    command = monitor.command
    fdsets = monitor.fds.fdsets

    @command(
        name="getfd",
        hmp=HumanSyntax(
            name="getfd",
            args_type="fdname:s",
            params="getfd name",
            help="receive a file descriptor via SCM rights and assign it a name",
        ),
    )
    def getfd(fdname: str, ctx: Context) -> None:
        """Receive a file descriptor via SCM rights and assign it a name.

        A descriptor that had the name is closed and replaced. The checks come in QEMU's order:
        no descriptor first, then a name starting with a digit (the descriptor is closed).
        """
        fd = _take_received(ctx)
        if fdname[:1].isdigit() and fdname[:1].isascii():
            os.close(fd)
            raise QMPError(FDNAME_STARTS_WITH_DIGIT)
        named_fds(monitor, ctx.session).add(fdname, fd)

    @command(
        name="closefd",
        hmp=HumanSyntax(
            name="closefd",
            args_type="fdname:s",
            params="closefd name",
            help="close a file descriptor previously passed via SCM rights",
        ),
    )
    def closefd(fdname: str, ctx: Context) -> None:
        """Close a file descriptor previously passed via SCM rights."""
        named_fds(monitor, ctx.session).close_named(fdname)

    @command(name="add-fd")
    def add_fd(ctx: Context, fdset_id: int | None = None, opaque: str | None = None) -> AddfdInfo:
        """Add a file descriptor, that was passed via SCM rights, to an fd set.

        Without ``fdset-id`` a new set is made, with the lowest free id. The list of fd sets
        is shared by all monitor connections.
        """
        fd = _take_received(ctx)
        try:
            return AddfdInfo(fdsets.add(fd, fdset_id, opaque), fd)
        except QMPError:
            os.close(fd)
            raise

    @command(name="remove-fd")
    def remove_fd(fdset_id: int, fd: int | None = None) -> None:
        """Remove a file descriptor from an fd set (without ``fd``: all of them).

        As in QEMU 7.2, a removed descriptor is closed, and leaves ``query-fdsets``, only
        while the guest runs; otherwise at the next clean-up that finds it running.
        """
        fdsets.remove(fdset_id, fd, running=monitor.fds.vm_running())

    @command(name="query-fdsets")
    def query_fdsets() -> list[FdsetInfo]:
        """Return information describing all fd sets (highest id first)."""
        return [
            FdsetInfo(fdset_id, [FdsetFdInfo(fd, opaque) for fd, opaque in members])
            for fdset_id, members in fdsets.query()
        ]
