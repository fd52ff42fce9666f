"""One QMP conversation with a freshly launched emulator, QEMU or the stand-in, for the
differential tests that send both the same requests (test_balloon_qemu, test_keys_qemu,
test_chardev_backends_qemu)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

STANDIN = str(Path(sys.executable).parent / "qmonitor-system-x86_64")


def connect_when_listening(path: str, process: subprocess.Popen[bytes]) -> socket.socket:
    """A connection to the unix socket ``path`` once it listens (its file exists from
    ``bind()``, it listens from ``listen()``), polling as start_server does."""
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "did not start"
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            time.sleep(0.02)


def qmp_lines(sock: socket.socket, requests: list[str]) -> list[str]:
    """Negotiate on a connected QMP socket, send ``requests``; their reply lines."""
    stream = sock.makefile("rwb")
    stream.readline()  # the greeting
    replies = []
    for request in ['{"execute": "qmp_capabilities"}', *requests]:
        stream.write(request.encode() + b"\n")
        stream.flush()
        replies.append(stream.readline().decode())
    return replies[1:]


def paused_machine_replies(
    binary: str, directory: Path, machine: list[str], requests: list[str]
) -> list[str]:
    """The reply lines of ``binary`` (``-S``, 64 MiB, no display, no defaults, QMP on a
    socket in ``directory``; the stand-in's state there too) to ``requests``."""
    path = str(directory / "qmp.sock")
    command = [binary, *machine, "-m", "64", "-display", "none", "-nodefaults", "-S"]
    command += ["-qmp", f"unix:{path},server=on,wait=off"]
    if binary == STANDIN:
        command += ["--state-dir", str(directory / "state")]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        with connect_when_listening(path, process) as client:
            return qmp_lines(client, requests)
    finally:
        process.terminate()
        process.wait(30)
