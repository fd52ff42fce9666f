"""QMP input framing: a stream of bytes in, one JSON value or one QEMU parse error at a time out.

QMP input is not line-based. qmp-spec.txt section 2.3 has clients send JSON objects back to back;
qemu.qmp writes compact JSON with no newline, so one read may hold several requests and one
request may span several reads. QEMU frames this stream the way its JSON lexer and streamer do
(``qobject/json-lexer.c``, ``qobject/json-streamer.c``, ``qobject/json-parser.c``): it lexes
tokens and ends a message when the counts of ``{``/``}`` and ``[``/``]`` come back to zero, or
one goes negative. Any top-level value is a message (``1 `` and ``"s"`` too; the dispatcher
answers those with "QMP input must be a JSON object"), ``'single-quoted'`` strings are accepted,
and every mistake gets one of the parser's own error texts. Clients and tests match those texts,
so this module reproduces them byte for byte::

    framer = JSONStreamFramer()
    framer.receive_data(b'{"execute": "query-status"} {"execute": ')
    framer.next_event()   # JSONMessage(value={'execute': 'query-status'})
    framer.next_event()   # NEED_DATA: the second request is not complete yet
    framer.receive_data(b'"stop"}')
    framer.next_event()   # JSONMessage(value={'execute': 'stop'})

Like h11 there is no I/O, no clock and no callback: ``receive_data`` only appends, and
``next_event`` does the work for exactly one event, so a caller that stops pulling stops the
parsing too (QEMU gets the same back-pressure by suspending the monitor).

How the work is split, for speed. Nearly every request is a small, plain JSON object that
arrives whole, and it has to cost a couple of microseconds. ``next_event`` first finds the
closing brace by counting braces with C-speed ``bytearray.find``/``count`` and hands that slice
to ``orjson``. The result is used only when it is certain to equal QEMU's: the slice is ASCII
without ``\\u`` escapes (QEMU refuses noncharacters that orjson takes), it is within the limits,
and either ``orjson.dumps`` writes the value back byte for byte (what compact clients such as
qemu.qmp and libvirt send), or the round trip loses no ``:`` (a repeated key, which orjson
would keep once, loses one) and no float could have been written ``0e5`` (three tokens to
QEMU). Anything else goes to the exact path, a port of QEMU's lexer state machine (regular
expressions consume the long runs) and of its recursive-descent parser (made iterative,
because 1024 levels of nesting are legal). Values the exact path has framed still go through
``orjson`` when they pass the same checks. Objects sent back to back (a client with many
requests in flight) are framed and parsed together, as one JSON array, under checks that make
the result the same as one at a time (``_frame_batch``).

QEMU rules this reproduces, with the source they come from:

- Lexical errors (json-lexer.c ``IN_RECOVERY``): a byte no token can start or continue gives
  ``JSON parse error, stray '<token so far>'``, then input is skipped up to a structural
  character, a control character other than tab, or one of the bytes 0xFE and 0xFF.
  qmp-spec.txt section 2.6 tells clients to send such a control character, or 0xFF, to force
  the parser into a known-good state; every one of them yields exactly one error here too.
- Limits (json-streamer.c): ``JSON token size limit exceeded`` for a message of
  ``MAX_TOKEN_SIZE`` bytes or more, ``JSON token count limit exceeded`` past
  ``MAX_TOKEN_COUNT`` tokens, ``JSON nesting depth limit exceeded`` past ``MAX_NESTING`` open
  brackets.
- Values (json-parser.c ``parse_literal``): an integer is an int if it fits int64 or else
  uint64, otherwise a float, as ``strtod`` reads it (``1e400`` is infinity); strings are
  modified UTF-8 (``\\xC0\\x80`` is U+0000) and reject noncharacters, surrogates and overlong
  forms (util/unicode.c); a duplicate key is ``JSON parse error, duplicate key``.
- End of input: the QMP monitor drops a partial message when the client goes away
  (monitor/qmp.c ``monitor_qmp_event``, ``CHR_EVENT_CLOSED`` re-initialises the parser without
  flushing it), so ``receive_eof`` drops it too. Observed: ``1`` or ``{"execute": "x"`` followed
  by a half-close get no reply from QEMU 7.2.

Where we differ on purpose (docs/PROTOCOL.md, "Input framing"): one error per bad message.
After an error QEMU starts afresh: json-streamer.c resets its bracket counts after a limit error,
json-lexer.c skips to a structural character after a lexical error, and what follows is parsed
as new messages, so the rest of the bad message comes back as errors piece by piece (``[`` x
1025 then ``]`` x 1025 costs 1026 errors in QEMU 7.2) and its members are even dispatched. We
frame the rest exactly as QEMU does, limits included, so we start afresh where QEMU does and a
request QEMU would answer after a bad message that never closes (``[`` x 1025, then a request)
is answered. But while the bad message still has brackets open, what QEMU would make of its
rest is dropped: its ``}``, ``]``, ``,`` and ``:``, any value that is not an object (it cannot
be a request), and a value right after one of its ``,`` or ``:`` (one of its members or
elements). Only an object elsewhere is a new message. A control character or 0xFE/0xFF, and a
lexical error whose recovery reaches a line end, start everything afresh, as in QEMU. And the
message size counts the whitespace inside a message, which QEMU does not, so that the bytes we
hold stay bounded.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any, Final

from qmonitor.core.errors import StateError

__all__ = [
    "MAX_NESTING",
    "MAX_TOKEN_COUNT",
    "MAX_TOKEN_SIZE",
    "NEED_DATA",
    "Event",
    "JSONMessage",
    "JSONParseError",
    "JSONStreamFramer",
    "NeedData",
]

# qobject/json-streamer.c: #define MAX_NESTING (1 << 10). 1024 open brackets pass, 1025 do not.
MAX_NESTING: Final = 1024
# qobject/json-streamer.c: #define MAX_TOKEN_COUNT (2ULL << 20), tokens per message.
MAX_TOKEN_COUNT: Final = 2 * 1024 * 1024
# qobject/json-streamer.c: #define MAX_TOKEN_SIZE (64ULL << 20), bytes per message.
MAX_TOKEN_SIZE: Final = 64 * 1024 * 1024


# Plain classes, not dataclasses: every monitor imports this module before it greets, and a
# dataclass costs about 0.4 ms to create (docs/PERFORMANCE.md, "Third round").
class JSONMessage:
    """One complete top-level JSON value, not necessarily an object."""

    __slots__ = ("value",)

    value: Any  # any JSON value (a field typed ``object`` fails at import once compiled)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JSONMessage) and self.value == other.value

    def __repr__(self) -> str:
        return f"JSONMessage(value={self.value!r})"


class JSONParseError:
    """Input QEMU rejects; ``desc`` is QEMU's error text, sent without an id."""

    __slots__ = ("desc",)

    desc: str

    def __init__(self, desc: str) -> None:
        self.desc = desc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JSONParseError) and self.desc == other.desc

    def __repr__(self) -> str:
        return f"JSONParseError(desc={self.desc!r})"


