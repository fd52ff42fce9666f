"""Benchmark: live migration between two ``qmonitor run`` processes over TCP loopback.

Measures, in one run (issue 4's performance targets):

1. throughput of migrating a stopped guest whose pages all hold data, against a plain Python
   socket copy of the same number of bytes between two processes (``sendall`` from a
   ``bytearray``, ``recv_into`` a preallocated one): target >= 60 %;
2. throughput of migrating an all-zero guest (reported separately: it sends headers only);
3. convergence with the guest dirtying at a quarter of ``max-bandwidth``: passes, downtime
   against ``downtime-limit``;
4. ``query-status`` latency from another QMP client: p99 while idle, and while migrating at
   full speed (target: within 10x).

Usage: ``python bench/bench_migration.py [--size 1G] [--runs 3]``. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PAGE = 4096
SAMPLE_INTERVAL = 0.002
"""Seconds between two ``query-status`` probes: a client polling, not a load generator (on a
two-CPU machine a back-to-back prober would take the CPU the migration needs)."""

RECEIVER = """
import socket, sys
size = int(sys.argv[1])
buffer = bytearray(size)  # allocated (and zeroed) before timing, like guest RAM
view = memoryview(buffer)
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
connection, _ = server.accept()
received = 0
while received < size:
    count = connection.recv_into(view[received:])
    if not count:
        break
    received += count
connection.sendall(b"\\x06")
"""


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].isalpha() else int(text)


def socket_copy(size: int) -> float:
    """Seconds to copy ``size`` bytes to another process over TCP loopback, ack included."""
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(size)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        data = bytearray(os.urandom(1 << 20)) * (size >> 20)
        with socket.create_connection(("127.0.0.1", port)) as connection:
            start = time.perf_counter()
            connection.sendall(data)
            connection.recv(1)
            return time.perf_counter() - start
    finally:
        receiver.kill()
        receiver.wait()


class Client:
    """A minimal QMP client (the bench must not depend on test helpers)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reading = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, path: str) -> Client:
        reader, writer = await asyncio.open_unix_connection(path)
        await reader.readuntil(b"\r\n")
        client = cls(reader, writer)
        await client.execute("qmp_capabilities")
        return client

    async def _read(self) -> None:
        while True:
            message = json.loads(await self.reader.readuntil(b"\r\n"))
            await (self.events if "event" in message else self.replies).put(message)

    async def execute(self, command: str, **arguments: Any) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.writer.write(json.dumps(message).encode())
        reply = await self.replies.get()
        if "error" in reply:
            raise RuntimeError(f"{command}: {reply['error']['desc']}")
        return reply["return"]

    async def wait_event(self, name: str, **data: Any) -> dict[str, Any]:
        while True:
            event = await self.events.get()
            if event["event"] == name and all(event["data"].get(k) == v for k, v in data.items()):
                return event

    async def close(self) -> None:
        self._reading.cancel()
        self.writer.close()


