"""Benchmark: qmonitor's QMP server against real QEMU 7.2, the same load in one run.

Both servers are started once and kept for the whole run:

* ``python -m qmonitor run -name vm0 -qmp unix:...,server=on,wait=off -monitor none
  --dirty-rate 0`` (an idle guest, as QEMU's ``-machine none`` has)
* ``qemu-system-x86_64 -machine none -display none -nodefaults -name vm0 -qmp unix:...``

and every load is run against each of them in turn, several rounds, alternating which one goes
first; figures are the medians over the rounds. The client and both servers are pinned to one
CPU (issue 2: on these virtual machines cross-CPU wake-ups otherwise swing the per-command cost
by up to 3x). The loads, all ``query-status``:

``sequential``      one connection, one request in flight, no id (a positional client such
                    as libvirt): server CPU per command, latency p50/p99, commands per second.
``pipelined-D``     one connection, D requests with ids in flight (D = 1, 16, 128), sent
                    again as replies come: commands per second and server CPU per command.
``clients-50``      50 connections, each sequential. QEMU serves one client per socket (the
                    others wait unanswered), so for QEMU the 50 clients run one after another,
                    connection set-up included; for qmonitor they run at once.
``idle-1000``       RSS growth of the server per negotiated idle connection, 1,000 of them.
                    QEMU cannot hold more than one client, so only qmonitor is measured.

Server CPU is read from the server process's CPU clock (``clock_gettime`` of the process's
CPU-time clock id: all threads, nanoseconds; QEMU splits QMP work between its main thread and
the monitor I/O thread), falling back to ``utime + stime`` of ``/proc/PID/stat`` (10 ms ticks).
RSS is ``VmRSS`` of ``/proc/PID/status``.

``--profile`` runs only qmonitor, under ``cProfile``, with the sequential load, and prints the
25 functions with the most own time (``tottime``).

Usage: ``.venv/bin/python bench/bench_qmp.py [--quick] [--rounds N] [--profile]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import json
import os
import platform
import pstats
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QEMU_BINARY = "qemu-system-x86_64"
GREETING_PREFIX = b'{"QMP": '
CAPABILITIES = b'{"execute":"qmp_capabilities"}'
QUERY_STATUS = b'{"execute":"query-status"}'
STATUS_REPLY = b'{"return": {"status": "running", "singlestep": false, "running": true}'
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sizes:
    """How much work each load does per server and round."""

    rounds: int
    warmup: int
    sequential: int
    pipelined: int
    clients: int
    per_client: int
    idle_connections: int


FULL = Sizes(
    rounds=5,
    warmup=500,
    sequential=5000,
    pipelined=20000,
    clients=50,
    per_client=200,
    idle_connections=1000,
)
QUICK = Sizes(
    rounds=2,
    warmup=200,
    sequential=1000,
    pipelined=4000,
    clients=50,
    per_client=40,
    idle_connections=1000,
)
DEPTHS = (1, 16, 128)
# Issue 8: server CPU per command at most this many times the floor's, by requests in flight.
FLOOR_TARGETS = {1: 1.5, 128: 3.0}


# -- processes ---------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """CPU time used so far by every thread of process ``pid``."""
    clock = ((~pid) << 3) | 2  # Linux MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    try:
        return time.clock_gettime(clock)
    except OSError:
        return sum(user_system_seconds(pid))


def user_system_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` from /proc (10 ms ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Server:
    """A server under test, with QMP on a unix socket."""

    name: str
    path: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def start_server(name: str, command: list[str], path: str, log: Path, cpu: int | None) -> Server:
    """Start ``command`` (pinned to ``cpu``) and wait until it greets on ``path``."""

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=pin,  # before exec, so that every thread QEMU starts inherits it
        )
    server = Server(name, path, process, log)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{name} did not start: {log.read_text(errors='replace')}")
        if os.path.exists(path):
            with contextlib.suppress(OSError):
                connection = Connection(path)
                connection.close()
                return server
        time.sleep(0.02)


def qemu_command(path: str) -> list[str]:
    return [
        QEMU_BINARY,
        "-machine",
        "none",
        "-display",
        "none",
        "-nodefaults",
        "-name",
        "vm0",
        "-qmp",
        f"unix:{path},server=on,wait=off",
    ]


# ``qmonitor run`` with a profiler that SIGUSR1 starts and SIGUSR2 stops (and dumps to
# argv[1]), so that start-up is left out. The handlers run at the next Python bytecode, i.e. with
# the next request served. argv[2] is the profiler's clock: "wall" (perf_counter, low overhead)
# or "cpu" (process_time: a system call per reading, so calls look dearer, but time the process
# spends preempted is not charged to the function it was preempted in).
PROFILED_SERVER = """
import cProfile, signal, sys, time
from qmonitor.cli import main
profile = cProfile.Profile(time.process_time if sys.argv[2] == "cpu" else time.perf_counter)
def start(signum, frame):
    profile.enable()
