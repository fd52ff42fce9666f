"""The human monitor's command table, built from the registry.

QEMU describes each HMP command in ``hmp-commands.hx`` / ``hmp-commands-info.hx`` with a
``name`` (aliases joined by ``|``: ``"stop|s"``), an ``args_type`` descriptor, and the
``params`` and ``help`` texts that ``help`` prints. ``info`` is a command with a sub-table
(``info status``, ``info name``, ...). Here the same table is derived from the registry: a
command's :class:`~qmonitor.core.commands.HumanSyntax` gives what differs from the defaults,
and the rest comes from its Python signature and docstring.

Which commands are human commands
=================================
Only commands registered with ``hmp=...`` (a :class:`HumanSyntax` or a name), and human-only
commands (``qmp=False``), appear in HMP. QEMU has many QMP-only commands too; a command becomes
a human command by saying how it reads for people.

Defaults (when a :class:`HumanSyntax` field is None)
=====================================================
- **name**: the QMP name with ``-`` turned into ``_`` (``system-reset`` -> ``system_reset``, the
  spelling of QEMU's older HMP commands); ``query-X`` becomes ``info X`` (``query-status`` ->
  ``info status``). A name ``"info X"`` puts the command in the ``info`` sub-table.
- **args_type**: one argument per signature parameter, in order: ``str`` and string enums ->
  ``s`` (a word or a quoted string), ``int`` -> ``l`` (a 64-bit integer expression; QAPI's
  ``int`` is int64, so not QEMU's 32-bit ``i``), ``bool`` -> ``b`` (``on``/``off``), ``float``
  -> ``T`` (QEMU's only floating-point letter; it also takes an ``ms``/``us``/``ns`` suffix),
  and ``?`` when the parameter is optional. Other parameter types have no human spelling:
  give ``args_type`` explicitly. A ``detachable`` command gets a leading ``detach:-d``.
- **params**: ``[-d]`` for each flag, ``name`` for a required argument, ``[name]`` for an
  optional one (QEMU's notation).
- **help**: the first line of the docstring.

Supported ``args_type`` letters (``monitor_parse_arguments`` in QEMU's ``monitor/hmp.c``):
``s`` word or quoted string, ``F`` the same naming a file (``screendump``; its own error text,
no file-name completion), ``S`` the rest of the line, ``i`` 32-bit integer expression, ``l``
64-bit integer expression, ``M`` integer in MiB, ``o`` size with a ``K/M/G/T/P/E`` suffix (MiB
without one), ``T`` floating-point number with an optional time suffix, ``b`` ``on``/``off``,
``-X`` a flag and ``-Xs`` a flag with a string value; ``?`` after a letter makes it optional.
QEMU's ``B`` (block device names), ``O`` (QemuOpts) and ``/`` (memory dump format)
describe QEMU's own subsystems and are refused.

Argument keys are the command's QMP parameter names: the parsed arguments go through the same
``convert_arguments`` as a QMP request, so validation and its error texts are shared. The one
exception is ``detach``: for a detachable command it is the session's business (it decides
whether to wait), and it reaches the handler only if the handler has a ``detach`` parameter.
"""

from __future__ import annotations

import enum
import types
import typing
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Final, Union

from qmonitor.core.commands import Command, CommandRegistry, HumanSyntax

INFO: Final = "info"
"""The one command with a sub-table, as in QEMU."""

DETACH_KEY: Final = "detach"
"""The ``args_type`` key of a detachable command's ``-d`` flag (QEMU's ``migrate``)."""

_LETTERS: Final = frozenset("sSFilMoTb")

Completer = Callable[[], Sequence[str]]


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """One item of an ``args_type`` string: ``key:letter[?]``, ``key:-X`` or ``key:-Xs``."""

    key: str
    letter: str  # one of _LETTERS, or "-" for a flag
    optional: bool = False
    flag: str = ""  # the flag's letter, for "-"
    flag_takes_value: bool = False  # "-Xs": the flag is followed by a string

    @property
    def is_flag(self) -> bool:
        """Whether this is a ``-X`` option rather than a positional argument."""
        return self.letter == "-"


