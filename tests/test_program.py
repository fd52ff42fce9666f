"""The ``qmonitor`` program itself: help, option errors, start-up lines, signals and its log.

Every test runs the real program (``python -m qmonitor``) with its default directories moved
into a temporary one (``XDG_RUNTIME_DIR``, ``XDG_STATE_HOME``), and ends every process it
starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import ptyprocess
import pytest

from qmonitor.qmp import stream
from test_machine_processes import Client, Launcher
from test_machine_processes import launcher as launcher  # the fixture

QMONITOR = [sys.executable, "-m", "qmonitor"]


class Home:
    """Where a ``qmonitor run`` started without paths puts its socket and its snapshots."""

    def __init__(self, directory: Path) -> None:
        self.runtime = directory / "run"
        self.state = directory / "state"
        self.runtime.mkdir()
        self.env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_STATE_HOME": str(self.state),
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def default_socket(self, name: str = "vm0") -> Path:
        return self.runtime / "qmonitor" / f"{name}.qmp"

    def run(self, *arguments: str) -> subprocess.CompletedProcess[bytes]:
        """Run ``qmonitor ARGUMENTS`` to its end."""
        return subprocess.run(
            [*QMONITOR, *arguments],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )

    def start(self, *arguments: str) -> tuple[subprocess.Popen[bytes], list[str]]:
        """Start ``qmonitor run ARGUMENTS``; return it and its start-up lines (on stderr)."""
        process = subprocess.Popen(
            [*QMONITOR, "run", *arguments],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.processes.append(process)
        assert process.stderr is not None
        lines = []
        while not lines or not lines[-1].startswith("qmonitor: snapshots in "):
            line = process.stderr.readline().decode()
            assert line, f"qmonitor run ended before it was ready: {lines}"
            lines.append(line.rstrip("\n"))
        return process, lines

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
            if process.stderr is not None:
                process.stderr.close()


@pytest.fixture
def home(short_tmp: Path) -> Iterator[Home]:
    place = Home(short_tmp)
    try:
        yield place
    finally:
        place.stop_all()


# -- help and version --------------------------------------------------------------------------


def test_help_describes_the_program_and_run_its_options(home: Home) -> None:
    top = home.run("--help")
    assert top.returncode == 0
    assert b"QEMU's monitor, rebuilt in Python" in top.stdout
    assert b"argument parsing only" not in top.stdout  # not the module's docstring
    run = home.run("run", "--help")
    assert run.returncode == 0
    text = " ".join(run.stdout.decode().split())
    assert "Run the reference machine" in text
    # QEMU has no -v, and qmonitor run reads QEMU's command line: two dashes, said twice.
    assert "--verbose log sessions (who connects and leaves) and failed commands" in text
    assert "(default 16M; 0: an idle guest)" in text
    assert "examples:" in text


def test_version(home: Home) -> None:
    """The version says which form runs: compiled (setup.py) when the request path's modules
    are extension modules, as they are in the installation ``dev.py test-compiled`` tests."""
    compiled = Path(stream.__file__).suffix == ".so"
    form = b"compiled with mypyc" if compiled else b"pure Python"
    expected = b"qmonitor 0.1.0 (QEMU 7.2.22's monitor; " + form + b")\n"
    for arguments in (["--version"], ["run", "-version"]):
        result = home.run(*arguments)
        assert (result.returncode, result.stdout) == (0, expected)


# -- bad option values: one line, status 1, nothing created ------------------------------------

SIZE_HINT = (
    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
    "and exabytes, respectively."
)
"""The hint QEMU prints after a bad size (util/qemu-option.c ``parse_option_size``)."""

NAME_TEXT = (
    "the name names the QMP socket (NAME.qmp) and the snapshot directory, so it cannot be "
    "empty, '.' or '..', or contain '/'"
)


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["-m", "1T"], "-m 1T: cannot model more than 16 GiB of RAM"),
        (["-m", "16385M"], "-m 16385M: cannot model more than 16 GiB of RAM"),
        (
            ["-m", "abc"],
            f"-m abc: Parameter 'size' expects a non-negative number below 2^64\n{SIZE_HINT}",
        ),
        (
            ["-m", "-5"],
            f"-m -5: Parameter 'size' expects a non-negative number below 2^64\n{SIZE_HINT}",
        ),
        (["-name", "a/b"], f"-name a/b: {NAME_TEXT}"),
        (["-name", ".."], f"-name ..: {NAME_TEXT}"),
        (
            ["--log", "/nonexistent/qmonitor.log"],
            "--log /nonexistent/qmonitor.log: No such file or directory",
        ),
    ],
)
def test_a_bad_value_is_refused_in_one_line(home: Home, arguments: list[str], line: str) -> None:
    """QEMU's texts for -m (``qemu-system-x86_64 -m abc``); ours where QEMU takes the value."""
    result = home.run("run", *arguments, "-monitor", "none")
    assert (result.returncode, result.stderr.decode()) == (1, f"qmonitor: {line}\n")
    assert list(home.runtime.iterdir()) == []
    assert not home.state.exists()


