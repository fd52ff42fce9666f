"""The stand-in against real QEMU 7.2: probe answers and machine state, byte for byte.

Two pairs of servers: ``qemu-system-x86_64 -machine none,accel=tcg`` (libvirt's probe) beside
our machine configured as ``none`` without RAM; and ``-machine pc,accel=tcg -smp
4,sockets=2,cores=2`` with two iothreads and a secret beside the same configuration of ours.
Every request is sent as the same bytes to both; the reply lines must be equal, after masking
what legitimately differs: each server's own socket path, and host thread ids (parsed and
compared structurally where they appear).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from qmonitor.machine.config import CpuTopology, MachineConfig, ObjectConfig
from qmonitor.machine.profile import Profile
from qmonitor.testing import QEMU_BINARY, RawQMPClient, start_server
from standin import serve_standin

pytestmark = pytest.mark.qemu
module_loop = pytest.mark.asyncio(loop_scope="module")

OBJECTS = (
    ObjectConfig("iothread", "iothread1"),
    ObjectConfig("iothread", "io2", {"poll-max-ns": 100}),
    ObjectConfig("secret", "masterKey0", {"data": "abc"}),
)
PC_ARGS = (
    "-smp", "4,sockets=2,cores=2", "-object", "iothread,id=iothread1",
    "-object", "iothread,id=io2,poll-max-ns=100", "-object", "secret,id=masterKey0,data=abc",
)  # fmt: skip
PC_CONFIG = MachineConfig(cpus=4, topology=CpuTopology(sockets=2, cores=2), objects=OBJECTS)
NONE_CONFIG = MachineConfig(machine_type="none", ram_size=0)


@dataclass
class Pair:
    """A QEMU and one of ours, each with a negotiated raw client."""

    qemu: RawQMPClient
    ours: RawQMPClient
    qemu_path: str
    our_path: str

    async def both(self, request: bytes) -> tuple[bytes, bytes]:
        replies = []
        for client, path in ((self.qemu, self.qemu_path), (self.ours, self.our_path)):
            await client.send_raw(request)
            line = await client.receive_line()
            while b'"event"' in line and b'"return"' not in line:
                line = await client.receive_line()
            replies.append(line.replace(path.encode(), b"SOCKET"))
        return replies[0], replies[1]

    async def same(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments is not None:
            request["arguments"] = arguments
        theirs, ours = await self.both(json.dumps(request).encode())
        assert ours == theirs, request
        return json.loads(ours)


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["none", "pc"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    machine = request.param
    directory = Path(tempfile.mkdtemp(prefix="qm-standin-"))
    qemu_path = str(directory / "qemu.sock")
    command = [QEMU_BINARY, "-machine", f"{machine},accel=tcg", "-display", "none"]
    command += ["-nodefaults", "-S", "-qmp", f"unix:{qemu_path},server=on,wait=off"]
    if machine == "pc":
        command += PC_ARGS
    config = PC_CONFIG if machine == "pc" else NONE_CONFIG
    try:
        async with (
            start_server(command, qemu_path, startup_timeout=20.0),
            serve_standin(directory, config, Profile.default()) as our_path,
        ):
            qemu = await _connect_when_listening(qemu_path)
            ours = await RawQMPClient.connect_unix(our_path)
            for client in (qemu, ours):
                await client.negotiate()
            yield Pair(qemu, ours, qemu_path, our_path)
            for client in (qemu, ours):
                await client.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _connect_when_listening(path: str) -> RawQMPClient:
    """Connect to QEMU's socket: the file appears when QEMU binds it, before it listens."""
    async with asyncio.timeout(20):
        while True:
            try:
                return await RawQMPClient.connect_unix(path)
            except ConnectionRefusedError:
                await asyncio.sleep(0.01)


def _probe_requests() -> list[tuple[str, dict[str, Any]]]:
    profile = Profile.default()
    return [
        (reply.command, dict(reply.arguments))
        for reply in profile.probe
        if reply.command
        not in ("query-version", "qom-get", "qom-list", "query-cpus-fast", "query-pci")
    ]


@module_loop
async def test_recorded_probe_replies_are_qemus(pair: Pair) -> None:
    for command, arguments in _probe_requests():
        await pair.same(command, arguments or None)


async def _machine(pair: Pair) -> str:
    await pair.ours.send_raw(
        b'{"execute":"qom-get","arguments":{"path":"/machine","property":"type"}}'
    )
    return str((await pair.ours.receive_reply())["return"])


