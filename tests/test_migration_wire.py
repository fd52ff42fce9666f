"""The migration stream's format, sans I/O (machine/migration/wire.py): the bytes each record
packs to, pinned, and what unpacking refuses; then a damaged stream loaded for real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qmonitor.machine.machine import PAGE_SIZE, Machine, RunState
from qmonitor.machine.migration import MigrationManager, MigrationStreamError
from qmonitor.machine.migration.wire import (
    LENGTH_SIZE,
    MAGIC,
    RECORD_END,
    RECORD_PAGES,
    RECORD_SIZE,
    RECORD_ZERO,
    Record,
    check_magic,
    end_record,
    pages_record,
    parse_device_state,
    parse_header,
    parse_length,
    parse_record,
    stream_header,
    zero_record,
)


def test_records_pack_to_the_streams_bytes() -> None:
    # Little-endian: kind (1 byte), 3 bytes of padding, page count (4), first page (8).
    assert pages_record(first=5, count=3) == bytes.fromhex("01000000 03000000 0500000000000000")
    assert zero_record(first=2**40, count=1) == bytes.fromhex("02000000 01000000 0000000000010000")
    assert end_record({"seed": 7}) == (
        bytes.fromhex("03000000 00000000 0000000000000000") + b"\x0b\x00\x00\x00" + b'{"seed": 7}'
    )
    header = b'{"ram-size": 1048576, "page-size": 4096, "name": "vm0"}'
    assert stream_header(1 << 20, "vm0") == b"QMMIGR\x00\x01" + b"\x37\x00\x00\x00" + header
    assert len(header) == 0x37
    assert RECORD_SIZE == 16 and LENGTH_SIZE == 4


def test_what_is_packed_unpacks() -> None:
    stream = stream_header(1 << 20, None)
    check_magic(stream[: len(MAGIC)])
    length = parse_length(stream[len(MAGIC) : len(MAGIC) + LENGTH_SIZE])
    header = parse_header(stream[len(MAGIC) + LENGTH_SIZE :][:length], 1 << 20)
    assert header == {"ram-size": 1 << 20, "page-size": PAGE_SIZE, "name": None}
    pages = (1 << 20) // PAGE_SIZE
    assert parse_record(pages_record(250, 6), pages) == Record(RECORD_PAGES, 6, 250)
    assert parse_record(zero_record(0, pages), pages) == Record(RECORD_ZERO, pages, 0)
    end = end_record({"workload-step": 3})
    assert parse_record(end[:RECORD_SIZE], pages).kind == RECORD_END
    assert parse_length(end[RECORD_SIZE : RECORD_SIZE + LENGTH_SIZE]) == len(end) - 20
    assert parse_device_state(end[RECORD_SIZE + LENGTH_SIZE :]) == {"workload-step": 3}


@pytest.mark.parametrize(
    ("unpack", "error"),
    [
        (lambda: check_magic(b"QEVM\x00\x00\x00\x03"), "not a qmonitor migration stream"),
        (
            lambda: parse_header(stream_header(2 << 20, "vm0")[12:], 1 << 20),
            "RAM size mismatch: the source has 2097152 bytes, this VM has 1048576",
        ),
        (lambda: parse_header(b"[1]", 1 << 20), "bad header"),
        (lambda: parse_record(pages_record(250, 7), 256), "bad record 1 for pages 250..257"),
        (
            lambda: parse_record(bytes([9]) + bytes(15), 256),
            "bad record 9 for pages 0..0",
        ),
        (lambda: parse_device_state(b"\xff"), "bad device state: "),
    ],
)
def test_a_stream_this_machine_cannot_load_is_refused(unpack: Any, error: str) -> None:
    with pytest.raises(MigrationStreamError) as info:
        unpack()
    assert str(info.value).startswith(error)


async def test_a_damaged_record_fails_the_incoming_migration(tmp_path: Path) -> None:
    stream = tmp_path / "damaged"
    pages = (1 << 20) // PAGE_SIZE
    stream.write_bytes(stream_header(1 << 20, "vm0") + zero_record(pages - 1, 2))
    machine = Machine(ram_size=1 << 20, incoming=True)
    failures: list[str] = []
    manager = MigrationManager(machine, lambda name, data: None, failures.append)
    await manager.start_incoming(f"file:{stream}")
    assert manager.incoming is not None
    await manager.incoming.done
    assert failures == [f"bad record 2 for pages {pages - 1}..{pages + 1}"]
    assert machine.run_state is RunState.INMIGRATE
