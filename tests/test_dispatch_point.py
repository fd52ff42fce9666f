"""One point of dispatch: QMP, the human monitor and human-monitor-command all go through
``Monitor.submit``, so one authorisation hook decides for all three."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qmonitor import Monitor, QMPError, register_human_monitor_command, serve_human
from qmonitor.core.session import Session
from qmonitor.testing import RawQMPClient
from test_hmp_socket import HMPClient

REFUSED = "refused by the test policy"


@dataclass
class Policy:
    """Refuses ``x-secret`` and ``x-secret-async``; remembers every question it was asked."""

    asked: list[tuple[str, str, str]] = field(default_factory=list)  # kind, peer, command
    handler_runs: int = 0
    broken: bool = False

    def authorize(
        self, session: Session, command_name: str, arguments: Mapping[str, object]
    ) -> QMPError | None:
        self.asked.append((session.kind.value, session.peer, command_name))
        if self.broken:
            raise RuntimeError("policy bug")
        if command_name.startswith("x-secret"):
            return QMPError(f"{REFUSED}: {command_name} {dict(arguments)}")
        return None


@dataclass
class Served:
    monitor: Monitor
    policy: Policy
    qmp_path: str
    hmp_path: str


@pytest.fixture
async def served(short_tmp: Path) -> AsyncIterator[Served]:
    policy = Policy()
    monitor = Monitor("policed", authorize=policy.authorize)

    @monitor.command(name="x-secret", hmp="secret")
    def secret(value: str = "") -> str:
        """a command the policy refuses"""
        policy.handler_runs += 1
        return "secret\n"

    @monitor.command(name="x-secret-async", hmp="secret_async")
    async def secret_async() -> str:
        """an async command the policy refuses"""
        policy.handler_runs += 1
        return "secret\n"

    @monitor.command(name="x-open", hmp="open")
    def open_command() -> str:
        """a command the policy allows"""
        return "open\n"

    register_human_monitor_command(monitor)
    qmp_path = str(short_tmp / "qmp.sock")
    hmp_path = str(short_tmp / "hmp.sock")
    await monitor.listen(f"unix:{qmp_path},server=on,wait=off")
    await serve_human(monitor, f"unix:{hmp_path},server=on,wait=off", interactive=False)
    try:
        yield Served(monitor, policy, qmp_path, hmp_path)
    finally:
        await monitor.close()


async def test_a_refusing_hook_stops_qmp_hmp_and_human_monitor_command_alike(
    served: Served,
) -> None:
    qmp = await RawQMPClient.connect_unix(served.qmp_path)
    await qmp.negotiate()
    hmp = await HMPClient.connect(served.hmp_path)
    try:
        assert await qmp.execute("x-secret", {"value": "v"}, id=1) == {
            "id": 1,
            "error": {"class": "GenericError", "desc": f"{REFUSED}: x-secret {{'value': 'v'}}"},
        }
        assert await qmp.execute("x-secret-async") == {
            "error": {"class": "GenericError", "desc": f"{REFUSED}: x-secret-async {{}}"}
        }
        assert (
            await hmp.run("secret v") == f"Error: {REFUSED}: x-secret {{'value': 'v'}}\r\n".encode()
        )
        assert (
            await hmp.run("secret_async") == f"Error: {REFUSED}: x-secret-async {{}}\r\n".encode()
        )
        assert await qmp.execute("human-monitor-command", {"command-line": "secret"}) == {
            "return": f"Error: {REFUSED}: x-secret {{}}\r\n"
        }
        assert served.policy.handler_runs == 0

        # what is allowed still runs, from every kind of session
        assert await qmp.execute("x-open") == {"return": "open\n"}
        assert await hmp.run("open") == b"open\r\n"
        assert await qmp.execute("human-monitor-command", {"command-line": "open"}) == {
            "return": "open\r\n"
        }
    finally:
        await qmp.close()
        await hmp.close()

    # the hook was asked every time, knowing how and from where each request came
    qmp_peer = f"pid {os.getpid()} on {served.qmp_path}"  # the client is this process
    hmp_peer = f"pid {os.getpid()} on {served.hmp_path}"
    assert served.policy.asked == [
        ("qmp", qmp_peer, "x-secret"),
        ("qmp", qmp_peer, "x-secret-async"),
        ("hmp", hmp_peer, "x-secret"),
        ("hmp", hmp_peer, "x-secret-async"),
        ("qmp", qmp_peer, "human-monitor-command"),
        ("human-monitor-command", qmp_peer, "x-secret"),
        ("qmp", qmp_peer, "x-open"),
        ("hmp", hmp_peer, "x-open"),
        ("qmp", qmp_peer, "human-monitor-command"),
        ("human-monitor-command", qmp_peer, "x-open"),
    ]


async def test_a_hook_that_raises_refuses_and_the_session_goes_on(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail closed: a bug in the policy refuses the request, is logged, and breaks nothing."""
    served.policy.broken = True
    qmp = await RawQMPClient.connect_unix(served.qmp_path)
    await qmp.negotiate()
    try:
        with caplog.at_level(logging.ERROR, logger="qmonitor"):
            reply = await qmp.execute("x-open", id="a")
        assert reply == {
            "id": "a",
            "error": {
                "class": "GenericError",
                "desc": "Command 'x-open' refused: the authorization failed",
            },
        }
        assert "the authorize hook failed on 'x-open'" in caplog.text
        served.policy.broken = False
        assert await qmp.execute("x-open", id="b") == {"return": "open\n", "id": "b"}
    finally:
        await qmp.close()


async def test_without_a_hook_everything_is_allowed(served: Served) -> None:
    served.monitor.authorize = None
    qmp = await RawQMPClient.connect_unix(served.qmp_path)
    await qmp.negotiate()
    try:
        assert await qmp.execute("x-secret") == {"return": "secret\n"}
        assert served.policy.handler_runs == 1
    finally:
        await qmp.close()
