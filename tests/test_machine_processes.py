"""Real ``qmonitor run`` processes: run control, snapshots and live migration over sockets.

Every process is started with ``sys.executable -m qmonitor run``, its sockets in a temporary
directory, and killed at the end of its test whatever happens. RAM stays small (16-32 MiB) so
the whole file runs in seconds; nothing here asserts on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from qmonitor.machine.machine import Machine
from qmonitor.machine.migration import MAX_DOWNTIME_MS
from qmonitor.machine.snapshots import SnapshotStore


class Client:
    """A QMP client over a unix socket that keeps the events it reads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, path: str, *, oob: bool = False) -> Client:
        reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)
        client = cls(reader, writer)
        await client.receive()  # greeting
        enable = {"enable": ["oob"]} if oob else {}
        assert await client.execute("qmp_capabilities", **enable) == {}
        return client

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(json.dumps(message).encode())

    async def reply_to(self, request_id: str) -> dict[str, Any]:
        """The reply whose id is ``request_id`` (events read meanwhile are kept; no other
        reply may come first)."""
        while True:
            message = await self.receive()
            if "event" in message:
                self.events.append(message)
                continue
            assert message.get("id") == request_id, message
            return message

    async def receive(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), 30)
        message = json.loads(line)
        assert isinstance(message, dict)
        return message

    async def request(self, command: str, **arguments: Any) -> dict[str, Any]:
        """Send a request; return its reply, keeping the events read before it."""
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.writer.write(json.dumps(message).encode())
        while True:
            reply = await self.receive()
            if "event" in reply:
                self.events.append(reply)
            else:
                return reply

    async def execute(self, command: str, **arguments: Any) -> Any:
        """The ``return`` of a request that must succeed."""
        reply = await self.request(command, **arguments)
        assert "return" in reply, reply
        return reply["return"]

    async def error(self, command: str, **arguments: Any) -> str:
        """The ``desc`` of a request that must fail."""
        reply = await self.request(command, **arguments)
        assert "error" in reply, reply
        return str(reply["error"]["desc"])

    async def wait_event(self, name: str, **data: Any) -> dict[str, Any]:
        """The first event called ``name`` whose data has ``data`` (read so far or next)."""
        while True:
            for event in self.events:
                if event["event"] == name and all(
                    event.get("data", {}).get(key) == value for key, value in data.items()
                ):
                    self.events.remove(event)
                    return event
            message = await self.receive()
            if "event" in message:
                self.events.append(message)

    def event_names(self) -> list[str]:
        return [event["event"] for event in self.events]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class VM:
    """One ``qmonitor run`` process."""

    def __init__(self, process: subprocess.Popen[bytes], qmp_path: str, state_dir: Path) -> None:
        self.process = process
        self.qmp_path = qmp_path
        self.state_dir = state_dir

    async def client(self) -> Client:
        return await Client.connect(self.qmp_path)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    async def exited(self) -> int:
        while self.process.poll() is None:
            await asyncio.sleep(0.02)
        return self.process.returncode


