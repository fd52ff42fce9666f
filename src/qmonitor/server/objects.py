"""The ``-object`` types a monitor's TLS needs, made where QEMU makes them.

:func:`qmonitor.cmdline.parse_command_line` calls a :class:`CommandLineObjects` at QEMU's two
moments (softmmu/vl.c): while it reads each ``tls-creds-x509`` or ``authz-*`` option, the
properties are checked (``object_option_parse``); after the option loop, before the chardevs,
the objects are created in command-line order (``qemu_create_early_backends``): credentials
loaded into an :class:`ssl.SSLContext`, list files read. So with several bad options the
error printed is the one QEMU prints first: a bad property anywhere before any file is
looked at, and a missing file before a chardev naming credentials that do not exist.

Use::

    objects = CommandLineObjects()
    command_line = parse_command_line(argv, objects=objects)
    objects.authorizer.is_allowed("auth0", identity)
    objects.credentials["tls0"].context
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from qmonitor.cmdline.objects import ObjectOption
    from qmonitor.security.authz import Authz
    from qmonitor.server.authorize import Authorizer
    from qmonitor.server.tls import TlsCredentials, TlsCredsX509

MADE_TYPES: Final = frozenset(
    {"authz-simple", "authz-list", "authz-list-file", "authz-listfile", "tls-creds-x509"}
)
"""The ``-object`` types made here (``security.authz.AUTHZ_TYPES`` and
``server.tls.TLS_CREDS_X509``); QEMU creates them all early (vl.c object_create_early).
Spelled out so that a command line without them loads neither the authz types nor
:mod:`ssl`'s credentials code before the monitors listen."""


class CommandLineObjects:
    """The command line's authz objects and TLS credentials (an ``ObjectMaker``)."""

    def __init__(self) -> None:
        self._authorizer: Authorizer | None = None
        self.credentials: dict[str, TlsCredentials] = {}
        """The loaded ``tls-creds-x509`` objects, by id, for ``tls-creds=``."""
        self._read: dict[int, Authz | TlsCredsX509] = {}

    @property
    def authorizer(self) -> Authorizer:
        """The authz objects, by id, for ``tls-authz=``."""
        if self._authorizer is None:
            from qmonitor.server.authorize import Authorizer

            self._authorizer = Authorizer()
        return self._authorizer

    @property
    def qom_types(self) -> frozenset[str]:
        """The types made here."""
        return MADE_TYPES

    def read(self, option: ObjectOption) -> None:
        """The option's properties, checked with QEMU's errors (ObjectError)."""
        from qmonitor.security.authz import authz_from_properties
        from qmonitor.server.tls import TLS_CREDS_X509, tls_creds_from_properties

        properties = option.properties
        if properties["qom-type"] == TLS_CREDS_X509:
            spec: Authz | TlsCredsX509 = tls_creds_from_properties(properties, keyval=option.keyval)
        else:
            spec = authz_from_properties(properties, keyval=option.keyval)
        self._read[id(option)] = spec

    def create(self, option: ObjectOption) -> None:
        """The object, made (ObjectError with QEMU's message if it cannot be)."""
        from qmonitor.server.tls import TlsCredentials, TlsCredsX509, context_for

        spec = self._read.pop(id(option))
        if isinstance(spec, TlsCredsX509):
            self.credentials[spec.id] = TlsCredentials(spec, context_for(spec))
        else:
            self.authorizer.add(spec)
