"""Record real QEMU 7.2 through ``qmonitor record``, replay it with ``qmonitor replay``.

A client must see the same bytes from the replay as from QEMU (event timestamps aside), in
lenient and strict mode, from raw bytes and from the real ``qemu.qmp`` client; a libvirt-style
``.replies`` file replays too; requests the transcript has no reply for are checked against the
recorded ``query-qmp-schema`` and get QEMU's own errors; ``qmonitor transcript`` shows it all.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import pytest
from qemu.qmp import ConnectError, EventListener, ExecuteError, QMPClient

from conftest import wait_until
from qmonitor.server.listen import parse_address
from qmonitor.testing import RawQMPClient, start_qemu, start_server
from qmonitor.testing.record import RecordingProxy
from qmonitor.testing.replay import ReplayServer
from qmonitor.testing.transcript import (
    ConnectionRecord,
    MessageRecord,
    MessageSplitter,
    TranscriptWriter,
    header_line,
    parse_transcript,
    read_transcript,
    record_line,
)

pytestmark = pytest.mark.qemu

QEMU_COMMAND = "qemu-system-x86_64 -machine none -display none -nodefaults"
QMONITOR = [sys.executable, "-m", "qmonitor"]
TIMESTAMP = re.compile(rb'"timestamp": \{"seconds": \d+, "microseconds": \d+\}')

# What the raw client sends, one input at a time, exactly these bytes: spacing, a line end or
# none, single quotes (QEMU accepts them), ids of several kinds, a command error, an unknown
# command, input that is not JSON, and the schema the replay checks requests against.
RAW_SESSION = [
    b'{"execute":"qmp_capabilities"}',
    b'{"execute": "query-version", "id": "v"}\n',
    b"{'execute': 'query-status'}\r\n",
    b'{"execute":"stop","id":1}',
    b'{"execute":"query-status","id":2}',
    b'{"execute":"cont"}',
    b'{"execute":"device_del","arguments":{"id":"nope"}}',
    b'{"execute":"no-such-command","id":{"nested":[1, "x"]}}',
    b'{"execute": }',
    b'{"execute":"query-qmp-schema","id":"schema"}',
    b'{"execute":"quit"}',
]


def normalised(lines: Sequence[bytes]) -> list[bytes]:
    """Lines with every event timestamp zeroed (what differs between QEMU and a replay)."""
    return [
        TIMESTAMP.sub(b'"timestamp": {"seconds": 0, "microseconds": 0}', line) for line in lines
    ]


async def run_raw_session(path: str, inputs: Sequence[bytes]) -> list[bytes]:
    """Send each input and read up to its reply; return every line received, greeting first.
    After ``quit`` the server must close the connection with nothing more."""
    client = await RawQMPClient.connect_unix(path, read_greeting=False)
    try:
        lines = [await client.receive_line()]
        for data in inputs:
            await client.send_raw(data)
            while True:
                lines.append(await client.receive_line())
                if "event" not in json.loads(lines[-1]):
                    break
        if inputs and inputs[-1] == b'{"execute":"quit"}':
            assert await asyncio.wait_for(client.reader.read(), 10) == b""
        return lines
    finally:
        await client.close()


@dataclass
class Recording:
    directory: Path
    transcript: Path
    lines: list[bytes]  # what the client received through the recorder


async def _record_raw_session(directory: Path) -> Recording:
    proxy_socket = str(directory / "proxy.sock")
    transcript = directory / "session.jsonl"
    command = [*QMONITOR, "record", "--qemu", QEMU_COMMAND]
    command += ["-qmp", f"unix:{proxy_socket},server=on,wait=off", "-o", str(transcript)]
    async with start_server(command, proxy_socket) as recorder:
        lines = await run_raw_session(proxy_socket, RAW_SESSION)
        # quit ends QEMU, and so the recording.
        assert await asyncio.to_thread(recorder.wait, 30) == 0
    return Recording(directory, transcript, lines)


@pytest.fixture(scope="module")
def recording() -> Iterator[Recording]:
    """One session of real QEMU 7.2 recorded through ``qmonitor record --qemu``."""
    with tempfile.TemporaryDirectory(prefix="qm-") as directory:
        yield asyncio.run(_record_raw_session(Path(directory)))


@pytest.fixture
async def replay_path(recording: Recording, short_tmp: Path) -> AsyncIterator[str]:
    """Where a lenient in-process replay of the recording listens."""
    async with ReplayServer(read_transcript(str(recording.transcript))) as replay:
        path = str(short_tmp / "replay.sock")
        await replay.serve(f"unix:{path},server=on,wait=off")
        yield path


def test_the_recorder_passes_every_byte_through_and_keeps_it(recording: Recording) -> None:
    """The client got QEMU's own lines (its greeting, STOP before the reply to stop), and the
    transcript holds every byte each side sent, message by message."""
    lines = recording.lines
    assert lines[0].startswith(b'{"QMP": {"version": {"qemu": {"micro": ')
    assert (
        lines[3] == b'{"return": {"status": "running", "singlestep": false, "running": true}}\r\n'
    )
    assert b'"event": "STOP"' in lines[4] and lines[5] == b'{"return": {}, "id": 1}\r\n'
    transcript = read_transcript(str(recording.transcript))
    messages = [r for r in transcript.records if isinstance(r, MessageRecord)]
    assert [m.data for m in messages if m.direction == "client"] == RAW_SESSION
    assert b"".join(m.data for m in messages if m.direction == "server") == b"".join(lines)
    states = [r for r in transcript.records if isinstance(r, ConnectionRecord)]
    assert [(s.state, s.closed_by) for s in states] == [("open", None), ("closed", "server")]
    times = [r.time for r in transcript.records]
    assert times == sorted(times)
    assert transcript.header["upstream"] == QEMU_COMMAND


@pytest.mark.parametrize("strict", [False, True])
async def test_a_replay_sends_the_bytes_qemu_sent(
    recording: Recording, short_tmp: Path, strict: bool
) -> None:
    """The same inputs get the same bytes, event timestamps aside, and the connection closes
    after quit as QEMU closed it; nothing is reported."""
    async with ReplayServer(read_transcript(str(recording.transcript)), strict=strict) as replay:
        path = str(short_tmp / "replay.sock")
        await replay.serve(f"unix:{path},server=on,wait=off")
        lines = await run_raw_session(path, RAW_SESSION)
    assert normalised(lines) == normalised(recording.lines)
    assert sum(TIMESTAMP.search(line) is not None for line in lines) == 3  # STOP RESUME SHUTDOWN
    assert replay.problems() == []


async def test_lenient_replay_follows_the_recorded_timeline(replay_path: str) -> None:
    """query-status after stop answers 'paused', as QEMU did after stop, though the client
    skipped the query-status QEMU answered 'running' before; asked again past its last
    occurrence, the last answer; a request from earlier in the recording still answers; each
    request's own id is echoed."""
    client = await RawQMPClient.connect_unix(replay_path)
    await client.negotiate()
    assert await client.execute("stop", id="s") == {"return": {}, "id": "s"}
    paused = {"status": "paused", "singlestep": False, "running": False}
    assert await client.execute("query-status", id=["mine", 1]) == {
        "return": paused,
        "id": ["mine", 1],
    }
    assert await client.execute("query-status") == {"return": paused}
    version = await client.execute("query-version")
    assert version["return"]["qemu"]["major"] == 7
    await client.close()


