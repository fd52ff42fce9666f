"""Benchmark: what the pytest plugin's ``vm`` fixture costs per test, double against QEMU.

The fixture's own code path (:class:`qmonitor.testing.pytest_plugin.VMFactory`) starts a
machine and returns once its QMP and human monitor sockets listen (start), then stops it
(SIGTERM, wait) and removes its directory (stop). Both kinds are measured in one run,
alternating, ``--rounds`` times each:

* the double: the stand-in, ``qmonitor-system-x86_64``, with QEMU's arguments (below);
* real QEMU: ``qemu-system-x86_64 -machine none -display none -nodefaults -qmp unix:P,
  server=on,wait=off -monitor unix:H,server=on,wait=off -name vm0``.

``--with-client`` also connects a ``qemu.qmp`` client and runs ``query-status`` before the stop
(what a typical test does), counted apart. Prints the median and the minimum of each, in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from qmonitor.testing.pytest_plugin import VMFactory, VMOptions


async def one_query(machine_qmp: str) -> None:
    from qemu.qmp import QMPClient

    client = QMPClient("bench")
    await client.connect(machine_qmp)
    await client.execute("query-status")
    await client.disconnect()


def measure(qemu_binary: str | None, with_client: bool) -> tuple[float, float, float]:
    """Seconds to start, to query, to stop one machine through the fixture's code."""
    factory = VMFactory(qemu_binary)
    began = time.perf_counter()
    machine = factory.start(VMOptions())
    started = time.perf_counter()
    if with_client:
        asyncio.run(one_query(machine.qmp_socket))
    queried = time.perf_counter()
    factory.close()
    stopped = time.perf_counter()
    return started - began, queried - started, stopped - queried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--qemu-binary", default="/usr/bin/qemu-system-x86_64")
    parser.add_argument("--with-client", action="store_true")
    arguments = parser.parse_args()
    kinds: dict[str, str | None] = {"qmonitor": None, "QEMU 7.2": arguments.qemu_binary}
    figures: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in kinds}
    for _ in range(arguments.rounds):
        for kind, binary in kinds.items():
            figures[kind].append(measure(binary, arguments.with_client))
    print(f"{arguments.rounds} rounds; median (min) in ms")
    columns = ["start", "stop", "start+stop"] + (
        ["query-status client"] if arguments.with_client else []
    )
    print(f"{'':10}" + "".join(f"{column:>22}" for column in columns))
    for kind, rows in figures.items():
        series = [
            [row[0] for row in rows],
            [row[2] for row in rows],
            [row[0] + row[2] for row in rows],
        ] + ([[row[1] for row in rows]] if arguments.with_client else [])
        cells = [f"{statistics.median(s) * 1000:.0f} ({min(s) * 1000:.0f})" for s in series]
        print(f"{kind:10}" + "".join(f"{cell:>22}" for cell in cells))


if __name__ == "__main__":
    main()
