"""Differential tests: the same bytes to real QEMU 7.2 and to ``qmonitor run``, replies compared.

Both servers run once for the module: ``qemu-system-x86_64 -machine none -name vm0`` and
``python -m qmonitor run -name vm0 -monitor none``, each with QMP on a unix socket. Every corpus
case gets a fresh connection to each server (QEMU serves one client at a time, and a case that
leaves the parser somewhere odd must not spill into the next), is sent as the same chunks to
both, and is followed by a sentinel request ``{"execute":"query-name","id":"sentinel-N"}``; the
lines received up to and including the sentinel's reply are the case's transcript. The sentinel
also proves that the connection still works after whatever the case sent.

Transcripts are compared byte for byte, member order included, after masking what cannot be
deterministic: event timestamps, and the ``package`` string and ``micro`` number of the version.

Deliberate differences (docs/PROTOCOL.md) are named per case, never hidden:

* ``one-error``: QEMU answers one bad message with several errors (it starts afresh after a
  limit or lexical error and parses the rest of the message as new messages); we send exactly
  one. The test checks that QEMU really sends more than one, that we send exactly one with the
  class and text of QEMU's first, and that everything after it is the same.
* ``by-id``: a request with an id may be answered after later requests by us (QEMU answers in
  order); the transcripts are compared as multisets of lines, and we are read until we have
  sent as many lines as QEMU. Our ``human-monitor-command`` is asynchronous, so its replies do
  come after the sentinel's; the synchronous commands keep their order.

Mismatches found and not fixed yet are strict xfails whose reason says what differs.

Not compared: the 2 Mi token and 64 MiB message limits (QEMU takes seconds to minutes to reject
them), ``system_powerdown`` (our machine has a guest that shuts down, ``-machine none`` has
none) and ``query-uuid`` (ours is random). Commands only one side has are not sent.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import pytest_asyncio

from qmonitor.testing import RawQMPClient, command_shape, start_qemu, start_qmonitor

pytestmark = pytest.mark.qemu
module_loop = pytest.mark.asyncio(loop_scope="module")  # the servers live for the module

Expect = Literal["exact", "one-error", "by-id"]

READ_TIMEOUT = 10.0  # for the sentinel's reply; a case that eats the sentinel fails after it
XFAIL_TIMEOUT = 1.0  # the same, for a known mismatch (one may eat the sentinel)
CHUNK_PAUSE = 0.005  # between chunks, so that a server really reads them separately


# -- the two servers ------------------------------------------------------------------------


@dataclass
class Server:
    """One server under test: QEMU or qmonitor, with QMP on ``path``."""

    name: str
    path: str
    process: subprocess.Popen[bytes]
    log: Path | None = None

    def describe(self) -> str:
        if self.log is None or not self.log.exists():
            return self.name
        return f"{self.name} (stderr: {self.log.read_text(errors='replace')[-2000:]!r})"


@dataclass
class Servers:
    qemu: Server
    ours: Server
    commands: dict[str, frozenset[str]]  # query-commands of each, by server name


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers() -> AsyncIterator[Servers]:
    directory = Path(tempfile.mkdtemp(prefix="qm-diff-"))
    try:
        qemu_path = str(directory / "qemu.sock")
        our_path = str(directory / "ours.sock")
        log = directory / "qmonitor.log"
        async with (
            start_qemu(qemu_path, "-name", "vm0") as qemu,
            start_qmonitor(our_path, stderr_path=str(log)) as ours,
        ):
            commands: dict[str, frozenset[str]] = {}
            for name, path in (("qemu", qemu_path), ("qmonitor", our_path)):
                client = await RawQMPClient.connect_unix(path)
                await client.negotiate()
                reply = await client.execute("query-commands")
                await client.close()
                commands[name] = frozenset(entry["name"] for entry in reply["return"])
            yield Servers(
                Server("qemu", qemu_path, qemu), Server("qmonitor", our_path, ours, log), commands
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- talking to a server --------------------------------------------------------------------

_TIMESTAMP = re.compile(rb'"timestamp": \{"seconds": \d+, "microseconds": \d+\}')
_PACKAGE = re.compile(rb'"package": "(?:[^"\\]|\\.)*"')
_MICRO = re.compile(rb'"micro": \d+')


def normalize(line: bytes) -> bytes:
    """Mask what legitimately differs between two runs or two builds."""
    line = _TIMESTAMP.sub(b'"timestamp": {"seconds": S, "microseconds": U}', line)
    line = _PACKAGE.sub(b'"package": "P"', line)
    return _MICRO.sub(b'"micro": M', line)


def loads(line: bytes) -> Any:
    """``json.loads`` with room for the corpus's 1024-deep values."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        return json.loads(line)
    finally:
        sys.setrecursionlimit(limit)


def sentinel_request(tag: str) -> bytes:
    return b'{"execute":"query-name","id":"' + tag.encode() + b'"}'


async def open_client(server: Server, negotiate: bool) -> tuple[RawQMPClient, bytes]:
    """Connect, read the greeting (returned as raw bytes) and negotiate if asked."""
    client = await RawQMPClient.connect_unix(server.path, read_greeting=False)
    greeting = await client.receive_line(READ_TIMEOUT)
    if negotiate:
        await client.send_raw(b'{"execute":"qmp_capabilities"}')
        line = await client.receive_line(READ_TIMEOUT)
        assert line == b'{"return": {}}\r\n', (server.name, line)
    return client, greeting


