"""The one trace path: command, job and dropped-event records, to every tracer and the debug log."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
from collections.abc import Mapping
from pathlib import Path

import pytest

from qmonitor import Job, JobManager, Monitor, QMPError, register_human_monitor_command
from qmonitor.server.human import serve_human
from qmonitor.testing import RawQMPClient
from test_hmp_socket import HMPClient

Record = tuple[str, dict[str, object]]


class Recorder:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def __call__(self, name: str, info: Mapping[str, object]) -> None:
        self.records.append((name, dict(info)))

    def named(self, prefix: str) -> list[Record]:
        return [record for record in self.records if record[0].startswith(prefix)]


def traced_monitor(recorder: Recorder) -> Monitor:
    monitor = Monitor("traced", tracer=recorder)

    @monitor.command(hmp="quick")
    def quick() -> str:
        return "quick\n"

    @monitor.command
    async def slow() -> None:
        await asyncio.sleep(0)

    @monitor.command
    def refuse() -> None:
        raise QMPError("no")

    register_human_monitor_command(monitor)
    return monitor


async def test_every_request_leaves_started_then_one_outcome_with_its_peer(
    short_tmp: Path,
) -> None:
    recorder = Recorder()
    monitor = traced_monitor(recorder)
    qmp_path, hmp_path = str(short_tmp / "qmp.sock"), str(short_tmp / "hmp.sock")
    await monitor.listen(f"unix:{qmp_path},server=on,wait=off")
    await serve_human(monitor, f"unix:{hmp_path},server=on,wait=off", interactive=False)
    client = await RawQMPClient.connect_unix(qmp_path)
    await client.negotiate()
    hmp = await HMPClient.connect(hmp_path)
    try:
        await client.execute("quick", id=1)
        await client.execute("slow", id=2)
        await client.execute("refuse", id=3)
        await client.execute("no-such-command", id=4)
        await client.execute("human-monitor-command", {"command-line": "quick"}, id=5)
        assert await hmp.run("quick") == b"quick\r\n"
    finally:
        await client.close()
        await hmp.close()
        await monitor.close()

    user = pwd.getpwuid(os.getuid()).pw_name
    me = f"uid={os.getuid()}({user}) gid={os.getgid()} pid={os.getpid()}"
    qmp_peer = f"pid {os.getpid()} on {qmp_path}"  # the client is this process
    qmp = {"session": "qmp", "peer": qmp_peer, "identity": me, "transport": "unix"}
    hmc = {**qmp, "session": "human-monitor-command"}  # the QMP connection's identity
    hmp_peer = {**qmp, "session": "hmp", "peer": f"pid {os.getpid()} on {hmp_path}"}
    no_args: dict[str, object] = {"arguments": {}}
    line = {"arguments": {"command-line": "quick"}}
    assert durations_removed(recorder.named("command.")) == [
        ("command.started", {"command": "qmp_capabilities", **qmp, **no_args}),
        ("command.complete", {"command": "qmp_capabilities", **qmp, **no_args}),
        ("command.started", {"command": "quick", "id": 1, **qmp, **no_args}),
        ("command.complete", {"command": "quick", "id": 1, **qmp, **no_args}),
        ("command.started", {"command": "slow", "id": 2, **qmp, **no_args}),
        ("command.complete", {"command": "slow", "id": 2, **qmp, **no_args}),
        ("command.started", {"command": "refuse", "id": 3, **qmp, **no_args}),
        (
            "command.failed",
            {
                "command": "refuse",
                "id": 3,
                **qmp,
                **no_args,
                "error": "no",
                "error_class": "GenericError",
            },
        ),
        ("command.started", {"command": "no-such-command", "id": 4, **qmp, **no_args}),
        (
            "command.failed",
            {
                "command": "no-such-command",
                "id": 4,
                **qmp,
                **no_args,
                "error": "The command no-such-command has not been found",
                "error_class": "CommandNotFound",
            },
        ),
        ("command.started", {"command": "human-monitor-command", "id": 5, **qmp, **line}),
        ("command.started", {"command": "quick", **hmc, **no_args}),
        ("command.complete", {"command": "quick", **hmc, **no_args}),
        ("command.complete", {"command": "human-monitor-command", "id": 5, **qmp, **line}),
        ("command.started", {"command": "quick", **hmp_peer, **no_args}),
        ("command.complete", {"command": "quick", **hmp_peer, **no_args}),
    ]


def durations_removed(records: list[Record]) -> list[Record]:
    """The records without ``duration_ms``, which every outcome (and no start) has."""
    for name, info in records:
        duration = info.pop("duration_ms", None)
        assert (duration is None) == (name == "command.started"), (name, info)
        assert duration is None or duration >= 0
    return records


async def test_a_raising_tracer_is_logged_and_breaks_nothing(
    short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Several consumers: one that raises neither stops the request nor the others."""
    first, last = Recorder(), Recorder()

    def broken(name: str, info: Mapping[str, object]) -> None:
        raise RuntimeError("tracer bug")

    monitor = traced_monitor(first)
    monitor.add_tracer(broken)
    monitor.add_tracer(last)
    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    client = await RawQMPClient.connect_unix(path)
    await client.negotiate()
    try:
        with caplog.at_level(logging.ERROR, logger="qmonitor.trace"):
            assert await client.execute("quick") == {"return": "quick\n"}
            assert await client.execute("slow") == {"return": {}}
        # qmp_capabilities, quick and slow: started and an outcome each
        assert caplog.text.count("failed on command.") == 6
        assert first.records == last.records
        assert [name for name, _ in last.records] == [
            "session.opened",
            *["command.started", "command.complete"] * 3,
        ]
        monitor.remove_tracer(broken)
        monitor.remove_tracer(last)
        assert await client.execute("quick") == {"return": "quick\n"}
        assert len(first.records) == 9 and len(last.records) == 7
    finally:
        await client.close()
        await monitor.close()


