"""Serve a transcript as if it were the QEMU it was recorded from: ``qmonitor replay``.

A client connecting to the replay gets what the recorded QEMU sent::

    qmonitor replay session.jsonl -qmp unix:/tmp/replay.sock,server=on,wait=off [--strict]

- **The greeting** recorded on the same connection (the Nth connection to the replay replays
  the Nth recorded connection; later ones get the first greeting).
- **Negotiation exactly as QEMU** (:class:`~qmonitor.qmp.protocol.QMPServerConnection`, the
  same code as ``qmonitor run``): only ``qmp_capabilities`` before it, the capabilities the
  greeting offered, QEMU's errors for anything else, and for input that is not a request.
- **Replies** matched by ``(execute, arguments)`` (arguments compared as JSON values, member
  order aside), with the request's own ``id`` echoed: the recorded reply, re-encoded by
  :mod:`qmonitor.qmp.encode` so that it is byte for byte what QEMU writes (QEMU's member order:
  ``{"return": ..., "id": ...}`` but ``{"id": ..., "error": ...}``). A libvirt ``.replies`` file
  is pretty-printed; its replies come out as QEMU would send them too.
- **Events** recorded after a request are sent after the same request: those QEMU sent before
  the reply (STOP before the reply to ``stop``) just before it, the others at their recorded
  offsets after the request arrived, with a fresh timestamp. If QEMU closed the connection
  after a request (``quit``), the replay closes it at the same offset.

Two modes, as libvirt's test monitor (``tests/qemumonitortestutils.c``) and beyond it:

- **lenient** (the default): requests may come in any order, and each follows the recorded
  timeline: a request gets the reply to its first recorded occurrence after the latest request
  answered so far, or, if it was not asked again later in the recording, to its last
  occurrence. So ``stop`` then ``query-status`` answers ``paused`` if that is what QEMU
  answered after ``stop``, a client may leave recorded requests out, and asking the same
  thing twice walks through its recorded answers. The timeline is the same connection's
  recording first, then the other connections' in order.
- **strict** (``--strict``): requests must come in the recorded order, connection by
  connection. A request that is not the next one recorded is answered with an error naming
  both, and reported; so are recorded requests never made, when the replay ends.

A request the transcript has no reply for gets a GenericError naming it (``qmonitor replay: no
recorded reply to 'query-kvm'``), and is reported when the replay ends: a summary on standard
error, and exit status 1 in strict mode. Where the transcript holds a ``query-qmp-schema``
reply, requests are first checked against that schema
(:class:`~qmonitor.core.introspected.IntrospectedSchema`), so a request QEMU would refuse (an
unknown command, a missing, unexpected or ill-typed argument) gets the error QEMU would give,
and is not a problem in lenient mode: its answer is certain.

The protocol logic is sans-I/O (:class:`ReplayScript`, :class:`ReplaySession`: requests in,
:class:`Answer` out); :class:`ReplayServer` puts it on sockets.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from qmonitor.core.errors import ErrorClass, QMPError
from qmonitor.core.introspected import IntrospectedSchema, SchemaInfoError
from qmonitor.qmp.capabilities import CAPABILITIES_SIGNATURE
from qmonitor.qmp.encode import encode_json, encode_message
from qmonitor.qmp.messages import InvalidRequest, Negotiated, Request
from qmonitor.qmp.protocol import ALREADY_NEGOTIATED, QMPServerConnection
from qmonitor.qmp.stream import NEED_DATA, NeedData
from qmonitor.server.listen import Address, AddressError, Listener, parse_address, start_listener
from qmonitor.testing.transcript import (
    Conversation,
    Exchange,
    Transcript,
    TranscriptError,
    conversations,
    one_line,
    read_transcript,
)

RequestKey = tuple[str, str]


def request_key(command: str, arguments: Mapping[str, Any]) -> RequestKey:
    """What identifies a request for matching: its command and its arguments as JSON values
    (so member order does not matter, but ``1`` and ``1.0`` and ``true`` differ, as for QEMU)."""
    return command, json.dumps(arguments, sort_keys=True, separators=(",", ":"))


def describe(request: Request) -> str:
    """A request for a person: ``'stop'``, ``'device_del' with arguments {"id": "x"}``."""
    if request.arguments:
        return f"'{request.command}' with arguments {encode_json(request.arguments)}"
    return f"'{request.command}'"


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send for one input: events, then the reply, then timed actions.

    ``later`` holds ``(offset, event)`` in order, ``offset`` in seconds after the request
    arrived; an event of None means: close the connection.
    """

    reply: bytes | None
    events_before: tuple[dict[str, Any], ...] = ()
    later: tuple[tuple[float, dict[str, Any] | None], ...] = ()


