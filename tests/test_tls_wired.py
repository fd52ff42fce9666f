"""TLS and authz objects from the command line (issue 9 items 1-2), on the real processes.

``qmonitor-system-x86_64`` and QEMU 7.2 itself (tests marked ``qemu``) are started with the same
``-object tls-creds-x509``/``authz-*`` and ``-chardev socket,...,tls-creds=,tls-authz=``
options and the same certificates, and must admit and refuse the same clients: the real
``qemu.qmp`` client with an admitted certificate runs commands; a refused identity, a client
without a certificate and one with a certificate from another CA are disconnected before the
greeting. Bad references get QEMU's errors, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from qmonitor.launch import read_command_line, standin_launch
from qmonitor.server.exposure import insecure_tcp_error
from qmonitor.testing import start_server
from tls_util import ALICE_SUBJECT, BOB_SUBJECT, Pki, greeting_or_eof, make_pki
from x509util import CertificateAuthority

STANDIN = str(Path(sys.executable).parent / "qmonitor-system-x86_64")
QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
BINARIES = [
    pytest.param(QEMU, id="qemu", marks=pytest.mark.qemu),
    pytest.param(STANDIN, id="qmonitor"),
]
BASE = ["-machine", "none", "-display", "none", "-nodefaults"]

AUTHZ_SIMPLE = "authz-simple,id=auth0,identity=O=Example,,CN=alice"
AUTHZ_LIST_JSON = json.dumps(
    {
        "qom-type": "authz-list",
        "id": "auth0",
        "policy": "deny",
        "rules": [
            {"match": "O=Example,CN=bob", "policy": "deny"},
            {"match": "O=Example,CN=*", "policy": "allow", "format": "glob"},
        ],
    }
)
AUTHZ_LIST_DOTTED = (
    "authz-list,id=auth0,policy=deny,rules.0.match=O=Example,,CN=bob,rules.0.policy=deny,"
    "rules.1.match=O=Example,,CN=*,rules.1.policy=allow,rules.1.format=glob"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def clients(pki: Pki) -> dict[str, ssl.SSLContext]:
    """Client contexts: alice and bob (the CA's), nobody (no certificate), foreign (another
    CA's certificate with alice's subject)."""
    foreign = CertificateAuthority("another CA").issue(ALICE_SUBJECT, server=False)
    return {
        "alice": pki.client_context("alice", pki.authority.issue(ALICE_SUBJECT, server=False)),
        "bob": pki.client_context("bob", pki.authority.issue(BOB_SUBJECT, server=False)),
        "nobody": pki.client_context(None),
        "foreign": pki.client_context("foreign", foreign),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tls_options(pki: Pki, authz: str | None, *, verify_peer: str = "on") -> list[str]:
    """The ``-object`` options: the server credentials, and an authz object if given."""
    options = [
        "-object",
        f"tls-creds-x509,id=tls0,dir={pki.server_dir},endpoint=server,verify-peer={verify_peer}",
    ]
    return options + (["-object", authz] if authz is not None else [])


@contextlib.asynccontextmanager
async def emulator(
    binary: str, directory: Path, monitor: list[str], objects: list[str]
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``binary`` with ``objects`` and the ``monitor`` options, then a unix QMP socket: once
    that socket exists, every monitor before it listens (both serve them in order)."""
    ready = str(directory / f"ready-{os.path.basename(binary)}.sock")
    command = [binary, *BASE, *objects, *monitor, "-qmp", f"unix:{ready},server=on,wait=off"]
    stderr = str(directory / f"{os.path.basename(binary)}.log")
    async with start_server(command, ready, stderr_path=stderr) as process:
        yield process


def tls_chardev(port: int, authz: str | None = "auth0", mode: str = "control") -> list[str]:
    authz_option = f",tls-authz={authz}" if authz is not None else ""
    return [
        "-chardev",
        f"socket,id=mon0,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=tls0"
        + authz_option,
        "-mon",
        f"chardev=mon0,mode={mode}",
    ]


async def admitted(port: int, clients: dict[str, ssl.SSLContext]) -> dict[str, bool]:
    """Which clients get the QMP greeting (the others are closed before it)."""
    return {
        label: (await greeting_or_eof(port, context)).startswith(b'{"QMP"')
        for label, context in clients.items()
    }


async def query_status_over_tls(port: int, context: ssl.SSLContext) -> object:
    """The real qemu.qmp client: connect with ``context``, negotiate, run a query.

    Python 3.11's SSL transport never lets qemu.qmp's own ``disconnect()`` return (see
    tests/test_tls.py), so the connection is ended by the server's ``quit``.
    """
    client = QMPClient("alice")
    await client.connect(("127.0.0.1", port), ssl=context)
    try:
        return (await client.execute("query-status"))["status"]  # type: ignore[index]
    finally:
        with contextlib.suppress(Exception):
            await client.execute("quit")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await client.disconnect()


