"""Issue 9 wired: roles at the dispatch point, identities in the audit trail, TLS listeners from
the API, confined migration files and the refusal of clear-text TCP beyond this host.

Real sockets, the real qemu.qmp client over TLS with client certificates, a client run as
another uid with ``setpriv``, and ``qmonitor run`` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
from cryptography.x509.oid import NameOID
from qemu.qmp import ExecuteError, QMPClient

from conftest import wait_until
from qmonitor import AddressError, Monitor, insecure_tcp_error, register_human_monitor_command
from qmonitor.core.schema import Secret
from qmonitor.qmp.protocol import NEGOTIATION_REQUIRED
from qmonitor.security.authz import AuthzList, ListFormat, ListPolicy, ListRule
from qmonitor.security.policy import parse_policy
from qmonitor.server.authorize import Authorizer
from qmonitor.server.listen import Address, parse_address
from qmonitor.server.peer import tls_authz_gate
from qmonitor.server.tls import server_context
from qmonitor.testing import RawQMPClient
from test_machine_processes import Launcher, wait_migration
from test_machine_processes import launcher as launcher  # the fixture
from tls_util import ALICE_SUBJECT, BOB_SUBJECT, Pki, greeting_or_eof, make_pki, server_creds
from x509util import name

MALLORY_SUBJECT = name((NameOID.ORGANIZATION_NAME, "Example"), (NameOID.COMMON_NAME, "mallory"))

POLICY = """
default-role = "observer"
[roles.observer]
allow = ["query-*", "qmp_capabilities", "human-monitor-command", "info", "help"]
[roles.operator]
allow = ["*"]
deny = ["quit", "human-monitor-command", "migrate:file"]
[[grant]]
identity = "O=Example,CN=alice"
role = "operator"
"""

OBSERVER_STOP = "The command 'stop' is not allowed for role 'observer'"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def guarded_monitor(audit: Path) -> tuple[Monitor, dict[str, bool]]:
    """A monitor with a run state, ``stop``, a command with a secret, the roles of POLICY."""
    monitor = Monitor("roles", policy=parse_policy(POLICY), audit=audit)
    state = {"running": True}

    @monitor.command(name="query-status", hmp="info status")
    def query_status() -> str:
        return "running" if state["running"] else "paused"

    @monitor.command(name="stop", hmp="stop")
    def stop() -> None:
        state["running"] = False

    @monitor.command(name="set-password")
    def set_password(password: Annotated[str, Secret()]) -> None:
        """Takes a secret."""

    register_human_monitor_command(monitor)
    return monitor, state


def example_authz() -> Authorizer:
    """tls-authz: everyone of O=Example but mallory."""
    authorizer = Authorizer()
    rules = (
        ListRule("O=Example,CN=mallory", ListPolicy.DENY),
        ListRule("O=Example,CN=*", ListPolicy.ALLOW, ListFormat.GLOB),
    )
    authorizer.add(AuthzList("auth0", ListPolicy.DENY, rules))
    return authorizer


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def completions(path: Path, command: str) -> int:
    """How many ``command.complete`` records of ``command`` the log has whole lines for."""
    if not path.exists():
        return 0
    lines = path.read_text().split("\n")[:-1]  # a line being written has no newline yet
    records = [json.loads(line) for line in lines]
    return sum(r["event"] == "command.complete" and r.get("command") == command for r in records)


async def test_roles_over_tls_identities_with_the_audit_trail(pki: Pki, tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    monitor, state = guarded_monitor(audit)
    listener = await monitor.listen(
        Address("tcp", host="127.0.0.1", port=0),
        tls=server_context(server_creds(pki)),
        admit=tls_authz_gate(example_authz(), "auth0"),
    )
    port = listener.bound_address.port
    bob, alice = QMPClient("bob"), QMPClient("alice")
    try:
        context = pki.client_context("bob", pki.authority.issue(BOB_SUBJECT, server=False))
        await bob.connect(("127.0.0.1", port), ssl=context)
        assert await bob.execute("query-status") == "running"
        with pytest.raises(ExecuteError) as refused:
            await bob.execute("stop")
        assert (refused.value.error_class, refused.value.error.error.desc) == (
            "GenericError",
            OBSERVER_STOP,
        )
        assert await bob.execute("query-status") == "running"  # the refused stop ran nothing
        commands: Any = await bob.execute("query-commands")
        names = {command["name"] for command in commands}
        assert "query-status" in names and "stop" not in names and "set-password" not in names
        schema: Any = await bob.execute("query-qmp-schema")
        schema_commands = {e["name"] for e in schema if e["meta-type"] == "command"}
        assert schema_commands == names
        hmc = "human-monitor-command"
        assert await bob.execute(hmc, {"command-line": "info status"}) == "running\r\n"
        assert await bob.execute(hmc, {"command-line": "stop"}) == f"Error: {OBSERVER_STOP}\r\n"
        help_text: Any = await bob.execute(hmc, {"command-line": "help"})
        assert "info " in help_text and "\r\nstop " not in help_text
        assert state["running"]
        # The writer thread is behind the replies: wait for bob's last record (the third
        # human-monitor-command's completion) before rotating.
        await wait_until(lambda: completions(audit, hmc) == 3)
        audit.rename(tmp_path / "audit.log.1")  # logrotate: records from now on go anew

        context = pki.client_context("alice", pki.authority.issue(ALICE_SUBJECT, server=False))
        await alice.connect(("127.0.0.1", port), ssl=context)
        commands = await alice.execute("query-commands")
        assert "stop" in {command["name"] for command in commands}
        await alice.execute("set-password", {"password": "hunter2"})
        await alice.execute("stop")
        assert not state["running"]
        context = pki.client_context("mallory", pki.authority.issue(MALLORY_SUBJECT, server=False))
        assert await greeting_or_eof(port, context) == b""  # refused before the greeting
    finally:
        await monitor.close()  # server side first: qemu.qmp's TLS disconnect never returns
        for client in (bob, alice):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 1)

    first, second = read_records(tmp_path / "audit.log.1"), read_records(audit)
    assert "hunter2" not in audit.read_text()
    bob_dn, alice_dn = "O=Example,CN=bob", "O=Example,CN=alice"
    for record in first + second:
        assert {"time", "event", "identity", "transport", "peer"} <= record.keys(), record
        assert record["transport"] == "tcp" and record["peer"].startswith("127.0.0.1:")
        if record["event"] in ("command.complete", "command.failed", "command.denied"):
            assert record["duration_ms"] >= 0
    assert [(r["event"], r["identity"], r.get("command")) for r in first] == [
        ("session.opened", bob_dn, None),
        ("command.started", bob_dn, "qmp_capabilities"),
        ("command.complete", bob_dn, "qmp_capabilities"),
        ("command.started", bob_dn, "query-status"),
        ("command.complete", bob_dn, "query-status"),
        ("command.started", bob_dn, "stop"),
        ("command.denied", bob_dn, "stop"),
        ("command.started", bob_dn, "query-status"),
        ("command.complete", bob_dn, "query-status"),
        ("command.started", bob_dn, "query-commands"),
        ("command.complete", bob_dn, "query-commands"),
        ("command.started", bob_dn, "query-qmp-schema"),
        ("command.complete", bob_dn, "query-qmp-schema"),
        ("command.started", bob_dn, "human-monitor-command"),
        ("command.started", bob_dn, "query-status"),
        ("command.complete", bob_dn, "query-status"),
        ("command.complete", bob_dn, "human-monitor-command"),
        ("command.started", bob_dn, "human-monitor-command"),
        ("command.started", bob_dn, "stop"),
        ("command.denied", bob_dn, "stop"),
        ("command.complete", bob_dn, "human-monitor-command"),
        ("command.started", bob_dn, "human-monitor-command"),
        ("command.started", bob_dn, "help"),
        ("command.complete", bob_dn, "help"),
        ("command.complete", bob_dn, "human-monitor-command"),
    ]
    denied = first[6]
    assert denied["role"] == "observer" and denied["error_class"] == "GenericError"
    assert denied["error"] == OBSERVER_STOP and denied["arguments"] == {}
    assert "id" in denied  # qemu.qmp sends an id with every request
    assert first[0]["role"] == "observer"
    assert [(r["event"], r["identity"], r.get("command")) for r in second[:-2]] == [
        ("session.opened", alice_dn, None),
        ("command.started", alice_dn, "qmp_capabilities"),
        ("command.complete", alice_dn, "qmp_capabilities"),
        ("command.started", alice_dn, "query-commands"),
        ("command.complete", alice_dn, "query-commands"),
        ("command.started", alice_dn, "set-password"),
        ("command.complete", alice_dn, "set-password"),
        ("command.started", alice_dn, "stop"),
        ("command.complete", alice_dn, "stop"),
        ("auth.refused", "O=Example,CN=mallory", None),
    ]
    closed = {(r["event"], r["identity"]) for r in second[-2:]}  # closed together, any order
    assert closed == {("session.closed", alice_dn), ("session.closed", bob_dn)}
    assert second[5]["arguments"] == {"password": "***"}


# --- unix peers, a client run as another uid ---------------------------------------------------

OTHER_UID, OTHER_GID = 4321, 4322

UID_CLIENT = r"""
import json, socket, sys
qmp_path, hmp_path = sys.argv[1:3]
with socket.socket(socket.AF_UNIX) as s:
    s.connect(qmp_path)
    stream = s.makefile("rwb")
    stream.readline()
    def run(command, arguments=None):
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        stream.write(json.dumps(request).encode() + b"\n")
        stream.flush()
        while True:
            reply = json.loads(stream.readline())
            if "event" not in reply:
                return reply
    replies = [run("qmp_capabilities"), run("query-status"), run("stop"), run("query-status"),
               run("query-commands"),
               run("human-monitor-command", {"command-line": "info status"}),
               run("human-monitor-command", {"command-line": "stop"})]
