"""Fault injection, each kind observed from the real ``qemu.qmp`` client (issue 7, item 2).

Command, reply and greeting faults are added at run time with
``__io.github.qmonitor_fault-add`` on an in-process monitor; the machine's (a migration failing
at pass 2, a snapshot's I/O error) and the ``--faults FILE`` option run ``qmonitor run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import EventListener, ExecInterruptedError, ExecuteError, QMPClient
from qemu.qmp.message import DeserializationError
from qemu.qmp.protocol import ConnectError

from conftest import TestServer, wait_until
from qmonitor import FaultRuleError, FaultSet, install_faults, parse_faults

ADD = "__io.github.qmonitor_fault-add"
LIST = "__io.github.qmonitor_fault-list"
CLEAR = "__io.github.qmonitor_fault-clear"


@pytest.fixture
def faulty(server: TestServer) -> Iterator[tuple[TestServer, list[tuple[str, dict[str, Any]]]]]:
    """The test server with fault injection installed, and the trace records it gives."""
    records: list[tuple[str, dict[str, Any]]] = []
    server.monitor.add_tracer(lambda name, info: records.append((name, dict(info))))
    install_faults(server.monitor, FaultSet())
    yield server, records


@pytest.fixture
async def qmp(
    faulty: tuple[TestServer, list[tuple[str, dict[str, Any]]]],
) -> AsyncIterator[QMPClient]:
    client = QMPClient("faults")
    await client.connect(faulty[0].path)
    try:
        yield client
    finally:
        await client.disconnect()


async def test_delay_then_the_normal_reply(qmp: QMPClient) -> None:
    rule = await qmp.execute(ADD, {"command": "echo", "action": "delay", "seconds": 0.2})
    started = time.monotonic()
    assert await qmp.execute("echo", {"value": "late"}) == "late"
    assert time.monotonic() - started >= 0.2
    listed: Any = await qmp.execute(LIST)
    assert listed == [{**rule, "command": "echo", "action": "delay", "seconds": 0.2, "fired": 1}]  # type: ignore[dict-item]


async def test_error_with_its_class_only_where_the_arguments_match(qmp: QMPClient) -> None:
    await qmp.execute(
        ADD,
        {
            "command": "add",
            "arguments": {"a": 1},
            "action": "error",
            "class": "DeviceNotFound",
            "desc": "Device 'x' not found",
            "times": 1,
        },
    )
    assert await qmp.execute("add", {"a": 2, "b": 2}) == 4  # arguments do not match
    with pytest.raises(ExecuteError) as caught:
        await qmp.execute("add", {"a": 1, "b": 2})
    assert caught.value.error_class == "DeviceNotFound"
    assert caught.value.error.error.desc == "Device 'x' not found"
    assert await qmp.execute("add", {"a": 1, "b": 2}) == 3  # times: 1, spent
    listed: Any = await qmp.execute(LIST)
    assert [(r["id"], r["fired"], r["times"]) for r in listed] == [(1, 1, 1)]


@pytest.mark.parametrize("when", ["before-reply", "after-reply"])
async def test_disconnect(when: str, qmp: QMPClient) -> None:
    await qmp.execute(ADD, {"command": "echo", "action": "disconnect", "when": when})
    if when == "before-reply":
        with pytest.raises(ExecInterruptedError):
            await qmp.execute("echo", {"value": "x"})
    else:
        assert await qmp.execute("echo", {"value": "x"}) == "x"
    with pytest.raises(EOFError):  # the server closed the connection
        await asyncio.wait_for(qmp.disconnect(), 10)


async def test_hang_until_cancelled_then_until_the_client_leaves(
    faulty: tuple[TestServer, list[tuple[str, dict[str, Any]]]], qmp: QMPClient
) -> None:
    _, records = faulty
    await qmp.execute(ADD, {"command": "echo", "action": "hang"})
    hung = asyncio.ensure_future(
        qmp._raw({"execute": "echo", "arguments": {"value": "x"}, "id": "hung"}, assign_id=False)
    )
    await wait_until(lambda: ("fault.fired", "echo") in [(n, i.get("command")) for n, i in records])
    assert not hung.done()
    await qmp.execute("__io.github.qmonitor_cancel", {"id": "hung"})
    reply: Any = await asyncio.wait_for(hung, 10)
    assert reply["error"]["desc"] == "Command 'echo' was cancelled by the client"

    left = asyncio.ensure_future(qmp.execute("echo", {"value": "y"}))
    await wait_until(lambda: sum(n == "fault.fired" for n, _ in records) == 2)
    await qmp.disconnect()
    with pytest.raises(ExecInterruptedError):
        await left
    await wait_until(
        lambda: any(
            n == "command.failed"
            and i["error"] == "Command 'echo' was cancelled: the client disconnected"
            for n, i in records
        )
    )


async def test_garbled_reply_is_a_protocol_error_for_the_client(qmp: QMPClient) -> None:
    await qmp.execute(ADD, {"command": "echo", "action": "garble"})
    with pytest.raises(ExecInterruptedError):
        await qmp.execute("echo", {"value": "x"})
    with pytest.raises(DeserializationError) as caught:
        await qmp.disconnect()
    assert caught.value.raw == b'{"return"# "x", "id": "__qmp#00001"}\r\n'


async def test_wrong_id_is_dropped_by_the_client(
    qmp: QMPClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "qemu.qmp")
    await qmp.execute(ADD, {"command": "echo", "action": "wrong-id"})
    waiting = asyncio.ensure_future(qmp.execute("echo", {"value": "x"}))
    await wait_until(
        lambda: any(
            "Unknown ID '__io.github.qmonitor_wrong-id'" in r.getMessage() for r in caplog.records
        )
    )
    assert not waiting.done()
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting


async def test_event_storm_then_the_reply(qmp: QMPClient) -> None:
    storm = {"event": "STORM", "data": {"n": 1}}
    await qmp.execute(ADD, {"command": "echo", "action": "events", "events": [storm], "count": 50})
    listener = EventListener("STORM")
    with qmp.listen(listener):
        assert await qmp.execute("echo", {"value": "x"}) == "x"
        events = [await asyncio.wait_for(listener.get(), 10) for _ in range(50)]
    assert {json.dumps(e["data"]) for e in events} == {'{"n": 1}'}


async def test_spaced_events_follow_each_other(qmp: QMPClient) -> None:
    await qmp.execute(
        ADD,
        {
            "command": "echo",
            "action": "events",
            "events": [{"event": "TICK"}],
            "count": 3,
            "interval": 0.05,
        },
    )
    listener = EventListener("TICK")
    with qmp.listen(listener):
        await qmp.execute("echo", {"value": "x"})
        stamps = []
        for _ in range(3):
            event: Any = await asyncio.wait_for(listener.get(), 10)
            stamps.append(event["timestamp"]["seconds"] + event["timestamp"]["microseconds"] / 1e6)
    assert stamps[2] - stamps[0] >= 0.1


async def test_early_event_before_the_greeting_breaks_the_client(
    faulty: tuple[TestServer, list[tuple[str, dict[str, Any]]]], qmp: QMPClient
) -> None:
    server, _ = faulty
    await qmp.execute(
        ADD, {"on": "greeting", "action": "events", "events": [{"event": "EARLY"}], "times": 1}
    )
    second = QMPClient("early")
    with pytest.raises(ConnectError, match="Did not understand Greeting"):
        await second.connect(server.path)
    third = QMPClient("after")  # times: 1, spent
    await third.connect(server.path)
    await third.disconnect()


async def test_delayed_and_garbled_greeting(
    faulty: tuple[TestServer, list[tuple[str, dict[str, Any]]]], qmp: QMPClient
) -> None:
    server, _ = faulty
    await qmp.execute(ADD, {"on": "greeting", "action": "delay", "seconds": 0.2, "times": 1})
    await qmp.execute(ADD, {"on": "greeting", "action": "garble", "times": 1})
    late = QMPClient("late")
    started = time.monotonic()
    await late.connect(server.path)
    assert time.monotonic() - started >= 0.2
    await late.disconnect()
    garbled = QMPClient("garbled")
    with pytest.raises(ConnectError):
        await garbled.connect(server.path)


async def test_rules_are_listed_and_cleared_and_bad_ones_refused(qmp: QMPClient) -> None:
    for value in ("a", "b", "c"):
        await qmp.execute(ADD, {"command": "echo", "arguments": {"value": value}, "action": "hang"})
    await qmp.execute(CLEAR, {"id": 2})
    listed: Any = await qmp.execute(LIST)
    assert [r["id"] for r in listed] == [1, 3]
    with pytest.raises(ExecuteError, match="No fault rule with id 2"):
        await qmp.execute(CLEAR, {"id": 2})
    await qmp.execute(CLEAR)
    assert await qmp.execute(LIST) == []
    with pytest.raises(ExecuteError, match=r"^fault rule: member 'seconds' is missing$"):
        await qmp.execute(ADD, {"command": "echo", "action": "delay"})
    with pytest.raises(ExecuteError, match="'fail' does not apply to a command"):
        await qmp.execute(ADD, {"command": "echo", "action": "fail", "at-pass": 1})
    assert await qmp.execute(ADD, {"command": "echo", "action": "garble"}) == {"id": 4}


async def test_the_first_live_rule_fires_on_valid_requests_nested_arguments_as_subsets(
    faulty: tuple[TestServer, list[tuple[str, dict[str, Any]]]], qmp: QMPClient
) -> None:
    """Rules are tried lowest id first and a spent one is skipped; ``arguments`` is matched as
    a subset at every level of nesting; ``class`` defaults to GenericError; a request that
    fails validation gets its usual error and fires nothing."""
    server, _ = faulty

    @server.monitor.command
    def configure(options: dict[str, Any]) -> dict[str, Any]:
        return options

    nested = {"options": {"disk": {"cache": "none"}}}
    await qmp.execute(
        ADD, {"command": "configure", "arguments": nested, "action": "error", "desc": "first",
              "times": 1},
    )  # fmt: skip
    await qmp.execute(ADD, {"command": "configure", "action": "error", "desc": "second"})
    with pytest.raises(ExecuteError, match=r"^Invalid parameter type"):
        await qmp.execute("configure", {"options": 1})
    inner = {"disk": {"cache": "none", "aio": "native"}, "net": {}}
    with pytest.raises(ExecuteError) as caught:
        await qmp.execute("configure", {"options": inner})
    assert (caught.value.error_class, str(caught.value)) == ("GenericError", "first")
    with pytest.raises(ExecuteError, match=r"^second$"):  # rule 1 is spent
        await qmp.execute("configure", {"options": inner})
    listed: Any = await qmp.execute(LIST)
    assert [(r["id"], r["fired"]) for r in listed] == [(1, 1), (2, 1)]
    await qmp.execute(CLEAR, {"id": 2})
    await qmp.execute(
        ADD, {"command": "configure", "arguments": nested, "action": "error", "desc": "nested"}
    )
    other_cache = {"disk": {"cache": "writeback"}}
    assert await qmp.execute("configure", {"options": other_cache}) == other_cache


async def test_a_delayed_request_is_in_flight_and_can_be_cancelled(
    faulty: tuple[TestServer, list[tuple[str, dict[str, Any]]]], qmp: QMPClient
) -> None:
    _, records = faulty
    await qmp.execute(ADD, {"command": "echo", "action": "delay", "seconds": 600})
    delayed = asyncio.ensure_future(
        qmp._raw({"execute": "echo", "arguments": {"value": "x"}, "id": "slow"}, assign_id=False)
    )
    await wait_until(lambda: any(n == "fault.fired" for n, _ in records))
    await qmp.execute("__io.github.qmonitor_cancel", {"id": "slow"})
    reply: Any = await asyncio.wait_for(delayed, 10)
    assert reply["error"]["desc"] == "Command 'echo' was cancelled by the client"


async def test_command_events_go_to_every_client_in_command_mode(
    faulty: tuple[TestServer, list[tuple[str, dict[str, Any]]]], qmp: QMPClient
) -> None:
    server, _ = faulty
    await qmp.execute(
        ADD, {"command": "echo", "action": "events", "events": [{"event": "BOTH"}], "times": 1}
    )
    other = QMPClient("other")
    await other.connect(server.path)
    try:
        listeners = [EventListener("BOTH"), EventListener("BOTH")]
        with qmp.listen(listeners[0]), other.listen(listeners[1]):
            assert await other.execute("echo", {"value": "x"}) == "x"
            for listener in listeners:
                assert (await asyncio.wait_for(listener.get(), 10))["event"] == "BOTH"
    finally:
        await other.disconnect()


@pytest.mark.parametrize("when", ["before-reply", "after-reply"])
async def test_a_disconnect_on_the_greeting(
    when: str, faulty: tuple[TestServer, list[tuple[str, dict[str, Any]]]], qmp: QMPClient
) -> None:
    """The connection is closed before the greeting (nothing at all arrives) or right after."""
    server, _ = faulty
    await qmp.execute(ADD, {"on": "greeting", "action": "disconnect", "when": when})
    reader, writer = await asyncio.open_unix_connection(server.path)
    received = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    writer.close()
    if when == "before-reply":
        assert received == b""
    else:
        assert received.startswith(b'{"QMP": {"version": ') and received.endswith(b"\r\n")
        assert received.count(b"\r\n") == 1


async def test_a_hung_greeting_never_comes_while_other_connections_are_served(
    faulty: tuple[TestServer, list[tuple[str, dict[str, Any]]]], qmp: QMPClient
) -> None:
    """Where the greeting would be written nothing is: the socket has nothing to read once
    the rule fired, and still nothing after a later connection was greeted and served."""
    server, records = faulty
    await qmp.execute(ADD, {"on": "greeting", "action": "hang", "times": 1})
    with socket.socket(socket.AF_UNIX) as hung:
        hung.setblocking(False)
        await asyncio.get_running_loop().sock_connect(hung, server.path)
        await wait_until(lambda: any(i.get("target") == "the greeting" for _, i in records))
        later = QMPClient("later")  # times: 1, spent: this one is greeted and served
        await later.connect(server.path)
        assert await later.execute("echo", {"value": "x"}) == "x"
        await later.disconnect()
        with pytest.raises(BlockingIOError):  # no byte, and no end of stream either
            hung.recv(1, socket.MSG_PEEK)


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ("[]", 'f.json: expected {"faults": [RULE, ...]}'),
        ('{"faults": [{"command": "x"}]}', "f.json: rule 1: member 'action' is missing"),
        (
            '{"faults": [{"command": "x", "action": "hang"}, {"command": "x", "action": "nap"}]}',
            "f.json: rule 2: member 'action': unknown action 'nap'; one of delay, error, "
            "disconnect, hang, garble, wrong-id, events, fail, io-error",
        ),
        (
            '{"faults": [{"command": "x", "action": "delay", "seconds": -1}]}',
            "f.json: rule 1: member 'seconds' must be at least 0",
        ),
        (
            '{"faults": [{"command": "x", "action": "error", "class": "Oops", "desc": "d"}]}',
            "f.json: rule 1: member 'class' must be one of QEMU's error classes: GenericError, "
            "CommandNotFound, DeviceNotActive, DeviceNotFound, KVMMissingCap",
        ),
        (
            '{"faults": [{"machine": "migration", "action": "fail"}]}',
            "f.json: rule 1: 'fail' needs exactly one of 'at-pass', 'after-bytes'",
        ),
        (
            '{"faults": [{"machine": "savevm", "action": "io-error", "at-percent": 101}]}',
            "f.json: rule 1: member 'at-percent' must be at most 100",
        ),
        (
            '{"faults": [{"on": "greeting", "action": "error", "desc": "d"}]}',
            "f.json: rule 1: member 'action': 'error' does not apply to the greeting",
        ),
        (
            '{"faults": [{"command": "x", "on": "greeting", "action": "hang"}]}',
            "f.json: rule 1: a rule needs exactly one of the members 'command', 'on', 'machine'",
        ),
        (
            '{"faults": [{"command": "x", "action": "hang", "seconds": 1}]}',
            "f.json: rule 1: member 'seconds' does not apply to action 'hang'",
        ),
    ],
)
def test_a_bad_file_gets_one_line_naming_the_rule_and_member(document: str, error: str) -> None:
    with pytest.raises(FaultRuleError) as caught:
        parse_faults(document, "f.json")
    assert str(caught.value) == error


# -- qmonitor run --faults FILE ----------------------------------------------------------------


class Machine:
    """A ``qmonitor run`` process with a faults file, and a qemu.qmp client to it."""

    def __init__(self, directory: Path, rules: list[dict[str, Any]], *options: str) -> None:
        self.faults = directory / "faults.json"
        self.faults.write_text(json.dumps({"faults": rules}))
        self.qmp_path = str(directory / "vm.qmp")
        self.state_dir = directory / "state"
        self.log = directory / "stderr.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "qmonitor", "run", "-name", "vm0",
                    "-qmp", f"unix:{self.qmp_path},server=on,wait=off", "-monitor", "none",
                    "--state-dir", str(self.state_dir), "--faults", str(self.faults), *options,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )  # fmt: skip

    async def client(self) -> QMPClient:
        for _ in range(1000):
            if self.process.poll() is not None:
                raise RuntimeError(self.log.read_text())
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(self.qmp_path)
                break
            await asyncio.sleep(0.02)
        client = QMPClient("run")
        await client.connect(self.qmp_path)
        return client

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def machines(short_tmp: Path) -> Iterator[list[Machine]]:
    started: list[Machine] = []
    try:
        yield started
    finally:
        for machine in started:
            machine.stop()


async def _wait_status(client: QMPClient, *statuses: str) -> dict[str, Any]:
    while True:
        info: Any = await client.execute("query-migrate")
        if info.get("status") in statuses:
            return dict(info)
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    "fail",
    [{"at-pass": 2}, {"after-bytes": 200}],
    ids=["at-pass", "after-bytes"],
)
async def test_migration_failing_at_pass_2_leaves_the_source_running_with_its_digest(
    fail: dict[str, int], short_tmp: Path, machines: list[Machine]
) -> None:
    """At its second pass, or once 200 bytes went out, the migration fails as on a reset
    connection; the source goes on running, RAM untouched. Without the fault it completes:
    the idle guest's pages are all zero, sent as runs in about 360 bytes over two passes."""
    rules = [{"machine": "migration", "action": "fail", **fail, "times": 1}]
    machine = Machine(
        short_tmp, rules, "-m", "16M", "--dirty-rate", "0", "--allow-path", str(short_tmp)
    )
    machines.append(machine)
    client = await machine.client()
    try:
        before = await client.execute("x-query-ram-digest")
        await client.execute("migrate", {"uri": f"file:{short_tmp / 'stream'}"})
        info = await asyncio.wait_for(_wait_status(client, "failed", "completed"), 30)
        assert info == {
            "status": "failed",
            "error-desc": "Unable to write to socket: Connection reset by peer",
        }
        assert await client.execute("query-status") == {
            "status": "running",
            "running": True,
            "singlestep": False,
        }
        assert await client.execute("x-query-ram-digest") == before
        listed: Any = await client.execute(LIST)
        assert [(r["machine"], r["fired"]) for r in listed] == [("migration", 1)]
    finally:
        await client.disconnect()
    machine.stop()
    assert "fault rule 1 fired: fail on machine migration" in machine.log.read_text()


