"""Transcripts of QMP conversations: the file format, its reader and writer, and what it says.

``qmonitor record`` writes a transcript, ``qmonitor replay`` serves one and ``qmonitor
transcript`` shows one. The format is JSON lines, so that ``grep``, ``jq`` and a text editor
work on it, and one line is one thing that happened::

    {"qmonitor-transcript": 1, "recorded": "2025-05-01T10:00:00Z", "upstream": "qemu-system-..."}
    {"time": 0.000412, "connection": 1, "state": "open"}
    {"time": 0.001873, "connection": 1, "direction": "server", "message": "{\\"QMP\\": ...}\\r\\n"}
    {"time": 0.002310, "connection": 1, "direction": "client", "message": "{\\"execute\\": ...}"}
    {"time": 9.104202, "connection": 1, "state": "closed", "by": "client"}

- The first line is the header: the format version, and what was recorded.
- ``time`` is seconds since the recorder started (monotonic clock, microsecond precision).
- ``connection`` numbers the client connections in the order they were opened, from 1.
- ``direction`` says who sent the message: ``client`` (a request, or whatever the client sent)
  or ``server`` (the greeting, a reply or an event).
- ``message`` is the message exactly as it was sent, every byte kept: whitespace, the
  ``\\r\\n`` after QEMU's lines, a client's single-quoted strings or its garbage. Bytes that are
  not UTF-8 are kept as ``message-base64`` instead. Concatenating a connection's messages in
  one direction gives back the byte stream.
- ``state`` records a connection opening and closing; ``by`` says which side closed it first
  (``client``, ``server``, or ``recorder`` when the recorder stopped).

A byte stream is cut into messages by the sans-I/O framer of :mod:`qmonitor.qmp.stream` (QMP
input is not line-based: qemu.qmp sends no newline), wrapped here as :class:`MessageSplitter`.
Whitespace after a message belongs to it, as a line end belongs to its line (when it arrives in
the same read as the message; otherwise it begins the next record).

:func:`read_transcript` also reads libvirt's ``.replies`` files (``tests/qemucapabilitiesdata``):
JSON values separated by an empty line, a line break inside one standing for a space, each
command followed by its reply (``qemuMonitorTestProcessFileEntries`` in libvirt's
``tests/qemumonitortestutils.c``). They hold no greeting, times or events: the greeting is made
from the file's ``query-version`` reply, offering ``oob`` as QEMU 7.2 does, or is libvirt's own
default greeting (QEMU 1.0.1, no capabilities) when there is none.

:func:`conversations` says what a transcript means: per connection, the greeting, and each
input of the client with its reply and the events that followed it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final, Literal

from qmonitor.core.errors import QMonitorError, QMPError
from qmonitor.qmp.encode import encode_message
from qmonitor.qmp.messages import InvalidRequest, Request
from qmonitor.qmp.protocol import check_request
from qmonitor.qmp.stream import NEED_DATA, JSONMessage, JSONParseError, JSONStreamFramer

FORMAT_VERSION: Final = 1
HEADER_KEY: Final = "qmonitor-transcript"
LIBVIRT_DEFAULT_VERSION: Final = {
    "qemu": {"micro": 1, "minor": 0, "major": 1},
    "package": "(qemu-kvm-1.0.1)",
}
"""The version in libvirt's default test greeting (``QEMU_JSON_GREETING``)."""

_WHITESPACE: Final = b" \t\r\n"

Direction = Literal["client", "server"]
Closer = Literal["client", "server", "recorder"]


class TranscriptError(QMonitorError):
    """A file that is not a transcript (or a libvirt .replies file); the text says where."""


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message sent on a connection, as the bytes that were sent."""

    time: float
    connection: int
    direction: Direction
    data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """A connection opened (``closed_by`` None) or closed."""

    time: float
    connection: int
    state: Literal["open", "closed"]
    closed_by: Closer | None = None


Record = MessageRecord | ConnectionRecord


@dataclass(frozen=True, slots=True)
class Transcript:
    """A transcript in memory: its header and its records in order."""

    header: dict[str, Any]
    records: tuple[Record, ...]
    source_format: Literal["transcript", "libvirt-replies"] = "transcript"


def one_line(exc: Exception) -> str:
    """An error as the rest of a one-line message: an OSError without its errno prefix."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


# -- lines --------------------------------------------------------------------------------------


def header_line(**fields: object) -> str:
    """The first line of a transcript, with ``fields`` describing the recording."""
    return json.dumps({HEADER_KEY: FORMAT_VERSION, **fields}, ensure_ascii=False)


