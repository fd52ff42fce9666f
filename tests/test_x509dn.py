"""The subject DN as QEMU 7.2 writes it, compared with GnuTLS itself (the library QEMU uses).

``gnutls_x509_crt_get_dn()`` is called through ctypes on the same certificate bytes, for
certificates made by the ``cryptography`` package and for subjects built octet by octet
(string types, escapes, empty and undecodable values, unknown OIDs, multi-valued RDNs).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.x509.oid import NameOID
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gnutls_oracle import GnuTLSOracle, load_gnutls
from qmonitor.security.x509dn import DistinguishedNameError, distinguished_name
from x509util import CertificateAuthority, der, name, subject_der, with_subject

_GNUTLS_INSTALLED = load_gnutls() is not None
needs_gnutls = pytest.mark.skipif(not _GNUTLS_INSTALLED, reason="libgnutls is not installed")


@pytest.fixture(scope="module")
def gnutls() -> Iterator[GnuTLSOracle]:
    oracle = GnuTLSOracle()
    yield oracle
    oracle.close()


def ours(certificate_der: bytes) -> bytes | None:
    try:
        return distinguished_name(certificate_der).encode("utf-8", "surrogateescape")
    except DistinguishedNameError:
        return None


_AUTHORITY = CertificateAuthority()
_TEMPLATE = _AUTHORITY.issue(name((NameOID.COMMON_NAME, "template")), server=False).der


def test_the_issue_example_is_written_in_certificate_order() -> None:
    certificate = _AUTHORITY.issue(
        name((NameOID.ORGANIZATION_NAME, "Example"), (NameOID.COMMON_NAME, "alice")),
        server=False,
    )
    assert distinguished_name(certificate.der) == "O=Example,CN=alice"


@needs_gnutls
@pytest.mark.parametrize(
    "subject",
    [
        name((NameOID.COMMON_NAME, "alice")),
        name(
            (NameOID.COUNTRY_NAME, "GB"),
            (NameOID.LOCALITY_NAME, "London"),
            (NameOID.ORGANIZATION_NAME, "Example, Ltd."),
            (NameOID.COMMON_NAME, "alice+bob"),
        ),
        name(((NameOID.COMMON_NAME, "alice"), (NameOID.USER_ID, "1000"))),
        name((NameOID.COMMON_NAME, " #leading and trailing ")),
        name((NameOID.COMMON_NAME, 'quote" back\\ semi; <angle>')),
        name((NameOID.COMMON_NAME, "Ünïcødé ☃ 雪")),
        name((NameOID.EMAIL_ADDRESS, "alice@example.com"), (NameOID.DOMAIN_COMPONENT, "org")),
        name(
            (NameOID.SERIAL_NUMBER, "42"),
            (NameOID.GIVEN_NAME, "Alice"),
            (NameOID.SURNAME, "Liddell"),
            (NameOID.TITLE, "Dr"),
        ),
    ],
    ids=lambda subject: subject.rfc4514_string(),
)
def test_certificates_made_by_a_library_read_as_gnutls_reads_them(
    subject: object, gnutls: GnuTLSOracle
) -> None:
    certificate = _AUTHORITY.issue(subject, server=False)  # type: ignore[arg-type]
    assert gnutls.dn(certificate.der) == ("dn", ours(certificate.der))


_STRING_TAGS = [0x0C, 0x13, 0x14, 0x16, 0x1C, 0x1E, 0x12, 0x04, 0x02, 0x30]
_OIDS = [
    "2.5.4.3",
    "2.5.4.10",
    "2.5.4.6",
    "2.5.4.5",
    "0.9.2342.19200300.100.1.25",
    "1.2.840.113549.1.9.1",
    "1.2.840.113549.1.9.7",
    "1.2.840.113549.1.9.20",
    "1.2.840.113549.1.9.21",
    "1.3.6.1.5.5.7.8.5",
    "1.2.643.100.1",
    "1.2.3.4",
    "2.999.1",
]
_INTERESTING = st.sampled_from(
    [
        b",",
        b"+",
        b"#",
        b" ",
        b"\\",
        b'"',
        b"<",
        b">",
        b";",
        b"=",
        b"\0",
        b"a",
        b"\xc3\xa9",
        b"\xe2\x98\x83",
        b"\xff",
        b"\x00A",
        b"\xd8\x00",
        b"\x7f",
    ]
)
_CONTENT = st.lists(_INTERESTING | st.binary(max_size=3), max_size=6).map(b"".join)


@st.composite
def _attribute(draw: st.DrawFn) -> tuple[str, bytes]:
    oid = draw(st.sampled_from(_OIDS))
    tag = draw(st.sampled_from(_STRING_TAGS))
    content = draw(_CONTENT)
    if tag == 0x1E and draw(st.booleans()):  # a well-formed BMPString of some text
        content = draw(st.text(max_size=5)).encode("utf-16-be", "surrogatepass")
    return oid, der(tag, content)


@needs_gnutls
@settings(max_examples=400, deadline=None)
@given(rdns=st.lists(st.lists(_attribute(), min_size=0, max_size=3), min_size=0, max_size=4))
@example(rdns=[[("2.5.4.3", der(0x0C, b""))]])  # an empty DirectoryString: GnuTLS fails
@example(rdns=[[("2.5.4.3", der(0x14, b"caf\xe9"))]])  # teletex, not ASCII: \#hex
@example(rdns=[[("2.5.4.3", der(0x1C, b"\0\0\0a"))]])  # universalString: \#hex
@example(rdns=[[("1.2.840.113549.1.9.21", der(0x04, b"a\0b"))]])  # NUL in an OCTET STRING
@example(rdns=[[("2.5.4.3", der(0x1E, b"\xd8\x00\x00a"))]])  # a lone surrogate in a BMPString
@example(rdns=[[("2.5.4.3", der(0x0C, b"a"))], []])  # an empty last RDN
def test_any_subject_reads_as_gnutls_reads_it(
    rdns: list[list[tuple[str, bytes]]], gnutls: GnuTLSOracle
) -> None:
    certificate = with_subject(_TEMPLATE, subject_der(rdns))
    kind, expected = gnutls.dn(certificate)
    if kind in ("refused", "crashed"):
        return  # no TLS peer can present it, or QEMU itself would abort on it
    assert ours(certificate) == expected


@pytest.mark.parametrize("rdns", [[], [[]], [[], []]], ids=["no RDN", "empty RDN", "two empty"])
def test_a_subject_without_attributes_is_refused(rdns: list[list[tuple[str, bytes]]]) -> None:
    """GnuTLS fails on no RDN and aborts on empty ones: QEMU never admits either."""
    with pytest.raises(DistinguishedNameError):
        distinguished_name(with_subject(_TEMPLATE, subject_der(rdns)))


def test_bytes_that_are_not_a_certificate_are_refused_with_a_reason() -> None:
    with pytest.raises(DistinguishedNameError, match="not a DER certificate"):
        distinguished_name(b"\x30\x03\x02\x01")