class NeedData(enum.Enum):
    """The type of ``NEED_DATA``."""

    NEED_DATA = enum.auto()


# Returned by next_event() when no complete event is buffered (h11's name for the same thing).
NEED_DATA: Final = NeedData.NEED_DATA

Event = JSONMessage | JSONParseError

# json-parser.c parse_error() formats its message into char message[1024], so everything after
# 1023 bytes is cut off ("invalid keyword 'aaa..." with a long keyword). Stray-token errors are
# formatted by error_setg() directly and are never cut.
_PARSE_MESSAGE_MAX: Final = 1023
# orjson's README: loads() raises JSONDecodeError for documents nested more than 1024 deep.
_ORJSON_MAX_DEPTH: Final = 1024
# The longest integer literal that can fit uint64 or int64: 18446744073709551615 and
# -9223372036854775808 both have 20 characters. Longer ones are doubles (and would trip
# Python's limit on int() conversions of huge digit strings).
_MAX_INTEGER_LITERAL: Final = 20
_INT64_MIN: Final = -(1 << 63)
_UINT64_END: Final = 1 << 64

# Token kinds (qobject/json-parser-int.h JSONTokenType).
_LCURLY: Final = 1
_RCURLY: Final = 2
_LSQUARE: Final = 3
_RSQUARE: Final = 4
_COMMA: Final = 5
_COLON: Final = 6
_STRING: Final = 7
_INTEGER: Final = 8
_FLOAT: Final = 9
_KEYWORD: Final = 10

# Lexer states (json-lexer.c enum json_lexer_state, without interpolation).
_START: Final = 0
_RECOVERY: Final = 1
_DQ_STRING: Final = 2
_DQ_STRING_ESCAPE: Final = 3
_SQ_STRING: Final = 4
_SQ_STRING_ESCAPE: Final = 5
_SIGN: Final = 6
_ZERO: Final = 7
_DIGITS: Final = 8
_MANTISSA: Final = 9
_MANTISSA_DIGITS: Final = 10
_EXP_E: Final = 11
_EXP_SIGN: Final = 12
_EXP_DIGITS: Final = 13
_KEYWORD_CHARS: Final = 14
# Not lexer states: what a byte does in _START besides starting a structural token or a state.
_WHITESPACE: Final = 15
_BAD_BYTE: Final = 16

_STRUCTURAL: Final = {
    ord("{"): _LCURLY,
    ord("}"): _RCURLY,
    ord("["): _LSQUARE,
    ord("]"): _RSQUARE,
    ord(","): _COMMA,
    ord(":"): _COLON,
}


def _start_actions() -> tuple[tuple[int, int], ...]:
    """Per byte, (token kind or 0, next state) from json-lexer.c's IN_START row."""
    actions = [(0, _BAD_BYTE)] * 256
    for byte, kind in _STRUCTURAL.items():
        actions[byte] = (kind, _START)
    for byte in b" \t\r\n":
        actions[byte] = (0, _WHITESPACE)
    for byte in b"123456789":
        actions[byte] = (0, _DIGITS)
    for byte in b"abcdefghijklmnopqrstuvwxyz":
        actions[byte] = (0, _KEYWORD_CHARS)
    actions[ord('"')] = (0, _DQ_STRING)
    actions[ord("'")] = (0, _SQ_STRING)
    actions[ord("0")] = (0, _ZERO)
    actions[ord("-")] = (0, _SIGN)
    return tuple(actions)


_START_ACTIONS: Final = _start_actions()

# What a bracket does to (brace count, bracket count).
_BRACKET_COUNTS: Final = {
    ord("{"): (1, 0),
    ord("}"): (-1, 0),
    ord("["): (0, 1),
    ord("]"): (0, -1),
}

_WHITESPACE_BYTES: Final = b" \t\r\n"
_WHITESPACE_RUN: Final = re.compile(rb"[ \t\r\n]*")
_DIGIT_RUN: Final = re.compile(rb"[0-9]*")
_KEYWORD_RUN: Final = re.compile(rb"[a-z]*")
# A string body: any byte 0x20..0xFD but the quote and backslash, or a backslash and any byte
# 0x20..0xFD (the parser, not the lexer, rejects unknown escapes).
_STRING_BODY: Final = {
    _DQ_STRING: re.compile(rb"(?:[\x20\x21\x23-\x5b\x5d-\xfd]++|\\[\x20-\xfd])*+"),
    _SQ_STRING: re.compile(rb"(?:[\x20-\x26\x28-\x5b\x5d-\xfd]++|\\[\x20-\xfd])*+"),
}
_QUOTE: Final = {_DQ_STRING: ord('"'), _SQ_STRING: ord("'")}
_STRING_STATES: Final = frozenset((_DQ_STRING, _DQ_STRING_ESCAPE, _SQ_STRING, _SQ_STRING_ESCAPE))
# json-lexer.c IN_RECOVERY: skip all but structural characters, control characters other than
# tab, and 0xFE/0xFF.
_RECOVERY_RUN: Final = re.compile(rb"[\t\x20-\x2b\x2d-\x39\x3b-\x5a\x5c\x5e-\x7a\x7c\x7e-\xfd]*")

