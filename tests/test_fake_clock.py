"""qmonitor.testing's fake time: a FakeClock moved by hand, or by a VirtualClockLoop."""

from __future__ import annotations

import asyncio

import pytest

from qmonitor.testing import FAKE_EPOCH, FakeClock, VirtualClockLoop, run_in_virtual_time


def test_timers_run_in_time_order_each_at_its_own_time() -> None:
    clock = FakeClock()
    seen: list[tuple[str, float, float]] = []

    def note(name: str) -> None:
        seen.append((name, clock.monotonic(), clock.time() - FAKE_EPOCH))

    clock.call_later(2.0, note, "two")
    clock.call_later(1.0, note, "one")
    clock.call_later(1.0, note, "one again")  # same time: in the order they were asked for
    cancelled = clock.call_later(1.5, note, "cancelled")
    clock.call_later(0.5, lambda: clock.call_later(0.5, note, "scheduled by a timer"))
    cancelled.cancel()
    clock.advance(1.9)
    assert seen == [
        ("one", 1.0, 1.0),
        ("one again", 1.0, 1.0),
        ("scheduled by a timer", 1.0, 1.0),
    ]
    assert clock.monotonic() == 1.9 and clock.next_deadline() == 2.0
    clock.advance(0.1)
    assert seen[-1] == ("two", 2.0, 2.0)
    assert clock.next_deadline() is None
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_a_virtual_clock_loop_jumps_its_clock_to_the_next_timer_of_either_kind() -> None:
    """The loop's own timers (asyncio.sleep) and the clock's (a monitor's) share one time."""

    async def scenario(loop: VirtualClockLoop) -> None:
        seen: list[tuple[str, float]] = []
        loop.clock.call_later(0.5, lambda: seen.append(("clock timer", loop.time())))
        await asyncio.sleep(1.0)
        seen.append(("slept", loop.time()))
        loop.clock.call_later(10.0, lambda: seen.append(("late clock timer", loop.time())))
        await loop.sleep_until(20.0)
        assert seen == [("clock timer", 0.5), ("slept", 1.0), ("late clock timer", 11.0)]
        assert loop.clock.time() == FAKE_EPOCH + 20.0

    run_in_virtual_time(scenario)