async def read_until(
    client: RawQMPClient,
    server: Server,
    tag: str,
    min_events: int = 0,
    timeout: float = READ_TIMEOUT,
    min_lines: int = 0,
) -> list[bytes]:
    """Lines up to and including the reply whose id is ``tag``.

    Reading goes on until ``min_events`` events and ``min_lines`` lines have come too (replies
    to requests with ids may come after the sentinel's, from us).
    """
    lines: list[bytes] = []
    seen_sentinel = False
    events = 0
    while not seen_sentinel or events < min_events or len(lines) < min_lines:
        try:
            line = await client.receive_line(timeout)
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            raise AssertionError(
                f"{server.describe()}: no reply to sentinel {tag!r} "
                f"({type(exc).__name__}); got so far: {lines!r}"
            ) from None
        lines.append(line)
        try:
            message = loads(line)
        except ValueError:  # QEMU writes 1e400 as inf, which is not JSON
            continue
        if "event" in message:
            events += 1
        elif message.get("id") == tag:
            seen_sentinel = True
    return lines


async def transcript(
    server: Server,
    chunks: Sequence[bytes],
    *,
    tag: str,
    negotiate: bool = True,
    min_events: int = 0,
    pause: float = CHUNK_PAUSE,
    timeout: float = READ_TIMEOUT,
    min_lines: int = 0,
) -> list[bytes]:
    """Send ``chunks`` on a fresh connection, then the sentinel; return the lines received."""
    client, _ = await open_client(server, negotiate)
    try:
        for index, chunk in enumerate(chunks):
            if index and pause:
                await asyncio.sleep(pause)
            await client.send_raw(chunk)
        await client.send_raw(sentinel_request(tag))
        return await read_until(client, server, tag, min_events, timeout, min_lines)
    finally:
        await client.close()


def check_line_format(lines: Sequence[bytes], who: str) -> None:
    """Every message is one line of ASCII ending in CRLF (WIRE.md, QMP framing).

    Not necessarily JSON: QEMU writes an infinite double as ``inf``, and so must we.
    """
    for line in lines:
        assert line.endswith(b"\r\n") and b"\r\n" not in line[:-2], (who, line)
        assert all(byte < 0x80 for byte in line), (who, line)


def parsed_error(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    assert set(message) <= {"error", "id"}, line
    error = message["error"]
    assert isinstance(error, dict)
    return error


# -- the corpus -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Chunks sent on one connection; ``negotiate`` leaves negotiation mode first."""

    name: str
    chunks: tuple[bytes, ...]
    negotiate: bool = True
    expect: Expect = "exact"
    min_events: int = 0
    xfail: str = ""  # a mismatch reported to the lead, with what is wrong

    def param(self) -> Any:
        marks = [pytest.mark.xfail(strict=True, reason=self.xfail)] if self.xfail else []
        return pytest.param(self, id=self.name, marks=marks)


def case(
    name: str,
    *chunks: bytes,
    negotiate: bool = True,
    expect: Expect = "exact",
    min_events: int = 0,
    xfail: str = "",
) -> Case:
    return Case(name, chunks, negotiate, expect, min_events, xfail)


def q(command: str, request_id: str | None = None, **arguments: Any) -> bytes:
    """A compact request as qemu.qmp sends it (no newline)."""
    message: dict[str, Any] = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    if request_id is not None:
        message["id"] = request_id
    return json.dumps(message, separators=(",", ":")).encode()


NEGOTIATION = [
    case("neg-query-status", b'{"execute":"query-status"}', negotiate=False),
    case("neg-unknown-with-id", b'{"execute":"nope","id":"x"}', negotiate=False),
    case(
        "neg-capabilities-with-id",
        b'{"execute":"qmp_capabilities","id":"neg"}',
        b'{"execute":"query-status","id":1}',
        negotiate=False,
    ),
    case(
        "neg-capabilities-empty-enable",
        b'{"execute":"qmp_capabilities","arguments":{"enable":[]}}',
        b'{"execute":"query-status"}',
        negotiate=False,
    ),
    case(
        "neg-capabilities-oob",
        b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}',
        b'{"exec-oob":"query-status","id":3}',
        b'{"execute":"query-name","exec-oob":"query-name","id":4}',
        b'{"exec-oob":"query-name","execute":"query-name","id":5}',
        b'{"exec-oob":true}',
        b'{"execute":"query-status","id":6}',
        negotiate=False,
    ),
    case(
        "neg-capabilities-enable-not-array",
        b'{"execute":"qmp_capabilities","arguments":{"enable":"oob"}}',
        b'{"execute":"query-status"}',
        negotiate=False,
    ),
    case(
        "neg-capabilities-enable-unknown",
        b'{"execute":"qmp_capabilities","arguments":{"enable":["foo"]}}',
        b'{"execute":"query-status"}',
        negotiate=False,
    ),
    case(
        "neg-capabilities-extra-argument",
        b'{"execute":"qmp_capabilities","arguments":{"foo":1}}',
        b'{"execute":"query-status"}',
        negotiate=False,
    ),
    case("neg-exec-oob", b'{"exec-oob":"qmp_capabilities","id":1}', negotiate=False),
    # With oob on, only QEMU's allow-oob commands run out of band (yank, query-yank here).
    case(
        "oob-only-where-qemu-allows-it",
        b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}',
        b'{"exec-oob":"query-version","id":1}',
        b'{"exec-oob":"qmp_capabilities","id":2}',
        b'{"exec-oob":"query-commands","id":3}',
        b'{"exec-oob":"query-qmp-schema","id":4}',
        b'{"exec-oob":"query-version"}',
        b'{"exec-oob":"qmp_capabilities","arguments":{"enable":["oob"]}}',
        b'{"exec-oob":"query-version","arguments":{"bogus":1},"id":5}',
        b'{"exec-oob":"query-status","id":6}',
        b'{"exec-oob":"nope","id":7}',
        b'{"exec-oob":"query-yank","id":8}',
        b'{"exec-oob":"query-yank","arguments":{"bogus":1},"id":9}',
        b'{"exec-oob":"yank","arguments":{"instances":[]},"id":10}',
        b'{"exec-oob":"yank","arguments":{"instances":[{"type":"migration"}]},"id":11}',
        negotiate=False,
    ),
    case(
        "neg-capabilities-twice",
        b'{"execute":"qmp_capabilities"}',
        b'{"execute":"qmp_capabilities","id":2}',
        negotiate=False,
    ),
    case("neg-parse-error", b'{ "execute": }', negotiate=False),
    case("neg-not-an-object", b"[]", negotiate=False),
    case("neg-lacks-execute", b'{"id":7}', negotiate=False),
]