QEMU_WAITS_FOR_MORE_BYTES = """QEMU 7.2 (Debian 7.2.22) over a TLS chardev leaves a request
unanswered until more bytes arrive after it (its first qmp_capabilities gets no reply until the
next request is sent), so qemu.qmp's connect() never completes against it; the commands are run
on qmonitor only (docs/SECURITY.md)."""

ONLY_ALICE = {"alice": True, "bob": False, "nobody": False, "foreign": False}


@pytest.mark.parametrize("binary", BINARIES)
@pytest.mark.parametrize(
    "authz", [AUTHZ_SIMPLE, AUTHZ_LIST_JSON], ids=["authz-simple", "authz-list-json"]
)
async def test_the_same_clients_are_admitted_as_by_qemu(
    binary: str, authz: str, pki: Pki, clients: dict[str, ssl.SSLContext], short_tmp: Path
) -> None:
    port = free_port()
    async with emulator(binary, short_tmp, tls_chardev(port), tls_options(pki, authz)):
        assert await admitted(port, clients) == ONLY_ALICE
        if binary == STANDIN:  # see QEMU_WAITS_FOR_MORE_BYTES
            assert await query_status_over_tls(port, clients["alice"]) == "running"


@pytest.mark.parametrize("binary", BINARIES)
async def test_the_human_monitor_over_tls(
    binary: str, pki: Pki, clients: dict[str, ssl.SSLContext], short_tmp: Path
) -> None:
    port = free_port()
    monitor = tls_chardev(port, mode="readline")
    async with emulator(binary, short_tmp, monitor, tls_options(pki, AUTHZ_SIMPLE)):
        assert await greeting_or_eof(port, clients["bob"]) == b""
        assert await greeting_or_eof(port, clients["nobody"]) == b""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=clients["alice"], server_hostname="127.0.0.1"
        )
        try:
            banner = await asyncio.wait_for(reader.readline(), 20)
            assert banner.startswith(b"QEMU ")
            assert banner.endswith(b" monitor - type 'help' for more information\r\n")
            if binary != STANDIN:  # see QEMU_WAITS_FOR_MORE_BYTES
                return
            writer.write(b"info status\r\n")
            answer = await asyncio.wait_for(reader.readuntil(b"VM status: running\r\n"), 20)
            assert answer.endswith(b"VM status: running\r\n")
        finally:
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()


@pytest.mark.parametrize("binary", BINARIES)
async def test_the_compat_qmp_address_takes_tls_creds_and_tls_authz(
    binary: str, pki: Pki, clients: dict[str, ssl.SSLContext], short_tmp: Path
) -> None:
    """``-qmp tcp:HOST:PORT,...,tls-creds=,tls-authz=``: QEMU 7.2 reads the options after the
    address as the chardev's (chardev/char.c ``qemu_chr_parse_compat``)."""
    port = free_port()
    monitor = ["-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off,tls-creds=tls0,tls-authz=auth0"]
    async with emulator(binary, short_tmp, monitor, tls_options(pki, AUTHZ_SIMPLE)):
        assert await admitted(port, clients) == ONLY_ALICE


@pytest.mark.parametrize("binary", BINARIES)
@pytest.mark.parametrize("authz_id", ["nonesuch", "tls0"], ids=["missing", "not-an-authz"])
async def test_a_tls_authz_naming_no_authz_object_refuses_every_client(
    binary: str, authz_id: str, pki: Pki, clients: dict[str, ssl.SSLContext], short_tmp: Path
) -> None:
    """QEMU starts, and refuses each client at its handshake (authz/base.c: "Cannot find
    QAuthZ object ID", "Object '%s' is not a QAuthZ subclass")."""
    port = free_port()
    async with emulator(binary, short_tmp, tls_chardev(port, authz_id), tls_options(pki, None)):
        assert not any((await admitted(port, clients)).values())


@pytest.mark.parametrize("binary", BINARIES)
async def test_verify_peer_off_admits_every_tls_client_without_asking_the_authz(
    binary: str, pki: Pki, clients: dict[str, ssl.SSLContext], short_tmp: Path
) -> None:
    port = free_port()
    objects = tls_options(pki, AUTHZ_SIMPLE, verify_peer="off")
    async with emulator(binary, short_tmp, tls_chardev(port), objects):
        assert await admitted(port, clients) == dict.fromkeys(clients, True)


