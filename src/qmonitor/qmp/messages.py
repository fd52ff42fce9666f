"""What a QMP connection produces and consumes, as frozen dataclasses (h11's style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qmonitor.core.errors import QMPError


@dataclass(frozen=True, slots=True)
class Request:
    """A well-formed ``execute`` or ``exec-oob`` request (QMP spec, section 2.3).

    ``request_id`` is the client's ``id`` member verbatim (any JSON value, ``null`` included);
    ``has_id`` says whether there was one, since ``"id": null`` must be echoed too.
    """

    command: str
    arguments: dict[str, Any] = field(default_factory=dict)
    request_id: Any = None
    has_id: bool = False
    oob: bool = False


@dataclass(frozen=True, slots=True)
class InvalidRequest:
    """Input that cannot be run: answered with ``error`` in its place in the order.

    Parse errors and non-objects have no id (QEMU cannot know it); a well-formed object with a
    bad member keeps its id.
    """

    error: QMPError
    request_id: Any = None
    has_id: bool = False