def parse_args_type(args_type: str, where: str) -> tuple[ArgSpec, ...]:
    """Parse QEMU's ``args_type`` syntax; raise ValueError naming ``where`` if unsupported."""
    specs: list[ArgSpec] = []
    for item in filter(None, args_type.split(",")):
        key, colon, kind = item.partition(":")
        if not colon or not key or not kind:
            raise ValueError(f"{where}: malformed args_type item {item!r}")
        if kind[0] == "-":
            if len(kind) not in (2, 3) or not kind[1].isalpha() or kind[2:] not in ("", "s"):
                raise ValueError(f"{where}: malformed flag {item!r} (expected -X or -Xs)")
            specs.append(ArgSpec(key, "-", flag=kind[1], flag_takes_value=kind[2:] == "s"))
            continue
        letter, modifiers = kind[0], kind[1:]
        if letter not in _LETTERS or modifiers not in ("", "?"):
            raise ValueError(
                f"{where}: unsupported args_type {kind!r} in {item!r} "
                f"(supported: {', '.join(sorted(_LETTERS))}, -X, -Xs, with an optional '?')"
            )
        specs.append(ArgSpec(key, letter, optional=modifiers == "?"))
    return tuple(specs)


@dataclass(frozen=True, slots=True)
class HumanEntry:
    """One HMP command: what the parser, ``help`` and completion need."""

    name: str  # within its table: "stop", or "status" for "info status"
    aliases: tuple[str, ...]
    args: tuple[ArgSpec, ...]
    params: str
    help: str
    command: Command
    in_info: bool  # a sub-command of "info"
    completers: Mapping[str, Completer]
    subword_separators: Mapping[str, str]

    @property
    def names(self) -> tuple[str, ...]:
        """The name and its aliases."""
        return (self.name, *self.aliases)

    @property
    def table_name(self) -> str:
        """QEMU's ``cmd->name``: the names joined by ``|``, used in help and error texts."""
        return "|".join(self.names)

    @property
    def full_name(self) -> str:
        """The name as typed from the top level: ``info status``."""
        return f"{INFO} {self.name}" if self.in_info else self.name

    @property
    def passes_detach(self) -> bool:
        """Whether the handler itself takes the ``-d`` flag (else the session consumes it)."""
        return any(p.qmp_name == DETACH_KEY for p in self.command.signature.parameters)


class CommandTable:
    """The top-level HMP commands and the ``info`` sub-table, looked up by name or alias."""

    def __init__(self, entries: Sequence[HumanEntry]) -> None:
        self.top: dict[str, HumanEntry] = {}
        self.info: dict[str, HumanEntry] = {}
        for entry in entries:
            table = self.info if entry.in_info else self.top
            for name in entry.names:
                if name in table:
                    raise ValueError(
                        f"HMP command '{entry.full_name}' ({entry.command.name}) and "
                        f"'{table[name].full_name}' ({table[name].command.name}) "
                        f"share the name '{name}'"
                    )
                table[name] = entry

    @classmethod
    def from_commands(cls, commands: Iterable[Command]) -> CommandTable:
        """The table of every human command among ``commands`` (see the module docstring)."""
        return cls([human_entry(c) for c in commands if c.human is not None or not c.qmp])

    @staticmethod
    def entries_of(table: Mapping[str, HumanEntry]) -> list[HumanEntry]:
        """The distinct entries of a table, sorted by name (the order ``help`` lists them)."""
        return sorted({id(e): e for e in table.values()}.values(), key=lambda e: e.name)


def _default_name(qmp_name: str) -> str:
    if qmp_name.startswith("query-"):
        return f"{INFO} {qmp_name.removeprefix('query-').replace('-', '_')}"
    return qmp_name.replace("-", "_")


