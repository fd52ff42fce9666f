"""TLS on TCP monitors, QEMU's way: ``-object tls-creds-x509`` and ``tls-creds=``/``tls-authz=``.

``-object tls-creds-x509,id=ID,dir=DIR,endpoint=server,verify-peer=on`` names a directory
holding QEMU's files (crypto/tlscredsx509.h): ``ca-cert.pem`` (the CA that signs the clients),
``server-cert.pem`` and ``server-key.pem``, optionally ``ca-crl.pem`` (revoked certificates)
and ``dh-params.pem``. :func:`tls_creds_from_properties` reads the options with QEMU's errors;
:func:`server_context` turns them into an :class:`ssl.SSLContext` with QEMU's errors for
missing files (crypto/tlscreds.c ``qcrypto_tls_creds_get_path``). For ``endpoint=client``
(a monitor connecting out, ``server=off``), :func:`client_context` reads ``ca-cert.pem`` and
optionally ``client-cert.pem``/``client-key.pem``.

With ``verify-peer=on`` (QEMU's default) the client must present a certificate the CA signed,
or the handshake fails; its subject's distinguished name (:func:`peer_distinguished_name`,
written as QEMU writes it) is then what the chardev's ``tls-authz`` object is asked about.

Handshakes run inside the event loop's SSL protocol, so a slow or stalled client never blocks
it; one that has not finished within :data:`TLS_HANDSHAKE_TIMEOUT` is dropped
(``ssl_handshake_timeout`` of ``loop.create_server``, passed by
:func:`qmonitor.server.listen.start_listener`).

Where we differ on purpose (docs/SECURITY.md):

- The TLS library is OpenSSL (Python's ``ssl``), not GnuTLS: the texts after QEMU's lead-in
  for unreadable PEM files (``Cannot load certificate '...' & key '...': REASON``) are
  OpenSSL's, and GnuTLS ``priority`` strings are refused rather than misread.
- ``sanity-check`` is accepted but QEMU's start-up checks of the certificates' dates, key
  usages and chain are not made; OpenSSL still checks that the key matches the certificate,
  and every handshake checks the peer's chain and dates.
- ``passwordid`` (an encrypted key) is refused: qmonitor has no ``secret`` objects.
- Without ``dh-params.pem`` OpenSSL's built-in groups are used where QEMU generates
  parameters.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from qmonitor.cmdline.objects import ObjectError, PropertyVisitor, members_of
from qmonitor.security.x509dn import distinguished_name
from qmonitor.server.listen import TLS_HANDSHAKE_TIMEOUT as TLS_HANDSHAKE_TIMEOUT  # re-exported

TLS_CREDS_X509: Final = "tls-creds-x509"

# crypto/tlscredsx509.h: the file names in the credentials directory.
CA_CERT: Final = "ca-cert.pem"
CA_CRL: Final = "ca-crl.pem"
SERVER_CERT: Final = "server-cert.pem"
SERVER_KEY: Final = "server-key.pem"
CLIENT_CERT: Final = "client-cert.pem"
CLIENT_KEY: Final = "client-key.pem"
DH_PARAMS: Final = "dh-params.pem"

# qapi/crypto.json TlsCredsProperties, then TlsCredsX509Properties.
_MEMBERS: Final = (
    "verify-peer",
    "dir",
    "endpoint",
    "priority",
    "loaded",
    "sanity-check",
    "passwordid",
)


class TlsEndpoint(StrEnum):
    """qapi/crypto.json ``QCryptoTLSCredsEndpoint``: which side of the connection we are."""

    CLIENT = "client"  # QEMU's default (crypto/tlscreds.c qcrypto_tls_creds_init)
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class TlsCredsX509:
    """A ``tls-creds-x509`` object's properties.

    ``loaded``, ``priority`` and ``passwordid`` are kept as given, to be refused when the
    object is created (:func:`server_context`, :func:`client_context`), as QEMU refuses
    ``loaded`` (it sets properties then): an error in a later property, or a later
    ``-object``'s, is reported first, as QEMU reports it.
    """

    id: str
    dir: str | None
    endpoint: TlsEndpoint = TlsEndpoint.CLIENT
    verify_peer: bool = True
    sanity_check: bool = True
    loaded: bool | None = None
    priority: str | None = None
    passwordid: str | None = None

    def path(self, filename: str) -> str:
        """``DIR/FILE``, as crypto/tlscreds.c builds it."""
        return f"{self.dir}/{filename}"


def tls_creds_from_properties(properties: Mapping[str, object], *, keyval: bool) -> TlsCredsX509:
    """The ``tls-creds-x509`` an ``-object`` option describes, or :class:`ObjectError`.

    These are the checks QEMU makes while it reads the option (its QAPI visitor, in
    qapi/crypto.json's member order); nothing is refused for being unsupported yet.
    """
    members = members_of(properties)
    visitor = PropertyVisitor(keyval=keyval)
    verify_peer = visitor.boolean(members, "verify-peer", "verify-peer")
    directory = visitor.string(members, "dir", "dir")
    endpoint = visitor.enum(members, "endpoint", "endpoint", TlsEndpoint)
    priority = visitor.string(members, "priority", "priority")
    loaded = visitor.boolean(members, "loaded", "loaded")
    sanity_check = visitor.boolean(members, "sanity-check", "sanity-check")
    passwordid = visitor.string(members, "passwordid", "passwordid")
    visitor.unexpected(members, _MEMBERS)
    return TlsCredsX509(
        str(properties["id"]),
        directory,
        endpoint or TlsEndpoint.CLIENT,
        True if verify_peer is None else verify_peer,
        True if sanity_check is None else sanity_check,
        loaded,
        priority,
        passwordid,
    )


def _refuse_unsettable(creds: TlsCredsX509) -> None:
    """What creating the object refuses before its files are looked at.

    QEMU sets the properties before it loads the files (qom/object_interfaces.c
    ``user_creatable_add_type``): ``loaded`` is read-only there. ``priority`` (a GnuTLS
    priority string) and ``passwordid`` (a ``secret`` object) are qmonitor's refusals, after
    every check QEMU makes of the option.
    """
    if creds.loaded is not None:
        raise ObjectError(f"Property '{TLS_CREDS_X509}.loaded' is not writable", located=False)
    if creds.priority is not None:
        raise ObjectError("priority: GnuTLS priority strings are not supported by qmonitor")
    if creds.passwordid is not None:
        raise ObjectError("passwordid: encrypted keys are not supported by qmonitor")


def _credential_path(creds: TlsCredsX509, filename: str, *, required: bool) -> str | None:
    """crypto/tlscreds.c qcrypto_tls_creds_get_path: the file's path, checked with stat()."""
    if creds.dir is None:
        if required:
            raise ObjectError("Missing 'dir' property value", located=False)
        return None
    path = creds.path(filename)
    try:
        os.stat(path)
    except FileNotFoundError:
        if not required:
            return None
        raise ObjectError(
            f"Unable to access credentials {path}: No such file or directory", located=False
        ) from None
    except OSError as error:
        raise ObjectError(
            f"Unable to access credentials {path}: {error.strerror}", located=False
        ) from None
    return path


def _reason(error: ssl.SSLError | OSError) -> str:
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error)
    return str(error.strerror or error)