def record_line(record: Record) -> str:
    """One record as its line (without the line end)."""
    line: dict[str, object] = {"time": round(record.time, 6), "connection": record.connection}
    if isinstance(record, MessageRecord):
        line["direction"] = record.direction
        try:
            line["message"] = record.data.decode("utf-8")
        except UnicodeDecodeError:
            line["message-base64"] = base64.b64encode(record.data).decode("ascii")
    else:
        line["state"] = record.state
        if record.closed_by is not None:
            line["by"] = record.closed_by
    return json.dumps(line, ensure_ascii=False)


def _parse_record(line: object, where: str) -> Record:
    if not isinstance(line, dict):
        raise TranscriptError(f"{where}: a record must be a JSON object")
    time = line.get("time")
    connection = line.get("connection")
    if type(time) not in (int, float) or type(connection) is not int or connection < 1:
        raise TranscriptError(f"{where}: a record needs 'time' (seconds) and 'connection' (>= 1)")
    assert isinstance(time, int | float)
    direction = line.get("direction")
    if direction in ("client", "server"):
        if isinstance(line.get("message"), str):
            data = line["message"].encode("utf-8", "surrogatepass")
        elif isinstance(line.get("message-base64"), str):
            try:
                data = base64.b64decode(line["message-base64"], validate=True)
            except binascii.Error:
                raise TranscriptError(f"{where}: 'message-base64' is not base64") from None
        else:
            raise TranscriptError(f"{where}: a message record needs 'message'")
        return MessageRecord(float(time), connection, direction, data)
    state = line.get("state")
    if state == "open":
        return ConnectionRecord(float(time), connection, "open")
    if state == "closed" and line.get("by") in ("client", "server", "recorder"):
        return ConnectionRecord(float(time), connection, "closed", line["by"])
    raise TranscriptError(
        f"{where}: a record needs 'direction' (client or server) or 'state' (open, or closed "
        "with 'by')"
    )


# -- reading ------------------------------------------------------------------------------------


def read_transcript(path: str) -> Transcript:
    """Read a transcript, or a libvirt ``.replies`` file; :class:`TranscriptError` if neither."""
    try:
        with open(path, "rb") as file:
            content = file.read()
    except OSError as exc:
        raise TranscriptError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TranscriptError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    first_line = text.split("\n", 1)[0]
    try:
        first = json.loads(first_line)
    except ValueError:
        first = None
    if isinstance(first, dict) and HEADER_KEY in first:
        return parse_transcript(text, path)
    return parse_libvirt_replies(text, path)


def parse_transcript(text: str, name: str) -> Transcript:
    """Parse the text of a transcript (``name`` is used in error messages)."""
    lines = text.splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or HEADER_KEY not in header:
        raise TranscriptError(f"{name}:1: not a qmonitor transcript header")
    if header[HEADER_KEY] != FORMAT_VERSION:
        raise TranscriptError(
            f"{name}:1: transcript format {header[HEADER_KEY]!r} is not supported "
            f"(this qmonitor reads format {FORMAT_VERSION})"
        )
    records = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TranscriptError(f"{name}:{number}: not JSON ({exc.msg})") from None
        records.append(_parse_record(value, f"{name}:{number}"))
    return Transcript(header, tuple(records))


def parse_libvirt_replies(text: str, name: str) -> Transcript:
    """Parse a libvirt ``.replies`` file into a transcript of one connection (module docstring).

    As libvirt's reader does, a line break followed by another line break ends an entry and any
    other line break is a space; entries alternate command, reply.
    """
    entries: list[tuple[int, Any]] = []
    line_number = 1
    for block in text.split("\n\n"):
        start = line_number + (len(block) - len(block.lstrip("\n")))
        line_number += block.count("\n") + 2
        if not block.strip():
            continue
        try:
            value = json.loads(block.replace("\n", " "))
        except json.JSONDecodeError as exc:
            raise TranscriptError(
                f"{name}:{start}: neither a qmonitor transcript nor a libvirt .replies file "
                f"(not JSON: {exc.msg})"
            ) from None
        if not isinstance(value, dict):
            raise TranscriptError(f"{name}:{start}: a .replies entry must be a JSON object")
        entries.append((start, value))
    if not entries:
        raise TranscriptError(f"{name}: empty: no transcript header and no .replies entries")
    if len(entries) % 2:
        raise TranscriptError(f"{name}:{entries[-1][0]}: missing response for this command")
    version: dict[str, Any] = LIBVIRT_DEFAULT_VERSION
    capabilities: list[str] = []
    for (line, command), (_, reply) in zip(entries[::2], entries[1::2], strict=True):
        if not isinstance(command.get("execute"), str):
            raise TranscriptError(f"{name}:{line}: a .replies command needs 'execute'")
        if command["execute"] == "query-version" and isinstance(reply.get("return"), dict):
            version, capabilities = insertion_ordered(reply["return"]), ["oob"]
    greeting = encode_message({"QMP": {"version": version, "capabilities": capabilities}})
    records: list[Record] = [
        ConnectionRecord(0.0, 1, "open"),
        MessageRecord(0.0, 1, "server", greeting),
    ]
    for (_, command), (_, reply) in zip(entries[::2], entries[1::2], strict=True):
        # Sent as libvirt sends it (compact, a line end after it); answered as QEMU writes.
        sent = json.dumps(command, separators=(",", ":"), ensure_ascii=False) + "\r\n"
        records.append(MessageRecord(0.0, 1, "client", sent.encode("utf-8")))
        records.append(MessageRecord(0.0, 1, "server", encode_message(insertion_ordered(reply))))
    header = {HEADER_KEY: FORMAT_VERSION, "converted-from": "libvirt .replies", "source": name}
    return Transcript(header, tuple(records), "libvirt-replies")


