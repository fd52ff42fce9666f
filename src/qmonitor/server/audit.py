"""The audit trail: one JSON object per line saying who did what (``--audit-log FILE``).

An :class:`AuditLog` is a trace callback (:data:`qmonitor.core.dispatch.Tracer`:
``audit(event_name, info)``), so it consumes the same events as the monitor's tracing. It keeps
the events of :data:`AUDIT_EVENTS` and writes each as one line::

    {"time": "2024-05-01T12:00:00.123Z", "event": "command.denied",
     "identity": "O=Example,CN=bob", "transport": "tcp", "peer": "192.0.2.7:51234",
     "role": "observer", "command": "stop", "id": 7, "arguments": {}, "error_class":
     "GenericError", "error": "The command 'stop' is not allowed for role 'observer'"}

The record is built from ``info`` in this order: ``time`` (UTC, ISO 8601, milliseconds),
``event``, then ``identity``, ``transport``, ``peer``, ``role``, ``command``, ``id`` (only
when the request had one: ``info`` holds the key), ``arguments``, ``duration_ms``,
``error_class``, ``error``, then any other keys of ``info`` as given. An ``identity`` given as
an :class:`~qmonitor.security.policy.Identity` is written as its label, with its transport and
peer. ``arguments`` are copied with the parameters the command declares secret (the
``secret_parameters`` lookup, by command name) replaced by ``"***"``; values that are not
JSON are written as their ``str()``.

How it writes, and why:

- **Never on the event loop.** The caller only builds the record and appends it to a queue; a
  writer thread does the I/O, so a slow or stuck disk cannot stall the monitor.
- **Bounded.** The queue holds at most :data:`AUDIT_QUEUE_RECORDS` records. A record that
  finds it full is dropped and counted, with one warning logged when dropping starts; as soon
  as the writer has caught up (or when a record is next accepted, whichever comes first) an
  ``audit.dropped`` record carrying the count is written where the records went missing.
  Records whose write fails (a full disk) are counted the same way and reported by an
  ``audit.dropped`` record once a write works again. Nothing is lost without a trace in the
  file and in the log.
- **Flushed per record.** Each record is one ``write()`` on a descriptor opened with
  ``O_APPEND``, so it is in the kernel's hands when the write returns (not ``fsync``-ed).
- **Rotation.** Before each batch the writer compares the path's inode with the open file's
  (logrotate moves the file, then expects a new one): if the path is gone or is another file,
  it opens the path again, creating it (mode 0600). ``copytruncate`` works too (``O_APPEND``).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Final

from qmonitor.core.commands import CommandRegistry
from qmonitor.core.record import Record
from qmonitor.core.schema import secret_parameters
from qmonitor.core.session import Identity

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger("qmonitor.audit")

AUDIT_QUEUE_RECORDS: Final = 10_000
"""Records waiting for the writer before new ones are dropped (and counted).

