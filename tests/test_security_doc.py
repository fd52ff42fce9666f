"""docs/SECURITY.md's copy-paste examples work, and the outputs it shows are what they print.

Each block marked ``<!-- test: NAME -->`` is run as written, in one directory as the
walk-through says, with two changes: a server binds a free loopback port instead of
``0.0.0.0:4444`` (the tests bind loopback only), and its clients connect to that port. Shown
outputs are compared line by line; what differs from run to run is masked on both sides
(times, client ports, durations, the package's version in the greeting).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import wait_until
from qmonitor.cmdline import parse_command_line
from qmonitor.server.objects import CommandLineObjects
from qmonitor.testing import start_server
from tls_util import greeting_or_eof

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "SECURITY.md"
EXAMPLE_POLICY = ROOT / "docs" / "examples" / "policy.toml"
BIN = Path(sys.executable).parent
PATH = f"{BIN}:/usr/bin:/bin"


def block(marker: str) -> str:
    """The fenced block after ``<!-- test: MARKER -->`` in docs/SECURITY.md."""
    pattern = rf"<!-- test: {re.escape(marker)} -->\n```\w*\n(.*?)```"
    match = re.search(pattern, DOC.read_text(), re.DOTALL)
    assert match is not None, marker
    return match.group(1)


def run_bash(script: str, directory: Path) -> str:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": PATH},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


_VARYING = [
    (re.compile(r'"package": "[^"]*"'), '"package": "..."'),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"), "TIME"),
    (re.compile(r'"peer":"127\.0\.0\.1:\d+"'), '"peer":"127.0.0.1:PORT"'),
    (re.compile(r'"duration_ms":[0-9.e-]+'), '"duration_ms":D'),
]


def masked(text: str) -> str:
    for pattern, replacement in _VARYING:
        text = pattern.sub(replacement, text)
    return text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def on_port(script: str, port: int) -> str:
    """A block, with the walk-through's port 4444 (on any address) made ``port`` on
    loopback."""
    return script.replace("host=0.0.0.0,port=4444", f"host=127.0.0.1,port={port}").replace(
        "localhost:4444", f"localhost:{port}"
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The walk-through's directory after its first step."""
    directory = tmp_path_factory.mktemp("doc")
    run_bash(block("certificates"), directory)
    return directory


def context_of(made: Path, user: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(made / "ca-cert.pem"))
    if user is not None:
        context.load_cert_chain(made / f"{user}-cert.pem", made / f"{user}-key.pem")
    return context


@contextlib.asynccontextmanager
async def serving(made: Path, marker: str, port: int) -> AsyncIterator[None]:
    """The server block ``marker`` run by bash in the directory, on ``port``, with a unix
    QMP socket added to know when it listens (it is bound after the block's monitor)."""
    ready = made / f"ready-{marker}.sock"
    script = on_port(block(marker), port).rstrip() + f" -qmp unix:{ready},server=on,wait=off"
    command = ["bash", "-c", f"export PATH={shlex.quote(PATH)}; cd {shlex.quote(str(made))}; "
               f"exec {script}"]  # fmt: skip
    async with start_server(command, str(ready)):
        yield


async def test_the_walk_through_serves_alice_only_and_its_clients_print_what_is_shown(
    made: Path,
) -> None:
    port = free_port()
    async with serving(made, "serve", port):
        assert (await greeting_or_eof(port, context_of(made, "alice"))).startswith(b'{"QMP"')
        for refused in ("bob", None):
            assert await greeting_or_eof(port, context_of(made, refused)) == b""
        socat = await asyncio.to_thread(run_bash, on_port(block("socat"), port), made)
        (made / "alice.py").write_text(block("python").replace(", 4444)", f", {port})"))
        python = await asyncio.to_thread(run_bash, "python3 alice.py", made)
    assert masked(socat) == masked(block("socat output"))
    assert python == block("python output")


