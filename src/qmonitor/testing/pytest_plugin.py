"""The pytest plugin: a QMP test double (or real QEMU) per test, as the fixture ``vm``.

Registered through the ``pytest11`` entry point, so installing qmonitor is enough. A test asks
for ``vm`` (one machine, options from ``@pytest.mark.qmonitor_vm(...)``) or ``vm_factory``
(``vm_factory(**options)``, as many as it needs); each is a process with a QMP and a human
monitor on unix sockets in a directory of its own, stopped (SIGTERM, then SIGKILL) and removed
at teardown. ``--qemu-binary PATH`` starts the real QEMU instead, with the same monitor options
(``-machine none -display none -nodefaults -qmp unix:P,server=on,wait=off -monitor
unix:H,server=on,wait=off -name N``), so one suite checks a client against the double and
against the real thing. docs/TESTING.md is the tutorial.

A session that never uses the fixtures pays only for importing this module: it imports the
standard library modules pytest already has, and nothing of qmonitor's server; there is no
autouse fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from qmonitor.testing import listening_unix_paths

if TYPE_CHECKING:
    import asyncio

    from qemu.qmp import QMPClient

DOUBLE_SCRIPT = "qmonitor-system-x86_64"
"""The double's console script, which takes QEMU's own command line."""
STANDIN_ENTRY_POINT = (
    "import sys; sys.argv[0] = 'qmonitor-system-x86_64'; "
    "from qmonitor.standin import main; sys.exit(main())"
)
"""What the console script runs, for ``python -c`` where the script is not installed: as the
script, so that its messages name it and its process ends as the script's does."""
STARTUP_TIMEOUT = 30.0
"""Seconds a machine has to open its monitor sockets (QEMU takes longest on a loaded host)."""
STOP_TIMEOUT = 10.0
"""Seconds a machine has to exit after SIGTERM before it is killed."""
POLL_INTERVAL = 0.001
"""Seconds between two looks at a starting machine's sockets. A look is a ``stat`` of each
socket file, and a read of ``/proc/net/unix`` only once both exist, so looking often costs the
machine that is starting next to nothing; the machine's exit ends the wait at once."""
SOCKET_PATH_MAX = 107
"""Bytes a unix socket's path may have: ``sun_path`` holds 108 (Linux ``sys/un.h``) and QEMU
keeps one for the terminating NUL (``unix_listen_saddr`` in util/qemu-sockets.c refuses a
longer path as "UNIX socket path '...' is too long")."""
OPTION_NAMES = ("name", "memory", "paused", "faults", "extra_args")

_factories_key = pytest.StashKey[list["VMFactory"]]()


@dataclass(frozen=True)
class VMOptions:
    """What a test asks of its machine: ``vm_factory(**options)`` or the marker's keywords."""

    name: str | None = None
    """``-name``; by default ``vm0``, ``vm1``... in the order the test made them."""
    memory: str | None = None
    """``-m``: guest RAM, QEMU syntax (``64M``, ``1G``)."""
    paused: bool = False
    """``-S``: start paused (``query-status`` says ``prelaunch``)."""
    faults: str | os.PathLike[str] | Mapping[str, Any] | None = None
    """Faults to inject (the double only): a ``--faults`` file, or its content as a dict."""
    extra_args: tuple[str, ...] = ()
    """More command-line arguments, given as they are to the double or to QEMU."""

    @classmethod
    def from_keywords(cls, where: str, keywords: Mapping[str, Any]) -> VMOptions:
        """The options from keyword arguments; an unknown one is a usage error naming it."""
        unknown = sorted(set(keywords) - set(OPTION_NAMES))
        if unknown:
            known = ", ".join(OPTION_NAMES)
            raise pytest.UsageError(f"{where}: unknown option {unknown[0]!r} (known: {known})")
        options = dict(keywords)
        if "extra_args" in options:
            options["extra_args"] = tuple(options["extra_args"])
        return cls(**options)