At a few hundred bytes a record this is a few MB at most; a disk that cannot take 10 000
records is not keeping up, and the monitor must not wait for it.
"""

AUDIT_EVENTS: Final = frozenset(
    {
        "session.opened",
        "session.closed",
        "auth.refused",
        "command.started",
        "command.complete",
        "command.failed",
        "command.denied",
    }
)
"""The trace events the audit trail keeps; other events on the trace path are not audited."""

DROPPED_EVENT: Final = "audit.dropped"
SECRET_MASK: Final = "***"

_FIRST_KEYS: Final = (
    "identity",
    "transport",
    "peer",
    "role",
    "command",
    "id",
    "arguments",
    "duration_ms",
    "error_class",
    "error",
)
_FILE_MODE: Final = 0o600  # identities and arguments: for the operator's eyes only


def _no_secrets(command: str) -> Collection[str]:
    return ()


def registry_secrets(registry: CommandRegistry) -> Callable[[str], Collection[str]]:
    """The ``secret_parameters`` lookup of a registry: the parameters each command declares
    :class:`~qmonitor.core.schema.Secret` (``Annotated[str, Secret()]``)."""

    def lookup(name: str) -> Collection[str]:
        command = registry.get(name)
        return secret_parameters(command.signature.parameters) if command is not None else ()

    return lookup


def _now() -> str:
    import datetime  # with the first record, not at start-up (orjson's reason, below)

    moment = datetime.datetime.now(datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _encode(record: Mapping[str, object]) -> bytes:
    # Imported with the first record: orjson imports datetime, uuid and platform (a few ms)
    # that a server without an audit log need not load before its greeting.
    import orjson

    try:
        return orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n"
    except TypeError:  # an integer beyond 64 bits, which orjson refuses
        return (json.dumps(record, default=str, ensure_ascii=False) + "\n").encode()


class _Dropped(Record):
    """A place in the queue where ``count`` records were dropped."""

    __slots__ = ("count", "reason")

    count: Final[int]
    reason: Final[str]

    def __init__(self, count: int, reason: str) -> None:
        self.count = count
        self.reason = reason


class AuditLog:
    """Writes audit records to ``path`` from a writer thread (see the module docstring).

    Opening the file happens here, so a path that cannot be written fails at start
    (OSError). ``secret_parameters(command)`` names the parameters of ``command`` whose
    values are never written. Call :meth:`close` to write what is queued and stop.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_queued: int = AUDIT_QUEUE_RECORDS,
        secret_parameters: Callable[[str], Collection[str]] = _no_secrets,
    ) -> None:
        self.path = str(path)
        self.max_queued = max_queued
        self._secret_parameters = secret_parameters
        self._descriptor = self._open()
        self._condition = threading.Condition()
        self._queue: collections.deque[bytes | _Dropped] = collections.deque()
        self._dropped_in_queue = 0  # refused by a full queue since the last accepted record
        self._closing = False
        self._write_failed = 0  # records whose write failed since the last write that worked
        self._thread = threading.Thread(target=self._run, name="qmonitor-audit", daemon=True)
        self._thread.start()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)

    # -- the caller's side (any thread; usually the event loop) -----------------------------

    def __call__(self, event: str, info: Mapping[str, object]) -> None:
        """Record ``event`` (a tracer callback); returns at once, never does I/O."""
        if event not in AUDIT_EVENTS:
            return
        self._enqueue(_encode(self.record(event, info)))

    def record(self, event: str, info: Mapping[str, object]) -> dict[str, object]:
        """The record written for ``event`` with ``info`` (see the module docstring)."""
        record: dict[str, object] = {"time": _now(), "event": event}
        fields = dict(info)
        identity = fields.get("identity")
        if isinstance(identity, Identity):
            fields["identity"] = identity.label
            fields.setdefault("transport", identity.transport)
            fields.setdefault("peer", identity.peer)
        arguments = fields.get("arguments")
        if isinstance(arguments, Mapping):
            secrets = self._secret_parameters(str(fields.get("command", "")))
            fields["arguments"] = {
                key: SECRET_MASK if key in secrets else value for key, value in arguments.items()
            }
        for key in _FIRST_KEYS:
            if key in fields:
                record[key] = fields.pop(key)
        record.update(fields)
        return record

    def _enqueue(self, line: bytes) -> None:
        with self._condition:
            if self._closing:
                return
            if len(self._queue) >= self.max_queued:
                self._dropped_in_queue += 1
                if self._dropped_in_queue == 1:
                    log.warning("audit log %s: the writer is behind, dropping records", self.path)
                return
            if self._dropped_in_queue:
                self._queue.append(_Dropped(self._dropped_in_queue, "queue full"))
                self._dropped_in_queue = 0
            self._queue.append(line)
            self._condition.notify()

    def close(self) -> None:
        """Write everything queued (and a last ``audit.dropped`` if due), then stop."""
        with self._condition:
            if self._closing:
                return
            if self._dropped_in_queue:
                self._queue.append(_Dropped(self._dropped_in_queue, "queue full"))
                self._dropped_in_queue = 0
            self._closing = True
            self._condition.notify()
        self._thread.join()
        os.close(self._descriptor)

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if not self._queue:
                    break
                batch = list(self._queue)
                self._queue.clear()
            self._reopen_if_moved()
            for item in batch:
                if isinstance(item, _Dropped):
                    self._report_dropped(item.count, item.reason)
                else:
                    self._write(item)
            with self._condition:  # caught up: report the drops now, where they happened
                dropped = 0 if self._queue else self._dropped_in_queue
                self._dropped_in_queue -= dropped
            if dropped:
                self._report_dropped(dropped, "queue full")
        if self._write_failed:
            log.error(
                "audit log %s: %d records could not be written before it closed",
                self.path,
                self._write_failed,
            )

    def _reopen_if_moved(self) -> None:
        """Open the path again if it is no longer the file we write (logrotate)."""
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        except OSError as error:
            log.error("audit log %s: cannot check the file: %s", self.path, error.strerror)
            return
        opened = os.fstat(self._descriptor)
        if current is not None and (current.st_dev, current.st_ino) == (
            opened.st_dev,
            opened.st_ino,
        ):
            return
        try:
            descriptor = self._open()
        except OSError as error:  # keep writing where we were rather than lose records
            log.error("audit log %s: cannot open it again: %s", self.path, error.strerror)
            return
        os.close(self._descriptor)
        self._descriptor = descriptor

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._descriptor, view)
            view = view[written:]

    def _write(self, line: bytes) -> bool:
        """Write one record; a failure is counted, and reported after the next success."""
        if self._write_failed and not self._flush_failures():
            self._write_failed += 1
            return False
        try:
            self._write_all(line)
        except OSError as error:
            if not self._write_failed:
                log.error("audit log %s: write failed: %s", self.path, error.strerror)
            self._write_failed += 1
            return False
        return True

    def _flush_failures(self) -> bool:
        """Write the ``audit.dropped`` record for failed writes; whether it was written."""
        count = self._write_failed
        line = _encode(
            {"time": _now(), "event": DROPPED_EVENT, "count": count, "reason": "write failed"}
        )
        try:
            self._write_all(line)
        except OSError:
            return False
        self._write_failed = 0
        log.warning("audit log %s: %d records were lost (write failed)", self.path, count)
        return True

    def _report_dropped(self, count: int, reason: str) -> None:
        line = _encode({"time": _now(), "event": DROPPED_EVENT, "count": count, "reason": reason})
        if self._write(line):
            log.warning("audit log %s: %d records were dropped (%s)", self.path, count, reason)
        else:
            self._write_failed += count - 1  # the report itself was counted as one