async def test_authz_list_in_the_dotted_form(
    pki: Pki, clients: dict[str, ssl.SSLContext], short_tmp: Path
) -> None:
    """QEMU 7.2 takes rules in the JSON form only; qmonitor reads dotted keys too."""
    port = free_port()
    async with emulator(STANDIN, short_tmp, tls_chardev(port), tls_options(pki, AUTHZ_LIST_DOTTED)):
        assert await admitted(port, clients) == ONLY_ALICE


def write_atomically(path: Path, rules: list[dict[str, str]]) -> None:
    staging = path.with_suffix(".new")
    staging.write_text(json.dumps({"policy": "deny", "rules": rules}))
    staging.rename(path)


@pytest.mark.parametrize("qom_type", ["authz-list-file", "authz-listfile"])
async def test_authz_list_file_is_read_again_when_it_changes(
    qom_type: str, pki: Pki, clients: dict[str, ssl.SSLContext], short_tmp: Path
) -> None:
    """QEMU 7.2 can create neither spelling (tests/test_security_qemu.py); qmonitor takes both."""
    acl = short_tmp / "acl.json"
    write_atomically(acl, [{"match": "O=Example,CN=alice", "policy": "allow"}])
    port = free_port()
    authz = f"{qom_type},id=auth0,filename={acl},refresh=on"
    async with emulator(STANDIN, short_tmp, tls_chardev(port), tls_options(pki, authz)):
        assert await admitted(port, clients) == ONLY_ALICE
        write_atomically(acl, [{"match": "O=Example,CN=b*", "policy": "allow", "format": "glob"}])
        assert await admitted(port, clients) == {
            "alice": False,
            "bob": True,
            "nobody": False,
            "foreign": False,
        }