@dataclass
class VM:
    """One running machine: its monitor sockets, its process, and clients made on request."""

    name: str
    """The machine's ``-name`` (and the name of its ``qemu.qmp`` clients' loggers)."""
    qmp_socket: str
    """Path of the QMP unix socket (listening when the fixture hands the machine over)."""
    hmp_socket: str
    """Path of the human monitor's unix socket."""
    directory: str
    """The machine's own directory: sockets, faults file, its stderr, its state."""
    command: list[str]
    """The command line it was started with."""
    is_double: bool
    """True for qmonitor, False for the real QEMU of ``--qemu-binary``."""
    process: subprocess.Popen[bytes]
    """The machine's process (``vm.process.poll()`` says whether it still runs)."""
    _clients: list[tuple[QMPClient, asyncio.AbstractEventLoop]] = field(default_factory=list)
    _stop_requested: bool = False  # SIGTERM sent, by stop() or by teardown
    _stopped_during_test: bool = False  # stop() was called by the test

    @property
    def pid(self) -> int:
        """The machine's process id."""
        return self.process.pid

    @property
    def stderr_path(self) -> str:
        """Where the machine's standard error goes (kept until teardown)."""
        return os.path.join(self.directory, "stderr.log")

    async def qmp(self) -> QMPClient:
        """A ``qemu.qmp`` client connected to the QMP socket (capabilities negotiated);
        disconnected at teardown if the test left it connected.

        QEMU serves one QMP client per ``-qmp`` at a time: a second client connects once the
        first has disconnected.
        """
        import asyncio

        from qemu.qmp import QMPClient

        client = QMPClient(self.name)
        await client.connect(self.qmp_socket)
        self._clients.append((client, asyncio.get_running_loop()))
        return client

    def close_clients(self) -> None:
        """Disconnect the clients :meth:`qmp` made, on the loop they were made on if it is
        still open and not running (a loop that is gone took its connections with it)."""
        clients, self._clients = self._clients, []
        for client, loop in clients:
            if not loop.is_closed() and not loop.is_running():
                # disconnect() raises what ended the connection, if something did (the
                # machine stopped, say): the test saw that already, teardown has nothing to add.
                with contextlib.suppress(Exception):
                    loop.run_until_complete(client.disconnect())

    def stop(self) -> int:
        """Stop the machine (SIGTERM, SIGKILL after :data:`STOP_TIMEOUT` s); its exit status.

        A test may call it to make the machine vanish under its client; teardown calls it too.
        """
        self._stopped_during_test = True
        self._request_stop()
        return self._wait_stopped()

    def _request_stop(self) -> None:
        """Send SIGTERM, once, if the machine runs: QEMU's (and the stand-in's) orderly
        shutdown, ``termsig_handler`` in os-posix.c."""
        if not self._stop_requested and self.process.poll() is None:
            self._stop_requested = True
            self.process.send_signal(signal.SIGTERM)

    def _wait_stopped(self) -> int:
        """Wait for the exit (SIGKILL after :data:`STOP_TIMEOUT` s) and return its status."""
        if not wait_for_exit(self.process, STOP_TIMEOUT):
            self.process.kill()
            self.process.wait()
        return self.process.returncode

    def state(self) -> str:
        """What became of the process, in words, for a failing test's report."""
        status = self.process.poll()
        if status is None:
            return "running"
        if status < 0:
            try:
                how = f"killed by {signal.Signals(-status).name}"
            except ValueError:
                how = f"killed by signal {-status}"
        else:
            how = f"exited with status {status}"
        return f"{how} after vm.stop()" if self._stopped_during_test else f"{how} during the test"


