"""A human command line -> the command and its arguments, as QEMU's HMP parses it.

This follows ``monitor/hmp.c`` (QEMU 7.2) closely, because people and scripts know its rules
and its messages:

- ``get_command_name``: the command name ends at a space or ``/``; ``info`` looks the next
  word up in its sub-table. An unknown name prints ``unknown command: 'TEXT'`` where TEXT is
  the line up to the end of the name, as typed (leading spaces and the ``info`` word included).
- ``monitor_parse_arguments``: the ``args_type`` items are consumed in order (see
  :mod:`qmonitor.hmp.table` for the letters). A failure prints the reason, then
  ``Try "help NAME" for more information`` where NAME is again the typed command name.
- ``get_str``: a word, or a double-quoted string with the escapes ``\\n \\r \\\\ \\' \\"``.
- ``get_expr``: integers are C-like expressions (``+ - * / % & | ^ ~``, parentheses, character
  constants, ``0x`` hex and ``0`` octal numbers), computed in int64 with wrap-around.
- ``qemu_strtosz_MiB`` (``util/cutils.c``) for sizes: a decimal number, an optional fraction,
  an optional suffix ``B K M G T P E`` (powers of 1024), MiB without one.

One deliberate difference: QEMU accepts flags only in the order of ``args_type``
(``migrate -b -d uri`` fails with ``unsupported option -d``); here consecutive flags may come
in any order. An input QEMU accepts is parsed the same way.

Nothing here performs I/O; :func:`parse_line` returns what to run or the text to print.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from qmonitor.core.errors import QMonitorError
from qmonitor.hmp.table import DETACH_KEY, INFO, ArgSpec, CommandTable, HumanEntry

_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1
_SPACES: Final = " \t\n\v\f\r"  # qemu_isspace (C isspace in the C locale)
_SIZE_SUFFIXES: Final = {c: 1024**i for i, c in enumerate("bkmgtpe")}  # util/cutils.c suffix_mul
_FLOAT: Final = re.compile(
    r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf(?:inity)?|nan)", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """A line that names a command and whose arguments parsed.

    ``arguments`` maps QMP parameter names to values (str, int, float or bool), ready for the
    command's ``convert_arguments``; ``detach`` is the ``-d`` flag of a detachable command.
    """

    entry: HumanEntry
    arguments: dict[str, object]
    detach: bool = False


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """A line that did not parse: ``text`` is what QEMU prints for it (``\\n`` line ends)."""

    text: str


class ArgumentError(QMonitorError):
    """One argument did not parse; the message is QEMU's text for it."""


def _int64(value: int) -> int:
    return (value - _INT64_MIN) % 2**64 + _INT64_MIN


class _Cursor:
    """A position in the line, with the scanning primitives of ``monitor/hmp.c``."""

    def __init__(self, text: str, position: int = 0) -> None:
        self.text = text
        self.position = position

    @property
    def char(self) -> str:
        """The current character, or "" at the end (C's NUL)."""
        return self.text[self.position] if self.position < len(self.text) else ""

    def at_end(self) -> bool:
        return self.position >= len(self.text)

    def skip_spaces(self) -> None:
        while self.char and self.char in _SPACES:
            self.position += 1

    def get_str(self) -> str | None:
        """QEMU's ``get_str``: a word or a quoted string; None if there is none or it is bad."""
        self.skip_spaces()
        if self.at_end():
            return None
        if self.char != '"':
            start = self.position
            while self.char and self.char not in _SPACES:
                self.position += 1
            return self.text[start : self.position]
        self.position += 1
        out = []
        while self.char and self.char != '"':
            if self.char == "\\":
                self.position += 1
                escaped = self.char
                self.position += 1
                if not escaped or escaped not in "nr\\'\"":
                    return None  # QEMU prints "unsupported escape code" to its stdout only
                out.append({"n": "\n", "r": "\r"}.get(escaped, escaped))
            else:
                out.append(self.char)
                self.position += 1
        if self.char != '"':
            return None  # "unterminated string", likewise not shown on the monitor
        self.position += 1
        return "".join(out)


def split_words(text: str) -> list[str] | None:
    """QEMU's ``parse_cmdline``: the words of ``text`` (quotes honoured), None if malformed."""
    cursor = _Cursor(text)
    words: list[str] = []
    while True:
        cursor.skip_spaces()
        if cursor.at_end():
            return words
        word = cursor.get_str()
        if word is None:
            return None
        words.append(word)


# --- integer expressions (get_expr) --------------------------------------------------------------


