"""The command core without sockets: handler styles, completion, cancellation, timeouts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmonitor import Completion, CompletionError, Context, QMPError
from qmonitor.core.commands import CommandRegistry, HandlerStyle
from qmonitor.core.dispatch import encode_result, invoke, run_sync
from qmonitor.testing import FakeClock


@dataclass
class Point:
    x: int
    y_coord: int


def make_registry() -> CommandRegistry:
    registry = CommandRegistry()

    @registry.command
    def plain(value: int) -> Point:
        return Point(value, value + 1)

    @registry.command
    async def coro(value: int, ctx: Context) -> int:
        ctx.progress(1, 2)
        await ctx.checkpoint()
        return value * 2

    @registry.command
    def threaded(value: int, complete: Completion[int]) -> None:
        threading.Thread(target=complete.succeed, args=(value,)).start()

    @registry.command(name="fail-at-submit")
    def fail_at_submit(complete: Completion[None]) -> None:
        raise QMPError("refused at submit")

    @registry.command(name="never", timeout=0.05)
    def never(complete: Completion[None]) -> None:
        pass

    @registry.command(name="forever")
    async def forever(ctx: Context) -> None:
        await asyncio.Event().wait()

    return registry


def test_handler_styles_are_recognised_from_the_signature() -> None:
    registry = make_registry()
    styles = {c.name: c.style for c in registry}
    assert styles["plain"] is HandlerStyle.SYNC
    assert styles["coro"] is HandlerStyle.COROUTINE
    assert styles["threaded"] is HandlerStyle.COMPLETION


def test_sync_result_is_encoded_with_qmp_member_names() -> None:
    command = make_registry().get("plain")
    assert command is not None
    kwargs = command.signature.convert_arguments({"value": 3})
    result = run_sync(command, kwargs)
    assert encode_result(command, result, command.signature.encode_return) == {"x": 3, "y-coord": 4}


async def test_coroutine_completes_with_progress_seen() -> None:
    command = make_registry().get("coro")
    assert command is not None
    invocation = invoke(command, {"value": 21})
    assert await invocation.future == 42
    assert invocation.context.progress_state is not None
    assert invocation.context.progress_state.done == 1


async def test_completion_from_another_thread_delivers_once() -> None:
    command = make_registry().get("threaded")
    assert command is not None
    invocation = invoke(command, {"value": 7})
    assert await asyncio.wait_for(invocation.future, 5) == 7


async def test_second_completion_call_raises_in_the_caller() -> None:
    registry = CommandRegistry()
    kept: list[Completion[int]] = []

    @registry.command
    def keep(complete: Completion[int]) -> None:
        kept.append(complete)

    command = registry.get("keep")
    assert command is not None
    invocation = invoke(command, {})
    kept[0].succeed(1)
    with pytest.raises(CompletionError):
        kept[0].fail("again")
    assert await invocation.future == 1


async def test_error_raised_at_submit_is_the_outcome() -> None:
    command = make_registry().get("fail-at-submit")
    assert command is not None
    invocation = invoke(command, {})
    with pytest.raises(QMPError, match="refused at submit"):
        await invocation.future


async def test_timeout_answers_with_an_error_at_the_exact_time() -> None:
    command = make_registry().get("never")
    assert command is not None
    clock = FakeClock()
    invocation = invoke(command, {}, clock=clock)
    clock.advance(0.049)
    assert not invocation.done
    clock.advance(0.001)
    assert invocation.done
    with pytest.raises(QMPError, match=r"timed out after 0\.05 s"):
        await invocation.future


async def test_an_outcome_before_the_timeout_disarms_it() -> None:
    command = make_registry().get("threaded")
    assert command is not None
    clock = FakeClock()
    invocation = invoke(command, {"value": 1}, clock=clock)
    assert await asyncio.wait_for(invocation.future, 5) == 1
    assert clock.next_deadline() is None  # "threaded" has no timeout: nothing was armed
    never = make_registry().get("never")
    assert never is not None
    cancelled = invoke(never, {}, clock=clock)
    assert clock.next_deadline() == 0.05
    cancelled.cancel()
    assert clock.next_deadline() is None


async def test_cancel_reaches_the_coroutine_and_gives_one_error() -> None:
    command = make_registry().get("forever")
    assert command is not None
    invocation = invoke(command, {})
    await asyncio.sleep(0)
    assert invocation.cancel("cancelled by the client")
    assert not invocation.cancel()
    with pytest.raises(QMPError, match="was cancelled by the client"):
        await invocation.future


async def test_completion_after_cancel_is_discarded_and_cancel_callbacks_run() -> None:
    registry = CommandRegistry()
    kept: list[Completion[int]] = []
    cancelled: list[bool] = []

    @registry.command
    def keep(complete: Completion[int]) -> None:
        complete.add_cancel_callback(lambda: cancelled.append(True))
        kept.append(complete)

    command = registry.get("keep")
    assert command is not None
    invocation = invoke(command, {})
    invocation.cancel()
    assert cancelled == [True]
    kept[0].succeed(5)  # accepted once, discarded
    with pytest.raises(QMPError, match="cancelled"):
        await invocation.future


async def test_unexpected_exception_becomes_generic_error() -> None:
    registry = CommandRegistry()

    @registry.command
    async def broken() -> None:
        raise ZeroDivisionError("boom")

    command = registry.get("broken")
    assert command is not None
    with pytest.raises(QMPError, match="ZeroDivisionError: boom"):
        await invoke(command, {}).future


def test_only_sync_handlers_may_allow_oob() -> None:
    registry = CommandRegistry()

    async def slow() -> None:
        pass

    with pytest.raises(ValueError, match="only sync handlers"):
        registry.register(slow, allow_oob=True)


def test_duplicate_registration_is_refused() -> None:
    registry = make_registry()

    def plain() -> None:
        pass

    with pytest.raises(ValueError, match="already registered"):
        registry.register(plain)


@settings(max_examples=60, deadline=None)
@given(
    thread_delay=st.floats(min_value=0, max_value=0.003),
    cancel_delay=st.one_of(st.none(), st.floats(min_value=0, max_value=0.003)),
    fail=st.booleans(),
)
def test_completion_from_a_thread_races_cancellation_with_one_outcome(
    thread_delay: float, cancel_delay: float | None, fail: bool
) -> None:
    """Whatever the interleaving of a completing thread and a cancel, exactly one outcome."""

    async def scenario() -> None:
        registry = CommandRegistry()
        second_calls: list[str] = []
        threads: list[threading.Thread] = []

        def complete_later(complete: Completion[int]) -> None:
            time.sleep(thread_delay)
            if fail:
                complete.fail("failed in the thread")
            else:
                complete.succeed(1)
            try:
                complete.succeed(2)
            except CompletionError as exc:
                second_calls.append(str(exc))

        @registry.command
        def racer(complete: Completion[int]) -> None:
            threads.append(threading.Thread(target=complete_later, args=(complete,)))
            threads[-1].start()

        command = registry.get("racer")
        assert command is not None
        invocation = invoke(command, {})
        if cancel_delay is not None:
            await asyncio.sleep(cancel_delay)
            invocation.cancel()
        try:
            outcome: object = await asyncio.wait_for(invocation.future, 5)
        except QMPError as exc:
            outcome = exc.desc
        assert outcome in (1, "failed in the thread", "Command 'racer' was cancelled")
        [thread] = threads
        await asyncio.to_thread(thread.join)
        assert len(second_calls) == 1  # the thread's second call always raises
        assert invocation.future.done()

    asyncio.run(scenario())


def nothing() -> None:
    """Does nothing."""


def test_deferred_registrations_run_at_first_use_in_the_order_given() -> None:
    """``CommandRegistry.defer``: nothing runs until the registry is used; a lookup runs the
    registrations that may register the name (and those before them), a listing runs all,
    and the commands end up in the order of an eager registration."""
    ran: list[str] = []

    def group(label: str, *names: str) -> Callable[[], None]:
        def register() -> None:
            ran.append(label)
            for name in names:
                registry.register(nothing, name=name)

        return register

    registry = CommandRegistry()
    registry.register(nothing, name="first")
    registry.defer(group("any", "a1", "a2"))
    registry.defer(group("named", "n1"), names={"n1"})
    registry.defer(group("last", "l1"), names={"l1"})
    assert ran == []
    assert registry.get_qmp("nonexistent") is None
    assert ran == ["any"]  # may have registered it; the named ones cannot have
    assert "l1" in registry
    assert ran == ["any", "named", "last"]
    assert [command.name for command in registry] == ["first", "a1", "a2", "n1", "l1"]


def test_a_listing_runs_every_deferred_registration() -> None:
    registry = CommandRegistry()
    registry.defer(lambda: registry.register(nothing, name="late"), names={"late"})
    assert len(registry) == 1
    assert [command.name for command in registry.qmp_commands()] == ["late"]