def _unwrap(hint: object) -> object:
    """The type under ``Annotated[...]`` and ``T | None``."""
    while True:
        origin = typing.get_origin(hint)
        if origin is Annotated:
            hint = typing.get_args(hint)[0]
        elif origin in (Union, types.UnionType):
            others = [arg for arg in typing.get_args(hint) if arg is not type(None)]
            if len(others) != 1:
                return hint
            hint = others[0]
        else:
            return hint


def _letter_for(hint: object) -> str | None:
    if hint is bool:
        return "b"
    if hint is int:
        return "l"
    if hint is float:
        return "T"
    if hint is str or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return "s"
    return None


def _enum_values(hint: object) -> Completer | None:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = tuple(str(member.value) for member in hint)
        return lambda: values
    return None


def _derived_args(command: Command) -> tuple[ArgSpec, ...]:
    specs = []
    for parameter in command.signature.parameters:
        if parameter.qmp_name == DETACH_KEY and command.detachable:
            continue
        letter = _letter_for(_unwrap(parameter.annotation))
        if letter is None:
            raise ValueError(
                f"command '{command.name}': parameter '{parameter.qmp_name}' has no human "
                f"syntax; give HumanSyntax(args_type=...) for it"
            )
        specs.append(ArgSpec(parameter.qmp_name, letter, optional=not parameter.required))
    return tuple(specs)


def _derived_params(specs: Sequence[ArgSpec]) -> str:
    words = []
    for spec in specs:
        if spec.is_flag:
            words.append(
                f"[-{spec.flag} {spec.key}]" if spec.flag_takes_value else f"[-{spec.flag}]"
            )
        else:
            words.append(f"[{spec.key}]" if spec.optional else spec.key)
    return " ".join(words)


def human_name(command: Command) -> str | None:
    """The name ``command`` is typed by in HMP (``info status``), None if it has none."""
    if command.human is None and command.qmp:
        return None
    return (command.human and command.human.name) or _default_name(command.name)


def human_entry(command: Command) -> HumanEntry:
    """The HMP entry of ``command``, filling what its HumanSyntax leaves out."""
    syntax = command.human or HumanSyntax()
    full_name = syntax.name or _default_name(command.name)
    head, _, rest = full_name.partition(" ")
    in_info = bool(rest)
    if in_info and (head != INFO or " " in rest):
        raise ValueError(
            f"command '{command.name}': HMP name '{full_name}' is not 'NAME' or 'info NAME'"
        )
    where = f"command '{command.name}'"
    if syntax.args_type is not None:
        args = parse_args_type(syntax.args_type, where)
    else:
        args = _derived_args(command)
    if command.detachable and not any(spec.key == DETACH_KEY for spec in args):
        args = (ArgSpec(DETACH_KEY, "-", flag="d"), *args)
    completers: dict[str, Completer] = {}
    hints = {p.qmp_name: _unwrap(p.annotation) for p in command.signature.parameters}
    for spec in args:
        enum_completer = _enum_values(hints.get(spec.key))
        if enum_completer is not None:
            completers[spec.key] = enum_completer
    completers.update(syntax.completers)
    doc_first_line = command.doc.partition("\n")[0].strip()
    return HumanEntry(
        name=rest if in_info else head,
        aliases=tuple(syntax.aliases),
        args=args,
        params=syntax.params if syntax.params is not None else _derived_params(args),
        help=syntax.help if syntax.help is not None else doc_first_line,
        command=command,
        in_info=in_info,
        completers=completers,
        subword_separators=dict(syntax.subword_separators),
    )


_tables: weakref.WeakKeyDictionary[CommandRegistry, tuple[tuple[int, ...], CommandTable]] = (
    weakref.WeakKeyDictionary()
)


def command_table(registry: CommandRegistry) -> CommandTable:
    """The table of ``registry``, rebuilt when a command was added or removed since last time.

    Raises ValueError for a human syntax that cannot work (see :func:`human_entry`).
    """
    key = tuple(id(command) for command in registry)
    cached = _tables.get(registry)
    if cached is None or cached[0] != key:
        cached = key, CommandTable.from_commands(registry)
        _tables[registry] = cached
    return cached[1]
