"""qmonitor: QEMU's monitor as a Python library and program.

One command API for every command, sync or async: define a typed function once and get the
QMP handler, the human monitor command and the ``query-qmp-schema`` entry.

The public API is what this module exports; everything else is internal.
"""

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
from qmonitor.core.yank import MIGRATION_INSTANCE, AnyYankInstance, YankRegistry
from qmonitor.hmp.sizes import SizeError, strtosz
from qmonitor.server.authorize import PolicyError, load_policy
from qmonitor.server.exposure import insecure_tcp_error
from qmonitor.server.faults import install_faults
from qmonitor.server.hmp_session import HumanSession
from qmonitor.server.human import register_human_monitor_command, report_error, serve_human
from qmonitor.server.jobs import Job, JobManager
from qmonitor.server.listen import Address, AddressError, AddressInUse, parse_address
from qmonitor.server.monitor import Monitor

__all__ = [
    "JSON_NULL",
    "MIGRATION_INSTANCE",
    "Address",
    "AddressError",
    "AddressInUse",
    "AnyYankInstance",
    "Authorizer",
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
    "PolicyError",
    "Progress",
    "QMPError",
    "QMPName",
    "QMonitorError",
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
    "ghash_iteration_order",
    "insecure_tcp_error",
    "install_faults",
    "load_policy",
    "parse_address",
    "parse_faults",
    "qdict_bucket",
    "register_human_monitor_command",
    "report_error",
    "serve_human",
    "strtosz",
]
__version__ = "0.1.0"
