"""``qmonitor-system-x86_64`` launched as the tools that launch QEMU launch it.

QEMU's ``QEMUMachine`` (python/qemu/machine/machine.py) in its two modes, with the client QEMU's
own Python code uses (``qemu.qmp.legacy.QEMUMonitorProtocol``); libvirt's inherited listening
socket; ``-pidfile``/``-daemonize``; ``-version``; ``qmp-shell -H``. The same command lines run
on real QEMU 7.2 (tests marked ``qemu``), and the answers must be the same.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ConnectError
from qemu.qmp.legacy import QEMUMonitorProtocol

import qmonitor
from qmonitor.server.monitor import DEFAULT_VERSION

STANDIN = str(Path(sys.executable).parent / "qmonitor-system-x86_64")
QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"

BINARIES = [
    pytest.param(QEMU, id="qemu", marks=pytest.mark.qemu),
    pytest.param(STANDIN, id="qmonitor"),
]

QUERIES = ("query-status", "query-name", "query-uuid", "query-cpus-fast")


def masked(reply: Any) -> Any:
    """A reply without what differs between two processes: host thread ids."""
    if isinstance(reply, list):
        return [masked(item) for item in reply]
    if isinstance(reply, dict):
        return {key: "*" if key == "thread-id" else masked(value) for key, value in reply.items()}
    return reply


class Launched:
    """One emulator process; ended (and reaped) by :meth:`end`."""

    def __init__(self, argv: list[str], pass_fds: tuple[int, ...] = ()) -> None:
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=pass_fds,
        )

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture
def launched() -> Iterator[list[Launched]]:
    started: list[Launched] = []
    yield started
    for item in started:
        item.end()


def connect_when_listening(path: str, emulator: Launched) -> QEMUMonitorProtocol:
    """Connect once the emulator listens on ``path``: its stderr closing means it died."""
    while True:
        qmp = QEMUMonitorProtocol(path)
        try:
            qmp.connect(negotiate=True)
            return qmp
        except ConnectError:
            qmp.close()
            assert emulator.process.poll() is None
            select.select([], [], [], 0.01)  # a retry's pace, not a synchronisation


def queries(qmp: QEMUMonitorProtocol) -> dict[str, Any]:
    return {name: masked(qmp.cmd_raw(name)) for name in QUERIES}


def quit_and_wait(qmp: QEMUMonitorProtocol, launched: Launched) -> None:
    """``quit``; the reply may or may not come before the connection closes (QEMU's own
    ``QEMUMachine.shutdown`` does not rely on it either); the exit status says it worked."""
    with contextlib.suppress(EOFError):
        qmp.cmd("quit")
    with contextlib.suppress(EOFError):  # as machine.py's _close_qmp_connection after quit
        qmp.close()
    assert launched.process.wait(timeout=30) == 0


@pytest.mark.parametrize("binary", BINARIES)
def test_shutdown_comes_before_the_reply_to_quit(
    binary: str, short_tmp: Path, launched: list[Launched]
) -> None:
    """QEMU 7.2 sends ``SHUTDOWN`` (``host-qmp-quit``) and then ``quit``'s reply, then closes:
    ``qmp_quit`` only requests the shutdown, the main loop sends the event before the QMP
    dispatcher's reply goes out (softmmu/runstate.c ``main_loop_should_exit``). The bytes on
    the socket, timestamps masked, are the same for both."""
    path = str(short_tmp / "qmp.sock")
    emulator = Launched([binary, "-machine", "none", "-display", "none", "-nodefaults",
                         "-qmp", f"unix:{path},server=on,wait=off"])  # fmt: skip
    launched.append(emulator)
    connect_when_listening(path, emulator).close()
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(path)
        # Nothing after quit's closing brace: QEMU reads a byte at a time and exits once that
        # brace is read, so a byte left unread would reset the connection.
        client.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "quit", "id": 7}')
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := client.recv(4096):
                received += chunk
    lines = re.sub(rb'"seconds": [0-9]+, "microseconds": [0-9]+', b"T", received).splitlines()
    assert lines[1:] == [
        b'{"return": {}}',
        b'{"timestamp": {T}, "event": "SHUTDOWN", "data": {"guest": false, '
        b'"reason": "host-qmp-quit"}}',
        b'{"return": {}, "id": 7}',
    ]
    assert emulator.process.wait(timeout=30) == 0


@pytest.mark.qemu
def test_human_monitor_on_stdio_as_qemu() -> None:
    """``-monitor stdio`` (not a terminal): the same bytes out as QEMU's for the same lines in,
    up to ``quit``; a stdio chardev never waits for a client (it once crashed the stand-in)."""
    outputs = []
    for binary in (QEMU, STANDIN):
        argv = [binary, "-machine", "none", "-display", "none", "-nodefaults", "-S"]
        result = subprocess.run(
            [*argv, "-monitor", "stdio"],
            input=b"info status\ninfo name\nquit\n",
            capture_output=True,
            timeout=30,
        )
        outputs.append((result.returncode, result.stdout))
    assert outputs[1] == outputs[0]
    assert b"\r\nVM status: paused (prelaunch)\r\n(qemu) " in outputs[0][1]


# -- QEMUMachine ---------------------------------------------------------------------------------


def qemu_machine_path_mode(
    binary: str, directory: Path, launched: list[Launched], *extra: str
) -> dict[str, Any]:
    """QEMUMachine with a socket path: it listens, QEMU connects (``server=off``), then it
    accepts and negotiates (machine.py ``_pre_launch``/``_post_launch``)."""
    path = str(directory / "mon.sock")
    qmp = QEMUMonitorProtocol(path, server=True)
    argv = [binary, "-display", "none", "-vga", "none", *extra]
    argv += ["-chardev", f"socket,id=mon,path={path}", "-mon", "chardev=mon,mode=control"]
    emulator = Launched(argv)
    launched.append(emulator)
    greeting = qmp.accept(timeout=30)
    answers = {"greeting": greeting["QMP"]["version"]["qemu"], **queries(qmp)}
    quit_and_wait(qmp, emulator)
    return answers


def qemu_machine_socketpair_mode(
    binary: str, launched: list[Launched], *extra: str
) -> dict[str, Any]:
    """Newer QEMUMachine: one end of a socketpair as ``-chardev socket,id=mon,fd=N``."""
    ours, theirs = socket.socketpair()
    argv = [binary, "-display", "none", "-vga", "none", *extra]
    argv += [
        "-chardev",
        f"socket,id=mon,fd={theirs.fileno()}",
        "-mon",
        "chardev=mon,mode=control",
    ]
    emulator = Launched(argv, pass_fds=(theirs.fileno(),))
    launched.append(emulator)
    theirs.close()
    qmp = QEMUMonitorProtocol(ours)
    greeting = qmp.connect(negotiate=True)
    assert greeting is not None
    answers = {"greeting": greeting["QMP"]["version"]["qemu"], **queries(qmp)}
    quit_and_wait(qmp, emulator)
    return answers


SMP_AND_NAME = ("-machine", "pc", "-smp", "2", "-m", "64", "-name", "guest=vm7")
WITH_UUID = ("-uuid", "12345678-1234-5678-9abc-def012345678")


@pytest.mark.parametrize("binary", BINARIES)
def test_qemu_machine_path_mode(binary: str, short_tmp: Path, launched: list[Launched]) -> None:
    answers = qemu_machine_path_mode(binary, short_tmp, launched, *SMP_AND_NAME)
    assert answers["query-name"] == {"return": {"name": "vm7"}}
    assert answers["query-uuid"] == {"return": {"UUID": "00000000-0000-0000-0000-000000000000"}}
    assert answers["query-status"] == {
        "return": {"status": "running", "singlestep": False, "running": True}
    }
    assert [cpu["cpu-index"] for cpu in answers["query-cpus-fast"]["return"]] == [0, 1]


@pytest.mark.parametrize("binary", BINARIES)
def test_qemu_machine_socketpair_mode(binary: str, launched: list[Launched]) -> None:
    answers = qemu_machine_socketpair_mode(binary, launched, "-S", *WITH_UUID)
    assert answers["query-name"] == {"return": {}}
    assert answers["query-uuid"] == {"return": {"UUID": WITH_UUID[1]}}
    assert answers["query-status"]["return"]["status"] == "prelaunch"


@pytest.mark.qemu
def test_qemu_machine_answers_match_qemu(short_tmp: Path, launched: list[Launched]) -> None:
    """The same command lines, the same answers (thread ids masked)."""
    for mode_extra in (SMP_AND_NAME, ("-S", *WITH_UUID, "-machine", "none")):
        qemu = qemu_machine_path_mode(QEMU, short_tmp, launched, *mode_extra)
        ours = qemu_machine_path_mode(STANDIN, short_tmp, launched, *mode_extra)
        qemu["greeting"]["micro"] = ours["greeting"]["micro"]  # 7.2.N: Debian's stable updates
        assert ours == qemu
        qemu = qemu_machine_socketpair_mode(QEMU, launched, *mode_extra)
        ours = qemu_machine_socketpair_mode(STANDIN, launched, *mode_extra)
        qemu["greeting"]["micro"] = ours["greeting"]["micro"]
        assert ours == qemu


# -- libvirt's inherited listening socket ------------------------------------------------------


@pytest.mark.parametrize("binary", BINARIES)
def test_inherited_listening_socket(binary: str, short_tmp: Path, launched: list[Launched]) -> None:
    """libvirt binds and listens, then passes the socket: ``fd=N,server=on,wait=off``."""
    path = str(short_tmp / "monitor.sock")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    listening.listen()
    fd = listening.fileno()
    argv = [binary, "-machine", "none", "-display", "none", "-nodefaults", "-S"]
    argv += ["-chardev", f"socket,id=charmonitor,fd={fd},server=on,wait=off"]
    argv += ["-mon", "chardev=charmonitor,id=monitor,mode=control"]
    emulator = Launched(argv, pass_fds=(fd,))
    launched.append(emulator)
    listening.close()
    qmp = QEMUMonitorProtocol(path)
    qmp.connect(negotiate=True)
    assert qmp.cmd_raw("query-status")["return"]["status"] == "prelaunch"
    yank = qmp.cmd_raw("query-yank")["return"]
    assert {"type": "chardev", "id": "charmonitor"} in yank
    quit_and_wait(qmp, emulator)
    assert not os.path.exists(path)  # removed at exit, though libvirt bound it (as QEMU does)


def test_inherited_fd_for_the_human_monitor(launched: list[Launched]) -> None:
    """``mode=readline`` on a connected inherited socket: QEMU's banner, then a command."""
    ours, theirs = socket.socketpair()
    argv = [STANDIN, "-machine", "none", "-nodefaults", "-S"]
    argv += ["-chardev", f"socket,id=hmp,fd={theirs.fileno()}", "-mon", "chardev=hmp"]
    emulator = Launched(argv, pass_fds=(theirs.fileno(),))
    launched.append(emulator)
    theirs.close()
    with ours:
        received = b""
        while b"(qemu) " not in received:
            received += ours.recv(4096)
        assert received.startswith(b"QEMU 7.2.")
        ours.sendall(b"info status\r\n")
        while b"VM status: paused (prelaunch)\r\n" not in received:
            received += ours.recv(4096)


