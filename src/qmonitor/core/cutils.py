"""QEMU's number parsers (util/cutils.c, qapi/qapi-util.c), with the C library's edge cases.

Every command-line number QEMU reads goes through one of these, and users (and the tests of
management tools) see their quirks: ``strtoull`` reads ``-1`` as 2^64 - 1, base 0 reads ``010``
as octal and ``0x10`` as hex, leading white space is skipped, sizes take a fraction (``1.5G``)
but no exponent, and a multiplier on a hex size is accepted with a deprecation warning. They are
ported here from the C, so that the same text gives the same number or the same error.

Each function returns an error code like the C (``EINVAL`` or ``ERANGE``, 0 on success) and
leaves the wording of the error to its caller, as QEMU does.
"""

from __future__ import annotations

import errno
import re
from typing import Final

from qmonitor.core.record import Record

EINVAL: Final = errno.EINVAL
ERANGE: Final = errno.ERANGE

_UINT64_END: Final = 1 << 64
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_INT_MIN: Final = -(1 << 31)
_INT_MAX: Final = (1 << 31) - 1

# C isspace() in the "C" locale; QEMU never calls setlocale(LC_CTYPE) before parsing options.
_C_SPACE: Final = " \t\n\v\f\r"
_DIGITS_OF_BASE: Final = {
    base: frozenset("0123456789abcdefghijklmnopqrstuvwxyz"[:base])
    | frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:base])
    for base in (8, 10, 16)
}
# More significant digits than any 64-bit number has in base 8 (22), so certainly out of range;
# also keeps int() below Python's limit on long conversions.
_MAX_SIGNIFICANT_DIGITS: Final = 30
# strtod() of a fraction that starts at the '.': digits, then an optional exponent.
_FRACTION: Final = re.compile(r"\.([0-9]+)((?:[eE][-+]?[0-9]+)?)")


class Conversion(Record):
    """What a C conversion function reports: ``error`` (0, EINVAL or ERANGE), ``value``, ``end``.

    ``end`` is the index of the first character not consumed, as the C ``*endptr``.
    """

    __slots__ = ("end", "error", "value")

    error: Final[int]
    value: Final[int]
    end: Final[int]

    def __init__(self, error: int, value: int, end: int) -> None:
        self.error = error
        self.value = value
        self.end = end


def _strto_integer(text: str, base: int) -> tuple[int, int, bool]:
    """glibc ``strtoull``/``strtoll`` core: (magnitude with sign, end, whether anything was read).

    The sign is applied but no range is checked; the callers clamp as their C function does.
    """
    index = 0
    while index < len(text) and text[index] in _C_SPACE:
        index += 1
    negative = False
    if index < len(text) and text[index] in "+-":
        negative = text[index] == "-"
        index += 1
    has_hex_prefix = (
        text[index : index + 2] in ("0x", "0X")
        and index + 2 < len(text)
        and text[index + 2] in _DIGITS_OF_BASE[16]
    )
    if base == 0:
        if has_hex_prefix:
            base = 16
        elif text[index : index + 1] == "0":
            base = 8
        else:
            base = 10
    if base == 16 and has_hex_prefix:
        index += 2
    digits = _DIGITS_OF_BASE[base]
    start = index
    while index < len(text) and text[index] in digits:
        index += 1
    if index == start:
        return 0, 0, False  # no conversion: *endptr is the start of the string
    significant = text[start:index].lstrip("0")
    if len(significant) > _MAX_SIGNIFICANT_DIGITS:
        significant = "1" + "0" * _MAX_SIGNIFICANT_DIGITS
    magnitude = int(significant or "0", base)
    return (-magnitude if negative else magnitude), index, True


def _check_strtox(converted: bool, end: int, text: str, want_end: bool, range_error: bool) -> int:
    """util/cutils.c check_strtox_error() on Linux."""
    if not converted:
        return EINVAL
    if not want_end and end < len(text):
        return EINVAL
    return ERANGE if range_error else 0


def qemu_strtou64(text: str, base: int = 0, *, want_end: bool = False) -> Conversion:
    """``qemu_strtou64()``: ``strtoull`` semantics, so a leading '-' negates modulo 2^64."""
    value, end, converted = _strto_integer(text, base)
    range_error = abs(value) >= _UINT64_END
    if range_error:
        value = _UINT64_END - 1
    elif value < 0:
        value += _UINT64_END
    return Conversion(_check_strtox(converted, end, text, want_end, range_error), value, end)


def qemu_strtoi64(text: str, base: int = 0) -> Conversion:
    """``qemu_strtoi64()`` of a whole string: ``strtoll``, clamped to int64 on overflow."""
    value, end, converted = _strto_integer(text, base)
    range_error = not _INT64_MIN <= value <= _INT64_MAX
    value = min(max(value, _INT64_MIN), _INT64_MAX)
    return Conversion(_check_strtox(converted, end, text, False, range_error), value, end)


def c_strtoll(text: str, base: int = 0) -> Conversion:
    """C ``strtoll()``: ``error`` is ERANGE on overflow (value clamped), EINVAL when no digits
    were read; ``end`` says where it stopped (the caller looks at what follows)."""
    value, end, converted = _strto_integer(text, base)
    range_error = not _INT64_MIN <= value <= _INT64_MAX
    value = min(max(value, _INT64_MIN), _INT64_MAX)
    return Conversion(ERANGE if range_error else 0 if converted else EINVAL, value, end)


