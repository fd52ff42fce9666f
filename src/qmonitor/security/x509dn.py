"""A certificate's subject distinguished name, written exactly as QEMU 7.2 writes it.

QEMU checks a TLS client against its ``tls-authz`` object with the string GnuTLS's
``gnutls_x509_crt_get_dn()`` gives for the client certificate (crypto/tlssession.c
``qcrypto_tls_session_check_certificate``). That is GnuTLS's *compat* format
(lib/x509/dn.c ``_gnutls_x509_get_dn`` with ``GNUTLS_X509_DN_FLAG_COMPAT``), not RFC 4514:

- the RDNs in the certificate's own order (``O=Example,CN=alice`` for a certificate made with
  ``-subj "/O=Example/CN=alice"``; RFC 4514 would reverse them), joined by ``,``; the values of
  a multi-valued RDN joined by ``+`` in their encoded order;
- each attribute as ``NAME=value``, NAME from GnuTLS's table of known OIDs
  (lib/x509/common.c ``_oid2str``), the dotted OID otherwise;
- the value, for a known OID, decoded by its type (a DirectoryString's UTF8String,
  PrintableString, TeletexString if printable ASCII, BMPString converted to UTF-8) and escaped
  as ``str_escape`` does: a backslash before ``, + " \\ < > ;``, before a leading ``#`` or space
  and before a trailing space; an unknown OID, or a value that does not decode as its type, is
  ``#`` and the lowercase hex of the value's whole DER encoding, not escaped.

A subject GnuTLS cannot write (no RDN at all, an empty DirectoryString, a NUL in an
OCTET STRING value) makes QEMU refuse the client (and one whose RDNs are all empty makes it
abort) ("Cannot get client distinguished name"):
:func:`distinguished_name` raises :class:`DistinguishedNameError` for it.

This is a small DER reader for the subject only, so that qmonitor needs no X.509 library; the
test suite compares it with GnuTLS itself on generated subjects and with QEMU's trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from qmonitor.core.errors import QMonitorError
from qmonitor.security.errors import DistinguishedNameError

_SEQUENCE: Final = 0x30
_SET: Final = 0x31
_OID: Final = 0x06
_VERSION_TAG: Final = 0xA0  # tbsCertificate's [0] EXPLICIT version

# ASN.1 universal tags of the string types GnuTLS decodes (libtasn1 ETYPE_TAG).
_UTF8_STRING: Final = 0x0C
_NUMERIC_STRING: Final = 0x12
_PRINTABLE_STRING: Final = 0x13
_TELETEX_STRING: Final = 0x14
_IA5_STRING: Final = 0x16
_UNIVERSAL_STRING: Final = 0x1C
_BMP_STRING: Final = 0x1E
_OCTET_STRING: Final = 0x04

_DIRECTORY_STRING: Final = frozenset(
    {_TELETEX_STRING, _PRINTABLE_STRING, _UNIVERSAL_STRING, _UTF8_STRING, _BMP_STRING}
)
"""pkix.asn ``DirectoryString``: the CHOICE most name attributes are."""
_CHALLENGE_PASSWORD: Final = frozenset({_PRINTABLE_STRING, _UTF8_STRING})
"""pkix.asn ``pkcs-9-challengePassword``."""


@dataclass(frozen=True, slots=True)
class _Attribute:
    """One ``_oid2str`` entry: its name (None: write the OID) and the types its value takes.

    ``choice`` lists the tags of a CHOICE (``decode_complex_string``); ``single`` is the one
    tag of a simple type (``_gnutls_x509_decode_string``).
    """

    name: str | None
    choice: frozenset[int] = frozenset()
    single: int | None = None

    @property
    def is_directory_string(self) -> bool:
        return self.choice is _DIRECTORY_STRING


def _directory(name: str) -> _Attribute:
    return _Attribute(name, choice=_DIRECTORY_STRING)


# GnuTLS 3.7.9 lib/x509/common.c _oid2str, in its order.
_KNOWN_OIDS: Final[dict[str, _Attribute]] = {
    "1.3.6.1.5.5.7.9.2": _directory("placeOfBirth"),
    "1.3.6.1.5.5.7.9.3": _Attribute("gender", single=_PRINTABLE_STRING),
    "1.3.6.1.5.5.7.9.4": _Attribute("countryOfCitizenship", single=_PRINTABLE_STRING),
    "1.3.6.1.5.5.7.9.5": _Attribute("countryOfResidence", single=_PRINTABLE_STRING),
    "2.5.4.6": _Attribute("C", single=_PRINTABLE_STRING),
    "2.5.4.9": _directory("street"),
    "2.5.4.12": _directory("title"),
    "2.5.4.10": _directory("O"),
    "2.5.4.11": _directory("OU"),
    "2.5.4.3": _directory("CN"),
    "2.5.4.7": _directory("L"),
    "2.5.4.8": _directory("ST"),
    "2.5.4.13": _directory("description"),
    "2.5.4.5": _Attribute("serialNumber", single=_PRINTABLE_STRING),
    "2.5.4.20": _Attribute("telephoneNumber", single=_PRINTABLE_STRING),
    "2.5.4.4": _directory("surName"),
    "2.5.4.43": _directory("initials"),
    "2.5.4.44": _directory("generationQualifier"),
    "2.5.4.42": _directory("givenName"),
    "2.5.4.65": _directory("pseudonym"),
    "2.5.4.46": _Attribute("dnQualifier", single=_PRINTABLE_STRING),
    "2.5.4.17": _directory("postalCode"),
    "2.5.4.41": _directory("name"),
    "2.5.4.15": _directory("businessCategory"),
    "0.9.2342.19200300.100.1.25": _Attribute("DC", single=_IA5_STRING),
    "0.9.2342.19200300.100.1.1": _directory("UID"),
    "1.2.840.113556.1.4.656": _directory("userPrincipalName"),
    "1.3.6.1.4.1.311.60.2.1.1": _directory("jurisdictionOfIncorporationLocalityName"),
    "1.3.6.1.4.1.311.60.2.1.2": _directory("jurisdictionOfIncorporationStateOrProvinceName"),
    "1.3.6.1.4.1.311.60.2.1.3": _Attribute(
        "jurisdictionOfIncorporationCountryName", single=_PRINTABLE_STRING
    ),
    "1.2.840.113549.1.9.1": _Attribute("EMAIL", single=_IA5_STRING),
    "1.2.840.113549.1.9.7": _Attribute(None, choice=_CHALLENGE_PASSWORD),
    "1.2.840.113549.1.9.20": _Attribute(None, single=_BMP_STRING),  # friendly name
    "1.2.840.113549.1.9.21": _Attribute(None, single=_OCTET_STRING),  # local key id
    "1.2.840.113549.1.9.4": _Attribute(None, single=_OCTET_STRING),
    "1.3.6.1.5.5.7.8.5": _Attribute("XmppAddr", single=_UTF8_STRING),
    "1.2.643.100.1": _Attribute("OGRN", single=_NUMERIC_STRING),
    "1.2.643.100.3": _Attribute("SNILS", single=_NUMERIC_STRING),
    "1.2.643.100.5": _Attribute("OGRNIP", single=_NUMERIC_STRING),
    "1.2.643.3.131.1.1": _Attribute("INN", single=_NUMERIC_STRING),
}

_ESCAPED: Final = frozenset(',+"\\<>;')


class _DerError(QMonitorError, ValueError):
    """Bytes that are not the DER the reader expected."""


@dataclass(frozen=True, slots=True)
class _Element:
    """One DER TLV: its first identifier octet, content bounds, and where it ends."""

    tag: int
    tag_length: int  # identifier octets (more than one for a high tag number)
    start: int  # first octet of the whole element
    content_start: int
    end: int
    minimal_length: bool  # the length is in DER's shortest form


def _read_element(data: bytes, position: int, limit: int) -> _Element:
    """Read the TLV at ``position``; it must end by ``limit``."""
    if position >= limit:
        raise _DerError("truncated")
    tag = data[position]
    cursor = position + 1
    if tag & 0x1F == 0x1F:  # high tag number: base-128 octets, the last without bit 8
        while True:
            if cursor >= limit:
                raise _DerError("truncated tag")
            cursor += 1
            if not data[cursor - 1] & 0x80:
                break
    tag_length = cursor - position
    if cursor >= limit:
        raise _DerError("truncated length")
    first = data[cursor]
    cursor += 1
    minimal = True
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise _DerError("indefinite length")
    else:
        count = first & 0x7F
        if cursor + count > limit:
            raise _DerError("truncated length")
        length = int.from_bytes(data[cursor : cursor + count], "big")
        minimal = length >= 0x80 and data[cursor] != 0
        cursor += count
    if cursor + length > limit:
        raise _DerError("content runs past its container")
    return _Element(tag, tag_length, position, cursor, cursor + length, minimal)


def _children(data: bytes, parent: _Element) -> list[_Element]:
    children = []
    position = parent.content_start
    while position < parent.end:
        child = _read_element(data, position, parent.end)
        children.append(child)
        position = child.end
    return children


def _expect(element: _Element, tag: int, what: str) -> _Element:
    if element.tag != tag:
        raise _DerError(f"{what}: tag {element.tag:#x}, expected {tag:#x}")
    return element


def _dotted_oid(content: bytes) -> str:
    """An OBJECT IDENTIFIER's content as libtasn1 writes it (``2.5.4.3``)."""
    arcs: list[int] = []
    value = 0
    for octet in content:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    if not arcs or content[-1] & 0x80:
        raise _DerError("bad OBJECT IDENTIFIER")
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(arc) for arc in (*head, *arcs[1:]))