async def test_a_request_without_a_recorded_reply_is_named_and_reported(
    recording: Recording, short_tmp: Path
) -> None:
    """A valid request the transcript never saw: a GenericError naming it, and a problem."""
    async with ReplayServer(read_transcript(str(recording.transcript))) as replay:
        path = str(short_tmp / "replay.sock")
        await replay.serve(f"unix:{path},server=on,wait=off")
        client = await RawQMPClient.connect_unix(path)
        await client.negotiate()
        await client.send_raw(b'{"execute":"query-kvm","id":7}')
        assert await client.receive_line() == (
            b'{"id": 7, "error": {"class": "GenericError", "desc": "qmonitor replay: '
            b"no recorded reply to 'query-kvm'\"}}\r\n"
        )
        await client.close()
    assert replay.problems() == ["connection 1: no recorded reply to 'query-kvm'"]


async def test_strict_replay_reports_requests_out_of_order(
    recording: Recording, short_tmp: Path
) -> None:
    """Strict: a request other than the next recorded one gets an error naming both, and at
    the end every recorded request not made is reported too (libvirt's test monitor)."""
    async with ReplayServer(read_transcript(str(recording.transcript)), strict=True) as replay:
        path = str(short_tmp / "replay.sock")
        await replay.serve(f"unix:{path},server=on,wait=off")
        client = await RawQMPClient.connect_unix(path)
        await client.negotiate()
        reply = await client.execute("query-status")
        assert reply == {
            "error": {
                "class": "GenericError",
                "desc": "qmonitor replay: expected 'query-version' (request 2 of the recorded "
                "connection), got 'query-status'",
            }
        }
        assert (await client.execute("query-version", id="v"))["id"] == "v"  # back in order
        await client.close()
    problems = replay.problems()
    assert problems[0] == (
        "connection 1: expected 'query-version' (request 2 of the recorded connection), "
        "got 'query-status'"
    )
    assert problems[1] == "connection 1: recorded request 3, 'query-status', was never made"
    assert problems[-1] == "connection 1: recorded request 11, 'quit', was never made"