def test_ram_the_host_refuses_is_qemus_error(home: Home) -> None:
    """Below the limit, a host without the memory gets QEMU's text, not a MemoryError."""

    def limit_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    result = subprocess.run(
        [*QMONITOR, "run", "-m", "2G", "-monitor", "none"],
        env=home.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        preexec_fn=limit_address_space,
    )
    assert (result.returncode, result.stderr.decode()) == (
        1,
        "qmonitor: cannot set up guest memory 'ram': Cannot allocate memory\n",
    )


def resident_kib(pid: int) -> int:
    """The process's resident size (``VmRSS``), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def test_ram_the_guest_has_not_written_is_not_resident(launcher: Launcher) -> None:
    """QEMU maps guest RAM anonymously (util/mmap-alloc.c ``qemu_ram_mmap``), so pages the
    guest never wrote cost the host nothing; so here, also once ``loadvm`` has read a
    snapshot into a second copy: an idle 1 GiB guest stays far below 1 GiB resident."""
    vm = await launcher.start("idle", "-m", "1G", "--dirty-rate", "0")
    client = await vm.client()
    assert resident_kib(vm.process.pid) < 256 << 10
    for command_line in ("savevm s1", "loadvm s1"):
        assert await client.execute("human-monitor-command", **{"command-line": command_line}) == ""
    assert resident_kib(vm.process.pid) < 256 << 10
    await client.close()


async def test_savevm_with_an_empty_tag_is_refused_as_every_empty_tag(launcher: Launcher) -> None:
    """QEMU 7.2 saves a snapshot named "" (``savevm ""``); qmonitor refuses the empty tag on
    every path (docs/MACHINE.md), and ``savevm ""`` is no exception: it does not make up a
    name as ``savevm`` without a tag does, and saves nothing."""
    vm = await launcher.start("empty", "-S", "--dirty-rate", "0")
    client = await vm.client()
    hmp = "human-monitor-command"
    refused = await client.execute(hmp, **{"command-line": 'savevm ""'})
    assert refused == "Error: Snapshot tag must not be empty\r\n"
    listed = await client.execute(hmp, **{"command-line": "info snapshots"})
    assert listed == "There is no snapshot available.\r\n"
    await client.close()


async def test_every_command_compiles_though_compiled_at_first_use(launcher: Launcher) -> None:
    """``qmonitor run`` compiles a command's signature when it is first used (start-up time):
    the schema and the human monitor's table compile every one, so a bad type hint in any
    command the program registers fails here rather than in a client's hands."""
    vm = await launcher.start("all", "-S", "--dirty-rate", "0")
    client = await vm.client()
    schema = await client.execute("query-qmp-schema")
    commands = await client.execute("query-commands")
    names = {entry["name"] for entry in schema if entry["meta-type"] == "command"}
    assert names == {command["name"] for command in commands} and len(names) >= 60
    help_text = await client.execute("human-monitor-command", **{"command-line": "help"})
    assert "savevm" in help_text and "info" in help_text
    await client.close()


