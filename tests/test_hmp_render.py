"""Human rendering of results, ``help`` in QEMU's layout, and TAB completion candidates."""

from __future__ import annotations

import pytest

from hmp_app import DemoState, add_demo_commands
from qmonitor.core.commands import CommandRegistry, HumanSyntax, Progress
from qmonitor.hmp.builtins import register_hmp_builtins
from qmonitor.hmp.complete import complete
from qmonitor.hmp.render import event_text, help_text, progress_text, render_value
from qmonitor.hmp.table import CommandTable, command_table


@pytest.fixture
def table() -> CommandTable:
    registry = CommandRegistry()
    register_hmp_builtins(registry)
    add_demo_commands(registry, DemoState())
    return command_table(registry)


def test_default_rendering() -> None:
    assert render_value({}) == ""
    assert render_value(None) == ""
    assert render_value("text") == "text\n"
    assert render_value("lines\n") == "lines\n"
    assert render_value(42) == "42\n"
    assert render_value({"status": "running", "running": True, "tags": ["a", "b"]}) == (
        "status: running\nrunning: true\ntags: a, b\n"
    )
    assert render_value({"ram": {"total": 1, "remaining": 0}}) == (
        "ram:\n  total: 1\n  remaining: 0\n"
    )


def test_lists_of_objects_render_as_a_table() -> None:
    rows = [{"id": "job0", "status": "running"}, {"id": "snapshot-1", "error": "x"}]
    assert render_value(rows) == (
        "id          status   error\njob0        running  -\nsnapshot-1  -        x\n"
    )
    assert render_value(["a", 1]) == "a\n1\n"


def test_help_lines_have_qemus_layout(table: CommandTable) -> None:
    # QEMU 7.2 "help stop" / "help info status": name params -- help (two spaces if no params)
    assert help_text(table, "stop") == "stop|s  -- stop emulation\n"
    assert help_text(table, "s") == "stop|s  -- stop emulation\n"
    assert help_text(table, "info status") == (
        "info status  -- show the current VM status (running|paused)\n"
    )
    assert help_text(table, "loadvm") == "loadvm tag -- restore a VM snapshot from its tag\n"


def test_help_lists_everything_sorted(table: CommandTable) -> None:
    lines = help_text(table, None).splitlines()
    assert "help|? [cmd] -- show the help" in lines
    assert "info [subcommand] -- show various information about the system state" in lines
    assert "slow [-d] [seconds] -- run for a while, reporting progress" in lines
    assert lines == sorted(lines)
    assert help_text(table, "info") == (
        "info snapshots  -- show the currently saved VM snapshots\n"
        "info status  -- show the current VM status (running|paused)\n"
    )


def test_help_of_unknown_names(table: CommandTable) -> None:
    # QEMU 7.2 texts.
    assert help_text(table, "xyz") == "unknown command: 'xyz'\n"
    assert help_text(table, "info xyz") == "unknown command: 'info xyz'\n"
    assert help_text(table, '"unterminated') == ""


def test_progress_and_event_lines() -> None:
    assert progress_text("savevm", Progress(7, 20, "saving RAM")) == (
        "savevm: [#######-------------]  35% saving RAM"
    )
    assert progress_text("scan", Progress(12)) == "scan: 12"
    # Without a total, a status says it all: no count, no percentage that could go backwards.
    assert progress_text("migrate", Progress(0, None, "pass 3, 1.0 MiB remaining")) == (
        "migrate: pass 3, 1.0 MiB remaining"
    )
    line = event_text("RESET", {"guest": False}, 1_700_000_000, 120_000)
    assert line.endswith('.120] RESET {"guest": false}')


@pytest.mark.parametrize(
    ("text", "word", "candidates"),
    [
        ("", "", None),
        ("sl", "sl", ["slow"]),
        ("s", "s", ["s", "set_mode", "size", "slow", "stop"]),
        ("info ", "", ["snapshots", "status"]),
        ("info sta", "sta", ["status"]),
        ("help info s", "s", ["snapshots", "status"]),
        ("help lo", "lo", ["loadvm"]),
        ("loadvm ", "", ["alpha", "beta", "production"]),
        ("loadvm pr", "pr", ["production"]),
        ("loadvm alpha ", "", []),
        ("set_mode ", "", ["fast", "safe"]),
        ("set_mode fast o", "o", ["off", "on"]),
        ("slow -", "-", ["-d"]),
        ("slow -d -", "-", []),
        ("echo any thing", "thing", []),
        ("nosuch ", "", []),
        ('loadvm "open', "", []),
    ],
)
def test_completion(
    table: CommandTable, text: str, word: str, candidates: list[str] | None
) -> None:
    completed_word, completed = complete(table, text)
    assert completed_word == word
    if candidates is None:
        assert {"help", "?", "info", "loadvm", "stop", "s"} <= set(completed)
    else:
        assert completed == candidates


@pytest.mark.parametrize(
    ("text", "word", "candidates"),
    [
        ("chord ", "", ["alt", "alt_r", "ctrl"]),
        ("chord ctrl-al", "al", ["alt", "alt_r"]),
        ("chord ctrl-alt-", "", ["alt", "alt_r", "ctrl"]),
        ("chord c", "c", ["ctrl"]),
    ],
)
def test_completion_after_a_subword_separator(text: str, word: str, candidates: list[str]) -> None:
    """``subword_separators``: only what follows the last ``-`` is completed (QEMU's
    ``sendkey_completion``), so the candidates are key names, not whole words."""
    registry = CommandRegistry()
    syntax = HumanSyntax(
        name="chord",
        args_type="keys:s",
        completers={"keys": lambda: ["ctrl", "alt", "alt_r"]},
        subword_separators={"keys": "-"},
    )

    @registry.command(name="chord", qmp=False, hmp=syntax)
    def chord(keys: str) -> None:
        """Press keys together."""

    assert complete(command_table(registry), text) == (word, candidates)


def test_file_names_are_not_completed() -> None:
    """A named limit (docs/HMP.md): an ``F`` argument offers nothing, where QEMU lists the
    host's files."""
    registry = CommandRegistry()

    @registry.command(name="dump", qmp=False, hmp=HumanSyntax(args_type="filename:F"))
    def dump(filename: str) -> None:
        """Write somewhere."""

    assert complete(command_table(registry), "dump /") == ("/", [])
