"""The QAPI types of ``add-fd`` and ``query-fdsets`` (qapi/misc.json).

Kept out of :mod:`qmonitor.server.fds`, which every monitor imports before it greets: these
dataclasses (the schema reads their fields) are made only when an fd set is used or the fd
commands are registered (start-up time, docs/PERFORMANCE.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AddfdInfo:
    """qapi/misc.json ``AddfdInfo``."""

    fdset_id: int
    fd: int


@dataclass(frozen=True, slots=True)
class FdsetFdInfo:
    """qapi/misc.json ``FdsetFdInfo``."""

    fd: int
    opaque: str | None = None


@dataclass(frozen=True, slots=True)
class FdsetInfo:
    """qapi/misc.json ``FdsetInfo``."""

    fdset_id: int
    fds: list[FdsetFdInfo]
