"""A transcript as a timeline a person can read: ``qmonitor transcript FILE``.

One line per record: the time (seconds since the recording started), the connection, the
direction (``->`` client to server, ``<-`` server to client, ``==`` the connection opened or
closed) and the message as it was sent, its line end left out::

      0.000000  #1  ==  connected
      0.002913  #1  <-  {"QMP": {"version": {"qemu": {"micro": 22, ...}}, "capabilities": ["oob"]}}
      0.015110  #1  ->  {"execute":"qmp_capabilities"}
      0.015642  #1  <-  {"return": {}}

On a terminal (and unless ``NO_COLOR`` is set) requests are bold, replies green, errors red,
events yellow, greetings cyan and connection lines dim. A message longer than
:data:`MESSAGE_PREVIEW_CHARS` is cut, saying how much was left out, unless ``--full``.
``--json`` prints the transcript itself, one JSON object per line (a libvirt ``.replies`` file
comes out converted).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Final, TextIO

from qmonitor.core.errors import QMPError
from qmonitor.testing.transcript import (
    ConnectionRecord,
    MessageRecord,
    Record,
    Transcript,
    TranscriptError,
    header_line,
    parse_messages,
    read_transcript,
    record_line,
)

MESSAGE_PREVIEW_CHARS: Final = 500
"""Characters of a message shown without ``--full`` (a ``query-qmp-schema`` reply is 200 KB)."""

_RESET: Final = "\033[0m"
_STYLES: Final = {
    "request": "\033[1m",  # bold
    "return": "\033[32m",  # green
    "error": "\033[31m",  # red
    "event": "\033[33m",  # yellow
    "greeting": "\033[36m",  # cyan
    "connection": "\033[2m",  # dim
}
_CONTROL_ESCAPES: Final = {"\r": "\\r", "\n": "\\n", "\t": "\\t", "\033": "\\e"}


def kind_of(record: Record) -> str:
    """What a record is, for its colour: request, return, error, event, greeting, connection."""
    if isinstance(record, ConnectionRecord):
        return "connection"
    if record.direction == "client":
        return "request"
    values = parse_messages(record.data)
    value = values[0] if values else None
    if isinstance(value, dict):
        for kind, key in (("greeting", "QMP"), ("event", "event"), ("error", "error")):
            if key in value:
                return kind
    return "error" if isinstance(value, QMPError) else "return"


def message_text(data: bytes, full: bool) -> str:
    """A message for one line: its line end dropped, control characters made visible."""
    text = data.decode("utf-8", "backslashreplace").rstrip("\r\n")
    for character, escape in _CONTROL_ESCAPES.items():
        text = text.replace(character, escape)
    if not full and len(text) > MESSAGE_PREVIEW_CHARS:
        left_out = len(text) - MESSAGE_PREVIEW_CHARS
        text = f"{text[:MESSAGE_PREVIEW_CHARS]}... ({left_out} more characters)"
    return text


def timeline(transcript: Transcript, *, colour: bool = False, full: bool = False) -> Iterator[str]:
    """The lines of the timeline (module docstring)."""
    for record in transcript.records:
        if isinstance(record, MessageRecord):
            arrow = "->" if record.direction == "client" else "<-"
            text = message_text(record.data, full)
        else:
            arrow = "=="
            text = "connected" if record.state == "open" else f"closed by {record.closed_by}"
        line = f"{record.time:11.6f}  #{record.connection}  {arrow}  {text}"
        if colour:
            line = f"{_STYLES[kind_of(record)]}{line}{_RESET}"
        yield line


def use_colour(stream: TextIO) -> bool:
    """Colour on a terminal only, and not when NO_COLOR is set (https://no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def transcript_command(file: str, *, as_json: bool, full: bool) -> int:
    """``qmonitor transcript FILE [--json] [--full]``."""
    try:
        transcript = read_transcript(file)
    except TranscriptError as exc:
        print(f"qmonitor transcript: {exc}", file=sys.stderr)
        return 1
    try:
        if as_json and transcript.source_format == "transcript":
            with open(file, encoding="utf-8") as source:
                sys.stdout.writelines(source)
        elif as_json:
            fields = {k: v for k, v in transcript.header.items() if k != "qmonitor-transcript"}
            print(header_line(**fields))
            for record in transcript.records:
                print(record_line(record))
        else:
            for line in timeline(transcript, colour=use_colour(sys.stdout), full=full):
                print(line)
        sys.stdout.flush()
    except BrokenPipeError:  # `qmonitor transcript FILE | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