async def test_commands_loaded_at_first_use_answer_as_if_loaded_at_start(
    launcher: Launcher,
) -> None:
    """The program registers its commands at the registry's first use (start-up time, the
    machine's at the first lookup, the human monitor's when one of its names is): whichever
    command comes first, it works, the schema is complete on its first call, and the
    commands are listed in the same order."""
    human = await (await launcher.start("human-first", "-S", "--dirty-rate", "0")).client()
    status = await human.execute("human-monitor-command", **{"command-line": "info status"})
    assert status == "VM status: paused (prelaunch)\r\n"
    schema_first = await (await launcher.start("schema-first", "-S", "--dirty-rate", "0")).client()
    schema = await schema_first.execute("query-qmp-schema")
    machine = await (await launcher.start("machine-first", "-S", "--dirty-rate", "0")).client()
    assert (await machine.execute("query-status"))["status"] == "prelaunch"
    listed = [await vm.execute("query-commands") for vm in (human, schema_first, machine)]
    assert listed[0] == listed[1] == listed[2]
    names = [entry["name"] for entry in schema if entry["meta-type"] == "command"]
    assert names == [command["name"] for command in listed[0]]
    assert {"human-monitor-command", "query-status", "getfd", "migrate"} <= set(names)
    assert await machine.execute("query-qmp-schema") == schema
    for client in (human, schema_first, machine):
        await client.close()


async def ram_size_of(client: Client) -> int:
    """The RAM size, observed as QEMU would not let us: the digest of a never-run guest."""
    digest = (await client.execute("x-query-ram-digest"))["digest"]
    for size in (8192, 128 << 20):
        if hashlib.sha256(bytes(size)).hexdigest() == digest:
            return size
    raise AssertionError(f"unexpected RAM digest {digest}")


async def test_m_0_is_the_default_size_and_sizes_round_up_as_in_qemu(launcher: Launcher) -> None:
    """hw/core/machine.c: ``-m 0`` is the machine's default (128M, x86 pc's; checked with
    ``qemu-system-x86_64 -M pc -m 0``), and a size is rounded up to 8 KiB (``-m 1K``)."""
    zero = await (await launcher.start("zero", "-m", "0", "-S")).client()
    assert await ram_size_of(zero) == 128 << 20
    tiny = await (await launcher.start("tiny", "-m", "1K", "-S")).client()
    assert await ram_size_of(tiny) == 8192