# Mismatches reported to the lead; each is a strict xfail, so a fix turns it into a failure
# that says "remove the xfail".

IDS = [
    case("id-string", q("query-status", "a string")),
    case("id-int", b'{"execute":"query-status","id":42}'),
    case("id-negative", b'{"execute":"query-status","id":-7}'),
    case("id-null", b'{"execute":"query-status","id":null}'),
    case("id-true", b'{"execute":"query-status","id":true}'),
    case("id-object", b'{"execute":"query-status","id":{"a":[1,2.5,null],"b":{"c":"d"}}}'),
    case("id-object-order", b'{"execute":"query-name","id":{"id":1,"error":2,"return":3}}'),
    case("id-array", b'{"execute":"query-status","id":[1,"two",[3],{}]}'),
    case("id-empty-containers", b'{"execute":"query-name","id":[[],{},""]}'),
    case("id-float", b'{"execute":"query-status","id":1.5}'),
    case("id-float-integral", b'{"execute":"query-version","id":1.0}'),
    case("id-floats", b'{"execute":"query-name","id":[0.1,1e2,-0.0,1E-7,2.5e+300,-3.25]}'),
    case(
        "id-float-digits",
        b'{"execute":"query-name","id":[0.30000000000000004,123456789.123456789,1e21,1e-5]}',
    ),
    case(
        "id-float-extremes",
        b'{"execute":"query-name","id":[1.7976931348623157e308,5e-324,2.2250738585072014e-308]}',
    ),
    case("id-infinity", b'{"execute":"query-name","id":[1e400,-1e400,1e-400]}'),
    case("id-negative-zero-int", b'{"execute":"query-name","id":-0}'),
    case("id-int64-min", b'{"execute":"query-name","id":-9223372036854775808}'),
    case("id-int64-max", b'{"execute":"query-name","id":9223372036854775807}'),
    case("id-uint64", b'{"execute":"query-name","id":[9223372036854775808,18446744073709551615]}'),
    case("id-beyond-uint64", b'{"execute":"query-name","id":18446744073709551616}'),
    case("id-below-int64", b'{"execute":"query-name","id":-9223372036854775809}'),
    case("id-huge-int", b'{"execute":"query-name","id":123456789012345678901234567890}'),
    case("id-utf8", b'{"execute":"query-name","id":"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"}'),
    case("id-unicode-escapes", b'{"execute":"query-name","id":"\\u00e9\\u20AC\\ud83d\\ude00"}'),
    case("id-private-use", b'{"execute":"query-name","id":"\xee\x80\x80\\uE000"}'),
    case("id-short-escapes", b'{"execute":"query-name","id":"\\/\\b\\f\\n\\r\\t\\"\\\\"}'),
    case("id-escaped-apostrophe", b'{"execute":"query-name","id":"\\\'"}'),
    case("id-del", b'{"execute":"query-name","id":"\x7f"}'),
    case("id-escaped-nul", b'{"execute":"query-name","id":"\\u0000"}'),
    case("id-escaped-controls", b'{"execute":"query-name","id":"\\u0001\\u001f\\u007f"}'),
    case("id-single-quoted", b"{'execute':'query-name','id':'it\\'s \"q\"'}"),
    case("id-single-quoted-escapes", b"{'execute':'query-name','id':'\\\"\\''}"),
    case("id-single-quoted-utf8", b"{'execute':'query-status','id':'\xc3\xa9'}"),
    case("id-nested-1023", b'{"execute":"query-name","id":' + b"[" * 1023 + b"]" * 1023 + b"}"),
    case("id-with-spaces", b' { "execute" : "query-name" , "id" : [ 1 , 2 ] } '),
    case("escaped-member-name", b'{"exec\\u0075te":"query-name","id":1}'),
]

COMMANDS = [
    case("query-status", b'{"execute":"query-status"}'),
    case("query-name", b'{"execute":"query-name"}'),
    case("query-version", b'{"execute":"query-version","id":"v"}'),
    case("empty-arguments", b'{"execute":"query-name","arguments":{},"id":1}'),
    case("members-reordered", b'{"id":1,"arguments":{},"execute":"query-name"}'),
    case(
        "stop-cont",
        q("stop"),
        q("query-status", "paused"),
        q("stop", "again"),
        q("cont", "cont"),
        q("query-status", "running"),
        q("cont"),
        min_events=2,
    ),
    case("system-reset", q("system_reset", "r"), min_events=1),
    # Not compared: system_powerdown (QEMU -machine none has no guest to shut down, our machine
    # has one) and query-uuid (QEMU's is all zeros without -uuid, ours is random).
]


