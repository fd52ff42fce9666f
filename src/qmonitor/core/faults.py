"""Declarative fault injection, sans I/O: the rules, their validation, matching and counts.

A test double earns its keep by failing on purpose, at the moment a test needs (issue 7: the
bugs client projects report are events before the greeting, a VM vanishing mid-job, a reply
that never comes). A rule says *where* (a command, optionally with a subset of its arguments;
the greeting; a machine operation), *how often* (``times``; always by default) and *what*
(one action). The file format is ``{"faults": [RULE, ...]}``; the run-time QMP command
``__io.github.qmonitor_fault-add`` takes one rule's members as its arguments, and both go
through :func:`parse_rule`, so a rule means the same wherever it comes from.

This module only decides; it does no I/O and knows no session. The server applies what it
decides (``server/faults.py``: at the dispatch point, where a QMP session writes a reply, where
the greeting is written), and the reference machine asks through :class:`FaultPoint` (the only
names it sees, from ``qmonitor``), so neither imports the other (docs/DESIGN-NOTES.md, layers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from qmonitor.core.errors import ErrorClass, QMonitorError
from qmonitor.core.record import Record

COMMAND_ACTIONS: Final = frozenset({"delay", "error", "hang", "events"})
"""Applied at the one dispatch point (``Monitor.submit``): any session's requests."""

REPLY_ACTIONS: Final = frozenset({"disconnect", "garble", "wrong-id"})
"""Applied where a QMP session writes the request's reply: they concern the wire only."""

GREETING_ACTIONS: Final = frozenset({"delay", "disconnect", "hang", "garble", "events"})
"""What may happen to the greeting (``"on": "greeting"``)."""

MACHINE_ACTIONS: Final[Mapping[str, str]] = {"migration": "fail", "savevm": "io-error"}
"""The one action of each machine operation."""

ACTION_MEMBERS: Final[Mapping[str, frozenset[str]]] = {
    "delay": frozenset({"seconds"}),
    "error": frozenset({"class", "desc"}),
    "disconnect": frozenset({"when"}),
    "hang": frozenset(),
    "garble": frozenset(),
    "wrong-id": frozenset(),
    "events": frozenset({"events", "count", "interval"}),
    "fail": frozenset({"at-pass", "after-bytes"}),
    "io-error": frozenset({"at-percent"}),
}
"""The members each action takes (beyond the target, ``times`` and ``action``)."""

TARGET_MEMBERS: Final = frozenset({"command", "arguments", "on", "machine"})
DISCONNECT_WHEN: Final = ("before-reply", "after-reply")

WRONG_ID: Final = "__io.github.qmonitor_wrong-id"
"""The id a ``wrong-id`` reply carries: one no client sent (clients drop such a reply, QMP
spec section 2.4: "Clients should drop all the responses that have an unknown id")."""


class FaultRuleError(QMonitorError, ValueError):
    """A fault rule (or file) that does not validate: one line naming the rule and member."""


class FaultRule(Record):
    """One validated rule. :meth:`members` gives it back as JSON (``fault-list``)."""

    __slots__ = (
        "action",
        "after_bytes",
        "arguments",
        "at_pass",
        "at_percent",
        "command",
        "count",
        "desc",
        "error_class",
        "events",
        "interval",
        "machine",
        "on",
        "seconds",
        "times",
        "when",
    )

    action: Final[str]
    command: Final[str | None]
    arguments: Final[Mapping[str, Any] | None]
    on: Final[str | None]
    machine: Final[str | None]
    times: Final[int | None]
    seconds: Final[float]
    error_class: Final[ErrorClass]
    desc: Final[str]
    when: Final[str]
    events: Final[tuple[Mapping[str, Any], ...]]
    count: Final[int]
    interval: Final[float]
    at_pass: Final[int | None]
    after_bytes: Final[int | None]
    at_percent: Final[float | None]

    def __init__(
        self,
        action: str,
        command: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        on: str | None = None,
        machine: str | None = None,
        times: int | None = None,
        seconds: float = 0.0,
        error_class: ErrorClass = ErrorClass.GENERIC_ERROR,
        desc: str = "",
        when: str = "before-reply",
        events: tuple[Mapping[str, Any], ...] = (),
        count: int = 1,
        interval: float = 0.0,
        at_pass: int | None = None,
        after_bytes: int | None = None,
        at_percent: float | None = None,
    ) -> None:
        self.action = action
        self.command = command
        self.arguments = arguments
        self.on = on
        self.machine = machine
        self.times = times
        self.seconds = seconds
        self.error_class = error_class
        self.desc = desc
        self.when = when
        self.events = events
        self.count = count
        self.interval = interval
        self.at_pass = at_pass
        self.after_bytes = after_bytes
        self.at_percent = at_percent

    def members(self) -> dict[str, Any]:
        """The rule as its JSON members, the defaults of its action spelled out."""
        out: dict[str, Any] = {}
        for name in ("command", "arguments", "on", "machine", "times"):
            value = getattr(self, name)
            if value is not None:
                out[name] = dict(value) if name == "arguments" else value
        out["action"] = self.action
        values: dict[str, Any] = {
            "seconds": self.seconds,
            "class": self.error_class.value,
            "desc": self.desc,
            "when": self.when,
            "events": [dict(e) for e in self.events],
            "count": self.count,
            "interval": self.interval,
            "at-pass": self.at_pass,
            "after-bytes": self.after_bytes,
            "at-percent": self.at_percent,
        }
        for name in sorted(ACTION_MEMBERS[self.action]):
            if values[name] is not None:
                out[name] = values[name]
        return out


