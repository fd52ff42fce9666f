"""Text for people: command results (the seed's ``user_print``), ``help``, progress and events.

What a renderer receives
========================
A command's own renderer (``@mon.command(human=render)``,
:data:`~qmonitor.core.commands.HumanRenderer`) is called with the handler's result **as the
handler gave it**, of its return type (a dataclass instance, an enum member, None for a
handler returning None), whether returned, returned by a coroutine or passed to
``Completion.succeed``, and the same for ``human-monitor-command``. It is typed with that
type, so mypy holds it to it and it needs no ``isinstance`` checks. The result has passed the
same check against the return type as a QMP reply (a result the type hint denies prints the
error QMP answers with). A renderer returns text with ``\\n`` line ends; transports turn them
into ``\\r\\n`` as QEMU's ``monitor_puts`` does.

:func:`render_value` is the default, for a command without a renderer: it gets the JSON value
QMP sends (dicts with QMP member names, enums as strings, ``{}`` for no result) and prints
nothing for ``{}`` or ``None`` (QEMU prints nothing after ``stop``), a string as it is, a dict
as ``key: value`` lines (nested values indented), a list of dicts as a table with a header row,
any other list one item per line.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence

from qmonitor.core.commands import Progress
from qmonitor.hmp.parse import split_words
from qmonitor.hmp.table import INFO, CommandTable, HumanEntry

_INDENT = "  "
_PROGRESS_BAR_WIDTH = 20


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _is_scalar(value: object) -> bool:
    return not isinstance(value, (dict, list)) or not value


def _lines(value: object, indent: str) -> list[str]:
    if isinstance(value, dict) and value:
        return _dict_lines(value, indent)
    if isinstance(value, list) and value:
        if all(isinstance(item, dict) for item in value):
            return _table_lines(value, indent)
        return [line for item in value for line in _lines(item, indent)]
    return [indent + _scalar(value)]


def _dict_lines(value: Mapping[str, object], indent: str) -> list[str]:
    lines = []
    for key, item in value.items():
        if _is_scalar(item):
            lines.append(f"{indent}{key}: {_scalar(item)}")
        elif isinstance(item, list) and all(_is_scalar(element) for element in item):
            lines.append(f"{indent}{key}: {', '.join(_scalar(element) for element in item)}")
        else:
            lines.append(f"{indent}{key}:")
            lines.extend(_lines(item, indent + _INDENT))
    return lines


def _table_lines(rows: Sequence[Mapping[str, object]], indent: str) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    cells = [list(columns)] + [[_scalar(row.get(c, "-")) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return [
        indent
        + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]


def render_value(value: object) -> str:
    """The default human rendering of an encoded result (see the module docstring)."""
    if value is None or value == {} or value == []:
        return ""
    if isinstance(value, str):
        return value if not value or value.endswith("\n") else value + "\n"
    return "".join(line + "\n" for line in _lines(value, ""))


# --- help (monitor/hmp.c help_cmd_dump) ----------------------------------------------------------


def help_line(entry: HumanEntry, prefix: str = "") -> str:
    """QEMU's ``help_cmd_dump_one``: ``[prefix ]name params -- help``."""
    return f"{prefix}{entry.table_name} {entry.params} -- {entry.help}\n"


def help_text(table: CommandTable, argument: str | None) -> str:
    """What ``help [ARG]`` prints (``help_cmd`` and ``help_cmd_dump`` in QEMU).

    No argument: every top-level command. ``help CMD``: that command's line. ``help info``: every
    ``info`` sub-command, ``help info X``: that one. A name not found prints
    ``unknown command: 'WORDS'``; a malformed argument (an unterminated quote) prints nothing.
    """
    words = split_words(argument) if argument is not None else []
    if words is None:
        return ""
    if not words:
        return "".join(help_line(e) for e in CommandTable.entries_of(table.top))
    entry = table.top.get(words[0])
    if entry is None:
        return f"unknown command: '{words[0]}'\n"
    if INFO not in entry.names:
        return help_line(entry)
    prefix = words[0] + " "
    if len(words) == 1:
        return "".join(help_line(e, prefix) for e in CommandTable.entries_of(table.info))
    sub_entry = table.info.get(words[1])
    if sub_entry is None:
        return f"unknown command: '{words[0]} {words[1]}'\n"
    return help_line(sub_entry, prefix)


# --- progress and events (beyond QEMU: its suspended monitor prints nothing) ---------------------


def progress_text(command_name: str, progress: Progress) -> str:
    """One line for a running command.

    With a total, a bar and the status: ``savevm: [#######-------]  35% saving RAM``. Without
    one, the status says it all when there is one (``migrate: pass 3, 12.0 MiB remaining, ...``:
    work whose end keeps moving has no meaningful percentage), else the count: ``scan: 12``.
    """
    if progress.total:
        fraction = min(max(progress.done / progress.total, 0.0), 1.0)
        filled = round(fraction * _PROGRESS_BAR_WIDTH)
        bar = "#" * filled + "-" * (_PROGRESS_BAR_WIDTH - filled)
        text = f"{command_name}: [{bar}] {fraction:4.0%}"
        return f"{text} {progress.status}" if progress.status else text
    return f"{command_name}: {progress.status or progress.done}"


def event_text(
    name: str, data: Mapping[str, object] | None, seconds: int, microseconds: int
) -> str:
    """One line for a QMP event: ``[14:03:59.120] STOP`` or ``... RESET {"guest": false}``."""
    moment = datetime.datetime.fromtimestamp(seconds + microseconds / 1e6)
    stamp = moment.strftime("%H:%M:%S.") + f"{microseconds // 1000:03d}"
    if data is None:
        return f"[{stamp}] {name}"
    return f"[{stamp}] {name} {json.dumps(data, ensure_ascii=False)}"
