"""The interactive console, driven through a real pseudo-terminal (pexpect).

The program under test is ``tests/hmp_app.py`` (a Monitor with demo commands, QMP on a unix
socket, the console on the terminal); the last test drives ``python -m qmonitor run``.
prompt_toolkit draws ``(qemu)`` and moves the cursor instead of printing the space, so the
prompt is matched as ``\\(qemu\\)``.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pyte
import pytest

from qmonitor.hmp.readline import CMD_BUF_SIZE
from qmonitor.server.console import (
    HISTORY_MAX,
    LINE_TOO_LONG,
    PersistentHistory,
    line_refusal,
)
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
        self.history_path = directory / "state" / "qmonitor" / "history"
        self.child = pexpect.spawn(
            sys.executable,
            list(args) or [APP, self.qmp_path, self.hmp_path],
            env=env,
            encoding="utf-8",
            codec_errors="replace",
            timeout=15,
            dimensions=(40, 160),
        )
        self.transcript = io.StringIO()  # everything the program wrote to the terminal
        self.child.logfile_read = self.transcript
        self.child.expect_exact(BANNER)
        self.prompt()

    def screen(self) -> list[str]:
        """The terminal's lines as a person sees them now, without the empty ones."""
        screen = pyte.Screen(160, 40)
        pyte.Stream(screen).feed(self.transcript.getvalue())
        return [line.rstrip() for line in screen.display if line.strip()]

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


def qmonitor_run(directory: Path, *options: str) -> Console:
    """``qmonitor run`` with its console on the terminal, QMP at ``console.qmp_path``."""
    qmp = f"unix:{directory / 'qmp.sock'},server=on,wait=off"
    state = str(directory / "vm-state")
    return Console(directory, "-m", "qmonitor", "run", "-m", "16M", "-qmp", qmp,
                   "--state-dir", state, *options)  # fmt: skip


# -- lines the console refuses (QEMU's limit, bytes that are not UTF-8) ------------------------


def test_a_line_that_is_not_utf8_is_refused_and_kept_out_of_history(console: Console) -> None:
    console.run("echo before", "before")
    os.write(console.child.child_fd, b"info status\xff\r")
    console.child.expect_exact("Error: byte 0xff at column 12 is not UTF-8; the line was not run")
    console.prompt()
    console.child.send("\x1b[A")  # the history holds the line before, not the refused one
    console.child.expect(typed("echo before"))
    console.child.send("\r")
    console.child.expect_exact("before")
    console.prompt()
    console.quit()
    transcript = console.transcript.getvalue()
    assert "unknown command" not in transcript and "Traceback" not in transcript
    assert "Unhandled exception" not in transcript
    assert console.history_path.read_bytes() == b"echo before\nquit\n"


def test_an_over_long_line_is_refused_and_kept_out_of_history(console: Console) -> None:
    console.child.send("echo " + "x" * CMD_BUF_SIZE + "\r")  # 5 bytes too many
    console.child.expect_exact(LINE_TOO_LONG.rstrip("\n"))
    console.prompt()
    console.run("echo after", "after")
    console.quit()
    assert console.history_path.read_bytes() == b"echo after\nquit\n"