# -- the command line itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        ["-xyz"],
        ["-m", "64x"],
        ["-machine"],
        ["-mach", "none"],
        ["-name", "guest=a,bogus=1"],
        ["-display", "none", "-smp", "2,maxcpus=1"],
    ],
)
@pytest.mark.qemu
def test_a_bad_command_line_is_qemus_error(arguments: list[str]) -> None:
    qemu = subprocess.run([QEMU, *arguments], capture_output=True, timeout=30)
    ours = subprocess.run([STANDIN, *arguments], capture_output=True, timeout=30)
    assert ours.returncode == qemu.returncode == 1
    assert ours.stderr.decode().replace("qmonitor-system-x86_64", "qemu-system-x86_64") == (
        qemu.stderr.decode()
    )


def test_version_is_qemus_format() -> None:
    result = subprocess.run([STANDIN, "-version"], capture_output=True, timeout=30)
    assert result.returncode == 0
    first, second = result.stdout.decode().splitlines()
    # QEMU prints QEMU_FULL_VERSION, "MAJOR.MINOR.MICRO (PKGVERSION)", the version and package
    # query-version and the greeting give ("7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)").
    version = DEFAULT_VERSION["qemu"]
    triple = f"{version['major']}.{version['minor']}.{version['micro']}"
    assert first == f"QEMU emulator version {triple} ({DEFAULT_VERSION['package']})"
    assert DEFAULT_VERSION["package"] == f"qmonitor {qmonitor.__version__}"
    assert second == "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers"