# -- writing ------------------------------------------------------------------------------------


class TranscriptWriter:
    """Writes a transcript beside its destination and puts it in place only when complete.

    Records go to a hidden temporary file in the destination's directory; :meth:`commit` syncs
    it and renames it over the destination (atomic), :meth:`discard` removes it. So a
    recording that fails leaves no partial transcript behind, and one that succeeds never
    shows a half-written file to a reader.
    """

    def __init__(self, path: str, file: IO[str], temporary_path: str) -> None:
        self.path = path
        self._file = file
        self._temporary_path = temporary_path
        self.messages = 0
        self.connections = 0

    @classmethod
    def create(cls, path: str, **header: object) -> TranscriptWriter:
        """Start writing ``path``; ``header`` describes the recording."""
        directory, base = os.path.split(os.path.abspath(path))
        descriptor, temporary_path = tempfile.mkstemp(prefix=f".{base}.", dir=directory)
        file = os.fdopen(descriptor, "w", encoding="utf-8")
        file.write(header_line(**header) + "\n")
        return cls(path, file, temporary_path)

    def write(self, record: Record) -> None:
        """Append one record."""
        if isinstance(record, MessageRecord):
            self.messages += 1
        elif record.state == "open":
            self.connections += 1
        self._file.write(record_line(record) + "\n")

    def commit(self) -> None:
        """Finish the file and put it in place."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temporary_path, self.path)

    def discard(self) -> None:
        """Give up: remove what was written."""
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temporary_path)


# -- framing --------------------------------------------------------------------------------------


class MessageSplitter:
    """Cuts one direction of a QMP byte stream into messages, keeping every byte (sans I/O).

    ``receive_data`` returns the complete messages the bytes finished, each as the exact bytes
    that made it, with the whitespace after it. :mod:`qmonitor.qmp.stream` decides where a
    message ends, as QEMU does; the bytes it has consumed are those it no longer holds.
    """

    def __init__(self) -> None:
        self._framer = JSONStreamFramer()
        self._unclaimed = bytearray()  # bytes received and not yet part of a returned message

    def receive_data(self, data: bytes) -> list[bytes]:
        """Feed bytes; return the messages they completed."""
        self._unclaimed += data
        self._framer.receive_data(data)
        messages = []
        while self._framer.next_event() is not NEED_DATA:
            end = max(0, len(self._unclaimed) - self._framer.buffered_bytes)
            while end < len(self._unclaimed) and self._unclaimed[end] in _WHITESPACE:
                end += 1
            if end:
                messages.append(bytes(self._unclaimed[:end]))
                del self._unclaimed[:end]
        return messages

    def remainder(self) -> bytes:
        """The bytes of an unfinished message (what is left when the stream ends)."""
        return bytes(self._unclaimed)


def parse_messages(data: bytes) -> list[object]:
    """The JSON values in ``data`` as QEMU reads them; an unparsable piece is a QMPError."""
    framer = JSONStreamFramer()
    framer.receive_data(data)
    framer.receive_eof()
    values: list[object] = []
    while (event := framer.next_event()) is not NEED_DATA:
        if type(event) is JSONParseError:
            values.append(QMPError(event.desc))
        elif type(event) is JSONMessage:
            values.append(event.value)
    return values


# -- meaning ------------------------------------------------------------------------------------


@dataclass(slots=True)
class RecordedEvent:
    """An event the server sent after a request, before or after that request's reply."""

    offset: float  # seconds after the request arrived
    message: dict[str, Any]
    before_reply: bool  # QEMU sends STOP before the reply to "stop", for instance


@dataclass(slots=True)
class Exchange:
    """One input of a client (a request, or something QEMU rejects) and what answered it."""

    number: int  # 1, 2, ... among the connection's inputs
    time: float
    data: bytes  # the input as sent
    request: Request | InvalidRequest
    reply: dict[str, Any] | None = None
    events: list[RecordedEvent] = field(default_factory=list)
    close_offset: float | None = None  # the server closed the connection this long after


