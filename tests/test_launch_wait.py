"""``server=on`` with ``wait=on`` (QEMU's default for a server): start-up waits for a client.

QEMU creates every chardev before any monitor, and a listening socket with ``wait=on`` blocks
there until a first client connects (chardev/char-socket.c ``qmp_chardev_open_socket_server``),
after saying so on stderr, located at the option. Observable: that line, and a later monitor's
socket that does not exist until the first one has its client. Run on QEMU 7.2 and the stand-in
with the same command line.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu.qmp import ConnectError
from qemu.qmp.legacy import QEMUMonitorProtocol

STANDIN = str(Path(sys.executable).parent / "qmonitor-system-x86_64")
QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"

BINARIES = [
    pytest.param(QEMU, id="qemu", marks=pytest.mark.qemu),
    pytest.param(STANDIN, id="qmonitor"),
]

GUARD_SECONDS = 30.0
"""How long a line that should come is waited for before the test fails (not a timing
assertion: QEMU prints it within milliseconds)."""


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        assert process.stderr is not None
        process.stderr.close()


def first_stderr_line(process: subprocess.Popen[bytes]) -> bytes:
    assert process.stderr is not None
    readable, _, _ = select.select([process.stderr], [], [], GUARD_SECONDS)
    assert readable, "nothing on stderr: start-up did not stop to wait for a client"
    return process.stderr.readline()


def connect_when_listening(path: str, process: subprocess.Popen[bytes]) -> QEMUMonitorProtocol:
    """Connect once something listens on ``path`` (the emulator must still be alive)."""
    while True:
        qmp = QEMUMonitorProtocol(path)
        try:
            qmp.connect(negotiate=True)
            return qmp
        except ConnectError:
            qmp.close()
            assert process.poll() is None
            select.select([], [], [], 0.01)  # a retry's pace, not a synchronisation


@pytest.mark.parametrize("binary", BINARIES)
def test_a_waiting_server_holds_start_up_until_a_client_connects(
    binary: str, short_tmp: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    first, second = str(short_tmp / "first.sock"), str(short_tmp / "second.sock")
    first_option = f"unix:{first},server=on"
    argv = [binary, "-machine", "none", "-display", "none", "-nodefaults"]
    argv += ["-qmp", first_option, "-qmp", f"unix:{second},server=on,wait=off"]
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    processes.append(process)

    line = first_stderr_line(process)
    program = os.path.basename(binary)
    assert (
        line
        == (
            f"{program}: -qmp {first_option}: info: QEMU waiting for connection on: "
            f"disconnected:unix:{first},server=on\n"
        ).encode()
    )
    assert not os.path.exists(second)  # the later chardev is not created yet

    waiting = QEMUMonitorProtocol(first)
    greeting = waiting.connect(negotiate=True)
    assert greeting is not None and greeting["QMP"]["version"]["qemu"]["major"] == 7
    later = connect_when_listening(second, process)  # start-up went on
    assert waiting.cmd_raw("query-status")["return"]["status"] == "running"
    assert later.cmd_raw("query-name") == {"return": {}}
    waiting.close()
    later.close()


@pytest.mark.parametrize(
    ("binary", "status", "said"),
    [
        pytest.param(QEMU, -15, b"", id="qemu", marks=pytest.mark.qemu),
        pytest.param(
            STANDIN, 0, b"qmonitor-system-x86_64: terminating on signal 15\n", id="qmonitor"
        ),
    ],
)
def test_sigterm_while_waiting_for_a_first_client(
    binary: str,
    status: int,
    said: bytes,
    short_tmp: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """QEMU 7.2 sets its signal handlers up after its chardevs, so SIGTERM kills it while it
    waits; the stand-in handles signals from before its first monitor and shuts down
    cleanly, a deliberate difference (docs/STANDIN.md, "Signals")."""
    path = str(short_tmp / "waiting.sock")
    argv = [binary, "-machine", "none", "-display", "none", "-nodefaults"]
    argv += ["-qmp", f"unix:{path},server=on,wait=on"]
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    processes.append(process)
    assert b"info: QEMU waiting for connection on" in first_stderr_line(process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=GUARD_SECONDS) == status
    assert process.stderr is not None
    assert process.stderr.read() == said
    assert not os.path.exists(path) or binary == QEMU  # QEMU, killed, leaves its socket
