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
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from qmonitor.cmdline import CommandLineError, parse_command_line
from qmonitor.security.x509dn import distinguished_name
from qmonitor.server.objects import CommandLineObjects
from qmonitor.server.peer import tls_authz_gate
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
    made = CommandLineObjects()
    parse_command_line(["-object", authz_object], objects=made)
    async with tls_monitor(pki, tls_authz_gate(made.authorizer, "auth0")) as (_, listener):
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
        parse_command_line(arguments, objects=CommandLineObjects())
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


# --- several bad options: which error comes first -------------------------------------------

CHARDEV = "socket,id=c,host=127.0.0.1,port=1,server=on,wait=off"
MISSING_DIR = "tls-creds-x509,id=t,dir={tmp}/none,endpoint=server"
GOOD_CREDS = "tls-creds-x509,id=t,dir={pki},endpoint=server"
DUPLICATE_JSON = '{"qom-type": "authz-simple", "id": "a", "identity": "x"}'

ORDERINGS = {
    # QEMU reads every -object's properties as the option loop reaches it...
    "two bad objects, the first reported": [
        *("-object", "tls-creds-x509,id=t,bogus=1"),
        *("-object", "authz-simple,id=a"),
    ],
    "a bad property before a later option's error": [
        *("-object", "authz-simple,id=a,bogus=1"),
        *("-m", "foo"),
    ],
    "an earlier option's error before a bad property": [
        *("-m", "foo"),
        *("-object", "authz-simple,id=a,bogus=1"),
    ],
    "a bad property before a chardev naming missing credentials": [
        *("-object", "authz-simple,id=a,bogus=1"),
        *("-chardev", f"{CHARDEV},tls-creds=nope"),
    ],
    "a later object's bad property before an earlier one's missing files": [
        *("-object", MISSING_DIR),
        *("-object", '{"qom-type": "authz-list", "id": "a", "rules": [1]}'),
    ],
    "a later bad property before an earlier read-only property": [
        *("-object", f"{GOOD_CREDS},loaded=on"),
        *("-object", "authz-simple,id=a"),
    ],
    "QEMU's check of the option before qmonitor's refusal of priority": [
        *("-object", "tls-creds-x509,id=t,priority=NORMAL,bogus=1"),
    ],
    # ...and creates them after the loop, in order, before the chardevs and the machine's
    # options (vl.c qemu_create_early_backends).
    "missing files before a chardev naming missing credentials": [
        *("-object", MISSING_DIR),
        *("-chardev", f"{CHARDEV},tls-creds=nope"),
    ],
    "missing files before a chardev given earlier": [
        *("-chardev", f"{CHARDEV},tls-creds=nope"),
        *("-object", MISSING_DIR),
    ],
    "the first object's missing files": [
        *("-object", "tls-creds-x509,id=t,dir={tmp}/ca-only,endpoint=server"),
        *("-object", "tls-creds-x509,id=t2,dir={tmp}/none,endpoint=server"),
    ],
    "a read-only property before a chardev error": [
        *("-object", f"{GOOD_CREDS},loaded=on"),
        *("-chardev", f"{CHARDEV},tls-creds=nope"),
    ],
    "missing files before a -mon naming no chardev": [
        *("-object", MISSING_DIR),
        *("-mon", "nope"),
    ],
    "missing files before a bad -smp": [*("-object", MISSING_DIR), *("-smp", "foo")],
    "an unknown machine type before missing files": [
        *("-object", MISSING_DIR),
        *("-machine", "bogus"),
    ],
    "an unknown tls-authz id is not an error at start": [
        *("-object", GOOD_CREDS),
        *("-chardev", f"{CHARDEV},tls-creds=t,tls-authz=missing"),
        *("-mon", "c,mode=control"),
        *("-mon", "nope"),
    ],
    "credentials naming an authz object": [
        *("-object", "authz-simple,id=a,identity=x"),
        *("-chardev", f"{CHARDEV},tls-creds=a"),
    ],
    "two objects with one id, one in JSON": [
        *("-object", "authz-simple,id=a,identity=y"),
        *("-object", DUPLICATE_JSON),
        *("-object", MISSING_DIR),
    ],
    "a late object with an early one's id, before the monitors": [
        *("-object", '{"qom-type": "memory-backend-ram", "id": "a", "size": 1048576}'),
        *("-object", "authz-simple,id=a,identity=x"),
        *("-mon", "nope"),
    ],
}

STANDIN = str(Path(sys.executable).parent / "qmonitor-system-x86_64")


async def _stderr_of(command: list[str]) -> tuple[int | None, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, stderr = await process.communicate()
    return process.returncode, stderr.decode()


@pytest.fixture(scope="module")
def orderings(directories: dict[str, str]) -> dict[str, tuple[tuple[int | None, str], ...]]:
    """Each case run by QEMU and by the stand-in, all at once: {case: (QEMU's, ours)}."""

    def argv(case: str) -> list[str]:
        return [
            part.replace("{tmp}", directories["tmp"]).replace("{pki}", directories["pki"])
            for part in [*BASE, *ORDERINGS[case]]
        ]

    async def run_all() -> dict[str, tuple[tuple[int | None, str], ...]]:
        results = await asyncio.gather(
            *(
                asyncio.gather(
                    _stderr_of([QEMU_BINARY, *argv(case)]), _stderr_of([STANDIN, *argv(case)])
                )
                for case in ORDERINGS
            )
        )
        return {case: tuple(result) for case, result in zip(ORDERINGS, results, strict=True)}

    return asyncio.run(run_all())


@pytest.mark.parametrize("case", list(ORDERINGS))
def test_the_first_error_of_several_is_qemus(
    orderings: dict[str, tuple[tuple[int | None, str], ...]], case: str
) -> None:
    (qemu_status, qemu_says), (our_status, we_say) = orderings[case]
    assert qemu_status == our_status == 1
    assert we_say.replace("qmonitor-system-x86_64", PROGRAM) == qemu_says
