"""The interactive console, driven through a real pseudo-terminal (pexpect).

The program under test is ``tests/hmp_app.py`` (a Monitor with demo commands, QMP on a unix
socket, the console on the terminal); the last test drives ``python -m qmonitor run``.
prompt_toolkit draws ``(qemu)`` and moves the cursor instead of printing the space, so the
prompt is matched as ``\\(qemu\\)``.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from qmonitor.server.console import HISTORY_MAX, PersistentHistory
from qmonitor.testing import RawQMPClient

APP = str(Path(__file__).with_name("hmp_app.py"))
PROMPT = r"\(qemu\)"
BANNER = "QEMU 7.2.22 monitor - type 'help' for more information"


def typed(text: str) -> str:
    """A regex for ``text`` as prompt_toolkit draws a typed line (a space may be a cursor move)."""
    return r"(?: |\x1b\[\d*C)".join(re.escape(word) for word in text.split(" "))


class Console:
    """A program with a console on a pseudo-terminal, and the paths it serves."""

    def __init__(self, directory: Path, *args: str) -> None:
        env = dict(
            os.environ,
            XDG_STATE_HOME=str(directory / "state"),
            TERM="xterm",
            PROMPT_TOOLKIT_NO_CPR="1",  # pexpect does not answer cursor position requests
        )
        self.qmp_path = str(directory / "qmp.sock")
        self.hmp_path = str(directory / "hmp.sock")
        self.child = pexpect.spawn(
            sys.executable,
            list(args) or [APP, self.qmp_path, self.hmp_path],
            env=env,
            encoding="utf-8",
            timeout=15,
            dimensions=(40, 160),
        )
        self.child.expect_exact(BANNER)
        self.prompt()

    def prompt(self) -> None:
        self.child.expect(PROMPT)

    def run(self, line: str, output: str) -> None:
        """Type ``line``, expect ``output``, then the prompt."""
        self.child.sendline(line)
        self.child.expect_exact(output)
        self.prompt()

    def quit(self) -> None:
        self.child.sendline("quit")
        self.child.expect(pexpect.EOF)

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close()


@pytest.fixture
def consoles(short_tmp: Path) -> Iterator[list[Console]]:
    started: list[Console] = []
    yield started
    for console in started:
        console.kill()


@pytest.fixture
def console(short_tmp: Path, consoles: list[Console]) -> Console:
    consoles.append(Console(short_tmp))
    return consoles[-1]


def test_banner_prompt_help_and_info_status(console: Console) -> None:
    console.run("help", "help|? [cmd] -- show the help")
    console.run("help info", "info status  -- show the current VM status (running|paused)")
    console.run("info status", "VM status: running")
    console.run("stop", "")
    console.run("info status", "VM status: paused")
    console.run("xyz", "unknown command: 'xyz'")


def test_tab_completes_a_command_and_a_value(console: Console) -> None:
    console.child.send("info sta\t")
    console.child.expect_exact("status")
    console.child.send("\r")
    console.child.expect_exact("VM status: running")
    console.prompt()
    console.child.send("loadvm pro\t")
    console.child.expect_exact("production")
    console.child.send("\r")
    console.prompt()
    console.run("echo loaded", "loaded")
    assert "does not exist" not in console.child.before


def test_history_is_recalled_after_a_restart(
    short_tmp: Path, consoles: list[Console], console: Console
) -> None:
    console.run("echo remembered across runs", "remembered across runs")
    console.quit()
    assert "echo remembered across runs" in (short_tmp / "state/qmonitor/history").read_text()
    again = Console(short_tmp)
    consoles.append(again)
    again.child.send("\x1b[A")  # "quit", the last line of the first run
    again.child.expect_exact("quit")
    again.child.send("\x1b[A")
    again.child.expect(typed("echo remembered across runs"))
    again.child.send("\r")
    again.child.expect_exact("remembered across runs")
    again.prompt()


async def test_a_running_command_holds_the_prompt_while_qmp_goes_on(console: Console) -> None:
    qmp = await RawQMPClient.connect_unix(console.qmp_path)
    await qmp.negotiate()
    child = console.child
    child.sendline("slow 2")
    child.expect_exact("working")  # its progress line
    child.sendline("echo typed ahead")
    answers = 0
    while True:
        # No prompt until the command is done; QMP answers all along.
        index = await asyncio.to_thread(
            child.expect, [PROMPT, r"slow: finished after 2 s", pexpect.TIMEOUT], 0.2
        )
        assert index != 0, "a prompt appeared while the command was running"
        if index == 1:
            break
        reply = await qmp.execute("query-status")
        assert reply == {"return": {"running": True, "singlestep": False, "status": "running"}}
        answers += 1
    assert answers > 0
    console.prompt()
    child.expect_exact("typed ahead")  # the line typed meanwhile ran after it
    console.prompt()
    await qmp.close()


def test_ctrl_c_cancels_the_running_command(console: Console) -> None:
    console.child.sendline("slow 60")
    console.child.expect_exact("working")
    console.child.sendcontrol("c")
    console.child.expect_exact("Error: Command 'x-slow' was cancelled by Ctrl-C")
    console.prompt()
    console.run("info status", "VM status: running")


async def test_events_show_above_the_prompt_without_breaking_the_line(console: Console) -> None:
    console.child.send("echo half")
    console.child.expect(typed("echo half"))
    _, writer = await asyncio.open_unix_connection(console.hmp_path)
    writer.write(b"x_emit\n")
    await writer.drain()
    await asyncio.to_thread(console.child.expect, r"\] STOP")
    console.child.expect(typed("echo half"))  # the line being typed is drawn again
    console.child.send(" done\r")
    console.child.expect_exact("half done")
    console.prompt()
    writer.close()
    await writer.wait_closed()


def test_qmonitor_run_has_the_console(short_tmp: Path, consoles: list[Console]) -> None:
    qmp_path = short_tmp / "run.qmp"
    run = Console(short_tmp, "-m", "qmonitor", "run", "-qmp", f"unix:{qmp_path},server=on,wait=off")
    consoles.append(run)
    run.run("info status", "VM status: running")
    run.run("stop", "")
    run.run("info status", "VM status: paused")
    run.quit()


def test_history_file_is_trimmed_to_history_max(short_tmp: Path) -> None:
    """HISTORY_MAX: the oldest lines go; the newest come back first."""
    path = short_tmp / "history"
    path.write_text("".join(f"line {n}\n" for n in range(HISTORY_MAX + 50)))
    history = PersistentHistory(path)
    loaded = list(history.load_history_strings())
    assert len(loaded) == HISTORY_MAX
    assert loaded[0] == f"line {HISTORY_MAX + 49}"
    assert loaded[-1] == "line 50"
    assert len(path.read_text().splitlines()) == HISTORY_MAX
    history.store_string("newest")
    assert path.read_text().splitlines()[-1] == "newest"
