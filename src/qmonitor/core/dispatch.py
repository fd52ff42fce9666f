"""Running a command: every request gets exactly one outcome.

Sessions do not call this module: they submit requests to the monitor
(:meth:`qmonitor.Monitor.submit`), which validates, authorises and traces them and then runs
them here. A sync handler runs with :func:`run_sync` (its result, or a :class:`QMPError`, at
once).
:func:`invoke` starts a coroutine or completion-style handler and gives an :class:`Invocation`
whose ``future`` resolves exactly once, to the JSON-able return value or to a
:class:`QMPError`, whatever happens: the handler returns, raises, calls its completion from
another thread, times out, or is cancelled. This is the guarantee the seed's API lacked (its
failed async commands sent no reply at all).

There is no I/O here: the asyncio pieces used are futures and tasks of the running loop, and
timeouts are timers of the monitor's :class:`~qmonitor.core.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias

from qmonitor.core.clock import SYSTEM_CLOCK, Clock, TimerHandle
from qmonitor.core.commands import Command, Completion, Context, HandlerStyle
from qmonitor.core.errors import QMPError
from qmonitor.core.session import Session
from qmonitor.core.trace import CommandTrace

log = logging.getLogger("qmonitor.dispatch")

CANCELLED_BY_CLIENT: Final = "cancelled"
TIMED_OUT: Final = "timed out"


def run_on_loop(
    loop: asyncio.AbstractEventLoop, loop_thread: int, function: Callable[..., object], *args: Any
) -> None:
    """Call ``function(*args)`` now if we are the loop's thread, else soon on the loop.

    Completions, progress reports and events may come from any thread; what they touch
    (futures, transports) belongs to the loop.
    """
    if threading.get_ident() == loop_thread:
        function(*args)
    else:
        loop.call_soon_threadsafe(function, *args)


def internal_error(command: Command, exc: BaseException) -> QMPError:
    """The GenericError a client sees when a handler fails with an unexpected exception."""
    log.error("command '%s' failed unexpectedly", command.name, exc_info=exc)
    return QMPError(f"Command '{command.name}' failed: {type(exc).__name__}: {exc}")


def cancelled_error(command: Command, reason: str) -> QMPError:
    """The GenericError a cancelled (or timed-out) request is answered with."""
    if reason == TIMED_OUT and command.timeout is not None:
        return QMPError(f"Command '{command.name}' timed out after {command.timeout:g} s")
    return QMPError(f"Command '{command.name}' was {reason}")


def _mark_outcome_seen(future: asyncio.Future[object]) -> None:
    future.exception()


class Invocation:
    """One running asynchronous request.

    ``future`` holds the outcome: the encoded return value, or a :class:`QMPError`. It is never
    cancelled itself; :meth:`cancel` turns cancellation into an error outcome, so whoever waits
    on it always gets exactly one answer to send. Once ``future`` holds a value, ``returned``
    holds the same result as the handler gave it (returned, or passed to its completion),
    before encoding: what the command's human renderer is called with (QMP sends ``future``'s).
    """

    __slots__ = (
        "_cancel_reason",
        "_cancel_requested",
        "_clock",
        "_completion",
        "_loop",
        "_loop_thread",
        "_record",
        "_task",
        "_timer",
        "command",
        "context",
        "future",
        "request_id",
        "returned",
    )

    def __init__(
        self,
        command: Command,
        request_id: object,
        context: Context,
        loop: asyncio.AbstractEventLoop,
        record: CommandTrace | None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.command = command
        self.request_id = request_id
        self.context = context
        self.future: asyncio.Future[object] = loop.create_future()
        self.returned: object = None
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._task: asyncio.Task[Any] | None = None
        self._completion: Completion[Any] | None = None
        self._clock = clock
        self._timer: TimerHandle | None = None
        self._cancel_reason = CANCELLED_BY_CLIENT
        self._cancel_requested = False
        self._record = record

    @property
    def done(self) -> bool:
        """Whether the outcome is known."""
        return self.future.done()

    def cancel(self, reason: str = CANCELLED_BY_CLIENT) -> bool:
        """Ask the command to stop; its outcome becomes an error unless it finishes first.

        A coroutine sees ``asyncio.CancelledError`` at its next ``await``; a completion-style
        handler's cancel callbacks run. Returns False if the outcome was already known or a
        cancellation was already asked for.
        """
        if self.future.done() or self._cancel_requested:
            return False
        self._cancel_requested = True
        self._cancel_reason = reason
        # Whoever cancels may stop waiting for the outcome (a session that went away, or a
        # human-monitor-command whose own request was cancelled): a cancellation's error is
        # expected, so it is marked seen rather than logged as "Future exception was never
        # retrieved" when the future is collected. Anyone still waiting gets it as before.
        self.future.add_done_callback(_mark_outcome_seen)
        if self._task is not None:
            self._task.cancel()
        else:
            self._settle(None, cancelled_error(self.command, reason))
            if self._completion is not None:
                self._completion._run_cancel_callbacks()
        return True

    def _start_timer(self) -> None:
        if self.command.timeout is not None and not self.future.done():
            self._timer = self._clock.call_later(self.command.timeout, self.cancel, TIMED_OUT)

    def _settle(self, value: object, error: QMPError | None) -> None:
        """Resolve the outcome once; later calls (after a cancellation) are discarded."""
        if self.future.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        encoded: object = None
        if error is None:
            try:
                encoded = self.command.signature.encode_return(value)
            except Exception as exc:  # a handler returned something its type hint denies
                error = internal_error(self.command, exc)
        if error is None:
            self.returned = value
            self.future.set_result(encoded)
            if self._record is not None:
                self._record.complete()
        else:
            self.future.set_exception(error)
            if self._record is not None:
                self._record.failed(error)

    def _deliver_from_any_thread(self, value: object, error: QMPError | None) -> None:
        run_on_loop(self._loop, self._loop_thread, self._settle, value, error)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self._settle(None, cancelled_error(self.command, self._cancel_reason))
            return
        exc = task.exception()
        if exc is None:
            self._settle(task.result(), None)
        elif isinstance(exc, QMPError):
            self._settle(None, exc)
        else:
            self._settle(None, internal_error(self.command, exc))


Returned: TypeAlias = tuple[Command, object]
"""A sync command's result, returned at once: ``(command, value)``, the value as the handler
returned it, not encoded yet, because each kind of session uses it its own way (QMP encodes
it straight to JSON text, the human monitor gives it to the command's renderer as it is). A
plain tuple: one is made per QMP request, at a fifth of the cost of an object."""


def run_sync(
    command: Command,
    kwargs: dict[str, object],
    request_id: object = None,
    session: Session | None = None,
) -> object:
    """Run a sync handler and return its result as it returned it (not encoded).

    Raises :class:`QMPError`: the handler's own, or a GenericError for any other exception.
    """
    if command.context_parameter is not None:
        kwargs[command.context_parameter] = Context(command.name, request_id, session)
    try:
        return command.handler(**kwargs)
    except QMPError:
        raise
    except Exception as exc:
        raise internal_error(command, exc) from exc


def encode_result(command: Command, result: object, encode: Callable[[object], Any]) -> Any:
    """``encode(result)``; a result its type hint denies becomes a GenericError."""
    try:
        return encode(result)
    except Exception as exc:
        raise internal_error(command, exc) from exc


def invoke(
    command: Command,
    kwargs: dict[str, object],
    *,
    request_id: object = None,
    session: Session | None = None,
    record: CommandTrace | None = None,
    clock: Clock = SYSTEM_CLOCK,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Invocation:
    """Submit a coroutine or completion-style command; see the module docstring.

    Errors raised by the handler at submit time (the seed's "may raise errors") come back as
    the invocation's outcome, so callers have one path for every error. ``record`` (made by
    the monitor, which recorded ``command.started``) gets the outcome; ``clock`` times the
    command's timeout.
    """
    loop = loop or asyncio.get_running_loop()
    context = Context(command.name, request_id, session)
    invocation = Invocation(command, request_id, context, loop, record, clock)
    if command.context_parameter is not None:
        kwargs[command.context_parameter] = context
    if command.style is HandlerStyle.COROUTINE:
        try:
            coroutine = command.handler(**kwargs)
        except Exception as exc:  # the call itself failed (a wrapped non-async callable)
            invocation._settle(
                None, exc if isinstance(exc, QMPError) else internal_error(command, exc)
            )
            return invocation
        task = loop.create_task(coroutine, name=f"qmp:{command.name}")
        invocation._task = task
        task.add_done_callback(invocation._task_done)
    elif command.style is HandlerStyle.COMPLETION:
        assert command.completion_parameter is not None
        completion: Completion[Any] = Completion(command.name, invocation._deliver_from_any_thread)
        invocation._completion = completion
        kwargs[command.completion_parameter] = completion
        try:
            command.handler(**kwargs)
        except Exception as exc:
            if completion._claim_if_pending():
                error = exc if isinstance(exc, QMPError) else internal_error(command, exc)
                invocation._settle(None, error)
    else:
        raise ValueError(f"command '{command.name}' is sync: run it with run_sync()")
    invocation._start_timer()
    return invocation


def invoke_after(
    wait: Awaitable[None],
    command: Command,
    kwargs: dict[str, object],
    *,
    request_id: object = None,
    session: Session | None = None,
    record: CommandTrace | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Invocation:
    """Run ``command`` (of any style) once ``wait`` is over: an injected delay or hang.

    The request is in flight meanwhile, so a cancellation (``__io.github.qmonitor_cancel``,
    the client leaving, the command's timeout, which counts from now) ends the wait, and the
    request gets its one outcome as any other would (docs/TESTING.md, "Injecting faults").
    """
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    context = Context(command.name, request_id, session)
    invocation = Invocation(command, request_id, context, loop, record, clock)
    if command.context_parameter is not None:
        kwargs[command.context_parameter] = context

    async def run_when_waited() -> object:
        await wait
        if command.style is HandlerStyle.SYNC:
            return command.handler(**kwargs)
        if command.style is HandlerStyle.COROUTINE:
            return await command.handler(**kwargs)
        assert command.completion_parameter is not None
        outcome: asyncio.Future[object] = loop.create_future()

        def settle(value: object, error: QMPError | None) -> None:
            if not outcome.done():
                if error is None:
                    outcome.set_result(value)
                else:
                    outcome.set_exception(error)

        completion: Completion[Any] = Completion(
            command.name, lambda value, error: run_on_loop(loop, loop_thread, settle, value, error)
        )
        kwargs[command.completion_parameter] = completion
        try:
            command.handler(**kwargs)
        except Exception:
            if completion._claim_if_pending():
                raise
        try:
            return await outcome
        except asyncio.CancelledError:
            completion._run_cancel_callbacks()
            raise

    task = loop.create_task(run_when_waited(), name=f"qmp:{command.name}")
    invocation._task = task
    task.add_done_callback(invocation._task_done)
    invocation._start_timer()
    return invocation