def _hex(encoding: bytes) -> str:
    """``data2hex``: ``#`` and the lowercase hex of the bytes."""
    return "#" + encoding.hex()


def _escape(text: str) -> str:
    """``str_escape`` (lib/x509/common.c): GnuTLS's subset of RFC 4514's escaping."""
    if "\0" in text:
        raise DistinguishedNameError("a value contains a NUL character")
    out = []
    last = len(text) - 1
    for index, char in enumerate(text):
        if char in _ESCAPED or (index == 0 and char in "# ") or (index == last and char == " "):
            out.append("\\")
        out.append(char)
    return "".join(out)


def _utf8(content: bytes) -> str:
    """Bytes GnuTLS copies through unchanged; kept byte for byte (invalid UTF-8 included)."""
    return content.decode("utf-8", "surrogateescape")


def _bmp_to_utf8(content: bytes) -> str | None:
    """``_gnutls_ucs2_to_utf8`` (big endian); None where GnuTLS's conversion fails."""
    if len(content) > 2 and content[-2:] == b"\0\0":
        content = content[:-2]
    if not content:
        return None
    content = content[: len(content) // 2 * 2]
    try:
        return content.decode("utf-16-be")
    except UnicodeDecodeError:
        return None


def _printable(tag: int, content: bytes) -> str:
    """``make_printable_string``: the text of a decoded string value (may contain NUL)."""
    if not content:
        return ""
    if tag == _BMP_STRING:
        text = _bmp_to_utf8(content)
        return _hex(content) if text is None else text
    if tag == _TELETEX_STRING:
        return content.decode("ascii") if all(0x20 <= b < 0x7F for b in content) else _hex(content)
    if tag == _UNIVERSAL_STRING:
        return _hex(content)
    return _utf8(content)


def _value_text(oid: str, data: bytes, value: _Element) -> str:
    """``_gnutls_x509_dn_to_string``: the written value of one attribute."""
    attribute = _KNOWN_OIDS.get(oid)
    encoding = data[value.start : value.end]
    if attribute is None:
        return _hex(encoding)
    content = data[value.content_start : value.end]
    if attribute.is_directory_string and encoding[1] == 0:
        raise DistinguishedNameError(f"{oid} is an empty DirectoryString")
    # An empty value of any other type does not decode (libtasn1 refuses it): hex.
    decodable = value.tag_length == 1 and value.minimal_length and value.end > value.content_start
    if attribute.choice:
        if not decodable or value.tag not in attribute.choice:
            return _hex(encoding)
        text = _printable(value.tag, content)
        if "\0" in text:  # decode_complex_string refuses it: the value falls back to hex
            return _hex(encoding)
        return _escape(text)
    if not decodable or value.tag != attribute.single:
        return _hex(encoding)
    text = _printable(value.tag, content)
    if "\0" in text and value.tag != _OCTET_STRING:
        return _hex(encoding)
    return _escape(text)


def _subject(data: bytes) -> tuple[_Element, bytes]:
    """The subject Name of a DER certificate (RFC 5280, section 4.1)."""
    certificate = _expect(_read_element(data, 0, len(data)), _SEQUENCE, "Certificate")
    tbs = _expect(_children(data, certificate)[0], _SEQUENCE, "tbsCertificate")
    fields = _children(data, tbs)
    if fields and fields[0].tag == _VERSION_TAG:
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject
    if len(fields) < 5:
        raise _DerError("tbsCertificate too short")
    return _expect(fields[4], _SEQUENCE, "subject"), data


def distinguished_name(certificate_der: bytes) -> str:
    """The subject of a DER certificate as ``gnutls_x509_crt_get_dn()`` writes it.

    Raises :class:`DistinguishedNameError` where GnuTLS fails (see the module docstring) and
    for bytes that are not a certificate.
    """
    try:
        subject, data = _subject(certificate_der)
        rdns = _children(data, subject)
        if not rdns:
            raise DistinguishedNameError("the subject is empty")
        out = []
        for index, rdn in enumerate(rdns):
            _expect(rdn, _SET, "RelativeDistinguishedName")
            attributes = _children(data, rdn)
            for position, attribute in enumerate(attributes):
                _expect(attribute, _SEQUENCE, "AttributeTypeAndValue")
                parts = _children(data, attribute)
                if len(parts) != 2:
                    raise _DerError("AttributeTypeAndValue is not a type and a value")
                oid_element = _expect(parts[0], _OID, "AttributeType")
                oid = _dotted_oid(data[oid_element.content_start : oid_element.end])
                known = _KNOWN_OIDS.get(oid)
                name = known.name if known is not None and known.name is not None else oid
                out.append(f"{name}={_value_text(oid, data, parts[1])}")
                # append_elements: "+" inside an RDN, "," after every RDN but the last
                if position < len(attributes) - 1:
                    out.append("+")
                elif index < len(rdns) - 1:
                    out.append(",")
        if not out:  # RDNs without attributes: GnuTLS aborts on them (an assert in 3.7.9)
            raise DistinguishedNameError("the subject has no attribute")
        return "".join(out)
    except (_DerError, IndexError) as error:
        raise DistinguishedNameError(f"not a DER certificate: {error}") from None
