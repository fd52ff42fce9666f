"""Differential tests of TLS identities and authz objects against QEMU 7.2 itself.

The same certificates and the same ``-object``/``-chardev`` options are given to the real
``qemu-system-x86_64`` and to qmonitor:

- the distinguished name QEMU hands its authz object (``-trace qauthz_simple_is_allowed``)
  is :func:`~qmonitor.security.x509dn.distinguished_name` of the client certificate, for subjects
  with several RDNs, a multi-valued RDN, escaped characters, non-ASCII text, BMPString;
- which clients QEMU admits (the QMP greeting) and which it refuses (the connection closes)
  is what a qmonitor TLS listener with the same authz object admits and refuses;
- QEMU's errors for bad ``-object`` options are qmonitor's, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from qmonitor.cmdline import CommandLineError, parse_command_line
from qmonitor.security.x509dn import distinguished_name
from qmonitor.server.authorize import Authorizer
from qmonitor.server.peer import tls_authz_gate
from qmonitor.server.tls import tls_credentials_from_command_line
from qmonitor.testing import QEMU_BINARY, start_server
from tls_util import ALICE_SUBJECT, BOB_SUBJECT, Pki, greeting_or_eof, make_pki, tls_monitor
from x509util import CertificateAuthority, name

pytestmark = pytest.mark.qemu

PROGRAM = "qemu-system-x86_64"
BASE = ["-machine", "none", "-display", "none", "-nodefaults"]
_TRACE = re.compile(r"qauthz_simple_is_allowed .* got identity=(.*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def qemu_tls_monitor(
    pki: Pki, authz_object: str, stderr_path: Path, *, trace: bool = False
) -> AsyncIterator[int]:
    """QEMU with a QMP monitor on a TLS chardev whose ``tls-authz`` is ``authz_object``."""
    port = free_port()
    qmp_path = stderr_path.with_suffix(".sock")
    command = [
        QEMU_BINARY,
        *BASE,
        "-object",
        f"tls-creds-x509,id=tls0,dir={pki.server_dir},endpoint=server,verify-peer=on",
        "-object",
        authz_object,
        "-chardev",
        f"socket,id=mon0,host=127.0.0.1,port={port},server=on,wait=off,"
        "tls-creds=tls0,tls-authz=auth0",
        "-mon",
        "chardev=mon0,mode=control",
        "-qmp",
        f"unix:{qmp_path},server=on,wait=off",
    ]
    if trace:
        command += ["-trace", "qauthz_simple_is_allowed"]
    async with start_server(command, str(qmp_path), stderr_path=str(stderr_path)):
        yield port


async def wait_for_traces(stderr_path: Path, count: int) -> list[str]:
    async with asyncio.timeout(20):
        while True:
            found = _TRACE.findall(stderr_path.read_text("utf-8", "surrogateescape"))
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)


def _attribute(oid: x509.ObjectIdentifier, value: str, kind: _ASN1Type | None = None) -> object:
    if kind is None:
        return x509.NameAttribute(oid, value)
    return x509.NameAttribute(oid, value, _type=kind)


SUBJECTS = [
    ALICE_SUBJECT,
    name(
        (NameOID.COUNTRY_NAME, "GB"),
        (NameOID.ORGANIZATION_NAME, "Example, Inc."),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "R+D; <lab>"),
        (NameOID.COMMON_NAME, 'alice "the admin" \\ ops'),
    ),
    name(((NameOID.COMMON_NAME, "alice"), (NameOID.USER_ID, "1000"))),
    name((NameOID.COMMON_NAME, " #spaced "), (NameOID.EMAIL_ADDRESS, "alice@example.org")),
    name((NameOID.DOMAIN_COMPONENT, "org"), (NameOID.COMMON_NAME, "Zoë ☃ 雪")),
    x509.Name(
        [
            x509.RelativeDistinguishedName(
                [_attribute(NameOID.COMMON_NAME, "bmp Zoë", _ASN1Type.BMPString)]  # type: ignore[list-item]
            ),
            x509.RelativeDistinguishedName(
                [_attribute(NameOID.ORGANIZATION_NAME, "teletex", _ASN1Type.T61String)]  # type: ignore[list-item]
            ),
        ]
    ),
]


async def test_the_dn_is_the_one_qemu_hands_its_authz_object(pki: Pki, tmp_path: Path) -> None:
    stderr_path = tmp_path / "qemu.log"
    issued = [pki.authority.issue(subject, server=False) for subject in SUBJECTS]
    contexts = [pki.client_context(f"s{index}", cert) for index, cert in enumerate(issued)]
    async with qemu_tls_monitor(
        pki, "authz-simple,id=auth0,identity=nobody", stderr_path, trace=True
    ) as port:
        for context in contexts:
            assert await greeting_or_eof(port, context) == b""  # refused: not "nobody"
        traced = await wait_for_traces(stderr_path, len(contexts))
    assert traced == [distinguished_name(cert.der) for cert in issued]


ALICE_BY_DN = "authz-simple,id=auth0,identity=O=Example,,CN=alice"
LIST_JSON = (
    '{"qom-type": "authz-list", "id": "auth0", "policy": "deny", "rules": ['
    '{"match": "O=Example,CN=bob", "policy": "deny"},'
    '{"match": "O=Example,CN=*", "policy": "allow", "format": "glob"}]}'
)
CAROL_SUBJECT = name((NameOID.ORGANIZATION_NAME, "Other"), (NameOID.COMMON_NAME, "carol"))


@pytest.mark.parametrize("authz_object", [ALICE_BY_DN, LIST_JSON], ids=["simple", "list"])
async def test_qemu_and_qmonitor_admit_and_refuse_the_same_clients(
    pki: Pki, tmp_path: Path, authz_object: str
) -> None:
    contexts = [
        pki.client_context(f"c{index}", pki.authority.issue(subject, server=False))
        for index, subject in enumerate((ALICE_SUBJECT, BOB_SUBJECT, CAROL_SUBJECT))
    ]
    foreign = CertificateAuthority("another CA").issue(ALICE_SUBJECT, server=False)
    contexts += [pki.client_context(None), pki.client_context("foreign", foreign)]
    async with qemu_tls_monitor(pki, authz_object, tmp_path / "qemu.log") as port:
        by_qemu = [(await greeting_or_eof(port, c)).startswith(b'{"QMP"') for c in contexts]
    authorizer = Authorizer.from_command_line(parse_command_line(["-object", authz_object]))
    async with tls_monitor(pki, tls_authz_gate(authorizer, "auth0")) as (_, listener):
        port = listener.bound_address.port
        by_us = [(await greeting_or_eof(port, c)).startswith(b'{"QMP"') for c in contexts]
    assert by_qemu == by_us
    assert by_us[0] and not any(by_us[1:])


# --- errors --------------------------------------------------------------------------------

REFUSED = [
    "authz-simple,id=a",
    "authz-simple,id=a,foo=1",
    "authz-simple,id=a,identity=x,foo=1",
    "authz-list,id=a,policy=maybe",
    "authz-list,id=a,foo=1,policy=bad",
    "authz-listfile,id=a",
    '{"qom-type":"authz-simple","id":"a"}',
    '{"qom-type":"authz-simple","id":"a","identity":1}',
    '{"qom-type":"authz-simple","id":"a","identity":"x","foo":1}',
    '{"qom-type":"authz-list","id":"a","policy":1}',
    '{"qom-type":"authz-list","id":"a","rules":{"match":"x"}}',
    '{"qom-type":"authz-list","id":"a","rules":[1]}',
    '{"qom-type":"authz-list","id":"a","rules":[{"match":"x"}]}',
    '{"qom-type":"authz-list","id":"a","rules":[{"policy":"allow"}]}',
    '{"qom-type":"authz-list","id":"a","rules":[{"match":1,"policy":"allow"}]}',
    '{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"maybe"}]}',
    '{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"allow","format":1}]}',
    '{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"allow","format":"re"}]}',
    '{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"allow","bogus":1}]}',
    '{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"allow"},{"match":"y"}]}',
    '{"qom-type":"authz-list","id":"a","rules":[],"foo":1}',
    "tls-creds-x509,id=t,endpoint=server",
    "tls-creds-x509,id=t,dir={tmp}/none,endpoint=server",
    "tls-creds-x509,id=t,dir={tmp}/ca-only,endpoint=server",
    "tls-creds-x509,id=t,dir={tmp}/no-key,endpoint=server",
    "tls-creds-x509,id=t,dir={tmp}/bad-ca,endpoint=server",
    "tls-creds-x509,id=t,dir={tmp}/bad-ca",
    "tls-creds-x509,id=t,dir={pki},endpoint=bogus",
    "tls-creds-x509,id=t,dir={pki},verify-peer=maybe",
    "tls-creds-x509,id=t,dir={pki},sanity-check=maybe",
    "tls-creds-x509,id=t,dir={pki},bogus=1",
    "tls-creds-x509,id=t,dir={pki},endpoint=server,loaded=on",
    '{"qom-type":"tls-creds-x509","id":"t","dir":1}',
    '{"qom-type":"tls-creds-x509","id":"t","dir":"{pki}","verify-peer":"on"}',
    '{"qom-type":"tls-creds-x509","id":"t","dir":"{pki}","endpoint":"server","bogus":1}',
]


@pytest.fixture(scope="module")
def directories(pki: Pki) -> dict[str, str]:
    root = Path(tempfile.mkdtemp(prefix="qm-tls-", dir=pki.root))
    (root / "ca-only").mkdir()
    (root / "ca-only" / "ca-cert.pem").write_bytes(pki.authority.pem)
    (root / "no-key").mkdir()
    (root / "no-key" / "ca-cert.pem").write_bytes(pki.authority.pem)
    (root / "no-key" / "server-cert.pem").write_bytes(
        (pki.server_dir / "server-cert.pem").read_bytes()
    )
    (root / "bad-ca").mkdir()
    (root / "bad-ca" / "ca-cert.pem").write_text("not a certificate\n")
    return {"tmp": str(root), "pki": str(pki.server_dir)}


def ours(arguments: list[str]) -> str:
    try:
        command_line = parse_command_line(arguments)
        Authorizer.from_command_line(command_line)
        tls_credentials_from_command_line(command_line)
    except CommandLineError as error:
        return error.render(PROGRAM)
    return ""


@pytest.mark.parametrize("option", REFUSED)
def test_bad_objects_are_refused_with_qemus_message(
    option: str, directories: dict[str, str]
) -> None:
    value = option.replace("{tmp}", directories["tmp"]).replace("{pki}", directories["pki"])
    arguments = [*BASE, "-object", value]
    result = subprocess.run(
        [QEMU_BINARY, *arguments], capture_output=True, timeout=20, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 1
    assert ours(arguments) == result.stderr.decode()
