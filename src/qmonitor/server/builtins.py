"""The commands every monitor has: negotiation, version, introspection, cancellation.

Which may run with ``exec-oob`` is QEMU's choice, not ours: none of QEMU's own here does
(qapi/control.json and qapi/introspect.json mark none ``allow-oob``; QEMU 7.2 marks only
``migrate-recover``, ``migrate-pause``, ``yank`` and ``query-yank``), so ``exec-oob`` of them gets
QEMU's ``The command NAME does not support OOB``. Our extension :data:`CANCEL_COMMAND` does, since
overtaking a blocked queue is what it is for.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol, TypedDict

from qmonitor.core.commands import Command, CommandRegistry, Context
from qmonitor.core.errors import ErrorClass, QMPError
from qmonitor.core.schema import QMPName
from qmonitor.core.session import Session
from qmonitor.qmp.capabilities import QMPCapability
from qmonitor.qmp.protocol import ALREADY_NEGOTIATED

CANCEL_COMMAND = "__io.github.qmonitor_cancel"
"""Our extension, named by the QMP spec's rule for downstream names ("__RFQDN_", section 7)."""


class VersionTriple(TypedDict):
    """qapi/control.json ``VersionTriple``.

    These results are TypedDicts, not dataclasses, as a Monitor makes its version before its
    greeting: a TypedDict is a plain dict, made without the :mod:`dataclasses` module nor a
    generated ``__init__`` (docs/PERFORMANCE.md, start-up, fourth round); the schema reads
    either the same way (:mod:`qmonitor.core.schema`).
    """

    major: int
    minor: int
    micro: int


class VersionInfo(TypedDict):
    """qapi/control.json ``VersionInfo``: the greeting's ``version`` and query-version."""

    qemu: VersionTriple
    package: str


class CommandInfo(TypedDict):
    """qapi/control.json ``CommandInfo``."""

    name: str


class BuiltinsHost(Protocol):
    """What the built-in commands read from the monitor they are registered on."""

    @property
    def registry(self) -> CommandRegistry: ...

    @property
    def version_info(self) -> VersionInfo: ...

    def commands_for(self, session: Session | None) -> list[Command]: ...

    def schema_for(self, session: Session | None) -> list[dict[str, Any]]: ...


def register_builtins(monitor: BuiltinsHost) -> None:
    """Add the built-in commands to ``monitor``'s registry.

    Their signatures are compiled at their first use whatever the registry's
    ``defer_signatures``: they are ours, compiled by every test of the schema, so compiling
    them at registration would find no error and only delay every Monitor's start (the
    stand-in's greeting).
    """
    registry = monitor.registry
    deferring = registry.defer_signatures
    registry.defer_signatures = True
    try:
        _register_builtins(monitor)
    finally:
        registry.defer_signatures = deferring


def _register_builtins(monitor: BuiltinsHost) -> None:
    command = monitor.registry.command

    @command(name="qmp_capabilities", hmp=None)
    def qmp_capabilities(enable: list[QMPCapability] | None = None) -> None:
        """Enable QMP capabilities and leave capabilities negotiation mode.

        In negotiation mode the connection runs this itself (qmonitor.qmp.protocol); once
        negotiated it is an ordinary command (its arguments are checked first), and QEMU's
        handler answers it with CommandNotFound (monitor/qmp-cmds-control.c
        ``qmp_qmp_capabilities``), as this one does.
        """
        raise QMPError(ALREADY_NEGOTIATED, ErrorClass.COMMAND_NOT_FOUND)

    @command(name="query-version")
    def query_version() -> VersionInfo:
        """Return the version of the monitor (the same object as the greeting's)."""
        return monitor.version_info

    @command(name="query-commands")
    def query_commands(ctx: Context) -> list[CommandInfo]:
        """Return the list of commands this monitor supports (under a roles policy: those the
        connection's role may run)."""
        return [CommandInfo(name=c.name) for c in monitor.commands_for(ctx.session) if c.qmp]

    @command(name="query-qmp-schema")
    def query_qmp_schema(ctx: Context) -> list[dict[str, Any]]:
        """Return the QMP schema (QAPI SchemaInfo entries) generated from the registry (under a
        roles policy: with only the commands the connection's role may run)."""
        return monitor.schema_for(ctx.session)

    @command(name=CANCEL_COMMAND, allow_oob=True)
    def cancel(request_id: Annotated[Any, QMPName("id")], ctx: Context) -> None:
        """Cancel an in-flight request of this connection, by its id.

        The cancelled request still gets exactly one reply: a GenericError saying it was
        cancelled (unless it completed first). Run it with ``exec-oob`` to overtake a queue
        blocked by an id-less request.
        """
        session = ctx.session
        if session is None or not session.cancel_request(request_id):
            raise QMPError(f"No request with id {request_id!r} is in flight on this connection")
