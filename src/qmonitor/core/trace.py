"""The one trace path: named records to the debug log and to every tracer (httpcore's _trace.py).

Everything worth following in a running monitor is recorded here, and only here: the
``session.opened`` / ``session.closed`` of every client and the ``auth.refused`` of every
connection refused before its session, the ``command.started`` then one of
``command.complete`` / ``command.failed`` / ``command.denied`` of every request (with the
identity that sent it, its arguments and its duration), a ``job.<status>`` for every move of a
job, ``event.dropped`` when a client that does not read is disconnected, and ``fault.fired``
for every injected fault (:mod:`qmonitor.core.faults`). Each record goes to the
``qmonitor.trace`` logger as a sentence, at the level :data:`LOG_LEVELS` gives it
(``qmonitor run -v`` shows who comes and goes and what fails,
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
    "command.denied": logging.INFO,
    "auth.refused": logging.WARNING,
    "event.dropped": logging.INFO,
    "fault.fired": logging.WARNING,
}
"""The records a person running a monitor wants at INFO: who connects, and what fails or is
refused (a connection refused is a WARNING: someone tried; so is an injected fault, so that a
test double never fails silently). Every other record (each command's start and end, each job
step) is DEBUG."""


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
    ``command.complete``, ``command.failed`` and ``command.denied``.

    Every record has ``command``, ``id`` (only when the request had one), ``session``,
    ``peer``, ``identity`` (:attr:`~qmonitor.security.policy.Identity.label`), ``transport``
    and ``arguments`` (as sent: secrets included, so a consumer that keeps them masks them, as
    the audit log does); the last one adds ``duration_ms``, measured on ``monotonic``.
    """

    __slots__ = ("_monotonic", "_started", "_trace", "info")

    def __init__(
        self,
        trace: Trace,
        command_name: str,
        request_id: object,
        session: Session | None,
        arguments: Mapping[str, object],
        monotonic: Callable[[], float],
    ) -> None:
        self._trace = trace
        self._monotonic = monotonic
        self._started = monotonic()
        info: dict[str, object] = {"command": command_name}
        if request_id is not None:
            info["id"] = request_id
        if session is not None:
            identity = session.identity
            info["session"] = session.kind.value
            info["peer"] = session.peer
            info["identity"] = identity.label
            info["transport"] = identity.transport
        info["arguments"] = arguments
        self.info: Mapping[str, object] = info
        trace("command.started", info)

    def _ended(self, **more: object) -> dict[str, object]:
        elapsed = (self._monotonic() - self._started) * 1000
        return {**self.info, "duration_ms": round(elapsed, 3), **more}

    def complete(self) -> None:
        """The request was answered with a return value."""
        self._trace("command.complete", self._ended())

    def failed(self, error: QMPError) -> None:
        """The request was answered with ``error`` (unknown, invalid, failed or cancelled)."""
        info = self._ended(error=error.desc, error_class=error.error_class.value)
        self._trace("command.failed", info)

    def denied(self, error: QMPError, role: str | None) -> None:
        """The request was refused by the roles policy (of ``role``) or the authorize hook,
        and answered with ``error``; nothing ran."""
        info = self._ended(error=error.desc, error_class=error.error_class.value, role=role)
        self._trace("command.denied", info)
