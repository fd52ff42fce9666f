"""The clock a monitor reads time from, injectable so that time can be faked in tests.

Three things in a monitor depend on time: event timestamps (the wall clock, QMP spec section
2.5), the windows of throttled events (monitor/monitor.c, one second per key) and command
timeouts. They all ask a :class:`Clock`: :data:`SYSTEM_CLOCK` by default, or a fake one
(:class:`qmonitor.testing.FakeClock`) under which a test moves time itself and sees a
throttle window end, or a command time out, at the exact instant, without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol


class TimerHandle(Protocol):
    """A callback scheduled with :meth:`Clock.call_later`."""

    def cancel(self) -> None:
        """Do not run it (nothing happens if it has run)."""
        ...


class Clock(Protocol):
    """Wall time, monotonic time and timers."""

    def time(self) -> float:
        """Seconds since the epoch: what event timestamps say."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back: for intervals."""
        ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Call ``callback(*args)`` ``delay`` seconds of :meth:`monotonic` time from now, on
        the event loop's thread; called from that thread."""
        ...


class SystemClock:
    """The real clock: the system's wall time, and the running event loop's timers."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any
    ) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback, *args)


SYSTEM_CLOCK = SystemClock()