def hmp(command_line: str, request_id: str | None = None) -> bytes:
    return q("human-monitor-command", request_id, **{"command-line": command_line})


# Commands both servers have, beyond run control: argument checks with QEMU's texts, HMP
# passthrough, jobs and migration while idle. Our human-monitor-command is asynchronous, so with
# ids its replies may come after later ones (the by-id difference); without ids they may not.
SHARED_COMMANDS = [
    case("hmp-info-status", hmp("info status")),
    case("hmp-info-name", hmp("info name")),
    case("hmp-unknown-command", hmp("xyz")),
    case("hmp-unknown-info", hmp("info bogus")),
    case("hmp-empty-line", hmp("", "h"), expect="by-id"),
    case("hmp-info-status-with-id", hmp("info status", "h"), expect="by-id"),
    case("hmp-stop-cont", hmp("stop"), hmp("info status"), hmp("cont"), min_events=2),
    case(
        "hmp-stop-cont-with-ids",
        hmp("stop", "a"),
        hmp("info status", "b"),
        hmp("cont", "c"),
        expect="by-id",
        min_events=2,
    ),
    case("hmp-missing-argument", b'{"execute":"human-monitor-command","id":1}'),
    case(
        "hmp-wrong-type",
        b'{"execute":"human-monitor-command","arguments":{"command-line":1}}',
    ),
    case(
        "hmp-cpu-index-wrong-type",
        b'{"execute":"human-monitor-command",'
        b'"arguments":{"command-line":"info status","cpu-index":"x"}}',
    ),
    case("query-jobs", b'{"execute":"query-jobs"}'),
    case("job-cancel-missing-id", b'{"execute":"job-cancel"}'),
    case("job-cancel-unknown", b'{"execute":"job-cancel","arguments":{"id":"nope"}}'),
    case("job-dismiss-unknown", b'{"execute":"job-dismiss","arguments":{"id":"nope"}}'),
    case("job-cancel-wrong-type", b'{"execute":"job-cancel","arguments":{"id":5}}'),
    case("snapshot-save-missing", b'{"execute":"snapshot-save"}'),
    case("query-migrate-idle", b'{"execute":"query-migrate"}'),
    case("migrate-cancel-idle", b'{"execute":"migrate_cancel"}'),
    case("migrate-missing-uri", b'{"execute":"migrate"}'),
    case("migrate-incoming-missing-uri", b'{"execute":"migrate-incoming"}'),
    case(
        "migrate-set-parameters-unexpected",
        b'{"execute":"migrate-set-parameters","arguments":{"bogus":1}}',
    ),
    case("migrate-set-capabilities-missing", b'{"execute":"migrate-set-capabilities"}'),
    case(
        "migrate-set-capabilities-not-array",
        b'{"execute":"migrate-set-capabilities","arguments":{"capabilities":{}}}',
    ),
    case(
        "migrate-set-capabilities-bad-enum",
        b'{"execute":"migrate-set-capabilities",'
        b'"arguments":{"capabilities":[{"capability":"nope","state":true}]}}',
    ),
    case(
        "uint64-argument-string",
        b'{"execute":"migrate-set-parameters","arguments":{"downtime-limit":"x"}}',
    ),
    case(
        "uint64-argument-bool",
        b'{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":true}}',
    ),
    case(
        "uint64-argument-float",
        b'{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":1.5}}',
    ),
    case(
        "uint64-argument-negative",
        b'{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":-1}}',
    ),
    # Both have the QMP socket's chardev, compat_monitor0, and no migration.
    case("query-yank", q("query-yank"), q("query-yank", "y")),
    case("yank-nothing", q("yank", instances=[])),
    case(
        "yank-unknown-instances",
        q("yank", "m", instances=[{"type": "migration"}]),
        q("yank", instances=[{"type": "chardev", "id": "nope"}]),
        q("yank", instances=[{"type": "block-node", "node-name": "nbd0"}]),
        q("yank", instances=[{"type": "chardev", "id": "compat_monitor1"}]),
    ),
    # All or nothing: this connection's own chardev is not yanked, so the sentinel is answered.
    case(
        "yank-one-unknown-yanks-nothing",
        q("yank", instances=[{"type": "chardev", "id": "compat_monitor0"}, {"type": "migration"}]),
    ),
    case(
        "yank-bad-arguments",
        q("yank"),
        q("yank", instances={}),
        q("yank", instances=[{"id": "compat_monitor0"}]),
        q("yank", instances=[{"type": "bogus"}]),
        q("yank", instances=[{"type": "chardev"}]),
        q("yank", instances=[{"type": "migration", "id": "x"}]),
        q("yank", instances=[{"type": "chardev", "id": "compat_monitor0", "node-name": "n"}]),
    ),
]


