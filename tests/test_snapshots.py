"""Snapshot files: exact restore, refusal of damaged files, no partial snapshot ever visible.

The tests that need a full or read-only file system mount a real 8 MiB tmpfs (root here and
in CI) and are skipped only where mounting is not permitted; the full disk is also simulated
by fault injection, which always runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qmonitor import QMPError
from qmonitor.machine import snapshots
from qmonitor.machine.commands import SnapshotEntry, render_snapshots
from qmonitor.machine.machine import Machine, RunState
from qmonitor.machine.snapshots import (
    TAG_NAME_MAX,
    SnapshotStore,
    check_tag,
    human_size,
    load_snapshot,
    read_info,
    save_snapshot,
)
from test_machine_processes import Client, Launcher, digest


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


def test_temporaries_nobody_holds_are_reclaimed_whatever_pid_they_name(tmp_path: Path) -> None:
    dead = tmp_path / ".t.qmsnap.999999999.tmp"
    reused = tmp_path / f".u.qmsnap.{os.getpid()}.tmp"  # a live PID, but no writer holds it
    other = tmp_path / ".notes.tmp"  # not a temporary of ours
    for path in (dead, reused, other):
        path.write_bytes(b"partial")
    store = SnapshotStore(tmp_path)
    store.open()
    assert sorted(os.listdir(tmp_path)) == [".notes.tmp"]
    assert store.entries() == []


_WRITER = """
import sys
from qmonitor.machine.machine import Machine
from qmonitor.machine.snapshots import SnapshotStore, SnapshotWriter

writer = SnapshotWriter(SnapshotStore(sys.argv[1]), sys.argv[2], Machine(ram_size=1 << 20))
writer.begin()
print(writer.temporary_path.name, flush=True)
sys.stdin.read()  # holds its temporary until its stdin closes
writer.abort()
"""


def _start_writer(directory: Path, tag: str) -> tuple[subprocess.Popen[str], str]:
    """A second process in the middle of writing ``tag``; returns it and its temporary's name."""
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory), tag],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def test_a_killed_writers_temporary_is_reclaimed_even_unreaped_a_live_ones_is_not(
    tmp_path: Path,
) -> None:
    live, live_temporary = _start_writer(tmp_path, "live")
    killed, killed_temporary = _start_writer(tmp_path, "killed")
    try:
        assert sorted(os.listdir(tmp_path)) == sorted([live_temporary, killed_temporary])
        killed.send_signal(signal.SIGKILL)
        # Exited but not reaped: a zombie, whose PID kill(pid, 0) still finds.
        os.waitid(os.P_PID, killed.pid, os.WEXITED | os.WNOWAIT)
        SnapshotStore(tmp_path).open()  # what the next process does at start
        assert os.listdir(tmp_path) == [live_temporary]
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait()
        killed.wait()
    assert os.listdir(tmp_path) == []


def test_any_tag_is_a_safe_visible_file_name(store: SnapshotStore) -> None:
    for tag in ("../x", ".hidden", "a/b", "vm-20261125", "é" * 39):
        path = store.path_for(tag)
        assert path.parent == store.directory and not path.name.startswith(".")
        assert store.tag_of(path.name) == tag


_TOO_LONG = (
    f"Snapshot tag is too long: it may take at most {TAG_NAME_MAX} bytes percent-encoded "
    "(each byte other than A-Z a-z 0-9 - . _ ~ takes 3)"
)


@pytest.mark.parametrize(
    ("tag", "error"),
    [
        ("", "Snapshot tag must not be empty"),
        ("a\r\n(qemu) fake", "Snapshot tag must not contain a control character (found U+000D)"),
        ("a\x1b[2J", "Snapshot tag must not contain a control character (found U+001B)"),
        ("a\x85", "Snapshot tag must not contain a control character (found U+0085)"),
        ("a\x7f", "Snapshot tag must not contain a control character (found U+007F)"),
        ("a\ud800", "Snapshot tag must not contain a surrogate (found U+D800)"),
        ("x" * (TAG_NAME_MAX + 1), _TOO_LONG),
        ("é" * 40, _TOO_LONG),  # 80 bytes of UTF-8, 240 percent-encoded
    ],
    ids=["empty", "crlf", "escape", "c1", "del", "surrogate", "long", "long-utf8"],
)
def test_tags_no_snapshot_may_have_are_refused_in_one_line(tag: str, error: str) -> None:
    with pytest.raises(QMPError) as refused:
        check_tag(tag)
    assert refused.value.desc == error


