"""The pytest plugin as a user meets it: a test module of theirs, run by pytest (pytester in a
subprocess, so the plugin comes from its ``pytest11`` entry point as in their project), against
the double and, with ``--qemu-binary``, against real QEMU 7.2. Every machine it starts is gone
afterwards, process and files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = '''
import asyncio

import pytest
from qemu.qmp import EventListener, ExecuteError


@pytest.fixture(autouse=True)
def report_machines(vm_factory):
    """Says which machines the test made (for the suite around this one to check)."""
    yield
    for machine in vm_factory.machines:
        program = machine.command[0].rsplit("/", 1)[-1]
        print(f"MACHINE {machine.pid} {machine.directory} {program}")


async def test_a_fresh_vm_runs(vm):
    qmp = await vm.qmp()
    status = await qmp.execute("query-status")
    assert status["status"] == "running" and status["running"] is True


async def test_stop_and_cont_send_events(vm):
    qmp = await vm.qmp()
    listener = EventListener(("STOP", "RESUME"))
    with qmp.listen(listener):
        await qmp.execute("stop")
        assert (await asyncio.wait_for(listener.get(), 10))["event"] == "STOP"
        assert (await qmp.execute("query-status"))["status"] == "paused"
        await qmp.execute("cont")
        assert (await asyncio.wait_for(listener.get(), 10))["event"] == "RESUME"
    assert (await qmp.execute("query-status"))["status"] == "running"


@pytest.mark.qmonitor_vm(name="web", paused=True, memory="64M")
async def test_marker_options(vm):
    qmp = await vm.qmp()
    assert await qmp.execute("query-name") == {"name": "web"}
    assert (await qmp.execute("query-status"))["status"] == "prelaunch"


async def test_the_human_monitor_socket(vm):
    reader, writer = await asyncio.open_unix_connection(vm.hmp_socket)
    banner = await asyncio.wait_for(reader.readuntil(b"(qemu) "), 10)
    assert banner.startswith(b"QEMU 7.2.")
    writer.close()


async def test_two_machines_and_one_that_vanishes(vm_factory):
    first, second = vm_factory(name="first"), vm_factory(name="second")
    assert first.pid != second.pid and first.qmp_socket != second.qmp_socket
    qmp = await second.qmp()
    assert await qmp.execute("query-name") == {"name": "second"}
    assert second.stop() is not None
    with pytest.raises(Exception):
        await asyncio.wait_for(qmp.execute("query-status"), 10)


@pytest.mark.qmonitor_vm(faults={"faults": [
    {"command": "query-status", "action": "error", "class": "GenericError",
     "desc": "injected: no status today", "times": 1},
]})
async def test_a_failing_query_status_is_reported(vm):
    qmp = await vm.qmp()
    with pytest.raises(ExecuteError) as failure:
        await qmp.execute("query-status")
    assert failure.value.error_class == "GenericError"
    assert str(failure.value) == "injected: no status today"
    assert (await qmp.execute("query-status"))["status"] == "running"
'''

USER_INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, waiting for its parent to reap it, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def run_user_suite(
    pytester: pytest.Pytester, machines_started: int, program: str, *options: str
) -> pytest.RunResult:
    """Run USER_TESTS in a subprocess with TMPDIR in the test's directory; check that every
    machine it reported ran ``program`` and is gone (no process, no directory), and that
    TMPDIR is left empty."""
    temporary = pytester.path / "tmp"
    temporary.mkdir()
    pytester.makeini(USER_INI)
    pytester.makepyfile(test_user=USER_TESTS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(temporary))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-rs", *options)
    machines = re.findall(r"MACHINE (\d+) (\S+) (\S+)", result.stdout.str())
    assert len(machines) == machines_started, result.stdout.str()
    assert {started for _, _, started in machines} == {program}
    for pid, directory, _ in machines:
        assert not Path(directory).exists()
        assert not alive(int(pid))
    assert list(temporary.iterdir()) == []
    return result


def test_a_user_suite_passes_against_the_double(pytester: pytest.Pytester) -> None:
    """Every machine, the one with faults too, is the stand-in with QEMU's command line."""
    result = run_user_suite(pytester, 7, "qmonitor-system-x86_64")
    result.assert_outcomes(passed=6)


@pytest.mark.qemu
def test_the_same_suite_passes_against_real_qemu(pytester: pytest.Pytester) -> None:
    result = run_user_suite(
        pytester, 6, "qemu-system-x86_64", "--qemu-binary=/usr/bin/qemu-system-x86_64"
    )
    result.assert_outcomes(passed=5, skipped=1)
    result.stdout.fnmatch_lines(["*faults need the qmonitor double*real QEMU*"])


