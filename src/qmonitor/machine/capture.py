"""``qmonitor profile capture``: run a real QEMU, ask it the probe questions, write the profile.

The questions are :data:`~qmonitor.machine.profile.PROBE_PLAN` (QEMU started with ``-machine
none``, as libvirt probes) and, for each machine type asked for, ``machine_plan()`` followed by
a ``qom-get`` of every plain property of ``/machine`` and of the first CPU. QEMU runs with
``-S -nodefaults -no-user-config -display none`` and QMP on a unix socket in a private
temporary directory; it is told to ``quit`` at the end and killed if it does not go.

The profile is written to a temporary file next to the target, flushed and renamed over it, so
an interrupted capture never leaves a partial profile behind (nor replaces a good one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

from qmonitor import QMonitorError
from qmonitor.machine.profile import (
    CAPTURED_MACHINES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MACHINE_CPU_PATH,
    PROBE_PLAN,
    machine_plan,
    readable_properties,
)

START_TIMEOUT: Final = 30.0
"""Seconds for QEMU to create its QMP socket (loading modules can take a while)."""

REPLY_TIMEOUT: Final = 60.0
"""Seconds for one reply (CPU model expansions are the slowest, well under a second)."""


SOCKET_PLACEHOLDER: Final = "unix:QMP-SOCKET,server=on,wait=off"
"""What the recorded ``argv`` shows instead of the temporary socket (so captures compare)."""


class CaptureError(QMonitorError):
    """The capture could not be done; the message is one line."""


class _QMP:
    """A minimal QMP client over a unix socket: one request at a time, ids to match replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.next_id = 0

    async def _message(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), REPLY_TIMEOUT)
        if not line:
            raise CaptureError("QEMU closed the QMP connection")
        message = json.loads(line)
        assert isinstance(message, dict)
        return message

    async def execute(self, command: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Send one request; return its reply (``return`` or ``error``), events skipped."""
        self.next_id += 1
        request: dict[str, Any] = {"execute": command, "id": self.next_id}
        if arguments:
            request["arguments"] = arguments
        self.writer.write(json.dumps(request).encode() + b"\n")
        await self.writer.drain()
        while True:
            message = await self._message()
            if message.get("id") == self.next_id:
                message.pop("id")
                return message


def _record(command: str, arguments: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"execute": command}
    if arguments:
        entry["arguments"] = arguments
    entry.update(reply)
    return entry


@contextlib.asynccontextmanager
async def _running_qemu(
    qemu: str, machine: str, accel: str
) -> AsyncIterator[tuple[_QMP, list[str]]]:
    directory = tempfile.mkdtemp(prefix="qmonitor-capture-")
    socket_path = os.path.join(directory, "qmp.sock")
    argv = [
        qemu, "-machine", f"{machine},accel={accel}", "-smp", "1", "-display", "none",
        "-nodefaults", "-no-user-config", "-S",
        "-qmp", f"unix:{socket_path},server=on,wait=off",
    ]  # fmt: skip
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise CaptureError(f"cannot run {qemu}: {exc.strerror}") from None
    writer: asyncio.StreamWriter | None = None
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            # The socket file appears when QEMU binds it, a moment before it listens.
            try:
                reader, writer = await asyncio.open_unix_connection(socket_path, limit=64 << 20)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            if process.poll() is not None:
                assert process.stderr is not None
                message = process.stderr.read().decode(errors="replace").strip()
                raise CaptureError(f"{qemu} exited: {message.splitlines()[-1] if message else ''}")
            if loop.time() > deadline:
                raise CaptureError(f"{qemu} did not listen on its QMP socket")
            await asyncio.sleep(0.01)
        client = _QMP(reader, writer)
        greeting = await client._message()
        if "QMP" not in greeting:
            raise CaptureError(f"{qemu} did not greet with QMP: {greeting!r}")
        negotiation = await client.execute("qmp_capabilities", {})
        if "return" not in negotiation:
            raise CaptureError(f"qmp_capabilities failed: {negotiation!r}")
        yield client, [SOCKET_PLACEHOLDER if item == argv[-1] else item for item in argv]
        with contextlib.suppress(CaptureError, OSError, TimeoutError):
            await client.execute("quit", {})
            await asyncio.wait_for(loop.run_in_executor(None, process.wait), START_TIMEOUT)
    finally:
        if writer is not None:
            writer.close()
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(directory, ignore_errors=True)


async def _ask(client: _QMP, plan: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    replies = []
    for command, arguments in plan:
        replies.append(_record(command, arguments, await client.execute(command, arguments)))
    return replies


async def _ask_properties(client: _QMP, path: str, listing: Any) -> list[dict[str, Any]]:
    if not isinstance(listing, list):
        return []
    plan = [("qom-get", {"path": path, "property": name}) for name in readable_properties(listing)]
    return await _ask(client, plan)


def _returned(replies: list[dict[str, Any]], command: str, arguments: dict[str, Any]) -> Any:
    for entry in replies:
        if entry["execute"] == command and entry.get("arguments", {}) == arguments:
            return entry.get("return")
    return None


async def _machine_replies(client: _QMP) -> list[dict[str, Any]]:
    replies = await _ask(client, machine_plan())
    for path in ("/machine", MACHINE_CPU_PATH):
        listing = _returned(replies, "qom-list", {"path": path})
        replies += await _ask_properties(client, path, listing)
    return replies


async def capture(
    qemu: str, *, accel: str = "tcg", machines: Sequence[str] = CAPTURED_MACHINES
) -> dict[str, Any]:
    """Run ``qemu`` and return the profile (parsed JSON) described in the module docstring."""
    async with _running_qemu(qemu, "none", accel) as (client, argv):
        probe = await _ask(client, PROBE_PLAN)
        probe += await _machine_replies(client)
    version = _returned(probe, "query-version", {})
    known = {}
    for entry in _returned(probe, "query-machines", {}) or []:
        known[entry["name"]] = entry["name"]
        if "alias" in entry:
            known[entry["alias"]] = entry["name"]
    captured: dict[str, Any] = {}
    for machine in machines:
        if machine not in known:
            raise CaptureError(f"{qemu} has no machine type '{machine}'")
        async with _running_qemu(qemu, known[machine], accel) as (client, machine_argv):
            replies = await _machine_replies(client)
        captured[known[machine]] = {"argv": machine_argv, "replies": replies}
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "qemu": {"binary": qemu, "version": version, "accel": accel},
        "probe": {"argv": argv, "replies": probe},
        "machines": captured,
    }


def _reply_lines(replies: list[dict[str, Any]]) -> str:
    return ",\n".join(json.dumps(entry, ensure_ascii=False) for entry in replies)


def profile_text(profile: dict[str, Any]) -> str:
    """The profile as JSON text with one reply per line (readable, and diffs stay small)."""

    def section(entry: dict[str, Any]) -> str:
        return (
            f'{{"argv": {json.dumps(entry["argv"])}, "replies": [\n'
            f"{_reply_lines(entry['replies'])}\n]}}"
        )

    machines = ",\n".join(
        f"{json.dumps(name)}: {section(entry)}" for name, entry in profile["machines"].items()
    )
    return (
        f'{{"format": {json.dumps(profile["format"])}, "version": {profile["version"]},\n'
        f'"qemu": {json.dumps(profile["qemu"], ensure_ascii=False)},\n'
        f'"probe": {section(profile["probe"])},\n'
        f'"machines": {{\n{machines}\n}}}}\n'
    )


def write_profile(profile: dict[str, Any], path: str) -> None:
    """Write ``profile`` to ``path`` atomically (temporary file, fsync, rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(profile_text(profile))
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as open() would have made it; mkstemp says 0600
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
