"""Unix peer credentials (issue 9 item 3): SO_PEERCRED as the connection's identity, and the
gate that refuses a connection before its session (and greeting) exists."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qmonitor import Monitor
from qmonitor.core.session import Identity
from qmonitor.security.policy import parse_policy
from qmonitor.server.listen import Address, PeerCredentials, peer_credentials, start_listener
from qmonitor.server.peer import connection_identity, gated

OTHER_UID = 4321
OTHER_GID = 4322


def test_a_socketpair_peer_is_this_process() -> None:
    one, other = socket.socketpair(socket.AF_UNIX)
    with one, other:
        assert peer_credentials(one) == PeerCredentials(os.getpid(), os.getuid(), os.getgid())


def test_a_tcp_socket_has_no_peer_credentials() -> None:
    with socket.socket() as tcp:
        assert peer_credentials(tcp) is None


CLIENT = """
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.connect(sys.argv[1])
    print(s.recv(4096).decode(), end="")
"""


def run_client_as(uid: int, gid: int, path: str) -> subprocess.CompletedProcess[str]:
    """Connect to ``path`` from a process running as ``uid``/``gid``; print what it reads."""
    command = [sys.executable, "-c", CLIENT, path]
    if uid != os.getuid():
        command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="running a client as another uid needs root and setpriv",
)
async def test_a_unix_peer_is_known_by_its_uid_and_refused_by_policy(short_tmp: Path) -> None:
    policy = parse_policy(
        f'[roles.operator]\nallow = ["*"]\n[[grant]]\nuid = {os.getuid()}\nrole = "operator"\n'
    )
    seen: list[Identity] = []

    def admit(transport: asyncio.BaseTransport) -> bool:
        identity = connection_identity(transport)
        seen.append(identity)
        return policy.role_for(identity) is not None

    monitor = Monitor("peers")
    short_tmp.chmod(0o755)
    path = str(short_tmp / "qmp.sock")
    listener = await start_listener(
        Address("unix", path=path), gated(monitor.qmp_session_factory, admit)
    )
    monitor.listeners.append(listener)
    os.chmod(path, 0o666)  # let the other uid reach it: the policy decides, not the mode
    try:
        other = await asyncio.to_thread(run_client_as, OTHER_UID, OTHER_GID, path)
        own = await asyncio.to_thread(run_client_as, os.getuid(), os.getgid(), path)
    finally:
        await monitor.close()
    assert other.returncode == 0, other.stderr
    assert other.stdout == ""  # refused before the greeting
    assert own.stdout.startswith('{"QMP"')
    refused, admitted = seen
    assert (refused.transport, refused.uid, refused.gid) == ("unix", OTHER_UID, OTHER_GID)
    assert refused.pid is not None and refused.pid > 0
    assert refused.peer == path
    assert refused.label == f"uid={OTHER_UID} gid={OTHER_GID} pid={refused.pid}"
    assert (admitted.uid, admitted.gid) == (os.getuid(), os.getgid())
    assert admitted.label is not None and admitted.label.startswith(f"uid={os.getuid()}(")