print(json.dumps(replies))
with socket.socket(socket.AF_UNIX) as s:
    s.connect(hmp_path)
    s.sendall(b"info status\nstop\nhelp\n")
    s.shutdown(socket.SHUT_WR)
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
print(json.dumps(b"".join(chunks).decode()))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="running a client as another uid needs root and setpriv",
)
async def test_roles_over_unix_uids_in_qmonitor_run(launcher: Launcher, short_tmp: Path) -> None:
    policy = short_tmp / "policy.toml"
    policy.write_text(
        POLICY.replace("[[grant]]", f'[[grant]]\nuid = {os.getuid()}\nrole = "operator"\n[[grant]]')
    )
    audit = short_tmp / "audit.log"
    hmp_path = str(short_tmp / "vm.hmp")
    vm = await launcher.start(
        "vm",
        *("--policy", str(policy), "--audit-log", str(audit)),
        *("-monitor", f"unix:{hmp_path},server=on,wait=off"),
    )
    # The launcher waits for the QMP socket; the human monitor's is bound just after it.
    await wait_until(lambda: os.path.exists(hmp_path))
    short_tmp.chmod(0o755)
    for path in (vm.qmp_path, hmp_path):
        os.chmod(path, 0o666)  # let the other uid reach it: the policy decides, not the mode
    command = [
        *("setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_GID}", "--clear-groups"),
        *(sys.executable, "-c", UID_CLIENT, vm.qmp_path, hmp_path),
    ]
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    qmp_line, hmp_line = result.stdout.splitlines()
    _, status, stop, status_after, commands, info_status, hmc_stop = json.loads(qmp_line)
    assert status["return"]["status"] == "running"
    assert stop["error"] == {"class": "GenericError", "desc": OBSERVER_STOP}
    assert status_after["return"]["status"] == "running"
    names = {command["name"] for command in commands["return"]}
    assert "query-status" in names and "stop" not in names and "cont" not in names
    assert info_status["return"] == "VM status: running\r\n"
    assert hmc_stop["return"] == f"Error: {OBSERVER_STOP}\r\n"
    hmp = json.loads(hmp_line)
    assert "VM status: running\r\n" in hmp
    assert f"Error: {OBSERVER_STOP}\r\n" in hmp
    help_output = hmp.split("help\x1b[K\r\n")[-1]  # after the echo of "help"
    assert help_output == (
        "help|? [cmd] -- show the help\r\n"
        "info [subcommand] -- show various information about the system state\r\n(qemu) "
    )
    client = await vm.client()  # root: the operator
    try:
        assert (await client.execute("query-status"))["status"] == "running"
        await client.execute("stop")
        assert (await client.execute("query-status"))["status"] == "paused"
        quit_reply = await client.request("quit")  # denied to operators by POLICY
        assert (
            quit_reply["error"]["desc"] == "The command 'quit' is not allowed for role 'operator'"
        )
    finally:
        await client.close()
    vm.process.terminate()  # SIGTERM: a clean shutdown, which closes the audit log
    assert await vm.exited() == 0
    records = read_records(audit)
    other = [r for r in records if r["identity"] and r["identity"].startswith(f"uid={OTHER_UID} ")]
    assert other[0]["event"] == "session.opened" and other[0]["transport"] == "unix"
    assert other[0]["role"] == "observer"
    assert [r["event"] for r in other if r.get("command") == "stop"] == [
        "command.started",
        "command.denied",
    ] * 3
    assert records[-1]["event"] == "session.closed"  # written before the log closed at exit


