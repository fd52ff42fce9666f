"""``-qmp stdio`` and ``-monitor stdio`` with regular files, pipes and /dev/null.

uvloop aborts the process on a regular file given to a pipe transport; these pin that
``qmonitor run < commands > transcript`` works instead.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUN = [sys.executable, "-m", "qmonitor", "run", "-name", "stdio-test"]


def test_qmp_on_stdio_with_regular_files(short_tmp: Path) -> None:
    requests = short_tmp / "in.json"
    requests.write_bytes(
        b'{"execute":"qmp_capabilities"}{"execute":"query-status","id":1}{"execute":"quit"}'
    )
    transcript = short_tmp / "out.json"
    with requests.open("rb") as stdin, transcript.open("wb") as stdout:
        process = subprocess.run(
            [*RUN, "-qmp", "stdio", "-monitor", "none", "--state-dir", str(short_tmp)],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    assert process.returncode == 0, process.stderr
    lines = transcript.read_bytes().split(b"\r\n")
    assert lines[0].startswith(b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, ')
    assert lines[1] == b'{"return": {}}'
    assert lines[2] == (
        b'{"return": {"status": "running", "singlestep": false, "running": true}, "id": 1}'
    )
    assert b'"event": "SHUTDOWN"' in lines[3]
    assert lines[4] == b'{"return": {}}'


def test_human_monitor_on_stdio_with_a_pipe_in_and_a_file_out(short_tmp: Path) -> None:
    transcript = short_tmp / "out.txt"
    state = str(short_tmp)
    with transcript.open("wb") as stdout:
        process = subprocess.run(
            [*RUN, "-qmp", f"unix:{short_tmp}/q.sock,server=on,wait=off", "--state-dir", state],
            input=b"info status\nstop\ninfo status\nxyz\nquit\n",
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    assert process.returncode == 0, process.stderr
    text = transcript.read_bytes()
    assert text.startswith(b"QEMU 7.2.22 monitor - type 'help' for more information\r\n")
    assert b"\r\nVM status: running\r\n" in text
    assert b"\r\nVM status: paused\r\n" in text
    assert b"\r\nunknown command: 'xyz'\r\n" in text
    assert not (short_tmp / "q.sock").exists()