COMPUTED = [
    ("qom-list-types", {"abstract": False}),
    ("qom-list-types", {"implements": "device"}),
    ("qom-list-types", {"implements": "pci-device", "abstract": True}),
    ("qom-list-types", {"implements": "no-such-type"}),
    ("device-list-properties", {"typename": "no-such-device"}),
    ("device-list-properties", {"typename": "pci-device"}),
    ("device-list-properties", {"typename": "iothread"}),
    ("qom-list-properties", {"typename": "no-such-type"}),
    ("qom-list-properties", {"typename": "interface"}),
    ("query-command-line-options", {"option": "name"}),
    ("query-command-line-options", {"option": "no-such-option"}),
    ("query-cpu-model-expansion", {"type": "full", "model": {"name": "z80"}}),
    ("query-cpu-model-expansion", {"type": "static", "model": {"name": "max", "props": {}}}),
    ("query-cpu-model-expansion", {"type": "static", "model": {"name": "max", "props": None}}),
    ("query-cpu-model-expansion", {"type": "bogus", "model": {"name": "max"}}),
    ("query-cpu-model-expansion", {"type": "static", "model": {}}),
    ("qom-list-types", {"abstract": 1}),
    ("device-list-properties", {}),
    ("query-machines", {"compat-props": True}),
    ("query-events", None),
]


@module_loop
async def test_requests_answered_by_computing_from_the_profile(pair: Pair) -> None:
    for command, arguments in COMPUTED:
        await pair.same(command, arguments)


MIGRATION = [
    ("query-migrate-parameters", None),
    ("query-migrate-capabilities", None),
    ("migrate-set-parameters", {"tls-creds": "", "tls-hostname": None, "tls-authz": ""}),
    ("migrate-set-parameters", {"compress-level": 256}),
    ("migrate-set-parameters", {"compress-level": -1}),
    ("migrate-set-parameters", {"compress-level": "x"}),
    ("migrate-set-parameters", {"x-checkpoint-delay": 2**32}),
    ("migrate-set-parameters", {"tls-creds": 5}),
    ("migrate-set-parameters", {"multifd-compression": "lzo"}),
    ("migrate-set-parameters", {"block-bitmap-mapping": [{"node-name": 1}]}),
    ("migrate-set-parameters", {"compress-level": 10}),
    ("migrate-set-parameters", {"compress-threads": 0}),
    ("migrate-set-parameters", {"decompress-threads": 0}),
    ("migrate-set-parameters", {"throttle-trigger-threshold": 101}),
    ("migrate-set-parameters", {"cpu-throttle-initial": 0}),
    ("migrate-set-parameters", {"cpu-throttle-increment": 100}),
    ("migrate-set-parameters", {"downtime-limit": 2000001}),
    ("migrate-set-parameters", {"multifd-channels": 0}),
    ("migrate-set-parameters", {"xbzrle-cache-size": 5000}),
    ("migrate-set-parameters", {"max-cpu-throttle": 10}),
    ("migrate-set-parameters", {"announce-initial": 100001}),
    ("migrate-set-parameters", {"announce-max": 100001}),
    ("migrate-set-parameters", {"announce-rounds": 1001}),
    ("migrate-set-parameters", {"announce-step": 0}),
    ("migrate-set-parameters", {"multifd-channels": 0, "compress-level": 10}),
    ("migrate-set-parameters", {"max-bandwidth": 33554432, "downtime-limit": 500}),
    ("query-migrate-parameters", None),
    ("migrate-set-capabilities", {"capabilities": [{"capability": "bogus", "state": True}]}),
    ("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": 1}]}),
    (
        "migrate-set-capabilities",
        {"capabilities": [{"capability": "postcopy-preempt", "state": True}]},
    ),
    (
        "migrate-set-capabilities",
        {"capabilities": [{"capability": "zero-copy-send", "state": True}]},
    ),
    ("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]}),
    ("query-migrate-capabilities", None),
    # libvirt's `virsh save` sends every argument of QEMU 7.2's migrate (resume: false)
    ("migrate", {"uri": "tcp:127.0.0.1:1", "resume": True}),
    ("migrate", {"uri": "nosuch:1", "blk": False, "inc": False, "detach": True, "resume": False}),
]


@module_loop
async def test_migration_parameters_and_capabilities_are_qemus(pair: Pair) -> None:
    for command, arguments in MIGRATION:
        await pair.same(command, arguments)