class Launcher:
    """Starts VMs in a temporary directory and kills every one of them at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.vms: list[VM] = []

    async def start(self, name: str, *options: str, state_dir: Path | None = None) -> VM:
        qmp_path = str(self.directory / f"{name}.qmp")
        state = state_dir or self.directory / f"{name}-state"
        command = [
            sys.executable, "-m", "qmonitor", "run", "-name", name,
            "-qmp", f"unix:{qmp_path},server=on,wait=off", "-monitor", "none",
            "--state-dir", str(state), *options,
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        vm = VM(process, qmp_path, state)
        self.vms.append(vm)
        for _ in range(1000):
            if process.poll() is not None:
                raise RuntimeError(f"qmonitor run exited with {process.returncode}")
            with contextlib.suppress(OSError):
                probe = socket.socket(socket.AF_UNIX)
                try:
                    probe.connect(qmp_path)
                    return vm
                finally:
                    probe.close()
            await asyncio.sleep(0.02)
        raise RuntimeError("qmonitor run did not open its QMP socket")

    def kill_all(self) -> None:
        for vm in self.vms:
            vm.kill()


@pytest.fixture
async def launcher(short_tmp: Path) -> AsyncIterator[Launcher]:
    vms = Launcher(short_tmp)
    try:
        yield vms
    finally:
        vms.kill_all()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def digest(client: Client) -> tuple[str, int]:
    result = await client.execute("x-query-ram-digest")
    return result["digest"], result["workload-step"]


async def wait_migration(client: Client, *statuses: str) -> dict[str, Any]:
    while True:
        info = await client.execute("query-migrate")
        if info.get("status") in statuses:
            return info
        await asyncio.sleep(0.02)


# -- run control ---------------------------------------------------------------------------


async def test_run_control_events_come_before_the_reply(launcher: Launcher) -> None:
    vm = await launcher.start("vm0", "-m", "16M")
    client = await vm.client()
    assert await client.execute("query-status") == {
        "status": "running",
        "singlestep": False,
        "running": True,
    }
    assert await client.execute("stop") == {}
    assert client.event_names() == ["STOP"]  # read before the reply, as QEMU sends it
    assert (await client.execute("query-status"))["status"] == "paused"
    await client.execute("cont")
    assert client.event_names() == ["STOP", "RESUME"]
    assert await client.execute("query-name") == {"name": "vm0"}
    assert len((await client.execute("query-uuid"))["UUID"]) == 36
    await client.execute("system_reset")
    assert client.events[-1]["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
    await client.execute("quit")
    assert (await client.wait_event("SHUTDOWN"))["data"] == {
        "guest": False,
        "reason": "host-qmp-quit",
    }
    assert await vm.exited() == 0
    assert not os.path.exists(vm.qmp_path)


async def test_sigterm_shuts_down_cleanly(launcher: Launcher) -> None:
    vm = await launcher.start("vm0", "-m", "16M", "-S")
    client = await vm.client()
    assert (await client.execute("query-status"))["status"] == "prelaunch"
    vm.process.send_signal(signal.SIGTERM)
    assert (await client.wait_event("SHUTDOWN"))["data"]["reason"] == "host-signal"
    assert await vm.exited() == 0
    assert not os.path.exists(vm.qmp_path)


# -- snapshots ----------------------------------------------------------------------------


async def test_snapshot_jobs_restore_the_digest_with_one_event_per_transition(
    launcher: Launcher,
) -> None:
    vm = await launcher.start("vm0", "-m", "16M", "--dirty-rate", "8M")
    client = await vm.client()
    while (await digest(client))[1] < 256:  # the guest has written some pages
        await asyncio.sleep(0.02)
    await client.execute("stop")
    saved = await digest(client)
    disk = {"vmstate": "disk0", "devices": ["disk0"]}
    await client.execute("snapshot-save", **{"job-id": "save0", "tag": "t1", **disk})
    await client.wait_event("JOB_STATUS_CHANGE", id="save0", status="concluded")
    jobs = await client.execute("query-jobs")
    assert jobs[0]["id"] == "save0" and jobs[0]["status"] == "concluded" and "error" not in jobs[0]
    await client.execute("job-dismiss", id="save0")
    await client.wait_event("JOB_STATUS_CHANGE", id="save0", status="null")
    await client.execute("cont")
    while (await digest(client))[1] == saved[1]:
        await asyncio.sleep(0.02)
    await client.execute("stop")
    assert await digest(client) != saved
    await client.execute("snapshot-load", **{"job-id": "load0", "tag": "t1", **disk})
    await client.wait_event("JOB_STATUS_CHANGE", id="load0", status="concluded")
    assert await digest(client) == saved


async def test_snapshot_job_states_follow_qemu_one_event_each(launcher: Launcher) -> None:
    vm = await launcher.start("vm0", "-m", "16M")
    client = await vm.client()
    await client.execute(
        "snapshot-save", **{"job-id": "s1", "tag": "t", "vmstate": "disk0", "devices": ["disk0"]}
    )
    await client.wait_event("JOB_STATUS_CHANGE", id="s1", status="concluded")
    await client.execute(
        "snapshot-save", **{"job-id": "s2", "tag": "t", "vmstate": "disk0", "devices": ["disk0"]}
    )
    await client.wait_event("JOB_STATUS_CHANGE", id="s2", status="concluded")
    jobs = {job["id"]: job for job in await client.execute("query-jobs")}
    assert jobs["s2"]["error"] == "Snapshot 't' already exists in one or more devices"
    assert await client.error("job-pause", id="s1") == (
        "Job 's1' in state 'concluded' cannot accept command verb 'pause'"
    )
    await client.execute("job-dismiss", id="s1")
    assert await client.error("job-dismiss", id="s1") == "Job not found"


async def _changes(client: Client, job_id: str, until: str) -> list[str]:
    statuses = []
    while not statuses or statuses[-1] != until:
        event = await client.wait_event("JOB_STATUS_CHANGE", id=job_id)
        statuses.append(event["data"]["status"])
    return statuses


async def test_snapshot_save_job_event_sequence(launcher: Launcher) -> None:
    vm = await launcher.start("vm0", "-m", "16M")
    client = await vm.client()
    arguments = {"job-id": "s1", "tag": "t", "vmstate": "disk0", "devices": ["disk0"]}
    await client.execute("snapshot-save", **arguments)
    assert await _changes(client, "s1", "concluded") == [
        "created", "running", "waiting", "pending", "concluded",
    ]  # fmt: skip
    failing = {"job-id": "s2", "tag": "u", "vmstate": "disk0", "devices": []}
    await client.execute("snapshot-save", **failing)
    assert await _changes(client, "s2", "concluded") == [
        "created", "running", "aborting", "concluded",
    ]  # fmt: skip


async def test_corrupted_snapshot_is_refused_and_state_unchanged(launcher: Launcher) -> None:
    vm = await launcher.start("vm0", "-m", "16M", "--dirty-rate", "4M")
    client = await vm.client()
    disk = {"vmstate": "disk0", "devices": ["disk0"]}
    await client.execute("snapshot-save", **{"job-id": "s", "tag": "t", **disk})
    await client.wait_event("JOB_STATUS_CHANGE", id="s", status="concluded")
    path = SnapshotStore(vm.state_dir).path_for("t")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(data)
    await client.execute("stop")
    before = await digest(client)
    await client.execute("snapshot-load", **{"job-id": "l", "tag": "t", **disk})
    await client.wait_event("JOB_STATUS_CHANGE", id="l", status="concluded")
    jobs = {job["id"]: job for job in await client.execute("query-jobs")}
    assert jobs["l"]["error"].startswith("Snapshot 't' is damaged")
    assert await digest(client) == before
    assert (await client.execute("query-status"))["status"] == "paused"


async def test_kill_9_during_savevm_leaves_earlier_snapshots_loadable(
    launcher: Launcher,
) -> None:
    vm = await launcher.start("vm0", "-m", "32M", "--dirty-rate", "1G")
    client = await vm.client()
    while (await digest(client))[1] < 8192:  # every page written: several 8 MiB chunks
        await asyncio.sleep(0.05)
    await client.execute("stop")
    saved = await digest(client)
    disk = {"vmstate": "disk0", "devices": ["disk0"]}
    await client.execute("snapshot-save", **{"job-id": "s1", "tag": "good", **disk})
    await client.wait_event("JOB_STATUS_CHANGE", id="s1", status="concluded")
    await client.execute("snapshot-save", **{"job-id": "s2", "tag": "doomed", **disk})
    await client.execute("job-pause", id="s2")
    await client.wait_event("JOB_STATUS_CHANGE", id="s2", status="paused")  # mid-write
    assert any(name.startswith(".") for name in os.listdir(vm.state_dir))
    vm.kill()
    assert vm.process.returncode == -signal.SIGKILL
    os.unlink(vm.qmp_path)
    again = await launcher.start("vm1", "-m", "32M", "-S", state_dir=vm.state_dir)
    client = await again.client()
    assert not any(name.startswith(".") for name in os.listdir(vm.state_dir))
    await client.execute("snapshot-load", **{"job-id": "l", "tag": "good", **disk})
    await client.wait_event("JOB_STATUS_CHANGE", id="l", status="concluded")
    assert await digest(client) == saved
    await client.execute("snapshot-load", **{"job-id": "l2", "tag": "doomed", **disk})
    await client.wait_event("JOB_STATUS_CHANGE", id="l2", status="concluded")
    jobs = {job["id"]: job for job in await client.execute("query-jobs")}
    assert jobs["l2"]["error"] == "Snapshot 'doomed' does not exist in one or more devices"


async def test_cancelled_snapshot_save_leaves_nothing(launcher: Launcher) -> None:
    vm = await launcher.start("vm0", "-m", "32M", "--dirty-rate", "1G")
    client = await vm.client()
    while (await digest(client))[1] < 8192:
        await asyncio.sleep(0.05)
    before_status = (await client.execute("query-status"))["status"]
    disk = {"vmstate": "disk0", "devices": ["disk0"]}
    await client.execute("snapshot-save", **{"job-id": "s", "tag": "t", **disk})
    await client.execute("job-pause", id="s")
    await client.wait_event("JOB_STATUS_CHANGE", id="s", status="paused")
    await client.execute("job-cancel", id="s")
    await client.wait_event("JOB_STATUS_CHANGE", id="s", status="concluded")
    jobs = {job["id"]: job for job in await client.execute("query-jobs")}
    assert jobs["s"]["error"] == "Operation canceled"
    assert os.listdir(vm.state_dir) == []
    assert (await client.execute("query-status"))["status"] == before_status


# -- migration ----------------------------------------------------------------------------


async def _migrate_with_dirtying(launcher: Launcher, uri: str, listen: str) -> None:
    source = await launcher.start("src", "-m", "32M", "--dirty-rate", "4M")
    destination = await launcher.start("dst", "-m", "32M", "-S", "-incoming", listen)
    src = await source.client()
    dst = await destination.client()
    while (await digest(src))[1] < 512:  # let the guest write some pages first
        await asyncio.sleep(0.02)
    await src.execute(
        "migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}]
    )
    await src.execute("migrate-set-parameters", **{"max-bandwidth": 16 << 20, "downtime-limit": 50})
    assert await src.execute("migrate", uri=uri) == {}
    other = await source.client()  # another client is served during the migration
    assert (await other.execute("query-status"))["status"] in (
        "running",
        "finish-migrate",
        "postmigrate",
    )
    assert (await other.execute("query-migrate"))["status"] in ("setup", "active", "completed")
    await src.wait_event("MIGRATION", status="completed")
    info = await src.execute("query-migrate")
    assert info["status"] == "completed" and info["ram"]["dirty-sync-count"] > 1
    assert info["ram"]["total"] == 32 << 20 and "downtime" in info
    passes = [e["data"]["pass"] for e in src.events if e["event"] == "MIGRATION_PASS"]
    assert passes == list(range(1, info["ram"]["dirty-sync-count"] + 1))
    assert (await src.execute("query-status"))["status"] == "postmigrate"
    await wait_migration(dst, "completed")
    assert (await dst.execute("query-status"))["status"] == "paused"
    assert await digest(dst) == await digest(src)
    for client in (src, dst):  # the migration's yank instance went with it
        assert await client.execute("query-yank") == [{"type": "chardev", "id": "compat_monitor0"}]
    await dst.execute("cont")
    assert (await dst.execute("query-status"))["status"] == "running"


async def test_migration_over_tcp_with_dirtying(launcher: Launcher) -> None:
    port = free_port()
    await _migrate_with_dirtying(launcher, f"tcp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}")


async def test_migration_over_unix_with_dirtying(launcher: Launcher, short_tmp: Path) -> None:
    path = short_tmp / "migrate.sock"
    await _migrate_with_dirtying(launcher, f"unix:{path}", f"unix:{path}")


async def _slow_migration(launcher: Launcher, short_tmp: Path) -> tuple[VM, VM, Client]:
    """A source whose RAM is all data, migrating at 2 MiB/s: many seconds to go."""
    source = await launcher.start("src", "-m", "32M", "--dirty-rate", "1G")
    destination = await launcher.start(
        "dst", "-m", "32M", "-S", "-incoming", f"unix:{short_tmp}/m.sock"
    )
    src = await source.client()
    while (await digest(src))[1] < 8192:
        await asyncio.sleep(0.05)
    await src.execute("migrate-set-parameters", **{"max-bandwidth": 2 << 20})
    await src.execute("migrate", uri=f"unix:{short_tmp}/m.sock")
    while (await src.execute("query-migrate")).get("ram", {}).get("transferred", 0) < 1 << 20:
        await asyncio.sleep(0.02)
    return source, destination, src


async def _keeps_running(client: Client, step_before: int) -> None:
    assert (await client.execute("query-status"))["status"] == "running"
    first = await digest(client)
    assert first[1] >= step_before
    while (await digest(client))[1] == first[1]:
        await asyncio.sleep(0.02)


async def test_migrate_cancel_midway_leaves_the_source_running(
    launcher: Launcher, short_tmp: Path
) -> None:
    source, destination, src = await _slow_migration(launcher, short_tmp)
    step = (await digest(src))[1]
    other = await source.client()
    info = await other.execute("query-migrate")
    assert info["status"] == "active" and info["ram"]["remaining"] > 0
    await src.execute("migrate_cancel")
    assert (await wait_migration(src, "cancelled", "failed"))["status"] == "cancelled"
    await _keeps_running(src, step)
    assert await destination.exited() == 1  # a broken stream: the destination gives up


async def test_killed_destination_leaves_the_source_running(
    launcher: Launcher, short_tmp: Path
) -> None:
    _source, destination, src = await _slow_migration(launcher, short_tmp)
    step = (await digest(src))[1]
    destination.kill()
    info = await wait_migration(src, "failed", "cancelled")
    assert info["status"] == "failed" and info["error-desc"]
    await _keeps_running(src, step)


class StallingDestination:
    """A migration destination played by the test: it reads the stream into the void until
    told to stop, and never sends the confirmation byte, so a source that reached the
    stop-and-copy stage stays there (guest stopped) until the test cancels or hangs up."""

    def __init__(self, path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.setblocking(False)
        self.connection: socket.socket | None = None
        self._reading = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        self.connection, _ = await loop.sock_accept(self.listener)
        while await loop.sock_recv(self.connection, 1 << 16):
            pass

    async def stop_reading(self) -> None:
        """Read no more: the source's next sends fill the socket buffers and then block."""
        assert self.connection is not None, "the source never connected"
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading

    def close(self) -> None:
        """Hang up (or clean up)."""
        self._reading.cancel()
        for sock in (self.connection, self.listener):
            if sock is not None:
                sock.close()


