"""QEMU's monitor line editor (``util/readline.c``), byte for byte, without I/O.

A QEMU human monitor on a socket or a pipe runs its input through this editor: it echoes what
is typed, redrawing the line after every byte (``readline_update``: move back with ``ESC [ D``,
print the buffer, erase the rest with ``ESC [ K``), and understands a few keys: Ctrl-A/E (start,
end), Ctrl-D or Delete (delete), Backspace, Ctrl-W (erase word), the arrow keys (cursor,
history of 64 lines), Home/End, and TAB (completion: one candidate is inserted with a space
after it; several are listed in 80-column rows, then the prompt and the line are redrawn).
Scripts written against QEMU expect exactly this echo, so it is reproduced exactly.

:meth:`ReadLine.feed` takes one byte and returns the bytes to send back and, on Enter, the
finished line. Output uses ``\\n``; the transport turns it into ``\\r\\n`` like QEMU's
``monitor_puts``.

One deliberate difference: QEMU also treats byte 0x9B as a CSI introducer, which garbles any
UTF-8 character containing that byte (``ě`` is ``c4 9b``); here it is ordinary input.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Final

PROMPT: Final = b"(qemu) "
CMD_BUF_SIZE: Final = 4095  # READLINE_CMD_BUF_SIZE - 1 bytes fit (include/qemu/readline.h)
MAX_HISTORY: Final = 64  # READLINE_MAX_CMDS
MAX_COMPLETIONS: Final = 256  # READLINE_MAX_COMPLETIONS
_SPACES: Final = b" \t\n\v\f\r"

Completer = Callable[[str], tuple[str, list[str]]]
"""``complete(text_before_cursor) -> (word being completed, candidates)``."""


class _Escape(Enum):
    NORMAL = 0
    ESC = 1  # after ESC
    CSI = 2  # after ESC [
    SS3 = 3  # after ESC O


class ReadLine:
    """The line editor state of one human session (see the module docstring)."""

    def __init__(self, completer: Completer | None = None, prompt: bytes = PROMPT) -> None:
        self.prompt = prompt
        self._completer = completer
        self._buffer = bytearray()
        self._index = 0  # cursor position in the buffer
        self._shown = b""  # what the terminal shows after the prompt (last_cmd_buf)
        self._shown_index = 0
        self._escape = _Escape.NORMAL
        self._escape_parameter = 0
        self.history: list[bytes] = []
        self._history_entry = -1  # the history line being edited, -1 for a new line
        self._out = bytearray()

    def show_prompt(self) -> bytes:
        """``readline_show_prompt``: the prompt; the line is drawn again by the next update."""
        self._shown = b""
        self._shown_index = 0
        self._escape = _Escape.NORMAL
        return self.prompt

    def redisplay(self) -> bytes:
        """The prompt and the line being typed, drawn afresh (after text was printed over it)."""
        self._out = bytearray(self.show_prompt())
        self._update()
        return bytes(self._out)

    def feed(self, byte: int) -> tuple[bytes, bytes | None]:
        """Handle one input byte (``readline_handle_byte``): (echo, finished line or None)."""
        self._out = bytearray()
        line = self._handle(byte)
        if line is None:
            self._update()
        return bytes(self._out), line

    # -- editing (util/readline.c) ------------------------------------------------------------

    def _handle(self, byte: int) -> bytes | None:
        if self._escape is _Escape.NORMAL:
            return self._handle_normal(byte)
        if self._escape is _Escape.ESC:
            if byte == ord("["):
                self._escape, self._escape_parameter = _Escape.CSI, 0
            elif byte == ord("O"):
                self._escape, self._escape_parameter = _Escape.SS3, 0
            else:
                self._escape = _Escape.NORMAL
            return None
        if self._escape is _Escape.CSI:
            self._handle_csi(byte)
            return None
        if byte == ord("F"):
            self._index = len(self._buffer)
        elif byte == ord("H"):
            self._index = 0
        self._escape = _Escape.NORMAL
        return None

    def _handle_normal(self, byte: int) -> bytes | None:
        if byte == 1:  # Ctrl-A
            self._index = 0
        elif byte == 4:  # Ctrl-D
            self._delete()
        elif byte == 5:  # Ctrl-E
            self._index = len(self._buffer)
        elif byte == 9:
            self._complete()
        elif byte in (10, 13):
            line = bytes(self._buffer)
            self._add_history(line)
            self._out += b"\n"
            self._buffer.clear()
            self._index = 0
            self._shown = b""
            self._shown_index = 0
            return line
        elif byte == 23:  # Ctrl-W
            self._backward_word()
        elif byte == 27:
            self._escape = _Escape.ESC
        elif byte in (8, 127):
            if self._index > 0:
                self._index -= 1
                self._delete()
        elif byte >= 32:
            self._insert(bytes([byte]))
        return None

    def _handle_csi(self, byte: int) -> None:
        char = chr(byte)
        if char.isdigit():
            self._escape_parameter = self._escape_parameter * 10 + int(char)
            return
        if char in "AF":
            self._history_up()
        elif char in "BE":
            self._history_down()
        elif char == "D":
            self._index = max(self._index - 1, 0)
        elif char == "C":
            self._index = min(self._index + 1, len(self._buffer))
        elif char == "~":
            if self._escape_parameter == 1:
                self._index = 0
            elif self._escape_parameter == 3:
                self._delete()
            elif self._escape_parameter == 4:
                self._index = len(self._buffer)
        self._escape = _Escape.NORMAL

    def _insert(self, data: bytes) -> None:
        for byte in data:
            if self._index < CMD_BUF_SIZE:
                self._buffer.insert(self._index, byte)
                self._index += 1

    def _delete(self) -> None:
        if self._index < len(self._buffer):
            del self._buffer[self._index]

    def _backward_word(self) -> None:
        if self._index == 0:
            return
        start = self._index - 1
        while start > 0 and self._buffer[start] in _SPACES:
            start -= 1
        while start > 0:
            if self._buffer[start] in _SPACES:
                start += 1
                break
            start -= 1
        del self._buffer[start : self._index]
        self._index = start

    # -- history ------------------------------------------------------------------------------

    def _set_line(self, line: bytes) -> None:
        self._buffer[:] = line
        self._index = len(line)

    def _history_up(self) -> None:
        if self._history_entry == 0:
            return
        if self._history_entry == -1:
            self._history_entry = len(self.history)
        self._history_entry -= 1
        if self._history_entry >= 0:
            self._set_line(self.history[self._history_entry])

    def _history_down(self) -> None:
        if self._history_entry == -1:
            return
        self._history_entry += 1
        if self._history_entry < len(self.history):
            self._set_line(self.history[self._history_entry])
        else:
            self._set_line(b"")
            self._history_entry = -1

    def _add_history(self, line: bytes) -> None:
        """``readline_hist_add``: a repeated line moves to the end; at most 64 are kept."""
        if not line:
            return
        if line in self.history:
            self.history.remove(line)
        elif len(self.history) == MAX_HISTORY:
            del self.history[0]
        self.history.append(line)
        self._history_entry = -1

    # -- completion and display ---------------------------------------------------------------

    def _complete(self) -> None:
        """``readline_completion``."""
        if self._completer is None:
            return
        text = self._buffer[: self._index].decode("utf-8", "replace")
        word, candidates = self._completer(text)
        completions = [c.encode() for c in candidates[:MAX_COMPLETIONS]]
        typed = len(word.encode())
        if not completions:
            return
        if len(completions) == 1:
            completion = completions[0]
            self._insert(completion[typed:])
            if completion and not completion.endswith(b"/"):
                self._insert(b" ")
            return
        self._out += b"\n"
        prefix = completions[0]
        for completion in completions[1:]:
            while not completion.startswith(prefix):
                prefix = prefix[:-1]
        self._insert(prefix[typed:])
        width = min(max(max(len(c) for c in completions) + 2, 10), 80)
        columns = 80 // width
        for number, completion in enumerate(completions, 1):
            self._out += completion.ljust(width)
            if number % columns == 0 or number == len(completions):
                self._out += b"\n"
        self._out += self.show_prompt()

    def _update(self) -> None:
        """``readline_update``: redraw the line if it changed, then place the cursor."""
        if self._buffer != self._shown:
            self._out += b"\x1b[D" * self._shown_index
            self._out += self._buffer + b"\x1b[K"
            self._shown = bytes(self._buffer)
            self._shown_index = len(self._buffer)
        delta = self._index - self._shown_index
        if delta:
            self._out += (b"\x1b[C" if delta > 0 else b"\x1b[D") * abs(delta)
            self._shown_index = self._index
