"""QMP capabilities (qapi/control.json ``QMPCapability``) and ``qmp_capabilities``'s arguments.

A module of its own so that it stays interpreted when the request path is compiled (setup.py):
:func:`~qmonitor.core.schema.compile_signature` reads a function's type hints, and a function
compiled by mypyc has none.
"""

from __future__ import annotations

from enum import StrEnum

from qmonitor.core.schema import compile_signature


class QMPCapability(StrEnum):
    """Capabilities a client may enable (qapi/control.json ``QMPCapability``)."""

    OOB = "oob"


def qmp_capabilities_arguments(enable: list[QMPCapability] | None = None) -> None:
    """qapi/control.json ``qmp_capabilities``: the arguments, checked as QEMU checks them."""


CAPABILITIES_SIGNATURE = compile_signature(qmp_capabilities_arguments)
