"""The contract between sessions and the :class:`~qmonitor.Monitor` that hosts them.

Sessions (``qmp_session.py``, ``hmp_session.py``, ``console.py``) know their monitor only as a
:class:`SessionHost`; the monitor knows a QMP session only as a :class:`HostedSession`. Both are
protocols of public names, so neither reaches into the other's fields, and the modules import
this one instead of each other (the monitor imports the sessions; no session imports the
monitor).

Every request a session reads goes to :meth:`SessionHost.submit`: the one point of dispatch,
where the command is looked up, its arguments validated, the request authorised and traced,
and the handler started (docs/DESIGN-NOTES.md, "One dispatch point").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from qmonitor.core.clock import Clock
from qmonitor.core.commands import Command, CommandRegistry
from qmonitor.core.dispatch import Invocation, Returned
from qmonitor.core.errors import QMPError
from qmonitor.core.events import Event
from qmonitor.core.faults import FaultSet
from qmonitor.core.session import Session
from qmonitor.qmp.messages import Request
from qmonitor.server.builtins import VersionInfo
from qmonitor.server.listen import HangupWatch

EventListener = Callable[[Event], None]


class HostedSession(Session, Protocol):
    """What the monitor asks of a QMP session it hosts."""

    def send_event(self, line: bytes) -> None:
        """Send an encoded event line, if the session is in command mode (QMP spec, section
        4: a session still negotiating gets no event)."""
        ...

    def cancel_all(self, reason: str) -> list[asyncio.Future[object]]:
        """Cancel every request in flight; return their outcomes, to wait for the replies."""
        ...

    def close(self) -> None:
        """Close the connection once what is written has gone out."""
        ...


class SessionHost(Protocol):
    """What a session asks of the monitor that hosts it."""

    @property
    def registry(self) -> CommandRegistry:
        """The commands (the human monitor parses and completes lines with it)."""
        ...

    @property
    def version_info(self) -> VersionInfo:
        """The version the monitor speaks (the human monitor's banner)."""
        ...

    @property
    def version(self) -> Mapping[str, Any]:
        """The greeting's ``version`` object, encoded once for every connection."""
        ...

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The QMP capabilities offered in the greeting."""
        ...

    @property
    def strict_order(self) -> bool:
        """Whether every request blocks its connection until answered (QEMU's order)."""
        ...

    @property
    def max_requests_in_flight(self) -> int:
        """Requests running per connection before the session stops reading."""
        ...

    @property
    def faults(self) -> FaultSet | None:
        """The fault rules in force, if any (the greeting's and the replies' are applied by
        the QMP session: qmonitor.server.faults)."""
        ...

    @property
    def closing(self) -> bool:
        """Whether the monitor is shutting down: sessions start nothing new."""
        ...

    @property
    def clock(self) -> Clock:
        """Where time comes from (progress lines are drawn at most every so often)."""
        ...

    @property
    def hangups(self) -> HangupWatch:
        """Watches sockets whose input ended for a real hang-up."""
        ...

    def submit(
        self,
        command_name: str,
        arguments: Mapping[str, object],
        *,
        session: Session,
        request_id: object = None,
        oob: bool = False,
    ) -> Returned | Invocation:
        """Look up, validate, authorise, trace and start a request (see the module docstring).

        Returns a sync command's result at once, or the :class:`Invocation` of one that
        completes later; raises :class:`~qmonitor.QMPError` for a request refused before its
        handler ran, or a sync handler's error.
        """
        ...

    def result_writer(self, command: Command) -> Callable[[object], str]:
        """The function writing ``command``'s results as JSON text."""
        ...

    def session_opened(self, session: HostedSession) -> None:
        """A QMP session connected: it gets events from now on."""
        ...

    def session_closed(self, session: HostedSession) -> None:
        """A QMP session is gone."""
        ...

    def trace(self, name: str, info: Mapping[str, object]) -> None:
        """Record ``name`` (``event.dropped``, ...) on the monitor's one trace path."""
        ...

    def negotiation_refusal(self, request: Request, session: Session) -> QMPError | None:
        """The roles policy's refusal of a ``qmp_capabilities`` in negotiation mode, if any."""
        ...

    def trace_negotiation(self, request: Request, session: Session, error: QMPError | None) -> None:
        """Record a request answered in negotiation mode, as :meth:`submit` records others."""
        ...

    def add_event_listener(self, listener: EventListener) -> None:
        """Call ``listener`` with every event sent (human sessions show them)."""
        ...

    def remove_event_listener(self, listener: EventListener) -> None:
        """Stop calling ``listener``."""
        ...
