"""The security layer's errors, apart from the code that raises them: whoever reports or catches
them (the programs, the public API, the server's connection checks) need not load the policy's
parser (TOML, the HMP argument parser) or the certificate reader to do so (start-up time)."""

from __future__ import annotations

from qmonitor.core.errors import QMonitorError


class PolicyError(QMonitorError, ValueError):
    """A policy file that cannot be used; ``str()`` is one line naming the file and the place."""


class DistinguishedNameError(QMonitorError, ValueError):
    """The certificate's subject cannot be written (QEMU refuses such a client)."""
