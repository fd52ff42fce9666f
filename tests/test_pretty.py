"""``-qmp-pretty`` and ``-mon ...,pretty=on``: QEMU 7.2's pretty-printed QMP, byte for byte.

QEMU and the stand-in are launched with the same command line and sent the same bytes; what
comes back (greeting, replies with nested objects, lists and empty containers, an error, an
echoed nested id, events) must be the same bytes once event timestamps, the package string
and each one's own socket path are masked.
"""

from __future__ import annotations

import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmonitor.qmp.encode import encode_message, pretty_json

STANDIN = str(Path(sys.executable).parent / "qmonitor-system-x86_64")
QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
GUARD_SECONDS = 30.0
"""How long an expected message is waited for before the test fails (not a timing assertion)."""

REQUESTS = (
    b'{"execute": "qmp_capabilities"}',
    b'{"execute": "query-status", "id": [1, {"a": [], "b": "x{}, [y"}]}',
    b'{"execute": "query-version"}',
    b'{"execute": "query-name"}',
    b'{"execute": "query-iothreads"}',
    b'{"execute": "query-chardev"}',
    b'{"execute": "no-such-command", "id": "e1"}',
    b'{"execute": "stop"}',  # a STOP event, then the reply
    b'{"execute": "system_reset"}',  # an event with data
    b'{"execute": "cont"}',
)
MASKED = re.compile(rb'("seconds": |"microseconds": )\d+|("package": )"[^"]*"')


def _mask(match: re.Match[bytes]) -> bytes:
    """Event times, and the build's package string (QEMU's distribution, our version)."""
    prefix = match.group(1) or match.group(2)
    return prefix + (b"N" if match.group(1) else b'"PACKAGE"')


def _message(sock: socket.socket, buffered: bytearray) -> bytes:
    """The next pretty-printed message: it ends with a ``}`` alone on its line."""
    while True:
        end = buffered.find(b"\r\n}\r\n")
        if buffered.startswith(b"{\r\n") and end >= 0:
            message = bytes(buffered[: end + 5])
            del buffered[: end + 5]
            return message
        readable, _, _ = select.select([sock], [], [], GUARD_SECONDS)
        assert readable, f"no complete message; got {bytes(buffered)!r}"
        data = sock.recv(65536)
        assert data, f"connection closed; got {bytes(buffered)!r}"
        buffered += data


def _transcript(binary: str, monitor_args: list[str], path: Path) -> list[bytes]:
    argv = [binary, "-machine", "none", "-display", "none", "-nodefaults", *monitor_args]
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        sock = _connect_when_listening(str(path), process)
        with sock:
            buffered = bytearray()
            messages = [_message(sock, buffered)]
            for request in REQUESTS:
                sock.sendall(request)
                messages.append(_message(sock, buffered))
                while b'"event"' in messages[-1]:
                    messages.append(_message(sock, buffered))
            assert not buffered
    finally:
        process.kill()
        process.wait(timeout=GUARD_SECONDS)
        assert process.stderr is not None
        process.stderr.close()
    return [MASKED.sub(_mask, m).replace(str(path).encode(), b"SOCKET") for m in messages]


def _connect_when_listening(path: str, process: subprocess.Popen[bytes]) -> socket.socket:
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            assert process.poll() is None, "the emulator exited"
            select.select([], [], [], 0.01)  # a retry's pace, not a synchronisation


@pytest.fixture
def short_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="qm-pretty-"))  # a unix socket path is short
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


FORMS = {
    "qmp-pretty": ("-qmp-pretty", "unix:{path},server=on,wait=off"),
    "mon-pretty-on": (
        "-chardev", "socket,id=mon0,path={path},server=on,wait=off",
        "-mon", "chardev=mon0,mode=control,pretty=on",
    ),
}  # fmt: skip


@pytest.mark.qemu
@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_pretty_output_is_qemus(form: tuple[str, ...], short_dir: Path) -> None:
    qemu_path, our_path = short_dir / "qemu.sock", short_dir / "ours.sock"
    theirs = _transcript(QEMU, [arg.format(path=qemu_path) for arg in form], qemu_path)
    ours = _transcript(STANDIN, [arg.format(path=our_path) for arg in form], our_path)
    assert ours == theirs
    # What the comparison covered: an empty object, an event, an error, a nested echoed id.
    assert b'"return": {\r\n    }\r\n}' in b"".join(ours)
    assert any(b'"event": "RESET"' in m for m in ours)
    assert any(b'"class": "CommandNotFound"' in m for m in ours)


def test_pretty_layout_leaves_strings_alone() -> None:
    compact = encode_message({"return": {"a": "{}, [x]", "b": [], "c": [1, {}]}})
    assert pretty_json(compact.decode().removesuffix("\r\n")) == (
        '{\r\n    "return": {\r\n        "a": "{}, [x]",\r\n        "b": [\r\n        ],\r\n'
        '        "c": [\r\n            1,\r\n            {\r\n            }\r\n        ]\r\n'
        "    }\r\n}"
    )