@module_loop
async def test_qom_tree_and_state_queries_match(pair: Pair) -> None:
    machine = await _machine(pair)
    await pair.same("qom-get", {"path": "/machine", "property": "type"})
    for path in ("/machine/peripheral", "/machine/peripheral-anon", "/nope", "", "/chardevs"):
        await pair.same("qom-list", {"path": path})
    for name in ("smp", "memory", "peripheral", "unattached", "no-such-property"):
        await pair.same("qom-get", {"path": "/machine", "property": name})
    await pair.same("qom-get", {"path": "/nope", "property": "type"})
    await pair.same("qom-list", {"path": "/chardevs/compat_monitor0"})
    for name in ("connected", "addr", "type"):
        await pair.same("qom-get", {"path": "/chardevs/compat_monitor0", "property": name})
    for command in ("query-chardev", "query-pci", "query-block", "query-block-jobs"):
        await pair.same(command)
    await pair.same("query-named-block-nodes", {"flat": True})
    await pair.same("query-blockstats")
    await pair.same("query-blockstats", {"query-nodes": True})
    await pair.same("query-blockstats", {"query-nodes": 1})
    if machine == "none-machine":
        for path in ("/machine", "machine", "/machine/", "/machine/unattached", "unattached"):
            await pair.same("qom-list", {"path": path})
        await pair.same("query-cpus-fast")
        await pair.same("qom-list", {"path": "/objects"})  # not there yet, in both
        await pair.same("query-iothreads")  # which creates it
        await pair.same("qom-list", {"path": "/objects"})
        await pair.same("qom-list", {"path": "/"})
        return
    await pair.same("qom-list", {"path": "/"})
    await pair.same("qom-list", {"path": "/objects"})
    await pair.same("qom-list", {"path": "/objects/iothread1"})
    await pair.same("qom-get", {"path": "/objects/io2", "property": "poll-max-ns"})
    await pair.same("qom-get", {"path": "/objects/pc.ram", "property": "size"})
    for cpu in (0, 2, 3, 4):
        path = f"/machine/unattached/device[{cpu}]"
        for name in ("type", "apic-id", "socket-id", "core-id", "thread-id", "die-id"):
            await pair.same("qom-get", {"path": path, "property": name})
    cpu_path = "/machine/unattached/device[3]"
    await pair.same("qom-list", {"path": cpu_path})
    for name in ("feature-words", "filtered-features", "model-id", "crash-information"):
        await pair.same("qom-get", {"path": cpu_path, "property": name})
    for command in ("query-cpus-fast", "query-iothreads"):
        theirs, ours = await pair.both(json.dumps({"execute": command}).encode())
        assert _without_thread_ids(ours) == _without_thread_ids(theirs), command
    # Our /machine lists what we have: QEMU's list without the children we do not model.
    theirs, ours = await pair.both(b'{"execute":"qom-list","arguments":{"path":"/machine"}}')
    ours_listed = json.loads(ours)["return"]
    assert [entry for entry in json.loads(theirs)["return"] if entry in ours_listed] == ours_listed


def _without_thread_ids(line: bytes) -> list[list[tuple[str, Any]]]:
    """The entries of a reply list as ordered member pairs, host thread ids masked."""
    entries = json.loads(line)["return"]
    return [
        [(key, "TID" if key == "thread-id" else value) for key, value in entry.items()]
        for entry in entries
    ]


def test_masked_comparison_still_sees_order() -> None:
    assert _without_thread_ids(b'{"return": [{"a": 1, "thread-id": 5}]}') != _without_thread_ids(
        b'{"return": [{"thread-id": 6, "a": 1}]}'
    )


STANDIN_COMMANDS = (
    "query-target", "query-kvm", "query-machines", "query-cpu-definitions", "qom-list-types",
    "qom-list-properties", "device-list-properties", "query-command-line-options",
    "query-tpm-models", "query-tpm-types", "query-sev-capabilities", "query-sgx-capabilities",
    "query-cpu-model-expansion", "query-migrate-capabilities", "migrate-set-capabilities",
    "query-migrate-parameters", "migrate-set-parameters", "qom-list", "qom-get",
    "query-chardev", "query-cpus-fast", "query-iothreads", "query-block",
    "query-named-block-nodes", "query-blockstats", "query-block-jobs", "query-pci",
)  # fmt: skip

SCHEMA_DIFFERENCES = {
    # CpuInfoFast's s390x variant is not declared (no s390x CPU here; Variants could say it).
    "query-cpus-fast": "ret-type",
    # BlockDeviceInfo is not declared (no drive ever has one): "any" in ours.
    "query-block": "ret-type",
    "query-named-block-nodes": "ret-type",
    "query-blockstats": "ret-type",  # BlockStats is not declared either
}


def _expand(entries: dict[str, dict[str, Any]], name: str, seen: tuple[str, ...] = ()) -> Any:
    """A type as a nested structure independent of the masked numbering (recursion cut)."""
    entry = entries[name]
    meta_type = entry["meta-type"]
    if meta_type == "builtin":
        return name
    if name in seen:
        return "<recursive>"
    seen = (*seen, name)
    if meta_type == "array":
        return [_expand(entries, entry["element-type"], seen)]
    if meta_type == "enum":
        return {"enum": entry["values"]}
    if meta_type == "alternate":
        return {
            "alternate": [_expand(entries, member["type"], seen) for member in entry["members"]]
        }
    return {
        "members": [
            [
                member["name"] + ("?" if "default" in member else ""),
                _expand(entries, member["type"], seen),
            ]
            for member in entry["members"]
        ]
    }


@module_loop
async def test_schema_of_the_standin_commands_is_qemus(pair: Pair) -> None:
    schemas = []
    for client in (pair.qemu, pair.ours):
        await client.send_raw(b'{"execute":"query-qmp-schema"}')
        schemas.append({entry["name"]: entry for entry in (await client.receive_reply())["return"]})
    theirs, ours = schemas
    for command in STANDIN_COMMANDS:
        for part in ("arg-type", "ret-type"):
            if SCHEMA_DIFFERENCES.get(command) == part:
                continue
            expected = _expand(theirs, theirs[command][part])
            assert _expand(ours, ours[command][part]) == expected, (command, part)
