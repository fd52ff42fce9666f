"""The simulated machine: a deterministic workload, dirty tracking, run states."""

from __future__ import annotations

import hashlib

import pytest

from qmonitor.machine.machine import (
    PAGE_SIZE,
    ZERO_PAGE,
    Machine,
    RunState,
    data_page_map,
    page_content,
    parse_size,
)


def _digest(machine: Machine) -> str:
    return hashlib.sha256(machine.ram).hexdigest()


def test_ram_is_a_function_of_seed_and_step_only() -> None:
    one = Machine(ram_size=1 << 20, seed=7)
    other = Machine(ram_size=1 << 20, seed=7)
    one.advance(1000)
    for _ in range(10):
        other.advance(100)
    assert one.workload_step == other.workload_step == 1000
    assert _digest(one) == _digest(other)
    different_seed = Machine(ram_size=1 << 20, seed=8)
    different_seed.advance(1000)
    assert _digest(different_seed) != _digest(one)


def test_first_pass_of_the_workload_writes_every_page_once() -> None:
    machine = Machine(ram_size=1 << 20)
    machine.advance(machine.pages)
    assert data_page_map(machine.ram, 0, machine.pages) == b"\x01" * machine.pages
    assert machine.dirty_pages() == machine.pages


def test_page_content_is_never_zero() -> None:
    assert page_content(0, 0) != ZERO_PAGE
    assert len(page_content(3, 12345)) == PAGE_SIZE


def test_data_page_map_finds_pages_that_start_with_zero_bytes() -> None:
    ram = bytearray(8 * PAGE_SIZE)
    ram[1 * PAGE_SIZE] = 1  # data at the first byte
    ram[3 * PAGE_SIZE + 4095] = 1  # data at the last byte only
    ram[6 * PAGE_SIZE + 100] = 9
    assert data_page_map(ram, 0, 8) == bytes([0, 1, 0, 1, 0, 0, 1, 0])
    assert data_page_map(ram, 3, 4) == bytes([1, 0, 0, 1])


def test_sync_takes_the_dirty_map_and_starts_a_clean_one() -> None:
    machine = Machine(ram_size=64 * PAGE_SIZE)
    machine.advance(3)
    taken = machine.sync_dirty_map()
    assert taken.count(1) == 3 and machine.dirty_pages() == 0
    machine.mark_all_dirty()
    assert machine.dirty_pages() == 64


def test_start_states_are_qemus() -> None:
    assert Machine().run_state is RunState.RUNNING
    paused = Machine(start_paused=True)
    assert paused.run_state is RunState.PRELAUNCH and not paused.autostart
    assert Machine(incoming=True).run_state is RunState.INMIGRATE


def test_stop_during_a_transient_state_is_kept_for_afterwards() -> None:
    machine = Machine()
    changes: list[tuple[RunState, RunState]] = []
    machine.add_state_listener(lambda old, new: changes.append((old, new)))
    machine.enter_transient(RunState.SAVE_VM)
    machine.request_stop_after_transient()
    machine.leave_transient()
    assert machine.run_state is RunState.PAUSED
    assert changes == [
        (RunState.RUNNING, RunState.SAVE_VM),
        (RunState.SAVE_VM, RunState.PAUSED),
    ]


def test_guest_clock_runs_only_while_running() -> None:
    machine = Machine(start_paused=True)
    assert machine.guest_clock_ns() == 0
    machine.set_run_state(RunState.RUNNING)
    machine.set_run_state(RunState.PAUSED)
    frozen = machine.guest_clock_ns()
    assert frozen > 0 and machine.guest_clock_ns() == frozen


@pytest.mark.parametrize(
    ("text", "suffix", "size"),
    [("128M", "", 128 << 20), ("64", "M", 64 << 20), ("1G", "", 1 << 30), ("4k", "", 4096),
     ("1.5M", "", 3 << 19), ("100", "", 100)],
)  # fmt: skip
def test_sizes_take_qemu_suffixes(text: str, suffix: str, size: int) -> None:
    assert parse_size(text, default_suffix=suffix) == size


@pytest.mark.parametrize("text", ["12Q", "abc", "-1M"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


async def test_digest_belongs_to_the_step_it_reports() -> None:
    machine = Machine(ram_size=1 << 20, seed=3)
    machine.advance(10)
    digest, step = await machine.digest()
    assert (digest, step) == (_digest(machine), 10)


def test_machine_uuid_is_a_random_version_4_uuid() -> None:
    """The machine's UUID, made without the ``uuid`` module (start-up time), is one that
    module reads back as the same random (version 4, RFC 4122 variant) UUID."""
    from uuid import RFC_4122, UUID

    from qmonitor.machine.machine import random_uuid

    values = {random_uuid() for _ in range(64)}
    assert len(values) == 64
    for value in values:
        parsed = UUID(value)
        assert (str(parsed), parsed.version, parsed.variant) == (value, 4, RFC_4122)
