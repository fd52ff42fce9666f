"""Certificates for the security tests: a CA, server and client certificates with any subject,
and raw DER surgery for subjects no X.509 library would write.

Made with the ``cryptography`` package (a test dependency only); keys are P-256 for speed.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_ONE_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM bytes."""

    certificate: bytes
    key: bytes

    @property
    def der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.certificate).public_bytes(
            serialization.Encoding.DER
        )

    def write(self, certificate_path: Path, key_path: Path) -> None:
        certificate_path.write_bytes(self.certificate)
        key_path.write_bytes(self.key)
        key_path.chmod(0o600)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, common_name: str = "qmonitor test CA") -> None:
        self._key = _key()
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _ONE_DAY)
            .not_valid_after(now + _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, subject: x509.Name, *, server: bool) -> Issued:
        """A leaf certificate for ``subject`` (a server's names 127.0.0.1 and localhost)."""
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _ONE_DAY)
            .not_valid_after(now + _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        return Issued(certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key))

    def crl(self, *revoked: Issued) -> bytes:
        """A PEM CRL (``ca-crl.pem``) revoking ``revoked``."""
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.name)
            .last_update(now - _ONE_DAY)
            .next_update(now + _ONE_DAY)
        )
        for issued in revoked:
            serial = x509.load_pem_x509_certificate(issued.certificate).serial_number
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - _ONE_DAY)
                .build()
            )
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def server_directory(self, directory: Path) -> Path:
        """QEMU's tls-creds-x509 server files in ``directory``: ca-cert, server-cert, -key."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca-cert.pem").write_bytes(self.pem)
        server = self.issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), server=True
        )
        server.write(directory / "server-cert.pem", directory / "server-key.pem")
        return directory


def name(
    *rdns: tuple[tuple[x509.ObjectIdentifier, str], ...] | tuple[x509.ObjectIdentifier, str],
) -> x509.Name:
    """``name((NameOID.ORGANIZATION_NAME, "Example"), (NameOID.COMMON_NAME, "alice"))``; a
    tuple of pairs is a multi-valued RDN."""
    built = []
    for rdn in rdns:
        pairs = rdn if isinstance(rdn[0], tuple) else (rdn,)
        built.append(
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(oid, value) for oid, value in pairs]  # type: ignore[misc]
            )
        )
    return x509.Name(built)


# --- DER surgery ---------------------------------------------------------------------------


def der(tag: int, content: bytes) -> bytes:
    """A DER TLV with a one-octet tag."""
    length = len(content)
    if length < 0x80:
        header = bytes([length])
    else:
        octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
        header = bytes([0x80 | len(octets)]) + octets
    return bytes([tag]) + header + content


def _split(data: bytes, position: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the one-octet-tag TLV at ``position``."""
    tag = data[position]
    first = data[position + 1]
    if first < 0x80:
        return tag, position + 2, position + 2 + first
    count = first & 0x7F
    length = int.from_bytes(data[position + 2 : position + 2 + count], "big")
    start = position + 2 + count
    return tag, start, start + length


def with_subject(certificate_der: bytes, subject_der: bytes) -> bytes:
    """``certificate_der`` with its subject Name replaced (the signature no longer verifies:
    for parsers only)."""
    _, certificate_start, _ = _split(certificate_der, 0)
    tag, tbs_start, tbs_end = _split(certificate_der, certificate_start)
    fields = []
    position = tbs_start
    while position < tbs_end:
        _, _, end = _split(certificate_der, position)
        fields.append(certificate_der[position:end])
        position = end
    subject_index = 5 if fields[0][0] == 0xA0 else 4
    fields[subject_index] = subject_der
    tbs = der(tag, b"".join(fields))
    _, _, certificate_end = _split(certificate_der, 0)
    return der(0x30, tbs + certificate_der[tbs_end:certificate_end])


def encode_oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER TLV for ``dotted``."""
    arcs = [int(arc) for arc in dotted.split(".")]
    values = [40 * arcs[0] + arcs[1], *arcs[2:]]
    content = bytearray()
    for value in values:
        chunk = [value & 0x7F]
        value >>= 7
        while value:
            chunk.append(0x80 | (value & 0x7F))
            value >>= 7
        content += bytes(reversed(chunk))
    return der(0x06, bytes(content))


def subject_der(rdns: list[list[tuple[str, bytes]]]) -> bytes:
    """A Name from RDNs of (dotted OID, the value's whole DER encoding)."""
    return der(
        0x30,
        b"".join(
            der(0x31, b"".join(der(0x30, encode_oid(oid) + value) for oid, value in rdn))
            for rdn in rdns
        ),
    )
