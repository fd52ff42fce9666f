"""Migration between two machines in one process: the stream, pre-copy, failure handling."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from qmonitor import QMPError
from qmonitor.machine.commands import render_migrate
from qmonitor.machine.machine import Machine, RunState
from qmonitor.machine.migration import MigrationInfo, MigrationManager, MigrationStatus, parse_uri


class Side:
    """A machine, its migration manager, and what it announced."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[str] = []
        self.migration = MigrationManager(
            machine, lambda name, data: self.events.append((name, data)), self.failures.append
        )
        self.migration.events = True

    def statuses(self) -> list[str]:
        return [data["status"] for name, data in self.events if name == "MIGRATION"]


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("bogus:x", "Parameter 'uri' expects a valid migration protocol"),
        ("tcp:127.0.0.1", "error parsing address '127.0.0.1'"),
        ("unix:", "invalid Unix socket address"),
    ],
)
def test_bad_uris_get_qemus_errors(uri: str, error: str) -> None:
    with pytest.raises(QMPError) as info:
        parse_uri(uri)
    assert info.value.desc == error


def test_uris_parse() -> None:
    assert str(parse_uri("tcp:127.0.0.1:4444")) == "127.0.0.1:4444"
    assert parse_uri("unix:/tmp/x").path == "/tmp/x"
    assert parse_uri("file:/tmp/y").transport == "file"


async def _migrate(source: Side, destination: Side, uri: str) -> None:
    await destination.migration.start_incoming(uri)
    outgoing = source.migration.start_outgoing(uri)
    await outgoing.wait()
    assert destination.migration.incoming is not None
    await destination.migration.incoming.done


async def test_migration_carries_ram_and_workload_step_bit_for_bit(short_tmp: Path) -> None:
    source = Side(Machine(ram_size=8 << 20, seed=3))
    source.machine.advance(1500)
    destination = Side(Machine(ram_size=8 << 20, incoming=True, start_paused=True))
    await _migrate(source, destination, f"unix:{short_tmp}/m.sock")
    assert await source.machine.digest() == await destination.machine.digest()
    assert source.machine.run_state is RunState.POSTMIGRATE
    assert destination.machine.run_state is RunState.PAUSED  # -S: no autostart
    assert source.statuses() == ["setup", "active", "completed"]
    assert destination.statuses() == ["setup", "active", "completed"]
    passes = [data["pass"] for name, data in source.events if name == "MIGRATION_PASS"]
    assert passes == [1, 2]
    info = source.migration.info()
    assert info.ram is not None and info.ram.normal == 1500 and info.ram.dirty_sync_count == 2
    assert info.ram.duplicate == source.machine.pages - 1500
    text = render_migrate(MigrationInfo(MigrationStatus.COMPLETED, total_time=5, downtime=1))
    assert text == "Migration status: completed\ntotal time: 5 ms\ndowntime: 1 ms\n"


async def test_destination_without_minus_s_runs_after_migration(short_tmp: Path) -> None:
    source = Side(Machine(ram_size=1 << 20))
    destination = Side(Machine(ram_size=1 << 20, incoming=True))
    await _migrate(source, destination, f"unix:{short_tmp}/m.sock")
    assert destination.machine.run_state is RunState.RUNNING


async def test_paused_source_gives_a_paused_destination(short_tmp: Path) -> None:
    source = Side(Machine(ram_size=1 << 20, start_paused=True))
    source.machine.set_run_state(RunState.PAUSED)
    destination = Side(Machine(ram_size=1 << 20, incoming=True))
    await _migrate(source, destination, f"unix:{short_tmp}/m.sock")
    assert destination.machine.run_state is RunState.PAUSED


async def test_migration_through_a_file(short_tmp: Path) -> None:
    source = Side(Machine(ram_size=2 << 20, seed=9))
    source.machine.advance(100)
    destination = Side(Machine(ram_size=2 << 20, incoming=True))
    uri = f"file:{short_tmp}/state.mig"
    await source.migration.start_outgoing(uri).wait()
    await destination.migration.start_incoming(uri)
    assert destination.migration.incoming is not None
    await destination.migration.incoming.done
    assert await source.machine.digest() == await destination.machine.digest()