def stop(signum, frame):
    profile.disable()
    profile.dump_stats(sys.argv[1])
signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, stop)
sys.exit(main(sys.argv[3:]))
"""


# The floor (``--floor``): a bare asyncio Protocol on uvloop with orjson that only answers
# qmp_capabilities and query-status, as in issue 2 ("about 8 us"): what any Python server pays
# for the event loop, the two syscalls and a JSON round trip.
FLOOR_SERVER = """
import asyncio, sys, orjson, uvloop
GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
            b'"package": "floor"}, "capabilities": []}}\\r\\n')
STATUS = b'{"return": {"status": "running", "singlestep": false, "running": true}'
EMPTY = b'{"return": {}'
class Floor(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""
        transport.write(GREETING)
    def data_received(self, data):
        buffer = self.buffer + data
        out = []
        start = 0
        while (end := buffer.find(b"}", start)) >= 0:
            request = orjson.loads(buffer[start:end + 1])
            start = end + 1
            out.append(STATUS if request["execute"] == "query-status" else EMPTY)
            if "id" in request:
                out.append(b", \\"id\\": " + orjson.dumps(request["id"]))
            out.append(b"}\\r\\n")
        self.buffer = buffer[start:]
        if out:
            self.transport.write(b"".join(out))
async def main():
    server = await asyncio.get_running_loop().create_unix_server(Floor, sys.argv[1])
    await server.serve_forever()
uvloop.run(main())
"""


def qmonitor_command(path: str, profile: str | None = None, clock: str = "wall") -> list[str]:
    arguments = ["run", "-name", "vm0", "-qmp", f"unix:{path},server=on,wait=off"]
    arguments += ["-monitor", "none", "--dirty-rate", "0"]  # an idle guest, as QEMU's
    if profile is not None:
        return [sys.executable, "-c", PROFILED_SERVER, profile, clock, *arguments]
    return [sys.executable, "-m", "qmonitor", *arguments]


# -- a blocking client: the least client CPU per command ----------------------------------------


class Connection:
    """A raw QMP connection over a blocking unix socket (greeting read on connect)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buffer = bytearray()
        greeting = self.read_line()
        if not greeting.startswith(GREETING_PREFIX):
            raise RuntimeError(f"unexpected greeting {greeting!r}")

    def read_line(self) -> bytes:
        buffer = self.buffer
        while True:
            end = buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 2]
                return line
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buffer += chunk

    def negotiate(self) -> None:
        self.sock.sendall(CAPABILITIES)
        reply = self.read_line()
        if reply != b'{"return": {}}':
            raise RuntimeError(f"negotiation failed: {reply!r}")

    def execute(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        return self.read_line()

    def close(self) -> None:
        self.sock.close()


def negotiated(path: str) -> Connection:
    connection = Connection(path)
    connection.negotiate()
    return connection


def check_status_reply(line: bytes) -> None:
    if not line.startswith(STATUS_REPLY):
        raise RuntimeError(f"unexpected reply {line!r}")


# -- results -----------------------------------------------------------------------------------


@dataclass
class Sample:
    """One load, one server, one round."""

    commands: int
    elapsed: float  # wall seconds
    cpu: float  # server CPU seconds
    latencies_ns: list[int] = field(default_factory=list)

    @property
    def cpu_us_per_command(self) -> float:
        return self.cpu / self.commands * 1e6

    @property
    def commands_per_second(self) -> float:
        return self.commands / self.elapsed

    def latency_us(self, quantile: float) -> float:
        ordered = sorted(self.latencies_ns)
        index = min(len(ordered) - 1, round(quantile * (len(ordered) - 1)))
        return ordered[index] / 1000


@contextlib.contextmanager
def measured(server: Server, commands: int, sample: list[Sample]) -> Iterator[Sample]:
    """Time the block and the server's CPU over it; append the result to ``sample``."""
    result = Sample(commands, 0.0, 0.0)
    cpu = server.cpu_seconds()
    start = time.perf_counter()
    yield result
    result.elapsed = time.perf_counter() - start
    result.cpu = server.cpu_seconds() - cpu
    sample.append(result)


# -- the loads ---------------------------------------------------------------------------------


def load_sequential(server: Server, sizes: Sizes) -> Sample:
    connection = negotiated(server.path)
    try:
        check_status_reply(connection.execute(QUERY_STATUS))
        for _ in range(sizes.warmup):
            connection.execute(QUERY_STATUS)
        sock, read_line, clock = connection.sock, connection.read_line, time.perf_counter_ns
        latencies = [0] * sizes.sequential
        out: list[Sample] = []
        with measured(server, sizes.sequential, out) as sample:
            for index in range(sizes.sequential):
                start = clock()
                sock.sendall(QUERY_STATUS)
                read_line()
                latencies[index] = clock() - start
        sample.latencies_ns = latencies
        return out[0]
    finally:
        connection.close()


def pipelined_run(connection: Connection, requests: list[bytes], depth: int) -> None:
    """Keep ``depth`` requests in flight until every one of ``requests`` is answered."""
    sock = connection.sock
    total = len(requests)
    sent = min(depth, total)
    sock.sendall(b"".join(requests[:sent]))
    received = connection.buffer.count(b"\n")
    connection.buffer.clear()
    while received < total:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("server closed the connection")
        # A reply ends in CRLF and JSON escapes newlines in strings, so counting LFs counts
        # replies (a CRLF may be split between two reads; an LF cannot).
        count = chunk.count(b"\n")
        received += count
        if count and sent < total:
            more = min(count, total - sent)
            sock.sendall(b"".join(requests[sent : sent + more]))
            sent += more


def load_pipelined(server: Server, sizes: Sizes, depth: int) -> Sample:
    connection = negotiated(server.path)
    try:
        probe = connection.execute(b'{"execute":"query-status","id":0}')
        if not probe.startswith(STATUS_REPLY) or not probe.endswith(b', "id": 0}'):
            raise RuntimeError(f"unexpected reply {probe!r}")
        warmup = [b'{"execute":"query-status","id":%d}' % n for n in range(sizes.warmup)]
        pipelined_run(connection, warmup, depth)
        requests = [b'{"execute":"query-status","id":%d}' % n for n in range(sizes.pipelined)]
        out: list[Sample] = []
        with measured(server, len(requests), out):
            pipelined_run(connection, requests, depth)
        return out[0]
    finally:
        connection.close()


class SequentialClient(asyncio.Protocol):
    """One of many concurrent clients: negotiate, then ``count`` sequential requests."""

    def __init__(self, count: int, ready: asyncio.Future[None], done: asyncio.Future[None]):
        self.count = count
        self.ready = ready
        self.done = done
        self.buffer = bytearray()
        self.stage = 0  # 0 greeting, 1 negotiating, 2 ready, 3 running
        self.transport: asyncio.Transport | None = None
        self.latencies: list[int] = []
        self.sent_at = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def start(self) -> None:
        assert self.transport is not None
        self.stage = 3
        self.sent_at = time.perf_counter_ns()
        self.transport.write(QUERY_STATUS)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n")) >= 0:
            del self.buffer[: end + 2]
            self.line_received()

    def line_received(self) -> None:
        assert self.transport is not None
        if self.stage == 0:
            self.stage = 1
            self.transport.write(CAPABILITIES)
        elif self.stage == 1:
            self.stage = 2
            self.ready.set_result(None)
        else:
            now = time.perf_counter_ns()
            self.latencies.append(now - self.sent_at)
            if len(self.latencies) < self.count:
                self.sent_at = now
                self.transport.write(QUERY_STATUS)
            elif not self.done.done():
                self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.ready, self.done):
            if not future.done():
                future.set_exception(ConnectionError(f"connection lost: {exc}"))