def event_log(client: Client) -> list[tuple[str, Any]]:
    """The events ``client`` has read so far, as (name, data), and forget them."""
    log = [(event["event"], event.get("data")) for event in client.events]
    client.events.clear()
    return log


async def events_until(client: Client, name: str, **data: Any) -> list[tuple[str, Any]]:
    """Every event read so far and up to the first ``name`` with ``data``, as (name, data)."""
    log = event_log(client)
    while not log or log[-1][0] != name or any(log[-1][1].get(k) != v for k, v in data.items()):
        message = await client.receive()
        assert "event" in message, message
        log.append((message["event"], message.get("data")))
    return log


def reference_digest(ram_size: int, workload_step: int) -> tuple[str, int]:
    """The RAM digest of a guest whose workload alone wrote its RAM, ``workload_step`` steps
    (each step's page is a function of the step): what a source must hold if the migration
    never wrote its RAM."""
    machine = Machine(ram_size=ram_size)
    machine.advance(workload_step)
    return hashlib.sha256(machine.ram).hexdigest(), workload_step


async def _stop_and_copy(
    launcher: Launcher, short_tmp: Path, *, paused: bool
) -> tuple[Client, StallingDestination]:
    """A source held in the stop-and-copy stage: the guest stopped (``finish-migrate``), the
    last pass being sent to a destination that has stopped reading and will never confirm.

    ``downtime-limit`` at its maximum makes the source stop the guest right after the first
    pass; the guest dirties RAM meanwhile, so the last pass has megabytes to send. The pass
    after the first (MIGRATION_PASS 2) is taken once the guest is stopped.
    """
    source = await launcher.start("src", "-m", "16M", "--dirty-rate", "64M")
    src = await source.client()
    while (await digest(src))[1] < 4096:  # every page holds data
        await asyncio.sleep(0.02)
    if paused:
        await src.execute("stop")
    await src.execute(
        "migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}]
    )
    await src.execute(
        "migrate-set-parameters",
        **{"max-bandwidth": 32 << 20, "downtime-limit": MAX_DOWNTIME_MS},
    )
    destination = StallingDestination(str(short_tmp / "stall.sock"))
    await src.execute("migrate", uri=f"unix:{short_tmp}/stall.sock")
    await src.wait_event("MIGRATION_PASS", **{"pass": 2})
    await destination.stop_reading()
    assert (await src.execute("query-status"))["status"] == "finish-migrate"
    return src, destination


