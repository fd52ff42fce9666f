"""Benchmark: what a QMP client that never reads costs its server (issue 11, item 4).

A negotiated client with a 4 KiB receive buffer (``SO_RCVBUF``) never reads, while another
client runs ``stop``/``cont`` pairs one request at a time (each request an event, each reply
waited for). The figure is the growth of the server's ``VmRSS`` (``/proc/PID/status``) from
before the stuck client connects to after the last pair. Both servers are measured by default:

* ``python -m qmonitor run -name vm0 -m 16M --dirty-rate 0 -qmp unix:... -monitor none``
* ``qemu-system-x86_64 -machine none -display none -nodefaults`` with two ``-qmp`` sockets
  (QEMU serves one client per socket: the stuck client gets the second).

Usage: ``.venv/bin/python bench/bench_stuck_client.py [--pairs 50000] [--server qmonitor]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_kib(pid: int) -> int:
    """``VmRSS`` of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def negotiated(path: str, receive_buffer: int | None = None) -> socket.socket:
    """A client that has read the greeting and left negotiation mode."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(path)
    sock.sendall(b'{"execute":"qmp_capabilities"}')
    received = b""
    while received.count(b"\r\n") < 2:
        received += sock.recv(65536)
    return sock


def stop_cont(sock: socket.socket, pairs: int) -> None:
    """``pairs`` stop/cont pairs, one request at a time (events read and skipped)."""
    pending = b""
    for _ in range(pairs):
        for request in (b'{"execute":"stop"}', b'{"execute":"cont"}'):
            sock.sendall(request)
            while True:
                while b"\r\n" not in pending:
                    data = sock.recv(65536)
                    if not data:
                        raise RuntimeError("the server closed the connection")
                    pending += data
                line, pending = pending.split(b"\r\n", 1)
                if line.startswith(b'{"return"'):
                    break


def measure(server: str, pairs: int) -> str:
    """Start ``server``, run the load, return one line with the figure."""
    with tempfile.TemporaryDirectory(prefix="qm-bench-") as directory:
        path, stuck_path = f"{directory}/qmp.sock", f"{directory}/qmp2.sock"
        if server == "qemu":
            command = ["qemu-system-x86_64", "-machine", "none", "-display", "none"]
            command += ["-nodefaults", "-qmp", f"unix:{path},server=on,wait=off"]
            command += ["-qmp", f"unix:{stuck_path},server=on,wait=off"]
        else:
            stuck_path = path
            command = [sys.executable, "-m", "qmonitor", "run", "-name", "vm0", "-m", "16M"]
            command += ["--dirty-rate", "0", "--state-dir", directory, "-monitor", "none"]
            command += ["-qmp", f"unix:{path},server=on,wait=off"]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            while not (os.path.exists(path) and os.path.exists(stuck_path)):
                if process.poll() is not None:
                    raise RuntimeError(f"{command[0]} did not start")
                time.sleep(0.02)
            driver = negotiated(path)
            stop_cont(driver, 200)  # warm up
            before = rss_kib(process.pid)
            stuck = negotiated(stuck_path, receive_buffer=4096)
            started = time.monotonic()
            stop_cont(driver, pairs)
            after = rss_kib(process.pid)
            seconds = time.monotonic() - started
            stuck.close()
            driver.close()
        finally:
            process.terminate()
            process.wait(10)
    growth = (after - before) / 1024
    return (
        f"{server:8}  {pairs:,} pairs in {seconds:.1f} s: VmRSS {before:,} -> {after:,} KiB, "
        f"grew by {growth:.2f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=50_000)
    parser.add_argument("--server", choices=["qmonitor", "qemu", "both"], default="both")
    options = parser.parse_args()
    servers = ["qmonitor", "qemu"] if options.server == "both" else [options.server]
    for server in servers:
        if server == "qemu" and shutil.which("qemu-system-x86_64") is None:
            print("qemu      not installed")
            continue
        print(measure(server, options.pairs), flush=True)


if __name__ == "__main__":
    main()
