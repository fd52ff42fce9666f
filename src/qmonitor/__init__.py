"""qmonitor: QEMU's monitor as a Python library and program.

One command API for every command, sync or async: define a typed function once and get the
QMP handler, the human monitor command and the ``query-qmp-schema`` entry.
"""

from qmonitor.core.commands import (
    Completion,
    CompletionError,
    Context,
    HumanSyntax,
    Progress,
)
from qmonitor.core.errors import ErrorClass, QMPError
from qmonitor.core.schema import QMPName
from qmonitor.server.monitor import Monitor

__all__ = [
    "Completion",
    "CompletionError",
    "Context",
    "ErrorClass",
    "HumanSyntax",
    "Monitor",
    "Progress",
    "QMPError",
    "QMPName",
]
__version__ = "0.1.0"