MALFORMED = [
    case("array", b"[]"),
    case("number", b"1"),
    case("string", b'"s"'),
    case("single-quoted-string", b"'abc'"),
    case("null", b"null"),
    case("true", b"true"),
    case("empty-object", b"{}"),
    case("lacks-execute-with-id", b'{"id":"x"}'),
    case("lacks-execute-id-null", b'{"id":null}'),
    case("execute-not-string", b'{"execute": true}'),
    case("execute-not-string-with-id", b'{"execute":true,"id":"t"}'),
    case("execute-array", b'{"execute":["query-name"]}'),
    case("execute-null-id-null", b'{"execute":null,"id":null}'),
    case("arguments-array", b'{"execute":"query-name","arguments":[]}'),
    case("arguments-array-with-id", b'{"execute":"query-name","arguments":[],"id":2}'),
    case("arguments-null", b'{"execute":"query-name","arguments":null}'),
    case("arguments-before-execute", b'{"arguments":1,"execute":2}'),
    case("unexpected-member", b'{"execute":"x","foo":1}'),
    case("unexpected-member-with-id", b'{"execute":"x","foo":1,"id":[1]}'),
    case("unexpected-members-order", b'{"zzz":1,"execute":"query-name","aaa":2,"id":3}'),
    case("unexpected-member-first", b'{"execute":1,"arguments":2,"x":3}'),
    case("unexpected-member-and-unknown", b'{"execute":"nope","b":1}'),
    case("unexpected-member-utf8", b'{"execute":"query-name","\xc3\xa9":1}'),
    case("unknown-command", b'{"execute":"nope"}'),
    case("unknown-command-with-id", b'{"execute":"nope","id":"x"}'),
    case("unknown-command-utf8", b'{"execute":"\xc3\xa9\xf0\x9f\x98\x80"}'),
    case("empty-command", b'{"execute":""}'),
    case("exec-oob-not-enabled", b'{"exec-oob":"query-status","id":3}'),
    case("exec-oob-unknown-not-enabled", b'{"exec-oob":"x"}'),
    case("extra-argument", b'{"execute":"query-name","arguments":{"bogus":1}}'),
    case("extra-argument-with-id", b'{"execute":"query-version","arguments":{"x":1},"id":1}'),
    case("extra-argument-utf8", b'{"execute":"query-name","arguments":{"\\u00e9":1}}'),
    case(
        "extra-argument-deep",
        b'{"execute":"query-name","arguments":{"a":' + b"[" * 1000 + b"]" * 1000 + b"}}",
    ),
    case("capabilities-in-command-mode", b'{"execute":"qmp_capabilities","id":1}'),
    # In command mode qmp_capabilities is an ordinary command: its arguments are checked first.
    case(
        "capabilities-in-command-mode-bad-arguments",
        b'{"execute":"qmp_capabilities","arguments":{"foo":1},"id":1}',
        b'{"execute":"qmp_capabilities","arguments":{"enable":"oob"}}',
        b'{"execute":"qmp_capabilities","arguments":{"enable":["bogus"]},"id":2}',
        b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":3}',
    ),
]

PARSE_ERRORS = [
    case("expecting-value", b'{ "execute": }'),
    case("open-close-mismatch", b"{]"),
    case("xff-in-object", b"{\xff"),
    case("x01-in-object", b"{\x01"),
    case("stray-close-brace", b"}"),
    case("stray-close-bracket", b"]"),
    case("unterminated-string-newline", b'"unterminated\n'),
    case("unterminated-string-in-request", b'{"execute": "abc\n'),
    case("duplicate-key", b'{"execute":"query-name","execute":"x"}'),
    case("duplicate-argument", b'{"execute":"query-name","arguments":{"a":1,"a":2}}'),
    case("trailing-comma-object", b'{"execute":"query-name",}'),
    case("trailing-comma-array", b"[1,]"),
    case("missing-colon", b'{"execute" "query-name"}'),
    case("missing-comma", b'{"execute":"query-name" "id":1}'),
    case("empty-member", b"{,}"),
    case("key-not-string", b'{1:"query-name"}'),
    case("key-without-value", b'{"execute"}'),
    case("extra-close-brace", b'{"execute":"query-name"}}'),
    case("extra-close-bracket", b'{"execute":"query-name"}]'),
    case("bad-keyword", b'{"execute":"query-name","id":tru}'),
    case("zero-exponent", b'{"execute":"query-name","id":0e5}'),
    case("zero-exponent-in-array", b"[0e5]"),
    case("trailing-dot", b'{"execute":"query-name","id":1.}'),
    case("bare-minus", b'{"execute":"query-name","id":-}'),
    case("exponent-without-digits", b'{"execute":"query-name","id":1e}'),
    case("trailing-dot-in-array", b"[1.]"),
    case("invalid-escape", b'{"execute":"query-name","id":"a\\x"}'),
    case("short-unicode-escape", b'{"execute":"query-name","id":"\\u12"}'),
    case("lone-high-surrogate", b'{"execute":"query-name","id":"\\ud800"}'),
    case("lone-low-surrogate", b'{"execute":"query-name","id":"\\udc00"}'),
    case("high-surrogate-then-letter", b'{"execute":"query-name","id":"\\ud83d\\u0041"}'),
    case("noncharacter-escape", b'{"execute":"query-name","id":"\\ufffe"}'),
    case("noncharacter-fdd0", b'{"execute":"query-name","id":"\\ufdd0"}'),
    case("noncharacter-utf8", b'{"execute":"query-name","id":"\xef\xbf\xbe"}'),
    case("noncharacter-astral-utf8", b'{"execute":"query-name","id":"\xf0\x9f\xbf\xbf"}'),
    case("invalid-utf8", b'{"execute":"query-name","id":"\xc3("}'),
    case("truncated-utf8", b'{"execute":"query-name","id":"\xc3"}'),
    case("overlong-nul", b'{"execute":"query-name","id":"\xc0\x80"}'),
    case("overlong-slash", b'{"execute":"query-name","id":"\xc0\xaf"}'),
    case("encoded-surrogate", b'{"execute":"query-name","id":"\xed\xa0\x80"}'),
    case("beyond-unicode", b'{"execute":"query-name","id":"\xf4\x90\x80\x80"}'),
    # A control character ends recovery at once in both servers, so the '}' after it is a
    # second error in both.
    case("raw-control-in-string", b'{"execute":"query-name","id":"a\x1fb"}'),
    case("raw-tab-in-string", b'{"execute":"query-name","id":"a\tb"}'),
    case("formfeed-between-tokens", b'{"execute":\x0c"query-name"}'),
    case("nul-between-tokens", b'{"execute":\x00}'),
    case("nul-alone", b"\x00"),
    case("xfe", b"\xfe"),
    case("nesting-1024", b"[" * 1024 + b"]" * 1024),
    case("nesting-1024-objects", b'{"a":' * 1024 + b"1" + b"}" * 1024),
    # QEMU starts afresh after a limit error, so a request after an over-deep message that
    # never closes is answered (the sentinel, or one with an id).
    case("nesting-1025-never-closed", b"[" * 1025),
    case(
        "nesting-1025-then-request",
        b"[" * 1025,
        b'{"execute":"query-status","id":"after-deep"}',
    ),
]

