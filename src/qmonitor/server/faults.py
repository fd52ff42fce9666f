"""Fault injection applied: the hooks that act on what :mod:`qmonitor.core.faults` decides.

Three places, each the one where its kind of fault belongs (docs/TESTING.md, "Injecting
faults"):

- the dispatch point (``Monitor.submit``) calls :func:`apply_command_fault` once a request has
  been validated and authorised: ``error`` answers it, ``delay`` and ``hang`` run it through
  :func:`~qmonitor.core.dispatch.invoke_after` (in flight meanwhile, so cancellable), and
  ``events`` are emitted while the command runs normally. Every session's requests;
- a QMP session, where it writes a reply, calls :func:`faulty_reply` (``garble``,
  ``wrong-id``) or closes the connection (``disconnect``);
- a QMP session, where it writes the greeting, calls :func:`write_greeting`.

:func:`install_faults` puts a :class:`~qmonitor.core.faults.FaultSet` on a monitor, records
every fault that fires on its trace path (``fault.fired``, logged at WARNING) and registers
the run-time commands ``__io.github.qmonitor_fault-add``, ``-list`` and ``-clear``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Final, Protocol

from qmonitor.core.clock import Clock
from qmonitor.core.commands import Command, CommandRegistry
from qmonitor.core.dispatch import Invocation, invoke_after
from qmonitor.core.errors import QMPError
from qmonitor.core.events import Event
from qmonitor.core.faults import WRONG_ID, FaultRule, FaultRuleError, FaultSet, parse_rule
from qmonitor.core.schema import QMPName
from qmonitor.core.session import Session
from qmonitor.core.trace import CommandTrace
from qmonitor.qmp.encode import encode_message

FAULT_ADD: Final = "__io.github.qmonitor_fault-add"
FAULT_LIST: Final = "__io.github.qmonitor_fault-list"
FAULT_CLEAR: Final = "__io.github.qmonitor_fault-clear"

Emit = Callable[[str, Mapping[str, Any] | None], None]


class FaultHost(Protocol):
    """What :func:`install_faults` needs of a monitor."""

    faults: FaultSet | None

    @property
    def registry(self) -> CommandRegistry: ...

    def trace(self, name: str, info: Mapping[str, object]) -> None: ...


async def _sleep(clock: Clock, seconds: float) -> None:
    """Wait ``seconds`` of ``clock`` (a FakeClock in tests); cancellable."""
    woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    timer = clock.call_later(seconds, wake)
    try:
        await woken
    finally:
        timer.cancel()


def _emit_events(rule: FaultRule, emit: Emit, clock: Clock) -> None:
    """The rule's events, ``count`` times, ``interval`` seconds apart (the first at once)."""
    for round_number in range(rule.count):
        for event in rule.events:
            if round_number == 0 or rule.interval == 0:
                emit(event["event"], event.get("data"))
            else:
                clock.call_later(
                    round_number * rule.interval, emit, event["event"], event.get("data")
                )


def apply_command_fault(
    rule: FaultRule,
    command: Command,
    kwargs: dict[str, object],
    *,
    request_id: object,
    session: Session,
    record: CommandTrace | None,
    clock: Clock,
    emit: Emit,
) -> Invocation | None:
    """Act on a command rule that fired at the dispatch point.

    Raises the rule's :class:`QMPError` (``error``); returns the request's invocation, started
    late or never (``delay``, ``hang``); returns None when the request runs as usual
    (``events``, emitted first).
    """
    if rule.action == "error":
        raise QMPError(rule.desc, rule.error_class)
    if rule.action == "events":
        _emit_events(rule, emit, clock)
        return None
    wait: Awaitable[None]
    if rule.action == "delay":
        wait = _sleep(clock, rule.seconds)
    else:  # hang: until the request is cancelled or its client leaves
        wait = asyncio.get_running_loop().create_future()
    return invoke_after(
        wait,
        command,
        kwargs,
        request_id=request_id,
        session=session,
        record=record,
        clock=clock,
    )


def _garble(data: bytes) -> bytes:
    """The message with its first ``:`` made ``#``: invalid for every JSON parser, line-based
    or streaming, at that byte, while still readable by eye."""
    return data.replace(b":", b"#", 1)


def faulty_reply(data: bytes, rule: FaultRule) -> bytes:
    """A reply as a ``garble`` or ``wrong-id`` rule makes it."""
    if rule.action == "garble":
        return _garble(data)
    message = json.loads(data)
    message["id"] = WRONG_ID
    return encode_message(message)