class ReplayScript:
    """A transcript ready to be replayed: what every :class:`ReplaySession` shares."""

    def __init__(self, transcript: Transcript, *, strict: bool = False) -> None:
        self.strict = strict
        self.conversations: list[Conversation] = [
            c for c in conversations(transcript) if c.greeting is not None or c.exchanges
        ]
        greetings = [c.greeting for c in self.conversations if c.greeting is not None]
        if not greetings:
            raise TranscriptError("the transcript has no greeting to replay")
        for greeting in greetings:
            _check_greeting(greeting)
        self.greeting = greetings[0]
        self.schema = _schema_of(self.conversations)
        self.problems: list[str] = []
        self.sessions: list[ReplaySession] = []
        self.requests_answered = 0

    @property
    def recorded_requests(self) -> int:
        """How many well-formed requests the transcript holds."""
        return sum(len(c.requests()) for c in self.conversations)

    def open_session(self) -> ReplaySession:
        """A new connection: it replays the recorded connection of the same number."""
        session = ReplaySession(self, len(self.sessions) + 1)
        self.sessions.append(session)
        return session

    def final_problems(self) -> list[str]:
        """Everything to report when the replay ends (strict mode: also what was not asked)."""
        problems = list(self.problems)
        if not self.strict:
            return problems
        for index, conversation in enumerate(self.conversations):
            recorded = conversation.requests()
            if index >= len(self.sessions):
                if recorded:
                    problems.append(
                        f"recorded connection {conversation.connection} "
                        f"({len(recorded)} requests) was never made"
                    )
                continue
            for exchange in recorded[self.sessions[index].cursor :]:
                request = cast(Request, exchange.request)
                problems.append(
                    f"connection {index + 1}: recorded request {exchange.number}, "
                    f"{describe(request)}, was never made"
                )
        return problems


def _check_greeting(greeting: Mapping[str, Any]) -> None:
    body = greeting.get("QMP")
    if not (
        isinstance(body, dict)
        and isinstance(body.get("version"), dict)
        and isinstance(body.get("capabilities"), list)
        and all(isinstance(c, str) for c in body["capabilities"])
    ):
        raise TranscriptError(f"not a QMP greeting: {encode_json(greeting)}")


def _schema_of(recorded: list[Conversation]) -> IntrospectedSchema | None:
    """The schema of the last ``query-qmp-schema`` reply in the transcript, if any."""
    entries = None
    for conversation in recorded:
        for exchange in conversation.requests():
            request = cast(Request, exchange.request)
            reply = exchange.reply
            if request.command == "query-qmp-schema" and reply and "return" in reply:
                entries = reply["return"]
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise TranscriptError("the query-qmp-schema reply is not a list")
    try:
        return IntrospectedSchema(entries)
    except SchemaInfoError as exc:
        raise TranscriptError(str(exc)) from None


