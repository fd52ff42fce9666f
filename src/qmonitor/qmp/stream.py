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
arrives whole, and it has to cost a few microseconds. ``next_event`` first finds the closing
brace by counting braces with C-speed ``bytes.find``/``count`` and hands that slice to
``orjson``. The result is used only when it is certain to equal QEMU's: the slice is ASCII
without ``\\u`` escapes (QEMU rejects noncharacters that orjson accepts), no ``0e``-style number
(QEMU lexes ``0e5`` as three tokens), no duplicate key (orjson keeps the last one, QEMU refuses;
we compare the number of ``:`` in the text with the number of keys in the result), and within
the limits. Anything else goes to the exact path, a port of QEMU's lexer state machine
(regular expressions consume the long runs) and of its recursive-descent parser (made
iterative, because 1024 levels of nesting are legal). Values the exact path has framed still
go through ``orjson`` when they pass the same checks.

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

Where we differ on purpose (docs/PROTOCOL.md, "Input framing"): after the first error in a
message that is still open (a limit, or a lexical error whose recovery stopped at a structural
character) we skip the rest of that message by counting brackets, silently, where QEMU resets
and reports the remainder piece by piece (``[[[...`` past the nesting limit costs 1026 errors in
QEMU 7.2, one here). Control characters and 0xFE/0xFF still reset at once, as in QEMU, so the
resynchronisation of qmp-spec.txt section 2.6 keeps working. And the message size counts the
whitespace inside a message, which QEMU does not, so that the bytes we hold stay bounded.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import orjson

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


@dataclass(frozen=True, slots=True)
class JSONMessage:
    """One complete top-level JSON value, not necessarily an object."""

    value: object


@dataclass(frozen=True, slots=True)
class JSONParseError:
    """Input QEMU rejects; ``desc`` is QEMU's error text, sent without an id."""

    desc: str


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

# Token kinds (json-lexer.h JSONTokenType).
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
# Cheap first look for the two things orjson reads differently from QEMU in ASCII JSON:
# \u escapes and a zero integer part with an exponent.
_SUSPECT: Final = re.compile(rb"\\u|0[eE]")
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
        codepoint = codepoint << 6 | continuation & 0x3F
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
                    codepoint = 0x10000 + ((codepoint & 0x3FF) << 10) | trailing & 0x3FF
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
    at the last token or at an error before running out ("premature EOI" is unreachable).
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


def _survey(value: object) -> tuple[int, bool, int]:
    """(number of keys, whether a float occurs, nesting depth) of a parsed value."""
    keys = 0
    has_float = False
    depth = 0
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        children: Iterable[object]
        if isinstance(item, dict):
            keys += len(item)
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            has_float = has_float or isinstance(item, float)
            continue
        depth = max(depth, level)
        pending.extend((child, level + 1) for child in children)
    return keys, has_float, depth


def _string_colons(value: object) -> int:
    """The number of ':' inside the keys and strings of a parsed value."""
    colons = 0
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            colons += item.count(":")
        elif isinstance(item, dict):
            colons += sum(key.count(":") for key in item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return colons


def _orjson_agrees(span: bytes | bytearray, max_nesting: int) -> JSONMessage | None:
    """``span`` parsed by orjson, or None when QEMU's result might differ from orjson's.

    ``span`` must be one message as QEMU would frame it, or begin with '{' and end with '}'.
    """
    if not span.isascii():
        return None
    suspect = _SUSPECT.search(span) is not None
    if suspect and b"\\u" in span:
        return None
    try:
        value = orjson.loads(span)
    except orjson.JSONDecodeError:
        return None
    colons = span.count(b":")
    # Every ':' of valid JSON separates a pair or sits in a string, and orjson keeps one entry
    # per distinct key: equal counts mean no key repeats (the common case needs no walk).
    if (
        isinstance(value, dict)
        and colons == len(value)
        and not suspect
        and max_nesting >= _ORJSON_MAX_DEPTH
    ):
        return JSONMessage(value)
    keys, has_float, depth = _survey(value)
    if suspect and has_float:
        return None
    if depth > max_nesting:
        return None
    if colons != keys and colons != keys + _string_colons(value):
        return None
    return JSONMessage(value)


class JSONStreamFramer:
    """Turns a QMP input byte stream into JSONMessage and JSONParseError events (sans I/O).

    ``max_message_bytes`` bounds the bytes held for one message (QEMU's MAX_TOKEN_SIZE);
    ``max_token_count`` and ``max_nesting`` are QEMU's other two limits. Memory stays within
    ``max_message_bytes`` plus whatever was passed to ``receive_data`` and not pulled yet.
    """

    __slots__ = (
        "_brace_count",
        "_bracket_count",
        "_buf",
        "_eof",
        "_fast_max_bytes",
        "_lexer_state",
        "_max_message_bytes",
        "_max_nesting",
        "_max_token_count",
        "_message_start",
        "_pos",
        "_skipping",
        "_token_count",
        "_token_start",
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
        self._skipping = False  # the open message already had its error: drop it to its end

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and still held: not yet parsed, or part of an unfinished message."""
        return len(self._buf) - self._keep_from()

    def receive_data(self, data: bytes) -> None:
        """Append bytes from the client. An empty ``data`` is not end of input."""
        if self._eof:
            raise RuntimeError("receive_data() after receive_eof()")
        self._buf += data

    def receive_eof(self) -> None:
        """The client closed its side: complete messages still come out, the rest is dropped."""
        self._eof = True

    def next_event(self) -> Event | NeedData:
        """The next event in input order, or NEED_DATA once everything buffered is consumed."""
        if self._lexer_state == _START and self._message_start < 0 and not self._skipping:
            buf = self._buf
            pos = self._pos
            if pos < len(buf) and buf[pos] != 0x7B:  # '{'
                pos = self._pos = _run_end(_WHITESPACE_RUN, buf, pos)
            if pos < len(buf) and buf[pos] == 0x7B:
                message = self._next_plain_object(buf, pos)
                if message is not None:
                    return message
        event = self._lex()
        if event is not None:
            return event
        if self._eof:
            self._discard_partial_message()
        else:
            self._compact()
        return NEED_DATA

    def _next_plain_object(self, buf: bytearray, start: int) -> JSONMessage | None:
        """The fast path: the object at ``start`` if orjson can be trusted with it, else None."""
        # Braces inside strings can fool the count; orjson then refuses the slice, or it is
        # still exactly one valid object, which QEMU frames the same way.
        close = buf.find(b"}", start)
        if close < 0:
            return None
        opened = buf.count(b"{", start, close)
        closed = 1
        while opened != closed:
            previous = close
            close = buf.find(b"}", previous + 1)
            if close < 0:
                return None
            opened += buf.count(b"{", previous, close)
            closed += 1
        end = close + 1
        if end - start > self._fast_max_bytes:
            return None
        message = _orjson_agrees(buf[start:end], self._max_nesting)
        if message is not None:
            if end < len(buf) and buf[end] in _WHITESPACE_BYTES:
                end = _run_end(_WHITESPACE_RUN, buf, end)
            if end == len(buf):
                buf.clear()
                end = 0
            self._pos = end
        return message

    def _keep_from(self) -> int:
        """The first buffered byte still needed."""
        return self._message_start if self._message_start >= 0 else self._pos

    def _compact(self) -> None:
        keep_from = self._keep_from()
        if keep_from:
            # Deleting a bytearray's head is O(1) in CPython: it moves the start pointer.
            del self._buf[:keep_from]
            self._pos -= keep_from
            self._token_start -= keep_from
            if self._message_start >= 0:
                self._message_start -= keep_from

    def _discard_partial_message(self) -> None:
        self._buf.clear()
        self._pos = self._token_start = 0
        self._lexer_state = _START
        self._end_message()

    def _end_message(self) -> None:
        self._message_start = -1
        self._brace_count = self._bracket_count = self._token_count = 0
        self._skipping = False

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
                        self._message_start = pos - 1
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
                    self._end_message()
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
            self._message_start = -1
            self._skipping = True
            event = JSONParseError("JSON token size limit exceeded")
        return event

    def _message_ended(self) -> bool:
        """json-streamer.c: a message ends unless a count is positive and none negative."""
        brace = self._brace_count
        bracket = self._bracket_count
        return not ((brace > 0 or bracket > 0) and brace >= 0 and bracket >= 0)

    def _token(self, kind: int, start: int, end: int) -> Event | None:
        """json-streamer.c json_message_process_token() for one complete token."""
        if kind <= _RSQUARE:
            if kind == _LCURLY:
                self._brace_count += 1
            elif kind == _RCURLY:
                self._brace_count -= 1
            elif kind == _LSQUARE:
                self._bracket_count += 1
            else:
                self._bracket_count -= 1
        if self._skipping:
            if self._message_ended():
                self._end_message()
            return None
        if self._message_start < 0:
            self._message_start = start
        self._token_count += 1
        if end - self._message_start >= self._max_message_bytes:
            desc = "JSON token size limit exceeded"
        elif self._token_count > self._max_token_count:
            desc = "JSON token count limit exceeded"
        elif self._brace_count + self._bracket_count > self._max_nesting:
            desc = "JSON nesting depth limit exceeded"
        elif not self._message_ended():
            return None
        else:
            span = bytes(self._buf[self._message_start : end])
            self._end_message()
            return _orjson_agrees(span, self._max_nesting) or _exact_parse(span)
        # One error for the message; QEMU resets here and reports what follows piece by piece.
        if self._message_ended():
            self._end_message()
        else:
            self._message_start = -1
            self._skipping = True
        return JSONParseError(desc)

    def _lexical_error(self, start: int, end: int) -> JSONParseError | None:
        """A byte no token can take (json-lexer.c JSON_ERROR); the lexer goes into recovery.

        Control characters and 0xFE/0xFF reset the message and always report, as in QEMU:
        qmp-spec.txt section 2.6 has clients send them to resynchronise. Any other bad byte
        reports unless the message already has its error, and then the rest of an open message
        is skipped (unless recovery stops at a line end, see _lex).
        """
        bad_byte = self._buf[end - 1]
        resync = bad_byte < 0x20 or bad_byte >= 0xFE
        error = None
        if resync or not self._skipping:
            # While skipping, the head of a long token may be gone already; report what is left.
            error = _stray(bytes(self._buf[max(start, 0) : end]))
        if resync or (self._brace_count <= 0 and self._bracket_count <= 0):
            self._end_message()
        else:
            self._message_start = -1
            self._skipping = True
        return error


def _number_transition(state: int, byte: int) -> tuple[int, int]:
    """json-lexer.c's number and keyword rows for the byte after a run of digits or letters.

    Returns (token kind, _START) when the token ends before ``byte``, (0, next state) when
    ``byte`` continues it, and (0, _RECOVERY) when ``byte`` is a lexical error.
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
