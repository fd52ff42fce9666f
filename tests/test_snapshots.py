"""Snapshot files: exact restore, refusal of damaged files, no partial snapshot ever visible."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from qmonitor import QMPError
from qmonitor.machine.commands import render_snapshots
from qmonitor.machine.machine import Machine, RunState
from qmonitor.machine.snapshots import (
    SnapshotStore,
    human_size,
    load_snapshot,
    read_info,
    save_snapshot,
)


def _ignore(done: int, total: int) -> None:
    return None


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    snapshots = SnapshotStore(tmp_path / "state")
    snapshots.open()
    return snapshots


def _machine(pages_written: int = 1000) -> Machine:
    machine = Machine(ram_size=4 << 20, seed=5)
    machine.advance(pages_written)
    return machine


async def test_loadvm_restores_the_saved_digest_exactly(store: SnapshotStore) -> None:
    machine = _machine()
    saved = await machine.digest()
    await save_snapshot(machine, store, "t1", _ignore)
    machine.advance(500)
    assert await machine.digest() != saved
    await load_snapshot(machine, store, "t1", _ignore)
    assert await machine.digest() == saved
    assert machine.run_state is RunState.RUNNING


async def test_save_holds_the_guest_in_save_vm_and_puts_it_back(store: SnapshotStore) -> None:
    machine = _machine()
    seen: list[RunState] = []
    machine.add_state_listener(lambda old, new: seen.append(new))
    await save_snapshot(machine, store, "t1", lambda done, total: seen.append(machine.run_state))
    assert seen[0] is RunState.SAVE_VM and RunState.SAVE_VM in seen[1:-1]
    assert machine.run_state is RunState.RUNNING


async def test_saving_an_existing_tag_replaces_it(store: SnapshotStore) -> None:
    machine = _machine()
    await save_snapshot(machine, store, "t", _ignore)
    machine.advance(10)
    second = await machine.digest()
    await save_snapshot(machine, store, "t", _ignore)
    machine.advance(10)
    await load_snapshot(machine, store, "t", _ignore)
    assert await machine.digest() == second
    assert [info.tag for info in store.entries()] == ["t"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
async def test_damaged_snapshot_is_refused_and_the_machine_unchanged(
    store: SnapshotStore, damage: str
) -> None:
    machine = _machine()
    await save_snapshot(machine, store, "t", _ignore)
    path = store.path_for("t")
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        del data[len(data) - 100 :]
    elif damage == "garbage":
        data[:8] = b"NOTSNAP!"
    else:
        data = bytearray()
    path.write_bytes(data)
    machine.advance(7)
    before = (await machine.digest(), machine.run_state)
    with pytest.raises(QMPError) as info:
        await load_snapshot(machine, store, "t", _ignore)
    assert "Snapshot 't' is damaged" in info.value.desc
    assert (await machine.digest(), machine.run_state) == before


async def test_loading_a_missing_snapshot_says_so_like_qemu(store: SnapshotStore) -> None:
    with pytest.raises(QMPError, match=r"^Snapshot 'nope' does not exist in one or more devices$"):
        await load_snapshot(_machine(), store, "nope", _ignore)


async def test_snapshot_of_another_ram_size_is_refused(store: SnapshotStore) -> None:
    await save_snapshot(_machine(), store, "t", _ignore)
    bigger = Machine(ram_size=8 << 20)
    with pytest.raises(QMPError, match="was taken with 4194304 bytes of RAM"):
        await load_snapshot(bigger, store, "t", _ignore)


async def test_cancelled_save_leaves_no_file_and_the_old_one_intact(
    tmp_path: Path,
) -> None:
    store = SnapshotStore(tmp_path)
    store.open()
    machine = Machine(ram_size=64 << 20)
    machine.advance(machine.pages)  # 64 MiB of data: several chunks
    await save_snapshot(machine, store, "t", _ignore)
    old = store.path_for("t").read_bytes()
    machine.advance(5)
    first_progress = asyncio.Event()

    def progress(done: int, total: int) -> None:
        if done:
            first_progress.set()

    task = asyncio.ensure_future(save_snapshot(machine, store, "t", progress))
    await first_progress.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(os.listdir(tmp_path)) == [store.path_for("t").name]
    assert store.path_for("t").read_bytes() == old
    assert machine.run_state is RunState.RUNNING


def test_temporaries_of_dead_processes_are_removed_and_never_listed(tmp_path: Path) -> None:
    dead = tmp_path / ".t.qmsnap.999999999.tmp"
    mine = tmp_path / f".u.qmsnap.{os.getpid()}.tmp"
    dead.write_bytes(b"partial")
    mine.write_bytes(b"partial")
    store = SnapshotStore(tmp_path)
    store.open()
    assert not dead.exists() and mine.exists()
    assert store.entries() == []


def test_any_tag_is_a_safe_visible_file_name(store: SnapshotStore) -> None:
    for tag in ("../x", ".hidden", "a/b", "vm-20261125"):
        path = store.path_for(tag)
        assert path.parent == store.directory and not path.name.startswith(".")


async def test_listing_reads_the_metadata(store: SnapshotStore) -> None:
    machine = _machine()
    await save_snapshot(machine, store, "t1", _ignore)
    await save_snapshot(machine, store, "t2", _ignore)
    infos = store.entries()
    assert [info.tag for info in infos] == ["t1", "t2"]
    assert infos[0].workload_step == 1000
    assert infos[0].vm_state_size == store.path_for("t1").stat().st_size
    assert read_info(store.path_for("t2")).ram_size == 4 << 20


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (765, "765 B"), (999, "999 B"), (1000, "0.977 KiB"), (16 << 20, "16 MiB"),
     (1536 << 10, "1.5 MiB"), (10424525, "9.94 MiB")],
)  # fmt: skip
def test_sizes_print_like_qemus_size_to_str(size: int, text: str) -> None:
    assert human_size(size) == text


def test_info_snapshots_layout_is_qemus() -> None:
    date = int(time.mktime((2026, 11, 25, 8, 38, 55, 0, 0, -1)))
    entries = [
        {"tag": "t1", "vm-state-size": 765, "date-sec": date, "vm-clock-nsec": 504_000_000},
        {"tag": "vm-20261125083855", "vm-state-size": 765, "date-sec": date,
         "vm-clock-nsec": 806_000_000},
    ]  # fmt: skip
    # Observed from QEMU 7.2.22 (human-monitor-command "info snapshots"), ICOUNT empty.
    assert render_snapshots(entries) == (
        "List of snapshots present on all disks:\n"
        "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n"
        "--        t1                  765 B 2026-11-25 08:38:55 00:00:00.504           \n"
        "--        vm-20261125083855    765 B 2026-11-25 08:38:55 00:00:00.806           \n"
    )
    assert render_snapshots([]) == "There is no snapshot available.\n"