# QEMU 7.2's errors for requests the recording never saw, from the recorded schema.
BAD_REQUESTS = [
    {"execute": "device_del"},
    {"execute": "query-status", "arguments": {"verbose": True}},
    {"execute": "human-monitor-command", "arguments": {"command-line": 1}},
    {
        "execute": "migrate-set-capabilities",
        "arguments": {"capabilities": [{"capability": "xbzrle"}]},
    },
    {
        "execute": "migrate-set-capabilities",
        "arguments": {"capabilities": [{"capability": "bogus", "state": True}]},
    },
    {"execute": "migrate-set-parameters", "arguments": {"tls-creds": 1}},
    {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n", "size": "x"}},
    {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n", "bad": 1}},
    {"execute": "cpu-add", "arguments": {"id": 1}, "id": "gone"},
    {"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}},
]


async def test_requests_are_checked_against_the_recorded_schema_as_qemu_checks_them(
    replay_path: str, short_tmp: Path
) -> None:
    """Missing, unexpected and ill-typed arguments (nested, in a union, an enum, StrOrNull), an
    unknown command, a second qmp_capabilities: the replay's bytes are real QEMU's."""
    qemu_socket = str(short_tmp / "qemu.sock")
    answers = {}
    async with start_qemu(qemu_socket):
        for path in (qemu_socket, replay_path):
            client = await RawQMPClient.connect_unix(path)
            await client.negotiate()
            answers[path] = []
            for request in BAD_REQUESTS:
                await client.send(request)
                answers[path].append(await client.receive_line())
            await client.close()
    assert answers[replay_path] == answers[qemu_socket]
    assert b"Parameter 'capabilities[0].state' is missing" in answers[qemu_socket][3]


async def test_a_libvirt_replies_file_replays(short_tmp: Path) -> None:
    """A .replies file written the way libvirt's are (pretty-printed commands and replies,
    separated by empty lines) replays strictly: the greeting and every reply, to a client
    speaking as libvirt does, are the bytes real QEMU sends that client."""
    commands = ["qmp_capabilities", "query-version", "query-status", "query-kvm"]
    session = [
        json.dumps({"execute": name, "id": f"libvirt-{n}"}, separators=(",", ":")).encode()
        + b"\r\n"
        for n, name in enumerate(commands, start=1)
    ]
    session.append(b'{"execute":"device_del","arguments":{"id":"x"},"id":"libvirt-5"}\r\n')
    qemu_socket = str(short_tmp / "qemu.sock")
    async with start_qemu(qemu_socket):
        qemu_lines = await run_raw_session(qemu_socket, session)
    entries = []
    for sent, reply in zip(session, qemu_lines[1:], strict=True):
        entries += [json.loads(sent), json.loads(reply)]
    replies = short_tmp / "caps.replies"
    replies.write_text("\n\n".join(json.dumps(entry, indent=2) for entry in entries) + "\n")
    async with ReplayServer(read_transcript(str(replies)), strict=True) as replay:
        path = str(short_tmp / "replay.sock")
        await replay.serve(f"unix:{path},server=on,wait=off")
        assert await run_raw_session(path, session) == qemu_lines
    assert replay.problems() == []


async def test_qemu_qmp_sees_the_same_conversation_from_the_replay(short_tmp: Path) -> None:
    """Recorded with the real qemu.qmp client (ids, OOB negotiation, an EventListener), the
    replay answers that client the same; and recording the replay through the recorder's
    proxy gives the bytes of QEMU's transcript, timestamps aside."""
    proxy_socket = str(short_tmp / "proxy.sock")
    transcript = short_tmp / "qmp.jsonl"
    command = [*QMONITOR, "record", "--qemu", QEMU_COMMAND]
    command += ["-qmp", f"unix:{proxy_socket},server=on,wait=off", "-o", str(transcript)]
    async with start_server(command, proxy_socket) as recorder:
        from_qemu = await qemu_qmp_session(proxy_socket)
        # QEMU greets a second client only once the first has gone: then QEMU's SHUTDOWN
        # on SIGTERM cannot reach the first.
        await (await RawQMPClient.connect_unix(proxy_socket)).close()
        (qemu,) = children_of(recorder.pid)
        recorder.terminate()  # the recorder terminates QEMU and writes the transcript
        assert await asyncio.to_thread(recorder.wait, 30) == 0
        assert not os.path.exists(f"/proc/{qemu}")
    assert from_qemu["status"] == ["running", "paused", "running"]

    async with ReplayServer(read_transcript(str(transcript)), strict=True) as replay:
        replay_socket = str(short_tmp / "replay.sock")
        await replay.serve(f"unix:{replay_socket},server=on,wait=off")
        rerecorded = short_tmp / "again.jsonl"
        writer = TranscriptWriter.create(str(rerecorded))
        proxy = RecordingProxy(parse_address(f"unix:{replay_socket}"), writer)
        await proxy.serve(parse_address(f"unix:{proxy_socket},server=on,wait=off"))
        assert await qemu_qmp_session(proxy_socket) == from_qemu
        await proxy.close(wait=10)
        writer.commit()
    assert replay.problems() == []
    assert server_bytes(rerecorded) == server_bytes(transcript)


async def qemu_qmp_session(path: str) -> dict[str, Any]:
    """What qemu.qmp gets from a session with every kind of answer.

    No ``quit``: QEMU may close the connection before qemu.qmp reads the reply to it (the
    reason QEMUMachine tolerates EOF after quit); the raw session covers quit."""
    client = QMPClient("recorded")
    # The socket file exists from bind(); connections are accepted from listen() on.
    async with asyncio.timeout(10):
        while True:
            try:
                await client.connect(path)
                break
            except ConnectError as error:
                if not isinstance(error.exc, ConnectionRefusedError):
                    raise
    seen: dict[str, Any] = {"greeting": client.greeting._raw, "status": []}  # type: ignore[union-attr]
    listener = EventListener(("STOP", "RESUME"))
    with client.listen(listener):
        seen["version"] = await client.execute("query-version")
        for command in ("query-status", "stop", "query-status", "cont", "query-status"):
            result = await client.execute(command)
            if command == "query-status":
                seen["status"].append(result["status"])  # type: ignore[index]
        seen["events"] = [(await listener.get())["event"] for _ in range(2)]
    for command, arguments in (("device_del", {"id": "nope"}), ("no-such-command", None)):
        try:
            await client.execute(command, arguments)
        except ExecuteError as error:
            seen[command] = (error.error_class, error.error.error.desc)
    await client.disconnect()
    return seen


def server_bytes(transcript: Path) -> bytes:
    """What the server sent on a transcript's first connection, timestamps zeroed."""
    records = read_transcript(str(transcript)).records
    data = [
        r.data
        for r in records
        if isinstance(r, MessageRecord) and r.direction == "server" and r.connection == 1
    ]
    return b"".join(normalised(data))


async def test_a_second_client_waits_for_qemu_as_it_would_without_the_recorder(
    short_tmp: Path,
) -> None:
    """QEMU serves one QMP client at a time: through ``record --connect`` a second client is
    connected at once but gets its greeting (and its answers) only when the first leaves;
    SIGTERM stops the recorder, and the transcript says the recorder closed what was open."""
    qemu_socket = str(short_tmp / "qemu.sock")
    proxy_socket = str(short_tmp / "proxy.sock")
    transcript = short_tmp / "two.jsonl"
    command = [*QMONITOR, "record", "--connect", f"unix:{qemu_socket}"]
    command += ["-qmp", f"unix:{proxy_socket},server=on,wait=off", "-o", str(transcript)]
    async with start_qemu(qemu_socket), start_server(command, proxy_socket) as recorder:
        first = await RawQMPClient.connect_unix(proxy_socket)
        second = await RawQMPClient.connect_unix(proxy_socket, read_greeting=False)
        await second.send_raw(b'{"execute":"qmp_capabilities","id":"second"}')
        await first.negotiate()
        assert (await first.execute("query-status"))["return"]["status"] == "running"
        await first.close()
        assert "QMP" in await second.receive()
        assert await second.receive() == {"return": {}, "id": "second"}
        recorder.terminate()
        assert await asyncio.to_thread(recorder.wait, 30) == 0
        await second.close()
    records = read_transcript(str(transcript)).records

    def index(connection: int, kind: str, last: bool = False) -> int:
        found = [
            number
            for number, record in enumerate(records)
            if record.connection == connection
            and kind == getattr(record, "direction", getattr(record, "state", None))
        ]
        return found[-1] if last else found[0]

    # Connection 2 was open, and connection 1 answered, before connection 2's greeting.
    assert index(2, "open") < index(1, "server", last=True) < index(2, "server")
    assert records[index(1, "closed")].closed_by == "client"  # type: ignore[union-attr]
    closed_2 = [r for r in records if isinstance(r, ConnectionRecord) and r.connection == 2][-1]
    assert (closed_2.state, closed_2.closed_by) == ("closed", "recorder")


def run_qmonitor(*arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QMONITOR, *arguments], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("strict", [False, True])
async def test_the_replay_command_reports_at_exit(
    recording: Recording, short_tmp: Path, strict: bool
) -> None:
    """``qmonitor replay``: on SIGTERM a summary on stderr; exit status 1 only in strict mode."""
    path = str(short_tmp / "replay.sock")
    stderr_path = str(short_tmp / "stderr")
    command = [
        *QMONITOR,
        "replay",
        str(recording.transcript),
        "-qmp",
        f"unix:{path},server=on,wait=off",
    ]
    async with start_server(
        command + ["--strict"] * strict, path, stderr_path=stderr_path
    ) as replay:
        client = await RawQMPClient.connect_unix(path)
        await client.negotiate()
        await client.execute("query-kvm")
        await client.close()
        replay.terminate()
        status = await asyncio.to_thread(replay.wait, 30)
    report = Path(stderr_path).read_text().splitlines()
    mode = "strict" if strict else "lenient"
    assert report[0] == (
        f"qmonitor replay: QMP on unix:{path},server=on,wait=off (10 recorded requests, {mode})"
    )
    if strict:
        assert status == 1
        assert report[1] == "qmonitor replay: 2 requests answered, 10 problems:"
        assert report[2] == (
            "  connection 1: expected 'query-version' (request 2 of the recorded connection), "
            "got 'query-kvm'"
        )
    else:
        assert status == 0
        assert report[1:] == [
            "qmonitor replay: 2 requests answered, 1 problem:",
            "  connection 1: no recorded reply to 'query-kvm'",
        ]


def test_the_viewer_shows_a_timeline(recording: Recording) -> None:
    """``qmonitor transcript``: time, connection, direction, the message as sent; no colour
    when not on a terminal; ``--json`` gives the file back."""
    shown = run_qmonitor("transcript", str(recording.transcript))
    assert shown.returncode == 0 and shown.stderr == ""
    lines = shown.stdout.splitlines()
    assert re.fullmatch(r" +0\.\d{6}  #1  ==  connected", lines[0])
    assert re.fullmatch(r" +\d+\.\d{6}  #1  <-  \{\"QMP\": \{\"version\": .*\}", lines[1])
    assert re.fullmatch(r" +\d+\.\d{6}  #1  ->  \{'execute': 'query-status'\}", lines[6])
    (schema,) = [line for line in lines if line.endswith(" more characters)")]
    assert re.fullmatch(
        r' +\d+\.\d{6}  #1  <-  \{"return": \[\{"name": .{450,}\.\.\. \(\d+ more characters\)',
        schema,
    )
    assert re.fullmatch(r" +\d+\.\d{6}  #1  ==  closed by server", lines[-1])
    assert "\033[" not in shown.stdout
    as_json = run_qmonitor("transcript", "--json", str(recording.transcript))
    assert as_json.stdout == recording.transcript.read_text()


def test_the_viewer_colours_on_a_terminal(recording: Recording) -> None:
    """Under a terminal: requests bold, replies green, errors red, events yellow."""
    environment = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    arguments = [*QMONITOR[1:], "transcript", str(recording.transcript)]
    child = pexpect.spawn(QMONITOR[0], arguments, env=environment, timeout=30)
    output = child.read().decode()
    child.close()
    assert "\033[1m" in output and "\033[32m" in output and "\033[31m" in output
    assert re.search(
        r"\033\[33m +\d+\.\d{6}  #1  <-  \{\"timestamp\": .*\"STOP\"\}\033\[0m", output
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["transcript", "/nonexistent.jsonl"], "cannot read /nonexistent.jsonl: No such file"),
        (["replay", "{garbage}", "-qmp", "unix:/tmp/x.sock,server=on"], ":1: neither a qmonitor"),
        (
            [
                "record",
                "--qemu",
                "no-such-qemu-binary",
                "-qmp",
                "unix:{dir}/p.sock,server=on,wait=off",
                "-o",
                "{dir}/t.jsonl",
            ],
            "cannot run no-such-qemu-binary",
        ),
        (
            [
                "record",
                "--qemu",
                "qemu-system-x86_64 -no-such-option",
                "-qmp",
                "unix:{dir}/p.sock,server=on,wait=off",
                "-o",
                "{dir}/t.jsonl",
            ],
            "exited with status 1 before its QMP socket",
        ),
        (
            [
                "record",
                "--qemu",
                "qemu-system-x86_64 'unclosed",
                "-qmp",
                "unix:{dir}/p.sock,server=on,wait=off",
                "-o",
                "{dir}/t.jsonl",
            ],
            "No closing quotation",
        ),
        (["replay", "{replies}", "-qmp", "unix:{dir}/r.sock"], "is not a listening address"),
        (["replay", "{replies}", "-qmp", "vsock:3:4"], "unsupported address 'vsock:3:4'"),
        (["transcript", "{odd}"], ":5: missing response for this command"),
    ],
)
def test_bad_arguments_get_one_line_and_leave_nothing(
    short_tmp: Path, arguments: list[str], message: str
) -> None:
    files = {
        "garbage": "this is not JSON\n",
        "replies": '{"execute": "qmp_capabilities"}\n\n{"return": {}}\n',
        "odd": '{"execute": "qmp_capabilities"}\n\n{"return": {}}\n\n{"execute": "stop"}\n',
    }
    filled = [argument.replace("{dir}", str(short_tmp)) for argument in arguments]
    for name, content in files.items():
        (short_tmp / name).write_text(content)
        filled = [argument.replace(f"{{{name}}}", str(short_tmp / name)) for argument in filled]
    result = run_qmonitor(*filled)
    errors = [line for line in result.stderr.splitlines() if line.startswith("qmonitor")]
    assert result.returncode == 1
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in short_tmp.iterdir()) == sorted(files)