def wait_for_exit(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``process`` to exit and reap it; whether it did.

    A pidfd (Linux 5.3) is readable the moment the process exits. ``Popen.wait(timeout)``
    polls instead, with sleeps that double up to 50 ms, which on its own would add up to half
    of a machine's exit time to every test's teardown.
    """
    if process.poll() is not None:
        return True
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    return process.poll() is not None


def machine_directory() -> str:
    """A new directory for a machine's sockets and files: in ``TMPDIR``, as any temporary
    directory, unless its socket paths would be longer than :data:`SOCKET_PATH_MAX` there
    (pytest's own temporary directories often are): then in ``/tmp``, where they fit."""
    directory = tempfile.mkdtemp(prefix="qmvm-")
    if len(os.fsencode(os.path.join(directory, "qmp.sock"))) <= SOCKET_PATH_MAX:
        return directory
    os.rmdir(directory)
    return tempfile.mkdtemp(prefix="qmvm-", dir="/tmp")


def _find_double_script() -> str | None:
    """The ``qmonitor-system-x86_64`` console script of this Python (beside its interpreter,
    where pip puts it in a virtual environment) or on ``PATH``."""
    beside = Path(sys.executable).with_name(DOUBLE_SCRIPT)
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(DOUBLE_SCRIPT)


def machine_command(
    options: VMOptions,
    name: str,
    directory: str,
    qmp_socket: str,
    hmp_socket: str,
    qemu_binary: str | None,
) -> list[str]:
    """The command line for a machine: real QEMU's with ``qemu_binary``, else the double's.

    The double is the stand-in, ``qmonitor-system-x86_64``, given QEMU's very arguments (and
    ``--faults FILE``, its own option, for faults), so that the double and QEMU differ only
    in the program. Where the console script is not installed (a source checkout on
    ``PYTHONPATH``), this Python runs the same entry point.
    """
    monitors = [
        "-qmp",
        f"unix:{qmp_socket},server=on,wait=off",
        "-monitor",
        f"unix:{hmp_socket},server=on,wait=off",
        "-name",
        name,
    ]
    machine = (["-S"] if options.paused else []) + (
        ["-m", options.memory] if options.memory else []
    )
    qemu_args = ["-machine", "none", "-display", "none", "-nodefaults", *monitors, *machine]
    if qemu_binary is not None:
        return [qemu_binary, *qemu_args, *options.extra_args]
    script = _find_double_script()
    program = [script] if script is not None else [sys.executable, "-c", STANDIN_ENTRY_POINT]
    own = [] if options.faults is None else ["--faults", _faults_file(options.faults, directory)]
    return [*program, *qemu_args, *own, *options.extra_args]


def _faults_file(faults: str | os.PathLike[str] | Mapping[str, Any], directory: str) -> str:
    if isinstance(faults, Mapping):
        path = os.path.join(directory, "faults.json")
        Path(path).write_text(json.dumps(faults))
        return path
    return os.fspath(faults)


def _wait_listening(
    process: subprocess.Popen[bytes], program: str, paths: list[str], stderr: str
) -> None:
    """Return once every path is a listening socket; fail with the machine's stderr if it
    exits or takes longer than :data:`STARTUP_TIMEOUT`."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if all(os.path.exists(path) for path in paths):
            listening = listening_unix_paths()
            if listening is None or all(path in listening for path in paths):
                return
        exited = wait_for_exit(process, POLL_INTERVAL)
        if exited or time.monotonic() > deadline:
            why = f"exited with {process.returncode}" if exited else "timed out"
            output = Path(stderr).read_text(errors="replace").strip()
            said = f": {output}" if output else ", nothing on standard error"
            pytest.fail(f"{program} did not start ({why}){said}", pytrace=False)


class VMFactory:
    """``vm_factory(**options)``: start a machine (:class:`VMOptions`) and return its
    :class:`VM` once its monitors listen; every machine is stopped and removed at teardown."""

    def __init__(self, qemu_binary: str | None) -> None:
        self.qemu_binary = qemu_binary
        self.machines: list[VM] = []

    def __call__(self, **options: Any) -> VM:
        """Start a machine with these :class:`VMOptions` (an unknown one is a usage error)."""
        return self.start(VMOptions.from_keywords("vm_factory()", options))

    def start(self, options: VMOptions) -> VM:
        """Start a machine with ``options``; return it once its QMP and human monitor sockets
        listen. A test that asks real QEMU for faults is skipped."""
        if options.faults is not None and self.qemu_binary is not None:
            pytest.skip("faults need the qmonitor double, and this run is against real QEMU")
        name = options.name or f"vm{len(self.machines)}"
        directory = machine_directory()
        qmp_socket = os.path.join(directory, "qmp.sock")
        hmp_socket = os.path.join(directory, "hmp.sock")
        command = machine_command(
            options, name, directory, qmp_socket, hmp_socket, self.qemu_binary
        )
        stderr_path = os.path.join(directory, "stderr.log")
        # State the double keeps by default ($XDG_STATE_HOME) stays in the directory too.
        environment = {**os.environ, "XDG_STATE_HOME": directory}
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=directory,
                env=environment,
            )
        machine = VM(
            name, qmp_socket, hmp_socket, directory, command, self.qemu_binary is None, process
        )
        self.machines.append(machine)
        _wait_listening(process, command[0], [qmp_socket, hmp_socket], stderr_path)
        return machine

    def close(self) -> None:
        """Stop every machine and remove its directory.

        Every machine is told to stop before any is waited for, so that a test's machines
        shut down side by side.
        """
        machines, self.machines = self.machines, []
        for machine in machines:
            machine.close_clients()
        for machine in machines:
            machine._request_stop()
        for machine in machines:
            machine._wait_stopped()
            shutil.rmtree(machine.directory, ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qmonitor", "qmonitor QMP test double")
    group.addoption(
        "--qemu-binary",
        metavar="PATH",
        default=None,
        help="run the vm fixtures on this real QEMU (e.g. /usr/bin/qemu-system-x86_64) "
        "instead of the qmonitor double",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "qmonitor_vm(name=None, memory=None, paused=False, faults=None, extra_args=()): "
        "options of the machine the vm fixture starts",
    )
    binary = config.getoption("--qemu-binary", None)
    if binary is not None and shutil.which(binary) is None:
        raise pytest.UsageError(f"--qemu-binary: {binary} is not an executable")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Disconnect the test's clients before any fixture is torn down: an asyncio plugin's
    event loop, which they live on, may be a fixture torn down before ``vm_factory``."""
    for factory in item.stash.get(_factories_key, []):
        for machine in factory.machines:
            machine.close_clients()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test's report gets a section per machine: what became of its process, and
    its standard error (which teardown removes with the machine's directory). A machine that
    died under the test is otherwise seen only as a client's lost connection."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed or call.when == "setup":  # a machine that fails to start says why
        return
    for factory in item.stash.get(_factories_key, []):
        for machine in factory.machines:
            program = os.path.basename(machine.command[0])
            title = f"{machine.name} ({program}, pid {machine.pid}): {machine.state()}"
            output = Path(machine.stderr_path).read_text(errors="replace")
            report.sections.append((title, output or "(nothing on standard error)\n"))


@pytest.fixture
def vm_factory(request: pytest.FixtureRequest) -> Iterator[VMFactory]:
    """Start machines with ``vm_factory(**options)``; all are stopped and removed after."""
    factory = VMFactory(request.config.getoption("--qemu-binary"))
    request.node.stash.setdefault(_factories_key, []).append(factory)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def vm(request: pytest.FixtureRequest, vm_factory: VMFactory) -> VM:
    """One machine, with the options of the test's ``qmonitor_vm`` marker."""
    marker = request.node.get_closest_marker("qmonitor_vm")
    keywords = dict(marker.kwargs) if marker is not None else {}
    return vm_factory.start(VMOptions.from_keywords("@pytest.mark.qmonitor_vm", keywords))
