"""Running a command: every request gets exactly one outcome.

A sync handler runs with :func:`run_sync` (its result, or a :class:`QMPError`, at once).
:func:`invoke` starts a coroutine or completion-style handler and gives an :class:`Invocation`
whose ``future`` resolves exactly once, to the JSON-able return value or to a
:class:`QMPError`, whatever happens: the handler returns, raises, calls its completion from
another thread, times out, or is cancelled. This is the guarantee the seed's API lacked (its
failed async commands sent no reply at all).

There is no I/O here: the asyncio pieces used are futures, tasks and timers of the running loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from qmonitor.core.commands import Command, Completion, Context, HandlerStyle
from qmonitor.core.errors import QMPError

log = logging.getLogger("qmonitor.dispatch")

Tracer = Callable[[str, Mapping[str, object]], None]
"""``tracer(event_name, info)``: ``command.started``, ``command.complete``, ``command.failed``
(``info``: ``command``, ``id``, ``error``); the monitor also traces ``session.opened``,
``session.closed`` (``protocol``, ``peer``) and ``event.dropped``."""

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


def trace_command(
    tracer: Tracer | None, event: str, command: Command, request_id: object, error: str = ""
) -> None:
    """Report ``command.started`` / ``.complete`` / ``.failed`` to the tracer, if any."""
    if tracer is not None:
        info: dict[str, object] = {"command": command.name, "id": request_id}
        if error:
            info["error"] = error
        tracer(event, info)


def internal_error(command: Command, exc: BaseException) -> QMPError:
    """The GenericError a client sees when a handler fails with an unexpected exception."""
    log.error("command '%s' failed unexpectedly", command.name, exc_info=exc)
    return QMPError(f"Command '{command.name}' failed: {type(exc).__name__}: {exc}")


def cancelled_error(command: Command, reason: str) -> QMPError:
    """The GenericError a cancelled (or timed-out) request is answered with."""
    if reason == TIMED_OUT and command.timeout is not None:
        return QMPError(f"Command '{command.name}' timed out after {command.timeout:g} s")
    return QMPError(f"Command '{command.name}' was {reason}")


class Invocation:
    """One running asynchronous request.

    ``future`` holds the outcome: the encoded return value, or a :class:`QMPError`. It is never
    cancelled itself; :meth:`cancel` turns cancellation into an error outcome, so whoever waits
    on it always gets exactly one answer to send.
    """

    __slots__ = (
        "_cancel_reason",
        "_cancel_requested",
        "_completion",
        "_loop",
        "_loop_thread",
        "_task",
        "_timer",
        "_tracer",
        "command",
        "context",
        "future",
        "request_id",
    )

    def __init__(
        self,
        command: Command,
        request_id: object,
        context: Context,
        loop: asyncio.AbstractEventLoop,
        tracer: Tracer | None,
    ) -> None:
        self.command = command
        self.request_id = request_id
        self.context = context
        self.future: asyncio.Future[object] = loop.create_future()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._task: asyncio.Task[Any] | None = None
        self._completion: Completion[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._cancel_reason = CANCELLED_BY_CLIENT
        self._cancel_requested = False
        self._tracer = tracer

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
        if self._task is not None:
            self._task.cancel()
        else:
            self._settle(None, cancelled_error(self.command, reason))
            if self._completion is not None:
                self._completion._run_cancel_callbacks()
        return True

    def _start_timer(self) -> None:
        if self.command.timeout is not None and not self.future.done():
            self._timer = self._loop.call_later(self.command.timeout, self.cancel, TIMED_OUT)

    def _settle(self, value: object, error: QMPError | None) -> None:
        """Resolve the outcome once; later calls (after a cancellation) are discarded."""
        if self.future.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        if error is None:
            try:
                value = self.command.signature.encode_return(value)
            except Exception as exc:  # a handler returned something its type hint denies
                error = internal_error(self.command, exc)
        if error is None:
            self.future.set_result(value)
            trace_command(self._tracer, "command.complete", self.command, self.request_id)
        else:
            self.future.set_exception(error)
            trace_command(self._tracer, "command.failed", self.command, self.request_id, error.desc)

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


def run_sync(
    command: Command,
    kwargs: dict[str, object],
    request_id: object = None,
    session: object = None,
    tracer: Tracer | None = None,
) -> object:
    """Run a sync handler and return its result as it returned it (not encoded).

    Raises :class:`QMPError`: the handler's own, or a GenericError for any other exception.
    """
    if command.context_parameter is not None:
        kwargs[command.context_parameter] = Context(command.name, request_id, session)
    if tracer is not None:
        return _run_sync_traced(command, kwargs, request_id, tracer)
    try:
        return command.handler(**kwargs)
    except QMPError:
        raise
    except Exception as exc:
        raise internal_error(command, exc) from exc


def _run_sync_traced(
    command: Command, kwargs: dict[str, object], request_id: object, tracer: Tracer
) -> object:
    trace_command(tracer, "command.started", command, request_id)
    try:
        result = run_sync(command, kwargs)
    except QMPError as exc:
        trace_command(tracer, "command.failed", command, request_id, exc.desc)
        raise
    trace_command(tracer, "command.complete", command, request_id)
    return result


def encode_result(command: Command, result: object, encode: Callable[[object], Any]) -> Any:
    """``encode(result)``; a result its type hint denies becomes a GenericError."""
    try:
        return encode(result)
    except Exception as exc:
        raise internal_error(command, exc) from exc


def call_sync(
    command: Command,
    kwargs: dict[str, object],
    request_id: object = None,
    session: object = None,
    tracer: Tracer | None = None,
) -> object:
    """Run a sync handler and return its encoded result; raises :class:`QMPError` on failure."""
    result = run_sync(command, kwargs, request_id, session, tracer)
    return encode_result(command, result, command.signature.encode_return)


def invoke(
    command: Command,
    kwargs: dict[str, object],
    *,
    request_id: object = None,
    session: object = None,
    tracer: Tracer | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Invocation:
    """Submit a coroutine or completion-style command; see the module docstring.

    Errors raised by the handler at submit time (the seed's "may raise errors") come back as
    the invocation's outcome, so callers have one path for every error.
    """
    loop = loop or asyncio.get_running_loop()
    context = Context(command.name, request_id, session)
    invocation = Invocation(command, request_id, context, loop, tracer)
    trace_command(tracer, "command.started", command, request_id)
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
