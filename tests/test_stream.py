"""qmonitor.qmp.stream: QMP input framing, QEMU's parse errors, limits and resynchronisation.

The tables below are the recorded truth: each input was sent once by hand to QEMU 7.2.22
(``qemu-system-x86_64 -machine none -display none -nodefaults -qmp unix:...``) on a fresh
connection after ``qmp_capabilities``, and the replies noted. A parse error is its ``desc``; a
value is what QEMU parsed, seen through the reply to it (a command's reply, or "QMP input must
be a JSON object" for a non-object) and, for numbers and strings, by sending it as the ``id`` of
``query-version`` and reading the echo.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import cycle, pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qmonitor.qmp.stream import (
    MAX_NESTING,
    MAX_TOKEN_COUNT,
    MAX_TOKEN_SIZE,
    NEED_DATA,
    Event,
    JSONMessage,
    JSONParseError,
    JSONStreamFramer,
)

PE = "JSON parse error, "
QUERY = b'{"execute":"query-version"}'
QUERY_VALUE = {"execute": "query-version"}
QUERY_SHOWN = "value " + repr(QUERY_VALUE)  # as view() shows it


class V:
    """Expected JSONMessage; compared by repr so that 1 != 1.0 and 0.0 != -0.0."""

    def __init__(self, value: object) -> None:
        self.value = value


def view(items: Iterable[Event | V | str]) -> list[str]:
    shown = []
    for item in items:
        if isinstance(item, JSONParseError):
            shown.append(item.desc)
        elif isinstance(item, str):
            shown.append(item)
        else:
            shown.append("value " + repr(item.value))
    return shown


def feed(chunks: Iterable[bytes], framer: JSONStreamFramer | None = None) -> list[Event]:
    """Every event, pulling after each chunk until NEED_DATA."""
    framer = framer or JSONStreamFramer()
    events: list[Event] = []
    for chunk in chunks:
        framer.receive_data(chunk)
        while (event := framer.next_event()) is not NEED_DATA:
            events.append(event)
    return events


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


# QEMU 7.2.22 and qmonitor reply alike: (input, replies).
SAME_AS_QEMU: list[tuple[bytes, list[V | str]]] = [
    # Syntax errors: one per message, found when its brackets balance.
    (b'{ "execute": }', [PE + "expecting value"]),
    (b'{"a": 1,}', [PE + "expecting value"]),
    (b"[1,]", [PE + "expecting value"]),
    (b"[,1]", [PE + "expecting value"]),
    (b"{,}", [PE + "expecting value"]),
    (b'{"a":}', [PE + "expecting value"]),
    (b'{"a" 1}', [PE + "missing : in object pair"]),
    (b'{"a"}', [PE + "missing : in object pair"]),
    (b"{1: 2}", [PE + "key is not a string in object"]),
    (b'{"a": 1 "b": 2}', [PE + "expected separator in dict"]),
    (b"[1 2]", [PE + "expected separator in list"]),
    (b'{"execute": tru}', [PE + "invalid keyword 'tru'"]),
    (b"nul ", [PE + "invalid keyword 'nul'"]),
    (b'{"a": 0e5}', [PE + "expected separator in dict"]),  # 0, e, 5: IN_ZERO takes no 'e'
    (b'{"a": -0x1}', [PE + "expected separator in dict"]),
    (b'{"execute":"query-version","id":0e5}', [PE + "expected separator in dict"]),
    # Duplicate keys, but not the same key in different objects.
    (b'{"a":1,"a":2}', [PE + "duplicate key"]),
    (b'{"a":{"b":1},"b":{"b":1}}', [V({"a": {"b": 1}, "b": {"b": 1}})]),
    # Brackets alone, and the message end when a count goes negative.
    (b"}", [PE + "expecting value"]),
    (b"]", [PE + "expecting value"]),
    (b"[}", [PE + "expecting value"]),
    (b"{]", [PE + "expecting value"]),
    (b"[}]", [PE + "expecting value", PE + "expecting value"]),
    (b'{"a": 1}}', [V({"a": 1}), PE + "expecting value"]),
    (QUERY[:-1] + b',"id":1}}}', [V({**QUERY_VALUE, "id": 1})] + [PE + "expecting value"] * 2),
    (QUERY[:-1] + b',"id":"x"}]', [V({**QUERY_VALUE, "id": "x"}), PE + "expecting value"]),
    # Framing: brackets, not lines; any top-level value; single quotes.
    (b'{"execute":"x"} {"execute":"y"}', [V({"execute": "x"}), V({"execute": "y"})]),
    (b'{"execute":"x", "x": 1', []),
    (b"1 ", [V(1)]),
    (b"1", []),  # a number ends only at the next byte
    (b'"s"', [V("s")]),
    (b"'s'", [V("s")]),
    (b"{'execute': 'x'}", [V({"execute": "x"})]),
    (b'{\'a\': "it\'s", "b": \'say "hi"\'}', [V({"a": "it's", "b": 'say "hi"'})]),
    (b'{"a": "\\\'"}', [V({"a": "'"})]),
    # Strings: escapes, \u, modified UTF-8 (util/unicode.c).
    (b'{"a": "\\x"}', [PE + "invalid escape sequence in string"]),
    (b'{"a": "\\u12"}', [PE + '\\u12" is not a valid Unicode character']),
    (b'{"a": "\\u12G4"}', [PE + "\\u12G4 is not a valid Unicode character"]),
    (b'{"a": "\\uD800"}', [PE + "\\uD800 is not a valid Unicode character"]),
    (b'{"a": "\\uDC00"}', [PE + "\\uDC00 is not a valid Unicode character"]),
    (b'{"a": "\\uD800\\u0041"}', [PE + "\\uD800 is not a valid Unicode character"]),
    (b'{"a": "\\uFFFE"}', [PE + "\\uFFFE is not a valid Unicode character"]),
    (b'{"a": "\\uFDD0"}', [PE + "\\uFDD0 is not a valid Unicode character"]),
    (b'{"a": "\\u0000\\ufdef"}', [PE + "\\ufdef is not a valid Unicode character"]),
    (
        b'{"a": "\\ud83d\\ude00\\uDBFF\\uDFFF"}',
        [PE + "\\uDBFF\\uDFFF is not a valid Unicode character"],
    ),
    (b'{"a": "\\u\xc3\xa9zz"}', [PE + "\\u\u00e9zz is not a valid Unicode character"]),
    (b'{"a": "\xc3("}', [PE + "invalid UTF-8 sequence in string"]),
    (b'{"a": "\xef\xbf\xbe"}', [PE + "invalid UTF-8 sequence in string"]),  # U+FFFE
    (b'{"a": "\xef\xb7\x90"}', [PE + "invalid UTF-8 sequence in string"]),  # U+FDD0
    (b'{"a": "\xc0\xaf"}', [PE + "invalid UTF-8 sequence in string"]),  # overlong
    (b'{"a": "\xed\xa0\x80"}', [PE + "invalid UTF-8 sequence in string"]),  # surrogate
    (b'{"a": "\x80"}', [PE + "invalid UTF-8 sequence in string"]),
    (b'{"a": "\xf4\x90\x80\x80"}', [PE + "invalid UTF-8 sequence in string"]),
    (b'{"a": "\xf8\x88\x80\x80\x80"}', [PE + "invalid UTF-8 sequence in string"]),
    (b'{"a": "\xc0\x80"}', [V({"a": "\x00"})]),
    # Lexical errors that end where they stand: no second error to save.
    (b'{"a": -}', [PE + "stray '-}'"]),
    (b'{"a": 1.}', [PE + "stray '1.}'"]),
    (b'{"a": 1e}', [PE + "stray '1e}'"]),
    (b"A", [PE + "stray 'A'"]),
    (b"\x7f", [PE + "stray '\x7f'"]),
    (b"\xc3\xa9", [PE + "stray '\ufffd'"]),
    (b"\x80", [PE + "stray '\ufffd'"]),
    (b'{"execute":"query-version","id":1.}' + QUERY, [PE + "stray '1.}'", V(QUERY_VALUE)]),
    (b'{"execute":"query-version","id":-}' + QUERY, [PE + "stray '-}'", V(QUERY_VALUE)]),
    (b"[1.]" + QUERY, [PE + "stray '1.]'", V(QUERY_VALUE)]),
    (
        b'{"execute": @ garbage {"execute":"query-version","id":9}',
        [PE + "stray '@'", V({**QUERY_VALUE, "id": 9})],
    ),
    (b'@@@ {"execute":"query-version"}', [PE + "stray '@'", V(QUERY_VALUE)]),
    (b'{"execute": @\n{"execute":"query-version"}\n', [PE + "stray '@'", V(QUERY_VALUE)]),
    # A bad byte inside an open object or array, then a line end: recovery stops there and
    # QEMU starts afresh, reporting the rest of the message piece by piece; so do we.
    (b'{"a": @\n}', [PE + "stray '@'", PE + "expecting value"]),
    (b'{"a": @\r\n}', [PE + "stray '@'", PE + "expecting value"]),
    (
        b'{"a": @\n, "b"]' + QUERY,
        [PE + "stray '@'", PE + "expecting value", V("b"), PE + "expecting value", V(QUERY_VALUE)],
    ),
    (
        b"[1, @\n, " + QUERY + b"]",
        [PE + "stray '@'", PE + "expecting value", V(QUERY_VALUE), PE + "expecting value"],
    ),
    (b'{"a": [1, @\n2]}', [PE + "stray '@'", V(2), PE + "expecting value", PE + "expecting value"]),
    (
        b'{"a": {"b": @\n}}' + QUERY,
        [PE + "stray '@'", PE + "expecting value", PE + "expecting value", V(QUERY_VALUE)],
    ),
    # Control characters and 0xFE/0xFF: one error each, then afresh (qmp-spec.txt 2.6).
    (b"\x01", [PE + "stray '\x01'"]),
    (b"\t\x01", [PE + "stray '\x01'"]),
    (b"\xff", [PE + "stray '\ufffd'"]),
    (b"\x00", [PE + "stray ''"]),  # the token is a C string: it ends at the NUL
    (b'{"a": 1\x01{"execute":"query-version"}', [PE + "stray '\x01'", V(QUERY_VALUE)]),
    (b'{"a": 1\xff{"execute":"query-version"}', [PE + "stray '\ufffd'", V(QUERY_VALUE)]),
    (b'{"a": 1\x01}', [PE + "stray '\x01'", PE + "expecting value"]),
    (b'{"a"\x01}', [PE + "stray '\x01'", PE + "expecting value"]),
    (b'{"a": "a\x01b"}', [PE + "stray '\"a\x01'", PE + "expecting value"]),
    (b'{"a": "a\tb"}', [PE + "stray '\"a\t'", PE + "expecting value"]),
    (b'{"a": "a\nb"}\n', [PE + "stray '\"a\n'", PE + "expecting value"]),
    (b'{"a": "\xfe"}', [PE + "stray '\"\ufffd'", PE + "expecting value"]),
    (b'{"a": "x\x00y"}', [PE + "stray '\"x'", PE + "expecting value"]),
]

# QEMU 7.2.22 resets after the first error and reports the rest of the message piece by piece;
# qmonitor reports one error per message (docs/PROTOCOL.md, "Input framing"):
# (input, QEMU's replies, ours).
ONE_ERROR_PER_MESSAGE: list[tuple[bytes, list[V | str], list[V | str]]] = [
    (b'{"execute": @}', [PE + "stray '@'", PE + "expecting value"], [PE + "stray '@'"]),
    (b'{"execute": True}', [PE + "stray 'T'", PE + "expecting value"], [PE + "stray 'T'"]),
    (b'{"a": 01}', [PE + "stray '01'", PE + "expecting value"], [PE + "stray '01'"]),
    (b'{"a": +1}', [PE + "stray '+'", PE + "expecting value"], [PE + "stray '+'"]),
    (b'{"a": .5}', [PE + "stray '.'", PE + "expecting value"], [PE + "stray '.'"]),
    (b'{"a": 1.5.3}', [PE + "stray '.'", PE + "expecting value"], [PE + "stray '.'"]),
    (
        b'{"a": {"b": @}\n' + QUERY,
        [PE + "stray '@'", PE + "expecting value", V(QUERY_VALUE)],
        [PE + "stray '@'", V(QUERY_VALUE)],
    ),
    (
        b'{"a": -{"b": 1}}' + QUERY,
        [
            PE + "stray '-{'",
            PE + "expecting value",
            V(1),
            PE + "expecting value",
            PE + "expecting value",
            V(QUERY_VALUE),
        ],
        [PE + "stray '-{'", V(QUERY_VALUE)],
    ),
    (
        b'{"a": [@], "b": 1}' + QUERY,
        [
            PE + "stray '@'",
            PE + "expecting value",
            PE + "expecting value",
            V("b"),
            PE + "expecting value",
            V(1),
            PE + "expecting value",
            V(QUERY_VALUE),
        ],
        [PE + "stray '@'", V(QUERY_VALUE)],
    ),
    (  # only an object can be a request: other values of the bad message are dropped
        b'{"a": @ [1, 2], "b": 1}' + QUERY,
        [
            PE + "stray '@'",
            V([1, 2]),
            PE + "expecting value",
            V("b"),
            PE + "expecting value",
            V(1),
            PE + "expecting value",
            V(QUERY_VALUE),
        ],
        [PE + "stray '@'", V(QUERY_VALUE)],
    ),
    (  # an object where recovery stops is a new message, as in QEMU: it may be a request
        b'{"a": @ {"b": 1}, "c": 1}' + QUERY,
        [
            PE + "stray '@'",
            V({"b": 1}),
            PE + "expecting value",
            V("c"),
            PE + "expecting value",
            V(1),
            PE + "expecting value",
            V(QUERY_VALUE),
        ],
        [PE + "stray '@'", V({"b": 1}), V(QUERY_VALUE)],
    ),
    (  # a lexical error in the rest of the message: QEMU starts afresh after it, as do we
        b'{"a": @, [@ ' + QUERY,
        [PE + "stray '@'", PE + "expecting value", PE + "stray '@'", V(QUERY_VALUE)],
        [PE + "stray '@'", V(QUERY_VALUE)],
    ),
    (
        b'{"execute": @, "arguments": {}}',
        [
            PE + "stray '@'",
            PE + "expecting value",
            V("arguments"),
            PE + "expecting value",
            V({}),
            PE + "expecting value",
        ],
        [PE + "stray '@'"],
    ),
    (
        b'[1, 2, @, 3] {"execute":"query-version"}',
        [PE + "stray '@'", PE + "expecting value", V(3), PE + "expecting value", V(QUERY_VALUE)],
        [PE + "stray '@'", V(QUERY_VALUE)],
    ),
    (
        b'{\n "execute": @,\n "arguments": {}\n}\n{"execute":"query-version"}',
        [
            *(PE + "stray '@'", PE + "expecting value", V("arguments"), PE + "expecting value"),
            *(V({}), PE + "expecting value", V(QUERY_VALUE)),
        ],
        [PE + "stray '@'", V(QUERY_VALUE)],
    ),
]

# Values as QEMU echoed them back as the id of query-version (json-parser.c parse_literal():
# int64, else uint64, else strtod(); strings in modified UTF-8).
VALUES: list[tuple[bytes, object]] = [
    (b"1", 1),
    (b"-1", -1),
    (b"-0", 0),
    (b"9223372036854775807", 9223372036854775807),
    (b"9223372036854775808", 9223372036854775808),
    (b"18446744073709551615", 18446744073709551615),
    (b"18446744073709551616", 1.8446744073709552e19),
    (b"-9223372036854775808", -9223372036854775808),
    (b"-9223372036854775809", -9.223372036854776e18),
    (b"123456789012345678901234567890", 1.2345678901234568e29),
    (b"1.5", 1.5),
    (b"1E2", 100.0),
    (b"-0.0", -0.0),
    (b"0.30000000000000004", 0.30000000000000004),
    (b"5e-324", 5e-324),
    (b"1.7976931348623157e308", 1.7976931348623157e308),
    (b"1e400", float("inf")),
    (b"-1e400", float("-inf")),
    (b"1e-400", 0.0),
    (b"true", True),
    (b"null", None),
    (b"'it\\'s'", "it's"),
    (b'"\\\'"', "'"),
    (b'"\\u0000"', "\x00"),
    (b'"\\ud83d\\ude00"', "\U0001f600"),
    (b'"\\/"', "/"),
    (b'"\\u00e9"', "\u00e9"),
    (b'"\xc3\xa9"', "\u00e9"),
    (b'"\xf0\x9f\x98\x80"', "\U0001f600"),
    (b'"\xc0\x80"', "\x00"),
    (b'"\x7f"', "\x7f"),
    (b'[1,{"x":[]}]', [1, {"x": []}]),
]


@pytest.mark.parametrize(("data", "replies"), SAME_AS_QEMU, ids=repr)
def test_replies_match_qemu(data: bytes, replies: list[V | str]) -> None:
    assert view(feed([data])) == view(replies)


@pytest.mark.parametrize(("data", "replies"), SAME_AS_QEMU, ids=repr)
def test_replies_match_qemu_byte_by_byte(data: bytes, replies: list[V | str]) -> None:
    assert view(feed([bytes([b]) for b in data])) == view(replies)


@pytest.mark.parametrize(("data", "qemu", "ours"), ONE_ERROR_PER_MESSAGE, ids=repr)
def test_one_error_per_bad_message(data: bytes, qemu: list[V | str], ours: list[V | str]) -> None:
    assert len(ours) < len(qemu)
    assert view(feed([data])) == view(ours)
    assert view(feed([bytes([b]) for b in data])) == view(ours)


@pytest.mark.parametrize(("literal", "value"), VALUES, ids=repr)
def test_values_match_qemu(literal: bytes, value: object) -> None:
    request = b'{"execute":"query-version","id":' + literal + b"}"
    assert view(feed([request])) == view([V({**QUERY_VALUE, "id": value})])
    assert view(feed([literal + b" "])) == view([V(value)])


def test_parse_error_message_is_cut_at_1023_bytes_like_qemu() -> None:
    # json-parser.c parse_error() formats into char message[1024]; QEMU's reply had 1041 chars.
    (event,) = feed([b'{"a": ' + b"a" * 2000 + b"}"])
    assert isinstance(event, JSONParseError)
    assert event.desc == PE + ("invalid keyword '" + "a" * 2000)[:1023]
    assert len(event.desc) == 1041


def test_stray_token_is_reported_whole_like_qemu() -> None:
    (event,) = feed([b'"' + b"x" * 1500 + b"\x01"])
    assert event == JSONParseError(PE + "stray '\"" + "x" * 1500 + "\x01'")


def test_limits_are_qemus() -> None:
    # qobject/json-streamer.c: MAX_NESTING (1 << 10), MAX_TOKEN_COUNT (2ULL << 20),
    # MAX_TOKEN_SIZE (64ULL << 20).
    assert (MAX_NESTING, MAX_TOKEN_COUNT, MAX_TOKEN_SIZE) == (1024, 2 << 20, 64 << 20)


def innermost_depth(value: object) -> int:
    """How many lists the first element of the first element ... is nested in (no recursion)."""
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth


def test_nesting_1024_is_accepted_1025_rejected_once_and_the_next_message_parses() -> None:
    # QEMU: 1024 -> "QMP input must be a JSON object"; 1025 -> the limit error, then 1025
    # "expecting value" for the closing brackets, then query-version's reply.
    deep, query = feed([b"[" * 1024 + b"]" * 1024 + QUERY])
    assert isinstance(deep, JSONMessage)
    assert innermost_depth(deep.value) == 1024
    assert query == JSONMessage(QUERY_VALUE)
    expected = ["JSON nesting depth limit exceeded", QUERY_SHOWN]
    assert view(feed([b"[" * 1025 + b"]" * 1025 + QUERY])) == expected
    assert view(feed([b'{"a":' * 1025 + b"1" + b"}" * 1025 + QUERY])) == expected


def test_nesting_limit_byte_by_byte() -> None:
    data = b"[" * 1025 + b"]" * 1025 + QUERY
    expected = ["JSON nesting depth limit exceeded", QUERY_SHOWN]
    assert view(feed([data[i : i + 1] for i in range(len(data))])) == expected


NESTING = "JSON nesting depth limit exceeded"
EXPECTING = PE + "expecting value"


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# Over-deep messages, with QEMU 7.2.22's replies: json-streamer.c reports the limit and resets
# its counts, so QEMU parses what follows as new messages, and a request after a message that
# never closes is answered. We start afresh where QEMU does but drop the rest of the bad message
# (docs/PROTOCOL.md): (input, QEMU's replies, ours).
OVER_LIMIT = [
    pytest.param(
        b"[" * 1025 + QUERY, [NESTING, V(QUERY_VALUE)], [NESTING, V(QUERY_VALUE)], id="1025-open"
    ),
    pytest.param(
        b"[" * 2050 + QUERY,
        [NESTING, NESTING, V(QUERY_VALUE)],
        [NESTING, V(QUERY_VALUE)],
        id="2050-open",
    ),
    pytest.param(
        b"[" * 1025 + b"]" * 1025 + QUERY,
        [NESTING, *[EXPECTING] * 1025, V(QUERY_VALUE)],
        [NESTING, V(QUERY_VALUE)],
        id="1025-closed",
    ),
    pytest.param(
        b"[" * 1500 + b"]" * 1500 + QUERY,
        [NESTING, V(nested_lists(475)), *[EXPECTING] * 1025, V(QUERY_VALUE)],
        [NESTING, V(QUERY_VALUE)],
        id="1500-closed",
    ),
    pytest.param(
        b'{"a":' * 1025 + b"1" + b"}" * 1025 + QUERY,
        [NESTING, V("a"), EXPECTING, V(1), *[EXPECTING] * 1025, V(QUERY_VALUE)],
        [NESTING, V(QUERY_VALUE)],
        id="1025-objects-closed",
    ),
    # An object right after the opener that went over the limit is a new message, as in QEMU
    # (it may be a request), and reports its own limit error, as in QEMU.
    pytest.param(
        b'[{"a":' * 1025 + b"1" + b"}]" * 1025 + QUERY,
        [NESTING, NESTING, V("a"), EXPECTING, V(1), *[EXPECTING] * 2050, V(QUERY_VALUE)],
        [NESTING, NESTING, V(QUERY_VALUE)],
        id="1025-mixed-closed",
    ),
    # The exception: a message that never closes after its ':' or ',' takes the next value as
    # its member, as it does after a lexical error; \x01 or \xff resynchronise.
    pytest.param(
        b'{"a":' * 1025 + QUERY,
        [NESTING, V("a"), EXPECTING, V(QUERY_VALUE)],
        [NESTING],
        id="1025-objects-open-after-colon",
    ),
    # The rest of a bad message is framed with QEMU's limits, so we start afresh where QEMU does.
    pytest.param(
        b'{"a": @, ' + b"[" * 1025 + QUERY,
        [PE + "stray '@'", EXPECTING, NESTING, V(QUERY_VALUE)],
        [PE + "stray '@'", V(QUERY_VALUE)],
        id="lexical-error-then-1025-open",
    ),
]


@pytest.mark.parametrize(("data", "qemu", "ours"), OVER_LIMIT)
def test_over_deep_messages_recover_where_qemu_does(
    data: bytes, qemu: list[V | str], ours: list[V | str]
) -> None:
    assert len(ours) <= len(qemu)
    assert view(feed([data])) == view(ours)
    assert view(feed([bytes([b]) for b in data])) == view(ours)


@pytest.mark.parametrize("depth", [1025, 1026, 2049, 2050, 2051, 5000])
def test_a_closed_over_deep_message_costs_one_error(depth: int) -> None:
    # QEMU 7.2.22 sends a limit error per 1025 levels and an error for each closer it then sees
    # at top level: 1026 errors at depth 1025 (OVER_LIMIT).
    expected = [NESTING, QUERY_SHOWN]
    assert view(feed([b"[" * depth + b"]" * depth + QUERY])) == expected
    assert view(feed([b'{"a":' * depth + b"1" + b"}" * depth + QUERY])) == expected


@pytest.mark.parametrize(
    ("limits", "head", "desc"),
    [
        ({"max_token_count": 8}, b"[1,1,1,1,1,1", "JSON token count limit exceeded"),
        (
            {"max_message_bytes": 32},
            b'{"a": [' + b"1, " * 20 + b"1",
            "JSON token size limit exceeded",
        ),
        # A token cut by the size limit is dropped whole.
        (
            {"max_message_bytes": 32},
            b'{"a": "' + b"x" * 60 + b'"',
            "JSON token size limit exceeded",
        ),
        ({"max_nesting": 4}, b"[[[[[", NESTING),
    ],
)
def test_a_request_after_an_over_limit_message_that_never_closes_is_answered(
    limits: dict[str, int], head: bytes, desc: str
) -> None:
    # QEMU starts afresh after each of its three limit errors (json-streamer.c).
    data = head + QUERY
    for chunks in ([data], [bytes([b]) for b in data], [data[:20], data[20:]]):
        assert view(feed(chunks, JSONStreamFramer(**limits))) == [desc, QUERY_SHOWN]


def test_size_error_before_a_bad_byte_does_not_depend_on_chunking() -> None:
    # Found by fuzzing: the size limit is checked whenever a read ends, so the error used to
    # come only when a read ended between the message's 32nd byte and the bad byte.
    size = "JSON token size limit exceeded"
    cases = [
        (b'{"a": "' + b"x" * 40 + b"\n" + QUERY, [size, PE + "stray '" + "x" * 31 + "\n'"]),
        (b'{"a": 1, ' + b" " * 40 + b"@}" + QUERY, [size]),
    ]
    for data, errors in cases:
        for chunks in ([data], [bytes([b]) for b in data], [data[:33], data[33:]]):
            assert view(feed(chunks, JSONStreamFramer(max_message_bytes=32))) == [
                *errors,
                QUERY_SHOWN,
            ]


def test_token_count_limit() -> None:
    # QEMU, at full size: [ 1, ... [] ] of 2097152 tokens is a value; 2097153 tokens give one
    # "JSON token count limit exceeded"; 2097155 give it, then 1 and "expecting value".
    framer = JSONStreamFramer(max_token_count=8)
    assert view(feed([b"[1,1,[]]" + QUERY], framer)) == view([V([1, 1, []]), V(QUERY_VALUE)])
    expected = view(["JSON token count limit exceeded", V(QUERY_VALUE)])
    assert view(feed([b"[1,1,1,1]" + QUERY], JSONStreamFramer(max_token_count=8))) == expected
    assert view(feed([b"[1,1,1,1,1]" + QUERY], JSONStreamFramer(max_token_count=8))) == expected


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_message_size_limit(chunk_size: int) -> None:
    # QEMU, at full size: a string token of MAX_TOKEN_SIZE - 1 bytes is a value, one of
    # MAX_TOKEN_SIZE bytes "JSON token size limit exceeded", then query-version's reply.
    def run(data: bytes) -> list[str]:
        chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
        return view(feed(chunks, JSONStreamFramer(max_message_bytes=32)))

    assert run(b'"' + b"a" * 29 + b'"' + QUERY) == view([V("a" * 29), V(QUERY_VALUE)])
    expected = view(["JSON token size limit exceeded", V(QUERY_VALUE)])
    assert run(b'"' + b"a" * 30 + b'"' + QUERY) == expected
    assert run(b'"' + b"a{[" * 1000 + b'"' + QUERY) == expected
    assert run(b'{"a": [' + b'"x", ' * 100 + b"1]}" + QUERY) == expected


def test_size_limit_counts_whitespace_inside_a_message() -> None:
    # A deliberate difference: QEMU counts token bytes only (docs/PROTOCOL.md).
    framer = JSONStreamFramer(max_message_bytes=16)
    assert view(feed([b'{"a":' + b" " * 20 + b"1}"], framer)) == ["JSON token size limit exceeded"]
    assert view(feed([b" " * 100 + b'{"a": 1}' + b"\n" * 100], framer)) == ["value {'a': 1}"]


@pytest.mark.parametrize("resync", [b"\x01", b"\xff"])
def test_resynchronise_with_a_control_character_or_0xff(resync: bytes) -> None:
    shown = "\x01" if resync == b"\x01" else "\ufffd"
    # An unfinished message, an unfinished string (the error shows the token so far, as in
    # QEMU), and the rest of a bad message being skipped: one error for the resync byte each.
    cases = [
        (b'{"execute": [1, {', []),
        (b'{"execute": "query-', []),
        (b'{"execute": @, "a": [', [PE + "stray '@'"]),
    ]
    for garbage, before in cases:
        stray = '"query-' if b'"query-' in garbage else ""
        framer = JSONStreamFramer()
        events = feed([garbage], framer)
        assert framer.next_event() is NEED_DATA
        events += feed([resync + QUERY], framer)
        assert view(events) == [
            *before,
            f"{PE}stray '{stray}{shown}'",
            QUERY_SHOWN,
        ]
    # Even when nothing is wrong, the resync byte costs exactly one error.
    assert view(feed([QUERY + resync + QUERY])) == view(
        [V(QUERY_VALUE), f"{PE}stray '{shown}'", V(QUERY_VALUE)]
    )


def test_limit_error_then_resync_byte_starts_afresh() -> None:
    framer = JSONStreamFramer(max_nesting=4)
    events = feed([b"[[[[[[[", b"\x01", QUERY], framer)
    assert view(events) == [
        "JSON nesting depth limit exceeded",
        PE + "stray '\x01'",
        QUERY_SHOWN,
    ]


def test_stray_token_of_a_skipped_message_does_not_depend_on_chunking() -> None:
    # Found by the chunking property: compacting the buffer once dropped the token's head.
    data = b'{{{{{"\n'
    expected = ["JSON nesting depth limit exceeded", PE + "stray '\"\n'"]
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        assert view(feed(chunks, JSONStreamFramer(max_nesting=4))) == expected
    # A skipped token longer than a message may be is shown by its last max_message_bytes.
    data = b'{{"' + b"x" * 100 + b"\x01"
    expected = ["JSON nesting depth limit exceeded", PE + "stray '" + "x" * 15 + "\x01'"]
    for chunks in ([data], [data[i : i + 7] for i in range(0, len(data), 7)]):
        assert view(feed(chunks, JSONStreamFramer(max_nesting=1, max_message_bytes=16))) == expected


def test_eof_drops_a_partial_message_like_qemu() -> None:
    # QEMU: "1" or '{"execute":"query-version"' then a half-close get no reply (monitor/qmp.c
    # re-initialises the parser on CHR_EVENT_CLOSED); a complete request is still answered.
    for tail in (b"1", b'{"execute":"query-version"', b'"abc', b"[1, ", b"tru", b""):
        framer = JSONStreamFramer()
        framer.receive_data(QUERY + b" " + tail)
        framer.receive_eof()
        assert framer.next_event() == JSONMessage(QUERY_VALUE)
        assert framer.next_event() is NEED_DATA
        assert framer.next_event() is NEED_DATA
        assert framer.buffered_bytes == 0
    with pytest.raises(RuntimeError):
        framer.receive_data(b"{}")


def test_empty_data_is_not_eof() -> None:
    framer = JSONStreamFramer()
    framer.receive_data(b'{"execute":')
    framer.receive_data(b"")
    assert framer.next_event() is NEED_DATA
    framer.receive_data(b'"stop"}')
    assert framer.next_event() == JSONMessage({"execute": "stop"})


def test_receive_data_parses_nothing_and_events_come_one_at_a_time() -> None:
    framer = JSONStreamFramer()
    framer.receive_data(b"@" + QUERY * 1000)
    assert framer.buffered_bytes == 1 + len(QUERY) * 1000
    assert framer.next_event() == JSONParseError(PE + "stray '@'")
    assert framer.next_event() == JSONMessage(QUERY_VALUE)
    assert framer.buffered_bytes == len(QUERY) * 999


def test_framer_rejects_limits_below_one() -> None:
    with pytest.raises(ValueError):
        JSONStreamFramer(max_nesting=0)


# A pipelined stream touching every lexer state and both paths.
PIPELINE = (
    b'{"execute":"query-status","id":"__qmp#00001"}'
    b'{"execute": "x", "arguments": {"a": [1, -2.5e3, 0.5E-1, true, false, null]}}\r\n'
    b"{'execute': 'y', \"s\": 'a \\' \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \xc3\xa9'}"
    b' 123 -0 "top" [] {} ['
    b'{"k:1": "v:2", "k": {"k": {}}}] {"a":1,"a":1} {"a": 0e5} @#$ {"b": tru}'
    b' {"c": "\\u12G4"} \x01 {"d": 1} {"deep": [[[[[[[[[[1]]]]]]]]]]}'
    b' {"e": [1,\n 2]} {"f": [@], "g": {"h": [1]}} {"i": @ [2], "j": 3} {"k": -{"l": 1}}'
    b' {"m": 1.} {"n": {"o": @} {"execute":"last"} '
)


def test_every_split_of_a_pipelined_stream_gives_the_same_events() -> None:
    whole = view(feed([PIPELINE]))
    assert len(whole) == 24
    assert view(feed([PIPELINE[i : i + 1] for i in range(len(PIPELINE))])) == whole
    for cut in range(1, len(PIPELINE)):
        assert view(feed([PIPELINE[:cut], PIPELINE[cut:]])) == whole, cut


# Objects sent back to back ("}{" between them) are framed together (JSONStreamFramer.
# _frame_batch): pieces that test each condition it relies on. "}{" or "},{" inside a string, a
# top-level ',' (QEMU: "expecting value"), a value that is not an object between objects, a
# repeated key, numbers orjson writes differently, escapes, nesting, and a partial last object.
BATCH_PIECES = [
    b'{"execute":"query-status","id":1}',
    b'{"execute":"query-status"}',
    b"{}",
    b'{"a":{}}',
    b'{"a":"}{"}',
    b'{"a":"},{"}',
    b'{"a":"}"}',
    b'{"a":"{"}',
    b'{"a":[{}{}]}',
    b'{"a":[{}{}{}]}',
    b'{"a":1,"a":2}',
    b'{"a":1.0}',
    b'{"a":1E5}',
    b'{"a":0e5}',
    b'{"a":1e400}',
    b'{"a":18446744073709551616}',
    b'{"a":"\\n\\""}',
    b'{"a":"\\u00e9"}',
    b'{"a":"\xc3\xa9"}',
    b"{'a':1}",
    b"1",
    b"[]",
    b",",
    b" ",
    b'{"execute":"x"',
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(BATCH_PIECES), max_size=12).map(b"".join))
# As many "}{" in a string as ',' between objects; as many "}{" in a list as non-objects.
@example(b'{"execute":"x"}{"a":"}{"},{}')
@example(b'{"execute":"x"}{"a":[{}{}{}]},1,{}')
def test_objects_framed_together_are_framed_as_one_at_a_time(raw: bytes) -> None:
    # Fed one byte at a time, no two messages are ever buffered together: the reference.
    one_at_a_time = view(feed([raw[i : i + 1] for i in range(len(raw))]))
    framer = JSONStreamFramer()
    framer.receive_data(raw)
    events = []
    while (event := framer.next_event()) is not NEED_DATA:
        events.append(event)
    assert view(events) == one_at_a_time


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(BATCH_PIECES), max_size=12).map(b"".join),
    st.lists(st.integers(0, 200), max_size=6),
    st.booleans(),
)
@example(b'{"execute":"x"}', [], True)
@example(b'{"execute":"x"} ', [], False)
def test_a_drained_framer_has_nothing_more_until_new_input(
    raw: bytes, cuts: list[int], end_of_input: bool
) -> None:
    # QMPSession skips the next pull while the framer says it is drained: the events must be
    # those of pulling until NEED_DATA.
    framer = JSONStreamFramer()
    pulled = []
    chunks = split(raw, cuts)
    for number, chunk in enumerate(chunks):
        framer.receive_data(chunk)
        if end_of_input and number == len(chunks) - 1:
            framer.receive_eof()
        while not framer.drained and (event := framer.next_event()) is not NEED_DATA:
            pulled.append(event)
        assert framer.next_event() is NEED_DATA
    reference = JSONStreamFramer()
    expected = feed(chunks, reference)
    if end_of_input:
        reference.receive_eof()
        while (event := reference.next_event()) is not NEED_DATA:
            expected.append(event)
    assert view(pulled) == view(expected)


def test_objects_framed_together_count_as_held_until_pulled() -> None:
    # buffered_bytes drops by each message's bytes as it is pulled (testing/transcript.py's
    # MessageSplitter cuts the stream there), the whitespace after the last with the next pull.
    messages = [b'{"execute":"a","id":1}', b"{}", b'{"execute":"b","arguments":{"c":{}}}']
    framer = JSONStreamFramer()
    framer.receive_data(b"".join(messages) + b' \r\n{"exec')
    held = [framer.buffered_bytes]
    for message in messages:
        assert framer.next_event() == JSONMessage(json.loads(message))
        held.append(framer.buffered_bytes)
    assert framer.next_event() is NEED_DATA
    held.append(framer.buffered_bytes)
    total = sum(map(len, messages)) + 9
    assert held == [total, total - 22, total - 24, 9, 6]


NONCHARACTERS = {*range(0xFDD0, 0xFDF0)} | {
    p << 16 | low for p in range(17) for low in (0xFFFE, 0xFFFF)
}
JSON_TEXT = st.text(
    st.characters(exclude_categories=["Cs"]).filter(lambda c: ord(c) not in NONCHARACTERS),
    max_size=8,
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | JSON_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(JSON_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def json_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bytes]:
    """Random objects, serialised with json.dumps in varied styles, with whitespace around."""
    objects = draw(st.lists(st.dictionaries(JSON_TEXT, JSON_VALUES, max_size=5), max_size=6))
    parts = []
    for obj in objects:
        separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : ")]))
        indent = draw(st.sampled_from([None, 0, 2]))
        text = json.dumps(
            obj, ensure_ascii=draw(st.booleans()), separators=separators, indent=indent
        )
        parts.append(draw(st.sampled_from(["", " ", "\n", "\r\n", "\t"])) + text)
    return objects, "".join(parts).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_streams(), st.data())
def test_any_chunking_of_valid_objects_gives_the_objects(
    stream: tuple[list[dict[str, Any]], bytes], data: st.DataObject
) -> None:
    objects, raw = stream
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=8))
    events = feed(split(raw, cuts))
    assert view(events) == view(V(obj) for obj in objects)


FRAGMENTS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"'",
    b"\\",
    b"\\u",
    b"\\u00e9",
    b"a",
    b"true",
    b"0",
    b"1",
    b"-",
    b".",
    b"e",
    b" ",
    b"\n",
    b"\t",
    b"\x01",
    b"\x00",
    b"\xff",
    b"\xfe",
    b"\xc3\xa9",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b'"k"',
    b'"k":',
    b"@",
    b'{"execute":"x"}',
]
GARBAGE = st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=3), max_size=60).map(b"".join)
SMALL_LIMITS = {"max_message_bytes": 48, "max_token_count": 16, "max_nesting": 4}


@settings(max_examples=300, deadline=None)
@given(GARBAGE, st.lists(st.integers(1, 16), min_size=1, max_size=40))
def test_arbitrary_bytes_give_events_independent_of_chunking_in_bounded_memory(
    raw: bytes, sizes: list[int]
) -> None:
    whole = feed([raw], JSONStreamFramer(**SMALL_LIMITS))
    assert all(isinstance(event, JSONMessage | JSONParseError) for event in whole)
    limit = SMALL_LIMITS["max_message_bytes"]
    framer = JSONStreamFramer(**SMALL_LIMITS)
    events: list[Event] = []
    pos = 0
    for size in cycle(sizes):
        chunk = raw[pos : pos + size]
        pos += size
        framer.receive_data(chunk)
        while (event := framer.next_event()) is not NEED_DATA:
            events.append(event)
            assert framer.buffered_bytes <= limit + len(chunk)
        assert framer.buffered_bytes <= limit
        if pos >= len(raw):
            break
    assert view(events) == view(whole)


@settings(max_examples=200, deadline=None)
@given(GARBAGE)
def test_default_limits_never_raise_on_arbitrary_bytes(raw: bytes) -> None:
    framer = JSONStreamFramer()
    feed([raw], framer)
    framer.receive_eof()
    assert framer.next_event() is NEED_DATA
    assert framer.buffered_bytes == 0


@pytest.mark.parametrize(
    ("data", "flushed"),
    [
        (b'{"a": 1', JSONParseError(PE + "premature EOI")),  # a message left open
        (b'{"a" 1', JSONParseError(PE + "missing : in object pair")),  # its first error
        (b'{"a": 12', JSONParseError(PE + "premature EOI")),  # a number ended by the flush
        (b"12", JSONMessage(12)),  # ... which completes a message
        (b"tru", JSONParseError(PE + "invalid keyword 'tru'")),
        (b'{"a', JSONParseError(PE + "stray '\"a'")),  # a string cannot end at a flush
        (b"-", JSONParseError(PE + "stray '-'")),
        (b"1.", JSONParseError(PE + "stray '1.'")),
        (b"{} \n ", None),  # nothing left over
    ],
)
def test_flush_ends_the_input_as_qemus_json_message_parser_flush(
    data: bytes, flushed: Event | None
) -> None:
    """qobject_from_json() of command-line values; checked against QEMU 7.2 with the same text
    inside ``-object '{"a":...'`` (a scalar at the top level there gets the same error)."""
    framer = JSONStreamFramer()
    framer.receive_data(data)
    while framer.next_event() is not NEED_DATA:
        pass
    assert framer.flush() == flushed
    assert framer.buffered_bytes == 0


def test_orjson_and_what_it_pulls_in_wait_for_the_first_message() -> None:
    """A server imports everything it greets with, and a framer is made for each connection
    before its greeting; orjson (which imports datetime, uuid and platform: a few ms of
    start-up) is imported only when the first message comes, and the message is then read."""
    import subprocess
    import sys

    script = (
        "import sys, qmonitor.launch, qmonitor.machine.run, qmonitor.standin\n"
        "from qmonitor.qmp.stream import JSONStreamFramer\n"
        "later = ('orjson', 'uuid', 'datetime', 'platform', 'shlex')\n"
        "framer = JSONStreamFramer()\n"
        "print(sorted(m for m in later if m in sys.modules))\n"
        'framer.receive_data(b\'{"execute": "query-status"}\')\n'
        "print(framer.next_value(), 'orjson' in sys.modules)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    assert output == "[]\n{'execute': 'query-status'} True\n"