async def concurrent_clients(server: Server, clients: int, per_client: int) -> Sample:
    loop = asyncio.get_running_loop()
    protocols: list[SequentialClient] = []
    for _ in range(clients):
        ready: asyncio.Future[None] = loop.create_future()
        done: asyncio.Future[None] = loop.create_future()
        _, protocol = await loop.create_unix_connection(
            functools.partial(SequentialClient, per_client, ready, done), server.path
        )
        protocols.append(protocol)
    await asyncio.gather(*(p.ready for p in protocols))
    out: list[Sample] = []
    with measured(server, clients * per_client, out) as sample:
        for protocol in protocols:
            protocol.start()
        await asyncio.gather(*(p.done for p in protocols))
    for protocol in protocols:
        assert protocol.transport is not None
        protocol.transport.close()
        sample.latencies_ns.extend(protocol.latencies)
    await asyncio.sleep(0.05)
    return out[0]


def event_loop_runner() -> asyncio.Runner:
    with contextlib.suppress(ImportError):
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def load_clients(server: Server, sizes: Sizes, serialized: bool) -> Sample:
    """``sizes.clients`` clients doing sequential requests: at once, or one after another."""
    if not serialized:
        # Warm up on a single client, then run them all at once.
        warm = negotiated(server.path)
        for _ in range(sizes.warmup):
            warm.execute(QUERY_STATUS)
        warm.close()
        with event_loop_runner() as runner:
            return runner.run(concurrent_clients(server, sizes.clients, sizes.per_client))
    out: list[Sample] = []
    latencies: list[int] = []
    clock = time.perf_counter_ns
    with measured(server, sizes.clients * sizes.per_client, out) as sample:
        for _ in range(sizes.clients):
            connection = negotiated(server.path)
            for _ in range(sizes.per_client):
                start = clock()
                connection.execute(QUERY_STATUS)
                latencies.append(clock() - start)
            connection.close()
    sample.latencies_ns = latencies
    return out[0]


