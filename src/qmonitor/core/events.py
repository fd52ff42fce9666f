"""Event declarations and QEMU's event throttling, without a clock of its own.

QEMU (monitor/monitor.c, ``monitor_qapi_event_queue_no_reenter``) rate-limits some events
(RTC_CHANGE, BALLOON_CHANGE, WATCHDOG, ACPI_DEVICE_OST, QUORUM_*, MEMORY_DEVICE_SIZE_CHANGE,
...) to one per second, keyed by the event type and, for some, a member of its data (``id``,
``node-name``, ``qom-path``):

* the first event of a key is sent at once and opens a window;
* events arriving inside the window are not sent; only the latest is kept;
* when the window ends, the kept event (if any) is sent and a new window opens; a window that
  ends with nothing kept closes the key.

:class:`EventThrottle` implements exactly that with the caller's clock: ``offer`` says whether
to send now and when to call ``window_ended`` next.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from qmonitor.core.record import Record


class EventSpec(Record):
    """A declared event: its name, data type (for the schema) and throttling rule."""

    __slots__ = ("data_type", "doc", "name", "throttle_key", "throttle_seconds")

    name: Final[str]
    data_type: Final[object | None]
    throttle_seconds: Final[float | None]
    throttle_key: Final[str | None]  # data member that separates throttling keys (QEMU: id)
    doc: Final[str]

    def __init__(
        self,
        name: str,
        data_type: object | None = None,
        throttle_seconds: float | None = None,
        throttle_key: str | None = None,
        doc: str = "",
    ) -> None:
        self.name = name
        self.data_type = data_type
        self.throttle_seconds = throttle_seconds
        self.throttle_key = throttle_key
        self.doc = doc


class Event(Record):
    """One event occurrence, stamped with the wall clock when it happened."""

    __slots__ = ("data", "microseconds", "name", "seconds")

    name: Final[str]
    data: Final[Mapping[str, Any] | None]
    seconds: Final[int]
    microseconds: Final[int]

    def __init__(
        self, name: str, data: Mapping[str, Any] | None, seconds: int, microseconds: int
    ) -> None:
        self.name = name
        self.data = data
        self.seconds = seconds
        self.microseconds = microseconds

    def message(self) -> dict[str, object]:
        """The wire form (QMP spec, section 2.5)."""
        message: dict[str, object] = {
            "event": self.name,
            "timestamp": {"seconds": self.seconds, "microseconds": self.microseconds},
        }
        if self.data is not None:
            message["data"] = dict(self.data)
        return message


ThrottleKey = tuple[str, object]


class EventThrottle:
    """The throttling state of all throttled events of one monitor (see module docstring)."""

    def __init__(self) -> None:
        self._pending: dict[ThrottleKey, Event | None] = {}

    @staticmethod
    def key_for(spec: EventSpec, event: Event) -> ThrottleKey:
        """Type plus the declared data member, as QEMU's ``qapi_event_throttle_hash``."""
        member = None
        if spec.throttle_key is not None and event.data is not None:
            member = event.data.get(spec.throttle_key)
        return (spec.name, member)

    def offer(self, spec: EventSpec, event: Event, now: float) -> tuple[bool, float | None]:
        """Take an event: returns (send it now?, when the caller must call ``window_ended``)."""
        assert spec.throttle_seconds is not None
        key = self.key_for(spec, event)
        if key in self._pending:
            self._pending[key] = event
            return False, None
        self._pending[key] = None
        return True, now + spec.throttle_seconds

    def window_ended(self, key: ThrottleKey) -> Event | None:
        """The window of ``key`` ended: the kept event to send (and a new window), or None."""
        kept = self._pending.get(key)
        if kept is None:
            self._pending.pop(key, None)
            return None
        self._pending[key] = None
        return kept