async def test_truncated_stream_fails_the_destination_which_never_runs(short_tmp: Path) -> None:
    source = Side(Machine(ram_size=2 << 20))
    source.machine.advance(300)
    path = short_tmp / "state.mig"
    await source.migration.start_outgoing(f"file:{path}").wait()
    path.write_bytes(path.read_bytes()[:-2000])
    destination = Side(Machine(ram_size=2 << 20, incoming=True))
    await destination.migration.start_incoming(f"file:{path}")
    assert destination.migration.incoming is not None
    await destination.migration.incoming.done
    assert destination.statuses()[-1] == "failed"
    assert destination.failures == ["the migration stream ended early"]
    assert destination.machine.run_state is RunState.INMIGRATE


async def test_ram_size_mismatch_fails_the_destination(short_tmp: Path) -> None:
    source = Side(Machine(ram_size=2 << 20))
    destination = Side(Machine(ram_size=4 << 20, incoming=True))
    await _migrate(source, destination, f"unix:{short_tmp}/m.sock")
    assert destination.failures and "RAM size mismatch" in destination.failures[0]
    assert source.migration.info().status is MigrationStatus.FAILED
    assert source.machine.run_state is RunState.RUNNING


async def test_cancel_midway_leaves_the_source_running_and_intact(short_tmp: Path) -> None:
    source = Side(Machine(ram_size=16 << 20, seed=1))
    source.machine.advance(source.machine.pages)
    source.migration.parameters.max_bandwidth = 4 << 20  # 4 s for 16 MiB: plenty of time
    destination = Side(Machine(ram_size=16 << 20, incoming=True))
    uri = f"unix:{short_tmp}/m.sock"
    await destination.migration.start_incoming(uri)
    before = await source.machine.digest()
    outgoing = source.migration.start_outgoing(uri)
    while outgoing.stats.transferred < (1 << 20):
        await asyncio.sleep(0.01)
    source.migration.cancel()
    await outgoing.wait()
    assert source.statuses() == ["setup", "active", "cancelling", "cancelled"]
    assert source.machine.run_state is RunState.RUNNING
    assert await source.machine.digest() == before
    assert destination.migration.incoming is not None
    await destination.migration.incoming.done
    assert destination.machine.run_state is RunState.INMIGRATE


async def test_refused_while_a_migration_is_in_progress(short_tmp: Path) -> None:
    source = Side(Machine(ram_size=16 << 20))
    source.machine.advance(source.machine.pages)
    source.migration.parameters.max_bandwidth = 1 << 20
    destination = Side(Machine(ram_size=16 << 20, incoming=True))
    uri = f"unix:{short_tmp}/m.sock"
    await destination.migration.start_incoming(uri)
    outgoing = source.migration.start_outgoing(uri)
    with pytest.raises(QMPError, match=r"^There's a migration process in progress$"):
        source.migration.start_outgoing(uri)
    source.migration.cancel()
    await outgoing.wait()
    with pytest.raises(QMPError, match=r"^The incoming migration has already been started$"):
        await destination.migration.start_incoming(uri)
    with pytest.raises(QMPError, match=r"^'-incoming' was not specified on the command line$"):
        await source.migration.start_incoming(uri)


async def test_connection_refused_fails_with_qemus_text(short_tmp: Path) -> None:
    source = Side(Machine(ram_size=1 << 20))
    outgoing = source.migration.start_outgoing(f"unix:{short_tmp}/nobody.sock")
    await outgoing.wait()
    info = source.migration.info()
    assert info.status is MigrationStatus.FAILED
    assert (
        info.error_desc
        == f"Failed to connect to '{short_tmp}/nobody.sock': No such file or directory"
    )
    assert source.statuses() == ["setup", "failed"]