async def test_events_of_pipelined_requests_replay_where_qemu_sent_them(short_tmp: Path) -> None:
    """A client that sends its requests in one write (socat, libvirt): each event is sent
    before the reply of the request QEMU was running, as QEMU sent it, not after the last
    request sent."""
    pipelined = b'{"execute":"qmp_capabilities"}{"execute":"stop"}{"execute":"cont","id":3}\n'

    async def exchange(path: str) -> list[bytes]:
        client = await RawQMPClient.connect_unix(path, read_greeting=False)
        await client.send_raw(pipelined)
        lines = [await client.receive_line() for _ in range(6)]  # greeting, 3 replies, 2 events
        await client.close()
        return lines

    qemu_socket = str(short_tmp / "qemu.sock")
    proxy_socket = str(short_tmp / "proxy.sock")
    transcript = short_tmp / "pipelined.jsonl"
    async with start_qemu(qemu_socket):
        writer = TranscriptWriter.create(str(transcript))
        proxy = RecordingProxy(parse_address(f"unix:{qemu_socket}"), writer)
        await proxy.serve(parse_address(f"unix:{proxy_socket},server=on,wait=off"))
        from_qemu = await exchange(proxy_socket)
        await proxy.close(wait=10)
        writer.commit()
    assert [b"STOP" in line for line in from_qemu] == [False, False, True, False, False, False]
    for strict in (False, True):
        async with ReplayServer(read_transcript(str(transcript)), strict=strict) as replay:
            path = str(short_tmp / f"replay-{strict}.sock")
            await replay.serve(f"unix:{path},server=on,wait=off")
            assert normalised(await exchange(path)) == normalised(from_qemu)
        assert replay.problems() == []


