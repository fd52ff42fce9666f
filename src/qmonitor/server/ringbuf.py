"""chardev/char-ringbuf.c: the ``ringbuf``/``memory`` chardev's ring, and QMP
``ringbuf-write``/``ringbuf-read`` with their HMP spellings (qapi/char.json, hmp-commands.hx),
with QEMU's errors. The commands exist whether or not a ring does, as in QEMU; the rings are
made when the chardevs are opened (:mod:`qmonitor.server.backends`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from qmonitor.core.commands import HumanSyntax
from qmonitor.core.errors import QMPError

if TYPE_CHECKING:
    from qmonitor.server.monitor import Monitor


class RingBuffer:
    """chardev/char-ringbuf.c's ring: ``size`` bytes (a power of two), keeping the newest.

    ``prod`` and ``cons`` count every byte ever written and taken; writing past ``size``
    unread bytes moves ``cons`` on (the oldest are lost), as ``ringbuf_chr_write`` does.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._data = bytearray()  # grown as written: QEMU's g_malloc0 touches nothing either
        self.prod = 0
        self.cons = 0

    @property
    def count(self) -> int:
        """How many bytes are there to read."""
        return self.prod - self.cons

    def write(self, data: bytes) -> None:
        """``ringbuf_chr_write``: append, dropping the oldest beyond ``size``."""
        if len(data) > self.size:  # only the last ``size`` bytes stay
            self.prod += len(data) - self.size
            data = data[-self.size :]
        for byte in data:
            position = self.prod & (self.size - 1)
            if position >= len(self._data):
                grown = min(self.size, max(position + 1, 2 * len(self._data)))
                self._data.extend(bytes(grown - len(self._data)))
            self._data[position] = byte
            self.prod += 1
            if self.prod - self.cons > self.size:
                self.cons = self.prod - self.size

    def read(self, count: int) -> bytes:
        """``ringbuf_chr_read``: take up to ``count`` of the oldest bytes."""
        taken = bytearray()
        while len(taken) < count and self.cons != self.prod:
            taken.append(self._data[self.cons & (self.size - 1)])
            self.cons += 1
        return bytes(taken)


class DataFormat(StrEnum):
    """qapi/char.json ``DataFormat``: how ``ringbuf-write``/``-read`` carry bytes."""

    UTF8 = "utf8"
    BASE64 = "base64"


_BASE64_VALID: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n"
)
_BASE64_RANK: Final = {
    char: rank
    for rank, char in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}


def qbase64_decode(text: str) -> bytes:
    """util/base64.c ``qbase64_decode``: only base64 characters, ``=`` and newlines, then
    GLib's lenient ``g_base64_decode`` (``=`` counts as a 0 digit, a quantum ending in ``=``
    gives fewer bytes, an incomplete last quantum gives none)."""
    if any(char not in _BASE64_VALID for char in text):
        raise QMPError("Base64 data contains invalid characters")
    decoded = bytearray()
    value = count = 0
    last = ["", ""]
    for char in text:
        if char == "\n":
            continue
        last = [char, last[0]]
        value = (value << 6 | _BASE64_RANK.get(char, 0)) & 0xFFFFFF
        count += 1
        if count == 4:
            decoded.append(value >> 16)
            if last[1] != "=":
                decoded.append(value >> 8 & 0xFF)
            if last[0] != "=":
                decoded.append(value & 0xFF)
            count = 0
    return bytes(decoded)


def register_ringbuf_commands(
    monitor: Monitor, labels: Callable[[], Iterable[str]], rings: Mapping[str, RingBuffer]
) -> None:
    """QMP ``ringbuf-write``/``ringbuf-read`` (qapi/char.json) and their HMP spellings, with
    chardev/char-ringbuf.c's errors; ``labels`` gives every chardev's id (a chardev that is
    not a ring is "not a ringbuf device", any other name "not found")."""

    def ring_of(device: str) -> RingBuffer:
        ring = rings.get(device)
        if ring is None:
            if device in set(labels()):
                raise QMPError(f"{device} is not a ringbuf device")
            raise QMPError(f"Device '{device}' not found")
        return ring

    @monitor.command(
        name="ringbuf-write",
        hmp=HumanSyntax(
            name="ringbuf_write",
            args_type="device:s,data:s",
            params="device data",
            help="Write to a ring buffer character device",
        ),
    )
    def ringbuf_write(device: str, data: str, format: DataFormat | None = None) -> None:
        """Write to a ring buffer character device."""
        ring = ring_of(device)
        if format is DataFormat.BASE64:
            ring.write(qbase64_decode(data))
        else:
            ring.write(data.encode("utf-8", "surrogatepass").split(b"\0", 1)[0])

    @monitor.command(name="ringbuf-read")
    def ringbuf_read(device: str, size: int, format: DataFormat | None = None) -> str:
        """Read from a ring buffer character device.

        As text, the bytes up to the first NUL (QEMU returns a C string), invalid UTF-8 as
        U+FFFD (QEMU's JSON writer replaces it as it writes the reply).
        """
        ring = ring_of(device)
        if size <= 0:
            raise QMPError("size must be greater than zero")
        taken = ring.read(size)
        if format is DataFormat.BASE64:
            import base64  # only for this

            return base64.b64encode(taken).decode("ascii")
        return taken.split(b"\0", 1)[0].decode("utf-8", "replace")

    @monitor.command(
        name="hmp-ringbuf-read",
        qmp=False,
        hmp=HumanSyntax(
            name="ringbuf_read",
            args_type="device:s,size:i",
            params="device size",
            help="Read from a ring buffer character device",
        ),
    )
    def hmp_ringbuf_read(device: str, size: int) -> str:
        """monitor/hmp-cmds.c ``hmp_ringbuf_read``: the text, ``\\`` doubled, control
        characters but newline and tab as ``\\uXXXX``, then a newline."""
        text = ringbuf_read(device, size)
        shown = []
        for char in text:
            if char == "\\":
                shown.append("\\\\")
            elif (ord(char) < 0x20 and char not in "\n\t") or char == "\x7f":
                shown.append(f"\\u{ord(char):04X}")
            else:
                shown.append(char)
        return "".join(shown) + "\n"
