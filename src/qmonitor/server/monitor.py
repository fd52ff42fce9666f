"""The :class:`Monitor`: a command registry, events and listeners; the embedding API.

A program embeds qmonitor like this::

    mon = Monitor(name="vm0")

    @mon.command
    def query_answer() -> int:
        return 42

    mon.event("ANSWERED")

    async def main():
        await mon.listen("unix:/tmp/vm0.sock,server=on,wait=off")
        await mon.serve_forever()

Commands and events are declared once; QMP sessions (and the human monitor) are served from
the same registry, and every request from every session goes through :meth:`Monitor.submit`,
the one point of dispatch (docs/DESIGN-NOTES.md). Sessions see the monitor through the
:class:`~qmonitor.server.host.SessionHost` protocol.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from qmonitor.core.clock import SYSTEM_CLOCK, Clock
from qmonitor.core.commands import Command, CommandRegistry, HandlerStyle
from qmonitor.core.dispatch import (
    Invocation,
    Returned,
    internal_error,
    invoke,
    run_on_loop,
    run_sync,
)
from qmonitor.core.errors import CommandNotFound, QMPError
from qmonitor.core.events import Event, EventSpec, EventThrottle, ThrottleKey
from qmonitor.core.faults import COMMAND_ACTIONS, FaultSet
from qmonitor.core.schema import SchemaBuilder, encode_value
from qmonitor.core.session import Authorizer, Identity, Session, SessionKind
from qmonitor.core.trace import CommandTrace, Trace, Tracer
from qmonitor.core.trace import log as trace_log
from qmonitor.core.yank import YankRegistry
from qmonitor.qmp.encode import encode_message, result_writer
from qmonitor.qmp.messages import Request
from qmonitor.security.errors import DistinguishedNameError
from qmonitor.server.audit import AuditLog, registry_secrets
from qmonitor.server.builtins import VersionInfo, VersionTriple, register_builtins
from qmonitor.server.chardev import Chardev
from qmonitor.server.exposure import insecure_tcp_error
from qmonitor.server.faults import apply_command_fault
from qmonitor.server.fds import MonitorFds
from qmonitor.server.host import EventListener, HostedSession
from qmonitor.server.listen import (
    Address,
    AddressError,
    HangupWatch,
    Listener,
    connect_out,
    parse_address,
    start_listener,
)
from qmonitor.server.peer import Admit, connection_identity, gated
from qmonitor.server.qmp_session import MAX_REQUESTS_IN_FLIGHT, QMPSession
from qmonitor.server.stdio import connect_stdio

if TYPE_CHECKING:
    from pathlib import Path

    # only with --policy: not loaded (TOML, HMP parser) by a monitor without one
    from qmonitor.security.policy import Policy

log = logging.getLogger("qmonitor")

DEFAULT_VERSION = VersionInfo(
    qemu=VersionTriple(major=7, minor=2, micro=22), package="qmonitor 0.1.0"
)
"""We speak QEMU 7.2's QMP; clients pick features by ``qemu.major/minor``."""


class Closable(Protocol):
    """A session the monitor closes when it closes."""

    def close(self) -> None: ...


_QMP: Final = SessionKind.QMP  # hot path: a global is read in a tenth of an enum member's time
_SYNC: Final = HandlerStyle.SYNC
_tracing_to_log: Final = trace_log.isEnabledFor  # bound once: it still reads the level anew
_LOGGED: Final = logging.INFO  # the lowest level core/trace.py logs a record at

NO_ROLE: Final = "The command '{command}' is not allowed: the connection has no role"
"""A request from a session the policy gives no role (the console or standard input and
output under a policy without ``default-role`` that grants nothing to this process's user;
a socket client without a role is refused when it connects)."""


class CommandDenied(QMPError):
    """A request the roles policy or the authorize hook refused: a GenericError, and
    ``command.denied`` on the trace path (with the ``role``, None for the hook)."""

    def __init__(self, error: QMPError, role: str | None) -> None:
        super().__init__(error.desc, error.error_class)
        self.role = role


SHUTDOWN_GRACE_SECONDS = 5.0
"""How long :meth:`Monitor.close` waits for cancelled commands to deliver their replies."""