class _Expression:
    """QEMU's recursive-descent ``expr_sum``: + - over & | ^ over * / % over unary."""

    def __init__(self, cursor: _Cursor) -> None:
        self.cursor = cursor

    def _next(self) -> None:
        if not self.cursor.at_end():
            self.cursor.position += 1
            self.cursor.skip_spaces()

    def sum(self) -> int:
        value = self._logic()
        while self.cursor.char in ("+", "-"):
            op = self.cursor.char
            self._next()
            other = self._logic()
            value = _int64(value + other if op == "+" else value - other)
        return value

    def _logic(self) -> int:
        value = self._product()
        while self.cursor.char in ("&", "|", "^"):
            op = self.cursor.char
            self._next()
            other = self._product()
            value = value & other if op == "&" else value | other if op == "|" else value ^ other
        return value

    def _product(self) -> int:
        value = self._unary()
        while self.cursor.char in ("*", "/", "%"):
            op = self.cursor.char
            self._next()
            other = self._unary()
            if op == "*":
                value = _int64(value * other)
                continue
            if other == 0:
                raise ArgumentError("division by zero")
            quotient = abs(value) // abs(other) * (1 if (value < 0) == (other < 0) else -1)
            value = _int64(quotient) if op == "/" else _int64(value - other * quotient)
        return value

    def _unary(self) -> int:
        cursor = self.cursor
        char = cursor.char
        if char == "+":
            self._next()
            return self._unary()
        if char == "-":
            self._next()
            return _int64(-self._unary())
        if char == "~":
            self._next()
            return ~self._unary()
        if char == "(":
            self._next()
            value = self.sum()
            if cursor.char != ")":
                raise ArgumentError("')' expected")
            self._next()
            return value
        if char == "'":
            cursor.position += 1
            if cursor.at_end():
                raise ArgumentError("character constant expected")
            value = ord(cursor.char)
            cursor.position += 1
            if cursor.char != "'":
                raise ArgumentError("missing terminating ' character")
            self._next()
            return value
        if char == "$":
            raise ArgumentError("unknown register")  # there are no CPU registers here
        if not char:
            raise ArgumentError("unexpected end of expression")
        return self._number()

    def _number(self) -> int:
        """``strtoull(p, &end, 0)``: 0x hex, 0 octal, else decimal."""
        cursor = self.cursor
        text, start = cursor.text, cursor.position
        match = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*").match(text, start)
        if match is None:
            raise ArgumentError(f"invalid char '{text[start]}' in expression")
        digits = match.group()
        value = int(digits, 16 if digits[:2] in ("0x", "0X") else 8 if digits[0] == "0" else 10)
        if value > _UINT64_MAX:
            raise ArgumentError("number too large")
        cursor.position = match.end()
        cursor.skip_spaces()
        return _int64(value)


def get_expr(cursor: _Cursor) -> int:
    """An integer expression at ``cursor`` (QEMU's ``get_expr``)."""
    cursor.skip_spaces()
    return _Expression(cursor).sum()


# --- sizes and numbers ---------------------------------------------------------------------------


def get_size(cursor: _Cursor) -> int:
    """A size as ``qemu_strtosz_MiB`` reads it (default unit MiB), at most INT64_MAX."""
    text, start = cursor.text, cursor.position
    match = re.compile(r"\+?(\d+)(\.\d*)?").match(text, start)
    if match is None:
        raise ArgumentError("invalid size")
    whole = int(match.group(1))
    fraction = Fraction(match.group(2) + "0") if match.group(2) else Fraction(0)
    end = match.end()
    if whole == 0 and end < len(text) and text[end] in "xX":
        raise ArgumentError("invalid size")  # looks like hex: rejected
    if end < len(text) and text[end] in "eE" and match.group(2):
        raise ArgumentError("invalid size")  # exponents are refused
    suffix = text[end].lower() if end < len(text) else ""
    if suffix in _SIZE_SUFFIXES:
        multiplier = _SIZE_SUFFIXES[suffix]
        end += 1
    else:
        multiplier = _SIZE_SUFFIXES["m"]
    if multiplier == 1 and fraction:
        raise ArgumentError("invalid size")  # a fraction needs a scale
    value = int((whole + fraction) * multiplier + Fraction(1, 2))  # rounds half up
    if value > 2**63 - 1:
        raise ArgumentError("invalid size")
    cursor.position = end
    return value


def get_time(cursor: _Cursor) -> float:
    """QEMU's ``T``: a floating-point number, optionally suffixed ``ms``, ``us`` or ``ns``."""
    match = _FLOAT.match(cursor.text, cursor.position)
    if match is None:
        raise ArgumentError("Number expected")
    value = float(match.group())
    if not math.isfinite(value):
        raise ArgumentError("Bad number")
    cursor.position = match.end()
    scale = {"ms": 1e3, "us": 1e6, "ns": 1e9}.get(
        cursor.text[cursor.position : cursor.position + 2]
    )
    if scale is not None:
        value /= scale
        cursor.position += 2
    if not cursor.at_end() and cursor.char not in _SPACES:
        raise ArgumentError("Unknown unit suffix")
    return value


# --- arguments -----------------------------------------------------------------------------------