@dataclass(slots=True)
class Conversation:
    """What happened on one connection."""

    connection: int
    greeting: dict[str, Any] | None = None
    exchanges: list[Exchange] = field(default_factory=list)

    def requests(self) -> list[Exchange]:
        """The exchanges whose input was a well-formed request."""
        return [e for e in self.exchanges if type(e.request) is Request]


def conversations(transcript: Transcript) -> list[Conversation]:
    """Pair each input with its reply, and attach events, per connection.

    A reply goes to the waiting input with the same ``id``, else to the first waiting input
    without one: QEMU answers in-band requests in order (monitor/qmp.c), and echoes every id.
    An event goes to the request QEMU was working on: the first one still waiting for its
    reply (``before_reply``), else the last one answered; so does the server closing the
    connection. A client that sends several requests at once (``socat``, libvirt's
    pipelining) gets each event attached where QEMU emitted it.

    What the server sent is kept as :func:`insertion_ordered` values, so that
    :func:`~qmonitor.qmp.encode.encode_message` writes them back byte for byte.
    """
    by_connection: dict[int, Conversation] = {}
    waiting: dict[int, list[Exchange]] = {}
    oob_enabled: dict[int, bool] = {}
    last_answered: dict[int, Exchange] = {}
    for record in transcript.records:
        number = record.connection
        conversation = by_connection.setdefault(number, Conversation(number))
        pending = waiting.setdefault(number, [])
        if isinstance(record, ConnectionRecord):
            closing = last_answered.get(number)
            if record.closed_by == "server" and closing is not None:
                closing.close_offset = record.time - closing.time
            continue
        if record.direction == "client":
            for value in parse_messages(record.data):
                if isinstance(value, QMPError):
                    request: Request | InvalidRequest = InvalidRequest(value)
                else:
                    request = check_request(value, oob_enabled.get(number, False))
                exchange = Exchange(
                    len(conversation.exchanges) + 1, record.time, record.data, request
                )
                conversation.exchanges.append(exchange)
                pending.append(exchange)
            continue
        for value in parse_messages(record.data):
            if not isinstance(value, dict):
                continue
            value = insertion_ordered(value)
            if "QMP" in value and conversation.greeting is None:
                conversation.greeting = value
            elif "event" in value:
                working = next((e for e in pending if type(e.request) is Request), None)
                target = working or last_answered.get(number)
                if target is not None:
                    offset = record.time - target.time
                    target.events.append(RecordedEvent(offset, value, working is not None))
            elif pending:
                exchange = _waiting_for(pending, value)
                pending.remove(exchange)
                exchange.reply = value
                if type(exchange.request) is Request:
                    last_answered[number] = exchange
                if _enabled_oob(exchange):
                    oob_enabled[number] = True
    return sorted(by_connection.values(), key=lambda c: c.connection)


def insertion_ordered(value: Any) -> Any:
    """A value parsed from QEMU's output, with its objects' members in the order QEMU
    inserted them, so that :mod:`qmonitor.qmp.encode` writes it back byte for byte.

    QEMU writes a QDict bucket by bucket, and within a bucket the member inserted last first
    (:mod:`qmonitor.core.qdict`): ``{"status": ..., "singlestep": ..., "running": ...}`` for
    query-status, where ``status`` and ``singlestep`` share a bucket. The encoder orders by
    bucket whatever the order it is given, so reversing every object's members gives back the
    order within each bucket.
    """
    result = _reversed_shallow(value)
    containers = [result] if isinstance(result, dict | list) else []
    while containers:  # iterative: QEMU nests up to 1024 levels, past Python's recursion
        container = containers.pop()
        positions = list(container) if isinstance(container, dict) else range(len(container))
        for position in positions:
            child = container[position]
            if isinstance(child, dict | list):
                container[position] = copy = _reversed_shallow(child)
                containers.append(copy)
    return result


def _reversed_shallow(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: value[key] for key in reversed(value)}
    return list(value) if isinstance(value, list) else value


def _waiting_for(pending: Sequence[Exchange], reply: dict[str, Any]) -> Exchange:
    if "id" in reply:
        for exchange in pending:
            request = exchange.request
            if request.has_id and _same_json(request.request_id, reply["id"]):
                return exchange
    for exchange in pending:
        if not exchange.request.has_id:
            return exchange
    return pending[0]


def _same_json(left: object, right: object) -> bool:
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


def _enabled_oob(exchange: Exchange) -> bool:
    request = exchange.request
    return (
        type(request) is Request
        and request.command == "qmp_capabilities"
        and exchange.reply is not None
        and "return" in exchange.reply
        and "oob" in (request.arguments.get("enable") or [])
    )
