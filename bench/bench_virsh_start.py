"""Benchmark: how long ``virsh start`` takes for the test domain, real QEMU against the stand-in.

Issue 12's target: ``virsh start`` of the test domain (TCG, 64 MiB, no disks; the domain of
tests/clients/test_libvirt.py) takes at most what libvirt takes to start it on real QEMU 7.2.
A private session ``libvirtd`` is started as the tests start it (tests/clients/libvirt_session.py:
as the ``qmonitor-libvirt`` user when run by root), each emulator is probed once (``virsh
domcapabilities``, so the probe is cached and not counted), then ``virsh start`` and ``virsh
destroy`` are timed, alternating the emulators each round. The time is the wall time of the
``virsh`` process, as a user sees it.

Usage: ``.venv/bin/python bench/bench_virsh_start.py [--rounds 10] [--emulator PATH ...]``.
By default the emulators are ``qemu-system-x86_64`` and, once installed,
``qmonitor-system-x86_64``. Prints a Markdown table (medians, min, max, and each median as a
ratio of the first emulator's, measured in the same run: the target is the stand-in's at most
1.00x QEMU's).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "clients"))

# A test helper, found through the path above.
from libvirt_session import (
    LibvirtSession,
    domain_xml,
    libvirt_session,
    missing_requirement,
)

DEFAULT_EMULATORS = ("qemu-system-x86_64", "qmonitor-system-x86_64")


def timed_virsh(session: LibvirtSession, *arguments: str) -> float:
    started = time.perf_counter()
    session.virsh(*arguments)
    return time.perf_counter() - started


def find_emulators(requested: list[str]) -> list[str]:
    if requested:
        return [str(Path(path).absolute()) for path in requested]
    beside_python = str(Path(sys.executable).parent)
    found = [
        shutil.which(name) or shutil.which(name, path=beside_python) for name in DEFAULT_EMULATORS
    ]
    return [path for path in found if path is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--emulator", action="append", default=[], metavar="PATH")
    options = parser.parse_args()
    missing = missing_requirement()
    if missing:
        sys.exit(f"bench_virsh_start: {missing}")
    emulators = find_emulators(options.emulator)
    starts: dict[str, list[float]] = {path: [] for path in emulators}
    destroys: dict[str, list[float]] = {path: [] for path in emulators}
    with libvirt_session() as session:
        names = {}
        for index, path in enumerate(emulators):
            session.virsh("domcapabilities", "--emulatorbin", path, "--arch", "x86_64")
            names[path] = f"bench{index}"
            xml = session.write_file(f"bench{index}.xml", domain_xml(names[path], path))
            session.virsh("define", str(xml))
        for round_number in range(options.rounds):
            order = emulators if round_number % 2 == 0 else emulators[::-1]
            for path in order:
                starts[path].append(timed_virsh(session, "start", names[path]))
                destroys[path].append(timed_virsh(session, "destroy", names[path]))
    print(f"`virsh start` / `virsh destroy` of the test domain, {options.rounds} rounds\n")
    print("| emulator | start median | min | max | x first | destroy median |")
    print("|---|---|---|---|---|---|")
    reference = statistics.median(starts[emulators[0]])
    for path in emulators:
        ms = [1000 * seconds for seconds in starts[path]]
        ratio = statistics.median(starts[path]) / reference
        destroy_ms = 1000 * statistics.median(destroys[path])
        print(
            f"| `{path}` | {statistics.median(ms):.0f} ms | {min(ms):.0f} ms | "
            f"{max(ms):.0f} ms | {ratio:.2f}x | {destroy_ms:.0f} ms |"
        )


if __name__ == "__main__":
    main()
