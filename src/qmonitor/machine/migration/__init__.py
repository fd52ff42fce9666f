"""Live migration between two ``qmonitor run`` processes: iterative pre-copy, as QEMU does it.

Source (QEMU migration/migration.c ``migration_thread`` and migration/ram.c):

1. *setup*: connect to the URI (``tcp:HOST:PORT``, ``unix:PATH``, ``file:PATH``, or
   ``fd:NAME``, a descriptor passed to the monitor), mark every page dirty, send the stream
   header;
2. *active*: pass after pass, take the dirty map (``MIGRATION_PASS`` n, ``dirty-sync-count``) and
   send its pages: all-zero pages as a 16-byte record, others in runs of up to 1 MiB, under the
   ``max-bandwidth`` cap (enforced per 100 ms, QEMU's ``XFER_LIMIT_RATIO``). The guest keeps
   running and dirtying pages meanwhile;
3. when what is still dirty could be sent within ``downtime-limit`` at the bandwidth measured on
   the last pass, the guest is stopped (``finish-migrate``, STOP), the last dirty pages are sent
   without the cap, then the device state (workload step, seed, guest clock, run state);
4. the destination confirms it has loaded everything; the source is ``postmigrate``, the
   status ``completed`` and ``downtime`` the time the guest was stopped for.

If anything fails, or ``migrate_cancel`` is called, the connection is closed and the guest goes
back to the state it had (running: RESUME), its RAM untouched: the source only ever reads it.

While a migration exists, source or destination, it is QEMU's yank instance ``{"type":
"migration"}`` (:mod:`qmonitor.core.yank`; migration/migration.c registers it in
``qmp_migrate`` and ``qemu_start_incoming_migration`` and unregisters it when the migration
ends). Yanking it shuts the connection down without telling the migration (a ``file:`` stream
has nothing to shut down; a pipe passed for ``fd:`` is interrupted as if shut down, see
:class:`.channel._Descriptor`), so blocked I/O fails at once: the source's status is then ``failed``
with the socket error, as QEMU's (``Unable to write to socket: Broken pipe``), not
``cancelled``, and the destination fails its load. A destination still waiting for its
connection has nothing to yank yet, as in QEMU (the yank function comes with the channel).

Destination (``-incoming URI`` or ``migrate-incoming``): the run state is ``inmigrate`` and the
guest never runs until the stream's end record has been received and applied; pages are read
straight into guest RAM (the guest is not running, so nothing else writes it). A broken stream
fails the incoming migration; the process then exits with an error, as QEMU's does ("load of
migration failed"), so a half-loaded guest can never be started.

The stream (our own; QEMU's is a sequence of device sections)::

    header  8-byte magic b"QMMIGR\\0\\1", 4-byte length, JSON {"ram-size", "page-size", "name"}
    record  16 bytes: kind (1 = pages follow, 2 = zero pages, 3 = end), count, first page
    end     after a kind-3 record: 4-byte length, JSON device state
    ack     1 byte from the destination once it has loaded the state (not for file: or fd:)

Threads: the sending and receiving loops run in worker threads with blocking sockets, so the
bytes go from guest RAM to the kernel without copies (``sendall`` / ``readinto`` on memoryviews)
and without holding the GIL for long; the event loop only takes the dirty map between passes
and keeps serving monitors.

The modules, one job each (none imports this package, so there is no circle; everything is
re-exported here):

- :mod:`.types`: what ``query-migrate`` shows (status, statistics, info) and the parameters;
- :mod:`.uri`: the migration URIs;
- :mod:`.wire`: the stream's format, sans I/O: every header and record packed and unpacked
  (and checked) there, and :class:`MigrationStreamError`; source and destination only move
  the bytes;
- :mod:`.channel`: the blocking channels (sockets, files, passed descriptors) and the threads
  that copy pages through them;
- :mod:`.source`: :class:`OutgoingMigration`; :mod:`.destination`: :class:`IncomingMigration`;
- :mod:`.manager`: :class:`MigrationManager`, the migration state of one machine.
"""

from qmonitor.machine.migration.channel import (
    BACKGROUND_NICENESS,
    GIL_SWITCH_INTERVAL,
    TakeNamedFd,
    fd_channel,
    incoming_fd,
    migration_executor,
    parse_fd_number,
)
from qmonitor.machine.migration.destination import IncomingMigration
from qmonitor.machine.migration.manager import MigrationManager
from qmonitor.machine.migration.source import XFER_LIMIT_RATIO, OutgoingMigration
from qmonitor.machine.migration.types import (
    IN_PROGRESS,
    MAX_DOWNTIME_MS,
    MigrationInfo,
    MigrationParameters,
    MigrationStats,
    MigrationStatus,
    Notify,
    SocketAddress,
)
from qmonitor.machine.migration.uri import INVALID_PROTOCOL, MigrationAddress, parse_uri
from qmonitor.machine.migration.wire import (
    ACK,
    CHUNK_PAGES,
    MAGIC,
    MAX_RECORD_PAGES,
    RECORD_END,
    RECORD_PAGES,
    RECORD_ZERO,
    MigrationStreamError,
)

__all__ = [
    "ACK",
    "BACKGROUND_NICENESS",
    "CHUNK_PAGES",
    "GIL_SWITCH_INTERVAL",
    "INVALID_PROTOCOL",
    "IN_PROGRESS",
    "MAGIC",
    "MAX_DOWNTIME_MS",
    "MAX_RECORD_PAGES",
    "RECORD_END",
    "RECORD_PAGES",
    "RECORD_ZERO",
    "XFER_LIMIT_RATIO",
    "IncomingMigration",
    "MigrationAddress",
    "MigrationInfo",
    "MigrationManager",
    "MigrationParameters",
    "MigrationStats",
    "MigrationStatus",
    "MigrationStreamError",
    "Notify",
    "OutgoingMigration",
    "SocketAddress",
    "TakeNamedFd",
    "fd_channel",
    "incoming_fd",
    "migration_executor",
    "parse_fd_number",
    "parse_uri",
]