def _number(where: str, name: str, value: object, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultRuleError(f"{where}: member '{name}' must be a number")
    if value < minimum:
        raise FaultRuleError(f"{where}: member '{name}' must be at least {minimum:g}")
    return float(value)


def _integer(where: str, name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultRuleError(f"{where}: member '{name}' must be an integer")
    if value < minimum:
        raise FaultRuleError(f"{where}: member '{name}' must be at least {minimum}")
    return value


def _string(where: str, name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise FaultRuleError(f"{where}: member '{name}' must be a non-empty string")
    return value


def _events(where: str, value: object) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list) or not value:
        raise FaultRuleError(f"{where}: member 'events' must be a non-empty list")
    events = []
    for number, event in enumerate(value, 1):
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            raise FaultRuleError(
                f"{where}: member 'events': entry {number} must be an object with a string 'event'"
            )
        unknown = set(event) - {"event", "data"}
        if unknown:
            raise FaultRuleError(
                f"{where}: member 'events': entry {number} has unknown member '{min(unknown)}'"
            )
        if "data" in event and not isinstance(event["data"], dict):
            raise FaultRuleError(
                f"{where}: member 'events': entry {number}: 'data' must be an object"
            )
        events.append(dict(event))
    return tuple(events)


def parse_rule(members: Mapping[str, object], where: str) -> FaultRule:
    """Validate one rule's JSON members; ``where`` names it in the error (``rule 2``).

    Raises :class:`FaultRuleError` with one line naming the rule and the member at fault.
    """
    if not isinstance(members, Mapping):
        raise FaultRuleError(f"{where}: a rule must be a JSON object")
    action = members.get("action")
    if action is None:
        raise FaultRuleError(f"{where}: member 'action' is missing")
    if action not in ACTION_MEMBERS:
        raise FaultRuleError(
            f"{where}: member 'action': unknown action {action!r}; one of "
            + ", ".join(ACTION_MEMBERS)
        )
    allowed = TARGET_MEMBERS | {"times", "action"} | ACTION_MEMBERS[str(action)]
    unknown = sorted(set(members) - allowed)
    if unknown:
        raise FaultRuleError(f"{where}: member '{unknown[0]}' does not apply to action '{action}'")
    targets = [name for name in ("command", "on", "machine") if name in members]
    if len(targets) != 1:
        raise FaultRuleError(
            f"{where}: a rule needs exactly one of the members 'command', 'on', 'machine'"
        )
    values: dict[str, Any] = {"action": action}
    if "command" in members:
        values["command"] = _string(where, "command", members["command"])
        if action not in COMMAND_ACTIONS | REPLY_ACTIONS:
            raise FaultRuleError(
                f"{where}: member 'action': '{action}' does not apply to a command"
            )
        if "arguments" in members:
            arguments = members["arguments"]
            if not isinstance(arguments, dict):
                raise FaultRuleError(f"{where}: member 'arguments' must be an object")
            values["arguments"] = dict(arguments)
    elif "arguments" in members:
        raise FaultRuleError(f"{where}: member 'arguments' applies only with 'command'")
    if "on" in members:
        if members["on"] != "greeting":
            raise FaultRuleError(f"{where}: member 'on' must be \"greeting\"")
        values["on"] = "greeting"
        if action not in GREETING_ACTIONS:
            raise FaultRuleError(
                f"{where}: member 'action': '{action}' does not apply to the greeting"
            )
        if action == "events" and members.get("interval", 0):
            raise FaultRuleError(
                f"{where}: member 'interval': events before the greeting are sent at once"
            )
    if "machine" in members:
        machine = members["machine"]
        if machine not in MACHINE_ACTIONS:
            raise FaultRuleError(f'{where}: member \'machine\' must be "migration" or "savevm"')
        values["machine"] = machine
        if action != MACHINE_ACTIONS[str(machine)]:
            raise FaultRuleError(
                f"{where}: member 'action': {machine} takes '{MACHINE_ACTIONS[str(machine)]}'"
            )
    if "times" in members:
        values["times"] = _integer(where, "times", members["times"], minimum=1)
    if action == "delay":
        if "seconds" not in members:
            raise FaultRuleError(f"{where}: member 'seconds' is missing")
        values["seconds"] = _number(where, "seconds", members["seconds"])
    elif action == "error":
        error_class = members.get("class", ErrorClass.GENERIC_ERROR.value)
        if error_class not in {c.value for c in ErrorClass}:
            raise FaultRuleError(
                f"{where}: member 'class' must be one of QEMU's error classes: "
                + ", ".join(c.value for c in ErrorClass)
            )
        values["error_class"] = ErrorClass(error_class)
        if "desc" not in members:
            raise FaultRuleError(f"{where}: member 'desc' is missing")
        values["desc"] = _string(where, "desc", members["desc"])
    elif action == "disconnect":
        when = members.get("when", "before-reply")
        if when not in DISCONNECT_WHEN:
            raise FaultRuleError(
                f'{where}: member \'when\' must be "before-reply" or "after-reply"'
            )
        values["when"] = when
    elif action == "events":
        if "events" not in members:
            raise FaultRuleError(f"{where}: member 'events' is missing")
        values["events"] = _events(where, members["events"])
        values["count"] = _integer(where, "count", members.get("count", 1), minimum=1)
        values["interval"] = _number(where, "interval", members.get("interval", 0))
    elif action == "fail":
        given = [name for name in ("at-pass", "after-bytes") if name in members]
        if len(given) != 1:
            raise FaultRuleError(f"{where}: 'fail' needs exactly one of 'at-pass', 'after-bytes'")
        if "at-pass" in members:
            values["at_pass"] = _integer(where, "at-pass", members["at-pass"], minimum=1)
        else:
            values["after_bytes"] = _integer(
                where, "after-bytes", members["after-bytes"], minimum=0
            )
    elif action == "io-error":
        if "at-percent" not in members:
            raise FaultRuleError(f"{where}: member 'at-percent' is missing")
        percent = _number(where, "at-percent", members["at-percent"])
        if percent > 100:
            raise FaultRuleError(f"{where}: member 'at-percent' must be at most 100")
        values["at_percent"] = percent
    return FaultRule(**values)


def parse_faults(text: str, source: str) -> list[FaultRule]:
    """The rules of a faults file's ``text`` (``{"faults": [RULE, ...]}``); ``source`` (the
    file's name) starts every error line."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise FaultRuleError(f"{source}: not JSON: {exc}") from None
    if not isinstance(document, dict) or set(document) != {"faults"}:
        raise FaultRuleError(f'{source}: expected {{"faults": [RULE, ...]}}')
    rules = document["faults"]
    if not isinstance(rules, list):
        raise FaultRuleError(f"{source}: member 'faults' must be a list of rules")
    return [parse_rule(rule, f"{source}: rule {number}") for number, rule in enumerate(rules, 1)]


def _contains(arguments: Mapping[str, object], subset: Mapping[str, object]) -> bool:
    """Whether ``arguments`` holds every member of ``subset`` with an equal value (objects
    compared as subsets again, so ``{"a": {"b": 1}}`` matches ``{"a": {"b": 1, "c": 2}}``)."""
    for name, wanted in subset.items():
        if name not in arguments:
            return False
        value = arguments[name]
        if isinstance(wanted, Mapping) and isinstance(value, Mapping):
            if not _contains(value, wanted):
                return False
        elif value != wanted or type(value) is not type(wanted):
            return False
    return True


Fired = Callable[[int, FaultRule, Mapping[str, object]], None]
"""``fired(rule_id, rule, info)``: a rule fired; ``info`` says on what (for the trace)."""


class FaultPoint(Protocol):
    """What a machine asks before an operation that may be made to fail.

    Each method is called once per operation, on the event loop's thread, and returns the
    rule that applies (and counts it as fired) or None. The machine then fails the way it
    would on a real I/O error: a migration's socket (``at_pass``/``after_bytes``), a
    snapshot's file (``at_percent``).
    """

    def migration_fault(self) -> FaultRule | None: ...

    def savevm_fault(self) -> FaultRule | None: ...


class _Entry:
    __slots__ = ("fired", "rule")

    rule: FaultRule
    fired: int

    def __init__(self, rule: FaultRule, fired: int = 0) -> None:
        self.rule = rule
        self.fired = fired

    @property
    def spent(self) -> bool:
        return self.rule.times is not None and self.fired >= self.rule.times


class FaultSet:
    """The rules in force, by id (ids count up from 1, never reused), and how often each
    fired. The first rule (lowest id) that matches and is not spent fires."""

    __slots__ = ("_command_rules", "_entries", "_next_id", "fired", "has_command_rules")

    fired: Fired | None
    _entries: dict[int, _Entry]
    _next_id: int
    _command_rules: int  # how many rules name a command
    has_command_rules: bool

    def __init__(
        self,
        fired: Fired | None = None,
        _entries: dict[int, _Entry] | None = None,
        _next_id: int = 1,
        _command_rules: int = 0,
    ) -> None:
        self.fired = fired
        self._entries = {} if _entries is None else _entries
        self._next_id = _next_id
        self._command_rules = _command_rules
        self.has_command_rules = False

    def add(self, rule: FaultRule) -> int:
        """Put ``rule`` in force; its id."""
        rule_id = self._next_id
        self._next_id += 1
        self._entries[rule_id] = _Entry(rule)
        if rule.command is not None:
            self._command_rules += 1
            self.has_command_rules = True
        return rule_id

    def remove(self, rule_id: int) -> bool:
        """Take rule ``rule_id`` out; False if there is none."""
        entry = self._entries.pop(rule_id, None)
        if entry is not None and entry.rule.command is not None:
            self._command_rules -= 1
            self.has_command_rules = self._command_rules > 0
        return entry is not None

    def clear(self) -> int:
        """Take every rule out; how many there were."""
        count = len(self._entries)
        self._entries.clear()
        self._command_rules = 0
        self.has_command_rules = False
        return count

    def entries(self) -> list[dict[str, Any]]:
        """Each rule's members with its ``id`` and how often it ``fired`` (``fault-list``)."""
        return [
            {"id": rule_id, **entry.rule.members(), "fired": entry.fired}
            for rule_id, entry in self._entries.items()
        ]

    def _fire(self, rule_id: int, entry: _Entry, info: Mapping[str, object]) -> FaultRule:
        entry.fired += 1
        if self.fired is not None:
            self.fired(rule_id, entry.rule, info)
        return entry.rule

    def command_fault(
        self, command: str, arguments: Mapping[str, object], actions: frozenset[str], peer: str
    ) -> FaultRule | None:
        """The rule among ``actions`` that fires for a request of ``command``, if any."""
        for rule_id, entry in self._entries.items():
            rule = entry.rule
            if (
                rule.command == command
                and rule.action in actions
                and not entry.spent
                and (rule.arguments is None or _contains(arguments, rule.arguments))
            ):
                return self._fire(rule_id, entry, {"command": command, "peer": peer})
        return None

    def greeting_fault(self, peer: str) -> FaultRule | None:
        """The rule that fires for the greeting to ``peer``, if any."""
        return self._first(lambda rule: rule.on == "greeting", {"on": "greeting", "peer": peer})

    def migration_fault(self) -> FaultRule | None:
        """:class:`FaultPoint`: the rule that fails the migration starting now, if any."""
        return self._first(lambda rule: rule.machine == "migration", {"machine": "migration"})

    def savevm_fault(self) -> FaultRule | None:
        """:class:`FaultPoint`: the rule that fails the snapshot starting now, if any."""
        return self._first(lambda rule: rule.machine == "savevm", {"machine": "savevm"})

    def _first(
        self, applies: Callable[[FaultRule], bool], info: Mapping[str, object]
    ) -> FaultRule | None:
        for rule_id, entry in self._entries.items():
            if applies(entry.rule) and not entry.spent:
                return self._fire(rule_id, entry, info)
        return None