async def test_savevm_io_error_leaves_no_snapshot(short_tmp: Path, machines: list[Machine]) -> None:
    rules = [{"machine": "savevm", "action": "io-error", "at-percent": 50}]
    machine = Machine(short_tmp, rules, "-m", "16M", "--dirty-rate", "64M")
    machines.append(machine)
    client = await machine.client()
    try:
        await wait_until_step(client)
        disk = {"vmstate": "disk0", "devices": ["disk0"]}
        await client.execute("snapshot-save", {"job-id": "s", "tag": "t", **disk})
        while True:
            jobs: Any = await client.execute("query-jobs")
            if jobs[0]["status"] == "concluded":
                break
            await asyncio.sleep(0.01)
        assert jobs[0]["error"] == "Could not save snapshot 't': Input/output error"
        assert await client.execute("query-status") == {
            "status": "running",
            "running": True,
            "singlestep": False,
        }
    finally:
        await client.disconnect()
    assert [p.name for p in machine.state_dir.iterdir() if not p.name.startswith(".lock")] == []


async def wait_until_step(client: QMPClient) -> None:
    """Until the guest has written some RAM (so the snapshot has pages to write)."""
    while True:
        digest: Any = await client.execute("x-query-ram-digest")
        if digest["workload-step"] > 0:
            return
        await asyncio.sleep(0.01)


