"""Benchmark: the Python work per QMP request, in one process, without sockets.

``bench_qmp.py`` measures whole servers, so its figures include system calls and the kernel's
scheduling, and on a shared machine they move by 10-30 % between runs. This one feeds
``query-status`` requests straight into a :class:`~qmonitor.server.qmp_session.QMPSession`
of the machine ``qmonitor run`` serves (its commands registered the same way, on uvloop), with
a transport that only counts what is written, and reports the process CPU time per request:
the framing, request checks, dispatch, handler, reply writing and bookkeeping that issue 8
asks to cut, and nothing else. The best of several repetitions is reported, which makes an A/B
comparison of two versions of the code (alternate them: ``PYTHONPATH=OTHER/src``) reliable to
a few percent where the whole-server figures are not.

Loads: ``sequential`` (one request per read, no id), ``ids`` (one per read, with ids) and
``pipelined`` (128 requests with ids per read, as ``bench_qmp.py``'s 128 in flight delivers
them).

Usage: ``.venv/bin/python bench/bench_request_path.py [--load L] [--profile]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import tempfile
import time

import uvloop

from qmonitor.core.faults import FaultSet
from qmonitor.machine.commands import register_machine_commands
from qmonitor.machine.machine import Machine
from qmonitor.machine.snapshots import SnapshotStore
from qmonitor.server.faults import install_faults
from qmonitor.server.monitor import Monitor
from qmonitor.server.qmp_session import QMPSession

REQUESTS = 25600
REPETITIONS = 7
LOADS = ("sequential", "ids", "pipelined")


class CountingTransport(asyncio.Transport):
    """Takes what the session writes and counts the writes; reads nothing itself."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def reads_for(load: str) -> list[bytes]:
    """The data of each read: one request per read, or 128 with ids."""
    if load == "sequential":
        return [b'{"execute":"query-status"}'] * REQUESTS
    requests = [b'{"execute":"query-status","id":%d}' % number for number in range(REQUESTS)]
    per_read = 128 if load == "pipelined" else 1
    return [b"".join(requests[i : i + per_read]) for i in range(0, REQUESTS, per_read)]


def session_of_the_machine() -> tuple[QMPSession, CountingTransport]:
    """A negotiated QMP session of the monitor ``qmonitor run`` makes (its commands, faults
    installed with no rule, signatures compiled at first use)."""
    monitor = Monitor("vm0")
    monitor.registry.defer_signatures = True
    install_faults(monitor, FaultSet())
    machine = Machine("vm0", ram_size=128 << 20, start_paused=False, incoming=False, dirty_rate=0)
    snapshots = SnapshotStore(tempfile.mkdtemp(prefix="qm-bench-"))
    register_machine_commands(monitor, machine, snapshots, on_exit=lambda status: None)
    session = QMPSession(monitor, peer="bench")
    transport = CountingTransport()
    session.connection_made(transport)
    session.data_received(b'{"execute":"qmp_capabilities"}')
    return session, transport


async def measure(load: str, profile: bool) -> None:
    session, transport = session_of_the_machine()
    reads = reads_for(load)
    for data in reads[:100]:  # warm-up: signatures compiled, writers generated
        session.data_received(data)
    best = float("inf")
    for repetition in range(REPETITIONS):
        profiler = cProfile.Profile() if profile and repetition == REPETITIONS - 1 else None
        if profiler is not None:
            profiler.enable()
        start = time.process_time()
        for data in reads:
            session.data_received(data)
        elapsed = time.process_time() - start
        if profiler is not None:
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            print(text.getvalue())
        else:
            best = min(best, elapsed)
    print(
        f"{load}: {best / REQUESTS * 1e6:.3f} us CPU per request "
        f"(best of {REPETITIONS - profile} x {REQUESTS:,} requests, {transport.writes:,} writes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", choices=LOADS, action="append", help="default: all three")
    parser.add_argument("--profile", action="store_true", help="cProfile the last repetition")
    options = parser.parse_args()
    for load in options.load or LOADS:
        uvloop.run(measure(load, options.profile))


if __name__ == "__main__":
    main()