# --- paths: file: migration URIs ---------------------------------------------------------------


async def test_migrate_file_is_confined_to_the_allowed_directories(
    launcher: Launcher, short_tmp: Path
) -> None:
    allowed, outside = short_tmp / "allowed", short_tmp / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)
    vm = await launcher.start("vm", "--allow-path", str(allowed))
    client = await vm.client()
    try:
        for path in (
            outside / "vm.mig",
            allowed / ".." / "outside" / "vm.mig",
            allowed / "escape" / "vm.mig",
        ):
            reply = await client.request("migrate", uri=f"file:{path}")
            assert reply["error"] == {
                "class": "GenericError",
                "desc": f"Path '{path}' is outside the directories migration files may use "
                "(--allow-path)",
            }
        line = f"migrate file:{outside}/hmp.mig"
        hmp = await client.execute("human-monitor-command", **{"command-line": line})
        assert hmp.startswith(f"Error: Path '{outside}/hmp.mig' is outside")
        assert list(outside.iterdir()) == []  # nothing appeared
        reply = await client.request("migrate", uri="exec:cat > /tmp/pwned")
        assert reply["error"]["desc"] == "Parameter 'uri' expects a valid migration protocol"
        await client.execute("migrate", uri=f"file:{allowed}/vm.mig")
        await wait_migration(client, "completed")
        assert (allowed / "vm.mig").stat().st_size > 0
        state = vm.state_dir / "in-state-dir.mig"  # the state directory is always allowed
        await client.execute("migrate", uri=f"file:{state}")
        await wait_migration(client, "completed")
    finally:
        await client.close()