async def test_migrate_cancel_in_stop_and_copy_resumes_the_guest_with_its_ram(
    launcher: Launcher, short_tmp: Path
) -> None:
    """Cancelled with the guest stopped for the last pass: QEMU's events (cancelling, RESUME,
    cancelled: migration_iteration_finish restarts the guest, migrate_fd_cleanup reports
    cancelled), the guest running again, and its RAM only what the guest itself wrote."""
    src, destination = await _stop_and_copy(launcher, short_tmp, paused=False)
    try:
        stopped = await digest(src)
        assert stopped == reference_digest(16 << 20, stopped[1])
        event_log(src)  # what came before the stop-and-copy stage
        assert await src.execute("migrate_cancel") == {}
        assert await events_until(src, "MIGRATION", status="cancelled") == [
            ("MIGRATION", {"status": "cancelling"}),
            ("RESUME", None),
            ("MIGRATION", {"status": "cancelled"}),
        ]
        assert await src.execute("query-migrate") == {"status": "cancelled"}
        assert (await src.execute("query-status"))["status"] == "running"
        while (await digest(src))[1] == stopped[1]:  # the workload goes on from where it was
            await asyncio.sleep(0.02)
        await src.execute("stop")
        resumed = await digest(src)
        assert resumed[1] > stopped[1]
        assert resumed == reference_digest(16 << 20, resumed[1])
    finally:
        destination.close()


