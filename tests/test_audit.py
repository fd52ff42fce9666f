"""The audit trail (issue 9 item 6): records, secrets, rotation, a stuck disk, a full disk.

Real files throughout: a FIFO nobody reads stands for a disk that stopped taking writes, and a
symlink to /dev/full for a full one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from qmonitor import Monitor, QMPError
from qmonitor.core.schema import Secret
from qmonitor.core.session import Identity
from qmonitor.server.audit import AuditLog, registry_secrets

ALICE = Identity("tcp", "127.0.0.1:40000", tls_dn="O=Example,CN=alice")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for record in records:
        assert _TIME.fullmatch(record.pop("time")), record
    return records


@contextlib.contextmanager
def audit_log(path: Path, **options: Any) -> Iterator[AuditLog]:
    log = AuditLog(path, **options)
    try:
        yield log
    finally:
        log.close()


def test_a_scripted_session_gives_exactly_its_records_in_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with audit_log(path, secret_parameters=lambda c: {"password"} if c == "set-pw" else ()) as log:
        log("session.opened", {"identity": ALICE, "role": "operator"})
        log("command.started", {"identity": ALICE, "command": "stop", "id": 1, "arguments": {}})
        log("command.complete", {"identity": ALICE, "command": "stop", "id": 1, "duration_ms": 0.4})
        log("job.started", {"command": "ignored: not an audit event"})
        log(
            "command.started",
            {"identity": ALICE, "command": "set-pw", "arguments": {"password": "hunter2", "x": 1}},
        )
        log(
            "command.failed",
            {
                "identity": ALICE,
                "command": "set-pw",
                "duration_ms": 1.5,
                "error_class": "GenericError",
                "error": "no such display",
            },
        )
        log("session.closed", {"identity": ALICE})
        log("auth.refused", {"identity": "O=Example,CN=mallory", "transport": "tcp", "peer": "p"})
    assert "hunter2" not in path.read_text()
    alice = {"identity": "O=Example,CN=alice", "transport": "tcp", "peer": "127.0.0.1:40000"}
    assert without_time(read_records(path)) == [
        {"event": "session.opened", **alice, "role": "operator"},
        {"event": "command.started", **alice, "command": "stop", "id": 1, "arguments": {}},
        {"event": "command.complete", **alice, "command": "stop", "id": 1, "duration_ms": 0.4},
        {
            "event": "command.started",
            **alice,
            "command": "set-pw",
            "arguments": {"password": "***", "x": 1},
        },
        {
            "event": "command.failed",
            **alice,
            "command": "set-pw",
            "duration_ms": 1.5,
            "error_class": "GenericError",
            "error": "no such display",
        },
        {"event": "session.closed", **alice},
        {
            "event": "auth.refused",
            "identity": "O=Example,CN=mallory",
            "transport": "tcp",
            "peer": "p",
        },
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_parameters_declared_secret_in_the_registry_are_masked(tmp_path: Path) -> None:
    monitor = Monitor()

    @monitor.command(name="set-password")
    def set_password(password: Annotated[str, Secret()], connected: str | None = None) -> None:
        """A command with a secret argument."""

    @monitor.command(name="set-key")
    def set_key(key: Annotated[str, Secret()] | None = None) -> None:
        """An optional secret."""

    path = tmp_path / "audit.log"
    with audit_log(path, secret_parameters=registry_secrets(monitor.registry)) as log:
        for command in ("set-password", "set-key", "query-version"):
            log(
                "command.started",
                {"command": command, "arguments": {"password": "s3", "key": "k3", "x": "x"}},
            )
    arguments = [record["arguments"] for record in read_records(path)]
    assert arguments == [
        {"password": "***", "key": "k3", "x": "x"},
        {"password": "s3", "key": "***", "x": "x"},
        {"password": "s3", "key": "k3", "x": "x"},
    ]


def test_moving_the_file_starts_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    rotated = tmp_path / "audit.log.1"
    with audit_log(path) as log:
        log("session.opened", {"identity": "one"})
        wait_for_lines(path, 1)
        path.rename(rotated)  # logrotate's move, then it expects a new file
        log("session.opened", {"identity": "two"})
        wait_for_lines(path, 1)
        log("session.opened", {"identity": "three"})
    assert [r["identity"] for r in read_records(rotated)] == ["one"]
    assert [r["identity"] for r in read_records(path)] == ["two", "three"]


def wait_for_lines(path: Path, count: int) -> None:
    """Wait (in this thread) until ``path`` holds ``count`` lines (the writer's work)."""
    deadline = time.monotonic() + 20
    while not (path.exists() and path.read_text().count("\n") >= count):
        assert time.monotonic() < deadline, f"{path} never had {count} lines"
        time.sleep(0.005)


def test_a_stuck_disk_drops_records_counted_and_reports_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A FIFO nobody reads: the writer blocks in write(); the callers never do."""
    path = tmp_path / "audit.fifo"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    submitted = 300
    big = "x" * 4096  # the pipe (64 KiB) is full after about 16 records
    with caplog.at_level(logging.WARNING, logger="qmonitor.audit"):
        log = AuditLog(path, max_queued=8)
        for number in range(submitted):  # returns every time, though nothing is read
            log("command.started", {"command": "c", "id": number, "arguments": {"x": big}})
        assert any("dropping records" in r.message for r in caplog.records)
        received = bytearray()

        def drain() -> None:  # the disk comes back: read until the writer closes the file
            os.set_blocking(reader, True)
            while chunk := os.read(reader, 1 << 16):
                received.extend(chunk)

        draining = threading.Thread(target=drain, daemon=True)
        draining.start()
        try:
            deadline = time.monotonic() + 20  # the count is written once the writer catches up
            while b'"audit.dropped"' not in bytes(received):
                assert time.monotonic() < deadline, "no audit.dropped record before close()"
                time.sleep(0.005)
            log("command.started", {"command": "c", "id": submitted})
        finally:
            log.close()  # everything queued is written
            draining.join()
            os.close(reader)
    records = [json.loads(line) for line in bytes(received).splitlines()]
    written = [r["id"] for r in records if r["event"] == "command.started"]
    reports = [r for r in records if r["event"] == "audit.dropped"]
    assert reports and all(r["reason"] == "queue full" for r in reports)
    assert written == sorted(written)  # in order, with holes where records were dropped
    assert written[-1] == submitted
    assert len(written) + sum(r["count"] for r in reports) == submitted + 1
    assert any("records were dropped" in r.message for r in caplog.records)


def test_a_full_disk_loses_records_counted_and_reports_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes to /dev/full fail (ENOSPC); once the path is a real file again, they work."""
    path = tmp_path / "audit.log"
    path.symlink_to("/dev/full")
    with caplog.at_level(logging.WARNING, logger="qmonitor.audit"), audit_log(path) as log:
        for number in range(5):
            log("command.started", {"command": "c", "id": number})
        deadline = time.monotonic() + 20
        while not any("write failed" in r.message for r in caplog.records):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        replacement = tmp_path / "new.log"
        replacement.touch()
        os.replace(replacement, path)  # the symlink is now a regular file
        log("command.started", {"command": "c", "id": 5})
    records = without_time(read_records(path))
    lost = sum(r["count"] for r in records if r["event"] == "audit.dropped")
    written = [r["id"] for r in records if r["event"] == "command.started"]
    assert records[0] == {"event": "audit.dropped", "count": lost, "reason": "write failed"}
    assert lost + len(written) == 6 and written[-1] == 5


def test_an_unwritable_path_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        AuditLog(tmp_path / "missing" / "audit.log")


async def test_the_monitors_tracer_feeds_the_audit_log(tmp_path: Path, short_tmp: Path) -> None:
    """``Monitor(tracer=AuditLog(...))``: today's trace path (command events) is audited."""
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    monitor = Monitor(tracer=log)

    @monitor.command
    def echo(value: str) -> str:
        return value

    @monitor.command
    def fail() -> None:
        raise QMPError("failed on purpose")

    socket_path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{socket_path},server=on,wait=off")
    client = QMPClient("audit")
    try:
        await client.connect(socket_path)
        await client.execute("echo", {"value": "hi"})
        with contextlib.suppress(ExecuteError):
            await client.execute("fail")
        await client.disconnect()
    finally:
        await monitor.close()
        log.close()
    events = [(r["event"], r.get("command")) for r in read_records(path)]
    assert events == [
        ("session.opened", None),
        ("command.started", "qmp_capabilities"),  # answered in negotiation mode, audited too
        ("command.complete", "qmp_capabilities"),
        ("command.started", "echo"),
        ("command.complete", "echo"),
        ("command.started", "fail"),
        ("command.failed", "fail"),
        ("session.closed", None),
    ]
