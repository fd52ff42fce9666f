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
from qmonitor.core.schema import QMPName, Size, UInt64
from qmonitor.core.session import Authorizer, Session, SessionKind
from qmonitor.core.trace import Tracer
from qmonitor.hmp.sizes import SizeError, strtosz
from qmonitor.server.hmp_session import HumanSession
from qmonitor.server.human import register_human_monitor_command, report_error, serve_human
from qmonitor.server.jobs import Job, JobManager
from qmonitor.server.listen import Address, AddressError, parse_address
from qmonitor.server.monitor import Monitor

__all__ = [
    "Address",
    "AddressError",
    "Authorizer",
    "Clock",
    "Completion",
    "CompletionError",
    "Context",
    "ErrorClass",
    "HumanSession",
    "HumanSyntax",
    "Job",
    "JobManager",
    "Monitor",
    "Progress",
    "QMPError",
    "QMPName",
    "QMonitorError",
    "Session",
    "SessionKind",
    "Size",
    "SizeError",
    "StateError",
    "Tracer",
    "UInt64",
    "parse_address",
    "register_human_monitor_command",
    "report_error",
    "serve_human",
    "strtosz",
]
__version__ = "0.1.0"