async def test_destination_lost_in_stop_and_copy_fails_and_resumes_the_guest(
    launcher: Launcher, short_tmp: Path
) -> None:
    """The destination hangs up during the last pass: QEMU's events (MIGRATION failed from
    migration_completion, then RESUME from migration_iteration_finish), the guest running
    again with its RAM."""
    src, destination = await _stop_and_copy(launcher, short_tmp, paused=False)
    stopped = await digest(src)
    event_log(src)
    destination.close()
    assert await events_until(src, "MIGRATION", status="failed") == [
        ("MIGRATION", {"status": "failed"})
    ]
    assert (await src.execute("query-status"))["status"] == "running"
    assert event_log(src) == [("RESUME", None)]  # sent with the failure, before this reply
    info = await src.execute("query-migrate")
    assert info["status"] == "failed" and info["error-desc"]
    while (await digest(src))[1] == stopped[1]:
        await asyncio.sleep(0.02)
    await src.execute("stop")
    resumed = await digest(src)
    assert resumed == reference_digest(16 << 20, resumed[1])


async def test_migrate_cancel_in_stop_and_copy_leaves_a_paused_source_paused(
    launcher: Launcher, short_tmp: Path
) -> None:
    """A paused source cancelled in the stop-and-copy stage: no RESUME, ``paused`` again
    (QEMU 7.2 says ``postmigrate``; docs/MACHINE.md), RAM bit for bit as before."""
    src, destination = await _stop_and_copy(launcher, short_tmp, paused=True)
    try:
        before = await digest(src)
        assert await src.execute("migrate_cancel") == {}
        log = await events_until(src, "MIGRATION", status="cancelled")
        assert log[-2:] == [
            ("MIGRATION", {"status": "cancelling"}),
            ("MIGRATION", {"status": "cancelled"}),
        ]
        assert ("RESUME", None) not in log
        assert (await src.execute("query-status"))["status"] == "paused"
        assert await digest(src) == before
        await src.execute("cont")
        assert event_log(src) == [("RESUME", None)]
    finally:
        destination.close()


