"""The one trace path: named records to the debug log and to every tracer (httpcore's _trace.py).

Everything worth following in a running monitor is recorded here, and only here: the
``session.opened`` / ``session.closed`` of every client, the ``command.started`` /
``command.complete`` / ``command.failed`` of every request (with the peer that sent it), a
``job.<status>`` for every move of a job, ``event.dropped`` when a client that does not
read is disconnected, and ``fault.fired`` for every injected fault (:mod:`qmonitor.core.faults`).
Each record goes to the ``qmonitor.trace`` logger as a sentence, at the level
:data:`LOG_LEVELS` gives it (``qmonitor run -v`` shows who comes and goes and what fails,
``-vv`` everything), and to each tracer added with :meth:`Trace.add` (an audit log is one). A
tracer that raises is logged and skipped: tracing never breaks a request. The records and their
fields are listed in docs/DESIGN-NOTES.md ("The trace path").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final

from qmonitor.core.errors import QMPError
from qmonitor.core.session import Session

log = logging.getLogger("qmonitor.trace")

Tracer = Callable[[str, Mapping[str, object]], None]
"""``tracer(record_name, info)``, called on the event loop's thread."""

LOG_LEVELS: Final[Mapping[str, int]] = {
    "session.opened": logging.INFO,
    "session.closed": logging.INFO,
    "command.failed": logging.INFO,
    "event.dropped": logging.INFO,
    "fault.fired": logging.WARNING,
}
"""The records a person running a monitor wants at INFO: who connects, and what fails; an
injected fault at WARNING, so that a test double never fails silently. Every other record
(each command's start and end, each job step) is DEBUG."""


def log_record(name: str, info: Mapping[str, object]) -> None:
    """Write a record to the ``qmonitor.trace`` log as a sentence, at its :data:`LOG_LEVELS`."""
    level = LOG_LEVELS.get(name, logging.DEBUG)
    if not log.isEnabledFor(level):
        return
    kind, _, what = name.partition(".")
    if kind == "session":
        log.log(level, "%s session %s: %s", str(info["session"]).upper(), what, info["peer"])
    elif kind == "command":
        request_id, error = info.get("id"), info.get("error")
        label = info["command"] if request_id is None else f"{info['command']} (id {request_id!r})"
        peer = f" from {info['peer']}" if info.get("peer") else ""
        log.log(level, "%s %s%s%s", label, what, peer, f": {error}" if error else "")
    elif kind == "fault":
        peer = f" from {info['peer']}" if info.get("peer") else ""
        log.log(
            level,
            "fault rule %s fired: %s on %s%s",
            info["rule"],
            info["action"],
            info["target"],
            peer,
        )
    else:
        log.log(level, "%s %s", name, dict(info))


class Trace:
    """The tracers of one monitor, and the debug log."""

    __slots__ = ("tracers",)

    def __init__(self) -> None:
        self.tracers: tuple[Tracer, ...] = ()  # read-only outside: add() and remove() change it

    def add(self, tracer: Tracer) -> None:
        """Give every record from now on to ``tracer`` too."""
        self.tracers += (tracer,)

    def remove(self, tracer: Tracer) -> None:
        """Stop giving records to ``tracer`` (nothing happens if it was not added)."""
        self.tracers = tuple(t for t in self.tracers if t != tracer)

    def active(self) -> bool:
        """Whether a record would reach anyone: callers skip building one when not (a hot
        path may test ``trace.tracers or log.isEnabledFor(logging.INFO)`` itself)."""
        return bool(self.tracers) or log.isEnabledFor(logging.INFO)

    def __call__(self, name: str, info: Mapping[str, object]) -> None:
        """Record ``name`` with ``info``."""
        log_record(name, info)
        for tracer in self.tracers:
            try:
                tracer(name, info)
            except Exception:
                log.exception("tracer %r failed on %s", tracer, name)


class CommandTrace:
    """The records of one request: ``command.started`` when made, then exactly one of
    ``command.complete`` and ``command.failed``."""

    __slots__ = ("_trace", "info")

    def __init__(
        self, trace: Trace, command_name: str, request_id: object, session: Session | None
    ) -> None:
        self._trace = trace
        self.info: Mapping[str, object] = {
            "command": command_name,
            "id": request_id,
            "session": session.kind.value if session is not None else None,
            "peer": session.peer if session is not None else None,
        }
        trace("command.started", self.info)

    def complete(self) -> None:
        """The request was answered with a return value."""
        self._trace("command.complete", self.info)

    def failed(self, error: QMPError) -> None:
        """The request was answered with ``error`` (refused, invalid, failed or cancelled)."""
        info = {**self.info, "error": error.desc, "class": error.error_class.value}
        self._trace("command.failed", info)