# -- -pidfile and -daemonize ---------------------------------------------------------------------


@pytest.mark.parametrize("binary", BINARIES)
def test_daemonize_returns_once_the_monitor_listens(binary: str, short_tmp: Path) -> None:
    """libvirt's probe: the parent exits 0 when QMP listens; the pidfile names the daemon,
    which removes it when it exits."""
    path = str(short_tmp / "qmp.sock")
    pidfile = short_tmp / "qemu.pid"
    argv = [binary, "-S", "-no-user-config", "-nodefaults", "-nographic"]
    argv += ["-machine", "none,accel=tcg", "-qmp", f"unix:{path},server=on,wait=off"]
    argv += ["-pidfile", str(pidfile), "-daemonize"]
    parent = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert (parent.returncode, parent.stderr) == (0, b"")
    pid = int(pidfile.read_text())
    try:
        qmp = QEMUMonitorProtocol(path)
        qmp.connect(negotiate=True)
        assert qmp.cmd_raw("query-status")["return"]["status"] == "prelaunch"
        with contextlib.suppress(EOFError):
            qmp.cmd("quit")
        with contextlib.suppress(EOFError):
            qmp.close()
        while True:  # the daemon is not our child: wait until it is gone
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if not pidfile.exists():
                break
        while pidfile.exists():
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split()[2] == "Z":
                    break
        assert not pidfile.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("binary", BINARIES)
