"""What a QMP connection produces: immutable records (h11's style).

They are named tuples rather than frozen dataclasses because one is built per request on the
hot path, and a frozen dataclass costs three times as much to construct.
"""

from __future__ import annotations

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


# Plain classes, not dataclasses: every monitor imports this module before it greets, and a
# dataclass costs about 0.4 ms to create (docs/PERFORMANCE.md, "Third round").
class InvalidRequest:
    """Input that cannot be run: answered with ``error`` in its place in the order.

    Parse errors and non-objects have no id (QEMU cannot know it); a well-formed object with a
    bad member keeps its id. ``request`` is the well-formed request refused in negotiation mode
    (None otherwise), for the caller's records.
    """

    __slots__ = ("error", "has_id", "request", "request_id")

    error: QMPError
    request_id: Any
    has_id: bool
    request: Request | None

    def __init__(
        self,
        error: QMPError,
        request_id: Any = None,
        has_id: bool = False,
        request: Request | None = None,
    ) -> None:
        self.error = error
        self.request_id = request_id
        self.has_id = has_id
        self.request = request

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InvalidRequest) and (
            self.error,
            self.request_id,
            self.has_id,
            self.request,
        ) == (other.error, other.request_id, other.has_id, other.request)

    def __repr__(self) -> str:
        return (
            f"InvalidRequest(error={self.error!r}, request_id={self.request_id!r}, "
            f"has_id={self.has_id!r}, request={self.request!r})"
        )


class Negotiated:
    """``qmp_capabilities`` succeeded: answered with ``{"return": {}}``, and the connection is in
    command mode from the next message on (QMP spec, section 4). ``request`` is the
    ``qmp_capabilities`` request, for the caller's records."""

    __slots__ = ("has_id", "request", "request_id")

    request_id: Any
    has_id: bool
    request: Request | None

    def __init__(
        self, request_id: Any = None, has_id: bool = False, request: Request | None = None
    ) -> None:
        self.request_id = request_id
        self.has_id = has_id
        self.request = request

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Negotiated) and (self.request_id, self.has_id, self.request) == (
            other.request_id,
            other.has_id,
            other.request,
        )

    def __repr__(self) -> str:
        return (
            f"Negotiated(request_id={self.request_id!r}, has_id={self.has_id!r}, "
            f"request={self.request!r})"
        )