YANK_MIGRATION = {"instances": [{"type": "migration"}]}


async def test_exec_oob_yank_unsticks_a_migration_to_a_destination_that_never_reads(
    launcher: Launcher, short_tmp: Path
) -> None:
    """A migration to a destination that accepts and never reads can never end; ``exec-oob
    yank`` shuts its connection down: the migration fails with QEMU's socket error, the yank
    instance goes away, and the source runs on, as after any failed migration."""
    source = await launcher.start("src", "-m", "4M", "--dirty-rate", "16M")
    client = await Client.connect(source.qmp_path, oob=True)
    while (await digest(client))[1] < 1024:  # all 4 MiB hold data: more than sockets buffer
        await asyncio.sleep(0.05)
    assert await client.execute("query-yank") == [{"type": "chardev", "id": "compat_monitor0"}]
    path = str(short_tmp / "never-reads.sock")
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        listener.setblocking(False)
        assert await client.execute("migrate", uri=f"unix:{path}") == {}
        connection, _ = await loop.sock_accept(listener)
        with connection:
            client.send({"exec-oob": "query-yank", "id": "q"})
            assert (await client.reply_to("q"))["return"] == [
                {"type": "chardev", "id": "compat_monitor0"},
                {"type": "migration"},
            ]
            await wait_migration(client, "active")  # sending: its connection is yankable
            client.send({"exec-oob": "yank", "arguments": YANK_MIGRATION, "id": "y"})
            assert await client.reply_to("y") == {"return": {}, "id": "y"}
            while await loop.sock_recv(connection, 1 << 16):
                pass  # what the source had sent, then the end: its socket was shut down
    info = await wait_migration(client, "failed", "cancelled", "completed")
    assert info == {"status": "failed", "error-desc": "Unable to write to socket: Broken pipe"}
    assert await client.execute("query-yank") == [{"type": "chardev", "id": "compat_monitor0"}]
    await _keeps_running(client, 1024)