def test_a_locked_pidfile_is_refused(binary: str, short_tmp: Path) -> None:
    import fcntl

    pidfile = short_tmp / "qemu.pid"
    with open(pidfile, "w") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)
        result = subprocess.run(
            [binary, "-machine", "none", "-nodefaults", "-pidfile", str(pidfile)],
            capture_output=True,
            timeout=30,
        )
    program = os.path.basename(binary)
    assert (result.returncode, result.stderr.decode()) == (
        1,
        f"{program}: cannot create PID file: Cannot lock pid file: "
        "Resource temporarily unavailable\n",
    )


MISSING_CREDENTIALS = "tls-creds-x509,id=t,dir=/nonexistent/qm-dir,endpoint=server"


@pytest.mark.parametrize("binary", BINARIES)
@pytest.mark.parametrize("daemonize", [False, True], ids=["foreground", "daemonize"])
def test_the_pid_file_is_written_before_the_objects_are_made(
    binary: str, daemonize: bool, short_tmp: Path
) -> None:
    """vl.c qemu_maybe_daemonize() comes before qemu_create_early_backends(): an object that
    cannot be made exits after the pid file was written, and the exit removes it (a stale
    file at that path too); an error of the option loop leaves it alone; a pid file that
    cannot be written is the error reported, not the object's."""
    program = os.path.basename(binary)
    base = [binary, "-machine", "none", "-display", "none", "-nodefaults", "-S"]
    base += ["-daemonize"] if daemonize else []
    pidfile = short_tmp / "qemu.pid"

    def run(*arguments: str) -> tuple[int, str]:
        result = subprocess.run(
            [*base, *arguments], stdin=subprocess.DEVNULL, capture_output=True, timeout=30
        )
        return result.returncode, result.stderr.decode()

    pidfile.write_text("stale\n")
    assert run("-pidfile", str(pidfile), "-object", MISSING_CREDENTIALS) == (
        1,
        f"{program}: Unable to access credentials /nonexistent/qm-dir/ca-cert.pem: "
        "No such file or directory\n",
    )
    assert not pidfile.exists()

    pidfile.write_text("stale\n")
    status, _ = run("-pidfile", str(pidfile), "-object", "iothread,id=i,foo=1")
    assert (status, pidfile.read_text()) == (1, "stale\n")

    nowhere = short_tmp / "missing" / "qemu.pid"
    assert run("-pidfile", str(nowhere), "-object", MISSING_CREDENTIALS) == (
        1,
        f"{program}: cannot create PID file: Could not create '{nowhere}': "
        "No such file or directory\n",
    )