# One bad message, several errors from QEMU, exactly one from us (docs/PROTOCOL.md).
ONE_ERROR = [
    # QEMU: "JSON nesting depth limit exceeded", then one "expecting value" per re-lexed ']'.
    case("nesting-1025", b"[" * 1025 + b"]" * 1025, expect="one-error"),
    case(
        "nesting-1025-in-request",
        b'{"execute":"query-name","id":' + b"[" * 1024 + b"]" * 1024 + b"}",
        expect="one-error",
    ),
    # QEMU: the limit error, "QMP input must be a JSON object" for the 475 deep list that
    # follows, then an "expecting value" for each of the last 1025 closers.
    case("nesting-1500", b"[" * 1500 + b"]" * 1500, expect="one-error"),
    case("nesting-1025-objects", b'{"a":' * 1025 + b"1" + b"}" * 1025, expect="one-error"),
    # QEMU: a limit error per 1025 levels; the second is in the rest of the bad message.
    case("nesting-2050-never-closed", b"[" * 2050, expect="one-error"),
    # The rest of a message cut by a lexical error goes over the limit; QEMU starts afresh there.
    case("garbage-then-nesting-1025", b'{"a": @, ' + b"[" * 1025, expect="one-error"),
    # QEMU: "stray 'X'", then recovery stops at the closing '}' (or ',' ']' ...) of the message,
    # which it reports again ("expecting value", "QMP input must be a JSON object", ...).
    case("capitalised-keyword", b'{"execute":"query-name","id":True}', expect="one-error"),
    case("leading-zero", b'{"execute":"query-name","id":01}', expect="one-error"),
    case("leading-zeros-in-array", b'{"execute":"query-name","id":[1,00]}', expect="one-error"),
    case("plus-sign", b'{"execute":"query-name","id":+1}', expect="one-error"),
    case("leading-dot", b'{"execute":"query-name","id":.5}', expect="one-error"),
    case("capital-e-after-zero", b'{"execute":"query-name","id":[0E+2,1]}', expect="one-error"),
    case("percent", b'{"execute":"query-name","id":%d}', expect="one-error"),
    case("garbage-then-close", b'{"execute": @ garbage }', expect="one-error"),
    # QEMU even dispatches the fragments: "arguments" and {} get errors of their own.
    case("fragments-of-bad-message", b'{"execute": @, "arguments": {}}', expect="one-error"),
    # Not in the corpus: the 2 Mi token and 64 MiB limits. QEMU needs about 8 s to reject 2 Mi
    # tokens and about 5 minutes to reject 64 MiB (its lexer copies the growing token), far too
    # slow for a test; tests/test_stream.py covers our side of them.
]

RESYNC = [
    case("x01-alone", b"\x01"),
    case("xff-alone", b"\xff"),
    case("x01-mid-request", b'{"execute": "query-name", "arguments"', b"\x01"),
    case("xff-mid-string", b'{"execute": "query-na', b"\xff"),
    case("xff-mid-arguments", b'{"execute":"query-name","arguments":{"a":[1,', b"\xff"),
    case("newline-mid-string", b'{"execute": "query-na', b"\n"),
    case("garbage-until-newline", b'{"execute": @ garbage garbage\n'),
    case("x01-then-request", b'{"execute":', b'\x01{"execute":"query-status","id":"after"}'),
    case("xff-after-garbage", b'{"execute": @ garbage ', b'\xff{"execute":"query-name","id":9}'),
    case("garbage-until-brace", b'{"execute": @ garbage ', b'{"execute":"query-name","id":9}'),
]

# A bad byte inside an open object or array, then a line end: QEMU's recovery stops at the line
# end and everything after it is new input, reported piece by piece, by us too (one error per
# bad message does not reach past the line end, docs/PROTOCOL.md).
LINE_END = [
    case("line-end-then-close-brace", b'{"a": @\n}'),
    case("crlf-then-close-brace", b'{"a": @', b"\r\n}"),
    case(
        "line-end-then-rest-of-object",
        b'{"a": @',
        b'\n, "b"]{"execute":"query-status","id":"kept"}',
    ),
    case(
        "line-end-then-request-as-element",
        b'[1, @\n, {"execute":"query-status","id":"element"}]',
    ),
    case("line-end-in-nested-array", b'{"execute":"query-name","arguments":{"a":[1, @\n2]}}'),
    case(
        "line-end-in-nested-object",
        b'{"a": {"b": @\n}}{"execute":"query-name","id":"after"}',
    ),
]