def test_a_bad_faults_file_stops_qmonitor_run_with_one_line(short_tmp: Path) -> None:
    faults = short_tmp / "bad.json"
    faults.write_text('{"faults": [{"command": "stop", "action": "delay", "seconds": "1"}]}')
    finished = subprocess.run(
        [sys.executable, "-m", "qmonitor", "run", "-qmp", f"unix:{short_tmp}/s,server=on,wait=off",
         "-monitor", "none", "--state-dir", str(short_tmp / "state"), "--faults", str(faults)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert finished.returncode == 1
    assert finished.stderr == f"qmonitor: {faults}: rule 1: member 'seconds' must be a number\n"
    assert not (short_tmp / "state").exists()


async def test_savevm_io_error_through_hmp_keeps_the_older_snapshot(
    short_tmp: Path, machines: list[Machine]
) -> None:
    """HMP ``savevm`` meets the rule as ``snapshot-save`` does (added at run time here), and
    the snapshot saved before under the same tag is kept, byte for byte."""
    machine = Machine(short_tmp, [], "-m", "16M", "--dirty-rate", "64M")
    machines.append(machine)
    client = await machine.client()
    hmp = "human-monitor-command"
    try:
        await wait_until_step(client)
        assert await client.execute(hmp, {"command-line": "savevm t"}) == ""
        saved = {p.name: p.read_bytes() for p in machine.state_dir.rglob("*") if p.is_file()}
        rule = {"machine": "savevm", "action": "io-error", "at-percent": 50}
        assert await client.execute(ADD, rule) == {"id": 1}
        failed = await client.execute(hmp, {"command-line": "savevm t"})
        assert failed == "Error: Could not save snapshot 't': Input/output error\r\n"
        assert (await client.execute("query-status"))["status"] == "running"
        listed: Any = await client.execute(LIST)
        assert [(r["id"], r["fired"]) for r in listed] == [(1, 1)]
    finally:
        await client.disconnect()
    machine.stop()
    after = {p.name: p.read_bytes() for p in machine.state_dir.rglob("*") if p.is_file()}
    assert after == saved and any(name.startswith("t") for name in saved), sorted(saved)