def idle_connection_bytes(server: Server, count: int) -> tuple[float, int, int]:
    """(RSS growth per negotiated idle connection in bytes, RSS before, RSS after) in KiB."""
    time.sleep(0.3)
    before = server.rss_kib()
    connections = [negotiated(server.path) for _ in range(count)]
    try:
        time.sleep(0.5)
        # Every connection still answers: they are held, not dropped.
        check_status_reply(connections[0].execute(QUERY_STATUS))
        check_status_reply(connections[-1].execute(QUERY_STATUS))
        after = server.rss_kib()
    finally:
        for connection in connections:
            connection.close()
    return (after - before) * 1024 / count, before, after


# -- running it all ----------------------------------------------------------------------------

LOADS = ["sequential", *(f"pipelined-{depth}" for depth in DEPTHS), "clients"]


def run_load(load: str, server: Server, sizes: Sizes, is_qemu: bool) -> Sample:
    if load == "sequential":
        return load_sequential(server, sizes)
    if load.startswith("pipelined-"):
        return load_pipelined(server, sizes, int(load.split("-")[1]))
    return load_clients(server, sizes, serialized=is_qemu)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_description() -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    qemu = subprocess.run([QEMU_BINARY, "--version"], capture_output=True, text=True, check=False)
    return {
        "cpus": str(os.cpu_count()),
        "cpu model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "qemu": qemu.stdout.splitlines()[0] if qemu.stdout else "?",
        "load average": " ".join(f"{value:.2f}" for value in os.getloadavg()),
    }


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def ratio(ours: float, theirs: float) -> str:
    if not theirs or theirs != theirs or ours != ours:
        return "n/a"
    value = ours / theirs
    return f"{value:.3f}x" if value < 1 else f"{value:.1f}x"


