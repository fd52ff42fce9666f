"""File descriptors passed over a monitor's unix socket: getfd, closefd, fd sets, ``fd:`` migration.

Real ``qmonitor run`` processes (and, for ordering within one connection, a monitor in the test
process), real descriptors sent with SCM_RIGHTS, checked through the process's ``/proc`` entries:
what it holds is what was sent, and nothing it received stays open once it is done with it.
QEMU's exact replies are pinned by the differential tests in ``test_fds_qemu.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from conftest import TestServer, wait_until
from fd_client import FdClient, holds, open_fds, open_sockets, same_file
from qmonitor.server.fd_commands import register_fd_commands
from qmonitor.server.fds import MAX_FD_MESSAGES_AHEAD, MAX_FDS_PER_MESSAGE, NO_FD_SUPPLIED


@contextlib.asynccontextmanager
async def running_vm(
    directory: Path, name: str, *options: str, pass_fds: Sequence[int] = ()
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """A ``qmonitor run`` process (16 MiB of RAM, an idle guest unless ``options`` say
    otherwise, so that a restored RAM stays as it was loaded) and its QMP socket; killed at
    the end."""
    qmp = str(directory / f"{name}.qmp")
    command = [
        sys.executable, "-m", "qmonitor", "run", "-name", name, "-m", "16M",
        "-qmp", f"unix:{qmp},server=on,wait=off", "-monitor", "none",
        "--state-dir", str(directory / f"{name}-state"), "--dirty-rate", "0", *options,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=pass_fds,
    )
    try:
        async with asyncio.timeout(30):
            while not os.path.exists(qmp):  # FdClient.connect waits for listen()
                assert process.poll() is None, f"qmonitor run exited with {process.returncode}"
                await asyncio.sleep(0.02)
        yield process, qmp
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


async def wait_status(client: FdClient, *statuses: str) -> dict[str, Any]:
    """``query-migrate`` once its status is one of ``statuses``."""
    async with asyncio.timeout(60):
        while True:
            info: dict[str, Any] = await client.returns("query-migrate")
            if info.get("status") in statuses:
                return info
            await asyncio.sleep(0.02)


async def wait_run_state(client: FdClient, state: str) -> None:
    async with asyncio.timeout(60):
        while (await client.returns("query-status"))["status"] != state:
            await asyncio.sleep(0.02)


def closed_by_peer(read_end: int) -> bool:
    """Whether every write end of the pipe ``read_end`` (non-blocking) is closed: what is in
    the pipe is read and dropped, then a read sees the end."""
    try:
        while os.read(read_end, 1 << 20):
            pass
    except BlockingIOError:
        return False
    return True


async def test_getfd_keeps_what_was_sent_and_nothing_is_left_open(short_tmp: Path) -> None:
    async with running_vm(short_tmp, "vm0") as (process, qmp):
        # Counted by what they are (sockets, our two pipes), not all descriptors: the server
        # may open files of its own meanwhile (a module imported on first use).
        idle_sockets = open_sockets(process.pid)
        read_end, write_end = os.pipe()
        spare_read, spare_write = os.pipe()
        try:
            client = await FdClient.connect(qmp)
            assert await client.error("getfd", fdname="out") == NO_FD_SUPPLIED
            assert await client.returns("getfd", [write_end], fdname="out") == {}
            assert holds(process.pid, write_end) == 1
            # Two descriptors with one message: the first is named, the other closed.
            assert await client.returns("getfd", [spare_read, spare_write], fdname="two") == {}
            assert holds(process.pid, spare_read) == 1
            message = await client.error("getfd", [spare_read], fdname="9lives")
            assert message == "Parameter 'fdname' expects a name not starting with a digit"
            assert holds(process.pid, spare_read) == 1
            added = await client.returns("add-fd", [read_end], opaque="the read end")
            assert same_file(process.pid, added["fd"], read_end)
            assert await client.returns("query-fdsets") == [
                {"fdset-id": 0, "fds": [{"fd": added["fd"], "opaque": "the read end"}]}
            ]
            assert await client.returns("closefd", fdname="two") == {}
            message = await client.error("closefd", fdname="two")
            assert message == "File descriptor named 'two' not found"
            # A descriptor no command takes stays with the connection until it closes.
            assert (await client.returns("query-status", [spare_read]))["running"]
            client.close()
            # The guest runs and no client is left: the fd set is closed (QEMU's clean-up).
            await wait_until(
                lambda: (
                    open_sockets(process.pid) == idle_sockets
                    and holds(process.pid, read_end) == 1  # "out", the write end
                    and holds(process.pid, spare_read) == 0
                )
            )

            # Names belong to the monitor: the next client closes the first one's.
            client = await FdClient.connect(qmp)
            assert await client.returns("query-fdsets") == []
            assert await client.returns("closefd", fdname="out") == {}
            os.close(write_end)
            os.set_blocking(read_end, False)
            assert closed_by_peer(read_end)
            client.close()
            await wait_until(
                lambda: (
                    open_sockets(process.pid) == idle_sockets and holds(process.pid, read_end) == 0
                )
            )
        finally:
            for fd in (read_end, write_end, spare_read, spare_write):
                with contextlib.suppress(OSError):
                    os.close(fd)


async def test_of_the_descriptors_of_one_message_only_the_first_is_kept(short_tmp: Path) -> None:
    """20 descriptors with one ``getfd``: 16 arrive (MAX_FDS_PER_MESSAGE; the kernel closes the
    other 4), the first is named, the others are closed (QEMU's ``tcp_get_msgfds``)."""
    async with running_vm(short_tmp, "vm0") as (_, qmp):
        client = await FdClient.connect(qmp)
        pipes = [os.pipe() for _ in range(MAX_FDS_PER_MESSAGE + 4)]
        try:
            assert await client.returns("getfd", [w for _, w in pipes], fdname="first") == {}
            for read_end, write_end in pipes:
                os.close(write_end)
                os.set_blocking(read_end, False)
            assert not closed_by_peer(pipes[0][0])
            assert all(closed_by_peer(read_end) for read_end, _ in pipes[1:])
        finally:
            for read_end, _ in pipes:
                os.close(read_end)


async def test_each_monitor_has_its_own_names_and_hmp_has_getfd(short_tmp: Path) -> None:
    hmp = str(short_tmp / "vm0.hmp")
    other_qmp = str(short_tmp / "other.qmp")
    extra = ["-qmp", f"unix:{other_qmp},server=on,wait=off"]
    extra += ["-monitor", f"unix:{hmp},server=on,wait=off"]
    async with running_vm(short_tmp, "vm0", *extra) as (_, qmp):
        read_end, write_end = os.pipe()
        try:
            first = await FdClient.connect(qmp)
            other = await FdClient.connect(other_qmp)
            assert await first.returns("getfd", [write_end], fdname="a") == {}
            assert await other.error("closefd", fdname="a") == "File descriptor named 'a' not found"

            human = await FdClient.connect(hmp, qmp=False)
            await human.line(b"(qemu) ")
            human.send(b"getfd a\n", [write_end])
            assert b"Error" not in await human.line(b"(qemu) ")
            human.send(b"getfd b\n")
            assert b"\r\nError: " + NO_FD_SUPPLIED.encode() + b"\r\n" in await human.line(
                b"(qemu) "
            )
            human.send(b"closefd a\n")
            assert b"Error" not in await human.line(b"(qemu) ")
            human.send(b"closefd a\n")
            output = await human.line(b"(qemu) ")
            assert b"\r\nError: File descriptor named 'a' not found\r\n" in output
            # QMP's "a" is still there: HMP closed its own.
            assert await first.returns("closefd", fdname="a") == {}
            # human-monitor-command runs in a monitor of its own, without names or a socket.
            for line, expected in (
                ("getfd c", f"Error: {NO_FD_SUPPLIED}\r\n"),
                ("closefd a", "Error: File descriptor named 'a' not found\r\n"),
            ):
                reply = await first.returns("human-monitor-command", [write_end], command_line=line)
                assert reply == expected
            for client in (first, other, human):
                client.close()
            os.close(write_end)
            os.set_blocking(read_end, False)
            await wait_until(lambda: closed_by_peer(read_end))
        finally:
            for fd in (read_end, write_end):
                with contextlib.suppress(OSError):
                    os.close(fd)


@pytest.fixture
def fd_server(server: TestServer) -> TestServer:
    register_fd_commands(server.monitor)
    return server


async def test_descriptors_go_to_the_requests_they_came_with(fd_server: TestServer) -> None:
    """Sent while an id-less request blocks the connection, two messages each carry a pipe;
    each ``add-fd`` gets its own, although both arrived before either ran."""
    client = await FdClient.connect(fd_server.path)
    pipes = [os.pipe(), os.pipe()]
    before = open_fds(os.getpid())
    try:
        client.request("wait-gate", name="go")
        client.request("add-fd", [pipes[0][1]], fdset_id=1)
        client.request("add-fd", [pipes[1][1]], fdset_id=2)
        await wait_until(lambda: open_fds(os.getpid()) == before + 2)  # both received
        fd_server.gate.open("go")
        assert await client.reply() == {"return": "go"}
        first = (await client.reply())["return"]
        second = (await client.reply())["return"]
        assert (first["fdset-id"], second["fdset-id"]) == (1, 2)
        assert same_file(os.getpid(), first["fd"], pipes[0][1])
        assert same_file(os.getpid(), second["fd"], pipes[1][1])
    finally:
        client.close()
        for pipe in pipes:
            for fd in pipe:
                os.close(fd)


async def test_messages_with_descriptors_ahead_are_bounded(fd_server: TestServer) -> None:
    """One message with descriptors more than MAX_FD_MESSAGES_AHEAD waiting behind a blocked
    request: the oldest is closed, and its command gets QEMU's "no descriptor" error."""
    client = await FdClient.connect(fd_server.path)
    pipes = [os.pipe() for _ in range(MAX_FD_MESSAGES_AHEAD + 1)]
    try:
        client.request("wait-gate", name="go")
        for read_end, write_end in pipes:
            client.request("add-fd", [write_end])
            os.close(write_end)
            os.set_blocking(read_end, False)
        await wait_until(lambda: closed_by_peer(pipes[0][0]))
        fd_server.gate.open("go")
        assert await client.reply() == {"return": "go"}
        assert (await client.reply())["error"]["desc"] == NO_FD_SUPPLIED
        for fdset_id in range(MAX_FD_MESSAGES_AHEAD):
            assert (await client.reply())["return"]["fdset-id"] == fdset_id
        assert not any(closed_by_peer(read_end) for read_end, _ in pipes[1:])
    finally:
        client.close()
        for read_end, _ in pipes:
            os.close(read_end)


async def digest_of(client: FdClient) -> str:
    return str((await client.returns("x-query-ram-digest"))["digest"])


async def test_virsh_save_and_restore_through_passed_descriptors(short_tmp: Path) -> None:
    """libvirt's ``virsh save``: ``getfd`` + ``migrate fd:NAME`` to a file; ``virsh restore``:
    ``-incoming defer`` + ``migrate-incoming fd:N``, N a descriptor the process inherited. Then
    the file by name (``getfd`` + ``migrate-incoming fd:NAME``), and ``-incoming fd:N``."""
    image = short_tmp / "saved.img"
    async with running_vm(short_tmp, "src", "--dirty-rate", "1M") as (source, qmp):
        client = await FdClient.connect(qmp)
        before = open_fds(source.pid)
        with image.open("wb") as out:
            assert await client.returns("getfd", [out.fileno()], fdname="migrate") == {}
        assert await client.returns("migrate", uri="fd:migrate") == {}
        await wait_status(client, "completed")
        assert (await client.returns("query-status"))["status"] == "postmigrate"
        saved = await digest_of(client)
        assert open_fds(source.pid) == before
        client.close()

    with image.open("rb") as inherited:
        fd = inherited.fileno()
        async with running_vm(short_tmp, "dst", "-incoming", "defer", pass_fds=[fd]) as (
            restored,
            qmp,
        ):
            client = await FdClient.connect(qmp)
            assert await client.returns("migrate-incoming", uri=f"fd:{fd}") == {}
            await wait_run_state(client, "running")
            assert await digest_of(client) == saved
            assert not os.path.exists(f"/proc/{restored.pid}/fd/{fd}")  # closed when done

    async with running_vm(short_tmp, "dst2", "-incoming", "defer", "-S") as (restored, qmp):
        client = await FdClient.connect(qmp)
        before = open_fds(restored.pid)
        message = await client.error("migrate-incoming", uri="fd:99999")
        assert message == "Unable to use file descriptor 99999: Bad file descriptor"
        with image.open("rb") as saved_file:
            assert await client.returns("getfd", [saved_file.fileno()], fdname="in") == {}
        assert await client.returns("migrate-incoming", uri="fd:in") == {}
        await wait_run_state(client, "paused")
        assert await digest_of(client) == saved
        assert open_fds(restored.pid) == before

    with image.open("rb") as inherited:
        fd = inherited.fileno()
        options = ("-incoming", f"fd:{fd}")
        async with running_vm(short_tmp, "dst3", *options, pass_fds=[fd]) as (_, qmp):
            client = await FdClient.connect(qmp)
            await wait_run_state(client, "running")
            assert await digest_of(client) == saved


async def test_live_migration_through_a_pipe(short_tmp: Path) -> None:
    async with (
        running_vm(short_tmp, "src", "--dirty-rate", "4M") as (source, source_qmp),
        running_vm(short_tmp, "dst", "-incoming", "defer") as (destination, destination_qmp),
    ):
        src = await FdClient.connect(source_qmp)
        dst = await FdClient.connect(destination_qmp)
        counts = (open_fds(source.pid), open_fds(destination.pid))
        read_end, write_end = os.pipe()
        assert await dst.returns("getfd", [read_end], fdname="in") == {}
        assert await src.returns("getfd", [write_end], fdname="out") == {}
        os.close(read_end)
        os.close(write_end)
        assert await dst.returns("migrate-incoming", uri="fd:in") == {}
        assert await src.returns("migrate", uri="fd:out") == {}
        await wait_status(src, "completed")
        await wait_run_state(dst, "running")
        assert await digest_of(dst) == await digest_of(src)
        assert (open_fds(source.pid), open_fds(destination.pid)) == counts


async def test_cancel_and_quit_a_migration_into_a_pipe_nobody_reads(short_tmp: Path) -> None:
    """A pipe cannot be shut down, and QEMU cannot interrupt a write to one; qmonitor can, so
    ``migrate_cancel`` and ``quit`` work while the reader has stopped reading."""
    async with running_vm(short_tmp, "src", "--dirty-rate", "16M") as (source, qmp):
        client = await FdClient.connect(qmp)
        # More data pages than a pipe holds (64 KiB), so the migration blocks writing.
        while (await client.returns("x-query-ram-digest"))["workload-step"] < 64:
            await asyncio.sleep(0.01)
        pipes = [os.pipe(), os.pipe()]
        try:
            for read_end, write_end in pipes:
                os.set_blocking(read_end, False)
                assert await client.returns("getfd", [write_end], fdname="stuck") == {}
                os.close(write_end)
                assert await client.returns("migrate", uri="fd:stuck") == {}
                await wait_status(client, "active")
                if read_end == pipes[0][0]:
                    assert await client.returns("migrate_cancel") == {}
                    await wait_status(client, "cancelled")
                    assert (await client.returns("query-status"))["status"] == "running"
                    await wait_until(lambda: closed_by_peer(pipes[0][0]))
            client.request("quit")
            async with asyncio.timeout(30):
                while source.poll() is None:
                    await asyncio.sleep(0.02)
            assert source.returncode == 0
        finally:
            for read_end, _ in pipes:
                os.close(read_end)


async def test_qemu_qmp_send_fd_scm_then_getfd(short_tmp: Path) -> None:
    """qemu.qmp's way: ``send_fd_scm`` sends a space carrying the descriptor, then the command."""
    async with running_vm(short_tmp, "vm0") as (process, qmp):
        client = QMPClient("test")
        await client.connect(qmp)
        read_end, write_end = os.pipe()
        try:
            client.send_fd_scm(read_end)
            added = await client.execute("add-fd", {"opaque": "qemu.qmp"})
            assert isinstance(added, dict) and added["fdset-id"] == 0
            assert same_file(process.pid, added["fd"], read_end)
            assert await client.execute("query-fdsets") == [
                {"fdset-id": 0, "fds": [{"fd": added["fd"], "opaque": "qemu.qmp"}]}
            ]
            with pytest.raises(ExecuteError, match=NO_FD_SUPPLIED):
                await client.execute("getfd", {"fdname": "none"})
        finally:
            await client.disconnect()
            os.close(read_end)
            os.close(write_end)
