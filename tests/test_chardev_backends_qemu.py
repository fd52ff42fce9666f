"""Chardev backends other than sockets, ``qmonitor-system-x86_64`` against QEMU 7.2.

The same command lines run under both; what they show must be the same bytes: ``query-chardev``
and ``qom-list /chardevs`` (labels, ``filename``s such as ``pty:/dev/pts/N``, ``file``,
``null``, ``frontend-open``), the ``char device redirected to ...`` line a pty prints, what a
monitor on a ``file`` or a ring writes there, a human monitor on a ``pty`` and QMP on a
``pipe``, ``ringbuf-write``/``ringbuf-read`` and their errors, and the errors of backends that
cannot be opened. Host-specific values are masked: pty numbers, the QMP socket's path, QEMU's
package string (``Debian ...`` against ``qmonitor ...``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launched_qmp import STANDIN, connect_when_listening, qmp_lines
from qmonitor.testing import QEMU_BINARY, RawQMPClient

pytestmark = pytest.mark.qemu

BINARIES = [pytest.param(QEMU_BINARY, id="qemu"), pytest.param(STANDIN, id="qmonitor")]
QUIET = ["-display", "none", "-nodefaults", "-S"]
BANNER = b"QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) "
BASE64 = "base64"


def masked(text: str, directory: Path) -> str:
    text = re.sub(r"/dev/pts/[0-9]+", "/dev/pts/N", text)
    text = re.sub(r'"package": "[^"]*"', '"package": "P"', text)
    return text.replace(str(directory), "DIR")


def own_options(binary: str, directory: Path) -> list[str]:
    return ["--state-dir", str(directory / "state")] if binary == STANDIN else []


async def conversation(
    binary: str, directory: Path, options: list[str], requests: list[dict[str, Any]]
) -> tuple[list[str], str]:
    """Start ``binary`` with ``options``, send ``requests`` over QMP; the replies and what it
    printed on standard output, masked."""
    qmp = str(directory / "qmp.sock")
    stdout = directory / "stdout"
    command = [binary, "-machine", "none", *QUIET, *options, *own_options(binary, directory)]
    command += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    with open(stdout, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(qmp):
            assert process.poll() is None, "did not start"
            await asyncio.sleep(0.02)
        while True:  # the file exists from bind(), the socket listens from listen()
            try:
                client = await RawQMPClient.connect_unix(qmp)
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.02)
        await client.negotiate()
        replies = [
            masked(json.dumps(await client.execute(r["execute"], r.get("arguments"))), directory)
            for r in requests
        ]
        await client.close()
    finally:
        process.terminate()
        process.wait(30)
    return replies, masked(stdout.read_text(), directory)


@pytest.fixture
def two_dirs(short_tmp: Path) -> Iterator[tuple[Path, Path]]:
    dirs = (short_tmp / "qemu", short_tmp / "ours")
    for directory in dirs:
        directory.mkdir()
        os.mkfifo(directory / "p.in")
        os.mkfifo(directory / "p.out")
        (directory / "kept.txt").write_text("kept\n")
    yield dirs


def backends(directory: Path) -> list[str]:
    return [
        "-chardev", "null,id=n",
        "-chardev", f"file,id=f,path={directory}/f.txt",
        "-chardev", f"file,id=fa,path={directory}/kept.txt,append=on",
        "-chardev", f"pipe,id=p,path={directory}/p",
        "-chardev", "pty,id=t",
        "-chardev", "ringbuf,id=r,size=16",
        "-chardev", "memory,id=m",
        "-chardev", f"file,id=mf,path={directory}/hmp.txt", "-mon", "chardev=mf",
        "-chardev", f"file,id=mq,path={directory}/qmp.txt", "-mon", "chardev=mq,mode=control",
        "-chardev", "ringbuf,id=mr", "-mon", "chardev=mr",
        "-chardev", "null,id=mn", "-mon", "chardev=mn",
        "-serial", "null", "-serial", f"file:{directory}/s.txt", "-serial", "pty",
        "-serial", "none", "-serial", "null", "-parallel", "none", "-parallel", "null",
    ]  # fmt: skip


REQUESTS: list[dict[str, Any]] = [
    {"execute": "query-chardev"},
    {"execute": "qom-list", "arguments": {"path": "/chardevs"}},
    {"execute": "ringbuf-read", "arguments": {"device": "mr", "size": 1000}},
    {"execute": "ringbuf-write", "arguments": {"device": "r", "data": "hello, world! and more"}},
    {"execute": "ringbuf-read", "arguments": {"device": "r", "size": 3}},
    {"execute": "ringbuf-read", "arguments": {"device": "r", "size": 100, "format": "base64"}},
    {"execute": "ringbuf-write", "arguments": {"device": "m", "data": "aGk=", "format": "base64"}},
    {
        "execute": "ringbuf-write",
        "arguments": {"device": "m", "data": "YQ\nb=", "format": "base64"},
    },
    {"execute": "ringbuf-read", "arguments": {"device": "m", "size": 10}},
    {"execute": "ringbuf-write", "arguments": {"device": "m", "data": "!", "format": "base64"}},
    {"execute": "ringbuf-write", "arguments": {"device": "m", "data": "a\u00e9\u0001\\"}},
    {"execute": "human-monitor-command", "arguments": {"command-line": "ringbuf_read m 100"}},
    {"execute": "human-monitor-command", "arguments": {"command-line": "ringbuf_write m x"}},
    {"execute": "human-monitor-command", "arguments": {"command-line": "ringbuf_read n 1"}},
    {"execute": "ringbuf-read", "arguments": {"device": "m", "size": 10}},
    {"execute": "ringbuf-read", "arguments": {"device": "m", "size": 0}},
    {"execute": "ringbuf-read", "arguments": {"device": "n", "size": 1}},
    {"execute": "ringbuf-read", "arguments": {"device": "nope", "size": 1}},
    {"execute": "ringbuf-write", "arguments": {"device": "t", "data": "x"}},
    {"execute": "human-monitor-command", "arguments": {"command-line": "info chardev"}},
]


async def test_backends_show_as_in_qemu(two_dirs: tuple[Path, Path]) -> None:
    results = []
    for binary, directory in zip((QEMU_BINARY, STANDIN), two_dirs, strict=True):
        replies, stdout = await conversation(binary, directory, backends(directory), REQUESTS)
        files = {
            name: masked((directory / name).read_bytes().decode(), directory)
            for name in ("f.txt", "kept.txt", "hmp.txt", "qmp.txt", "s.txt")
        }
        results.append((replies, stdout, files))
    assert results[1] == results[0]
    replies, stdout, files = results[0]
    assert stdout == (
        "char device redirected to /dev/pts/N (label t)\n"
        "char device redirected to /dev/pts/N (label serial2)\n"
    )
    assert files["hmp.txt"] == BANNER.decode()
    assert files["kept.txt"] == "kept\n"
    assert '"filename": "pty:/dev/pts/N", "label": "t"' in replies[0]


def read_until(fd: int, marker: bytes) -> bytes:
    """Read ``fd`` until ``marker`` has come (a generous deadline, for a stuck monitor)."""
    received = b""
    deadline = time.monotonic() + 20
    while marker not in received:
        assert time.monotonic() < deadline, received
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            received += os.read(fd, 4096)
    return received


def start_with_monitors(binary: str, directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``binary`` with a human monitor on a pty and QMP on a pipe; the pty's device."""
    os.mkfifo(directory / "p.in")
    os.mkfifo(directory / "p.out")
    command = [binary, "-machine", "none", *QUIET, *own_options(binary, directory)]
    command += ["-chardev", "pty,id=t", "-mon", "chardev=t"]
    command += ["-chardev", f"pipe,id=p,path={directory}/p", "-mon", "chardev=p,mode=control"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    line = read_until(process.stdout.fileno(), b"\n").decode()
    device = re.fullmatch(r"char device redirected to (/dev/pts/[0-9]+) \(label t\)\n", line)
    assert device is not None, line
    return process, device[1]


@pytest.mark.parametrize("binary", BINARIES)
def test_qmp_on_a_pipe(binary: str, short_tmp: Path) -> None:
    """QMP on a pipe chardev reads ``P.in`` and writes ``P.out``: its greeting waits there."""
    process, _ = start_with_monitors(binary, short_tmp)
    try:
        writing = os.open(short_tmp / "p.in", os.O_WRONLY)
        reading = os.open(short_tmp / "p.out", os.O_RDONLY)
        try:
            assert read_until(reading, b"\r\n").startswith(b'{"QMP": {"version": {"qemu": ')
            os.write(writing, b'{"execute": "qmp_capabilities"}\n{"execute": "query-status"}\n')
            assert read_until(reading, b"prelaunch") == (
                b'{"return": {}}\r\n'
                b'{"return": {"status": "prelaunch", "singlestep": false, "running": false}}\r\n'
            )
        finally:
            os.close(writing)
            os.close(reading)
    finally:
        process.terminate()
        process.wait(30)


def test_human_monitor_on_a_pty(short_tmp: Path) -> None:
    """The monitor greets the program that opens the pty's other side and answers it, with
    QEMU's bytes. Not run against QEMU: QEMU 7.2 polls the pty once a second, and a program
    that opens it within QEMU's first second may get the banner twice, or no answer
    (docs/STANDIN.md)."""
    process, device = start_with_monitors(STANDIN, short_tmp)
    try:
        terminal = os.open(device, os.O_RDWR | os.O_NOCTTY)
        try:
            assert read_until(terminal, b"(qemu) ") == BANNER
            os.write(terminal, b"info status\n")
            answer = read_until(terminal, b"\r\n(qemu) ")
            assert answer.startswith(b"i\x1b[K\x1b[Din\x1b[K")  # readline's echo
            assert answer.endswith(b"info status\x1b[K\r\nVM status: paused (prelaunch)\r\n(qemu) ")
        finally:
            os.close(terminal)
    finally:
        process.terminate()
        process.wait(30)


BAD_BACKENDS = [
    "-chardev file,id=f,path=/nonexistent/x",
    "-serial file:/nonexistent/x",
    "-chardev pipe,id=p,path=/nonexistent/p",
    "-parallel pipe:/nonexistent/p",
    "-chardev pty,id=t -chardev file,id=f,path=/nonexistent/x",
]


@pytest.mark.parametrize("case", BAD_BACKENDS)
def test_a_backend_that_cannot_be_opened_is_qemus_error(case: str, short_tmp: Path) -> None:
    outputs = []
    for binary in (QEMU_BINARY, STANDIN):
        argv = [binary, "-machine", "none", *QUIET, *case.split(), *own_options(binary, short_tmp)]
        result = subprocess.run(argv, capture_output=True, timeout=30, text=True)
        stderr = result.stderr.replace(Path(binary).name, "PROGRAM")
        outputs.append((result.returncode, masked(result.stdout, short_tmp), stderr))
    assert outputs[1] == outputs[0]
    assert outputs[0][0] == 1


CHARDEV_STATE = [
    '{"execute": "query-chardev"}',
    '{"execute": "qom-get", "arguments": {"path": "/chardevs/mon", "property": "addr"}}',
]


def inherited_socket_views(binary: str, directory: Path, kind: str) -> list[str]:
    """``query-chardev`` and the chardev's ``addr`` for a monitor on an inherited socket,
    asked on another monitor while nobody is connected to it, then on it (``kind``: a
    listening unix socket as libvirt passes, a listening TCP one, a socketpair end as
    QEMUMachine passes)."""
    other = str(directory / "other.sock")
    peer: socket.socket | None = None
    if kind == "socketpair":
        ours, peer = socket.socketpair()
        option = f"socket,id=mon,fd={ours.fileno()}"
    else:
        ours = socket.socket(socket.AF_UNIX if kind == "unix" else socket.AF_INET)
        ours.bind(str(directory / "mon.sock") if kind == "unix" else ("127.0.0.1", 0))
        ours.listen()
        option = f"socket,id=mon,fd={ours.fileno()},server=on,wait=off"
    command = [binary, "-machine", "none", *QUIET, *own_options(binary, directory)]
    command += ["-chardev", option, "-mon", "chardev=mon,mode=control"]
    command += ["-qmp", f"unix:{other},server=on,wait=off"]
    process = subprocess.Popen(command, pass_fds=[ours.fileno()], stderr=subprocess.DEVNULL)
    views = []
    try:
        with connect_when_listening(other, process) as client:
            views += qmp_lines(client, CHARDEV_STATE)
        if peer is None:
            peer = socket.socket(ours.family)
            peer.connect(ours.getsockname())
        views += qmp_lines(peer, CHARDEV_STATE)
        local, far = ours.getsockname(), peer.getsockname()
    finally:
        process.terminate()
        process.wait(30)
        ours.close()
        if peer is not None:
            peer.close()
    if isinstance(local, tuple):
        views = [v.replace(f":{local[1]}", ":PORT").replace(f":{far[1]}", ":PEER") for v in views]
    views = [re.sub(r'"(str|port)": "[0-9]+"', r'"\1": "N"', v) for v in views]
    return [masked(view, directory) for view in views]


@pytest.mark.parametrize("kind", ["unix", "tcp", "socketpair"])
def test_an_inherited_socket_is_shown_as_qemu_shows_it(kind: str, short_tmp: Path) -> None:
    """QEMU names a listening descriptor by its address (``disconnected:unix:PATH,server=on``,
    ``addr`` the path) and a connected one as ``unix:`` with ``addr`` ``fd``."""
    views = []
    for name, binary in (("qemu", QEMU_BINARY), ("ours", STANDIN)):
        directory = short_tmp / name
        directory.mkdir()
        views.append(inherited_socket_views(binary, directory, kind))
    assert views[1] == views[0]