async def test_a_stalled_handshake_does_not_delay_other_clients(
    pki: Pki, clients: dict[str, ssl.SSLContext], short_tmp: Path
) -> None:
    """Not QEMU's: its chardev serves one connection at a time, so a stalled client holds it
    (docs/SECURITY.md)."""
    port = free_port()
    async with emulator(STANDIN, short_tmp, tls_chardev(port), tls_options(pki, AUTHZ_SIMPLE)):
        stalled_reader, stalled_writer = await asyncio.open_connection("127.0.0.1", port)
        stalled_writer.write(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
        await stalled_writer.drain()
        for _ in range(3):
            assert (await greeting_or_eof(port, clients["alice"])).startswith(b'{"QMP"')
        assert not stalled_reader.at_eof()
        stalled_writer.close()


async def test_a_tls_session_leaves_stderr_as_quiet_as_qemus(
    pki: Pki, clients: dict[str, ssl.SSLContext], short_tmp: Path
) -> None:
    """A TLS client hanging up ends its session (QMP and HMP) without asyncio's warning on
    stderr."""
    port, hmp_port = free_port(), free_port()
    monitors = [
        *tls_chardev(port, None),
        *("-monitor", f"tcp:127.0.0.1:{hmp_port},server=on,wait=off,tls-creds=tls0"),
    ]
    async with emulator(STANDIN, short_tmp, monitors, tls_options(pki, None)) as process:
        assert (await greeting_or_eof(port, clients["alice"])).startswith(b'{"QMP"')
        assert (await greeting_or_eof(hmp_port, clients["alice"])).startswith(b"QEMU ")
        process.terminate()
        await asyncio.to_thread(process.wait, 30)
    assert (short_tmp / "qmonitor-system-x86_64.log").read_text() == (
        "qmonitor-system-x86_64: terminating on signal 15\n"
    )


# --- errors ---------------------------------------------------------------------------------

REFUSED = [
    # -object errors, found while the objects are made (crypto/tlscreds.c, authz/*.c)
    ["-object", "tls-creds-x509,id=tls0,dir={tmp}/none,endpoint=server"],
    ["-object", "tls-creds-x509,id=tls0,endpoint=server"],
    ["-object", "authz-simple,id=auth0"],
    ["-object", '{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"maybe"}]}'],
    # references (chardev/char-socket.c qmp_chardev_open_socket)
    ["-chardev", "socket,id=c,host=127.0.0.1,port=0,server=on,wait=off,tls-creds=tls9"],
    ["-object", "secret,id=s,data=x", "-chardev", "socket,id=c,host=127.0.0.1,port=0,"
     "server=on,wait=off,tls-creds=s"],
    ["-object", "tls-creds-x509,id=tls0,dir={pki}", "-chardev",
     "socket,id=c,host=127.0.0.1,port=0,server=on,wait=off,tls-creds=tls0"],
    ["-object", "tls-creds-x509,id=tls0,dir={pki},endpoint=server",
     "-qmp", "unix:{tmp}/q,server=on,wait=off,tls-creds=tls0"],
    ["-chardev", "socket,id=c,host=127.0.0.1,port=0,server=on,wait=off,tls-authz=a"],
]  # fmt: skip


@pytest.mark.qemu
@pytest.mark.parametrize("arguments", REFUSED, ids=lambda arguments: " ".join(arguments)[:60])
def test_bad_objects_and_references_are_qemus_errors(
    arguments: list[str], pki: Pki, short_tmp: Path
) -> None:
    given = [
        item.replace("{tmp}", str(short_tmp)).replace("{pki}", str(pki.server_dir))
        for item in arguments
    ]
    errors = []
    for binary in (QEMU, STANDIN):
        result = subprocess.run(
            [binary, *BASE, *given],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 1
        errors.append(result.stderr.replace(os.path.basename(binary), "PROGRAM"))
    assert errors[0] == errors[1]


@pytest.mark.parametrize(
    ("chardev", "line"),
    [
        (
            "socket,id=mon0,host=127.0.0.1,port=1,tls-creds=tls0",
            "chardev 'mon0': tls-creds=tls0: TLS on a monitor that connects out (server=off) "
            "is not supported by qmonitor",
        ),
        (
            "socket,id=mon0,host=127.0.0.1,port=1,server=on,wait=off,tls-creds=psk0",
            "chardev 'mon0': tls-creds=psk0: tls-creds-psk credentials are not supported by "
            "qmonitor; use tls-creds-x509",
        ),
    ],
    ids=["connecting-out", "psk"],
)
def test_what_qmonitor_does_not_do_is_refused_in_one_line(
    chardev: str, line: str, pki: Pki, short_tmp: Path
) -> None:
    client_dir = short_tmp / "client"
    client_dir.mkdir()
    (client_dir / "ca-cert.pem").write_bytes(pki.authority.pem)
    objects = [
        *("-object", f"tls-creds-x509,id=tls0,dir={client_dir},endpoint=client"),
        *("-object", f"tls-creds-psk,id=psk0,dir={short_tmp},endpoint=server"),
    ]
    command = [STANDIN, *BASE, *objects, "-chardev", chardev, "-mon", "chardev=mon0"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 1
    assert result.stderr == f"qmonitor-system-x86_64: {line}\n"


def test_a_tls_monitor_beyond_loopback_needs_no_allow_insecure_tcp(pki: Pki) -> None:
    """The plan carries the chardev's TLS, which the exposure check takes (binding 0.0.0.0
    is left to docs/SECURITY.md's example: the tests bind loopback only)."""
    command_line, objects = read_command_line(
        [
            *tls_options(pki, None),
            *(
                "-chardev",
                "socket,id=mon0,host=0.0.0.0,port=4444,server=on,wait=off,tls-creds=tls0",
            ),
            *("-mon", "chardev=mon0,mode=control"),
            *("-chardev", "socket,id=mon1,host=0.0.0.0,port=4445,server=on,wait=off"),
            *("-mon", "chardev=mon1,mode=control"),
        ]
    )
    secured, plain = standin_launch(command_line, objects).plan.monitors
    assert secured.address is not None and plain.address is not None
    assert insecure_tcp_error(secured.address, tls=secured.tls is not None) is None
    assert insecure_tcp_error(plain.address, tls=plain.tls is not None) is not None


# --- qmonitor run's "connect with:" line for a TLS monitor ----------------------------------


@contextlib.asynccontextmanager
async def qmonitor_run(arguments: list[str], state: Path) -> AsyncIterator[list[str]]:
    """``qmonitor run`` with ``arguments``; yields its start-up lines once it has said them."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qmonitor", "run", "-m", "16M", "--dirty-rate", "0",
        "--state-dir", str(state), *arguments,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not lines or not lines[-1].startswith("qmonitor: snapshots in "):
                line = await process.stderr.readline()
                assert line, f"qmonitor run ended: {lines}"
                lines.append(line.decode().rstrip("\n"))
        yield lines
    finally:
        process.kill()
        await process.wait()


def connect_lines(lines: list[str]) -> dict[str, str]:
    """{socket line: the command after it} of the start-up lines."""
    prefix = "qmonitor: connect with: "
    return {
        where: command.removeprefix(prefix)
        for where, command in itertools.pairwise(lines)
        if command.startswith(prefix)
    }


def read_until(descriptor: int, marker: bytes) -> bytes:
    """Bytes from a pty until ``marker`` (select() waits for each chunk; 20 s in all)."""
    deadline = time.monotonic() + 20
    seen = b""
    while marker not in seen:
        ready, _, _ = select.select([descriptor], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {marker!r} in {seen!r}"
        seen += os.read(descriptor, 4096)
    return seen


async def test_qmonitor_run_says_how_to_connect_over_tls_and_that_works(
    pki: Pki, short_tmp: Path
) -> None:
    """The line names socat's TLS client with the server's CA and QEMU's names for a client's
    certificate and key; pasted into a shell where those files are alice's, it connects: QMP
    answers, and the human monitor too (socat's ``echo=0,icanon=0`` need a terminal)."""
    qmp_port, hmp_port = free_port(), free_port()
    arguments = [
        *tls_options(pki, AUTHZ_SIMPLE),
        *("-qmp", f"tcp:127.0.0.1:{qmp_port},server=on,wait=off,tls-creds=tls0,tls-authz=auth0"),
        *("-monitor", f"tcp:127.0.0.1:{hmp_port},server=on,wait=off,tls-creds=tls0"),
    ]
    client_dir = short_tmp / "client"
    client_dir.mkdir()
    pki.authority.issue(ALICE_SUBJECT, server=False).write(
        client_dir / "client-cert.pem", client_dir / "client-key.pem"
    )
    async with qmonitor_run(arguments, short_tmp / "state") as lines:
        commands = connect_lines(lines)
        ca = pki.server_dir / "ca-cert.pem"
        assert commands[f"qmonitor: QMP socket 127.0.0.1:{qmp_port} (TLS)"] == (
            f"socat - OPENSSL:127.0.0.1:{qmp_port},cafile={ca},cert=client-cert.pem,"
            "key=client-key.pem  # cert=, key=: your certificate, signed by that CA, and its key"
        )
        qmp = await asyncio.create_subprocess_shell(
            commands[f"qmonitor: QMP socket 127.0.0.1:{qmp_port} (TLS)"],
            cwd=client_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert qmp.stdin is not None and qmp.stdout is not None
        async with asyncio.timeout(20):
            assert (await qmp.stdout.readline()).startswith(b'{"QMP": ')
            qmp.stdin.write(b'{"execute": "qmp_capabilities"}\n{"execute": "query-status"}\n')
            assert json.loads(await qmp.stdout.readline()) == {"return": {}}
            status = json.loads(await qmp.stdout.readline())
            qmp.stdin.close()
            await qmp.wait()
        assert status["return"]["status"] == "running"

        master, slave = os.openpty()
        hmp = subprocess.Popen(
            commands[f"qmonitor: HMP socket 127.0.0.1:{hmp_port} (TLS)"],
            shell=True, cwd=client_dir, stdin=slave, stdout=slave, stderr=subprocess.PIPE,
        )  # fmt: skip
        os.close(slave)
        try:
            await asyncio.to_thread(read_until, master, b"(qemu) ")
            os.write(master, b"info status\r")
            assert b"VM status: running" in await asyncio.to_thread(
                read_until, master, b"VM status: running"
            )
        finally:
            hmp.kill()
            hmp.wait()
            assert hmp.stderr is not None
            hmp.stderr.close()
            os.close(master)


async def test_roles_over_tls_identities_in_the_human_monitor(
    pki: Pki, clients: dict[str, ssl.SSLContext], short_tmp: Path
) -> None:
    """The stand-in with docs/examples/policy.toml and a TLS human monitor: bob (an observer
    by the default role) runs ``info status`` but not ``stop``, which runs nothing; ``help``
    lists only what his role may run."""
    policy = Path(__file__).resolve().parent.parent / "docs" / "examples" / "policy.toml"
    port = free_port()
    monitor = tls_chardev(port, mode="readline")
    options = [
        *tls_options(pki, AUTHZ_LIST_JSON.replace("bob", "mallory")),
        "--policy",
        str(policy),
    ]
    async with emulator(STANDIN, short_tmp, monitor, options):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=clients["bob"], server_hostname="127.0.0.1"
        )
        try:
            async with asyncio.timeout(20):
                await reader.readuntil(b"(qemu) ")
                writer.write(b"info status\rstop\rinfo status\rhelp\r")  # Enter: CR
                seen = b""
                while seen.count(b"(qemu) ") < 4:
                    seen += await reader.readuntil(b"(qemu) ")
        finally:
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()
    status, stop, status_after, help_text = seen.split(b"(qemu) ")[:4]
    assert status.endswith(b"VM status: running\r\n")
    assert stop.endswith(b"Error: The command 'stop' is not allowed for role 'observer'\r\n")
    assert status_after.endswith(b"VM status: running\r\n")
    assert b"info [subcommand]" in help_text and b"\r\nstop " not in help_text