class ReplaySession:
    """One client connection to a replay (sans I/O): bytes in, :class:`Answer` out."""

    def __init__(self, script: ReplayScript, number: int) -> None:
        self.script = script
        self.number = number
        recorded = script.conversations
        self._conversation = recorded[number - 1] if number <= len(recorded) else None
        greeting = script.greeting
        if self._conversation is not None and self._conversation.greeting is not None:
            greeting = self._conversation.greeting
        self.connection = QMPServerConnection(
            greeting["QMP"]["version"], greeting["QMP"]["capabilities"]
        )
        self._expected = self._conversation.requests() if self._conversation else []
        self.cursor = 0  # strict mode: the next expected request in _expected
        # Lenient mode: per request, its places in the recorded timeline; and the place of the
        # latest request answered from it.
        self._occurrences: dict[RequestKey, list[tuple[int, Exchange]]] | None = None
        self._position = -1

    def greeting(self) -> bytes:
        """The greeting line, as QEMU writes it."""
        return self.connection.greeting()

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client."""
        self.connection.receive_data(data)

    def receive_eof(self) -> None:
        """The client stopped sending: what it sent whole is still answered."""
        self.connection.receive_eof()

    def next_event(self) -> Request | InvalidRequest | Negotiated | NeedData:
        """The next input, or NEED_DATA (negotiation is the connection's, as in QEMU)."""
        return self.connection.next_event()

    def answer(self, event: Request | InvalidRequest | Negotiated) -> Answer:
        """What the recorded QEMU answers ``event`` with (module docstring)."""
        if type(event) is Negotiated:
            self._negotiated_in_order()
            return Answer(self.connection.send_return({}, event.request_id, event.has_id))
        if type(event) is InvalidRequest:
            return Answer(self.connection.send_error(event.error, event.request_id, event.has_id))
        request = cast(Request, event)
        self.script.requests_answered += 1
        exchange, mismatch = self._match(request)
        computed = self._computed_reply(request)
        recorded = None
        if exchange is not None and exchange.reply is not None:
            recorded = _with_id(exchange.reply, request)
        if mismatch is not None and (self.script.strict or computed is None):
            self.script.problems.append(f"connection {self.number}: {mismatch}")
        reply = computed or recorded
        if reply is None and (exchange is None or mismatch is not None):
            error = QMPError(f"qmonitor replay: {mismatch}")
            reply = self.connection.send_error(error, request.request_id, request.has_id)
        if exchange is None or (computed is not None and computed != recorded):
            return Answer(reply)
        later: list[tuple[float, dict[str, Any] | None]] = [
            (event.offset, event.message) for event in exchange.events if not event.before_reply
        ]
        if exchange.close_offset is not None:
            later.append((exchange.close_offset, None))
        later.sort(key=lambda action: (action[0], action[1] is None))
        return Answer(
            reply,
            tuple(event.message for event in exchange.events if event.before_reply),
            tuple(later),
        )

    def _negotiated_in_order(self) -> None:
        """In strict mode, a recorded ``qmp_capabilities`` next in line is the one just
        answered by the connection itself."""
        self.script.requests_answered += 1
        if self.script.strict and self.cursor < len(self._expected):
            expected = cast(Request, self._expected[self.cursor].request)
            if expected.command == "qmp_capabilities":
                self.cursor += 1

    def _match(self, request: Request) -> tuple[Exchange | None, str | None]:
        """The recorded exchange answering ``request``, or why there is none."""
        key = request_key(request.command, request.arguments)
        if self.script.strict:
            if self.cursor < len(self._expected):
                expected = self._expected[self.cursor]
                expected_request = cast(Request, expected.request)
                if request_key(expected_request.command, expected_request.arguments) == key:
                    self.cursor += 1
                    return expected, None
                return None, (
                    f"expected {describe(expected_request)} (request {expected.number} of the "
                    f"recorded connection), got {describe(request)}"
                )
            return None, f"{describe(request)} comes after the last recorded request"
        occurrences = self._lenient_occurrences().get(key)
        if not occurrences:
            return None, f"no recorded reply to {describe(request)}"
        later = [entry for entry in occurrences if entry[0] > self._position]
        position, exchange = later[0] if later else occurrences[-1]
        self._position = max(self._position, position)
        return exchange, None

    def _lenient_occurrences(self) -> dict[RequestKey, list[tuple[int, Exchange]]]:
        """Per request, where it was answered in the recorded timeline: this connection's
        requests first, then the other connections' in order."""
        if self._occurrences is None:
            ordered = [self._conversation] if self._conversation else []
            ordered += [c for c in self.script.conversations if c is not self._conversation]
            answered = [e for c in ordered for e in c.requests() if e.reply is not None]
            self._occurrences = {}
            for position, exchange in enumerate(answered):
                recorded = cast(Request, exchange.request)
                key = request_key(recorded.command, recorded.arguments)
                self._occurrences.setdefault(key, []).append((position, exchange))
        return self._occurrences

    def _computed_reply(self, request: Request) -> bytes | None:
        """The reply QEMU's protocol and schema decide alone, in QEMU's order of checks."""
        connection = self.connection
        try:
            schema = self.script.schema
            if schema is not None:
                schema.check_request(request.command, request.arguments, request.oob)
            if request.command != "qmp_capabilities":
                return None
            if schema is None or not schema.has_command("qmp_capabilities"):
                CAPABILITIES_SIGNATURE.convert_arguments(request.arguments)
            raise QMPError(ALREADY_NEGOTIATED, ErrorClass.COMMAND_NOT_FOUND)
        except QMPError as error:
            return connection.send_error(error, request.request_id, request.has_id)


def _with_id(reply: Mapping[str, Any], request: Request) -> bytes:
    """A recorded reply with ``request``'s id, or none if it had none, in QEMU's bytes."""
    message = {key: value for key, value in reply.items() if key != "id"}
    if request.has_id:
        message["id"] = request.request_id
    return encode_message(message)


def stamped(event: Mapping[str, Any], now: float) -> bytes:
    """A recorded event with the timestamp of ``now`` (seconds since the epoch), as QEMU
    stamps it (``qmp_event_build_dict``: ``g_get_real_time()`` in seconds and microseconds)."""
    microseconds = int(now * 1_000_000)
    timestamp = {"seconds": microseconds // 1_000_000, "microseconds": microseconds % 1_000_000}
    return encode_message({**event, "timestamp": timestamp})


# -- I/O ------------------------------------------------------------------------------------------


class _ReplayProtocol(asyncio.Protocol):
    """One client of a :class:`ReplayServer`."""

    def __init__(self, server: ReplayServer) -> None:
        self._server = server
        self._session = server.script.open_session()
        self._transport: asyncio.Transport | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server._protocols.add(self)
        self._transport.write(self._session.greeting())

    def data_received(self, data: bytes) -> None:
        self._session.receive_data(data)
        self._pump()

    def eof_received(self) -> bool:
        self._session.receive_eof()
        self._pump()
        return False  # QEMU closes a connection whose client stopped sending

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._server._protocols.discard(self)

    def close(self) -> None:
        """Hang up on the client."""
        if self._transport is not None:
            self._transport.close()

    def _pump(self) -> None:
        transport = self._transport
        while transport is not None and not transport.is_closing():
            event = self._session.next_event()
            if event is NEED_DATA:
                return
            answer = self._session.answer(event)
            arrival = self._loop.time()
            for message in answer.events_before:
                transport.write(stamped(message, time.time()))
            if answer.reply is not None:
                transport.write(answer.reply)
            if answer.later:
                self._schedule(arrival, answer.later)

    def _schedule(
        self, arrival: float, actions: tuple[tuple[float, dict[str, Any] | None], ...]
    ) -> None:
        """Run ``actions`` one after the other at their offsets after ``arrival``."""
        offset, message = actions[0]

        def act() -> None:
            self._timers.discard(timer)
            transport = self._transport
            if transport is None or transport.is_closing():
                return
            if message is None:
                transport.close()
                return
            transport.write(stamped(message, time.time()))
            if len(actions) > 1:
                self._schedule(arrival, actions[1:])

        timer = self._loop.call_at(arrival + offset, act)
        self._timers.add(timer)


class ReplayServer:
    """Serves a transcript on sockets (module docstring); use as an async context manager.

    ::

        async with ReplayServer(read_transcript("session.jsonl"), strict=True) as replay:
            await replay.serve("unix:/tmp/replay.sock,server=on,wait=off")
            ...  # run the client under test
        assert replay.problems() == []
    """

    def __init__(self, transcript: Transcript, *, strict: bool = False) -> None:
        self.script = ReplayScript(transcript, strict=strict)
        self.listeners: list[Listener] = []
        self._protocols: set[_ReplayProtocol] = set()

    async def serve(self, address: str | Address) -> Listener:
        """Listen on ``address`` (QEMU's syntax; a listening unix or tcp address)."""
        if isinstance(address, str):
            address = parse_address(address)
        if address.transport not in ("unix", "tcp") or not address.server:
            raise AddressError(
                f"'{address}' is not a listening address "
                "(unix:PATH,server=on,wait=off or tcp:HOST:PORT,server=on,wait=off)"
            )
        listener = await start_listener(address, lambda: _ReplayProtocol(self))
        self.listeners.append(listener)
        return listener

    def problems(self) -> list[str]:
        """What went against the transcript so far (strict mode: and what was not asked)."""
        return self.script.final_problems()

    async def close(self) -> None:
        """Stop listening and hang up on every client."""
        for listener in self.listeners:
            await listener.close()
        self.listeners.clear()
        for protocol in list(self._protocols):
            protocol.close()

    async def __aenter__(self) -> ReplayServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


# -- the command ----------------------------------------------------------------------------------


def replay_command(file: str, qmp: str, *, strict: bool) -> int:
    """``qmonitor replay FILE -qmp ADDR [--strict]``: serve until SIGINT or SIGTERM, then
    report. Exit status 1 for a bad file or address, and in strict mode for any problem."""
    try:
        transcript = read_transcript(file)
        address = parse_address(qmp)
        return asyncio.run(_serve(transcript, address, strict))
    except (TranscriptError, AddressError, OSError) as exc:
        print(f"qmonitor replay: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the signal handlers are in place
        return 130


async def _serve(transcript: Transcript, address: Address, strict: bool) -> int:
    async with ReplayServer(transcript, strict=strict) as replay:
        listener = await replay.serve(address)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        mode = "strict" if strict else "lenient"
        print(
            f"qmonitor replay: QMP on {listener.bound_address} "
            f"({replay.script.recorded_requests} recorded requests, {mode})",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    problems = replay.problems()
    answered = replay.script.requests_answered
    if not problems:
        print(f"qmonitor replay: {answered} requests answered, no problems", file=sys.stderr)
        return 0
    counted = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
    print(f"qmonitor replay: {answered} requests answered, {counted}:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 1 if strict else 0
