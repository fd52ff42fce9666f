"""Shared pieces of the TLS tests: certificates on disk, a TLS QMP server, raw clients."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.x509.oid import NameOID

from qmonitor import Monitor
from qmonitor.server.listen import Address, Listener, start_listener
from qmonitor.server.peer import Admit, gated
from qmonitor.server.tls import TLS_HANDSHAKE_TIMEOUT, TlsCredsX509, TlsEndpoint, server_context
from x509util import CertificateAuthority, Issued, name

ALICE_SUBJECT = name((NameOID.ORGANIZATION_NAME, "Example"), (NameOID.COMMON_NAME, "alice"))
BOB_SUBJECT = name((NameOID.ORGANIZATION_NAME, "Example"), (NameOID.COMMON_NAME, "bob"))


@dataclass
class Pki:
    """A CA with a server directory (QEMU's file names) and client certificates on disk."""

    authority: CertificateAuthority
    root: Path
    server_dir: Path

    def client(self, label: str, issued: Issued) -> tuple[Path, Path]:
        certificate = self.root / f"{label}-cert.pem"
        key = self.root / f"{label}-key.pem"
        issued.write(certificate, key)
        return certificate, key

    def client_context(self, label: str | None, issued: Issued | None = None) -> ssl.SSLContext:
        """A client context trusting the CA, with ``issued`` as its certificate if given."""
        context = ssl.create_default_context(cafile=str(self.server_dir / "ca-cert.pem"))
        if label is not None and issued is not None:
            certificate, key = self.client(label, issued)
            context.load_cert_chain(certificate, key)
        return context


def make_pki(root: Path) -> Pki:
    authority = CertificateAuthority()
    return Pki(authority, root, authority.server_directory(root / "server"))


def server_creds(pki: Pki, *, verify_peer: bool = True) -> TlsCredsX509:
    return TlsCredsX509("tls0", str(pki.server_dir), TlsEndpoint.SERVER, verify_peer)


def admit_all(transport: asyncio.BaseTransport) -> bool:
    return True


@contextlib.asynccontextmanager
async def tls_monitor(
    pki: Pki,
    admit: Admit = admit_all,
    *,
    verify_peer: bool = True,
    handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT,
) -> AsyncIterator[tuple[Monitor, Listener]]:
    """A monitor serving QMP over TLS on 127.0.0.1 (an ephemeral port), gated by ``admit``."""
    monitor = Monitor("tls")
    listener = await start_listener(
        Address("tcp", host="127.0.0.1", port=0),
        gated(monitor.qmp_session_factory, admit),
        tls=server_context(server_creds(pki, verify_peer=verify_peer)),
        tls_handshake_timeout=handshake_timeout,
    )
    monitor.listeners.append(listener)
    try:
        yield monitor, listener
    finally:
        await monitor.close()


async def greeting_or_eof(port: int, context: ssl.SSLContext | None) -> bytes:
    """Connect (TLS if ``context``) and read the first line: the greeting, or b"" if the
    server closed the connection first (a handshake failure counts as closed)."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1" if context else None
        )
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        return await asyncio.wait_for(reader.readline(), 10)
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
