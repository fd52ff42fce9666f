"""The state of a migration as ``query-migrate`` shows it, and its tunables
(qapi/migration.json)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from qmonitor.machine.machine import PAGE_SIZE

Notify = Callable[[str, dict[str, Any]], None]
"""How migration sends ``MIGRATION`` / ``MIGRATION_PASS`` (only with the ``events`` capability)."""


class MigrationStatus(StrEnum):
    """qapi/migration.json ``MigrationStatus``."""

    NONE = "none"
    SETUP = "setup"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    ACTIVE = "active"
    POSTCOPY_ACTIVE = "postcopy-active"
    POSTCOPY_PAUSED = "postcopy-paused"
    POSTCOPY_RECOVER = "postcopy-recover"
    COMPLETED = "completed"
    FAILED = "failed"
    COLO = "colo"
    PRE_SWITCHOVER = "pre-switchover"
    DEVICE = "device"
    WAIT_UNPLUG = "wait-unplug"


IN_PROGRESS: Final = frozenset(
    {MigrationStatus.SETUP, MigrationStatus.ACTIVE, MigrationStatus.CANCELLING}
)


@dataclass(slots=True)
class MigrationStats:
    """qapi/migration.json ``MigrationStats`` (the ``ram`` member of ``query-migrate``)."""

    transferred: int = 0
    remaining: int = 0
    total: int = 0
    duplicate: int = 0
    skipped: int = 0
    normal: int = 0
    normal_bytes: int = 0
    dirty_pages_rate: int = 0
    mbps: float = 0.0
    dirty_sync_count: int = 0
    postcopy_requests: int = 0
    page_size: int = PAGE_SIZE
    multifd_bytes: int = 0
    pages_per_second: int = 0
    precopy_bytes: int = 0
    downtime_bytes: int = 0
    postcopy_bytes: int = 0
    dirty_sync_missed_zero_copy: int = 0


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """qapi/sockets.json ``SocketAddress`` as ``query-migrate`` shows a listening destination."""

    type: str
    host: str | None = None
    port: str | None = None
    ipv4: bool | None = None
    path: str | None = None


@dataclass(slots=True)
class MigrationInfo:
    """qapi/migration.json ``MigrationInfo``; absent members are left out, as QEMU does."""

    status: MigrationStatus | None = None
    ram: MigrationStats | None = None
    total_time: int | None = None
    expected_downtime: int | None = None
    downtime: int | None = None
    setup_time: int | None = None
    error_desc: str | None = None
    socket_address: list[SocketAddress] | None = None


@dataclass(slots=True)
class MigrationParameters:
    """The tunables ``migrate-set-parameters`` changes (qapi/migration.json, QEMU 7.2 defaults)."""

    max_bandwidth: int = 128 << 20  # bytes/s; QEMU MAX_THROTTLE; 0 means no cap
    downtime_limit: int = 300  # ms; QEMU DEFAULT_MIGRATE_SET_DOWNTIME


MAX_DOWNTIME_MS: Final = 2_000_000
"""QEMU migration.c ``MAX_MIGRATE_DOWNTIME`` (ms), the largest ``downtime-limit``."""