PIPELINED = [
    case(
        "pipelined-no-ids",
        b'{"execute":"query-status"}{"execute":"query-name"}{"execute":"query-version"}',
    ),
    case(
        "pipelined-with-errors",
        b'{"execute":"query-name"}[]{"execute":"nope"}{ "execute": }'
        b'{"execute":"query-status"}\xff{"execute":"query-name","arguments":{"x":1}}'
        b'{"execute":"query-name"}',
    ),
    case(
        "pipelined-whitespace",
        b'\n\n {"execute":"query-name"}\r\n\t{"execute":"query-name","id":1}\n  ',
    ),
    case("whitespace-only", b"\r\n\t "),
    case(
        "pipelined-stop-cont",
        q("stop") + q("query-status") + q("cont") + q("query-status"),
        min_events=2,
    ),
    case("pipelined-50", b'{"execute":"query-status"}' * 50),
    case(
        "pipelined-ids",
        b"".join(q("query-status" if n % 2 else "query-name", f"p{n}") for n in range(20)),
        expect="by-id",
    ),
    case(
        "pipelined-scalars",
        b'1 2 "three" null true [4] {"execute":"query-name"} 5',
    ),
]

CORPUS = (
    NEGOTIATION
    + IDS
    + COMMANDS
    + SHARED_COMMANDS
    + MALFORMED
    + PARSE_ERRORS
    + ONE_ERROR
    + RESYNC
    + LINE_END
    + PIPELINED
)


def test_corpus_names_unique() -> None:
    names = [c.name for c in CORPUS]
    assert len(names) == len(set(names))


# -- comparing transcripts -----------------------------------------------------------------


def shown(chunks: Sequence[bytes], limit: int = 300) -> str:
    """The chunks of a case for an assertion message (the big ones cut short)."""
    return " + ".join(
        repr(chunk) if len(chunk) <= limit else f"{chunk[:limit]!r}...({len(chunk)} bytes)"
        for chunk in chunks
    )


def compare(item: Case, theirs: list[bytes], ours: list[bytes]) -> None:
    check_line_format(ours, "qmonitor")
    expected = [normalize(line) for line in theirs]
    got = [normalize(line) for line in ours]
    sent = shown(item.chunks)
    if item.expect == "exact":
        assert got == expected, f"{item.name}: {sent}"
    elif item.expect == "by-id":
        assert sorted(got) == sorted(expected), f"{item.name}: {sent}"
    else:
        # QEMU: several errors for the one bad message, then the sentinel's reply.
        assert len(expected) > 2, f"{item.name}: QEMU no longer sends several errors: {theirs!r}"
        assert all("error" in json.loads(line) for line in expected[:-1]), theirs
        assert len(got) == 2, f"{item.name}: want exactly one error, got {ours!r}"
        mine = parsed_error(got[0])
        first = parsed_error(expected[0])
        assert mine == first, f"{item.name}: QEMU's first error {theirs[0]!r}, ours {ours[0]!r}"
        assert got[0] == expected[0]
        assert got[1] == expected[-1]


@module_loop
@pytest.mark.parametrize("item", [c.param() for c in CORPUS])
async def test_corpus(servers: Servers, item: Case) -> None:
    tag = f"sentinel-{item.name}"
    timeout = XFAIL_TIMEOUT if item.xfail else READ_TIMEOUT
    options: dict[str, Any] = {"tag": tag, "negotiate": item.negotiate, "timeout": timeout}
    theirs = await transcript(servers.qemu, item.chunks, min_events=item.min_events, **options)
    # As many lines from us: replies to requests with ids may come after the sentinel's.
    min_lines = len(theirs) if item.expect != "one-error" else 0
    ours = await transcript(servers.ours, item.chunks, min_lines=min_lines, **options)
    compare(item, theirs, ours)


# -- greeting and version ----------------------------------------------------------------------


@module_loop
async def test_greeting(servers: Servers) -> None:
    (qemu_client, theirs), (our_client, ours) = await asyncio.gather(
        open_client(servers.qemu, False), open_client(servers.ours, False)
    )
    await asyncio.gather(qemu_client.close(), our_client.close())
    check_line_format([ours], "qmonitor")
    their_version = json.loads(theirs)["QMP"]["version"]
    our_version = json.loads(ours)["QMP"]["version"]
    assert our_version["qemu"]["major"] == their_version["qemu"]["major"] == 7
    assert our_version["qemu"]["minor"] == their_version["qemu"]["minor"] == 2
    assert isinstance(our_version["qemu"]["micro"], int)
    assert isinstance(our_version["package"], str)
    assert normalize(ours) == normalize(theirs)


@module_loop
async def test_query_version_matches_greeting(servers: Servers) -> None:
    for server in (servers.qemu, servers.ours):
        client, greeting = await open_client(server, True)
        try:
            await client.send_raw(b'{"execute":"query-version"}')
            reply = json.loads(await client.receive_line(READ_TIMEOUT))
        finally:
            await client.close()
        assert reply == {"return": json.loads(greeting)["QMP"]["version"]}, server.name


# -- chunking -----------------------------------------------------------------------------------

SPLIT_REQUEST = b'{"execute":"query-status","id":["\xc3\xa9\xf0\x9f\x98\x80",-1.5e3,null,\'q\']}'


async def split_transcript(server: Server, request: bytes) -> list[bytes]:
    """``request`` sent in two writes at every split point, on one connection."""
    client, _ = await open_client(server, True)
    lines: list[bytes] = []
    try:
        for split in range(1, len(request)):
            await client.send_raw(request[:split])
            await asyncio.sleep(0.001)
            await client.send_raw(request[split:])
            lines.append(await client.receive_line(READ_TIMEOUT))
        await client.send_raw(sentinel_request("split-end"))
        lines.extend(await read_until(client, server, "split-end"))
    finally:
        await client.close()
    return lines