class GreetingTransport(Protocol):
    """What :func:`write_greeting` needs of a transport."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def is_closing(self) -> bool: ...


def write_greeting(
    transport: GreetingTransport, greeting: bytes, rule: FaultRule, clock: Clock
) -> None:
    """Write the greeting as an ``"on": "greeting"`` rule says (instead of plainly)."""
    if rule.action == "delay":

        def write_late() -> None:
            if not transport.is_closing():
                transport.write(greeting)

        clock.call_later(rule.seconds, write_late)
    elif rule.action == "garble":
        transport.write(_garble(greeting))
    elif rule.action == "disconnect":
        if rule.when == "after-reply":
            transport.write(greeting)
        transport.close()
    elif rule.action == "events":
        now = clock.time()
        seconds = int(now)
        for _ in range(rule.count):
            for event in rule.events:
                stamped = Event(
                    event["event"], event.get("data"), seconds, int((now - seconds) * 1_000_000)
                )
                transport.write(encode_message(stamped.message()))
        transport.write(greeting)
    # hang: nothing is written, ever


def _describe(rule_id: int, rule: FaultRule, info: Mapping[str, object]) -> dict[str, object]:
    target = (
        info.get("command")
        or ("the greeting" if "on" in info else None)
        or f"machine {info.get('machine')}"
    )
    return {"rule": rule_id, "action": rule.action, "target": target, **info}


def install_faults(host: FaultHost, faults: FaultSet, *, deferred: bool = False) -> None:
    """Put ``faults`` in force on ``host`` (a Monitor), trace every fault that fires, and
    register the run-time commands.

    The rules are in force at once (one may target the greeting); with ``deferred`` the
    commands are registered at the registry's first use
    (:meth:`~qmonitor.core.commands.CommandRegistry.defer`), as ``qmonitor run`` and the
    stand-in register their other commands (start-up time).
    """
    host.faults = faults
    faults.fired = lambda rule_id, rule, info: host.trace(
        "fault.fired", _describe(rule_id, rule, info)
    )
    if deferred:
        host.registry.defer(lambda: _register_fault_commands(host, faults))
    else:
        _register_fault_commands(host, faults)


def _register_fault_commands(host: FaultHost, faults: FaultSet) -> None:
    command = host.registry.command

    @command(name=FAULT_ADD, hmp=None)
    def fault_add(
        action: str,
        command: str | None = None,
        arguments: dict[str, Any] | None = None,
        on: str | None = None,
        machine: str | None = None,
        times: int | None = None,
        seconds: float | None = None,
        error_class: Annotated[str | None, QMPName("class")] = None,
        desc: str | None = None,
        when: str | None = None,
        events: list[dict[str, Any]] | None = None,
        count: int | None = None,
        interval: float | None = None,
        at_pass: Annotated[int | None, QMPName("at-pass")] = None,
        after_bytes: Annotated[int | None, QMPName("after-bytes")] = None,
        at_percent: Annotated[float | None, QMPName("at-percent")] = None,
    ) -> dict[str, Any]:
        """Put a fault rule in force (its members as in a ``--faults`` file); its id."""
        given = {
            "action": action,
            "command": command,
            "arguments": arguments,
            "on": on,
            "machine": machine,
            "times": times,
            "seconds": seconds,
            "class": error_class,
            "desc": desc,
            "when": when,
            "events": events,
            "count": count,
            "interval": interval,
            "at-pass": at_pass,
            "after-bytes": after_bytes,
            "at-percent": at_percent,
        }
        try:
            rule = parse_rule({k: v for k, v in given.items() if v is not None}, "fault rule")
        except FaultRuleError as exc:
            raise QMPError(str(exc)) from None
        return {"id": faults.add(rule)}

    @command(name=FAULT_LIST, hmp=None)
    def fault_list() -> list[dict[str, Any]]:
        """The fault rules in force: their members, ``id`` and how often each ``fired``."""
        return faults.entries()

    @command(name=FAULT_CLEAR, hmp=None)
    def fault_clear(rule_id: Annotated[int | None, QMPName("id")] = None) -> None:
        """Take the fault rule ``id`` out of force, or every rule without ``id``."""
        if rule_id is None:
            faults.clear()
        elif not faults.remove(rule_id):
            raise QMPError(f"No fault rule with id {rule_id}")
