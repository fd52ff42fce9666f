"""Start-up time and idle size of a stand-in (issue 12, "Performance").

Time from exec to the QMP greeting, and the resident size once idle, for: real QEMU; the floor
(a plain asyncio server in this same Python that only greets: what any Python stand-in pays
for its interpreter); and ``qmonitor-system-x86_64``. Each is started with
``-display none -nodefaults -machine none -m 128M -qmp unix:P,server=on,wait=off``, in
alternating rounds so that a busy machine slows all alike. A benchmark, not a test.

The greeting is not the end of start-up: qmonitor registers its commands at their first use
(``CommandRegistry.defer``), so the bench also reports the time from exec to the answer to a
first command (``qmp_capabilities``, then ``query-status``, which loads the machine's
commands) and the resident size then, beside QEMU's (the floor answers no command).

qmonitor's modules are byte-compiled first (``compileall``), as ``pip install`` does: without
it a run under ``PYTHONDONTWRITEBYTECODE`` (or from a read-only tree) compiles every module
from source at each start, which the floor (one small script) does not pay. ``--source``
leaves them as they are.

    .venv/bin/python bench/bench_startup.py --rounds 10
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR = """\
import asyncio, sys
path = sys.argv[-1].split(",")[0].removeprefix("unix:")
GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
            b'"package": ""}, "capabilities": ["oob"]}}\\r\\n')
async def greet(reader, writer):
    writer.write(GREETING)
    try:
        await reader.read()
    except ConnectionError:
        pass
async def main():
    server = await asyncio.start_unix_server(greet, path)
    await asyncio.Event().wait()
asyncio.run(main())
"""


GREETING_TIMEOUT = 30.0
"""Seconds a program may take to greet or answer once connected (QEMU once accepted and
never greeted, under heavy load, and the bench waited for ever)."""


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _read_reply(client: socket.socket) -> None:
    """Read up to the end of the next line that is not an event."""
    data = b""
    while True:
        chunk = client.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before the reply")
        data += chunk
        while b"\n" in data:
            line, _, data = data.partition(b"\n")
            if b'"event"' not in line:
                return


def greeting_time(
    argv: list[str], path: str, *, first_command: bool
) -> tuple[float, int, float | None, int | None]:
    """Seconds from exec to the greeting's first byte and RSS (KiB) once it has greeted; with
    ``first_command``, seconds from exec to the reply to ``query-status`` (after negotiating)
    and RSS then."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        while True:
            with socket.socket(socket.AF_UNIX) as client:
                try:
                    client.connect(path)
                except (FileNotFoundError, ConnectionRefusedError):
                    if process.poll() is not None:
                        raise RuntimeError(f"{argv[0]} exited with {process.returncode}") from None
                    time.sleep(0.001)
                    continue
                client.settimeout(GREETING_TIMEOUT)  # a program that never greets fails the run
                client.recv(1)
                elapsed = time.perf_counter() - started
                rss = _rss_kib(process.pid)
                if not first_command:
                    return elapsed, rss, None, None
                _read_reply(client)  # the rest of the greeting
                client.sendall(b'{"execute": "qmp_capabilities"}\n')
                _read_reply(client)
                client.sendall(b'{"execute": "query-status"}\n')
                _read_reply(client)
                answered = time.perf_counter() - started
                return elapsed, rss, answered, _rss_kib(process.pid)
    finally:
        process.kill()
        process.wait()
        with __import__("contextlib").suppress(FileNotFoundError):
            os.unlink(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--source", action="store_true", help="do not byte-compile qmonitor")
    options = parser.parse_args()
    if not options.source:
        package = subprocess.run(
            [sys.executable, "-c", "import qmonitor; print(qmonitor.__path__[0])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # Forced: compileall keeps a .pyc whose recorded source mtime (whole seconds) matches,
        # while the import system also compares the source's size and compiles from source
        # at every start when they differ (a file rewritten within the second it was
        # compiled, e.g. by a formatter), which this run would then measure.
        compileall.compile_dir(package, quiet=1, force=True)
    standin = str(Path(sys.executable).parent / "qmonitor-system-x86_64")
    qemu = shutil.which("qemu-system-x86_64")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "qmp.sock")
        common = ["-display", "none", "-nodefaults", "-machine", "none", "-m", "128M"]
        common += ["-qmp", f"unix:{path},server=on,wait=off"]
        floor_script = os.path.join(directory, "floor.py")
        Path(floor_script).write_text(FLOOR)
        candidates = {"floor (asyncio, greets only)": [sys.executable, floor_script, *common]}
        if qemu:
            candidates = {"qemu-system-x86_64 7.2": [qemu, *common], **candidates}
        candidates["qmonitor-system-x86_64"] = [standin, *common]
        results: dict[str, list[tuple[float, int, float | None, int | None]]] = {
            name: [] for name in candidates
        }
        for _ in range(options.rounds):
            for name, argv in candidates.items():
                first_command = not name.startswith("floor")
                results[name].append(greeting_time(argv, path, first_command=first_command))
    floor = statistics.median(run[0] for run in results["floor (asyncio, greets only)"])
    print(
        f"{'program':32} {'greeting median':>16} {'min':>8} {'max':>8} {'x floor':>8} "
        f"{'RSS':>9} {'1st reply':>10} {'RSS then':>9}"
    )
    for name, runs in results.items():
        times = [run[0] for run in runs]
        median = statistics.median(times)
        rss = statistics.median(run[1] for run in runs) / 1024
        answers = [run[2] for run in runs if run[2] is not None]
        answered_rss = [run[3] for run in runs if run[3] is not None]
        then = (
            f"{statistics.median(answers) * 1000:7.0f} ms "
            f"{statistics.median(answered_rss) / 1024:5.1f} MiB"
            if answers
            else ""
        )
        print(
            f"{name:32} {median * 1000:13.0f} ms {min(times) * 1000:5.0f} ms "
            f"{max(times) * 1000:5.0f} ms {median / floor:7.2f}x {rss:5.1f} MiB {then}"
        )


if __name__ == "__main__":
    main()
