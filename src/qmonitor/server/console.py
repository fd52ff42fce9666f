"""The human monitor on the terminal: QEMU's console, with what people missed in it.

QEMU's ``-monitor stdio`` has a 64-line history lost at exit, completion scraped from ``help``
texts, prints nothing while a command holds the prompt and cannot interrupt it. This console
(prompt_toolkit) keeps QEMU's first line and prompt, and adds:

- line editing, and TAB completion from the command table (:mod:`qmonitor.hmp.complete`),
  readline style: a unique candidate is inserted with a space, several are listed;
- history saved across runs in ``$XDG_STATE_HOME/qmonitor/history`` (by default
  ``~/.local/state/qmonitor/history``), the last :data:`HISTORY_MAX` lines;
- QEMU's line limit (``READLINE_CMD_BUF_SIZE``, :data:`~qmonitor.hmp.readline.CMD_BUF_SIZE`
  bytes), which QEMU applies by silently dropping what is typed past it: here typing stops
  adding characters there, and the line is refused with a message (:data:`LINE_TOO_LONG`),
  never run and never put in the history. A line with bytes that are not UTF-8 is refused the
  same way (:func:`line_refusal`): it could not be saved, and would only run as garbage;
- while a command runs (the session is suspended, as QEMU's): no prompt, a progress line if the
  command reports progress, and **Ctrl-C cancels it** through the dispatcher's cancellation,
  after which its error (``Error: Command '...' was cancelled by Ctrl-C``) and the prompt come
  back. Anything else typed meanwhile is kept, unseen, and handled after the prompt returns,
  so a line typed ahead runs only after the command it waited for;
- QMP events and the end of detached commands shown as one line above the prompt, without
  disturbing the line being typed.

To see keys while a command runs without letting the terminal echo them, the terminal is put in
raw mode for that time and the bytes read are handed to the next prompt as type-ahead.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.application import run_in_terminal
from prompt_toolkit.application.current import set_app
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import History
from prompt_toolkit.input.typeahead import store_typeahead
from prompt_toolkit.input.vt100 import raw_mode
from prompt_toolkit.input.vt100_parser import Vt100Parser
from prompt_toolkit.key_binding import KeyBindings, KeyPress, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.shortcuts import CompleteStyle

from qmonitor.hmp.complete import complete
from qmonitor.hmp.readline import CMD_BUF_SIZE
from qmonitor.hmp.table import command_table
from qmonitor.server.hmp_session import HumanSession, banner
from qmonitor.server.host import SessionHost

log = logging.getLogger("qmonitor.console")

PROMPT: Final = "(qemu) "
HISTORY_MAX: Final = 1000  # lines kept in the history file (QEMU keeps 64, in memory only)
CTRL_C: Final = b"\x03"
CANCELLED_BY_CTRL_C: Final = "cancelled by Ctrl-C"
LINE_TOO_LONG: Final = (
    f"Error: the line is longer than {CMD_BUF_SIZE} bytes (QEMU's limit); it was not run\n"
)


def _encoded(line: str) -> bytes:
    """The bytes typed: the terminal input is decoded with ``surrogateescape``."""
    return line.encode("utf-8", "surrogateescape")


def line_refusal(line: str, *, truncated: bool = False) -> str | None:
    """Why ``line`` must not run nor enter the history, or None when it may.

    ``truncated``: characters typed past the limit were dropped from it.
    """
    if truncated or len(_encoded(line)) > CMD_BUF_SIZE:
        return LINE_TOO_LONG
    for column, char in enumerate(line, 1):
        if "\udc80" <= char <= "\udcff":  # an undecodable byte, escaped
            return (
                f"Error: byte 0x{ord(char) - 0xDC00:02x} at column {column} is not UTF-8; "
                "the line was not run\n"
            )
    return None


def history_path() -> Path:
    """Where the history lives (XDG Base Directory: state data, ``$XDG_STATE_HOME``)."""
    state_home = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state_home) if os.path.isabs(state_home) else Path.home() / ".local" / "state"
    return base / "qmonitor" / "history"


class PersistentHistory(History):
    """One command per line in a file, the newest last, trimmed to :data:`HISTORY_MAX`.

    ``accepts(line)`` says whether a line may enter the history at all (in memory and file).
    """

    def __init__(self, path: Path, accepts: Callable[[str], bool] = lambda line: True) -> None:
        super().__init__()
        self.path = path
        self.accepts = accepts

    def append_string(self, string: str) -> None:
        if self.accepts(string):
            super().append_string(string)

    def load_history_strings(self) -> Iterable[str]:
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        if len(lines) > HISTORY_MAX:
            lines = lines[-HISTORY_MAX:]
            self.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return reversed(lines)

    def store_string(self, string: str) -> None:
        if not string.strip() or "\n" in string:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as history_file:
            history_file.write(string + "\n")


class _TableCompleter(Completer):
    """prompt_toolkit's view of :func:`qmonitor.hmp.complete.complete`."""

    def __init__(self, monitor: SessionHost) -> None:
        self.monitor = monitor

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        word, candidates = complete(
            command_table(self.monitor.registry), document.text_before_cursor
        )
        suffix = " " if len(candidates) == 1 else ""  # QEMU: "extra space for next argument"
        for candidate in candidates:
            yield Completion(candidate + suffix, start_position=-len(word), display=candidate)