# Tokens of a span the lexer has already accepted whole: no lexical errors left to find.
# A zero integer part takes no exponent (json-lexer.c IN_ZERO has no 'e' transition).
_SPAN_TOKEN: Final = re.compile(
    rb"[ \t\r\n]*+(?:"
    rb"([{}\[\],:])"
    rb"|(\"(?:[^\"\\]++|\\.)*+\"|'(?:[^'\\]++|\\.)*+')"
    rb"|(-?(?:0(?:\.[0-9]++(?:[eE][-+]?[0-9]++)?)?"
    rb"|[1-9][0-9]*+(?:\.[0-9]++)?(?:[eE][-+]?[0-9]++)?))"
    rb"|([a-z]++))",
    re.DOTALL,
)
_FOUR_HEX: Final = re.compile(rb"[0-9a-fA-F]{4}")
# Unicode's 66 noncharacters, which util/unicode.c refuses.
_NONCHARACTER: Final = re.compile(
    "[\ufdd0-\ufdef"
    + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
    + "]"
)
_SIMPLE_ESCAPES: Final = {
    ord('"'): '"',
    ord("'"): "'",
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_KEYWORDS: Final[dict[bytes, object]] = {b"true": True, b"false": False, b"null": None}
# A zero integer part and an exponent: one number to orjson, "0" and a keyword to QEMU.
_ZERO_EXPONENT: Final = re.compile(rb"0[eE]")
# util/unicode.c mod_utf8_codepoint(): the smallest code point of each sequence length.
_MIN_CODEPOINT: Final = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)


def _run_end(run: re.Pattern[bytes], buf: bytearray, pos: int) -> int:
    """Where a run of ``run`` starting at ``pos`` ends (every run pattern matches empty)."""
    match = run.match(buf, pos)
    assert match is not None
    return match.end()


class _ParseError(Exception):
    """A json-parser.c parse_error(): the first one ends the parse."""

    def __init__(self, message: bytes) -> None:
        super().__init__(message)
        self.message = message


def _valid_codepoint(codepoint: int) -> bool:
    """util/unicode.c is_valid_codepoint(): in range, not a noncharacter, not a surrogate."""
    return (
        0 <= codepoint <= 0x10FFFF
        and (codepoint & 0xFFFE) != 0xFFFE
        and not 0xFDD0 <= codepoint <= 0xFDEF
        and not 0xD800 <= codepoint <= 0xDFFF
    )


def _mod_utf8_codepoint(text: bytes, index: int) -> tuple[int, int]:
    """util/unicode.c mod_utf8_codepoint() on a C string: (code point or -1, next index)."""
    byte = text[index]
    index += 1
    if byte < 0x80:
        return byte, index
    if byte >= 0xFE or not byte & 0x40:
        return -1, index
    length = 0
    mask = 0x80
    while byte & mask:
        length += 1
        mask >>= 1
    codepoint = byte & (mask - 1)
    for _ in range(length - 1):
        continuation = text[index] if index < len(text) else 0
        if continuation & 0xC0 != 0x80:
            return -1, index
        index += 1
        codepoint = (codepoint << 6) | (continuation & 0x3F)
    if not _valid_codepoint(codepoint):
        return -1, index
    if codepoint < _MIN_CODEPOINT[length - 2] and not (codepoint == 0 and length == 2):
        return -1, index
    return codepoint, index


def _c_string_text(raw: bytes) -> str:
    """What QEMU prints for ``raw`` put through ``%s``: cut at NUL, invalid sequences as U+FFFD.

    This is the text qobject/json-writer.c quoted_str() puts on the wire for an error message
    holding these bytes.
    """
    raw = raw.partition(b"\x00")[0]
    if raw.isascii():
        return raw.decode("ascii")
    chars = []
    index = 0
    while index < len(raw):
        codepoint, index = _mod_utf8_codepoint(raw, index)
        chars.append(chr(codepoint) if codepoint >= 0 else "\ufffd")
    return "".join(chars)


def _parse_error(message: bytes) -> JSONParseError:
    return JSONParseError("JSON parse error, " + _c_string_text(message[:_PARSE_MESSAGE_MAX]))


def _stray(token: bytes) -> JSONParseError:
    """json-streamer.c on a JSON_ERROR token: the token as lexed so far, bad byte included."""
    return JSONParseError(f"JSON parse error, stray '{_c_string_text(token)}'")


