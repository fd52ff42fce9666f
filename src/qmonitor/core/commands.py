"""The command registry: one API for every command, sync or async (the seed, done right).

QEMU's 2010 "New API for asynchronous monitor commands" let a command be *submitted* (raising
errors at once if it could not start) and *completed* later through a callback, so that the
human monitor could suspend while QMP monitors kept going. It was removed in 2015 because a
failing async command sent no reply, a command that never completed hung the monitor, and
clients could not tell whether a reply would come. Here every command, whatever its style, is
described by one :class:`Command` and run by :mod:`qmonitor.core.dispatch`, which guarantees
exactly one outcome per request (a return value or a :class:`QMPError`), bounded by an optional
timeout and cancellable.

The three handler styles share one contract:

* a plain function completes when it returns;
* a coroutine function completes when its coroutine returns; it may take a :class:`Context`
  parameter for progress reports and cancellation checkpoints;
* a *completion-style* function takes a :class:`Completion` parameter and completes when
  ``complete.succeed(value)`` or ``complete.fail(error)`` is called, exactly once, from any
  thread. Like the seed's ``cmd_async`` it may raise at submit time.

Whichever the style, the command's QMP name, arguments, return type and documentation come from
the function itself (:mod:`qmonitor.core.schema`), so the QMP handler, the human command and the
``query-qmp-schema`` entry can never disagree.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import typing
from collections.abc import Callable, Collection, Coroutine, Iterator
from enum import Enum
from typing import Any, ClassVar, Final, Generic, ParamSpec, Protocol, TypeAlias, TypeVar, overload

from qmonitor.core.errors import QMPError, StateError
from qmonitor.core.record import Record
from qmonitor.core.schema import CommandSignature, compile_signature
from qmonitor.core.session import Session

log = logging.getLogger("qmonitor.commands")

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])


class HandlerStyle(Enum):
    """How a handler delivers its outcome."""

    SYNC = "sync"  # returns the result; runs on the event loop, must be quick
    COROUTINE = "coroutine"  # async def; completes when the coroutine returns
    COMPLETION = "completion"  # takes a Completion; completes when it is called


class CompletionError(StateError):
    """A :class:`Completion` was used twice: the second call raises here and sends nothing."""


class Completion(Generic[T]):
    """The one-shot callback a completion-style handler delivers its outcome through.

    ``succeed`` and ``fail`` may be called from any thread; the outcome is handed to the event
    loop that runs the monitor. Exactly one of them may be called, once: a second call raises
    :class:`CompletionError` in its caller and nothing more is sent to the client. If the
    request is cancelled (by the client, a timeout, Ctrl-C at the human monitor, or the client
    going away) before the handler completes, the callbacks registered with
    :meth:`add_cancel_callback` run on the event loop so the work can be abandoned; a later
    ``succeed``/``fail`` is then accepted once and discarded.
    """

    __slots__ = ("_cancel_callbacks", "_deliver", "_done", "_lock", "command_name")

    def __init__(self, command_name: str, deliver: Callable[[object, QMPError | None], None]):
        self.command_name = command_name
        self._deliver = deliver
        self._lock = threading.Lock()
        self._done = False
        self._cancel_callbacks: list[Callable[[], None]] = []

    @property
    def done(self) -> bool:
        """Whether ``succeed`` or ``fail`` has been called."""
        return self._done

    def _claim(self) -> None:
        with self._lock:
            if self._done:
                raise CompletionError(f"command '{self.command_name}' was already completed")
            self._done = True

    def succeed(self, value: T) -> None:
        """Deliver the command's return value."""
        self._claim()
        self._deliver(value, None)

    def fail(self, error: QMPError | str) -> None:
        """Deliver an error; a string becomes a GenericError with that text."""
        self._claim()
        self._deliver(None, error if isinstance(error, QMPError) else QMPError(error))

    def add_cancel_callback(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the event loop if the request is cancelled before completion."""
        self._cancel_callbacks.append(callback)

    def _run_cancel_callbacks(self) -> None:
        callbacks, self._cancel_callbacks = self._cancel_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the handler's bug must not stop the others or the caller
                log.exception("cancel callback of command '%s' failed", self.command_name)

    def _claim_if_pending(self) -> bool:
        """Mark the completion used unless it already is (a handler that raised at submit)."""
        with self._lock:
            if self._done:
                return False
            self._done = True
            return True


class Progress(Record):
    """How far a running command has come; ``total`` is None when unknown."""

    __slots__ = ("done", "status", "total")

    done: Final[int]
    total: Final[int | None]
    status: Final[str]

    def __init__(self, done: int, total: int | None = None, status: str = "") -> None:
        self.done = done
        self.total = total
        self.status = status


class Context:
    """What a coroutine or completion-style handler may ask of the monitor while it runs.

    Cancellation is only delivered at ``await`` points; :meth:`checkpoint` is a cheap one for
    loops that otherwise never wait, so that state between two checkpoints stays consistent
    (trio's rule).
    """

    __slots__ = ("_progress_listeners", "command_name", "progress_state", "request_id", "session")

    def __init__(
        self, command_name: str, request_id: object = None, session: Session | None = None
    ) -> None:
        self.command_name = command_name
        self.request_id = request_id
        self.session = session  # the session that sent the request; None when run directly
        self.progress_state: Progress | None = None
        self._progress_listeners: list[Callable[[Progress], None]] = []

    def progress(self, done: int, total: int | None = None, status: str = "") -> None:
        """Report progress; seen by a suspended human monitor's progress line."""
        self.progress_state = Progress(done, total, status)
        for listener in self._progress_listeners:
            listener(self.progress_state)

    def add_progress_listener(self, listener: Callable[[Progress], None]) -> None:
        """Call ``listener`` with every progress report from now on."""
        self._progress_listeners.append(listener)

    async def checkpoint(self) -> None:
        """A point where cancellation may land (raises ``asyncio.CancelledError`` if it does)."""
        await asyncio.sleep(0)


class HumanSyntax:
    """How a command appears in the human monitor (HMP); see :mod:`qmonitor.hmp`.

    ``name`` is the HMP command (``info status`` is written ``"info status"``), ``args_type``
    QEMU's argument descriptor string (``"tag:s?"``), ``params`` and ``help`` the texts ``help``
    prints. ``None`` fields are derived from the QMP signature. ``completers`` maps an argument
    key to a function listing the values TAB offers (snapshot tags, job ids). ``activity`` names
    what a detachable command does, for the message of a session that cannot wait for it
    (``"migration"``: QEMU's ``terminal does not allow synchronous migration``).
    ``subword_separators`` maps an argument key to a character after whose last occurrence
    in the word TAB completes (``sendkey ctrl-al`` completes ``al``: QEMU's
    ``sendkey_completion``).
    """

    __slots__ = (
        "activity",
        "aliases",
        "args_type",
        "completers",
        "help",
        "name",
        "params",
        "subword_separators",
    )

    name: str | None
    args_type: str | None
    params: str | None
    help: str | None
    aliases: tuple[str, ...]
    completers: dict[str, Callable[[], list[str]]]
    activity: str | None
    subword_separators: dict[str, str]

    def __init__(
        self,
        name: str | None = None,
        args_type: str | None = None,
        params: str | None = None,
        help: str | None = None,
        aliases: tuple[str, ...] = (),
        completers: dict[str, Callable[[], list[str]]] | None = None,
        activity: str | None = None,
        subword_separators: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.args_type = args_type
        self.params = params
        self.help = help
        self.aliases = aliases
        self.completers = {} if completers is None else completers
        self.activity = activity
        self.subword_separators = {} if subword_separators is None else subword_separators


HumanRenderer: TypeAlias = Callable[[R], str]
"""A command's text for people (``human=``, the seed's ``user_print``): it gets the handler's
own return value, of the handler's return type (a dataclass instance, an enum member, None
for ``-> None``), never the JSON QMP encodes from it, and returns text with ``\\n`` line ends.

The value reaches it however the handler delivered it: returned, returned by its coroutine,
or given to ``Completion.succeed``. :meth:`CommandRegistry.command` ties the renderer's
parameter to the handler's return annotation, so mypy rejects a renderer that does not take
what the handler returns."""


class RenderedCommandDecorator(Protocol[R]):
    """What ``registry.command(..., human=renderer)`` returns: a decorator that accepts only a
    handler whose result the renderer takes (``HumanRenderer[R]``).

    A sync handler must return ``R``, a coroutine function must return a coroutine of ``R``.
    A completion-style handler returns None and delivers its result through its
    ``Completion[R]`` parameter, which a type checker cannot pick out of a signature: for those
    the renderer is not checked (the third overload, which by the same token accepts any
    renderer on a sync handler returning None), a named limit (docs/HMP.md, "Rendering")."""

    @overload
    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, None], /) -> Callable[P, None]: ...


class Command:
    """One registered command: everything the QMP server, HMP and the schema need.

    ``compile`` builds the :class:`CommandSignature`; :attr:`signature` runs it once, at
    registration unless the registry defers it (:attr:`CommandRegistry.defer_signatures`).
    """

    __slots__ = (
        "allow_oob",
        "compile",
        "compiled",
        "completion_parameter",
        "context_parameter",
        "detachable",
        "doc",
        "handler",
        "human",
        "name",
        "qmp",
        "renderer",
        "result_text",
        "style",
        "timeout",
    )
    NOT_COMPARED: ClassVar[frozenset[str]] = frozenset({"compiled", "result_text"})

    name: str
    handler: Callable[..., Any]
    style: HandlerStyle
    compile: Callable[[], CommandSignature]
    doc: str
    allow_oob: bool
    timeout: float | None
    context_parameter: str | None
    completion_parameter: str | None
    human: HumanSyntax | None
    renderer: HumanRenderer[Any] | None
    detachable: bool
    qmp: bool  # False: a human-only command (QEMU's savevm, loadvm, help, ...)
    compiled: CommandSignature | None
    result_text: Callable[[object], str] | None

    def __init__(
        self,
        name: str,
        handler: Callable[..., Any],
        style: HandlerStyle,
        compile: Callable[[], CommandSignature],
        doc: str = "",
        allow_oob: bool = False,
        timeout: float | None = None,
        context_parameter: str | None = None,
        completion_parameter: str | None = None,
        human: HumanSyntax | None = None,
        renderer: HumanRenderer[Any] | None = None,
        detachable: bool = False,
        qmp: bool = True,
        compiled: CommandSignature | None = None,
        result_text: Callable[[object], str] | None = None,
    ) -> None:
        self.name = name
        self.handler = handler
        self.style = style
        self.compile = compile
        self.doc = doc
        self.allow_oob = allow_oob
        self.timeout = timeout
        self.context_parameter = context_parameter
        self.completion_parameter = completion_parameter
        self.human = human
        self.renderer = renderer
        self.detachable = detachable
        self.qmp = qmp
        self.compiled = compiled
        self.result_text = result_text

    @property
    def signature(self) -> CommandSignature:
        """The argument converter, result encoder and schema of the command (compiled once)."""
        compiled = self.compiled
        if compiled is None:
            compiled = self.compiled = self.compile()
        return compiled


def _qmp_name_for(func: Callable[..., Any]) -> str:
    return func.__name__.replace("_", "-")


def _injected_parameters(func: Callable[..., Any]) -> tuple[str | None, str | None, object]:
    """Find the parameters the registry supplies: a Context and/or a Completion[T]."""
    hints = typing.get_type_hints(func)
    context_parameter = completion_parameter = None
    result_type: object = inspect.Parameter.empty
    for parameter_name in inspect.signature(func).parameters:
        hint = hints.get(parameter_name)
        origin = typing.get_origin(hint) or hint
        if origin is Context:
            context_parameter = parameter_name
        elif origin is Completion:
            completion_parameter = parameter_name
            type_arguments = typing.get_args(hint)
            result_type = type_arguments[0] if type_arguments else Any
    return context_parameter, completion_parameter, result_type


class CommandRegistry:
    """All commands of one monitor, by QMP name.

    ``register`` (or the ``command`` decorator) is the only way in; the QMP dispatcher, the
    human monitor and ``query-qmp-schema`` all read from here.
    """

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self._qmp_commands: dict[str, Command] = {}  # those QMP clients can run
        self.get_qmp: Callable[[str], Command | None] = self._qmp_commands.get
        """The QMP command called ``name``, or None (human-only commands are not QMP's): the
        dispatch point's lookup of every request, a dictionary's own ``get`` once nothing is
        deferred (:meth:`defer`)."""
        self.generation = 0  # changes with every registration: caches built from us compare it
        self._deferred: list[tuple[Callable[[], None], frozenset[str] | None]] = []
        self._loading = False
        self.defer_signatures = False
        """Compile a command's signature when it is first needed (its first call, the schema,
        the human monitor's table) rather than at registration: what a program that registers
        many well-tested commands and must start fast sets (``qmonitor run``, the stand-in).
        An unusable type hint then raises its ``TypeError`` at that first use, not here;
        ``compile_all`` brings every such error forward."""

    @overload
    def register(
        self,
        func: Callable[..., Coroutine[Any, Any, R]],
        *,
        name: str | None = None,
        allow_oob: bool = False,
        timeout: float | None = None,
        hmp: HumanSyntax | str | None = None,
        human: HumanRenderer[R],
        detachable: bool = False,
        qmp: bool = True,
    ) -> Command: ...

    @overload
    def register(
        self,
        func: Callable[..., R],
        *,
        name: str | None = None,
        allow_oob: bool = False,
        timeout: float | None = None,
        hmp: HumanSyntax | str | None = None,
        human: HumanRenderer[R] | None = None,
        detachable: bool = False,
        qmp: bool = True,
    ) -> Command: ...

    @overload
    def register(
        self,
        func: Callable[..., None],
        *,
        name: str | None = None,
        allow_oob: bool = False,
        timeout: float | None = None,
        hmp: HumanSyntax | str | None = None,
        human: HumanRenderer[Any],
        detachable: bool = False,
        qmp: bool = True,
    ) -> Command: ...

    def register(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        allow_oob: bool = False,
        timeout: float | None = None,
        hmp: HumanSyntax | str | None = None,
        human: HumanRenderer[Any] | None = None,
        detachable: bool = False,
        qmp: bool = True,
    ) -> Command:
        """Register ``func`` as a command and return its description.

        ``name`` defaults to the function's name with ``_`` turned into ``-``. ``hmp`` is the
        human command name (or a full :class:`HumanSyntax`); ``human`` renders the result for
        people (the seed's ``user_print``): a :data:`HumanRenderer` of the handler's return
        type, which the overloads hold it to. ``qmp=False`` makes a human-only command (absent from
        QMP and the schema, like QEMU's ``savevm``). ``timeout`` (seconds) bounds how long the
        command may run before it is cancelled and answered with an error. ``allow_oob`` lets it
        be run with ``exec-oob``; only sync handlers may be (QMP spec, section 2.3.1: out-of-band
        commands must be quick and must not block).
        """
        qmp_name = name or _qmp_name_for(func)
        if qmp_name in self._commands:
            raise ValueError(f"command '{qmp_name}' is already registered")
        context_parameter, completion_parameter, result_type = _injected_parameters(func)
        if completion_parameter is not None:
            style = HandlerStyle.COMPLETION
        elif inspect.iscoroutinefunction(func):
            style = HandlerStyle.COROUTINE
        else:
            style = HandlerStyle.SYNC
        if allow_oob and style is not HandlerStyle.SYNC:
            raise ValueError(f"command '{qmp_name}': only sync handlers may allow OOB")
        excluded = tuple(p for p in (context_parameter, completion_parameter) if p)

        def compile_command_signature() -> CommandSignature:
            if completion_parameter is not None:
                return compile_signature(func, exclude=excluded, return_type=result_type)
            return compile_signature(func, exclude=excluded)

        if isinstance(hmp, str):
            hmp = HumanSyntax(name=hmp)
        command = Command(
            name=qmp_name,
            handler=func,
            style=style,
            compile=compile_command_signature,
            doc=inspect.cleandoc(func.__doc__ or ""),
            allow_oob=allow_oob,
            timeout=timeout,
            context_parameter=context_parameter,
            completion_parameter=completion_parameter,
            human=hmp,
            renderer=human,
            detachable=detachable,
            qmp=qmp,
        )
        if not self.defer_signatures:
            command.signature  # noqa: B018  # compiled now: a bad type hint raises here
        self._commands[qmp_name] = command
        if qmp:
            self._qmp_commands[qmp_name] = command
        self.generation += 1
        return command

    def defer(self, register: Callable[[], None], names: Collection[str] | None = None) -> None:
        """Run ``register`` (which registers commands) when the registry is first used, not now.

        A program whose commands cost much to import (``qmonitor run``, the stand-in: most of
        its start-up) can serve, and greet its clients, before they are loaded. Iterating or
        counting the commands (``query-commands``, the schema, the human monitor's table)
        runs every deferred ``register``; looking a name up (a request, ``name in registry``)
        runs those that may register it: all up to the last one whose ``names`` (the commands
        it registers, when given) include it, or that gave none. They run in the order given,
        so what a client sees (the commands, their order) is the same as if each had been
        registered at once. ``tests/test_standin.py`` checks a program's declared ``names``.
        """
        self._deferred.append((register, None if names is None else frozenset(names)))
        self.get_qmp = self._get_qmp_deferred

    def load_deferred(self, name: str | None = None) -> None:
        """Run the deferred registrations now: all of them, or (``name``) those that may
        register ``name`` and every one given before them. Any use of the registry does this
        first."""
        if self._loading:
            return  # a deferred registration that looks at the registry sees it as it is
        pending = self._deferred
        count = len(pending)
        if name is not None:
            count = 0
            for index, (_, names) in enumerate(pending):
                if names is None or name in names:
                    count = index + 1
        self._loading = True
        try:
            for _ in range(count):
                register, _names = pending.pop(0)
                register()
        finally:
            self._loading = False
            if not pending:
                self.get_qmp = self._qmp_commands.get

    @overload
    def command(self, func: F, /) -> F: ...

    @overload
    def command(
        self,
        *,
        name: str | None = None,
        allow_oob: bool = False,
        timeout: float | None = None,
        hmp: HumanSyntax | str | None = None,
        human: None = None,
        detachable: bool = False,
        qmp: bool = True,
    ) -> Callable[[F], F]: ...

    @overload
    def command(
        self,
        *,
        name: str | None = None,
        allow_oob: bool = False,
        timeout: float | None = None,
        hmp: HumanSyntax | str | None = None,
        human: HumanRenderer[R],
        detachable: bool = False,
        qmp: bool = True,
    ) -> RenderedCommandDecorator[R]: ...

    def command(  # type: ignore[misc]  # the keyword-only options are checked by register()
        self, func: F | None = None, /, **options: Any
    ) -> F | Callable[[F], F]:
        """Decorator form of :meth:`register`; the function itself is returned unchanged.

        With ``human=renderer`` the decorator accepts only a handler whose return type the
        renderer takes (:class:`RenderedCommandDecorator`), so mypy rejects a mismatch.
        """

        def decorate(function: F) -> F:
            self.register(function, **options)
            return function

        return decorate(func) if func is not None else decorate

    def compile_all(self) -> None:
        """Compile every command's signature now (raises the first ``TypeError``)."""
        for command in self:
            command.signature  # noqa: B018

    def get(self, name: str) -> Command | None:
        """The command called ``name`` (QMP or human-only), or None."""
        if self._deferred:
            self.load_deferred(name)
        return self._commands.get(name)

    def _get_qmp_deferred(self, name: str) -> Command | None:
        """:attr:`get_qmp` while registrations are deferred: what is registered answers at
        once; a name not (yet) there loads what may register it."""
        command = self._qmp_commands.get(name)
        if command is None and self._deferred:
            self.load_deferred(name)
            command = self._qmp_commands.get(name)
        return command

    def qmp_commands(self) -> Iterator[Command]:
        """The commands QMP clients can see."""
        if self._deferred:
            self.load_deferred()
        return iter(self._qmp_commands.values())

    def __iter__(self) -> Iterator[Command]:
        if self._deferred:
            self.load_deferred()
        return iter(self._commands.values())

    def __len__(self) -> int:
        if self._deferred:
            self.load_deferred()
        return len(self._commands)

    def __contains__(self, name: object) -> bool:
        if self._deferred:
            self.load_deferred(name if isinstance(name, str) else None)
        return name in self._commands