async def test_the_walk_through_roles_and_audit_trail_print_what_is_shown(made: Path) -> None:
    shutil.copy(EXAMPLE_POLICY, made / "policy.toml")
    port = free_port()
    alice = on_port(
        'printf \'%s\\n\' \'{"execute": "qmp_capabilities"}\' \'{"execute": "stop"}\' '
        '\'{"execute": "quit"}\' | socat - OPENSSL:localhost:4444,cafile=ca-cert.pem,'
        "cert=alice-cert.pem,key=alice-key.pem",
        port,
    )
    async with serving(made, "guarded", port):
        bob = await asyncio.to_thread(run_bash, on_port(block("bob"), port), made)
        # socat is gone once bob's replies are in; the server records the session's end a
        # moment later (it sees the hang-up, then its writer thread writes the record).
        expected_records = len(block("audit.log").splitlines())
        await wait_until(
            lambda: len((made / "audit.log").read_text().splitlines()) >= expected_records
        )
        audit = (made / "audit.log").read_text()
        jq = await asyncio.to_thread(run_bash, block("jq"), made)
        operator = await asyncio.to_thread(run_bash, alice, made)
    assert masked(bob) == masked(block("bob output"))
    assert masked(audit) == masked(block("audit.log"))
    assert masked(jq) == masked(block("jq output"))
    messages = [json.loads(line) for line in operator.splitlines()[1:]]
    replies = [message for message in messages if "event" not in message]
    assert [message["event"] for message in messages if "event" in message] == ["STOP"]
    assert replies == [
        {"return": {}},
        {"return": {}},
        {
            "error": {
                "class": "GenericError",
                "desc": "The command 'quit' is not allowed for role 'operator'",
            }
        },
    ]


async def test_the_embedders_example_serves_alice_only(made: Path) -> None:
    port = free_port()
    (made / "serve.py").write_text(block("embedder").replace("4444", str(port)))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "serve.py", cwd=made, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            assert await process.stdout.readline() == f"serving on port {port}\n".encode()
        assert (await greeting_or_eof(port, context_of(made, "alice"))).startswith(b'{"QMP"')
        assert await greeting_or_eof(port, context_of(made, "bob")) == b""
    finally:
        process.kill()
        await process.wait()


def test_the_documented_dn_one_liner_prints_the_identity(made: Path) -> None:
    assert run_bash(block("dn"), made) == "O=Example,CN=alice\n"


def test_each_documented_authz_object_admits_alice_and_refuses_mallory(tmp_path: Path) -> None:
    acl = tmp_path / "acl.json"
    acl.write_text(block("acl.json"))
    text = block("authz").replace("/etc/qmonitor/acl.json", str(acl))
    options = [part for part in shlex.split(text, comments=True) if part != "-object"]
    assert len(options) == 4
    for option in options:
        objects = CommandLineObjects()
        parse_command_line(["-object", option], objects=objects)
        allowed = objects.authorizer.is_allowed
        assert allowed("auth0", "O=Example,CN=alice"), option
        assert not allowed("auth0", "O=Example,CN=mallory"), option


def test_the_documented_policy_is_the_example_file() -> None:
    example = EXAMPLE_POLICY.read_text()
    assert example.endswith(block("policy"))
    assert all(line.startswith("#") or not line for line in example.removesuffix(
        block("policy")).splitlines())  # fmt: skip


async def test_the_documented_path_refusal_is_the_answer(short_tmp: Path) -> None:
    request, reply = block("paths").splitlines()
    socket_path = short_tmp / "qmp.sock"
    command = [
        str(BIN / "qmonitor-system-x86_64"), "-machine", "none", "-display", "none",
        "--state-dir", str(short_tmp / "state"),
        "-qmp", f"unix:{socket_path},server=on,wait=off",
    ]  # fmt: skip
    async with start_server(command, str(socket_path)):
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        try:
            async with asyncio.timeout(20):
                await reader.readline()  # the greeting
                writer.write(b'{"execute": "qmp_capabilities"}\n' + request.encode() + b"\n")
                assert await reader.readline() == b'{"return": {}}\r\n'
                assert (await reader.readline()).decode() == reply + "\r\n"
        finally:
            writer.close()
    assert not Path(json.loads(request)["arguments"]["uri"].removeprefix("file:")).exists()


def test_the_documented_clear_text_refusal_is_what_qmonitor_run_says(tmp_path: Path) -> None:
    typed, said = block("insecure").splitlines()
    result = subprocess.run(
        shlex.split(typed.removeprefix("$ ")),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": PATH, "HOME": str(tmp_path)},
    )
    assert (result.returncode, result.stderr) == (1, said + "\n")