def report(
    results: dict[str, dict[str, list[Sample]]],
    idle: list[tuple[float, int, int]],
    qemu_one: list[tuple[float, int, int]],
    sizes: Sizes,
) -> dict[str, Any]:
    """Print the Markdown table of medians, with ratios and targets; return the figures."""
    names = list(results)  # qmonitor, QEMU and maybe floor
    with_floor = "floor" in names
    figures: dict[str, Any] = {}
    lines: list[str] = []

    def row(
        label: str,
        key: str,
        load: str,
        metric: Callable[[Sample], float],
        fmt: str,
        target: Callable[[float], bool] | None = None,
        target_text: str = "",
        floor_at_most: float | None = None,
    ) -> None:
        values = {name: median([metric(s) for s in results[name][load]]) for name in names}
        figures[key] = values
        mine, theirs = values["qmonitor"], values["QEMU"]
        verdicts = []
        if target is not None:
            verdicts.append(f"{target_text}: {'met' if target(mine / theirs) else 'NOT met'}")
        cells = [label, *(fmt.format(values[name]) for name in names), ratio(mine, theirs)]
        if with_floor:
            cells.append(ratio(mine, values["floor"]))
            if floor_at_most is not None:
                met = mine <= floor_at_most * values["floor"]
                verdicts.append(f"<= {floor_at_most:g}x floor: {'met' if met else 'NOT met'}")
        lines.append("| " + " | ".join([*cells, "; ".join(verdicts)]) + " |")

    def cpu(sample: Sample) -> float:
        return sample.cpu_us_per_command

    def rate(sample: Sample) -> float:
        return sample.commands_per_second

    def p50(sample: Sample) -> float:
        return sample.latency_us(0.5)

    def p99(sample: Sample) -> float:
        return sample.latency_us(0.99)

    row(
        "server CPU per command, sequential (us)",
        "sequential_cpu_us",
        "sequential",
        cpu,
        "{:.1f}",
        lambda r: r <= 0.10,
        "<= 0.10x",
        floor_at_most=1.5,
    )
    row("latency p50, sequential (us)", "sequential_p50_us", "sequential", p50, "{:.1f}")
    row("latency p99, sequential (us)", "sequential_p99_us", "sequential", p99, "{:.1f}")
    row("commands/s, sequential", "sequential_rate", "sequential", rate, "{:,.0f}")
    for depth in DEPTHS:
        load = f"pipelined-{depth}"
        row(
            f"commands/s, {depth} in flight",
            f"pipelined_{depth}_rate",
            load,
            rate,
            "{:,.0f}",
            (lambda r: r >= 50) if depth == 128 else None,
            ">= 50x",
        )
        row(
            f"server CPU per command, {depth} in flight (us)",
            f"pipelined_{depth}_cpu_us",
            load,
            cpu,
            "{:.1f}",
            floor_at_most=FLOOR_TARGETS.get(depth),
        )
    row(
        f"commands/s, {sizes.clients} clients (QEMU: one after another)",
        "clients_rate",
        "clients",
        rate,
        "{:,.0f}",
    )
    row(
        f"server CPU per command, {sizes.clients} clients (us)",
        "clients_cpu_us",
        "clients",
        cpu,
        "{:.1f}",
    )
    row(
        f"latency p99, {sizes.clients} clients (us)",
        "clients_p99_us",
        "clients",
        p99,
        "{:.1f}",
        floor_at_most=2,
    )
    per_connection = median([value[0] for value in idle]) / 1024
    qemu_single = median([value[0] for value in qemu_one]) / 1024
    idle_server = median([float(value[1]) for value in idle])
    qemu_server = median([float(value[1]) for value in qemu_one])
    figures["idle_rss_kib_per_connection"] = {"qmonitor": per_connection, "qemu_one": qemu_single}
    figures["rss_kib_idle_server"] = {"qmonitor": idle_server, "qemu": qemu_server}
    blanks = " |" * (len(names) - 2 + with_floor)
    verdict = "met" if per_connection < 20 else "NOT met"
    lines.append(
        f"| RSS per idle connection, {sizes.idle_connections} connections (KiB) "
        f"| {per_connection:.1f} | n/a (one client per socket; one connection: "
        f"+{qemu_single:.0f} KiB) |{blanks} | < 20 KiB: {verdict} |"
    )
    lines.append(
        f"| RSS of the idle server (KiB) | {idle_server:,.0f} | {qemu_server:,.0f} |{blanks} | |"
    )
    print()
    ratios = " | qmonitor/QEMU | qmonitor/floor" if with_floor else " | qmonitor/QEMU"
    print("| measurement | " + " | ".join(names) + ratios + " | target |")
    print("|---|" + "---|" * (len(names) + 2 + with_floor))
    print("\n".join(lines))
    return figures


