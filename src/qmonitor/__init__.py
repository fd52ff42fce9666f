"""qmonitor: QEMU's monitor as a Python library and program.

One command API for every command, sync or async: define a typed function once and get the
QMP handler, the human monitor command and the ``query-qmp-schema`` entry.

The public API is what this module exports; everything else is internal.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qmonitor.core.clock import Clock
    from qmonitor.core.commands import (
        Completion,
        CompletionError,
        Context,
        HumanSyntax,
        Progress,
    )
    from qmonitor.core.errors import ErrorClass, QMonitorError, QMPError, StateError
    from qmonitor.core.faults import FaultPoint, FaultRule, FaultRuleError, FaultSet, parse_faults
    from qmonitor.core.ghash import iteration_order as ghash_iteration_order
    from qmonitor.core.jobs import JobStatus
    from qmonitor.core.qdict import qdict_bucket
    from qmonitor.core.record import Record
    from qmonitor.core.schema import (
        JSON_NULL,
        QMPName,
        Size,
        StrOrNull,
        UInt8,
        UInt16,
        UInt32,
        UInt64,
        Variants,
    )
    from qmonitor.core.session import Authorizer, Session, SessionKind
    from qmonitor.core.trace import Tracer
    from qmonitor.core.yank import YankRegistry
    from qmonitor.core.yank_instances import MIGRATION_INSTANCE, AnyYankInstance
    from qmonitor.hmp.sizes import SizeError, strtosz
    from qmonitor.server.authorize import PolicyError, load_policy
    from qmonitor.server.backends import (
        BackendError,
        OpenedBackend,
        open_backend,
        serve_monitor_on_backend,
    )
    from qmonitor.server.exposure import insecure_tcp_error
    from qmonitor.server.faults import install_faults
    from qmonitor.server.fd_commands import named_fds, register_fd_commands
    from qmonitor.server.hmp_session import HumanSession
    from qmonitor.server.human import (
        cpu_selection,
        register_human_monitor_command,
        report_error,
        serve_human,
    )
    from qmonitor.server.jobs import Job, JobManager
    from qmonitor.server.listen import Address, AddressError, AddressInUse, parse_address
    from qmonitor.server.monitor import Monitor
    from qmonitor.server.peer import Admit
    from qmonitor.server.ringbuf import register_ringbuf_commands

_EXPORTS: dict[str, tuple[str, str]] = {
    "Clock": ("qmonitor.core.clock", "Clock"),
    "Completion": ("qmonitor.core.commands", "Completion"),
    "CompletionError": ("qmonitor.core.commands", "CompletionError"),
    "Context": ("qmonitor.core.commands", "Context"),
    "HumanSyntax": ("qmonitor.core.commands", "HumanSyntax"),
    "Progress": ("qmonitor.core.commands", "Progress"),
    "ErrorClass": ("qmonitor.core.errors", "ErrorClass"),
    "QMonitorError": ("qmonitor.core.errors", "QMonitorError"),
    "QMPError": ("qmonitor.core.errors", "QMPError"),
    "StateError": ("qmonitor.core.errors", "StateError"),
    "FaultPoint": ("qmonitor.core.faults", "FaultPoint"),
    "FaultRule": ("qmonitor.core.faults", "FaultRule"),
    "FaultRuleError": ("qmonitor.core.faults", "FaultRuleError"),
    "FaultSet": ("qmonitor.core.faults", "FaultSet"),
    "parse_faults": ("qmonitor.core.faults", "parse_faults"),
    "ghash_iteration_order": ("qmonitor.core.ghash", "iteration_order"),
    "JobStatus": ("qmonitor.core.jobs", "JobStatus"),
    "qdict_bucket": ("qmonitor.core.qdict", "qdict_bucket"),
    "Record": ("qmonitor.core.record", "Record"),
    "JSON_NULL": ("qmonitor.core.schema", "JSON_NULL"),
    "QMPName": ("qmonitor.core.schema", "QMPName"),
    "Size": ("qmonitor.core.schema", "Size"),
    "StrOrNull": ("qmonitor.core.schema", "StrOrNull"),
    "UInt8": ("qmonitor.core.schema", "UInt8"),
    "UInt16": ("qmonitor.core.schema", "UInt16"),
    "UInt32": ("qmonitor.core.schema", "UInt32"),
    "UInt64": ("qmonitor.core.schema", "UInt64"),
    "Variants": ("qmonitor.core.schema", "Variants"),
    "Authorizer": ("qmonitor.core.session", "Authorizer"),
    "Session": ("qmonitor.core.session", "Session"),
    "SessionKind": ("qmonitor.core.session", "SessionKind"),
    "Tracer": ("qmonitor.core.trace", "Tracer"),
    "MIGRATION_INSTANCE": ("qmonitor.core.yank_instances", "MIGRATION_INSTANCE"),
    "AnyYankInstance": ("qmonitor.core.yank_instances", "AnyYankInstance"),
    "YankRegistry": ("qmonitor.core.yank", "YankRegistry"),
    "SizeError": ("qmonitor.hmp.sizes", "SizeError"),
    "strtosz": ("qmonitor.hmp.sizes", "strtosz"),
    "PolicyError": ("qmonitor.server.authorize", "PolicyError"),
    "load_policy": ("qmonitor.server.authorize", "load_policy"),
    "BackendError": ("qmonitor.server.backends", "BackendError"),
    "OpenedBackend": ("qmonitor.server.backends", "OpenedBackend"),
    "open_backend": ("qmonitor.server.backends", "open_backend"),
    "serve_monitor_on_backend": ("qmonitor.server.backends", "serve_monitor_on_backend"),
    "insecure_tcp_error": ("qmonitor.server.exposure", "insecure_tcp_error"),
    "install_faults": ("qmonitor.server.faults", "install_faults"),
    "named_fds": ("qmonitor.server.fd_commands", "named_fds"),
    "register_fd_commands": ("qmonitor.server.fd_commands", "register_fd_commands"),
    "HumanSession": ("qmonitor.server.hmp_session", "HumanSession"),
    "cpu_selection": ("qmonitor.server.human", "cpu_selection"),
    "register_human_monitor_command": ("qmonitor.server.human", "register_human_monitor_command"),
    "report_error": ("qmonitor.server.human", "report_error"),
    "serve_human": ("qmonitor.server.human", "serve_human"),
    "Job": ("qmonitor.server.jobs", "Job"),
    "JobManager": ("qmonitor.server.jobs", "JobManager"),
    "Address": ("qmonitor.server.listen", "Address"),
    "AddressError": ("qmonitor.server.listen", "AddressError"),
    "AddressInUse": ("qmonitor.server.listen", "AddressInUse"),
    "parse_address": ("qmonitor.server.listen", "parse_address"),
    "Admit": ("qmonitor.server.peer", "Admit"),
    "register_ringbuf_commands": ("qmonitor.server.ringbuf", "register_ringbuf_commands"),
    "Monitor": ("qmonitor.server.monitor", "Monitor"),
}
"""Each exported name: the module that defines it, and its name there."""

__all__ = [
    "JSON_NULL",
    "MIGRATION_INSTANCE",
    "Address",
    "AddressError",
    "AddressInUse",
    "Admit",
    "AnyYankInstance",
    "Authorizer",
    "BackendError",
    "Clock",
    "Completion",
    "CompletionError",
    "Context",
    "ErrorClass",
    "FaultPoint",
    "FaultRule",
    "FaultRuleError",
    "FaultSet",
    "HumanSession",
    "HumanSyntax",
    "Job",
    "JobManager",
    "JobStatus",
    "Monitor",
    "OpenedBackend",
    "PolicyError",
    "Progress",
    "QMPError",
    "QMPName",
    "QMonitorError",
    "Record",
    "Session",
    "SessionKind",
    "Size",
    "SizeError",
    "StateError",
    "StrOrNull",
    "Tracer",
    "UInt8",
    "UInt16",
    "UInt32",
    "UInt64",
    "Variants",
    "YankRegistry",
    "cpu_selection",
    "ghash_iteration_order",
    "insecure_tcp_error",
    "install_faults",
    "load_policy",
    "named_fds",
    "open_backend",
    "parse_address",
    "parse_faults",
    "qdict_bucket",
    "register_fd_commands",
    "register_human_monitor_command",
    "register_ringbuf_commands",
    "report_error",
    "serve_human",
    "serve_monitor_on_backend",
    "strtosz",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import an exported name's module on first use (PEP 562).

    ``import qmonitor`` costs nothing until a name is used: the pytest plugin
    (``qmonitor.testing.pytest_plugin``, loaded by every pytest run where qmonitor is
    installed) imports this package, and a run that never uses it should not pay for the
    server's modules (about 100 ms).
    """
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'qmonitor' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
