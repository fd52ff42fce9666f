"""qmonitor: QEMU's monitor as a Python library and program.

One command API for every command, sync or async: define a typed function once and get the
QMP handler, the human monitor command and the ``query-qmp-schema`` entry.

The public API is what this module exports; everything else is internal.
"""

from qmonitor.core.commands import (
    Completion,
    CompletionError,
    Context,
    HumanSyntax,
    Progress,
)
from qmonitor.core.errors import ErrorClass, QMPError
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
from qmonitor.server.human import register_human_monitor_command, serve_human
from qmonitor.server.jobs import Job, JobManager
from qmonitor.server.monitor import Monitor

__all__ = [
    "JSON_NULL",
    "Completion",
    "CompletionError",
    "Context",
    "ErrorClass",
    "HumanSyntax",
    "Job",
    "JobManager",
    "Monitor",
    "Progress",
    "QMPError",
    "QMPName",
    "Size",
    "StrOrNull",
    "UInt8",
    "UInt16",
    "UInt32",
    "UInt64",
    "Variants",
    "register_human_monitor_command",
    "serve_human",
]
__version__ = "0.1.0"