def _parse_flags(
    cursor: _Cursor, flags: list[ArgSpec], arguments: dict[str, object], name: str
) -> None:
    """A run of consecutive ``-X`` items: take the flags given, in any order."""
    by_letter = {spec.flag: spec for spec in flags}
    while True:
        cursor.skip_spaces()
        if cursor.char != "-":
            return
        letter = cursor.text[cursor.position + 1 : cursor.position + 2]
        if not letter.isalpha():
            return  # a negative number, not a flag
        spec = by_letter.get(letter)
        if spec is None:
            raise ArgumentError(f"{name}: unsupported option -{letter}")
        cursor.position += 2
        if spec.flag_takes_value:
            value = cursor.get_str()
            if value is None:
                raise ArgumentError(f"{name}: value expected for -{letter}")
            arguments[spec.key] = value
        else:
            arguments[spec.key] = True


def _parse_one(cursor: _Cursor, spec: ArgSpec, arguments: dict[str, object], name: str) -> None:
    cursor.skip_spaces()
    if spec.optional and cursor.at_end():
        return
    letter = spec.letter
    if letter in "sF":
        value = cursor.get_str()
        if value is None:
            expected = "filename" if letter == "F" else "string"
            raise ArgumentError(f"{name}: {expected} expected")
        arguments[spec.key] = value
    elif letter == "S":
        if cursor.at_end():
            raise ArgumentError(f"{name}: string expected")
        arguments[spec.key] = cursor.text[cursor.position :]
        cursor.position = len(cursor.text)
    elif letter in "ilM":
        number = get_expr(cursor)
        if letter == "i" and (number >> 32) & 0xFFFFFFFF:
            raise ArgumentError(f"'{name}' has failed: integer is for 32-bit values")
        if letter == "M":
            if number < 0:
                raise ArgumentError("enter a positive value")
            number = _int64(number * 1024 * 1024)
        arguments[spec.key] = number
    elif letter == "o":
        arguments[spec.key] = get_size(cursor)
    elif letter == "T":
        arguments[spec.key] = get_time(cursor)
    else:
        assert letter == "b"
        start = cursor.position
        while cursor.char and cursor.char.isprintable() and cursor.char != " ":
            cursor.position += 1
        word = cursor.text[start : cursor.position]
        if word not in ("on", "off"):
            raise ArgumentError("Expected 'on' or 'off'")
        arguments[spec.key] = word == "on"


def parse_arguments(entry: HumanEntry, text: str) -> dict[str, object]:
    """Parse ``text`` (the line after the command name) by ``entry.args``.

    Raises :class:`ArgumentError` with QEMU's message (``monitor_parse_arguments``).
    """
    cursor = _Cursor(text)
    arguments: dict[str, object] = {}
    name = entry.table_name
    specs = list(entry.args)
    index = 0
    while index < len(specs):
        if specs[index].is_flag:
            end = index
            while end < len(specs) and specs[end].is_flag:
                end += 1
            _parse_flags(cursor, specs[index:end], arguments, name)
            index = end
            continue
        _parse_one(cursor, specs[index], arguments, name)
        index += 1
    cursor.skip_spaces()
    if not cursor.at_end():
        raise ArgumentError(f"{name}: extraneous characters at the end of line")
    return arguments


def _command_name(cursor: _Cursor) -> str:
    """``get_command_name``: skip spaces, then up to a space, ``/`` or the end."""
    cursor.skip_spaces()
    start = cursor.position
    while cursor.char and cursor.char != "/" and cursor.char not in _SPACES:
        cursor.position += 1
    return cursor.text[start : cursor.position]


def find_command(table: CommandTable, line: str) -> tuple[HumanEntry, int] | ParseFailure | None:
    """Look the command of ``line`` up: (entry, where its arguments start), or what to print.

    None for a blank line (QEMU does nothing).
    """
    cursor = _Cursor(line)
    name = _command_name(cursor)
    if not name:
        return None
    entries = table.top
    cursor.skip_spaces()
    if name == INFO and not cursor.at_end():
        entries = table.info
        name = _command_name(cursor)
        cursor.skip_spaces()
    entry = entries.get(name)
    if entry is None:
        return ParseFailure(f"unknown command: '{line[: cursor.position].rstrip(_SPACES)}'\n")
    return entry, cursor.position


def parse_line(table: CommandTable, line: str) -> ParsedLine | ParseFailure | None:
    """Parse one command line (see the module docstring); None for a blank line."""
    found = find_command(table, line)
    if not isinstance(found, tuple):
        return found
    entry, arguments_start = found
    try:
        arguments = parse_arguments(entry, line[arguments_start:])
    except ArgumentError as error:
        typed_name = line[:arguments_start].rstrip(_SPACES)
        return ParseFailure(f'{error}\nTry "help {typed_name}" for more information\n')
    detach = False
    if entry.command.detachable and DETACH_KEY in arguments:
        detach = bool(arguments[DETACH_KEY])
        if not entry.passes_detach:
            del arguments[DETACH_KEY]
    return ParsedLine(entry, arguments, detach)