@module_loop
async def test_split_at_every_byte(servers: Servers) -> None:
    assert 50 <= len(SPLIT_REQUEST) <= 70
    theirs, ours = await asyncio.gather(
        split_transcript(servers.qemu, SPLIT_REQUEST), split_transcript(servers.ours, SPLIT_REQUEST)
    )
    assert len(theirs) == len(SPLIT_REQUEST)  # one reply per split, and the sentinel's
    assert len(set(theirs[:-1])) == 1
    check_line_format(ours, "qmonitor")
    assert ours == theirs


BYTE_STREAMS = {
    "valid": b"{\"execute\":\"query-name\"}  {'execute':'query-status','id':\"\xc3\xa9\"}\n"
    b'{"execute":"query-version","id":[1.25,{"k":null}]}',
    "malformed": b'{"execute":"query-name"}{\xff{"execute":"nope","id":1}[]{"a" @ x\n'
    b'{"execute":"query-status","id":{"n":-0}}"str\n{"execute":"query-name",}',
}


async def byte_by_byte_transcript(server: Server, stream: bytes, tag: str) -> list[bytes]:
    client, _ = await open_client(server, True)
    try:
        for index in range(len(stream)):
            await client.send_raw(stream[index : index + 1])
            await asyncio.sleep(0.0005)
        await client.send_raw(sentinel_request(tag))
        return await read_until(client, server, tag)
    finally:
        await client.close()


@module_loop
@pytest.mark.parametrize("stream", list(BYTE_STREAMS))
async def test_byte_by_byte(servers: Servers, stream: str) -> None:
    data = BYTE_STREAMS[stream]
    tag = f"bytes-{stream}"
    theirs, ours = await asyncio.gather(
        byte_by_byte_transcript(servers.qemu, data, tag),
        byte_by_byte_transcript(servers.ours, data, tag),
    )
    check_line_format(ours, "qmonitor")
    assert [normalize(line) for line in ours] == [normalize(line) for line in theirs]


# -- introspection -------------------------------------------------------------------------


async def schema_of(server: Server) -> list[dict[str, Any]]:
    client, _ = await open_client(server, True)
    try:
        await client.send_raw(b'{"execute":"query-qmp-schema"}')
        entries: list[dict[str, Any]] = json.loads(await client.receive_line(READ_TIMEOUT))[
            "return"
        ]
        return entries
    finally:
        await client.close()


@module_loop
async def test_allow_oob_exactly_where_qemu_has_it(servers: Servers) -> None:
    """Of the commands both have, the same ones allow OOB; of ours, only our extensions
    (``__io.github.qmonitor_*``) besides; and yank's types are QEMU's."""
    theirs, ours = await schema_of(servers.qemu), await schema_of(servers.ours)

    def oob_commands(entries: list[dict[str, Any]]) -> set[str]:
        return {e["name"] for e in entries if e["meta-type"] == "command" and e.get("allow-oob")}

    shared = servers.commands["qemu"] & servers.commands["qmonitor"]
    assert {"yank", "query-yank"} <= shared
    assert oob_commands(ours) & shared == oob_commands(theirs) & shared == {"yank", "query-yank"}
    assert all(name.startswith("__") for name in oob_commands(ours) - shared)
    for command in ("yank", "query-yank"):
        assert command_shape(ours, command) == command_shape(theirs, command)


async def test_query_yank_names_the_monitors_as_qemu(short_tmp: Path) -> None:
    """Chardevs are counted in command-line order, ``-monitor none`` not, ``stdio`` without a
    yank instance; the same options give the same ``query-yank`` from both."""
    replies = []
    for name, start in (("qemu", start_qemu), ("qmonitor", start_qmonitor)):
        path = str(short_tmp / f"{name}.qmp")
        extra = (
            "-monitor", "stdio",
            "-monitor", f"unix:{short_tmp}/{name}.hmp,server=on,wait=off",
            "-qmp", f"unix:{short_tmp}/{name}-2.qmp,server=on,wait=off",
        )  # fmt: skip
        async with start(path, *extra):
            client = await RawQMPClient.connect_unix(path)
            await client.negotiate()
            replies.append(await client.execute("query-yank"))
            await client.close()
    assert (
        replies[0]
        == replies[1]
        == {
            "return": [
                {"type": "chardev", "id": "compat_monitor0"},
                {"type": "chardev", "id": "compat_monitor2"},
                {"type": "chardev", "id": "compat_monitor3"},
            ]
        }
    )


_EXECUTE = re.compile(rb"""["']exec(?:ute|-oob)["']\s*:\s*["']([a-z_-]+)["']""")
NOT_A_COMMAND = {"nope", "x"}  # the corpus's unknown commands


@module_loop
async def test_corpus_commands_exist_in_both(servers: Servers) -> None:
    """Every command the corpus runs exists in both servers (so no reply is CommandNotFound
    by accident), and the corpus runs the run-control, HMP, job and migration commands."""
    used = {
        match.decode()
        for item in CORPUS
        for chunk in item.chunks
        for match in _EXECUTE.findall(chunk)
    } - NOT_A_COMMAND
    assert {"query-status", "stop", "cont", "human-monitor-command", "migrate"} <= used
    assert used <= servers.commands["qemu"], used - servers.commands["qemu"]
    assert used <= servers.commands["qmonitor"], used - servers.commands["qmonitor"]
