"""The migration stream's format (see :mod:`qmonitor.machine.migration` for its layout): its
constants, the packing and unpacking of its records, and the error a stream this machine
cannot load raises.

Sans I/O: these functions turn values into the stream's bytes and bytes back into values,
checking them; the source and destination only move the bytes (a run of data pages goes from
guest RAM to the socket and back without passing through here, so it is never copied).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

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


class Record(NamedTuple):
    """One 16-byte record: ``kind`` (:data:`RECORD_PAGES`: ``page_count`` pages of data
    follow; :data:`RECORD_ZERO`: ``page_count`` zero pages; :data:`RECORD_END`: the device
    state follows), from page ``first_page``."""

    kind: int
    page_count: int
    first_page: int


RECORD_SIZE: Final = _RECORD.size
LENGTH_SIZE: Final = _LENGTH.size


# -- the source's side: values to bytes ---------------------------------------------------------


def stream_header(ram_size: int, name: str | None) -> bytes:
    """The start of a stream: the magic, then the JSON header that says what RAM it carries."""
    header = json.dumps({"ram-size": ram_size, "page-size": PAGE_SIZE, "name": name}).encode()
    return MAGIC + _LENGTH.pack(len(header)) + header


def pages_record(first: int, count: int) -> bytes:
    """The record announcing ``count`` pages of data from page ``first``; the pages follow."""
    return _RECORD.pack(RECORD_PAGES, count, first)


def zero_record(first: int, count: int) -> bytes:
    """The record for ``count`` all-zero pages from page ``first`` (no data follows)."""
    return _RECORD.pack(RECORD_ZERO, count, first)


def end_record(state: Mapping[str, object]) -> bytes:
    """The end of a stream: the end record and the device state, as JSON."""
    data = json.dumps(state).encode()
    return _RECORD.pack(RECORD_END, 0, 0) + _LENGTH.pack(len(data)) + data


# -- the destination's side: bytes to values, checked -----------------------------------------


def check_magic(data: bytes) -> None:
    """:class:`MigrationStreamError` unless ``data`` (the first ``len(MAGIC)`` bytes of a
    stream) is this format's magic."""
    if data != MAGIC:
        raise MigrationStreamError("not a qmonitor migration stream")


def parse_length(data: bytes) -> int:
    """A 4-byte length: of the header's JSON (after the magic) or of the device state's
    (after an end record)."""
    (length,) = _LENGTH.unpack(data)
    return int(length)


def parse_header(data: bytes, ram_size: int) -> dict[str, Any]:
    """The header's JSON, checked against this machine: same RAM size and page size."""
    header = _json_object(data, "header")
    if header.get("ram-size") != ram_size or header.get("page-size") != PAGE_SIZE:
        raise MigrationStreamError(
            f"RAM size mismatch: the source has {header.get('ram-size')} bytes, "
            f"this VM has {ram_size}"
        )
    return header


def parse_record(data: bytes, ram_pages: int) -> Record:
    """A record of a stream into RAM of ``ram_pages`` pages; :class:`MigrationStreamError` for
    an unknown kind or pages beyond the RAM."""
    record = Record._make(_RECORD.unpack(data))
    kind, count, first = record
    if kind == RECORD_END:
        return record
    if first + count > ram_pages or kind not in (RECORD_PAGES, RECORD_ZERO):
        raise MigrationStreamError(f"bad record {kind} for pages {first}..{first + count}")
    return record


def parse_device_state(data: bytes) -> dict[str, Any]:
    """The device state's JSON object."""
    return _json_object(data, "device state")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """The JSON object of a stream's ``what``, or :class:`MigrationStreamError`."""
    try:
        value = json.loads(data)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise MigrationStreamError(f"bad {what}: {exc}") from None
    if not isinstance(value, dict):
        raise MigrationStreamError(f"bad {what}")
    return value