async def test_command_records_reach_the_debug_log_without_a_tracer(
    short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = Monitor("logged")

    @monitor.command
    def quick() -> None: ...

    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    client = await RawQMPClient.connect_unix(path)
    await client.negotiate()
    try:
        with caplog.at_level(logging.DEBUG, logger="qmonitor.trace"):
            await client.execute("quick", id="q")
    finally:
        await client.close()
        await monitor.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "qmonitor.trace"]
    peer = f"pid {os.getpid()} on {path}"
    assert lines == [
        f"quick (id 'q') started from {peer}",
        f"quick (id 'q') complete from {peer}",
    ]


async def test_every_job_status_change_is_a_job_record() -> None:
    recorder = Recorder()
    monitor = Monitor("jobs", tracer=recorder)
    jobs = JobManager(monitor)
    release = asyncio.Event()

    async def work(job: Job) -> None:
        await release.wait()

    done = jobs.start("ok", "test-job", work)
    release.set()
    await done.wait()
    jobs.find("ok").user_dismiss()
    failed = jobs.start("bad", "test-job", work, auto_dismiss=True)
    release.clear()
    await asyncio.sleep(0)
    failed.user_cancel()
    await failed.wait()

    def moves(job_id: str) -> list[tuple[str, object, object]]:
        return [
            (name, info["previous"], info.get("error"))
            for name, info in recorder.named("job.")
            if info["id"] == job_id and info["type"] == "test-job"
        ]

    assert moves("ok") == [
        ("job.created", "undefined", None),
        ("job.running", "created", None),
        ("job.waiting", "running", None),
        ("job.pending", "waiting", None),
        ("job.concluded", "pending", None),
        ("job.null", "concluded", None),
    ]
    assert moves("bad") == [
        ("job.created", "undefined", None),
        ("job.running", "created", None),
        ("job.aborting", "running", "Operation canceled"),
        ("job.concluded", "aborting", "Operation canceled"),
        ("job.null", "concluded", "Operation canceled"),
    ]
    assert all(info["status"] == name.removeprefix("job.") for name, info in recorder.named("job."))
