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
the same registry.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from qmonitor.core.commands import Command, CommandRegistry
from qmonitor.core.dispatch import Tracer, run_on_loop
from qmonitor.core.events import Event, EventSpec, EventThrottle, ThrottleKey
from qmonitor.core.schema import SchemaBuilder, encode_value
from qmonitor.core.yank import YankRegistry
from qmonitor.qmp.encode import encode_message, result_writer
from qmonitor.server.builtins import VersionInfo, VersionTriple, register_builtins
from qmonitor.server.chardev import Chardev
from qmonitor.server.fds import MonitorFds
from qmonitor.server.listen import (
    Address,
    AddressError,
    HangupWatch,
    Listener,
    connect_out,
    parse_address,
    start_listener,
)
from qmonitor.server.qmp_session import MAX_REQUESTS_IN_FLIGHT, QMPSession
from qmonitor.server.stdio import connect_stdio

log = logging.getLogger("qmonitor")

DEFAULT_VERSION = VersionInfo(VersionTriple(7, 2, 22), "qmonitor 0.1.0")
"""We speak QEMU 7.2's QMP; clients pick features by ``qemu.major/minor``."""

EventListener = Callable[[Event], None]


class Closable(Protocol):
    """A session the monitor closes when it closes."""

    def close(self) -> None: ...


SHUTDOWN_GRACE_SECONDS = 5.0
"""How long :meth:`Monitor.close` waits for cancelled commands to deliver their replies."""