async def test_the_longest_tag_saves_loads_and_lists(store: SnapshotStore) -> None:
    machine = _machine()
    for tag in ("x" * TAG_NAME_MAX, "é" * 39):
        await save_snapshot(machine, store, tag, _ignore)
        await load_snapshot(machine, store, tag, _ignore)
    assert sorted(store.tags()) == sorted(["x" * TAG_NAME_MAX, "é" * 39])


async def test_a_refused_tag_leaves_the_guest_and_the_directory_untouched(
    store: SnapshotStore,
) -> None:
    machine = _machine()
    await save_snapshot(machine, store, "t", _ignore)
    transitions: list[RunState] = []
    machine.add_state_listener(lambda old, new: transitions.append(new))
    for tag in ("a\r\nb", "x" * 300):
        with pytest.raises(QMPError, match=r"^Snapshot tag "):
            await save_snapshot(machine, store, tag, _ignore)
        with pytest.raises(QMPError, match=r"^Snapshot tag "):
            await load_snapshot(machine, store, tag, _ignore)
        with pytest.raises(QMPError, match=r"^Snapshot tag "):
            store.delete(tag)
    assert transitions == []
    assert os.listdir(store.directory) == [store.path_for("t").name]


# -- full and read-only file systems --------------------------------------------------------


def _full_disk_open(directory: Path, capacity: int) -> Callable[..., Any]:
    """``open`` for snapshots.py as if ``directory`` were a disk of ``capacity`` bytes.

    A write that does not fit is cut short and the next one fails with ENOSPC, as write(2)
    does on a full file system; the files already there (a left-over temporary too) count.
    Only the writer's file (opened from a descriptor) is affected.
    """

    class FullDisk(io.FileIO):
        def write(self, data: Any) -> int:
            used = sum(entry.stat().st_size for entry in os.scandir(directory))
            if used >= capacity:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(memoryview(data)[: capacity - used])

    def full_disk_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, int) and mode == "wb":
            return io.BufferedWriter(FullDisk(file, mode))
        return open(file, mode, *args, **kwargs)

    return full_disk_open


def _scattered_machine(pages_written: int, seed: int) -> Machine:
    """RAM with data pages scattered among zero pages: short runs, so that the write buffer
    holds data when the disk fills up (what made a failed save's clean-up fail in turn)."""
    machine = Machine(ram_size=16 << 20, seed=seed)
    machine.advance(pages_written)
    return machine


