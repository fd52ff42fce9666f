"""bench/bench_qmp.py's table: the floor ratios and issue 8's targets next to QEMU's.

The harness is not part of the package; it is loaded from its file. No server is started: the
table is printed from made-up samples, whose ratios are known.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_qmp.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_qmp", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_qmp"] = module  # dataclasses look their module up while decorating
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["bench_qmp"]
    return module


def _samples(bench: ModuleType, cpu_us: float, rate: float, latency_us: int) -> dict[str, list]:
    """One round of every load: ``cpu_us`` server CPU per command, ``rate`` commands/s."""
    commands = 1000
    return {
        load: [
            bench.Sample(
                commands, commands / rate, cpu_us * commands / 1e6, [latency_us * 1000] * 10
            )
        ]
        for load in bench.LOADS
    }


def _row(output: str, label: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_floor_ratio_and_targets_are_printed(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {
        "qmonitor": _samples(bench, cpu_us=10.0, rate=60_000, latency_us=900),
        "QEMU": _samples(bench, cpu_us=100.0, rate=1_000, latency_us=200),
        "floor": _samples(bench, cpu_us=5.0, rate=100_000, latency_us=500),
    }
    bench.report(results, [(2048.0, 1000, 0)], [(0.0, 1000, 0)], bench.QUICK)
    output = capsys.readouterr().out
    assert "| qmonitor/QEMU | qmonitor/floor | target |" in output
    one = _row(output, "server CPU per command, 1 in flight (us)")
    assert one[1:6] == ["10.0", "100.0", "5.0", "0.100x", "2.0x"]
    assert one[6] == "<= 1.5x floor: NOT met"
    deep = _row(output, "server CPU per command, 128 in flight (us)")
    assert deep[6] == "<= 3x floor: met"
    rate = _row(output, "commands/s, 128 in flight")
    assert rate[4:] == ["60.0x", "0.600x", ">= 50x: met"]
    p99 = _row(output, "latency p99, 50 clients (us)")
    assert p99[4:] == ["4.5x", "1.8x", "<= 2x floor: met"]
    rss = _row(output, "RSS per idle connection, 1000 connections (KiB)")
    assert len(rss) == len(one)  # one cell per column