async def test_any_name_is_taken_when_it_names_no_file(short_tmp: Path) -> None:
    """As QEMU takes ``-name a/b``: with -qmp and --state-dir the name is only a name."""
    path = str(short_tmp / "vm.qmp")
    process = await asyncio.create_subprocess_exec(
        *QMONITOR, "run", "-name", "a/b", "-qmp", f"unix:{path},server=on,wait=off",
        "-monitor", "none", "--state-dir", str(short_tmp / "state"), "-S",
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        while not (await process.stderr.readline()).startswith(b"qmonitor: snapshots in "):
            assert process.returncode is None
        client = await Client.connect(path)
        assert await client.execute("query-name") == {"name": "a/b"}
        await client.close()
    finally:
        process.kill()
        await process.wait()


# -- start-up ----------------------------------------------------------------------------------


def test_startup_prints_the_socket_a_client_command_and_the_snapshots(home: Home) -> None:
    """The path as it is, and a command that, pasted into a shell, connects (qmp-shell)."""
    _, lines = home.start("-monitor", "none")
    path = home.default_socket()
    assert lines[0] == f"qmonitor: QMP socket {path}"
    assert lines[1].startswith("qmonitor: connect with: ")
    assert lines[2:] == [f"qmonitor: snapshots in {home.state}/qmonitor/vms/vm0"]
    command = lines[1].removeprefix("qmonitor: connect with: ")
    pasted = subprocess.run(
        command,
        shell=True,
        input=b"query-name\n",
        capture_output=True,
        env={**home.env, "HOME": str(home.runtime)},  # qmp-shell keeps a history in ~
        timeout=60,
    )
    assert '(QEMU) {"return": {"name": "vm0"}}' in pasted.stdout.decode(), pasted.stderr


def test_startup_names_the_human_monitor_socket(home: Home) -> None:
    hmp = home.runtime / "hmp.sock"
    _, lines = home.start("-monitor", f"unix:{hmp},server=on,wait=off")
    # monitors come in command-line order, the default QMP socket after those given
    assert lines[0:2] == [
        f"qmonitor: HMP socket {hmp}",
        f"qmonitor: connect with: socat -,echo=0,icanon=0 UNIX-CONNECT:{hmp}",
    ]


def test_a_second_default_instance_is_told_to_use_another_name(home: Home) -> None:
    home.start("-monitor", "none")
    second = home.run("run", "-monitor", "none")
    assert (second.returncode, second.stderr.decode()) == (
        1,
        f"qmonitor: a live server is already listening on {home.default_socket()}; "
        "is another 'qmonitor run -name vm0' running? Give this one another -name\n",
    )
    _, lines = home.start("-monitor", "none", "-name", "vm1")
    assert lines[0] == f"qmonitor: QMP socket {home.default_socket('vm1')}"


async def test_the_default_guest_writes_its_ram(home: Home) -> None:
    """Without options the workload runs (--dirty-rate 16M), so a savevm has data to save."""
    home.start("-monitor", "none")
    client = await Client.connect(str(home.default_socket()))
    first = (await client.execute("x-query-ram-digest"))["workload-step"]
    async with asyncio.timeout(30):
        while (await client.execute("x-query-ram-digest"))["workload-step"] == first:
            await asyncio.sleep(0.02)
    await client.close()


# -- signals -----------------------------------------------------------------------------------


def read_message(stream: socket.SocketIO) -> dict[str, object]:
    line = stream.readline()
    assert line, "the connection ended"
    message = json.loads(line)
    assert isinstance(message, dict)
    return message


def test_closing_the_terminal_shuts_down_as_sigterm_does(short_tmp: Path) -> None:
    """The terminal's hang-up (SIGHUP to the session leader) is QEMU's termsig_handler case:
    SHUTDOWN with reason host-signal, status 0, the socket removed."""
    path = short_tmp / "vm.qmp"
    env = {**os.environ, "XDG_STATE_HOME": str(short_tmp / "state"), "TERM": "xterm"}
    terminal = ptyprocess.PtyProcess.spawn(
        [*QMONITOR, "run", "-qmp", f"unix:{path},server=on,wait=off", "--dirty-rate", "0"],
        env=env,
    )
    try:
        shown = b""
        while b"QEMU 7.2.22 monitor" not in shown:
            shown += terminal.read(4096)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(path))
            stream = sock.makefile("rb")
            read_message(stream)
            sock.sendall(b'{"execute": "qmp_capabilities"}')
            assert read_message(stream) == {"return": {}}
            os.close(terminal.fd)  # the terminal window closes
            event = read_message(stream)
        assert (event["event"], event["data"]) == (
            "SHUTDOWN",
            {"guest": False, "reason": "host-signal"},
        )
        assert terminal.wait() == 0
        assert not path.exists()
    finally:
        if terminal.isalive():
            os.kill(terminal.pid, signal.SIGKILL)
            terminal.wait()


# -- the log -----------------------------------------------------------------------------------


async def test_vv_logs_sessions_commands_and_errors(home: Home) -> None:
    log = home.runtime / "qmonitor.log"
    process, _ = home.start(
        "-monitor", "none", "--dirty-rate", "0", "--verbose", "--verbose", "--log", str(log)
    )
    path = str(home.default_socket())
    client = await Client.connect(path)
    await client.execute("query-status")
    assert await client.error("migrate", uri="nosuch:x") != ""
    await client.execute("quit")
    await client.close()
    assert await asyncio.to_thread(process.wait, 30) == 0
    messages = [line.split(" ", 2)[2] for line in log.read_text().splitlines()]
    pid = os.getpid()
    assert messages[:1] == [f"qmonitor.trace INFO: QMP session opened: pid {pid} on {path}"]
    assert f"qmonitor.trace DEBUG: query-status started from pid {pid} on {path}" in messages
    assert f"qmonitor.trace DEBUG: query-status complete from pid {pid} on {path}" in messages
    failed = [message for message in messages if " migrate failed from " in message]
    assert failed and failed[0].startswith(f"qmonitor.trace INFO: migrate failed from pid {pid}")
    assert f"qmonitor.trace INFO: QMP session closed: pid {pid} on {path}" in messages


async def test_v_logs_sessions_but_not_every_command(home: Home) -> None:
    process, _ = home.start("-monitor", "none", "--dirty-rate", "0", "--verbose")
    client = await Client.connect(str(home.default_socket()))
    await client.execute("query-status")
    await client.execute("quit")
    await client.close()
    assert await asyncio.to_thread(process.wait, 30) == 0
    assert process.stderr is not None
    log = process.stderr.read().decode()
    assert "QMP session opened: pid" in log
    assert "query-status" not in log