def _load_trust(context: ssl.SSLContext, creds: TlsCredsX509, ca_cert: str) -> None:
    try:
        context.load_verify_locations(cafile=ca_cert)
    except (ssl.SSLError, OSError) as error:
        if creds.sanity_check:  # crypto/tlscredsx509.c qcrypto_tls_creds_load_ca_cert_list
            raise ObjectError(
                f"Unable to import CA certificate list {ca_cert}", located=False
            ) from None
        raise ObjectError(
            f"Cannot load CA certificate '{ca_cert}': {_reason(error)}", located=False
        ) from None


def _load_pair(context: ssl.SSLContext, certificate: str, key: str) -> None:
    try:
        context.load_cert_chain(certificate, key)
    except (ssl.SSLError, OSError) as error:
        raise ObjectError(
            f"Cannot load certificate '{certificate}' & key '{key}': {_reason(error)}",
            located=False,
        ) from None


def server_context(creds: TlsCredsX509) -> ssl.SSLContext:
    """The server side of ``creds`` (crypto/tlscredsx509.c qcrypto_tls_creds_x509_load).

    The files are checked in QEMU's order, each with QEMU's error: ca-cert (required even
    with ``verify-peer=off``), ca-crl, server-cert, server-key, dh-params. ObjectError.
    """
    _refuse_unsettable(creds)
    ca_cert = _credential_path(creds, CA_CERT, required=True)
    ca_crl = _credential_path(creds, CA_CRL, required=False)
    certificate = _credential_path(creds, SERVER_CERT, required=True)
    key = _credential_path(creds, SERVER_KEY, required=True)
    dh_params = _credential_path(creds, DH_PARAMS, required=False)
    assert ca_cert is not None and certificate is not None and key is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_trust(context, creds, ca_cert)
    _load_pair(context, certificate, key)
    if ca_crl is not None:
        try:
            context.load_verify_locations(cafile=ca_crl)
        except (ssl.SSLError, OSError) as error:
            raise ObjectError(
                f"Cannot load CRL '{ca_crl}': {_reason(error)}", located=False
            ) from None
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if dh_params is not None:
        try:
            context.load_dh_params(dh_params)
        except (ssl.SSLError, OSError) as error:
            raise ObjectError(
                f"Unable to load DH parameters from {dh_params}: {_reason(error)}", located=False
            ) from None
    # crypto/tlssession.c: QEMU requests a certificate only with verify-peer; here a client
    # that does not present a valid one fails the handshake itself.
    context.verify_mode = ssl.CERT_REQUIRED if creds.verify_peer else ssl.CERT_NONE
    return context


def client_context(creds: TlsCredsX509) -> ssl.SSLContext:
    """The client side of ``creds``: ca-cert, and client-cert/client-key when both exist.

    With ``verify-peer=on`` the server's certificate and host name are checked
    (crypto/tlssession.c checks the chardev's host against the certificate).
    """
    _refuse_unsettable(creds)
    ca_cert = _credential_path(creds, CA_CERT, required=True)
    certificate = _credential_path(creds, CLIENT_CERT, required=False)
    key = _credential_path(creds, CLIENT_KEY, required=False)
    assert ca_cert is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_trust(context, creds, ca_cert)
    if certificate is not None and key is not None:
        _load_pair(context, certificate, key)
    if not creds.verify_peer:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def context_for(creds: TlsCredsX509) -> ssl.SSLContext:
    """The context for the side ``creds`` were made for."""
    if creds.endpoint is TlsEndpoint.SERVER:
        return server_context(creds)
    return client_context(creds)


@dataclass(frozen=True, slots=True)
class TlsCredentials:
    """A loaded ``tls-creds-x509``: its properties and the context to serve or connect with."""

    creds: TlsCredsX509
    context: ssl.SSLContext


def peer_distinguished_name(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    """The verified client certificate's subject as QEMU writes it; None without one.

    ``getpeercert(binary_form=True)`` gives the DER even where the parsed form is empty.
    Raises :class:`~qmonitor.security.x509dn.DistinguishedNameError` for a subject QEMU cannot
    write either (QEMU refuses that client).
    """
    certificate = ssl_object.getpeercert(binary_form=True)
    if certificate is None:
        return None
    return distinguished_name(certificate)
