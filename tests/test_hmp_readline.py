"""QEMU's line editor: the echo bytes are compared with what QEMU 7.2 sent on a socket."""

from __future__ import annotations

from qmonitor.hmp.readline import MAX_HISTORY, ReadLine


def feed(readline: ReadLine, data: bytes) -> tuple[bytes, list[bytes]]:
    out = bytearray()
    lines = []
    for byte in data:
        echo, line = readline.feed(byte)
        out += echo
        if line is not None:
            lines.append(line)
    return bytes(out), lines


def test_typing_echoes_like_qemu() -> None:
    # QEMU 7.2, "stop\n" on -monitor unix:...: (before "\n" -> "\r\n")
    echo, lines = feed(ReadLine(), b"stop\n")
    assert echo == (b"s\x1b[K\x1b[Dst\x1b[K\x1b[D\x1b[Dsto\x1b[K\x1b[D\x1b[D\x1b[Dstop\x1b[K\n")
    assert lines == [b"stop"]


def test_carriage_return_and_newline_are_two_lines() -> None:
    echo, lines = feed(ReadLine(), b"c\r\n")
    assert lines == [b"c", b""]
    assert echo == b"c\x1b[K\n\n"


def test_cursor_keys_backspace_and_control_keys() -> None:
    readline = ReadLine()
    _, lines = feed(readline, b"helo\x1b[Dl\n")
    assert lines == [b"hello"]
    _, lines = feed(readline, b"abc\x08\x7fX\n")
    assert lines == [b"aX"]
    _, lines = feed(readline, b"bc\x01a\x05d\n")
    assert lines == [b"abcd"]
    _, lines = feed(readline, b"one two  \x17three\n")
    assert lines == [b"one three"]
    _, lines = feed(readline, b"abc\x01\x04\x1b[3~\n")
    assert lines == [b"c"]
    # QEMU 7.2: Ctrl-A moves the cursor back; Enter then prints "\n" right there.
    echo, lines = feed(readline, b"\x01\n")
    assert lines == [b""]
    assert echo == b"\n"


def test_history_up_and_down() -> None:
    readline = ReadLine()
    feed(readline, b"first\nsecond\n")
    _, lines = feed(readline, b"\x1b[A\x1b[A\n")
    assert lines == [b"first"]
    assert readline.history == [b"second", b"first"]  # run again: moved to the end
    _, lines = feed(readline, b"\x1b[A\x1b[A\x1b[A\x1b[B\n")
    assert lines == [b"first"]
    _, lines = feed(readline, b"\x1b[A\x1b[B\n")
    assert lines == [b""]


def test_history_keeps_64_lines() -> None:
    readline = ReadLine()
    feed(readline, b"".join(b"cmd%d\n" % n for n in range(70)))
    assert len(readline.history) == MAX_HISTORY
    assert readline.history[0] == b"cmd6"


def test_one_completion_is_inserted_with_a_space() -> None:
    readline = ReadLine(lambda text: (text, ["info"]))
    # QEMU 7.2: "inf\t"
    echo, _ = feed(readline, b"inf\t")
    assert echo.endswith(b"inf\x1b[K\x1b[D\x1b[D\x1b[Dinfo \x1b[K")


def test_several_completions_are_listed_then_the_line_redrawn() -> None:
    readline = ReadLine(lambda text: ("sta", ["stats", "status"]))
    feed(readline, b"info sta")
    echo, _ = feed(readline, b"\t")
    # QEMU 7.2: "info sta\t" (commands "info stats" and "info status")
    assert echo == b"\nstats     status    \n(qemu) info stat\x1b[K"


def test_completions_wrap_at_80_columns() -> None:
    names = [f"item{n:02d}" for n in range(10)]
    readline = ReadLine(lambda text: ("", names))
    echo, _ = feed(readline, b"\t")
    rows = echo.split(b"\n")[1:-1]
    assert [len(row) for row in rows] == [80, 20]


def test_redisplay_draws_prompt_and_line() -> None:
    readline = ReadLine()
    feed(readline, b"info st")
    assert readline.redisplay() == b"(qemu) info st\x1b[K"
