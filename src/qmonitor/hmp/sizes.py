"""QEMU's size strings (``util/cutils.c`` ``do_strtosz``, QEMU 7.2), for values typed by people.

HMP commands that take a size as a string (``migrate_set_parameter max-bandwidth 1.5G``,
``migrate_set_parameter downtime-limit 0x10``) hand it to ``qemu_strtosz``, and people compare
what they get with QEMU, errors included, so the rules are QEMU's exactly:

- a decimal integer (``strtoull``: leading spaces and a ``+`` allowed; a ``-`` anywhere in it
  is refused), or ``0x`` hex;
- then, for a decimal, an optional fraction ``.DIGITS`` (an exponent makes it all invalid; a
  fraction with nothing to scale it is invalid; ``1.`` and ``1.k`` are fine);
- then an optional suffix ``B K M G T P E`` in either case (powers of ``unit``), else the
  default suffix; a suffix on a hex number works but QEMU warns that it is deprecated;
- the result, rounded half up, must be below 2**64 (else "out of range", QEMU's ``-ERANGE``),
  and nothing may follow (else invalid, ``-EINVAL``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from qmonitor.core.errors import QMonitorError

_UINT64_LIMIT: Final = 1 << 64
_C_SPACES: Final = " \t\n\v\f\r"  # isspace() in the C locale
_FRACTION: Final = re.compile(r"\.[0-9]+(?:[eE][+-]?[0-9]+)?")  # what strtod reads after 1


class SizeError(QMonitorError, ValueError):
    """``qemu_strtosz`` refused the text: ``out_of_range`` for ``-ERANGE``, else ``-EINVAL``."""

    def __init__(self, text: str, *, out_of_range: bool) -> None:
        super().__init__(f"{'out of range' if out_of_range else 'invalid'} size '{text}'")
        self.out_of_range = out_of_range


def _strtoull(text: str, start: int, base: int) -> tuple[int | None, int, bool]:
    """glibc ``strtoull``: (value or None for "no conversion", end, overflowed)."""
    position = start
    while position < len(text) and text[position] in _C_SPACES:
        position += 1
    negative = position < len(text) and text[position] == "-"
    if position < len(text) and text[position] in "+-":
        position += 1
    digits = "0123456789abcdef"[:base]
    if text[position : position + 2].lower() == "0x" and base == 16:
        # "0x" is a prefix only when a hex digit follows; else "0" is the number
        position += 2 if text[position + 2 : position + 3].lower() in tuple(digits) else 0
    first_digit = position
    while position < len(text) and text[position].lower() in digits:
        position += 1
    if position == first_digit:
        return None, start, False
    value = int(text[first_digit:position], base)
    if value >= _UINT64_LIMIT:
        return _UINT64_LIMIT - 1, position, True
    return (-value % _UINT64_LIMIT if negative else value), position, False


def _suffix_multiplier(suffix: str, unit: int) -> int | None:
    """``suffix_mul``: B K M G T P E, either case."""
    power = "BKMGTPE".find(suffix.upper()) if len(suffix) == 1 else -1
    return unit**power if power >= 0 else None


def strtosz(
    text: str,
    default_suffix: str = "B",
    *,
    unit: int = 1024,
    warn: Callable[[str], None] | None = None,
) -> int:
    """The size ``text`` stands for (see the module docstring); raises :class:`SizeError`.

    ``warn`` gets QEMU's deprecation warning for a suffix on a hex number (QEMU prints it with
    ``warn_report`` even when the text turns out to be invalid).
    """
    value, end, overflowed = _strtoull(text, 0, 10)
    if value is None:
        raise SizeError(text, out_of_range=False)
    if overflowed:
        raise SizeError(text, out_of_range=end == len(text))
    if "-" in text[:end]:
        raise SizeError(text, out_of_range=False)
    hex_number = False
    fraction_bits = 0  # the fraction as a 64-bit fixed-point number
    if value == 0 and text[end : end + 1] in ("x", "X"):
        value, end, overflowed = _strtoull(text, 0, 16)
        assert value is not None
        if overflowed:
            raise SizeError(text, out_of_range=end == len(text))
        if text[end : end + 1] == ".":
            raise SizeError(text, out_of_range=False)
        hex_number = True
    elif text[end : end + 1] == ".":
        fraction = _FRACTION.match(text, end)
        if fraction is None:
            end += 1  # "1." and "1.k": strtod read nothing, QEMU skips the dot
        elif "e" in fraction.group().lower():
            raise SizeError(text, out_of_range=False)
        else:
            fraction_bits = int(float(fraction.group()) * _UINT64_LIMIT)
            end = fraction.end()
    multiplier = _suffix_multiplier(text[end : end + 1], unit)
    if multiplier is not None:
        if hex_number and warn is not None:
            warn(f"Using a multiplier suffix on hex numbers is deprecated: {text}")
        end += 1
    else:
        multiplier = _suffix_multiplier(default_suffix, unit)
        assert multiplier is not None
    if multiplier == 1:
        if fraction_bits:
            raise SizeError(text, out_of_range=False)  # a fraction needs a scale
    else:
        scaled_fraction = fraction_bits * multiplier
        value = value * multiplier + (scaled_fraction >> 64)
        value += (scaled_fraction >> 63) & 1  # round 0.5 upward
        if value >= _UINT64_LIMIT:
            raise SizeError(text, out_of_range=end == len(text))
    if end != len(text):
        raise SizeError(text, out_of_range=False)
    return value