class Monitor:
    """Commands, events and the sessions that serve them (see the module docstring).

    ``strict_order`` makes every request block its connection until answered (QEMU's exact
    behaviour); by default only id-less requests do. ``max_requests_in_flight`` bounds the
    requests running per connection (the session stops reading past it). ``authorize`` (also
    settable later as :attr:`authorize`) decides every request (:data:`~qmonitor.Authorizer`);
    without one everything is allowed. ``tracer`` gets every trace record, as do those added
    with :meth:`add_tracer` (docs/DESIGN-NOTES.md, "The trace path"). ``clock`` gives event
    timestamps, throttling windows and command timeouts (:mod:`qmonitor.core.clock`; a
    :class:`qmonitor.testing.FakeClock` in tests).

    ``policy`` (a :class:`~qmonitor.security.policy.Policy`, ``load_policy(FILE)``) gives each
    session a role from its identity and decides every request before its arguments are read
    (docs/SECURITY.md, "Roles"); ``query-commands``, ``query-qmp-schema`` and the human
    monitor's ``help`` then list only what the session's role may run, and a socket client
    without a role is refused when it connects. ``audit`` (an :class:`AuditLog`, or a path to
    open one on, with the registry's secret parameters masked) gets every record of the
    trace path and is closed by :meth:`close`. A TCP monitor on a non-loopback address
    without TLS is refused (:class:`AddressError`, before anything is bound) unless
    ``allow_insecure_tcp`` (:mod:`qmonitor.server.exposure`).
    """

    def __init__(
        self,
        name: str = "qmonitor",
        *,
        version: VersionInfo = DEFAULT_VERSION,
        strict_order: bool = False,
        max_requests_in_flight: int = MAX_REQUESTS_IN_FLIGHT,
        capabilities: Iterable[str] = ("oob",),
        tracer: Tracer | None = None,
        authorize: Authorizer | None = None,
        clock: Clock = SYSTEM_CLOCK,
        policy: Policy | None = None,
        audit: AuditLog | str | Path | None = None,
        allow_insecure_tcp: bool = False,
    ) -> None:
        self.name = name
        self.version_info = version
        # The greeting's ``version`` object, encoded once rather than per connection.
        self.version: dict[str, Any] = typing.cast(dict[str, Any], encode_value(version))
        self.strict_order = strict_order
        self.max_requests_in_flight = max_requests_in_flight
        self.capabilities = tuple(capabilities)
        self._trace = Trace()
        if tracer is not None:
            self._trace.add(tracer)
        self.authorize = authorize
        self.policy = policy
        self.allow_insecure_tcp = allow_insecure_tcp
        self.clock = clock
        # Fault injection (qmonitor.server.faults.install_faults): none by default.
        self.faults: FaultSet | None = None
        self.registry = CommandRegistry()
        self.command = self.registry.command
        if audit is not None and not isinstance(audit, AuditLog):
            audit = AuditLog(audit, secret_parameters=registry_secrets(self.registry))
        self.audit = audit
        if audit is not None:
            self._trace.add(audit)
        self.events: dict[str, EventSpec] = {}
        self.qmp_sessions: set[HostedSession] = set()
        # Human sessions (qmonitor.server.human registers them); closed by close().
        self.human_sessions: set[Closable] = set()
        self.listeners: list[Listener] = []
        # The chardevs sessions are served on, named as QEMU's (qmonitor.server.chardev), and
        # the yank instances of the monitor and of what the program adds (a migration).
        self.chardevs: list[Chardev] = []
        self._chardevs_opened = 0
        self.yank = YankRegistry()
        # File descriptors clients passed: named per chardev, fd sets (qmonitor.server.fds).
        self.fds = MonitorFds()
        self._event_listeners: list[EventListener] = []
        self._throttle = EventThrottle()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closed = asyncio.Event()
        self._hangups: HangupWatch | None = None
        self.closing = False  # close() has begun: sessions start nothing new
        self._schema_cache: list[dict[str, Any]] | None = None
        self._schema_key = (-1, -1)
        self._role_schemas: dict[str, tuple[tuple[int, int], list[dict[str, Any]]]] = {}
        self._events_generation = 0
        self._session_peers: dict[object, dict[str, object]] = {}
        self._on_sessions_closed: asyncio.Future[object] | None = None
        register_builtins(self)

    # -- identity --------------------------------------------------------------------------

    def schema(self) -> list[dict[str, Any]]:
        """QAPI SchemaInfo entries for every command and event (cached until they change)."""
        key = (self.registry.generation, self._events_generation)
        if self._schema_cache is None or key != self._schema_key:
            builder = SchemaBuilder()
            for command in self.registry.qmp_commands():
                builder.add_command(command.name, command.signature, allow_oob=command.allow_oob)
            for spec in self.events.values():
                builder.add_event(spec.name, spec.data_type)
            self._schema_cache = builder.entries()
            # Read again: listing the commands may have loaded deferred ones (registry.defer).
            self._schema_key = (self.registry.generation, self._events_generation)
        return self._schema_cache

    def role_of(self, session: Session) -> str | None:
        """The role the policy gives ``session`` (None without a policy, or without a role)."""
        policy = self.policy
        return policy.role_for(session.identity) if policy is not None else None

    def commands_for(self, session: Session | None) -> list[Command]:
        """The commands ``session`` may run (with some arguments): every one without a policy
        or outside a session; else those of its role (none without a role)."""
        commands = list(self.registry)
        policy = self.policy
        if policy is None or session is None:
            return commands
        role = self.role_of(session)
        return policy.visible(role, commands) if role is not None else []

    def schema_for(self, session: Session | None) -> list[dict[str, Any]]:
        """:meth:`schema` as ``session`` may see it: only the commands its role may run (and
        the types they use), every event; cached per role until the commands change."""
        policy = self.policy
        if policy is None or session is None:
            return self.schema()
        role = self.role_of(session) or ""
        key = (self.registry.generation, self._events_generation)
        cached = self._role_schemas.get(role)
        if cached is None or cached[0] != key:
            visible = {command.name for command in self.commands_for(session)}
            builder = SchemaBuilder()
            for command in self.registry.qmp_commands():
                if command.name in visible:
                    builder.add_command(
                        command.name, command.signature, allow_oob=command.allow_oob
                    )
            for spec in self.events.values():
                builder.add_event(spec.name, spec.data_type)
            key = (self.registry.generation, self._events_generation)  # after any loading
            cached = self._role_schemas[role] = (key, builder.entries())
        return cached[1]

    def result_writer(self, command: Command) -> Callable[[object], str]:
        """The function writing ``command``'s results as JSON text (built once per command,
        kept as its ``result_text``)."""
        writer = command.result_text
        if writer is None:
            writer = command.result_text = result_writer(command.signature)
        return writer

    # -- the trace path --------------------------------------------------------------------

    def add_tracer(self, tracer: Tracer) -> None:
        """Call ``tracer(record_name, info)`` with every trace record from now on."""
        self._trace.add(tracer)

    def remove_tracer(self, tracer: Tracer) -> None:
        """Stop calling ``tracer``."""
        self._trace.remove(tracer)

    def trace(self, name: str, info: Mapping[str, object]) -> None:
        """Record ``name`` with ``info``: to the ``qmonitor.trace`` debug log and every tracer
        (a tracer that raises is logged and skipped)."""
        self._trace(name, info)

    # -- the one point of dispatch ---------------------------------------------------------

    def submit(
        self,
        command_name: str,
        arguments: Mapping[str, object],
        *,
        session: Session,
        request_id: object = None,
        oob: bool = False,
    ) -> Returned | Invocation:
        """Start one request from ``session``: every session's requests come through here.

        In QEMU's order (qapi/qmp-dispatch.c ``qmp_dispatch``): the command is looked up
        (``CommandNotFound``; human-only commands exist for human sessions only), ``exec-oob``
        is refused for a command that does not allow it, and the arguments are validated and
        converted with QEMU's texts. The roles :attr:`policy`, if set, decides before the
        arguments are read (so a refused command reveals nothing of its parameters), and
        :attr:`authorize`, if set, after; a refusal's error is the answer. Then a fault rule in
        :attr:`faults` may act on it (:mod:`qmonitor.server.faults`); only then does the
        handler run. A sync command's result
        comes back at once as :data:`~qmonitor.core.dispatch.Returned`; any other command
        gives the :class:`~qmonitor.core.dispatch.Invocation` that will hold its outcome.
        Raises :class:`QMPError` for a request refused before its handler ran, or for a sync
        handler's error.

        Every request leaves ``command.started`` and then one ``command.complete``,
        ``command.failed`` or ``command.denied`` on the trace path, with the session's
        identity.
        """
        if self._trace.tracers or _tracing_to_log(_LOGGED):  # Trace.active(), inlined
            record: CommandTrace | None = CommandTrace(
                self._trace, command_name, request_id, session, arguments, self.clock.monotonic
            )
        else:
            record = None
        try:
            registry = self.registry
            if session.kind is _QMP:
                command = registry.get_qmp(command_name)
            else:
                command = registry.get(command_name)
            if command is None:
                raise CommandNotFound(command_name)
            if oob and not command.allow_oob:
                raise QMPError(f"The command {command_name} does not support OOB")
            policy = self.policy
            if policy is not None:
                self._check_policy(policy, command, arguments, session)
            kwargs = (command.compiled or command.signature).convert_arguments(arguments)
            authorize = self.authorize
            if authorize is not None:
                self._authorize(authorize, session, command_name, arguments)
            faults = self.faults
            if faults is not None and faults.has_command_rules:
                rule = faults.command_fault(command_name, arguments, COMMAND_ACTIONS, session.peer)
                if rule is not None:
                    faulty = apply_command_fault(
                        rule,
                        command,
                        kwargs,
                        request_id=request_id,
                        session=session,
                        record=record,
                        clock=self.clock,
                        emit=self.emit,
                    )
                    if faulty is not None:
                        return faulty
            if command.style is _SYNC:
                if command.context_parameter is not None:
                    value = run_sync(command, kwargs, request_id, session)
                else:  # run_sync without a Context to make, inlined: every query is such
                    try:
                        value = command.handler(**kwargs)
                    except QMPError:
                        raise
                    except Exception as exc:
                        raise internal_error(command, exc) from exc
                if record is not None:
                    record.complete()
                return (command, value)
        except CommandDenied as denied:
            if record is not None:
                record.denied(denied, denied.role)
            raise
        except QMPError as error:
            if record is not None:
                record.failed(error)
            raise
        return invoke(
            command,
            kwargs,
            request_id=request_id,
            session=session,
            record=record,
            clock=self.clock,
        )

    def negotiation_refusal(self, request: Request, session: Session) -> QMPError | None:
        """Whether the roles policy refuses ``session`` the ``qmp_capabilities`` it sent in
        negotiation mode (where the connection runs it itself): :class:`CommandDenied`, or
        None. A role that may not run it stays in negotiation mode."""
        policy = self.policy
        command = self.registry.get_qmp(request.command)
        if policy is None or command is None:
            return None
        try:
            self._check_policy(policy, command, request.arguments, session)
        except CommandDenied as denied:
            return denied
        return None

    def trace_negotiation(self, request: Request, session: Session, error: QMPError | None) -> None:
        """Record a request the connection answered in negotiation mode (``qmp_capabilities``
        run, refused by the policy, or any other command refused there): the same
        ``command.started`` and outcome as a request in command mode."""
        if not (self._trace.tracers or _tracing_to_log(_LOGGED)):
            return
        record = CommandTrace(
            self._trace,
            request.command,
            request.request_id,
            session,
            request.arguments,
            self.clock.monotonic,
        )
        if error is None:
            record.complete()
        elif isinstance(error, CommandDenied):
            record.denied(error, error.role)
        else:
            record.failed(error)

    def _check_policy(
        self, policy: Policy, command: Command, arguments: Mapping[str, object], session: Session
    ) -> None:
        """Raise :class:`CommandDenied` unless ``session``'s role may run ``command`` with
        ``arguments``. A human session's refusal names the command as typed (``info status``);
        a line of ``human-monitor-command`` is decided here too, as the command it runs."""
        role = policy.role_for(session.identity)
        if role is None:
            raise CommandDenied(QMPError(NO_ROLE.format(command=command.name)), None)
        decision = policy.allows(role, command, arguments, human=session.kind is not _QMP)
        if not decision:
            raise CommandDenied(decision.error(), role)

    @staticmethod
    def _authorize(
        authorize: Authorizer, session: Session, command_name: str, arguments: Mapping[str, object]
    ) -> None:
        try:
            refusal = authorize(session, command_name, arguments)
        except Exception:  # a bug in the hook: refuse (fail closed), log, serve on
            log.exception("the authorize hook failed on '%s'", command_name)
            refusal = QMPError(f"Command '{command_name}' refused: the authorization failed")
        if refusal is not None:
            raise CommandDenied(refusal, None)

    def _session_info(self, kind: str, peer: str, identity: Identity) -> dict[str, object]:
        info: dict[str, object] = {
            "session": kind,
            "peer": peer,
            "identity": identity.label,
            "transport": identity.transport,
        }
        if self.policy is not None:
            info["role"] = self.policy.role_for(identity)
        return info

    def trace_session_opened(self, kind: str, session: Session, peer: str) -> None:
        """Record ``session.opened`` for a new session of ``kind`` (``qmp``, ``hmp``) with the
        ``peer`` :func:`~qmonitor.server.listen.describe_peer` gave and the session's
        identity (and role, under a policy); they are kept for the ``session.closed`` record,
        as a closed socket can no longer be asked."""
        info = self._session_info(kind, peer, session.identity)
        self._session_peers[session] = info
        self._trace("session.opened", info)

    def trace_session_closed(self, session: object) -> None:
        """Record ``session.closed`` for a session :meth:`trace_session_opened` recorded."""
        info = self._session_peers.pop(session, {"session": "?", "peer": "?"})
        self._trace("session.closed", info)
        gone = self._on_sessions_closed
        if gone is not None and not self._session_peers and not gone.done():
            gone.set_result(None)

    def admission(self, admit: Admit | None = None) -> Admit | None:
        """The check each new socket connection passes before it gets a session, or None
        when there is nothing to check.

        A refused connection is closed before the greeting, with an ``auth.refused`` record
        (``identity``, ``transport``, ``peer``, ``reason``). Refused: a TLS client certificate
        whose subject cannot be written as QEMU writes it; one ``admit`` refuses (a
        ``tls-authz`` object: :func:`~qmonitor.server.peer.tls_authz_gate`); under a policy,
        an identity it gives no role.
        """
        if admit is None and self.policy is None:
            return None

        def refuse(identity: Identity, reason: str) -> bool:
            info = {
                "identity": identity.label,
                "transport": identity.transport,
                "peer": identity.peer,
                "reason": reason,
            }
            self._trace("auth.refused", info)
            return False

        def check(transport: asyncio.BaseTransport) -> bool:
            try:
                identity = connection_identity(transport)
            except DistinguishedNameError as error:
                peername = transport.get_extra_info("peername")
                peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else ""
                return refuse(Identity("tcp", peer), f"cannot get its distinguished name: {error}")
            if admit is not None and not admit(transport):
                return refuse(identity, "refused by tls-authz")
            if self.policy is not None and self.policy.role_for(identity) is None:
                return refuse(identity, f"no role in {self.policy.source}")
            return True

        return check

    # -- events ----------------------------------------------------------------------------

    def event(
        self,
        name: str,
        data_type: object | None = None,
        *,
        throttle: float | None = None,
        throttle_key: str | None = None,
        doc: str = "",
    ) -> EventSpec:
        """Declare an event (for the schema, and to give it QEMU's throttling rule)."""
        spec = EventSpec(name, data_type, throttle, throttle_key, doc)
        self.events[name] = spec
        self._events_generation += 1
        return spec

    def add_event_listener(self, listener: EventListener) -> None:
        """Call ``listener`` with every event sent (human sessions show them)."""
        self._event_listeners.append(listener)

    def remove_event_listener(self, listener: EventListener) -> None:
        """Stop calling ``listener``."""
        if listener in self._event_listeners:
            self._event_listeners.remove(listener)

    def emit(self, name: str, data: Mapping[str, Any] | None = None) -> None:
        """Send an event to every QMP session in command mode (QMP spec, section 2.5).

        Callable from any thread. The timestamp is the wall clock at the call. Sessions still
        negotiating get nothing (qemu.qmp reads the very next message as the negotiation
        reply). Throttled events follow QEMU's rule (:mod:`qmonitor.core.events`).
        """
        now = self.clock.time()
        seconds = int(now)
        event = Event(name, data, seconds, int((now - seconds) * 1_000_000))
        if self._loop is None or self._loop_thread is None:
            self._emit_event(event)  # not serving yet: no session to reach, no loop
        else:
            run_on_loop(self._loop, self._loop_thread, self._emit_event, event)

    def _emit_event(self, event: Event) -> None:
        spec = self.events.get(event.name)
        if spec is not None and spec.throttle_seconds and self._loop is not None:
            send_now, window_end = self._throttle.offer(spec, event, self.clock.monotonic())
            if window_end is not None:
                key = self._throttle.key_for(spec, event)
                self.clock.call_later(spec.throttle_seconds, self._window_ended, key, spec)
            if not send_now:
                return
        self._broadcast(event)

    def _window_ended(self, key: ThrottleKey, spec: EventSpec) -> None:
        kept = self._throttle.window_ended(key)
        if kept is not None:
            assert spec.throttle_seconds is not None
            self.clock.call_later(spec.throttle_seconds, self._window_ended, key, spec)
            self._broadcast(kept)

    def _broadcast(self, event: Event) -> None:
        line = encode_message(event.message())
        for session in self.qmp_sessions:
            session.send_event(line)
        for listener in self._event_listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed")

    # -- sessions and listeners --------------------------------------------------------------

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()

    def session_opened(self, session: HostedSession) -> None:
        """A QMP session connected: it gets events, and is closed by :meth:`close`."""
        self._bind_loop()
        self.qmp_sessions.add(session)
        self.trace_session_opened("qmp", session, session.peer)

    def session_closed(self, session: HostedSession) -> None:
        """A QMP session is gone."""
        self.qmp_sessions.discard(session)
        self.trace_session_closed(session)
        self._client_gone()

    def human_session_closed(self, session: Closable) -> None:
        """A human session ended (its ``on_close``)."""
        self.human_sessions.discard(session)
        self._client_gone()

    def _client_gone(self) -> None:
        self.fds.client_gone(len(self.qmp_sessions) + len(self.human_sessions))

    @property
    def hangups(self) -> HangupWatch:
        """Watches the sockets of clients that ended their input for a real hang-up."""
        if self._hangups is None:
            self._hangups = HangupWatch(asyncio.get_running_loop())
        return self._hangups

    def qmp_session_factory(self) -> QMPSession:
        """A new QMP session of this monitor (an ``asyncio.Protocol``)."""
        return QMPSession(self)

    def pretty_session_factory(self) -> QMPSession:
        """A new QMP session writing pretty-printed JSON (``-qmp-pretty``, ``pretty=on``)."""
        return QMPSession(self, pretty=True)

    def check_exposure(self, address: Address, *, tls: bool) -> None:
        """Refuse (:class:`AddressError`) a TCP ``address`` in clear text beyond this host,
        unless :attr:`allow_insecure_tcp` (:mod:`qmonitor.server.exposure`)."""
        refusal = insecure_tcp_error(address, tls=tls)
        if refusal is not None and not self.allow_insecure_tcp:
            raise AddressError(refusal)

    def open_chardev(self, address: Address, label: str | None = None) -> Chardev:
        """The chardev of the next monitor served, on ``address`` (not ``none``).

        Labelled ``label`` (a ``-chardev`` id), or ``compat_monitorN`` in the order monitors
        are served (QEMU: command-line order); a socket one is registered as a yank instance.
        """
        chardev = Chardev(label or f"compat_monitor{self._chardevs_opened}", address)
        self._chardevs_opened += 1
        self.chardevs.append(chardev)
        yank_key = chardev.yank_key
        if yank_key is not None:
            self.yank.register_key(yank_key, chardev.yank)
        return chardev

    def close_chardev(self, chardev: Chardev) -> None:
        """Forget ``chardev`` (its monitor could not be served after all)."""
        self.chardevs.remove(chardev)
        yank_key = chardev.yank_key
        if yank_key is not None:
            self.yank.unregister_key(yank_key)

    async def listen(
        self,
        address: str | Address,
        *,
        tls: ssl.SSLContext | None = None,
        admit: Admit | None = None,
        label: str | None = None,
        pretty: bool = False,
    ) -> Listener:
        """Serve QMP on a listening ``address`` (QEMU syntax, ``server=on``; or an inherited
        listening socket); ``label`` names its chardev (see :meth:`open_chardev`).

        ``tls``: a server context (:func:`qmonitor.server.tls.server_context`, QEMU's
        ``tls-creds``) makes every connection TLS. ``admit`` decides whether a connection may
        have a session once its handshake is done (``tls-authz``:
        :func:`~qmonitor.server.peer.tls_authz_gate`); see :meth:`admission`. ``pretty``:
        replies and events are pretty-printed, as by QEMU's ``-qmp-pretty``.
        """
        self._bind_loop()
        parsed = parse_address(address) if isinstance(address, str) else address
        if parsed.transport not in ("unix", "tcp", "fd") or not parsed.server:
            raise AddressError(f"cannot listen on '{address}'; use connect() or serve_stdio()")
        self.check_exposure(parsed, tls=tls is not None)
        chardev = self.open_chardev(parsed, label)
        factory: Callable[[], asyncio.Protocol] = chardev.track(self._session_factory(pretty))
        check = self.admission(admit)
        if check is not None:
            factory = gated(factory, check)
        try:
            listener = await start_listener(parsed, factory, tls=tls)
        except BaseException:
            self.close_chardev(chardev)
            raise
        self.listeners.append(listener)
        return listener

    async def serve(
        self, address: str | Address, *, label: str | None = None, pretty: bool = False
    ) -> None:
        """Serve QMP on ``address`` whatever its kind: listen, connect out, or stdio
        (``pretty``: see :meth:`listen`)."""
        parsed = parse_address(address) if isinstance(address, str) else address
        if parsed.transport == "none":
            return
        if parsed.transport == "stdio":
            await self.serve_stdio(label=label, pretty=pretty)
        elif parsed.server:
            await self.listen(parsed, label=label, pretty=pretty)
        else:
            await self.connect(parsed, label=label, pretty=pretty)

    def _session_factory(self, pretty: bool) -> Callable[[], QMPSession]:
        return self.pretty_session_factory if pretty else self.qmp_session_factory

    async def connect(
        self, address: str | Address, *, label: str | None = None, pretty: bool = False
    ) -> QMPSession:
        """Reverse mode: connect to a client listening on ``address`` and serve it; or serve
        the client at the other end of an inherited connected socket."""
        self._bind_loop()
        parsed = parse_address(address) if isinstance(address, str) else address
        self.check_exposure(parsed, tls=False)
        chardev = self.open_chardev(parsed, label)
        try:
            transport = await connect_out(parsed, chardev.track(self._session_factory(pretty)))
        except BaseException:
            self.close_chardev(chardev)
            raise
        protocol = transport.get_protocol()
        assert isinstance(protocol, QMPSession)
        return protocol

    async def serve_stdio(self, *, label: str | None = None, pretty: bool = False) -> QMPSession:
        """Serve QMP on standard input and output.

        As in QEMU, the end of standard input ends only the requests: every complete one is
        answered, and events go on to standard output until the monitor closes.
        """
        self._bind_loop()
        self.open_chardev(Address("stdio"), label)  # counted, never yanked
        session = QMPSession(self, close_at_eof=False, pretty=pretty)
        await connect_stdio(session)
        return session

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` is called."""
        await self._closed.wait()

    async def close(self) -> None:
        """Stop listening, answer or cancel what is in flight, and disconnect every client."""
        self.closing = True
        for listener in self.listeners:
            await listener.close()
        self.listeners.clear()
        outcomes = []
        for session in list(self.qmp_sessions):
            outcomes += session.cancel_all("cancelled: the monitor is shutting down")
        if outcomes:
            # A cancelled coroutine needs a few loop turns to unwind; one stuck in a finally
            # block must not hold the shutdown forever.
            await self._wait_at_most(SHUTDOWN_GRACE_SECONDS, outcomes)
        await asyncio.sleep(0)  # let the sessions' done-callbacks write the replies
        for session in list(self.qmp_sessions):
            session.close()
        for human in list(self.human_sessions):
            human.close()
        if self._hangups is not None:
            self._hangups.close()
        self.fds.close()
        if self.audit is not None:
            await self._sessions_closed()  # their session.closed records are audited
            self.audit.close()
        self._closed.set()

    async def _sessions_closed(self) -> None:
        """Wait (at most :data:`SHUTDOWN_GRACE_SECONDS`) until every session closed by
        :meth:`close` has recorded its ``session.closed``: a transport closes a loop turn or
        more after ``close()`` is called on it."""
        if not self._session_peers:
            return
        gone = asyncio.get_running_loop().create_future()
        self._on_sessions_closed = gone
        try:
            await self._wait_at_most(SHUTDOWN_GRACE_SECONDS, [gone])
        finally:
            self._on_sessions_closed = None

    async def _wait_at_most(self, seconds: float, outcomes: list[asyncio.Future[object]]) -> None:
        """Wait until every outcome is known, or ``seconds`` of the monitor's clock passed."""
        grace_over: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.clock.call_later(seconds, grace_over.set_result, None)
        pending: set[asyncio.Future[Any]] = set(outcomes)
        try:
            while pending and not grace_over.done():
                _, pending = await asyncio.wait(
                    pending | {grace_over}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(grace_over)
        finally:
            timer.cancel()
