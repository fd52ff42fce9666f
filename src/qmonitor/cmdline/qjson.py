"""JSON option values, parsed as QEMU's ``qobject_from_json()`` parses them (qobject/qjson.c).

``-object``, ``-device``, ``-audiodev`` and ``-display`` take a JSON object when their value
starts with ``{`` (libvirt passes ``-object {"qom-type":...}`` and ``-audiodev {"id":...}``).
QEMU feeds the whole value to its JSON streamer and flushes it, so the value is QEMU's JSON (it
takes ``'single-quoted'`` strings too) with QEMU's error texts; the lexer and parser are the ones
qmonitor's QMP framing already reproduces byte for byte (:mod:`qmonitor.qmp.stream`).
"""

from __future__ import annotations

from qmonitor.core.errors import QMonitorError
from qmonitor.qmp.stream import NEED_DATA, JSONParseError, JSONStreamFramer


class JSONValueError(QMonitorError):
    """A value QEMU's JSON parser refuses, with QEMU's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def parse_json_value(text: str) -> object:
    """``qobject_from_json(text)``: exactly one JSON value, or JSONValueError.

    qjson.c consume_json(): the first error wins; a second value, or anything at all after the
    first value, is "Expecting at most one JSON value"; no value is "Expecting a JSON value".
    """
    framer = JSONStreamFramer()
    # Command-line arguments are bytes to QEMU; Python decodes them with surrogateescape.
    framer.receive_data(text.encode("utf-8", "surrogateescape"))
    values: list[object] = []
    flushed = False
    while not flushed:
        event = framer.next_event()
        if event is NEED_DATA:
            flushed = True
            flush_event = framer.flush()
            if flush_event is None:
                break
            event = flush_event
        if values:
            raise JSONValueError("Expecting at most one JSON value")
        if isinstance(event, JSONParseError):
            raise JSONValueError(event.desc)
        values.append(event.value)
    if not values:
        raise JSONValueError("Expecting a JSON value")
    return values[0]
