"""Errors a command can report, with QEMU's five error classes.

QMP spec (docs/interop/qmp-spec.rst, section 2.4.2 "error"): an error reply carries a ``class``
and a human-readable ``desc``. QEMU only ever sends the five classes of ``QapiErrorClass``
(qapi/error.json); typed clients (qapi-rs, go-qemu) reject any other, so there is no way to
invent a new one here.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    """QEMU's ``QapiErrorClass`` (qapi/error.json)."""

    GENERIC_ERROR = "GenericError"  # everything that is not one of the below
    COMMAND_NOT_FOUND = "CommandNotFound"  # unknown command, or not yet negotiated
    DEVICE_NOT_ACTIVE = "DeviceNotActive"  # a device is present but not active
    DEVICE_NOT_FOUND = "DeviceNotFound"  # the named device does not exist
    KVM_MISSING_CAP = "KVMMissingCap"  # the KVM module lacks a capability


class QMPError(Exception):
    """An error that becomes ``{"error": {"class": ..., "desc": ...}}`` on the wire.

    Raise it from a handler (at submit or at completion) or pass it to ``Completion.fail``.
    Any other exception from a handler is a bug in that handler: it is logged with its traceback
    and reported to the client as a GenericError.
    """

    def __init__(self, desc: str, error_class: ErrorClass = ErrorClass.GENERIC_ERROR) -> None:
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class

    def __repr__(self) -> str:
        return f"QMPError({self.desc!r}, {self.error_class.value})"


class CommandNotFound(QMPError):
    """QEMU: ``The command NAME has not been found`` (qapi/qmp-dispatch.c)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"The command {name} has not been found", ErrorClass.COMMAND_NOT_FOUND)