def run_benchmark(options: argparse.Namespace, sizes: Sizes, directory: Path) -> None:
    cpu = None if options.no_pin else options.cpu
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    raise_fd_limit(sizes.idle_connections * 2 + 256)  # the servers inherit it
    description = machine_description()
    for key, value in description.items():
        print(f"{key}: {value}")
    print(f"pinned to CPU: {cpu if cpu is not None else 'no'}; {sizes}")
    commands = {
        "qmonitor": qmonitor_command(str(directory / "qmonitor.sock")),
        "QEMU": qemu_command(str(directory / "QEMU.sock")),
    }
    if options.floor:
        commands["floor"] = [sys.executable, "-c", FLOOR_SERVER, str(directory / "floor.sock")]
    servers: dict[str, Server] = {}
    results: dict[str, dict[str, list[Sample]]] = {
        name: {load: [] for load in LOADS} for name in commands
    }
    idle: list[tuple[float, int, int]] = []
    qemu_one: list[tuple[float, int, int]] = []
    try:
        for name, command in commands.items():
            path = str(directory / f"{name}.sock")
            servers[name] = start_server(name, command, path, directory / f"{name}.log", cpu)
        for round_index in range(sizes.rounds):
            order = list(servers) if round_index % 2 == 0 else list(reversed(servers))
            for load in LOADS:
                for name in order:
                    sample = run_load(load, servers[name], sizes, is_qemu=name == "QEMU")
                    results[name][load].append(sample)
                    print(
                        f"round {round_index + 1} {load:>13} {name:>8}: "
                        f"{sample.commands_per_second:>9,.0f} commands/s, "
                        f"{sample.cpu_us_per_command:7.1f} us server CPU per command",
                        flush=True,
                    )
            # On a fresh server: memory freed by the loads above would hide the growth.
            fresh_path = str(directory / "fresh.sock")
            fresh = start_server(
                "qmonitor", qmonitor_command(fresh_path), fresh_path, directory / "fresh.log", cpu
            )
            try:
                idle.append(idle_connection_bytes(fresh, sizes.idle_connections))
            finally:
                fresh.stop()
            qemu_one.append(idle_connection_bytes(servers["QEMU"], 1))
            print(
                f"round {round_index + 1}    idle conns: qmonitor "
                f"{idle[-1][0] / 1024:.1f} KiB per connection "
                f"({idle[-1][1]:,} -> {idle[-1][2]:,} KiB for {sizes.idle_connections})",
                flush=True,
            )
    finally:
        for server in servers.values():
            server.stop()
    figures = report(results, idle, qemu_one, sizes)
    if options.json:
        figures["machine"] = description
        figures["sizes"] = sizes.__dict__
        Path(options.json).write_text(json.dumps(figures, indent=2) + "\n")


