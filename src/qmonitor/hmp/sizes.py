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

import errno
from collections.abc import Callable

from qmonitor.core.cutils import qemu_strtosz
from qmonitor.core.errors import QMonitorError


class SizeError(QMonitorError, ValueError):
    """``qemu_strtosz`` refused the text: ``out_of_range`` for ``-ERANGE``, else ``-EINVAL``."""

    def __init__(self, text: str, *, out_of_range: bool) -> None:
        super().__init__(f"{'out of range' if out_of_range else 'invalid'} size '{text}'")
        self.out_of_range = out_of_range


def strtosz(
    text: str,
    default_suffix: str = "B",
    *,
    unit: int = 1024,
    warn: Callable[[str], None] | None = None,
) -> int:
    """The size ``text`` stands for (see the module docstring); raises :class:`SizeError`.

    The one port of QEMU's ``do_strtosz`` is :func:`qmonitor.core.cutils.qemu_strtosz` (the
    command line reads sizes with it too); this gives its result the shape a command wants.
    ``warn`` gets QEMU's deprecation warning for a suffix on a hex number (QEMU prints it with
    ``warn_report`` even when the text turns out to be invalid).
    """
    conversion = qemu_strtosz(text, default_suffix, unit)
    if conversion.hex_with_suffix and warn is not None:
        warn(f"Using a multiplier suffix on hex numbers is deprecated: {text}")
    if conversion.error:
        raise SizeError(text, out_of_range=conversion.error == errno.ERANGE)
    return conversion.value
