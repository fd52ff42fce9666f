"""docs/STANDIN.md lists every option and every command the stand-in has (issue 12, "Done when").

The lists come from the running program, not from the source: ``qmonitor-system-x86_64`` is
launched as QEMUMachine launches QEMU (the test listens, the stand-in connects), and asked
``query-commands`` and the human monitor's ``help`` and ``info``; the options are the ones of
QEMU's table that the parser does not refuse. A command or option added without a row, or a row
left behind by one removed, fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

from qmonitor.cmdline import CommandLineError, parse_command_line
from qmonitor.cmdline.options import QEMU_OPTIONS
from qmonitor.launch import STANDIN_OWN_OPTIONS

STANDIN = str(Path(sys.executable).parent / "qmonitor-system-x86_64")
DOC = Path(__file__).resolve().parent.parent / "docs" / "STANDIN.md"

HMP_HEADING = "### HMP (`-monitor`, `-mon mode=readline`, `human-monitor-command`)"

REFUSALS = ("option not supported by qmonitor", "Option not supported for this target")


def table_after(heading: str, header: str) -> list[str]:
    """The first cells of the Markdown table whose header row starts with ``header``, in the
    section under ``heading``."""
    text = DOC.read_text()
    section = text[text.index(f"\n{heading}\n") :]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"| {header} |"))
    cells = []
    for line in (line.strip() for line in lines[start + 2 :]):
        if not line.startswith("|"):
            break
        cells.append(line.split(" | ")[0].removeprefix("| "))
    return cells


def names_in(cells: list[str]) -> set[str]:
    """The backquoted names of the cells: `a`, `b` -> {a, b}."""
    return {name for cell in cells for name in re.findall(r"`([^`]+)`", cell)}


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QEMUMonitorProtocol]:
    path = str(tmp_path_factory.mktemp("doc") / "mon.sock")
    qmp = QEMUMonitorProtocol(path, server=True)
    argv = [STANDIN, "-machine", "none", "-display", "none", "-nodefaults"]
    argv += ["-chardev", f"socket,id=mon,path={path}", "-mon", "chardev=mon,mode=control"]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        qmp.accept(timeout=30)
        yield qmp
    finally:
        qmp.close()
        process.kill()
        process.wait(timeout=30)


def human(qmp: QEMUMonitorProtocol, command_line: str) -> list[str]:
    """What each line of an HMP listing names before its ``--``: ``cont|c``, ``info status``."""
    text = qmp.cmd("human-monitor-command", **{"command-line": command_line})
    assert isinstance(text, str)
    return [" ".join(line.split(" -- ")[0].split()[:2]) for line in text.splitlines() if line]


def test_every_qmp_command_has_a_row(standin: QEMUMonitorProtocol) -> None:
    registered = {entry["name"] for entry in standin.cmd("query-commands")}
    documented = names_in(table_after("### QMP", "command"))
    assert sorted(registered - documented) == [], "registered, not in docs/STANDIN.md"
    assert sorted(documented - registered) == [], "in docs/STANDIN.md, not registered"


def test_every_hmp_command_has_a_row(standin: QEMUMonitorProtocol) -> None:
    registered = {alias for line in human(standin, "help") for alias in line.split()[0].split("|")}
    documented = names_in(table_after(HMP_HEADING, "command"))
    assert sorted(registered ^ documented) == []
    info_registered = set(human(standin, "info"))
    info_documented = names_in(table_after(HMP_HEADING, "`info` subcommand"))
    assert sorted(info_registered ^ info_documented) == []


def accepted_options() -> set[str]:
    """QEMU's options that the parser reads rather than refuses (a bad value is still read)."""
    accepted = set()
    for name, option in QEMU_OPTIONS.items():
        argv = [f"-{name}", "x"] if option.takes_argument else [f"-{name}"]
        try:
            parse_command_line(argv)
        except CommandLineError as error:
            if any(refusal in str(error) for refusal in REFUSALS):
                continue
        accepted.add(f"-{name}")
    return accepted


def test_every_option_read_has_a_row() -> None:
    documented = {name.split()[0] for name in names_in(table_after("### Options", "option"))}
    assert sorted(accepted_options() ^ documented) == []


def test_every_own_option_has_a_row() -> None:
    documented = {
        name.split()[0] for name in names_in(table_after("## Launching the stand-in", "own option"))
    }
    assert sorted(set(STANDIN_OWN_OPTIONS) ^ documented) == []
