"""The migration stream's format (see :mod:`qmonitor.machine.migration` for its layout): its
constants and records, and the error a stream this machine cannot load raises."""

from __future__ import annotations

import json
import struct
from typing import Any, Final

from qmonitor import QMonitorError
from qmonitor.machine.machine import PAGE_SIZE

MAGIC: Final = b"QMMIGR\x00\x01"
_RECORD = struct.Struct("<BxxxIQ")  # kind, page count, first page
_LENGTH = struct.Struct("<I")
RECORD_PAGES: Final = 1
RECORD_ZERO: Final = 2
RECORD_END: Final = 3
ACK: Final = b"\x06"

CHUNK_PAGES: Final = 256
"""Pages handled per step of the sender (1 MiB): zero-page test, cap and cancellation grain."""
MAX_RECORD_PAGES: Final = 4096
"""The longest run of data pages sent as one record (16 MiB)."""

_ZERO_CHUNK: Final = bytes(CHUNK_PAGES * PAGE_SIZE)


class MigrationStreamError(QMonitorError):
    """The incoming stream is not one this machine can load: another format, another RAM
    size, or a damaged record. The migration fails with this text; the machine is not
    started."""


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """The JSON object of a stream's ``what``, or :class:`MigrationStreamError`."""
    try:
        value = json.loads(data)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise MigrationStreamError(f"bad {what}: {exc}") from None
    if not isinstance(value, dict):
        raise MigrationStreamError(f"bad {what}")
    return value
