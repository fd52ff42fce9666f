"""What a QMP connection produces: immutable records (h11's style).

They are named tuples rather than frozen dataclasses because one is built per request on the
hot path, and a frozen dataclass costs three times as much to construct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from qmonitor.core.errors import QMPError


class Request(NamedTuple):
    """A well-formed ``execute`` or ``exec-oob`` request (QMP spec, section 2.3).

    ``request_id`` is the client's ``id`` member verbatim (any JSON value, ``null`` included);
    ``has_id`` says whether there was one, since ``"id": null`` must be echoed too.
    """

    command: str
    arguments: dict[str, Any]
    request_id: Any = None
    has_id: bool = False
    oob: bool = False


@dataclass(frozen=True, slots=True)
class InvalidRequest:
    """Input that cannot be run: answered with ``error`` in its place in the order.

    Parse errors and non-objects have no id (QEMU cannot know it); a well-formed object with a
    bad member keeps its id. ``request`` is the well-formed request refused in negotiation mode
    (None otherwise), for the caller's records.
    """

    error: QMPError
    request_id: Any = None
    has_id: bool = False
    request: Request | None = None


@dataclass(frozen=True, slots=True)
class Negotiated:
    """``qmp_capabilities`` succeeded: answered with ``{"return": {}}``, and the connection is in
    command mode from the next message on (QMP spec, section 4). ``request`` is the
    ``qmp_capabilities`` request, for the caller's records."""

    request_id: Any = None
    has_id: bool = False
    request: Request | None = None