def test_a_transcript_keeps_bytes_that_are_not_utf8_and_split_messages() -> None:
    """The splitter cuts where QEMU's parser does, whatever the reads; a message that is not
    UTF-8 survives a round trip through its line as message-base64."""
    splitter = MessageSplitter()
    assert splitter.receive_data(b'{"execute":"a"}{"exec') == [b'{"execute":"a"}']
    assert splitter.receive_data(b'ute":\'b\'}\r\n \xff{"x"') == [
        b"{\"execute\":'b'}\r\n ",
        b"\xff",
    ]
    assert splitter.remainder() == b'{"x"'
    record = MessageRecord(1.5, 2, "client", b"\xff{}")
    line = record_line(record)
    assert json.loads(line) == {
        "time": 1.5,
        "connection": 2,
        "direction": "client",
        "message-base64": "/3t9",
    }
    assert parse_transcript(header_line() + "\n" + line, "t").records == (record,)


def children_of(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


async def test_a_recorder_stopped_while_qemu_starts_leaves_nothing_behind(
    short_tmp: Path,
) -> None:
    """SIGTERM before QEMU's socket exists: one line, status 1, QEMU (here a stand-in that
    never creates its socket) terminated, no transcript."""
    proxy_socket = short_tmp / "proxy.sock"
    command = [*QMONITOR, "record", "--qemu", "sh -c 'exec sleep 60'"]
    command += ["-qmp", f"unix:{proxy_socket},server=on,wait=off", "-o", str(short_tmp / "t")]
    recorder = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        await wait_until(lambda: bool(children_of(recorder.pid)), timeout=30)
        (starting,) = children_of(recorder.pid)
        recorder.terminate()
        _, stderr = await asyncio.to_thread(recorder.communicate, timeout=30)
    finally:
        recorder.kill()
    assert recorder.returncode == 1
    assert stderr == "qmonitor record: stopped before sh created its QMP socket\n"
    assert not os.path.exists(f"/proc/{starting}")
    assert list(short_tmp.iterdir()) == []
