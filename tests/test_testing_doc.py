"""docs/TESTING.md is a tutorial: its files, commands and outputs are run here as written.

The fixture tutorial (``pausing.py``, ``pytest.ini``, ``test_pausing.py``) runs through pytest
with the plugin from its entry point, against the double and against real QEMU 7.2; the
faults file, the bad faults file and the run-time session run on the stand-in; the
in-memory example runs as a test. Outputs are compared line by line, with what differs from
run to run (times, pids, paths) masked.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qmonitor.testing.pytest_plugin import VMFactory, VMOptions, wait_for_exit

pytest_plugins = ["pytester"]

DOC = (Path(__file__).parent.parent / "docs" / "TESTING.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```$", DOC, re.MULTILINE | re.DOTALL)
STANDIN = str(Path(sys.executable).with_name("qmonitor-system-x86_64"))
TIMESTAMP = re.compile(r'"timestamp": \{"seconds": \d+, "microseconds": \d+\}')


def block(starting: str) -> str:
    """The one code block whose text starts with ``starting``."""
    (found,) = [text for _, text in BLOCKS if text.startswith(starting)]
    return found


def masked(text: str) -> str:
    text = TIMESTAMP.sub('"timestamp": T', text)
    text = re.sub(r"\bpid \d+", "pid N", text)
    text = re.sub(r" in \d+\.\d+s ", " in Ts ", text)
    return re.sub(r"/\S+(\.qmp|/qmp\.sock)\b", "/QMP", text)


def expected_lines(console: str) -> list[str]:
    """The output lines of a console block: those not commands, nor their continuations."""
    lines, continued = [], False
    for line in console.splitlines():
        if line.startswith("$ ") or continued:
            continued = line.endswith("\\")
            continue
        lines.append(line)
    return lines


@pytest.fixture
def tutorial(pytester: pytest.Pytester) -> pytest.Pytester:
    for name in ("pausing.py", "test_pausing.py", "pytest.ini"):
        source = block(f"# {name}\n")
        (pytester.path / name).write_text(source)
    return pytester


def run_tutorial(pytester: pytest.Pytester, *options: str) -> list[str]:
    """The lines pytest prints from ``collecting`` on, as the doc shows them."""
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *options)
    lines = result.stdout.lines
    start = next(n for n, line in enumerate(lines) if line.startswith("collecting"))
    return [masked(line) for line in lines[start:]]


def test_the_fixture_tutorial_passes_as_shown(tutorial: pytest.Pytester) -> None:
    shown = expected_lines(block("$ pytest -v\n"))
    assert shown[0] == "..." and shown[1].startswith("plugins: ")
    assert run_tutorial(tutorial, "-v") == [masked(line) for line in shown[3:]]


@pytest.mark.qemu
def test_the_fixture_tutorial_passes_on_real_qemu_as_shown(tutorial: pytest.Pytester) -> None:
    console = block("$ pytest -v -rs --qemu-binary=/usr/bin/qemu-system-x86_64\n")
    shown = expected_lines(console)
    assert shown[0] == "..."
    lines = run_tutorial(tutorial, "-v", "-rs", "--qemu-binary=/usr/bin/qemu-system-x86_64")
    assert lines[2:] == [masked(line) for line in shown[1:]]


def listening(path: str) -> bool:
    """Whether a unix socket accepts at ``path`` (the connection is closed at once)."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


def converse(path: str, requests: list[bytes]) -> list[str]:
    """Send the requests one by one, each after the previous reply; every line received."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(30)
        client.connect(path)
        stream = client.makefile("rb")
        lines = [stream.readline()]
        if b'"event"' in lines[0]:
            lines.append(stream.readline())
        for request in requests:
            client.sendall(request)
            lines.append(stream.readline())
        return [line.decode().rstrip("\r\n") for line in lines]


def test_the_faults_file_example_answers_as_shown(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(block('{"faults": [\n'))
    console = block("$ qmonitor-system-x86_64 -machine none -display none -nodefaults \\\n")
    printf = re.search(r"printf '(.*?)'", console)
    assert printf is not None
    requests = [line.encode() for line in printf.group(1).split("\\n") if line]
    factory = VMFactory(None)
    try:
        machine = factory.start(VMOptions(memory="16M", faults=str(faults)))
        lines = converse(machine.qmp_socket, requests)
        machine.stop()
        stderr = Path(machine.stderr_path).read_text()
    finally:
        factory.close()
    assert [masked(line) for line in lines] == [masked(line) for line in expected_lines(console)]
    logged = block("fault rule 3 fired: ")
    assert [masked(line) for line in stderr.splitlines()[:2]] == [
        masked(line) for line in logged.splitlines()
    ]


def test_a_bad_faults_file_is_refused_as_shown(tmp_path: Path) -> None:
    console = block("$ cat bad.json\n").splitlines()
    (tmp_path / "bad.json").write_text(console[1] + "\n")
    for command, message in ((console[2], console[3]), (console[4], console[5])):
        argv = command.removeprefix("$ ").split()
        argv[0] = str(Path(sys.executable).with_name(argv[0]))
        finished = subprocess.run(
            argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert (finished.returncode, finished.stderr) == (1, message + "\n")


def test_the_run_time_session_answers_as_shown(tmp_path: Path) -> None:
    """On a stand-in started as the doc's first example, without ``-name`` or faults."""
    session = block('-> {"execute": "__io.github.qmonitor_fault-add"').splitlines()
    requests = [line[3:].encode() for line in session if line.startswith("-> ")]
    replies = [line[3:] for line in session if line.startswith("<- ")]
    path = str(tmp_path / "vm.qmp")
    qemu_args = ["-machine", "none", "-display", "none", "-nodefaults"]
    command = [STANDIN, *qemu_args, "-qmp", f"unix:{path},server=on,wait=off", "-m", "16M"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not wait_for_exit(process, 0.01) and not listening(path):
            pass
        lines = converse(path, [b'{"execute": "qmp_capabilities"}', *requests])
    finally:
        process.terminate()
        process.wait()
    assert json.loads(lines[0])["QMP"]["version"]["qemu"]["major"] == 7
    assert lines[2:] == replies


def test_the_in_memory_example_passes(pytester: pytest.Pytester) -> None:
    pytester.makeini(block("# pytest.ini\n"))
    pytester.makepyfile(test_memory=block("from qmonitor import Monitor\n"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