def _decode_run(raw: bytes) -> str:
    """Unescaped string bytes as modified UTF-8 (json-parser.c parse_string() default case)."""
    if raw.isascii():
        return raw.decode("ascii")
    # "\xC0\x80" can only ever start a sequence, so replacing it first keeps validity as is.
    try:
        text = raw.replace(b"\xc0\x80", b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        raise _ParseError(b"invalid UTF-8 sequence in string") from None
    if _NONCHARACTER.search(text):
        raise _ParseError(b"invalid UTF-8 sequence in string")
    return text


def _hex4(token: bytes, index: int) -> int:
    """json-parser.c cvt4hex(): four hex digits at ``index``, else -1."""
    digits = token[index : index + 4]
    return int(digits, 16) if _FOUR_HEX.fullmatch(digits) else -1


def _parse_string(token: bytes) -> str:
    """json-parser.c parse_string() on a whole string token, quotes included."""
    pieces = []
    index = 1
    end = len(token) - 1
    while index < end:
        backslash = token.find(b"\\", index, end)
        if backslash < 0:
            pieces.append(_decode_run(token[index:end]))
            break
        if backslash > index:
            pieces.append(_decode_run(token[index:backslash]))
        escape = token[backslash + 1]
        if escape in _SIMPLE_ESCAPES:
            pieces.append(_SIMPLE_ESCAPES[escape])
            index = backslash + 2
        elif escape == ord("u"):
            codepoint = _hex4(token, backslash + 2)
            index = backslash + 6
            if 0xD800 <= codepoint <= 0xDBFF and token[index : index + 2] == b"\\u":
                trailing = _hex4(token, index + 2)
                if 0xDC00 <= trailing <= 0xDFFF:
                    codepoint = (0x10000 + ((codepoint & 0x3FF) << 10)) | (trailing & 0x3FF)
                    index += 6
                else:
                    codepoint = -1
            if not _valid_codepoint(codepoint):
                raise _ParseError(token[backslash:index] + b" is not a valid Unicode character")
            pieces.append(chr(codepoint))
        else:
            raise _ParseError(b"invalid escape sequence in string")
    return "".join(pieces)


def _scalar(kind: int, text: bytes) -> object:
    """json-parser.c parse_literal() and parse_keyword()."""
    if kind == _STRING:
        return _parse_string(text)
    if kind == _INTEGER and len(text) <= _MAX_INTEGER_LITERAL:
        number = int(text)
        if _INT64_MIN <= number < _UINT64_END:
            return number
    if kind in (_INTEGER, _FLOAT):
        return float(text)
    if text in _KEYWORDS:
        return _KEYWORDS[text]
    raise _ParseError(b"invalid keyword '" + text + b"'")


def _span_tokens(span: bytes) -> list[tuple[int, bytes]]:
    tokens = []
    for match in _SPAN_TOKEN.finditer(span):
        group = match.lastindex
        text = match[group or 0]
        if group == 1:
            kind = _STRUCTURAL[text[0]]
        elif group == 2:
            kind = _STRING
        elif group == 3:
            kind = _FLOAT if text.translate(None, b"-0123456789") else _INTEGER
        else:
            kind = _KEYWORD
        tokens.append((kind, text))
    return tokens


def _parse_tokens(tokens: list[tuple[int, bytes]]) -> object:
    """json-parser.c parse_value() over one message's tokens, iteratively.

    Same order of checks and so the same first error as QEMU's recursion: a key is any value
    and must turn out to be a string, the value is parsed before the duplicate check. The
    streamer only ends a message where its last token closes it, so the parser always stops
    at the last token or at an error before running out; only a flush (end of input) parses
    an unfinished message, and running out of tokens raises IndexError where QEMU's parser
    reports "premature EOI".
    """
    # Open containers; for an object, the key whose value is being parsed (None: a key is).
    stack: list[tuple[dict[str, object], list[str | None]] | list[object]] = []
    index = 0
    while True:
        kind, text = tokens[index]
        index += 1
        value: object
        if kind == _LCURLY:
            if tokens[index][0] != _RCURLY:
                stack.append(({}, [None]))
                continue
            index += 1
            value = {}
        elif kind == _LSQUARE:
            if tokens[index][0] != _RSQUARE:
                stack.append([])
                continue
            index += 1
            value = []
        elif kind >= _STRING:
            value = _scalar(kind, text)
        else:
            raise _ParseError(b"expecting value")
        while True:
            if not stack:
                return value
            frame = stack[-1]
            if isinstance(frame, list):
                frame.append(value)
                kind = tokens[index][0]
                index += 1
                if kind == _COMMA:
                    break
                if kind != _RSQUARE:
                    raise _ParseError(b"expected separator in list")
                stack.pop()
                value = frame
                continue
            members, pending = frame
            key = pending[0]
            if key is None:
                if not isinstance(value, str):
                    raise _ParseError(b"key is not a string in object")
                pending[0] = value
                if tokens[index][0] != _COLON:
                    raise _ParseError(b"missing : in object pair")
                index += 1
                break
            if key in members:
                raise _ParseError(b"duplicate key")
            members[key] = value
            pending[0] = None
            kind = tokens[index][0]
            index += 1
            if kind == _COMMA:
                break
            if kind != _RCURLY:
                raise _ParseError(b"expected separator in dict")
            stack.pop()
            value = members


def _exact_parse(span: bytes) -> Event:
    try:
        return JSONMessage(_parse_tokens(_span_tokens(span)))
    except _ParseError as error:
        return _parse_error(error.message)


def _depth_and_floats(value: object) -> tuple[int, bool]:
    """(nesting depth, whether a float occurs) of a parsed value."""
    depth = 0
    has_float = False
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            depth = max(depth, level)
            children = item.values() if isinstance(item, dict) else item
            pending += [(child, level + 1) for child in children]
        elif isinstance(item, float):
            has_float = True
    return depth, has_float


def _orjson_agrees(span: bytes | bytearray, max_nesting: int) -> JSONMessage | None:
    """``span`` parsed by orjson, or None when QEMU's result might differ from orjson's.

    ``span`` must be one message as QEMU would frame it, or begin with '{' and end with '}'.
    """
    if not span.isascii() or (span.find(b"\\") >= 0 and b"\\u" in span):
        return None
    import orjson  # imported already: this follows a receive_data()

    try:
        value = orjson.loads(span)
        written = orjson.dumps(value)
    except orjson.JSONDecodeError:
        return None
    except orjson.JSONEncodeError:  # orjson's README: dumps() stops at 254 levels
        return None
    if (written != span or max_nesting < _ORJSON_MAX_DEPTH) and not _round_trip_agrees(
        span, value, written, max_nesting
    ):
        return None
    return JSONMessage(value)


def _round_trip_agrees(
    span: bytes | bytearray, value: object, written: bytes, max_nesting: int
) -> bool:
    """Whether orjson's ``value`` of ``span`` (``written`` back as orjson writes it) is QEMU's.

    Compact clients (qemu.qmp, libvirt) send what orjson writes back: then no key repeats and
    every number is spelled the usual way, and only a nesting limit below orjson's own needs a
    look (the framer's callers test for that case first and skip this call). Otherwise count
    ':'. Each sits between a key and its value or in a string, where it survives the round
    trip; orjson keeps one pair per distinct key, so a repeated key shows as a ':' lost. And
    0e5 is 0.0 to orjson but three tokens to QEMU: look closer if the text has such a spelling
    and the value a float.
    """
    rewritten = written != span
    if rewritten and written.count(b":") != span.count(b":"):
        return False
    zero_exponent = rewritten and _ZERO_EXPONENT.search(span) is not None
    if zero_exponent or max_nesting < _ORJSON_MAX_DEPTH:
        depth, has_float = _depth_and_floats(value)
        if depth > max_nesting or (zero_exponent and has_float):
            return False
    return True


class JSONStreamFramer:
    """Turns a QMP input byte stream into JSONMessage and JSONParseError events (sans I/O).

    ``max_message_bytes`` bounds the bytes held for one message (QEMU's MAX_TOKEN_SIZE);
    ``max_token_count`` and ``max_nesting`` are QEMU's other two limits. Memory stays within
    ``max_message_bytes`` plus whatever was passed to ``receive_data`` and not pulled yet.
    """

    __slots__ = (
        "_after_separator",
        "_batch",
        "_batch_bytes",
        "_batch_pulled_end",
        "_batch_pulled_index",
        "_batch_refused",
        "_batch_size",
        "_brace_count",
        "_bracket_count",
        "_buf",
        "_dumps",
        "_eof",
        "_fast_max_bytes",
        "_last_kind",
        "_lexer_state",
        "_loads",
        "_max_message_bytes",
        "_max_nesting",
        "_max_token_count",
        "_message_start",
        "_pending",
        "_pos",
        "_residual_brace",
        "_residual_bracket",
        "_skip_start",
        "_skipping",
        "_token_count",
        "_token_start",
        "drained",
    )

    def __init__(
        self,
        *,
        max_nesting: int = MAX_NESTING,
        max_token_count: int = MAX_TOKEN_COUNT,
        max_message_bytes: int = MAX_TOKEN_SIZE,
    ) -> None:
        if min(max_nesting, max_token_count, max_message_bytes) < 1:
            raise ValueError("JSONStreamFramer limits must be positive")
        self._max_nesting = max_nesting
        self._max_token_count = max_token_count
        self._max_message_bytes = max_message_bytes
        # A message no longer than this is within both size limits: a token has >= 1 byte.
        self._fast_max_bytes = min(max_message_bytes - 1, max_token_count)
        self._buf = bytearray()
        self._pos = 0  # next byte to lex
        self._eof = False
        self._lexer_state = _START
        self._token_start = 0  # where the token being lexed began
        self._message_start = -1  # where the message began; -1 between messages and when skipping
        self._brace_count = 0
        self._bracket_count = 0
        self._token_count = 0
        self._last_kind = 0  # the last token of the open message
        self._pending: JSONParseError | None = None  # an error found together with the last one
        # The open message is a piece of a bad message: framed as QEMU frames it, limits
        # included, but dropped without a reply. Its bytes are not kept; _skip_start is where
        # it began, for the size limit.
        self._skipping = False
        self._skip_start = 0
        # Brackets a message cut short by an error still had open, and whether its ',' or ':'
        # came last: see _rest_of_bad_message.
        self._residual_brace = 0
        self._residual_bracket = 0
        self._after_separator = False
        # Messages framed together and not pulled yet, last first (see _frame_batch), the bytes
        # they came from, and where in those the messages pulled so far end (buffered_bytes).
        self._batch: list[Any] = []
        self._batch_bytes = b""
        self._batch_size = 0
        self._batch_pulled_index = 0
        self._batch_pulled_end = 0
        # The buffer's messages could not be framed together: not tried again before new data.
        self._batch_refused = False
        # True when the last message pulled used up everything received, so that the next
        # next_value() is NEED_DATA: a reader with one request per read (a client waiting for
        # each reply) skips that call. False is no promise either way.
        self.drained = False
        # orjson's loads and dumps, for each request: bound at the first message, not imported
        # with this module, for the start-up time of a server (orjson imports datetime, uuid
        # and platform, a few ms, which the greeting need not wait for). Until then they are
        # methods that import and rebind them: no per-read check.
        self._loads: Callable[[bytes | bytearray], Any] = self._import_orjson_loads
        self._dumps: Callable[[Any], bytes] = self._import_orjson_dumps

    def _import_orjson_loads(self, data: bytes | bytearray) -> Any:
        """The first ``_loads``: binds orjson's functions, then parses ``data``."""
        import orjson

        self._loads = orjson.loads
        self._dumps = orjson.dumps
        return orjson.loads(data)

    def _import_orjson_dumps(self, value: Any) -> bytes:
        """The first ``_dumps`` (a ``_loads`` always comes first: this is for completeness)."""
        import orjson

        self._loads = orjson.loads
        self._dumps = orjson.dumps
        return orjson.dumps(value)

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and still held: not yet parsed, or part of an unfinished message."""
        held = len(self._buf) - self._keep_from()
        if self._batch:
            held += len(self._batch_bytes) - self._batch_pulled_bytes()
        return held

    def _batch_pulled_bytes(self) -> int:
        """How many of the batch's bytes made the messages pulled so far: each "}{" in them is
        where one message ends (see _frame_batch), so found by walking from the last answer."""
        pulled = self._batch_size - len(self._batch)
        while self._batch_pulled_index < pulled:
            self._batch_pulled_end = self._batch_bytes.find(b"}{", self._batch_pulled_end) + 1
            self._batch_pulled_index += 1
        return self._batch_pulled_end

    def receive_data(self, data: bytes) -> None:
        """Append bytes from the client. An empty ``data`` is not end of input."""
        if self._eof:
            raise StateError("receive_data() after receive_eof()")
        self._buf += data
        self._batch_refused = False
        self.drained = False

    def receive_eof(self) -> None:
        """The client closed its side: complete messages still come out, the rest is dropped."""
        self._eof = True
        self.drained = False

    def next_event(self) -> Event | NeedData:
        """The next event in input order, or NEED_DATA once everything buffered is consumed."""
        value = self.next_value()
        if value is NEED_DATA or type(value) is JSONParseError:
            return value
        return JSONMessage(value)

    def next_value(self) -> object:
        """:meth:`next_event` with a message's value bare rather than in a JSONMessage.

        The QMP server's per-request path: it saves building the wrapper, and the plain object
        that nearly every request is (see the module docstring) is framed and parsed here in
        one function. No JSON value is a :class:`JSONParseError` or :data:`NEED_DATA`, so the
        caller tells the three apart by type.
        """
        batch = self._batch
        if batch:
            return batch.pop()
        buf = self._buf
        if not buf and self._pending is None and not self._eof:
            # Everything received has been pulled (the call after each read's last request):
            # with no byte held, no state can make an event before more data.
            return NEED_DATA
        if (
            self._pending is None
            and self._lexer_state == _START
            and self._message_start < 0
            and not self._skipping
            and not self._after_separator
        ):
            pos = self._pos
            size = len(buf)
            if pos < size and buf[pos] != 0x7B:  # '{'
                pos = self._pos = _run_end(_WHITESPACE_RUN, buf, pos)
            if pos == size:  # between messages with everything consumed
                if size:
                    buf.clear()
                    self._pos = 0
                return NEED_DATA
            if buf[pos] == 0x7B:
                # The object at pos, if orjson can be trusted with it. Braces inside strings can
                # fool the count; orjson then refuses the slice, or it is still exactly one
                # valid object, which QEMU frames the same way.
                close = buf.find(b"}", pos)
                if close >= 0 and buf.find(b"{", pos + 1, close) >= 0:  # nested: count them
                    opened = buf.count(b"{", pos, close)
                    closed = 1
                    while opened != closed and close >= 0:
                        previous = close
                        close = buf.find(b"}", previous + 1)
                        opened += buf.count(b"{", previous, close)
                        closed += 1
                end = close + 1
                if close >= 0 and end < size and buf[end] == 0x7B and not self._batch_refused:
                    # Another object right behind: requests sent back to back, frame them all.
                    batch = self._frame_batch(buf, pos)
                    if batch:
                        return batch.pop()
                if close >= 0 and end - pos <= self._fast_max_bytes:
                    # One request per read (a client waiting for each reply): no slice to make.
                    span = buf if pos == 0 and end == size else buf[pos:end]
                    if span.isascii() and (span.find(b"\\") < 0 or b"\\u" not in span):
                        try:
                            value = self._loads(span)
                            written = self._dumps(value)
                        # orjson's JSONDecodeError is a ValueError, its JSONEncodeError a
                        # TypeError (its README); dumps() stops at 254 levels.
                        except (ValueError, TypeError):
                            pass
                        else:
                            if (
                                written == span and self._max_nesting >= _ORJSON_MAX_DEPTH
                            ) or _round_trip_agrees(span, value, written, self._max_nesting):
                                if end < size and buf[end] in _WHITESPACE_BYTES:
                                    end = _run_end(_WHITESPACE_RUN, buf, end)
                                if end == size:
                                    buf.clear()
                                    end = 0
                                    self.drained = not self._eof
                                self._pos = end
                                return value
        event = self._next_lexed_event()
        return event.value if type(event) is JSONMessage else event

    def _frame_batch(self, buf: bytearray, pos: int) -> list[Any]:
        """The objects from ``pos`` to the buffer's last '}', framed and parsed in one go, last
        first, or an empty list when they cannot be (they are then framed one by one).

        A client with many requests in flight sends them back to back in one write: compact
        objects, ``{...}{...}``. Between two top-level objects QEMU's grammar has "}{", and
        nowhere else outside a string; so the bytes with each "}{" made "},{" and put in
        brackets are one JSON array of those objects, which one ``orjson.loads`` reads and one
        ``orjson.dumps`` writes back. The result is used only when, as for a single message in
        :meth:`next_value`, it is certain to equal QEMU's:

        - the bytes are ASCII without ``\\u`` escapes, within the size limits, and the nesting
          limit is orjson's own (1024 levels; one more for the array: deeper fails here);
        - ``orjson.dumps`` writes the array back byte for byte, so every element is written
          exactly as orjson writes its value (no repeated key, no unusual number spelling);
        - every element is an object, the bytes hold no "},{", and there are as many elements
          as "}{" plus one. The array's separators then sit between a '}' and a '{' and none
          was in the bytes already, so each was made from a "}{"; there are as many separators
          as "}{", so none was made inside a string. The bytes are therefore the elements back
          to back, each exactly as a lone message's check in next_value accepts it, and QEMU
          frames them into the same messages.
        """
        end = buf.rfind(b"}") + 1
        if end - pos <= self._fast_max_bytes and self._max_nesting >= _ORJSON_MAX_DEPTH:
            data = bytes(buf[pos:end])
            if (
                data.isascii()
                and (data.find(b"\\") < 0 or b"\\u" not in data)
                and data.find(b"},{") < 0
            ):
                array = b"[" + data.replace(b"}{", b"},{") + b"]"
                try:
                    values: list[Any] = self._loads(array)  # a list: the text is in brackets
                    written = self._dumps(values)
                except (ValueError, TypeError):  # orjson's JSONDecodeError, JSONEncodeError
                    pass
                else:
                    if written == array and len(values) == data.count(b"}{") + 1:
                        for value in values:
                            if type(value) is not dict:
                                break
                        else:
                            if end == len(buf):
                                buf.clear()
                                end = 0
                            self._pos = end
                            values.reverse()
                            self._batch = values
                            self._batch_bytes = data
                            self._batch_size = len(values)
                            self._batch_pulled_index = self._batch_pulled_end = 0
                            return values
        self._batch_refused = True
        return []

    def _next_lexed_event(self) -> Event | NeedData:
        """The next event by the exact path (QEMU's lexer and parser)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        event = self._lex()
        if event is not None:
            return event
        if self._eof:
            self._discard_partial_message()
        else:
            self._compact()
        return NEED_DATA

    def flush(self) -> Event | None:
        """json-streamer.c json_message_parser_flush(): the input is complete.

        QEMU flushes after feeding a whole string to its parser (``qobject_from_json()``, for
        command-line values such as ``-object {...}``); a QMP stream is never flushed. The
        token being lexed ends as if a NUL followed it, and a message still open is parsed as
        it stands: "JSON parse error, premature EOI", or the parser's first error before that.
        Call it once ``next_event()`` has returned NEED_DATA; it returns the one event the
        flush produces (None if there is none) and leaves the framer empty. A message being
        skipped after its error gets no further event, where QEMU may report its rest.
        """
        buf = self._buf
        state = self._lexer_state
        event: Event | None = None
        if state in _STRING_STATES:
            if not self._skipping:
                event = _stray(bytes(buf[self._token_start :]))
        elif state > _RECOVERY:
            kind, _ = _number_transition(state, 0)
            if kind:
                event = self._token(kind, self._token_start, len(buf))
            elif not self._skipping:
                event = _stray(bytes(buf[self._token_start :]))
        if event is None and self._message_start >= 0 and not self._skipping:
            try:
                event = _exact_parse(bytes(buf[self._message_start :]))
            except IndexError:
                event = _parse_error(b"premature EOI")
        self._discard_partial_message()
        return event

    def _keep_from(self) -> int:
        """The first buffered byte still needed."""
        if self._message_start >= 0:
            return self._message_start
        if self._lexer_state > _RECOVERY:
            # A token of a message being skipped: a control character may still end it with an
            # error that shows the token, so keep as much of it as _lexical_error reports.
            return max(self._token_start, self._pos - self._max_message_bytes)
        return self._pos

    def _compact(self) -> None:
        keep_from = self._keep_from()
        if keep_from:
            # Deleting a bytearray's head is O(1) in CPython: it moves the start pointer.
            del self._buf[:keep_from]
            self._pos -= keep_from
            self._token_start -= keep_from
            self._skip_start -= keep_from  # may go below 0: only differences are used
            if self._message_start >= 0:
                self._message_start -= keep_from

    def _discard_partial_message(self) -> None:
        self._buf.clear()
        self._pos = self._token_start = 0
        self._lexer_state = _START
        self._reset()

    def _end_message(self) -> None:
        if self._residual_brace or self._residual_bracket:
            # Closers past the end of this message close the bad message around it.
            self._close_residual(min(self._brace_count, 0), min(self._bracket_count, 0))
        self._message_start = -1
        self._brace_count = self._bracket_count = self._token_count = 0
        self._skipping = False

    def _reset(self) -> None:
        """Back to a known-good state: what a control character or 0xFE/0xFF does."""
        self._end_message()
        self._residual_brace = self._residual_bracket = 0
        self._after_separator = False

    def _close_residual(self, braces: int, brackets: int) -> None:
        self._residual_brace += braces
        self._residual_bracket += brackets
        if not _open(self._residual_brace, self._residual_bracket):
            self._residual_brace = self._residual_bracket = 0
            self._after_separator = False

    def _begin_value(self, start: int, is_object: bool) -> None:
        """A value starts between messages: a new message, or a piece of a bad one to drop.

        While a bad message has brackets open, only an object can be a request (qmp-spec.txt
        section 2.3), and only if it does not follow the bad message's ',' or ':' (then it is
        one of its members or elements). Anything else is framed as QEMU frames it, so that we
        start afresh where QEMU does, but dropped.
        """
        if self._after_separator or (
            not is_object and (self._residual_brace or self._residual_bracket)
        ):
            self._after_separator = False
            self._skipping = True
            self._skip_start = start
        else:
            self._message_start = start

    def _abandon_message(self, mid_token: bool, pos: int) -> None:
        """After a limit error, start afresh like QEMU; the brackets still open are residue.

        json-streamer.c reports the limit and resets its counts, so QEMU parses whatever comes
        next as new messages: a request after an over-deep message that never closes is
        answered. The rest of the bad message is then dropped by _rest_of_bad_message and
        _begin_value, so that closing it costs no further error. A token cut in the middle
        (the size limit is checked on every read) is dropped whole.
        """
        if _open(self._brace_count, self._bracket_count):
            after_separator = self._last_kind in (_COMMA, _COLON) and not mid_token
            self._close_residual(self._brace_count, self._bracket_count)
            self._end_message()
            self._after_separator = after_separator
        else:
            self._end_message()
        if mid_token:
            self._skipping = True
            self._skip_start = pos

    def _lex(self) -> Event | None:
        """Run json-lexer.c's state machine from ``_pos`` until an event or the end of the data."""
        buf = self._buf
        size = len(buf)
        pos = self._pos
        state = self._lexer_state
        event: Event | None = None
        while True:
            if state == _START:
                if pos == size:
                    break
                kind, state = _START_ACTIONS[buf[pos]]
                pos += 1
                if kind:
                    event = self._token(kind, pos - 1, pos)
                elif state == _WHITESPACE:
                    pos = _run_end(_WHITESPACE_RUN, buf, pos)
                    state = _START
                    continue
                elif state == _BAD_BYTE:
                    state = _RECOVERY
                    event = self._lexical_error(pos - 1, pos)
                else:
                    self._token_start = pos - 1
                    if self._message_start < 0 and not self._skipping:
                        self._begin_value(pos - 1, False)
                    continue
            elif state in (_DQ_STRING, _SQ_STRING):
                pos = _run_end(_STRING_BODY[state], buf, pos)
                if pos == size:
                    break
                byte = buf[pos]
                pos += 1
                if byte == _QUOTE[state]:
                    state = _START
                    event = self._token(_STRING, self._token_start, pos)
                elif byte != 0x5C:  # not a backslash: a control character or 0xFE/0xFF
                    state = _RECOVERY
                    event = self._lexical_error(self._token_start, pos)
                else:
                    state += 1  # the _ESCAPE state after it: the escaped byte is not here yet
                    continue
            elif state in (_DQ_STRING_ESCAPE, _SQ_STRING_ESCAPE):
                if pos == size:
                    break
                byte = buf[pos]
                pos += 1
                if 0x20 <= byte <= 0xFD:
                    state -= 1
                    continue
                state = _RECOVERY
                event = self._lexical_error(self._token_start, pos)
            elif state == _RECOVERY:
                pos = _run_end(_RECOVERY_RUN, buf, pos)
                if pos == size:
                    break
                state = _START
                if buf[pos] not in _STRUCTURAL:
                    # A line end or a client's resynchronisation byte: start afresh, like QEMU.
                    self._reset()
                continue
            else:
                if state in (_DIGITS, _MANTISSA_DIGITS, _EXP_DIGITS):
                    pos = _run_end(_DIGIT_RUN, buf, pos)
                elif state == _KEYWORD_CHARS:
                    pos = _run_end(_KEYWORD_RUN, buf, pos)
                if pos == size:
                    break
                kind, state = _number_transition(state, buf[pos])
                if kind == 0:
                    pos += 1
                    if state == _RECOVERY:
                        event = self._lexical_error(self._token_start, pos)
                    else:
                        continue
                else:
                    event = self._token(kind, self._token_start, pos)
            if event is not None:
                break
        self._pos = pos
        self._lexer_state = state
        if (
            event is None
            and self._message_start >= 0
            and pos - self._message_start >= self._max_message_bytes
        ):
            # Checked on what has arrived so far, not only on complete tokens as in QEMU, so
            # that a message never holds more than max_message_bytes.
            self._abandon_message(mid_token=state > _RECOVERY, pos=pos)
            event = JSONParseError("JSON token size limit exceeded")
        return event

    def _token(self, kind: int, start: int, end: int) -> Event | None:
        """json-streamer.c json_message_process_token() for one complete token."""
        if self._message_start < 0 and not self._skipping:
            if self._rest_of_bad_message(kind):
                return None
            self._begin_value(start, kind == _LCURLY)
        skipping = self._skipping
        message_start = self._skip_start if skipping else self._message_start
        if start - message_start >= self._max_message_bytes:
            # Over the size limit in the whitespace before this token: the error comes before
            # it, as when a read ends there (_lex), and the token starts afresh. There it is a
            # piece of the bad message or an object's '{', so it makes no event of its own.
            self._abandon_message(mid_token=False, pos=start)
            self._token(kind, start, end)
            return None if skipping else JSONParseError("JSON token size limit exceeded")
        if kind <= _RSQUARE:
            if kind == _LCURLY:
                self._brace_count += 1
            elif kind == _RCURLY:
                self._brace_count -= 1
            elif kind == _LSQUARE:
                self._bracket_count += 1
            else:
                self._bracket_count -= 1
        ended = not _open(self._brace_count, self._bracket_count)
        self._token_count += 1
        self._last_kind = kind
        if end - message_start >= self._max_message_bytes:
            desc = "JSON token size limit exceeded"
        elif self._token_count > self._max_token_count:
            desc = "JSON token count limit exceeded"
        elif self._brace_count + self._bracket_count > self._max_nesting:
            desc = "JSON nesting depth limit exceeded"
        elif not ended:
            return None
        elif skipping:
            self._end_message()
            return None
        else:
            span = bytes(self._buf[self._message_start : end])
            self._end_message()
            return _orjson_agrees(span, self._max_nesting) or _exact_parse(span)
        # QEMU reports the limit and starts afresh after this token; a piece of a bad message
        # that reaches a limit starts afresh too, but its error is not reported.
        self._abandon_message(mid_token=False, pos=end)
        return None if skipping else JSONParseError(desc)

    def _rest_of_bad_message(self, kind: int) -> bool:
        """Whether a token between messages is a closer or separator of a bad message.

        After an error QEMU starts afresh, so the rest of the bad message costs an "expecting
        value" per '}', ']', ',' and ':' at top level, and its members and elements are taken
        as requests. We drop those closers and separators while the bad message has brackets
        open, and remember a dropped ',' or ':' so that _begin_value drops the value after it.
        """
        if not (self._residual_brace or self._residual_bracket):
            return False
        if kind in (_COMMA, _COLON):
            self._after_separator = True
            return True
        if kind not in (_RCURLY, _RSQUARE):
            return False
        self._after_separator = False
        if kind == _RCURLY:
            self._close_residual(-1, 0)
        else:
            self._close_residual(0, -1)
        return True

    def _lexical_error(self, start: int, end: int) -> JSONParseError | None:
        """A byte no token can take (json-lexer.c JSON_ERROR); the lexer goes into recovery.

        Control characters and 0xFE/0xFF always report and reset, as in QEMU: qmp-spec.txt
        section 2.6 has clients send them to resynchronise. Any other bad byte reports unless
        it is in the rest of a message that has had its error already (in a piece being
        dropped, or between messages while the bad message has brackets open). Like QEMU we
        then start afresh, the brackets still open joining the bad message's residue.
        """
        if self._message_start >= 0 and end - 1 - self._message_start >= self._max_message_bytes:
            # The message reached the size limit before this byte. Whether a read ended in
            # between (_lex checks there) must not matter: the size error comes first, then
            # this byte is taken as it would be after a read ending there.
            self._abandon_message(mid_token=start < end - 1, pos=end - 1)
            self._pending = self._lexical_error(start, end)
            return JSONParseError("JSON token size limit exceeded")
        bad_byte = self._buf[end - 1]
        if bad_byte in _BRACKET_COUNTS:
            # QEMU's lexer took the bracket into the error token ('1.}', '-]'), but it still
            # closes or opens what it would have.
            braces, brackets = _BRACKET_COUNTS[bad_byte]
            self._brace_count += braces
            self._bracket_count += brackets
        resync = bad_byte < 0x20 or bad_byte >= 0xFE
        error = None
        if resync or not (
            self._skipping
            or (self._message_start < 0 and (self._residual_brace or self._residual_bracket))
        ):
            # Only a token of a message being skipped can be longer than a message may be: it
            # is shown by its last max_message_bytes bytes (QEMU's lexer cuts its tokens at
            # MAX_TOKEN_SIZE, json-lexer.c).
            error = _stray(bytes(self._buf[max(start, end - self._max_message_bytes) : end]))
        if resync:
            self._reset()
        elif _open(self._brace_count, self._bracket_count):
            # QEMU starts afresh after the error, in a piece being dropped too.
            self._close_residual(self._brace_count, self._bracket_count)
            self._after_separator = False
            self._end_message()
        else:
            self._end_message()
        return error


def _open(brace_count: int, bracket_count: int) -> bool:
    """json-streamer.c: a message goes on while a count is positive and none is negative."""
    return (brace_count > 0 or bracket_count > 0) and brace_count >= 0 and bracket_count >= 0


def _number_transition(state: int, byte: int) -> tuple[int, int]:
    """json-lexer.c's rows for the number and keyword states: what ``byte`` does to the token.

    Runs of digits and letters are consumed before this is asked. Returns (token kind, _START)
    when the token ends before ``byte``, (0, next state) when ``byte`` continues it, and
    (0, _RECOVERY) when ``byte`` is a lexical error.
    """
    is_digit = 0x30 <= byte <= 0x39
    if state == _SIGN:
        if byte == 0x30:
            return 0, _ZERO
        return (0, _DIGITS) if is_digit else (0, _RECOVERY)
    if state == _ZERO:
        if is_digit:
            return 0, _RECOVERY
        return (0, _MANTISSA) if byte == 0x2E else (_INTEGER, _START)
    if state == _DIGITS:
        if byte in b"eE":
            return 0, _EXP_E
        return (0, _MANTISSA) if byte == 0x2E else (_INTEGER, _START)
    if state == _MANTISSA:
        return (0, _MANTISSA_DIGITS) if is_digit else (0, _RECOVERY)
    if state == _MANTISSA_DIGITS:
        return (0, _EXP_E) if byte in b"eE" else (_FLOAT, _START)
    if state == _EXP_E:
        if byte in b"+-":
            return 0, _EXP_SIGN
        return (0, _EXP_DIGITS) if is_digit else (0, _RECOVERY)
    if state == _EXP_SIGN:
        return (0, _EXP_DIGITS) if is_digit else (0, _RECOVERY)
    if state == _EXP_DIGITS:
        return _FLOAT, _START
    return _KEYWORD, _START