class Monitor:
    """Commands, events and the sessions that serve them (see the module docstring).

    ``strict_order`` makes every request block its connection until answered (QEMU's exact
    behaviour); by default only id-less requests do. ``max_requests_in_flight`` bounds the
    requests running per connection (the session stops reading past it).
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
    ) -> None:
        self.name = name
        self.version_info = version
        # The greeting's ``version`` object, encoded once rather than per connection.
        self.version: dict[str, Any] = typing.cast(dict[str, Any], encode_value(version))
        self.strict_order = strict_order
        self.max_requests_in_flight = max_requests_in_flight
        self.capabilities = tuple(capabilities)
        self.tracer = tracer
        self.registry = CommandRegistry()
        self.command = self.registry.command
        self.events: dict[str, EventSpec] = {}
        self.qmp_sessions: set[QMPSession] = set()
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
        self._events_generation = 0
        self._result_writers: dict[str, tuple[Command, Callable[[object], str]]] = {}
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
            self._schema_key = key
        return self._schema_cache

    def result_writer(self, command: Command) -> Callable[[object], str]:
        """The function writing ``command``'s results as JSON text (built once per command)."""
        entry = self._result_writers.get(command.name)
        if entry is None or entry[0] is not command:
            entry = self._result_writers[command.name] = (command, result_writer(command.signature))
        return entry[1]

    def _trace(self, name: str, info: Mapping[str, object]) -> None:
        log.debug("%s %s", name, dict(info))
        if self.tracer is not None:
            self.tracer(name, info)

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
        now = time.time()
        seconds = int(now)
        event = Event(name, data, seconds, int((now - seconds) * 1_000_000))
        if self._loop is None or self._loop_thread is None:
            self._emit_event(event, now)  # not serving yet: no session to reach, no loop
        else:
            run_on_loop(self._loop, self._loop_thread, self._emit_event, event, now)

    def _emit_event(self, event: Event, now: float) -> None:
        spec = self.events.get(event.name)
        if spec is not None and spec.throttle_seconds and self._loop is not None:
            send_now, window_end = self._throttle.offer(spec, event, now)
            if window_end is not None and self._loop is not None:
                key = self._throttle.key_for(spec, event)
                self._loop.call_later(spec.throttle_seconds, self._window_ended, key, spec)
            if not send_now:
                return
        self._broadcast(event)

    def _window_ended(self, key: ThrottleKey, spec: EventSpec) -> None:
        kept = self._throttle.window_ended(key)
        if kept is not None:
            assert self._loop is not None and spec.throttle_seconds is not None
            self._loop.call_later(spec.throttle_seconds, self._window_ended, key, spec)
            self._broadcast(kept)

    def _broadcast(self, event: Event) -> None:
        line = encode_message(event.message())
        for session in self.qmp_sessions:
            if session.connection.negotiated:
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

    def _session_opened(self, session: QMPSession) -> None:
        self._bind_loop()
        self.qmp_sessions.add(session)

    def _session_closed(self, session: QMPSession) -> None:
        self.qmp_sessions.discard(session)
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

    def open_chardev(self, address: Address) -> Chardev:
        """The chardev of the next monitor served, on ``address`` (not ``none``).

        Labelled ``compat_monitorN`` in the order monitors are served (QEMU: command-line
        order); a socket one is registered as a yank instance.
        """
        chardev = Chardev(f"compat_monitor{self._chardevs_opened}", address)
        self._chardevs_opened += 1
        self.chardevs.append(chardev)
        instance = chardev.yank_instance
        if instance is not None:
            self.yank.register(instance, chardev.yank)
        return chardev

    def close_chardev(self, chardev: Chardev) -> None:
        """Forget ``chardev`` (its monitor could not be served after all)."""
        self.chardevs.remove(chardev)
        instance = chardev.yank_instance
        if instance is not None:
            self.yank.unregister(instance)

    async def listen(self, address: str | Address) -> Listener:
        """Serve QMP on a listening ``address`` (QEMU syntax, ``server=on``)."""
        self._bind_loop()
        parsed = parse_address(address) if isinstance(address, str) else address
        if parsed.transport not in ("unix", "tcp") or not parsed.server:
            raise AddressError(f"cannot listen on '{address}'; use connect() or serve_stdio()")
        chardev = self.open_chardev(parsed)
        try:
            listener = await start_listener(parsed, chardev.track(self.qmp_session_factory))
        except BaseException:
            self.close_chardev(chardev)
            raise
        self.listeners.append(listener)
        return listener

    async def serve(self, address: str | Address) -> None:
        """Serve QMP on ``address`` whatever its kind: listen, connect out, or stdio."""
        parsed = parse_address(address) if isinstance(address, str) else address
        if parsed.transport == "none":
            return
        if parsed.transport == "stdio":
            await self.serve_stdio()
        elif parsed.server:
            await self.listen(parsed)
        else:
            await self.connect(parsed)

    async def connect(self, address: str | Address) -> QMPSession:
        """Reverse mode: connect to a client listening on ``address`` and serve it."""
        self._bind_loop()
        parsed = parse_address(address) if isinstance(address, str) else address
        chardev = self.open_chardev(parsed)
        try:
            transport = await connect_out(parsed, chardev.track(self.qmp_session_factory))
        except BaseException:
            self.close_chardev(chardev)
            raise
        protocol = transport.get_protocol()
        assert isinstance(protocol, QMPSession)
        return protocol

    async def serve_stdio(self) -> QMPSession:
        """Serve QMP on standard input and output.

        As in QEMU, the end of standard input ends only the requests: every complete one is
        answered, and events go on to standard output until the monitor closes.
        """
        self._bind_loop()
        self.open_chardev(Address("stdio"))  # counted, never yanked
        session = QMPSession(self, close_at_eof=False)
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
            for invocation, _ in list(session.requests_in_flight.values()):
                invocation.cancel("cancelled: the monitor is shutting down")
                outcomes.append(invocation.future)
        if outcomes:
            # A cancelled coroutine needs a few loop turns to unwind; one stuck in a finally
            # block must not hold the shutdown forever.
            await asyncio.wait(outcomes, timeout=SHUTDOWN_GRACE_SECONDS)
        await asyncio.sleep(0)  # let the sessions' done-callbacks write the replies
        for session in list(self.qmp_sessions):
            if session.transport is not None:
                session.transport.close()
        for human in list(self.human_sessions):
            human.close()
        if self._hangups is not None:
            self._hangups.close()
        self.fds.close()
        self._closed.set()
