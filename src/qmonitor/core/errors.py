"""qmonitor's errors: one root, and the errors a command can report with QEMU's five classes.

Every exception qmonitor defines derives from :class:`QMonitorError`, so an embedder can catch
"anything qmonitor refused" in one clause. Where callers have long caught a built-in base
(``ValueError`` for text that does not parse, ``RuntimeError`` for an operation in the wrong
state, ``OSError`` for an address in use) the class keeps that base as well.

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


class QMonitorError(Exception):
    """The root of every exception qmonitor defines."""


class StateError(QMonitorError, RuntimeError):
    """An operation was asked of an object in a state that does not allow it: a bug in the
    caller (a connection used after it closed, a job moved where its table forbids, a
    completion used twice, a resume without a suspend), not an error to report to a client."""


class QMPError(QMonitorError):
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