async def test_yank_on_the_destination_fails_its_load(launcher: Launcher, short_tmp: Path) -> None:
    """A destination whose source stops sending: ``yank`` cuts the connection and the load
    fails (the process exits, as QEMU's does), instead of waiting for ever."""
    path = str(short_tmp / "m.sock")
    destination = await launcher.start("dst", "-m", "4M", "-incoming", f"unix:{path}")
    client = await Client.connect(destination.qmp_path, oob=True)
    await wait_migration(client, "setup")  # listening (it starts after the monitors)
    yank_instances = [{"type": "chardev", "id": "compat_monitor0"}, {"type": "migration"}]
    assert await client.execute("query-yank") == yank_instances
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"QMMIGR")  # a source that hangs in the middle of the header
    await writer.drain()
    await wait_migration(client, "active")  # reading: its connection is yankable
    client.send({"exec-oob": "yank", "arguments": YANK_MIGRATION, "id": "y"})
    assert await client.reply_to("y") == {"return": {}, "id": "y"}
    assert await destination.exited() == 1
    assert await reader.read() == b""
    writer.close()


async def test_yank_of_a_monitor_chardev_hangs_up_its_clients_only(
    launcher: Launcher, short_tmp: Path
) -> None:
    """Socket monitors are yank instances named as QEMU names them, in command-line order;
    yanking one shuts down its connections, and its listener keeps accepting."""
    hmp_path, qmp_path = short_tmp / "vm0.hmp", short_tmp / "second.qmp"
    vm = await launcher.start(
        "vm0",
        "-monitor", "stdio",  # compat_monitor1: counted, not a socket
        "-monitor", f"unix:{hmp_path},server=on,wait=off",  # compat_monitor2
        "-qmp", f"unix:{qmp_path},server=on,wait=off",  # compat_monitor3
    )  # fmt: skip
    client = await vm.client()
    assert await client.execute("query-yank") == [
        {"type": "chardev", "id": "compat_monitor0"},
        {"type": "chardev", "id": "compat_monitor2"},
        {"type": "chardev", "id": "compat_monitor3"},
    ]
    human_reader, human_writer = await asyncio.open_unix_connection(str(hmp_path))
    await asyncio.wait_for(human_reader.readuntil(b"(qemu) "), 10)
    second = await Client.connect(str(qmp_path))
    instance = {"type": "chardev", "id": "compat_monitor2"}
    assert await client.execute("yank", instances=[instance]) == {}
    assert await asyncio.wait_for(human_reader.read(), 10) == b""  # hung up
    human_writer.close()
    assert (await second.execute("query-status"))["status"] == "running"
    human_reader, human_writer = await asyncio.open_unix_connection(str(hmp_path))
    await asyncio.wait_for(human_reader.readuntil(b"(qemu) "), 10)  # still listening
    human_writer.close()
    instance = {"type": "chardev", "id": "compat_monitor3"}
    assert await client.execute("yank", instances=[instance]) == {}
    assert await asyncio.wait_for(second.reader.read(), 10) == b""
    await second.close()
    assert await client.execute("query-name") == {"name": "vm0"}