async def test_a_save_that_fills_the_disk_leaves_nothing_and_the_next_one_fits(
    store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: runs everywhere, mount permitted or not."""
    monkeypatch.setattr(snapshots, "open", _full_disk_open(store.directory, 8 << 20), raising=False)
    small = _scattered_machine(500, seed=1)  # 2 MiB of pages
    await save_snapshot(small, store, "small", _ignore)
    big = _scattered_machine(3000, seed=2)  # 12 MiB of pages
    with pytest.raises(QMPError) as failed:
        await save_snapshot(big, store, "big", _ignore)
    assert failed.value.desc == "Could not save snapshot 'big': No space left on device"
    assert os.listdir(store.directory) == ["small.qmsnap"]
    assert big.run_state is RunState.RUNNING
    await save_snapshot(small, store, "small-again", _ignore)
    assert sorted(os.listdir(store.directory)) == ["small-again.qmsnap", "small.qmsnap"]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs, unmounted afterwards; skips the test where mounting is refused."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.fixture
async def vms(short_tmp: Path) -> AsyncIterator[Launcher]:
    """``qmonitor run`` processes, killed at the end (before a tmpfs they use is unmounted)."""
    launcher = Launcher(short_tmp)
    try:
        yield launcher
    finally:
        launcher.kill_all()


async def _hmp(client: Client, line: str) -> str:
    text = await client.execute("human-monitor-command", **{"command-line": line})
    assert isinstance(text, str)
    return text


@pytest.mark.host_facility
async def test_savevm_on_a_full_disk_says_so_leaves_nothing_and_the_next_one_fits(
    small_tmpfs: Path, vms: Launcher
) -> None:
    vm = await vms.start("vm0", "-m", "32M", "--dirty-rate", "16M", "-S", state_dir=small_tmpfs)
    client = await vm.client()
    assert await _hmp(client, "savevm small") == ""  # zero pages only: a few KiB
    await client.execute("cont")
    while (await digest(client))[1] < 2600:  # > 8 MiB of data pages, scattered
        await asyncio.sleep(0.02)
    await client.execute("stop")
    assert await _hmp(client, "savevm big") == (
        "Error: Could not save snapshot 'big': No space left on device\r\n"
    )
    assert os.listdir(small_tmpfs) == ["small.qmsnap"]
    assert await _hmp(client, "loadvm small") == ""
    assert await _hmp(client, "savevm small-again") == ""
    assert sorted(os.listdir(small_tmpfs)) == ["small-again.qmsnap", "small.qmsnap"]


@pytest.mark.host_facility
async def test_a_read_only_state_directory_gives_one_line_errors(
    small_tmpfs: Path, vms: Launcher
) -> None:
    vm = await vms.start("vm0", "-m", "16M", state_dir=small_tmpfs)
    client = await vm.client()
    assert await _hmp(client, "savevm t") == ""
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    assert await _hmp(client, "savevm u") == (
        "Error: Could not save snapshot 'u': Read-only file system\r\n"
    )
    assert await _hmp(client, "delvm t") == (
        "Error: Could not delete snapshot 't': Read-only file system\r\n"
    )
    assert await _hmp(client, "loadvm t") == ""
    assert os.listdir(small_tmpfs) == ["t.qmsnap"]
    assert (await client.execute("query-status"))["status"] == "running"


# -- tags on the wire ------------------------------------------------------------------------


async def test_bad_tags_are_refused_on_every_path_with_the_guest_untouched(
    vms: Launcher,
) -> None:
    vm = await vms.start("vm0", "-m", "16M")
    client = await vm.client()
    disk = {"vmstate": "disk0", "devices": ["disk0"]}
    control = "Snapshot tag must not contain a control character (found U+000D)"
    for tag, hmp_tag, error in [
        ("a\r\n(qemu) fake", '"a\\r\\n(qemu) fake"', control),
        ("x" * 300, "x" * 300, _TOO_LONG),
    ]:
        for command, arguments in [
            ("snapshot-save", {"tag": tag, **disk}),
            ("snapshot-load", {"tag": tag, **disk}),
            ("snapshot-delete", {"tag": tag, "devices": ["disk0"]}),
        ]:
            await client.execute(command, **{"job-id": "j", **arguments})
            await client.wait_event("JOB_STATUS_CHANGE", id="j", status="concluded")
            assert (await client.execute("query-jobs"))[0]["error"] == error
            await client.execute("job-dismiss", id="j")
        for verb in ("savevm", "loadvm", "delvm"):
            assert await _hmp(client, f"{verb} {hmp_tag}") == f"Error: {error}\r\n"
    assert not {"STOP", "RESUME"} & set(client.event_names())
    assert (await client.execute("query-status"))["status"] == "running"
    assert os.listdir(vm.state_dir) == []
    assert await _hmp(client, "info snapshots") == "There is no snapshot available.\r\n"


async def test_listing_reads_the_metadata(store: SnapshotStore) -> None:
    machine = _machine()
    await save_snapshot(machine, store, "t1", _ignore)
    await save_snapshot(machine, store, "t2", _ignore)
    infos = store.entries()
    assert [info.tag for info in infos] == ["t1", "t2"]
    assert infos[0].workload_step == 1000
    assert infos[0].vm_state_size == store.path_for("t1").stat().st_size
    assert read_info(store.path_for("t2"), "t2").ram_size == 4 << 20
    assert all(info.loadable for info in infos)


async def test_a_file_lists_under_its_name_and_a_header_of_another_tag_is_not_loadable(
    vms: Launcher,
) -> None:
    vm = await vms.start("vm0", "-m", "16M", "--dirty-rate", "8M")
    client = await vm.client()
    assert await _hmp(client, "savevm t") == ""
    saved_step = (await digest(client))[1]
    while (await digest(client))[1] == saved_step:  # the guest moves on from snapshot t
        await asyncio.sleep(0.02)
    await client.execute("stop")
    before = await digest(client)
    shutil.copyfile(vm.state_dir / "t.qmsnap", vm.state_dir / "copy.qmsnap")
    (vm.state_dir / "junk.qmsnap").write_bytes(b"not a snapshot")
    # Names no valid tag has (a control character, as an older version could write): ignored.
    shutil.copyfile(vm.state_dir / "t.qmsnap", vm.state_dir / "a%0D%0A%28qemu%29%20x.qmsnap")
    (vm.state_dir / "not%ZZ a tag.qmsnap").write_bytes(b"")
    lines = (await _hmp(client, "info snapshots")).split("\r\n")
    assert lines[0] == "List of snapshots present on all disks:"
    assert lines[2].split()[:2] == ["--", "t"]
    assert lines[3:5] == ["", "List of partial (non-loadable) snapshots on 'disk0':"]
    assert sorted(line.split()[1] for line in lines[6:-1]) == ["copy", "junk"]
    assert len(lines) == 9
    assert await _hmp(client, "loadvm copy") == (
        "Error: Snapshot 'copy' is damaged (its header names another tag); "
        "the VM was left unchanged\r\n"
    )
    assert await digest(client) == before
    disk = {"vmstate": "disk0", "devices": ["disk0"]}
    await client.execute("snapshot-save", **{"job-id": "j", "tag": "junk", **disk})
    await client.wait_event("JOB_STATUS_CHANGE", id="j", status="concluded")
    assert (await client.execute("query-jobs"))[0]["error"] == (
        "Snapshot 'junk' already exists in one or more devices"
    )
    assert await _hmp(client, "delvm copy") == ""
    assert await _hmp(client, "savevm junk") == ""  # HMP replaces, as QEMU's does
    assert "partial" not in await _hmp(client, "info snapshots")


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
        SnapshotEntry("t1", 765, date, 504_000_000, loadable=True),
        SnapshotEntry("vm-20261125083855", 765, date, 806_000_000, loadable=True),
    ]
    # Observed from QEMU 7.2.22 (human-monitor-command "info snapshots"), ICOUNT empty.
    assert render_snapshots(entries) == (
        "List of snapshots present on all disks:\n"
        "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n"
        "--        t1                  765 B 2026-11-25 08:38:55 00:00:00.504           \n"
        "--        vm-20261125083855    765 B 2026-11-25 08:38:55 00:00:00.806           \n"
    )
    assert render_snapshots([]) == "There is no snapshot available.\n"


def test_non_loadable_snapshots_are_listed_in_qemus_second_section() -> None:
    date = int(time.mktime((2026, 11, 30, 6, 37, 5, 0, 0, -1)))
    copy = SnapshotEntry("copy", 0, date, 2_385_000_000, loadable=False)
    header = "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n"
    row = "--        copy                  0 B 2026-11-30 06:37:05 00:00:02.385           \n"
    # QEMU 7.2.22 with a snapshot on one of two qcow2 nodes (blockdev-snapshot-internal-sync),
    # whose section names the node's device, '' for a -blockdev node; ours names disk0.
    assert render_snapshots([copy]) == (
        "List of snapshots present on all disks:\nNone\n\n"
        "List of partial (non-loadable) snapshots on 'disk0':\n" + header + row
    )
    both = dataclasses.replace(copy, tag="both", vm_state_size=765, loadable=True)
    assert render_snapshots([both, copy]) == (
        "List of snapshots present on all disks:\n" + header
        + "--        both                765 B 2026-11-30 06:37:05 00:00:02.385           \n"
        + "\nList of partial (non-loadable) snapshots on 'disk0':\n" + header + row
    )  # fmt: skip