def test_bad_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.qmonitor_vm(memroy="64M")
        def test_typo(vm):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*@pytest.mark.qmonitor_vm: unknown option 'memroy'*"])
    result.assert_outcomes(errors=1)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--qemu-binary", "/no/qemu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--qemu-binary: /no/qemu is not an executable*"])
    # An executable that is no QEMU: it exits at once, and says nothing.
    pytester.makepyfile(test_plain="def test_plain(vm):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--qemu-binary=/bin/true", "test_plain.py"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*/bin/true did not start (exited with 0), nothing on standard error"]
    )


def test_the_entry_point_for_a_python_without_the_script_is_the_stand_ins() -> None:
    """Where ``qmonitor-system-x86_64`` is not installed, the plugin runs this Python with
    STANDIN_ENTRY_POINT: the same program, answering as the stand-in does."""
    from qmonitor.testing.pytest_plugin import STANDIN_ENTRY_POINT

    script = subprocess.run(
        [str(Path(sys.executable).with_name("qmonitor-system-x86_64")), "-version"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    entry_point = subprocess.run(
        [sys.executable, "-c", STANDIN_ENTRY_POINT, "-version"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert entry_point == script and script.startswith("QEMU emulator version 7.2.22")


def test_loading_the_plugin_loads_no_server_module() -> None:
    """Every pytest run where qmonitor is installed imports the plugin; it must stay cheap."""
    script = (
        "import sys, qmonitor.testing.pytest_plugin; "
        "print(sorted(m for m in sys.modules "
        "if m.startswith(('qmonitor.server', 'qmonitor.core'))))"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, env=os.environ
    ).stdout
    assert output == "[]\n"


def test_a_failing_test_reports_what_became_of_its_machines(pytester: pytest.Pytester) -> None:
    """A machine that dies under a test is otherwise seen only as a lost connection, and its
    stderr goes with its directory at teardown: a failing test's report says, per machine,
    how its process ended and what it wrote on stderr. A passing test's report does not.
    Teardown cleans up after a failing test as after any other. TMPDIR is too long for a
    socket path in it here (as pytest's directories often are): the machines live in /tmp."""
    pytester.makeini(USER_INI)
    pytester.makepyfile(
        test_user="""
        import os
        import signal

        import pytest


        @pytest.fixture(autouse=True)
        def report_machines(vm_factory):
            yield
            for machine in vm_factory.machines:
                print(f"MACHINE {machine.directory}")


        @pytest.mark.qmonitor_vm(faults={"faults": [
            {"command": "stop", "action": "error", "desc": "no"},
        ]})
        async def test_the_machine_dies(vm_factory, vm):
            quiet = vm_factory(name="quiet")
            stopped = vm_factory(name="stopped")
            stopped.stop()
            qmp = await vm.qmp()
            with pytest.raises(Exception):
                await qmp.execute("stop")
            os.kill(vm.pid, signal.SIGKILL)
            await qmp.execute("query-status")


        async def test_a_passing_test(vm):
            await vm.qmp()
        """
    )
    temporary = pytester.path / "tmp"
    temporary.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(temporary))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines(
        [
            r"-+ vm0 \(qmonitor-system-x86_64, pid \d+\): killed by SIGKILL during the test -+",
            r"fault rule 1 fired: error on stop from pid \d+ on .*/qmp.sock",
            r"-+ quiet \(qmonitor-system-x86_64, pid \d+\): running -+",
            r"\(nothing on standard error\)",
            r"-+ stopped \(qmonitor-system-x86_64, pid \d+\): exited with status 0 after vm.stop"
            r"\(\) -+",
            r"qmonitor-system-x86_64: terminating on signal 15",
        ]
    )
    pids = re.findall(r"\(qmonitor-system-x86_64, pid (\d+)\)", result.stdout.str())
    assert len(pids) == 3
    # the failing test's machines are gone, processes and files, as a passing test's are
    assert not any(alive(int(pid)) for pid in pids)
    assert list(temporary.iterdir()) == []
    directories = re.findall(r"MACHINE (\S+)", result.stdout.str())
    assert len(directories) == 4 and len(str(temporary / "qmvm-12345678/qmp.sock")) > 107
    assert all(d.startswith("/tmp/qmvm-") and not Path(d).exists() for d in directories)
