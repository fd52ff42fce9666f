"""TLS on TCP monitors (issue 9 items 1-2): certificates the tests make, real sockets,
the real ``qemu.qmp`` client; authz objects admitting and refusing client identities."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import NameOID
from qemu.qmp import QMPClient

from qmonitor import Monitor
from qmonitor.cmdline.objects import ObjectError
from qmonitor.core.session import Identity
from qmonitor.security.authz import (
    AuthzList,
    AuthzListFile,
    AuthzSimple,
    ListFormat,
    ListPolicy,
    ListRule,
)
from qmonitor.server.authorize import Authorizer
from qmonitor.server.listen import Address, Listener, start_listener
from qmonitor.server.peer import connection_identity, tls_authz_gate
from qmonitor.server.qmp_session import QMPSession
from qmonitor.server.tls import (
    TlsCredsX509,
    TlsEndpoint,
    client_context,
    server_context,
    tls_creds_from_properties,
)
from tls_util import (
    ALICE_SUBJECT,
    BOB_SUBJECT,
    Pki,
    greeting_or_eof,
    make_pki,
    server_creds,
    tls_monitor,
)
from x509util import CertificateAuthority, name


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def port_of(listener: Listener) -> int:
    return listener.bound_address.port


async def test_the_qemu_qmp_client_with_a_client_certificate_runs_commands(pki: Pki) -> None:
    """qemu.qmp connects with an SSLContext, negotiates and runs commands.

    The server side hangs up first: qemu.qmp's own ``disconnect()`` flushes by setting the
    write limits to 0, and Python 3.11's SSL transport then pauses writing with nothing
    buffered and never resumes (asyncio/sslproto.py ``_control_app_writing``: ``size >=
    high``), so a client-side disconnect would wait forever, whatever the server.
    """
    context = pki.client_context("alice", pki.authority.issue(ALICE_SUBJECT, server=False))
    client = QMPClient("alice")
    async with tls_monitor(pki) as (monitor, listener):
        await client.connect(("127.0.0.1", port_of(listener)), ssl=context)
        assert await client.execute("query-version") == monitor.version
        commands: Any = await client.execute("query-commands")
        assert {"name": "query-version"} in commands
    with contextlib.suppress(Exception):
        await client.disconnect()


async def test_clients_without_a_certificate_the_ca_signed_are_refused(pki: Pki) -> None:
    foreign = CertificateAuthority("another CA").issue(ALICE_SUBJECT, server=False)
    async with tls_monitor(pki) as (_, listener):
        port = port_of(listener)
        good = pki.client_context("alice", pki.authority.issue(ALICE_SUBJECT, server=False))
        assert (await greeting_or_eof(port, good)).startswith(b'{"QMP"')
        assert await greeting_or_eof(port, pki.client_context("foreign", foreign)) == b""
        assert await greeting_or_eof(port, pki.client_context(None)) == b""


async def test_an_optional_dh_params_pem_is_loaded_and_serves(pki: Pki, tmp_path: Path) -> None:
    """QEMU's optional ``dh-params.pem`` (here an RFC 7919 group, as ``openssl genpkey
    -genparam -algorithm DH -pkeyopt dh_param:ffdhe2048`` writes it) is taken."""
    directory = tmp_path / "tls"
    shutil.copytree(pki.server_dir, directory)
    subprocess.run(
        ["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
         "dh_param:ffdhe2048", "-out", str(directory / "dh-params.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = server_context(TlsCredsX509("t", str(directory), TlsEndpoint.SERVER))
    monitor = Monitor("dh")
    listener = await start_listener(
        Address("tcp", host="127.0.0.1", port=0), monitor.qmp_session_factory, tls=context
    )
    monitor.listeners.append(listener)
    alice = pki.client_context("alice", pki.authority.issue(ALICE_SUBJECT, server=False))
    try:
        assert (await greeting_or_eof(port_of(listener), alice)).startswith(b'{"QMP"')
    finally:
        await monitor.close()


async def test_a_plain_tcp_client_gets_no_greeting(pki: Pki) -> None:
    async with tls_monitor(pki) as (_, listener):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(listener))
        writer.write(b'{"execute": "qmp_capabilities"}\n')
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()


async def test_a_stalled_handshake_neither_delays_others_nor_stays(pki: Pki) -> None:
    context = pki.client_context("alice", pki.authority.issue(ALICE_SUBJECT, server=False))
    async with tls_monitor(pki, handshake_timeout=1.0) as (_, listener):
        port = port_of(listener)
        stalled_reader, stalled_writer = await asyncio.open_connection("127.0.0.1", port)
        stalled_writer.write(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
        for _ in range(3):
            assert (await greeting_or_eof(port, context)).startswith(b'{"QMP"')
        assert not stalled_reader.at_eof()
        # the stalled one is dropped once its handshake is past the limit
        assert await asyncio.wait_for(stalled_reader.read(), 20) == b""
        stalled_writer.close()


async def test_a_session_is_made_only_once_the_handshake_is_done(pki: Pki) -> None:
    """The loop's SSL protocol asks for the application's protocol when it accepts; a chardev
    keeps each session it made until the session's connection is lost, so one made for a
    handshake that then fails (never connected, never lost) would be kept for ever."""
    monitor = Monitor("tls")
    sessions: list[QMPSession] = []

    def make_session() -> QMPSession:
        sessions.append(monitor.qmp_session_factory())
        return sessions[-1]

    listener = await start_listener(
        Address("tcp", host="127.0.0.1", port=0),
        make_session,
        tls=server_context(server_creds(pki)),
    )
    monitor.listeners.append(listener)
    try:
        port = port_of(listener)
        foreign = CertificateAuthority("another CA").issue(ALICE_SUBJECT, server=False)
        assert await greeting_or_eof(port, pki.client_context("foreign", foreign)) == b""
        assert await greeting_or_eof(port, pki.client_context(None)) == b""  # no certificate
        good = pki.client_context("alice", pki.authority.issue(ALICE_SUBJECT, server=False))
        assert (await greeting_or_eof(port, good)).startswith(b'{"QMP"')
        assert len(sessions) == 1
    finally:
        await monitor.close()


async def test_verify_peer_off_admits_clients_without_a_certificate(pki: Pki) -> None:
    async with tls_monitor(pki, verify_peer=False) as (_, listener):
        greeting = await greeting_or_eof(port_of(listener), pki.client_context(None))
        assert greeting.startswith(b'{"QMP"')


async def test_the_connection_identity_is_the_client_certificates_dn(pki: Pki) -> None:
    seen: list[Identity] = []

    def record(transport: asyncio.BaseTransport) -> bool:
        seen.append(connection_identity(transport))
        return True

    context = pki.client_context("alice", pki.authority.issue(ALICE_SUBJECT, server=False))
    async with tls_monitor(pki, record) as (_, listener):
        assert (await greeting_or_eof(port_of(listener), context)).startswith(b'{"QMP"')
    (identity,) = seen
    assert identity.transport == "tcp"
    assert identity.tls_dn == "O=Example,CN=alice"
    assert identity.peer.startswith("127.0.0.1:")
    assert identity.label == "O=Example,CN=alice"


async def test_a_client_context_from_client_credentials_connects_and_checks_the_server(
    pki: Pki, tmp_path: Path
) -> None:
    """``endpoint=client`` (a monitor connecting out): ca-cert, client-cert, client-key."""
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    (client_dir / "ca-cert.pem").write_bytes(pki.authority.pem)
    pki.authority.issue(ALICE_SUBJECT, server=False).write(
        client_dir / "client-cert.pem", client_dir / "client-key.pem"
    )
    creds = TlsCredsX509("c", str(client_dir), TlsEndpoint.CLIENT)
    async with tls_monitor(pki) as (_, listener):
        port = port_of(listener)
        assert (await greeting_or_eof(port, client_context(creds))).startswith(b'{"QMP"')
        # the server's certificate names 127.0.0.1 and localhost, not this:
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(creds), server_hostname="example.org"
            )


# --- authz objects on a TLS listener ------------------------------------------------------


def issued_contexts(pki: Pki, *subjects: object) -> list[ssl.SSLContext]:
    return [
        pki.client_context(f"c{index}", pki.authority.issue(subject, server=False))  # type: ignore[arg-type]
        for index, subject in enumerate(subjects)
    ]


async def admitted(
    pki: Pki, authorizer: Authorizer, authz_id: str, contexts: list[ssl.SSLContext]
) -> list[bool]:
    refused: list[Identity] = []
    gate = tls_authz_gate(authorizer, authz_id, refused.append)
    async with tls_monitor(pki, gate) as (_, listener):
        port = port_of(listener)
        results = [
            (await greeting_or_eof(port, context)).startswith(b'{"QMP"') for context in contexts
        ]
    assert len(refused) == results.count(False)
    return results


CAROL_SUBJECT = name((NameOID.ORGANIZATION_NAME, "Other"), (NameOID.COMMON_NAME, "carol"))


async def test_authz_simple_admits_its_identity_only(pki: Pki) -> None:
    authorizer = Authorizer()
    authorizer.add(AuthzSimple("auth0", "O=Example,CN=alice"))
    contexts = issued_contexts(pki, ALICE_SUBJECT, BOB_SUBJECT)
    assert await admitted(pki, authorizer, "auth0", contexts) == [True, False]


async def test_authz_list_exact_and_glob_rules_decide_in_order(pki: Pki) -> None:
    authorizer = Authorizer()
    authorizer.add(
        AuthzList(
            "auth0",
            ListPolicy.DENY,
            (
                ListRule("O=Example,CN=bob", ListPolicy.DENY),
                ListRule("O=Example,CN=*", ListPolicy.ALLOW, ListFormat.GLOB),
            ),
        )
    )
    contexts = issued_contexts(pki, ALICE_SUBJECT, BOB_SUBJECT, CAROL_SUBJECT)
    assert await admitted(pki, authorizer, "auth0", contexts) == [True, False, False]


async def test_an_unknown_authz_id_refuses_everyone(pki: Pki) -> None:
    contexts = issued_contexts(pki, ALICE_SUBJECT)
    assert await admitted(pki, Authorizer(), "nope", contexts) == [False]


def write_atomically(path: Path, document: object) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, path)


@pytest.fixture
def list_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "acl.json"
    write_atomically(
        path, {"policy": "deny", "rules": [{"match": "O=Example,CN=alice", "policy": "allow"}]}
    )
    yield path


async def test_authz_list_file_rereads_the_file_when_it_changes(pki: Pki, list_file: Path) -> None:
    authorizer = Authorizer()
    authorizer.add(AuthzListFile("auth0", str(list_file), refresh=True))
    alice, bob = issued_contexts(pki, ALICE_SUBJECT, BOB_SUBJECT)
    assert await admitted(pki, authorizer, "auth0", [alice, bob]) == [True, False]
    write_atomically(
        list_file,
        {"policy": "allow", "rules": [{"match": "*alice", "policy": "deny", "format": "glob"}]},
    )
    assert await admitted(pki, authorizer, "auth0", [alice, bob]) == [False, True]
    list_file.write_text('{"policy": "allow", ')  # a broken file refuses everyone
    assert await admitted(pki, authorizer, "auth0", [alice, bob]) == [False, False]
    list_file.write_text('{"policy": "allow"}')  # rewritten in place: read again
    assert await admitted(pki, authorizer, "auth0", [alice, bob]) == [True, True]
    list_file.unlink()  # deleted: the rules last loaded stay
    assert await admitted(pki, authorizer, "auth0", [alice, bob]) == [True, True]


async def test_authz_list_file_without_refresh_keeps_what_it_read(
    pki: Pki, list_file: Path
) -> None:
    authorizer = Authorizer()
    authorizer.add(AuthzListFile("auth0", str(list_file), refresh=False))
    alice, bob = issued_contexts(pki, ALICE_SUBJECT, BOB_SUBJECT)
    write_atomically(list_file, {"policy": "allow"})
    assert await admitted(pki, authorizer, "auth0", [alice, bob]) == [True, False]


async def test_a_certificate_in_ca_crl_pem_is_refused(pki: Pki, tmp_path: Path) -> None:
    alice = pki.authority.issue(ALICE_SUBJECT, server=False)
    bob = pki.authority.issue(BOB_SUBJECT, server=False)
    directory = tmp_path / "tls"
    shutil.copytree(pki.server_dir, directory)
    (directory / "ca-crl.pem").write_bytes(pki.authority.crl(bob))
    revoking = Pki(pki.authority, tmp_path, directory)
    async with tls_monitor(revoking) as (_, listener):
        port = port_of(listener)
        alice_greeting = await greeting_or_eof(port, revoking.client_context("alice", alice))
        bob_greeting = await greeting_or_eof(port, revoking.client_context("bob", bob))
    assert alice_greeting.startswith(b'{"QMP"')
    assert bob_greeting == b""


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        ("ca-crl.pem", "Cannot load CRL '{dir}/ca-crl.pem': "),
        ("dh-params.pem", "Unable to load DH parameters from {dir}/dh-params.pem: "),
        (
            "server-key.pem",
            "Cannot load certificate '{dir}/server-cert.pem' & key '{dir}/server-key.pem': ",
        ),
    ],
)
def test_unreadable_optional_files_get_qemus_lead_in(
    pki: Pki, tmp_path: Path, filename: str, message: str
) -> None:
    """QEMU's text up to the reason; the reason is OpenSSL's (QEMU's is GnuTLS's)."""
    directory = tmp_path / "tls"
    shutil.copytree(pki.server_dir, directory)
    (directory / filename).write_text("garbage\n")
    with pytest.raises(ObjectError) as raised:
        server_context(TlsCredsX509("t", str(directory), TlsEndpoint.SERVER))
    assert raised.value.message.startswith(message.format(dir=directory))
    assert not raised.value.located


def test_verify_peer_decides_whether_a_certificate_is_required(pki: Pki) -> None:
    assert server_context(server_creds(pki)).verify_mode is ssl.CERT_REQUIRED
    assert server_context(server_creds(pki, verify_peer=False)).verify_mode is ssl.CERT_NONE


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("priority=NORMAL", "priority: GnuTLS priority strings are not supported by qmonitor"),
        ("passwordid=sec0", "passwordid: encrypted keys are not supported by qmonitor"),
    ],
)
def test_gnutls_only_properties_are_refused_when_the_object_is_made(
    option: str, message: str, pki: Pki
) -> None:
    """Read like QEMU (its checks of the option come first), refused when made."""
    creds = tls_creds_from_properties(
        {
            "qom-type": "tls-creds-x509",
            "id": "t",
            "dir": str(pki.server_dir),
            "endpoint": "server",
            option.split("=")[0]: "x",
        },
        keyval=True,
    )
    with pytest.raises(ObjectError) as raised:
        server_context(creds)
    assert raised.value.message == message