# -- human-monitor-command's cpu-index, and qmp-shell -H ---------------------------------------


@pytest.mark.parametrize("binary", BINARIES)
def test_cpu_index_names_an_existing_cpu(
    binary: str, short_tmp: Path, launched: list[Launched]
) -> None:
    path = str(short_tmp / "qmp.sock")
    argv = [binary, "-machine", "pc", "-smp", "2", "-nodefaults", "-display", "none", "-S"]
    argv += ["-qmp", f"unix:{path},server=on,wait=off"]
    emulator = Launched(argv)
    launched.append(emulator)
    qmp = connect_when_listening(path, emulator)
    hmc = "human-monitor-command"
    reply = qmp.cmd_raw(hmc, {"command-line": "info status", "cpu-index": 1})
    assert reply == {"return": "VM status: paused (prelaunch)\r\n"}
    reply = qmp.cmd_raw(hmc, {"command-line": "info status", "cpu-index": 2})
    assert reply["error"]["desc"] == "Parameter 'cpu-index' expects a CPU number"
    quit_and_wait(qmp, emulator)


def test_qmp_shell_hmp_mode(short_tmp: Path, launched: list[Launched]) -> None:
    """``qmp-shell -H`` sends ``cpu-index: 0`` with every line: it needs CPU 0."""
    qmp_shell = str(Path(sys.executable).parent / "qmp-shell")
    path = str(short_tmp / "qmp.sock")
    argv = [STANDIN, "-nodefaults", "-display", "none", "-S", "-name", "shell"]
    argv += ["-qmp", f"unix:{path},server=on,wait=off"]
    emulator = Launched(argv)
    launched.append(emulator)
    connect_when_listening(path, emulator).close()
    shell = subprocess.run(
        [qmp_shell, "-H", path], input=b"info name\n", capture_output=True, timeout=30
    )
    assert b"shell\r\n" in shell.stdout or b"shell\n" in shell.stdout, shell.stdout


def test_yank_instances_and_dataclasses_are_made_when_first_needed() -> None:
    """A monitor's socket chardev is a yank instance from start-up, registered before the
    greeting; the QAPI classes of the yank union are made only when an instance is asked for,
    and ``query-yank`` then lists it as before. Nothing before the greeting (the monitor, its
    version, its builtins) imports :mod:`dataclasses`."""
    import subprocess
    import sys

    script = (
        "import sys, qmonitor.launch, qmonitor.machine.run, qmonitor.standin\n"
        "from qmonitor import Monitor\n"
        "from qmonitor.server.listen import parse_address\n"
        "monitor = Monitor()\n"
        "monitor.open_chardev(parse_address('unix:/nonexistent/qmp.sock'))\n"
        "print(sorted(name for name in sys.modules if 'yank' in name))\n"
        "print('dataclasses' in sys.modules, monitor.version)\n"
        "print(monitor.yank.instances())\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    assert output == (
        "['qmonitor.core.yank', 'qmonitor.core.yank_keys']\n"
        "False {'qemu': {'major': 7, 'minor': 2, 'micro': 22}, 'package': 'qmonitor 0.1.0'}\n"
        "[YankInstanceChardev(type=<YankInstanceType.CHARDEV: 'chardev'>, id='compat_monitor0')]\n"
    )
