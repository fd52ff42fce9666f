"""docs/SECURITY.md's copy-paste examples work: its openssl lines make certificates a TLS
listener takes, its command line serves them (admitting alice), its DN one-liner prints the
identity, its example policy parses."""

from __future__ import annotations

import re
import shlex
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from qmonitor import Monitor
from qmonitor.core.session import Identity
from qmonitor.server.listen import Address, start_listener
from qmonitor.server.peer import connection_identity, gated
from qmonitor.server.tls import TlsCredsX509, TlsEndpoint, server_context
from qmonitor.testing import start_server
from tls_util import greeting_or_eof

DOC = Path(__file__).resolve().parent.parent / "docs" / "SECURITY.md"


def block(marker: str) -> str:
    """The fenced block after ``<!-- test: MARKER -->`` in docs/SECURITY.md."""
    match = re.search(rf"<!-- test: {marker} -->\n```\w*\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match is not None, marker
    return match.group(1)


def run_bash(script: str, directory: Path) -> str:
    environment = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("doc")
    run_bash(block("certificates"), directory)
    return directory


async def test_the_documented_certificates_serve_and_identify_alice(made: Path) -> None:
    creds = TlsCredsX509("tls0", str(made / "tls"), TlsEndpoint.SERVER)
    seen: list[Identity] = []

    def admit(transport: object) -> bool:
        seen.append(connection_identity(transport))  # type: ignore[arg-type]
        return True

    monitor = Monitor()
    listener = await start_listener(
        Address("tcp", host="127.0.0.1", port=0),
        gated(monitor.qmp_session_factory, admit),
        tls=server_context(creds),
    )
    monitor.listeners.append(listener)
    context = ssl.create_default_context(cafile=str(made / "ca-cert.pem"))
    context.load_cert_chain(made / "alice-cert.pem", made / "alice-key.pem")
    try:
        greeting = await greeting_or_eof(listener.bound_address.port, context)
    finally:
        await monitor.close()
    assert greeting.startswith(b'{"QMP"')
    assert [identity.tls_dn for identity in seen] == ["O=Example,CN=alice"]


async def test_the_documented_command_line_serves_alice_only(made: Path) -> None:
    """The ``serve`` block, run by bash in the certificates' directory, on a free loopback port
    (the tests bind loopback only), with a unix QMP socket added to know when it listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ready = made / "ready.sock"
    script = block("serve").replace("host=0.0.0.0,port=4444", f"host=127.0.0.1,port={port}")
    script = script.rstrip() + f" -qmp unix:{ready},server=on,wait=off"
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    command = ["bash", "-c", f"export PATH={shlex.quote(path)}; cd {shlex.quote(str(made))}; "
               f"exec {script}"]  # fmt: skip
    alice = ssl.create_default_context(cafile=str(made / "ca-cert.pem"))
    alice.load_cert_chain(made / "alice-cert.pem", made / "alice-key.pem")
    nobody = ssl.create_default_context(cafile=str(made / "ca-cert.pem"))
    async with start_server(command, str(ready)):
        assert (await greeting_or_eof(port, alice)).startswith(b'{"QMP"')
        assert await greeting_or_eof(port, nobody) == b""


def test_the_documented_dn_one_liner_prints_the_identity(made: Path) -> None:
    assert run_bash(block("dn"), made) == "O=Example,CN=alice\n"