class Machines:
    """``qmonitor run`` processes in a temporary directory, all killed at the end."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []

    async def start(self, name: str, *options: str) -> str:
        path = f"{self.directory}/{name}.qmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        process = subprocess.Popen(
            [sys.executable, "-m", "qmonitor", "run", "-name", name,
             "-qmp", f"unix:{path},server=on,wait=off", "-monitor", "none",
             "--state-dir", f"{self.directory}/state", *options],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.processes.append(process)
        while not os.path.exists(path):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}")
            await asyncio.sleep(0.02)
        return path

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        self.processes.clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def fill(client: Client, pages: int) -> None:
    """Run the workload until every page holds data, then stop the guest."""
    while (await client.execute("x-query-ram-digest"))["workload-step"] < pages:
        await asyncio.sleep(0.1)
    await client.execute("stop")


async def status_latencies(path: str, until: asyncio.Event) -> list[float]:
    """``query-status`` round trips (seconds) from a client of its own, back to back."""
    client = await Client.connect(path)
    samples = []
    try:
        while not until.is_set():
            start = time.perf_counter()
            await client.execute("query-status")
            samples.append(time.perf_counter() - start)
            await asyncio.sleep(SAMPLE_INTERVAL)
    finally:
        await client.close()
    return samples


def p99(samples: list[float]) -> float:
    return sorted(samples)[min(len(samples) - 1, int(len(samples) * 0.99))]


async def migrate_once(
    machines: Machines, size: int, *, data: bool, latency: bool
) -> tuple[float, dict[str, Any], list[float]]:
    """One stopped-guest migration at full speed; returns (seconds, query-migrate, latencies)."""
    memory = f"{size >> 20}M"
    guest = ("--dirty-rate", "4G") if data else ("-S",)  # -S: never runs, RAM stays zero
    source_path = await machines.start("src", "-m", memory, *guest)
    port = free_port()
    await machines.start("dst", "-m", memory, "-S", "-incoming", f"tcp:127.0.0.1:{port}")
    source = await Client.connect(source_path)
    if data:
        await fill(source, size // PAGE)
    await source.execute("migrate-set-parameters", **{"max-bandwidth": 0})
    await source.execute(
        "migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}]
    )
    done = asyncio.Event()
    sampler = asyncio.ensure_future(status_latencies(source_path, done)) if latency else None
    await asyncio.sleep(0.2 if latency else 0)
    start = time.perf_counter()
    await source.execute("migrate", uri=f"tcp:127.0.0.1:{port}")
    await source.wait_event("MIGRATION", status="completed")
    elapsed = time.perf_counter() - start
    done.set()
    samples = await sampler if sampler is not None else []
    info = await source.execute("query-migrate")
    await source.close()
    machines.stop_all()
    return elapsed, info, samples


async def idle_latencies(machines: Machines, seconds: float) -> list[float]:
    path = await machines.start("idle", "-m", "1024M", "-S")
    done = asyncio.Event()
    sampler = asyncio.ensure_future(status_latencies(path, done))
    await asyncio.sleep(seconds)
    done.set()
    samples = await sampler
    machines.stop_all()
    return samples


async def convergence(machines: Machines, size: int, cap: int) -> dict[str, Any]:
    """Migrate a running guest dirtying at cap / 4; returns query-migrate at completion."""
    memory = f"{size >> 20}M"
    source_path = await machines.start("src", "-m", memory, "--dirty-rate", str(cap // 4))
    port = free_port()
    await machines.start("dst", "-m", memory, "-S", "-incoming", f"tcp:127.0.0.1:{port}")
    source = await Client.connect(source_path)
    await asyncio.sleep(1.0)
    await source.execute("migrate-set-parameters", **{"max-bandwidth": cap})
    await source.execute(
        "migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}]
    )
    await source.execute("migrate", uri=f"tcp:127.0.0.1:{port}")
    await source.wait_event("MIGRATION", status="completed")
    info: dict[str, Any] = await source.execute("query-migrate")
    info["downtime-limit"] = (await source.execute("query-migrate-parameters"))["downtime-limit"]
    await source.close()
    machines.stop_all()
    return info


def machine_description() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="guest RAM (1G)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each copy (3)")
    parser.add_argument("--cap", type=parse_size, default=128 << 20, help="max-bandwidth (128M)")
    parser.add_argument("--converge-size", type=parse_size, default=256 << 20)
    options = parser.parse_args()
    size = options.size
    with tempfile.TemporaryDirectory(prefix="qmbench-") as directory:
        machines = Machines(directory)
        try:
            copies = [socket_copy(size) for _ in range(options.runs)]
            data_runs = [
                await migrate_once(machines, size, data=True, latency=False)
                for _ in range(options.runs)
            ]
            latency_runs = [
                await migrate_once(machines, size, data=True, latency=True)
                for _ in range(options.runs)
            ]
            zero_runs = [
                await migrate_once(machines, size, data=False, latency=False)
                for _ in range(options.runs)
            ]
            idle = await idle_latencies(machines, 3.0)
            converged = await convergence(machines, options.converge_size, options.cap)
        finally:
            machines.stop_all()
    copy_s = statistics.median(copies)
    data_s = statistics.median(run[0] for run in data_runs)
    zero_s = statistics.median(run[0] for run in zero_runs)
    busy = [sample for run in latency_runs for sample in run[2]]
    gib = size / (1 << 30)
    print(f"machine: {machine_description()}")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}\n")
    print("| measurement | median of runs | figure |")
    print("|---|---|---|")
    print(f"| plain socket copy, {gib:g} GiB | {copy_s * 1000:.0f} ms | "
          f"{size / copy_s / 1e6:.0f} MB/s |")  # fmt: skip
    ratio = copy_s / data_s
    zero_sent = zero_runs[0][1]["ram"]["transferred"]
    print(f"| migration, stopped {gib:g} GiB guest, all pages data | {data_s * 1000:.0f} ms | "
          f"{size / data_s / 1e6:.0f} MB/s = **{ratio:.0%} of the socket copy** |")  # fmt: skip
    print(f"| migration, stopped {gib:g} GiB guest, all zero | {zero_s * 1000:.0f} ms | "
          f"{size / zero_s / 1e6:.0f} MB/s ({zero_sent} bytes sent) |")  # fmt: skip
    print(f"| query-status p99, idle (probe every {SAMPLE_INTERVAL * 1e3:g} ms) | "
          f"{len(idle)} samples | {p99(idle) * 1e3:.3f} ms |")  # fmt: skip
    print(f"| query-status p99, during migration | {len(busy)} samples | "
          f"{p99(busy) * 1e3:.3f} ms = **{p99(busy) / p99(idle):.1f}x idle** |")  # fmt: skip
    ram = converged["ram"]
    print(f"| convergence, {options.converge_size >> 20} MiB guest dirtying "
          f"{options.cap // 4 >> 20} MiB/s, cap {options.cap >> 20} MiB/s | "
          f"{converged['total-time']} ms, {ram['dirty-sync-count']} passes | downtime "
          f"**{converged['downtime']} ms** (limit {converged['downtime-limit']} ms) |")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
