"""go-qemu (github.com/digitalocean/go-qemu, Debian 12's packaging) drives the monitor
(issue 12 item 6).

tests/go/goqemu_probe is built once per session (GOPATH mode: Debian installs Go libraries under
/usr/share/gocode and has no module proxy to fetch from) and run against (a) real QEMU 7.2 and
(b) ``qmonitor-system-x86_64`` with QEMU's command line, each with QMP on a unix socket. It
makes every call once and prints one JSON line per call; each call is then a test case here,
checked the same way for both servers.

What qmonitor does not answer yet is listed in :data:`QMONITOR_NOT_YET`, in one place, with
the reason: those cases are strict expected failures, so a case that starts passing fails the
run until its entry is removed, and the list shrinks as the stand-in grows.

With ``-faults``, the probe meets the faults the stand-in injects (``--faults``, issue 7):
:func:`test_go_qemu_meets_injected_faults`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qmonitor.testing import QEMU_BINARY, start_server

GOPATH = Path("/usr/share/gocode")
GO_QEMU = GOPATH / "src" / "github.com" / "digitalocean" / "go-qemu"
PROBE_SOURCE = Path(__file__).parent.parent / "go" / "goqemu_probe" / "main.go"
MACHINE_NAME = "goqemu"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"

if shutil.which("go") is None:
    _missing: str | None = "go is not installed (Debian: golang-go)"
elif not GO_QEMU.is_dir():
    _missing = "go-qemu is not installed (Debian: golang-github-digitalocean-go-qemu-dev)"
else:
    _missing = None

pytestmark = [pytest.mark.go_qemu, pytest.mark.skipif(_missing is not None, reason=_missing or "")]

Check = Callable[[dict[str, Any]], None]
ProbeOutput = Callable[[str], dict[str, Any]]


def returns(expected: Callable[[Any], bool] = lambda _result: True) -> Check:
    """The call succeeds, with a result for which ``expected`` holds."""

    def check(line: dict[str, Any]) -> None:
        assert line["ok"], line
        assert expected(line["result"]), line

    return check


def fails_with(message: str) -> Check:
    """The call fails with QEMU's error text (go-qemu passes on the reply's ``desc``)."""

    def check(line: dict[str, Any]) -> None:
        assert not line["ok"], line
        assert line["error"] == message, line

    return check


CHECKS: dict[str, Check] = {
    # qmp.SocketMonitor
    "qmp.Connect": returns(
        lambda r: r["version"].startswith("7.2.") and "oob" in r["capabilities"]
    ),
    "qmp.Run(query-status)": returns(lambda r: r["return"]["status"] == "running"),
    "qmp.Events(STOP)": returns(lambda r: r == "STOP"),
    "qmp.Events(RESUME)": returns(lambda r: r == "RESUME"),
    "qmp.RunWithFile(getfd)": returns(lambda r: r == {"return": {}}),
    "qmp.Run(closefd)": returns(lambda r: r == {"return": {}}),
    "qmp.Disconnect": returns(),
    # raw.Monitor
    "raw.QueryVersion": returns(lambda r: (r["qemu"]["major"], r["qemu"]["minor"]) == (7, 2)),
    "raw.QueryStatus": returns(lambda r: r == {"status": "running", "running": True}),
    "raw.QueryName": returns(lambda r: r == {"name": MACHINE_NAME}),
    "raw.QueryUUID": returns(lambda r: r == {"UUID": ZERO_UUID}),  # no -uuid given
    "raw.QueryTarget": returns(lambda r: r == {"arch": "x86_64"}),
    "raw.QueryKVM": returns(lambda r: r["enabled"] is False),  # TCG
    "raw.QueryCommands": returns(lambda count: count > 0),
    "raw.QueryChardev": returns(lambda count: count >= 1),  # the QMP socket's
    "raw.Stop": returns(),
    "raw.QueryStatus(after Stop)": returns(lambda r: r == "paused"),
    "raw.Cont": returns(),
    "raw.Getfd(no fd)": fails_with("No file descriptor supplied via SCM_RIGHTS"),
    # hypervisor.Hypervisor over a SocketDriver, and qemu.Domain
    "hypervisor.DomainNames": returns(lambda names: len(names) == 1),
    "hypervisor.Domain": returns(),
    "Domain.Status": returns(lambda r: r == "StatusRunning"),
    "Domain.Version": returns(lambda r: r.startswith("7.2.")),
    "Domain.PackageVersion": returns(lambda r: isinstance(r, str)),
    "Domain.Commands": returns(lambda count: count > 0),
    "Domain.Supported(getfd)": returns(lambda r: r is True),
    "Domain.BlockDevices": returns(lambda r: r == []),  # -nodefaults: no drives
    "Domain.BlockJobs": returns(lambda r: r == []),
    "Domain.BlockStats": returns(lambda r: r == []),
    "Domain.PCIDevices": returns(lambda count: isinstance(count, int)),
    # go-qemu still calls query-cpus, which QEMU removed in 6.0.
    "Domain.CPUs": fails_with("The command query-cpus has not been found"),
    "Domain.Events(RESET)": returns(lambda r: r == "RESET"),
    "Domain.Close": returns(),
}

QMONITOR_NOT_YET: dict[str, str] = {}
"""Calls qmonitor does not answer as QEMU does yet, and why. Remove an entry when it passes."""


def server_command(server: str, socket: str, state_dir: Path) -> list[str]:
    """How each server is started: QMP on ``socket``, no disks, no display."""
    arguments = [
        *["-machine", "pc", "-accel", "tcg", "-m", "64", "-name", MACHINE_NAME],
        *["-display", "none", "-nodefaults", "-qmp", f"unix:{socket},server=on,wait=off"],
    ]
    if server == "qemu":
        return [QEMU_BINARY, *arguments]
    # The stand-in, with QEMU's very command line (and where to keep snapshots).
    standin = str(Path(sys.executable).parent / "qmonitor-system-x86_64")
    return [standin, *arguments, "--state-dir", str(state_dir)]


@pytest.fixture(scope="session")
def goqemu_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/go/goqemu_probe, built in GOPATH mode against Debian's go-qemu.

    CGO is off (nothing here needs C, and a machine installed with --no-install-recommends has
    no C compiler); Go's own build cache (GOCACHE, keyed by the sources) makes rebuilds take
    ~0.1 s instead of ~4 s.
    """
    binary = tmp_path_factory.mktemp("go") / "goqemu_probe"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOPROXY": "off"}
    env["CGO_ENABLED"] = "0"
    build = subprocess.run(
        ["go", "build", "-o", str(binary), str(PROBE_SOURCE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    return binary


async def _probe(
    probe: Path, server: str, directory: Path, *, faults: Path | None = None
) -> tuple[str, str]:
    """Run the probe against ``server``; with ``faults``, the stand-in injects them
    (``--faults``) and the probe makes its ``-faults`` calls."""
    socket = str(directory / "qmp.sock")
    command = server_command(server, socket, directory)
    probe_command = [str(probe), socket]
    if faults is not None:
        command += ["--faults", str(faults)]
        probe_command = [str(probe), "-faults", socket]
    async with start_server(command, socket, stderr_path=str(directory / "server.err")):
        process = await asyncio.create_subprocess_exec(
            *probe_command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    return stdout.decode(), stderr.decode()


@pytest.fixture(scope="module")
def probe_output(goqemu_probe: Path) -> ProbeOutput:
    """``probe_output(server)``: one run of the probe against ``server``, made on first use:
    ``lines`` by call, and the probe's ``stderr``."""
    runs: dict[str, dict[str, Any]] = {}

    def run(server: str) -> dict[str, Any]:
        if server not in runs:
            # A short directory: unix socket paths are limited to 107 bytes.
            with tempfile.TemporaryDirectory(prefix="qm-go-") as directory:
                stdout, stderr = asyncio.run(_probe(goqemu_probe, server, Path(directory)))
            lines = {line["call"]: line for line in map(json.loads, stdout.splitlines())}
            runs[server] = {"lines": lines, "stderr": stderr}
        return runs[server]

    return run


def _cases() -> list[Any]:
    cases = []
    for server in ("qemu", "qmonitor"):
        for call in CHECKS:
            marks: list[pytest.MarkDecorator] = []
            if server == "qemu":
                marks.append(pytest.mark.qemu)
            elif call in QMONITOR_NOT_YET:
                marks.append(pytest.mark.xfail(reason=QMONITOR_NOT_YET[call], strict=True))
            cases.append(pytest.param(server, call, id=f"{server}-{call}", marks=marks))
    return cases


@pytest.mark.parametrize(("server", "call"), _cases())
def test_go_qemu_call(probe_output: ProbeOutput, server: str, call: str) -> None:
    output = probe_output(server)
    line = output["lines"].get(call)
    assert line is not None, f"{call} was not reported; the probe said: {output['stderr']}"
    CHECKS[call](line)


@pytest.mark.parametrize("server", [pytest.param("qemu", marks=pytest.mark.qemu), "qmonitor"])
def test_the_probe_reports_every_checked_call_and_no_other(
    probe_output: ProbeOutput, server: str
) -> None:
    """A probe that stops half-way, or a call made but left unchecked, shows here."""
    output = probe_output(server)
    assert set(output["lines"]) == set(CHECKS), output["stderr"]


INJECTED_FAULTS = {
    "faults": [
        {
            "command": "query-status",
            "action": "error",
            "class": "DeviceNotFound",
            "desc": "injected: no status today",
            "times": 1,
        },
        {"command": "stop", "action": "disconnect", "when": "before-reply"},
    ]
}


def test_go_qemu_meets_injected_faults(goqemu_probe: Path) -> None:
    """Issue 7: faults seen from go-qemu. The stand-in, started with QEMU's command line and
    ``--faults``, fails raw.Monitor's first ``query-status`` and drops the connection at
    ``stop``'s reply; the probe prints what go-qemu makes of each.

    go-qemu hands a QMP error over as ``errors.New(desc)`` (qmp/qmp.go, ``response.Err``):
    the desc comes through exactly, the class (here not GenericError) does not come through at
    all, so only the desc can be checked from Go; tests/test_faults.py checks the class from
    ``qemu.qmp``. A connection closed before the reply surfaces as ``encoding/json``'s error
    on the empty reply go-qemu's reader hands over when its stream ends (qmp/socket.go,
    ``listen`` and ``RunWithFile``); the next call fails writing to the closed socket; the
    event stream ends, after the STOP the command sent before its reply.
    """
    with tempfile.TemporaryDirectory(prefix="qm-go-") as directory:
        faults = Path(directory) / "faults.json"
        faults.write_text(json.dumps(INJECTED_FAULTS))
        stdout, stderr = asyncio.run(
            _probe(goqemu_probe, "qmonitor", Path(directory), faults=faults)
        )
        socket = str(Path(directory) / "qmp.sock")
        server_log = (Path(directory) / "server.err").read_text()
    lines = {line.pop("call"): line for line in map(json.loads, stdout.splitlines())}
    assert lines == {
        "faults.QueryStatus(error)": {
            "ok": False,
            "error": "injected: no status today",
            "type": "*errors.errorString",
        },
        "faults.QueryStatus(again)": {"ok": True, "result": "running"},
        "faults.Stop(disconnect)": {
            "ok": False,
            "error": "unexpected end of JSON input",
            "type": "*json.SyntaxError",
        },
        "faults.Cont(after disconnect)": {
            "ok": False,
            "error": f"write unix @->{socket}: write: broken pipe",
            "type": "*net.OpError",
        },
        "faults.Events(closed)": {"ok": True, "result": ["STOP"]},
    }, stderr
    assert "fault rule 1 fired: error on query-status" in server_log
    assert "fault rule 2 fired: disconnect on stop" in server_log


def test_every_expected_failure_names_a_checked_call() -> None:
    assert set(QMONITOR_NOT_YET) <= set(CHECKS)


def test_the_probe_is_gofmt_clean() -> None:
    """The Go side keeps Go's one format, as ruff keeps the Python side's."""
    result = subprocess.run(
        ["gofmt", "-l", str(PROBE_SOURCE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