def run_profile(options: argparse.Namespace, sizes: Sizes, directory: Path) -> None:
    """Our server under cProfile with the sequential load; the top 25 by own time.

    With the wall clock the client runs on another CPU than the server: on one CPU the server
    is often preempted inside write(2) (the write wakes the client) and the wall clock would
    charge the client's run to the server. With the CPU clock both share one CPU, as in the
    benchmark.
    """
    cpu = None if options.no_pin else options.cpu
    if cpu is not None:
        others = sorted(os.sched_getaffinity(0) - {cpu})
        wall = options.profile_clock == "wall"
        os.sched_setaffinity(0, {others[0]} if others and wall else {cpu})
    path = str(directory / "qmonitor.sock")
    profile = directory / "qmonitor.prof"
    log = directory / "qmonitor.log"
    command = qmonitor_command(path, str(profile), options.profile_clock)
    server = start_server("qmonitor", command, path, log, cpu)
    count = sizes.sequential * 4
    try:
        connection = negotiated(path)
        for _ in range(sizes.warmup):
            check_status_reply(connection.execute(QUERY_STATUS))
        # First without the profiler: the real cost, split into user and kernel time.
        user, system = user_system_seconds(server.pid)
        cpu = server.cpu_seconds()
        for _ in range(count):
            connection.execute(QUERY_STATUS)
        cpu = server.cpu_seconds() - cpu
        after = user_system_seconds(server.pid)
        placement = f"server on CPUs {sorted(os.sched_getaffinity(server.pid))}, client on "
        placement += f"CPUs {sorted(os.sched_getaffinity(0))}"
        print(placement)
        print(
            f"{count} sequential query-status without the profiler: "
            f"{cpu / count * 1e6:.1f} us server CPU per command "
            f"(user {(after[0] - user) / count * 1e6:.1f} us, "
            f"kernel {(after[1] - system) / count * 1e6:.1f} us, from 10 ms ticks)"
        )
        server.process.send_signal(signal.SIGUSR1)
        time.sleep(0.1)
        connection.execute(QUERY_STATUS)  # the handler runs: profiling from here
        out: list[Sample] = []
        with measured(server, count, out) as sample:
            for _ in range(count):
                connection.execute(QUERY_STATUS)
        server.process.send_signal(signal.SIGUSR2)
        time.sleep(0.1)
        connection.execute(QUERY_STATUS)  # the handler runs: the profile is written
        deadline = time.monotonic() + 10
        while not profile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        connection.close()
    finally:
        server.stop()
    print(
        f"{sample.commands} sequential query-status under cProfile: "
        f"{sample.cpu_us_per_command:.1f} us server CPU per command (profiler overhead included)"
    )
    if not profile.exists():
        raise SystemExit(f"no profile written; server log: {log.read_text()}")
    text = io.StringIO()
    pstats.Stats(str(profile), stream=text).sort_stats("tottime").print_stats(25)
    print(text.getvalue())
    print(
        "cProfile does not see uvloop's methods (Cython): the time of transport.write() and\n"
        "the like, system calls included, is in the own time (tottime) of their Python caller."
    )


def main() -> None:
    # A plain `kill` must still stop the servers (the finally clauses below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and commands")
    parser.add_argument("--rounds", type=int, help="rounds (default 5, 2 with --quick)")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to pin everything to")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    parser.add_argument("--profile", action="store_true", help="profile qmonitor (cProfile)")
    parser.add_argument(
        "--profile-clock",
        choices=("wall", "cpu"),
        default="wall",
        help="the profiler's clock (default wall; see run_profile)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--floor", action="store_true", help="also measure a bare uvloop+orjson server"
    )
    options = parser.parse_args()
    sizes = QUICK if options.quick else FULL
    if options.rounds:
        sizes = Sizes(**{**sizes.__dict__, "rounds": options.rounds})
    if not options.profile and shutil.which(QEMU_BINARY) is None:
        raise SystemExit(f"{QEMU_BINARY} is not installed (apt-get install qemu-system-x86)")
    directory = Path(tempfile.mkdtemp(prefix="qm-bench-"))
    try:
        if options.profile:
            run_profile(options, sizes, directory)
        else:
            run_benchmark(options, sizes, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