class Console(HumanSession):
    """The interactive human session on the terminal (see the module docstring)."""

    def __init__(self, monitor: SessionHost) -> None:
        super().__init__(monitor, interactive=True, peer="console")
        self._line_truncated = False  # characters typed past CMD_BUF_SIZE were dropped
        self.prompt = PromptSession[str](
            PROMPT,
            history=PersistentHistory(history_path(), self._may_run),
            completer=_TableCompleter(monitor),
            complete_style=CompleteStyle.READLINE_LIKE,
            complete_while_typing=False,
            key_bindings=self._line_limit_bindings(),
        )
        self._idle = asyncio.Event()
        self._idle.set()
        self._typeahead = bytearray()
        self._progress_line: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._printing: set[asyncio.Future[None]] = set()

    # -- the line limit ---------------------------------------------------------------------

    def _may_run(self, line: str) -> bool:
        return line_refusal(line, truncated=self._line_truncated) is None

    def _line_limit_bindings(self) -> KeyBindings:
        """Past :data:`CMD_BUF_SIZE` bytes, typed characters are dropped and the line marked.

        Dropping them, rather than letting the line grow, also keeps a long paste from making
        prompt_toolkit redraw an ever longer line for every chunk it reads.
        """
        bindings = KeyBindings()

        @Condition
        def line_full() -> bool:
            return len(_encoded(self.prompt.default_buffer.text)) >= CMD_BUF_SIZE

        @bindings.add(Keys.Any, filter=line_full)
        def drop(event: KeyPressEvent) -> None:
            self._line_truncated = True

        return bindings

    # -- output -------------------------------------------------------------------------------

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def draw_progress(self, text: str) -> None:
        self._progress_line = text
        width = os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else 80
        self.write("\r" + text[: max(width - 1, 1)] + "\x1b[K")

    def clear_progress(self) -> None:
        if self._progress_line is not None:
            self._progress_line = None
            self.write("\r\x1b[K")

    def notify(self, text: str) -> None:
        self.print_above_prompt(text, sys.stdout)

    def print_above_prompt(self, text: str, stream: TextIO) -> None:
        """Write ``text`` to ``stream`` (this terminal) on lines of its own.

        At the prompt, the prompt and the line being typed are drawn again below it; while a
        command runs, its progress line is.
        """

        def write() -> None:
            stream.write(text)
            stream.flush()

        app = self.prompt.app
        if app.is_running:
            with set_app(app):  # run_in_terminal finds the prompt through the context
                task = asyncio.ensure_future(run_in_terminal(write))
            self._printing.add(task)
            task.add_done_callback(self._printing.discard)
            return
        progress = self._progress_line
        self.clear_progress()
        write()
        if progress is not None:
            self.draw_progress(progress)

    # -- suspend and resume -------------------------------------------------------------------

    def suspend(self) -> None:
        super().suspend()
        self._idle.clear()

    def _resumed(self) -> None:
        self._idle.set()

    async def _wait_until_resumed(self) -> None:
        """Wait for the prompt to be given back, reading keys for Ctrl-C and type-ahead."""
        fileno = sys.stdin.fileno()
        loop = asyncio.get_running_loop()
        with raw_mode(fileno):
            loop.add_reader(fileno, self._read_keys, fileno)
            try:
                await self._idle.wait()
            finally:
                loop.remove_reader(fileno)
        self._hand_typeahead_to_prompt()

    def _read_keys(self, fileno: int) -> None:
        try:
            data = os.read(fileno, 4096)
        except BlockingIOError:
            return
        if not data:
            asyncio.get_running_loop().remove_reader(fileno)
            return
        if CTRL_C not in data:
            self._typeahead += data
            return
        # Like a terminal's Ctrl-C, it discards what was typed before it.
        self._typeahead[:] = data.rpartition(CTRL_C)[2]
        if self.running is not None:
            self.running.invocation.cancel(CANCELLED_BY_CTRL_C)

    def _hand_typeahead_to_prompt(self) -> None:
        if not self._typeahead:
            return
        keys: list[KeyPress] = []
        parser = Vt100Parser(keys.append)
        parser.feed(codecs.decode(bytes(self._typeahead), "utf-8", "surrogateescape"))
        parser.flush()
        self._typeahead.clear()
        store_typeahead(self.prompt.input, keys)

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Prompt, run, repeat, until the input ends or :meth:`close` is called."""
        self.write(banner(self.monitor))
        self.monitor.add_event_listener(self.show_event)
        try:
            while True:
                self._line_truncated = False
                try:
                    line = await self.prompt.prompt_async()
                except KeyboardInterrupt:
                    continue  # Ctrl-C at the prompt clears the line
                except EOFError:
                    if self.prompt.input.closed:
                        return
                    continue  # Ctrl-D: ignored, as by QEMU's readline
                refusal = line_refusal(line, truncated=self._line_truncated)
                if refusal is not None:
                    self.write(refusal)
                    continue
                self.execute(line)
                if self.suspended:
                    await self._wait_until_resumed()
        finally:
            self.monitor.remove_event_listener(self.show_event)
            self.abandon()

    def start(self, closed: Callable[[HumanSession], None]) -> None:
        """Run the console in a task of its own; ``closed`` is called when it ends."""

        def ended(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("the console failed", exc_info=task.exception())
            closed(self)

        self._task = asyncio.get_running_loop().create_task(self.run(), name="qmonitor console")
        self._task.add_done_callback(ended)

    def close(self) -> None:
        """End the console; a prompt on the screen is erased, as nothing will be typed at it
        (after ``quit``, or a failed incoming migration, the process exits)."""
        super().close()
        self.prompt.app.erase_when_done = True
        if self._task is not None:
            self._task.cancel()


def start_console(
    monitor: SessionHost,
    opened: Callable[[HumanSession], None],
    closed: Callable[[HumanSession], None],
) -> Console:
    """Start the console on the terminal; ``opened`` now, ``closed`` when it ends."""
    console = Console(monitor)
    opened(console)
    console.start(closed)
    return console