async def test_incoming_file_outside_the_allowed_directories_is_refused_at_start(
    short_tmp: Path,
) -> None:
    outside = short_tmp / "elsewhere.mig"
    outside.write_bytes(b"")
    result = await asyncio.to_thread(
        subprocess.run,
        [
            *(sys.executable, "-m", "qmonitor", "run", "-name", "in", "-monitor", "none"),
            *("-qmp", f"unix:{short_tmp}/in.qmp,server=on,wait=off"),
            *("--state-dir", str(short_tmp / "state"), "-incoming", f"file:{outside}"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"qmonitor: Path '{outside}' is outside the directories migration files may use "
        "(--allow-path)"
    )


# --- clear-text TCP beyond this host -----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("127.0.0.1", False),
        ("127.1.2.3", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.0.2.7", True),
        ("vm-host.example.org", True),
    ],
)
def test_clear_text_tcp_beyond_loopback_is_refused_unless_tls(host: str, refused: bool) -> None:
    address = Address("tcp", host=host, port=4444)
    assert (insecure_tcp_error(address, tls=False) is not None) == refused
    assert insecure_tcp_error(address, tls=True) is None
    assert insecure_tcp_error(parse_address("unix:/tmp/x,server=on,wait=off"), tls=False) is None


async def test_the_monitor_refuses_before_binding_and_the_flag_lets_it_through() -> None:
    monitor = Monitor()
    with pytest.raises(AddressError, match=r"needs TLS .* --allow-insecure-tcp"):
        await monitor.listen("tcp:0.0.0.0:0,server=on,wait=off")
    assert monitor.listeners == [] and monitor.chardevs == []  # nothing bound, nothing opened
    permissive = Monitor(allow_insecure_tcp=True)
    permissive.check_exposure(parse_address("tcp:0.0.0.0:0,server=on,wait=off"), tls=False)
    await monitor.close()
    await permissive.close()


def test_qmonitor_run_refuses_clear_text_tcp_on_every_interface(short_tmp: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "qmonitor", "run", "-name", "tcp", "-monitor", "none"),
            *("-qmp", "tcp:0.0.0.0:0,server=on,wait=off", "--state-dir", str(short_tmp)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "qmonitor: tcp:0.0.0.0:0: a TCP monitor on a non-loopback address needs TLS "
        "(tls-creds=); give --allow-insecure-tcp to serve it in clear text anyway\n"
    )
    assert list(short_tmp.iterdir()) == []  # refused before anything was made


# --- negotiation mode: qmp_capabilities is a command like the others ---------------------------


async def test_negotiation_requests_are_policed_and_audited(
    short_tmp: Path, tmp_path: Path
) -> None:
    """The connection answers requests in negotiation mode itself; the policy still decides
    ``qmp_capabilities`` (a role without it stays in negotiation mode), and the audit trail
    has every request, as in command mode."""
    audit = tmp_path / "audit.log"
    policy = parse_policy('default-role = "locked"\n[roles.locked]\nallow = ["query-*"]\n')
    monitor = Monitor("locked", policy=policy, audit=audit)
    path = str(short_tmp / "qmp.sock")
    await monitor.listen(f"unix:{path},server=on,wait=off")
    client = await RawQMPClient.connect_unix(path)
    negotiate_first = {"class": "CommandNotFound", "desc": NEGOTIATION_REQUIRED}
    not_allowed = "The command 'qmp_capabilities' is not allowed for role 'locked'"
    try:
        assert await client.execute("query-version", id=1) == {"id": 1, "error": negotiate_first}
        assert await client.execute("qmp_capabilities", id=2) == {
            "id": 2,
            "error": {"class": "GenericError", "desc": not_allowed},
        }
        assert await client.execute("query-version", id=3) == {"id": 3, "error": negotiate_first}
    finally:
        await client.close()
        await monitor.close()
    records = read_records(audit)
    assert [(r["event"], r.get("command"), r.get("id")) for r in records] == [
        ("session.opened", None, None),
        ("command.started", "query-version", 1),
        ("command.failed", "query-version", 1),
        ("command.started", "qmp_capabilities", 2),
        ("command.denied", "qmp_capabilities", 2),
        ("command.started", "query-version", 3),
        ("command.failed", "query-version", 3),
        ("session.closed", None, None),
    ]
    assert records[4]["role"] == "locked" and records[4]["error"] == not_allowed
    assert records[2]["error_class"] == "CommandNotFound"