def test_the_line_limit_is_qemus_in_bytes() -> None:
    """READLINE_CMD_BUF_SIZE - 1 bytes fit; the limit counts UTF-8 bytes, not characters."""
    assert line_refusal("x" * CMD_BUF_SIZE) is None
    assert line_refusal("x" * (CMD_BUF_SIZE + 1)) == LINE_TOO_LONG
    assert line_refusal("é" * (CMD_BUF_SIZE // 2 + 1)) == LINE_TOO_LONG
    assert line_refusal("x", truncated=True) == LINE_TOO_LONG


# -- events -------------------------------------------------------------------------------


async def test_events_can_be_switched_off_and_on_at_the_console(console: Console) -> None:
    console.run("events", "events: on")
    console.run("events off", "")
    console.run("events", "events: off")  # run("events off", "") may return on a redraw
    reader, writer = await asyncio.open_unix_connection(console.hmp_path)
    await asyncio.wait_for(reader.readuntil(b"(qemu) "), 10)
    writer.write(b"x_emit\n")
    await asyncio.wait_for(reader.readuntil(b"(qemu) "), 10)  # STOP has been emitted
    await asyncio.to_thread(console.run, "echo after", "after")
    assert "STOP" not in console.transcript.getvalue()  # shown, it would come before "after"
    console.run("events on", "")
    console.run("events", "events: on")
    writer.write(b"x_emit\n")
    await writer.drain()
    await asyncio.to_thread(console.child.expect, r"\] STOP")
    writer.close()
    await writer.wait_closed()


# -- quitting and failing: nothing glued to the prompt, no prompt left behind ----------------


def test_quit_leaves_no_prompt_after_shutdown(short_tmp: Path, consoles: list[Console]) -> None:
    run = qmonitor_run(short_tmp)
    consoles.append(run)
    run.child.sendline("quit")
    run.child.expect(pexpect.EOF)
    *_, quit_line, shutdown_line = run.screen()
    assert quit_line == "(qemu) quit"
    assert shutdown_line.endswith('] SHUTDOWN {"guest": false, "reason": "host-qmp-quit"}')


def test_a_failed_incoming_migration_is_reported_on_a_line_of_its_own(
    short_tmp: Path, consoles: list[Console]
) -> None:
    incoming = short_tmp / "in.sock"
    run = qmonitor_run(short_tmp, "-incoming", f"unix:{incoming}")
    consoles.append(run)
    with socket.socket(socket.AF_UNIX) as source:
        source.connect(str(incoming))
        source.sendall(b"not a migration stream")
    run.child.expect(pexpect.EOF)
    run.child.close()
    assert run.child.exitstatus == 1
    *_, banner, failure = run.screen()
    assert banner == BANNER
    assert failure == "qmonitor: load of migration failed: not a qmonitor migration stream"


# -- migrate at the console -----------------------------------------------------------------


def test_ctrl_c_cancels_the_migration_and_says_so(short_tmp: Path, consoles: list[Console]) -> None:
    run = qmonitor_run(short_tmp)
    consoles.append(run)
    silent = socket.socket(socket.AF_UNIX)  # takes the connection, never answers
    silent.bind(str(short_tmp / "silent.sock"))
    silent.listen(1)
    run.child.sendline(f"migrate unix:{short_tmp}/silent.sock")
    run.child.expect_exact("migrate: pass ")
    run.child.sendcontrol("c")
    run.child.expect_exact("Error: Migration cancelled; the VM stays here as it was")
    run.prompt()
    run.run("info status", "VM status: running")
    run.run("info migrate", "Migration status: cancelled")
    assert "hmp-migrate" not in run.transcript.getvalue()
    silent.close()


async def test_migration_progress_says_when_the_guest_dirties_too_fast(
    short_tmp: Path, consoles: list[Console]
) -> None:
    sink_path = str(short_tmp / "sink.sock")

    async def discard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1 << 16):
            pass
        writer.close()

    sink = await asyncio.start_unix_server(discard, sink_path)
    run = await asyncio.to_thread(qmonitor_run, short_tmp, "--dirty-rate", "64M")
    consoles.append(run)
    qmp = await RawQMPClient.connect_unix(run.qmp_path)
    await qmp.negotiate()
    while (await qmp.execute("x-query-ram-digest"))["return"]["workload-step"] < 4096:
        await asyncio.sleep(0.05)  # until every page of the 16 MiB holds data
    await asyncio.to_thread(run.run, "migrate_set_parameter max-bandwidth 16M", "")
    run.child.sendline(f"migrate unix:{sink_path}")
    # Pass 1 sends 16 MiB at 16 MiB/s while the guest rewrites 64 MiB: pass 2 is no smaller.
    await asyncio.to_thread(run.child.expect, r"not converging: the guest dirties \d+\.\d MiB/s")
    progress = run.transcript.getvalue().rpartition(f"migrate unix:{sink_path}")[2]
    assert re.search(r"migrate: pass \d+, \d+\.\d MiB remaining, \d+\.\d MiB/s", progress)
    assert "%" not in progress
    run.child.sendcontrol("c")
    await asyncio.to_thread(run.child.expect_exact, "Error: Migration cancelled")
    await asyncio.to_thread(run.prompt)
    await qmp.close()
    sink.close()
    await sink.wait_closed()


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