def parse_uint(text: str, base: int = 0) -> Conversion:
    """util/cutils.c ``parse_uint()``: ``strtoull()`` refusing a negative number (ERANGE)."""
    value, end, converted = _strto_integer(text, base)
    if not converted:
        return Conversion(EINVAL, 0, 0)
    if abs(value) >= _UINT64_END:
        return Conversion(ERANGE, _UINT64_END - 1, end)
    if text.lstrip(_C_SPACE).startswith("-"):
        return Conversion(ERANGE, 0, end)
    return Conversion(0, value, end)


def qemu_strtoi(text: str, base: int = 10) -> Conversion:
    """``qemu_strtoi()`` of a whole string: ``strtoll`` narrowed to a C int."""
    value, end, converted = _strto_integer(text, base)
    range_error = not _INT_MIN <= value <= _INT_MAX
    value = min(max(value, _INT_MIN), _INT_MAX)
    return Conversion(_check_strtox(converted, end, text, False, range_error), value, end)


def _suffix_multiplier(suffix: str, unit: int) -> int:
    """util/cutils.c suffix_mul(): 0 for a character that is no size suffix."""
    exponent = "BKMGTPE".find(suffix.upper()) if suffix else -1
    return unit**exponent if exponent >= 0 else 0


class SizeConversion(Record):
    """``qemu_strtosz()``'s result, and whether it warned about a hex number with a suffix."""

    __slots__ = ("error", "hex_with_suffix", "value")

    error: Final[int]
    value: Final[int]
    hex_with_suffix: Final[bool]

    def __init__(self, error: int, value: int, hex_with_suffix: bool = False) -> None:
        self.error = error
        self.value = value
        self.hex_with_suffix = hex_with_suffix


def qemu_strtosz(text: str, default_suffix: str = "B", unit: int = 1024) -> SizeConversion:
    """util/cutils.c do_strtosz() of a whole string (``end`` NULL), in the same order of checks.

    Decimal with an optional fraction and an optional suffix of B, K, M, G, T, P or E (either
    case); or hex (``0x...``), which may take a suffix but warns (the caller reports the warning
    ``Using a multiplier suffix on hex numbers is deprecated: TEXT`` where QEMU would). Negative
    numbers, exponents, octal and fractions without a scale are refused; the result must fit in
    64 bits.
    """
    parsed = qemu_strtou64(text, 10, want_end=True)
    end = parsed.end
    if parsed.error:
        return SizeConversion(parsed.error if _consumed_all(text, end) else EINVAL, 0)
    if "-" in text[:end]:
        return SizeConversion(EINVAL, 0)
    value = parsed.value
    fraction_bits = 0
    is_hex = False
    if value == 0 and text[end : end + 1] in ("x", "X"):
        parsed = qemu_strtou64(text, 16, want_end=True)
        end = parsed.end
        if parsed.error:
            return SizeConversion(parsed.error if _consumed_all(text, end) else EINVAL, 0)
        if text[end : end + 1] == ".":
            return SizeConversion(EINVAL, 0)
        value = parsed.value
        is_hex = True
    elif text[end : end + 1] == ".":
        fraction = _FRACTION.match(text, end)
        if fraction is None:
            end += 1  # strtod() read nothing: do_strtosz() steps over the '.' and goes on
        elif fraction[2]:
            return SizeConversion(EINVAL, 0)
        else:
            end = fraction.end()
            # (uint64_t)(fraction * 0x1p64): a fraction that rounds to 1.0 wraps to 0 on x86-64.
            fraction_bits = int(float("0" + fraction[0]) * _UINT64_END) % _UINT64_END
    multiplier = _suffix_multiplier(text[end : end + 1], unit)
    warned = False
    if multiplier:
        warned = is_hex
        end += 1
    else:
        multiplier = _suffix_multiplier(default_suffix, unit)
    if multiplier == 1:
        if fraction_bits:
            return SizeConversion(EINVAL, 0, warned)
    else:
        scaled_fraction = fraction_bits * multiplier
        # 64.64 fixed point times the multiplier, rounding a half upward.
        value = value * multiplier + (scaled_fraction >> 64) + ((scaled_fraction >> 63) & 1)
        if value >= _UINT64_END:
            return SizeConversion(ERANGE if end == len(text) else EINVAL, 0, warned)
    if end != len(text):
        return SizeConversion(EINVAL, 0, warned)
    return SizeConversion(0, value, warned)


def _consumed_all(text: str, end: int) -> bool:
    return end == len(text)


def qapi_bool_parse(value: str) -> bool | None:
    """qapi/qapi-util.c qapi_bool_parse(): on/yes/true/y and off/no/false/n, else None."""
    if value in ("on", "yes", "true", "y"):
        return True
    if value in ("off", "no", "false", "n"):
        return False
    return None


def id_wellformed(identifier: str) -> bool:
    """util/id.c id_wellformed(): a letter, then letters, digits, '-', '.' and '_'."""
    return re.fullmatch(r"[A-Za-z][A-Za-z0-9_.\-]*", identifier) is not None