async def test_qemu_qmp_client_drives_a_whole_scenario(launcher: Launcher, short_tmp: Path) -> None:
    from qemu.qmp import EventListener, QMPClient

    source = await launcher.start("src", "-m", "16M", "--dirty-rate", "2M")
    destination = await launcher.start(
        "dst", "-m", "16M", "-S", "-incoming", f"unix:{short_tmp}/m.sock"
    )
    qmp = QMPClient("src")
    await qmp.connect(source.qmp_path)
    try:
        listener = EventListener()
        with qmp.listen(listener):
            await qmp.execute("stop")
            assert (await asyncio.wait_for(listener.get(), 10))["event"] == "STOP"
            await qmp.execute(
                "snapshot-save",
                {"job-id": "s", "tag": "t", "vmstate": "disk0", "devices": ["disk0"]},
            )
            while True:
                event = await asyncio.wait_for(listener.get(), 10)
                if event["event"] == "JOB_STATUS_CHANGE" and event["data"]["status"] == "concluded":
                    break
            await qmp.execute("job-dismiss", {"id": "s"})
            await qmp.execute(
                "migrate-set-capabilities",
                {"capabilities": [{"capability": "events", "state": True}]},
            )
            await qmp.execute("migrate", {"uri": f"unix:{short_tmp}/m.sock"})
            while True:
                event = await asyncio.wait_for(listener.get(), 10)
                if event["event"] == "MIGRATION" and event["data"]["status"] == "completed":
                    break
        source_digest = await qmp.execute("x-query-ram-digest")
    finally:
        await qmp.disconnect()
    dst = await destination.client()
    await wait_migration(dst, "completed")
    assert await dst.execute("x-query-ram-digest") == source_digest


async def test_hmp_migrate_without_d_shows_no_prompt_until_the_end(
    launcher: Launcher, short_tmp: Path
) -> None:
    hmp_path = short_tmp / "src.hmp"
    source = await launcher.start(
        "src", "-m", "16M", "--dirty-rate", "1G", "-monitor", f"unix:{hmp_path},server=on,wait=off"
    )
    await launcher.start("dst", "-m", "16M", "-S", "-incoming", f"unix:{short_tmp}/m.sock")
    src = await source.client()
    while (await digest(src))[1] < 4096:  # all 16 MiB hold data: 2 s at 8 MiB/s
        await asyncio.sleep(0.05)
    await src.execute("stop")
    await src.execute("migrate-set-parameters", **{"max-bandwidth": 8 << 20})
    reader, writer = await asyncio.open_unix_connection(str(hmp_path))
    await asyncio.wait_for(reader.readuntil(b"(qemu) "), 10)
    writer.write(f"migrate unix:{short_tmp}/m.sock\n".encode())
    seen = b""
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            seen += await asyncio.wait_for(reader.read(4096), 0.1)
        info = await src.execute("query-migrate")
        if info.get("status") == "completed":
            break
        assert b"(qemu) " not in seen  # read while the migration was still going
    if not seen.endswith(b"(qemu) "):
        seen += await asyncio.wait_for(reader.readuntil(b"(qemu) "), 10)
    assert seen.count(b"(qemu) ") == 1  # the prompt came back once, at the end
    writer.close()
