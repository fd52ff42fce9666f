"""The stand-in's probe answers, migration settings and machine state, over the wire.

Driven with ``qemu.qmp`` (QEMU's own client) against a machine served in the test process
from a :class:`MachineConfig`; the comparison with real QEMU is in test_standin_qemu.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from qmonitor.machine import profile as profile_module
from qmonitor.machine.config import (
    CpuTopology,
    DeviceConfig,
    MachineConfig,
    ObjectConfig,
)
from qmonitor.machine.profile import DEFAULT_PROFILE_NAME, Profile
from qmonitor.testing import RawQMPClient
from standin import serve_standin
from test_profile import MINIMAL

FOUR_CPUS = MachineConfig(
    cpus=4,
    topology=CpuTopology(sockets=2, cores=2),
    objects=(
        ObjectConfig("iothread", "iothread1"),
        ObjectConfig("iothread", "io2", {"poll-max-ns": 100}),
        ObjectConfig("secret", "masterKey0", {"data": "abc"}),
    ),
    devices=(DeviceConfig("virtio-net-pci", "net0"), DeviceConfig("usb-tablet")),
)


async def connect(path: str) -> QMPClient:
    client = QMPClient("test")
    await client.connect(path)
    return client


@pytest.fixture
async def four_cpus(short_tmp: Path) -> AsyncIterator[QMPClient]:
    async with serve_standin(short_tmp, FOUR_CPUS) as path:
        client = await connect(path)
        try:
            yield client
        finally:
            await client.disconnect()


async def error_of(client: QMPClient, command: str, arguments: dict[str, Any]) -> str:
    with pytest.raises(ExecuteError) as caught:
        await client.execute(command, arguments)
    return f"{caught.value.error_class}: {caught.value}"


# -- answers from the profile ----------------------------------------------------------------


async def test_probe_commands_answer_from_the_profile_given(short_tmp: Path) -> None:
    profile = Profile.from_json(MINIMAL, "minimal.json")
    async with serve_standin(short_tmp, profile=profile) as path:
        client = await connect(path)
        assert await client.execute("query-target") == {"arch": "aarch64"}
        assert await error_of(client, "device-list-properties", {"typename": "x"}) == (
            "DeviceNotFound: Device 'x' not found"
        )
        assert await error_of(client, "query-kvm", {}) == (
            "GenericError: qmonitor: no reply to query-kvm {} in the capability profile "
            "minimal.json (capture it with 'qmonitor profile capture')"
        )
        # The schema stays ours: the command exists with QEMU's arguments.
        assert await error_of(client, "device-list-properties", {}) == (
            "GenericError: Parameter 'typename' is missing"
        )
        await client.disconnect()


async def test_uncaptured_arguments_get_qemus_errors_or_a_documented_one(
    four_cpus: QMPClient,
) -> None:
    client = four_cpus
    assert await error_of(client, "device-list-properties", {"typename": "e1000"}) == (
        "GenericError: qmonitor: no reply to device-list-properties "
        '{"typename":"e1000"} in the capability profile (built-in) qemu-7.2-x86_64.json '
        "(capture it with 'qmonitor profile capture')"
    )
    assert await error_of(client, "query-command-line-options", {"option": "nope"}) == (
        "GenericError: invalid option name: nope"
    )
    options: Any = await client.execute("query-command-line-options", {"option": "name"})
    assert [entry["option"] for entry in options] == ["name"]
    assert await error_of(
        client, "query-cpu-model-expansion", {"type": "full", "model": {"name": "z80"}}
    ) == ("GenericError: CPU model 'z80' not found")
    implementing: Any = await client.execute("qom-list-types", {"implements": "pci-device"})
    assert {"name": "virtio-net-pci", "parent": "virtio-net-pci-base"} in implementing
    assert all("abstract" not in entry for entry in implementing)
    assert await client.execute("qom-list-types", {"implements": "no-such-type"}) == []


# -- migration settings ---------------------------------------------------------------------


async def test_unimplemented_migration_parameters_stay_and_refusals_apply_nothing(
    four_cpus: QMPClient,
) -> None:
    client = four_cpus
    before: Any = await client.execute("query-migrate-parameters")
    assert len(before) == 26 and before["compress-level"] == 1 and before["tls-creds"] == ""
    # libvirt resets TLS before migrating: the values they have, accepted.
    await client.execute("migrate-set-parameters", {"tls-creds": "", "tls-hostname": None})
    assert await error_of(
        client, "migrate-set-parameters", {"max-bandwidth": 1000, "compress-level": 2}
    ) == (
        "GenericError: qmonitor does not implement the migration parameter 'compress-level' "
        "(it stays 1)"
    )
    assert await client.execute("query-migrate-parameters") == before  # max-bandwidth kept
    assert await error_of(client, "migrate-set-parameters", {"compress-level": 10}) == (
        "GenericError: Parameter 'compress_level' expects a value between 0 and 9"
    )
    await client.execute("migrate-set-parameters", {"max-bandwidth": 1000})
    after: Any = await client.execute("query-migrate-parameters")
    assert after == {**before, "max-bandwidth": 1000}


async def test_unimplemented_capabilities_are_off_and_cannot_be_turned_on(
    four_cpus: QMPClient,
) -> None:
    client = four_cpus
    capabilities: Any = await client.execute("query-migrate-capabilities")
    assert len(capabilities) == 21 and not any(entry["state"] for entry in capabilities)
    request = [{"capability": "events", "state": True}, {"capability": "xbzrle", "state": True}]
    assert await error_of(client, "migrate-set-capabilities", {"capabilities": request}) == (
        "GenericError: qmonitor does not implement the migration capability 'xbzrle'"
    )
    assert await client.execute("query-migrate-capabilities") == capabilities  # events off
    request = [{"capability": "postcopy-preempt", "state": True}]
    assert await error_of(client, "migrate-set-capabilities", {"capabilities": request}) == (
        "GenericError: Postcopy preempt requires postcopy-ram"
    )
    request = [{"capability": "events", "state": True}, {"capability": "xbzrle", "state": False}]
    await client.execute("migrate-set-capabilities", {"capabilities": request})
    states: Any = await client.execute("query-migrate-capabilities")
    assert [entry["capability"] for entry in states if entry["state"]] == ["events"]


# -- machine state --------------------------------------------------------------------------


async def test_cpus_follow_the_topology_and_qemus_qom_paths(four_cpus: QMPClient) -> None:
    client = four_cpus
    cpus: Any = await client.execute("query-cpus-fast")
    assert [cpu["qom-path"] for cpu in cpus] == [
        f"/machine/unattached/device[{n}]" for n in (0, 2, 3, 4)
    ]
    assert [cpu["props"] for cpu in cpus] == [
        {"socket-id": socket, "core-id": core, "thread-id": 0}
        for socket, core in ((0, 0), (0, 1), (1, 0), (1, 1))
    ]
    assert {cpu["thread-id"] for cpu in cpus} == {os.getpid()}
    path = "/machine/unattached/device[4]"
    assert await client.execute("qom-get", {"path": path, "property": "apic-id"}) == 3
    assert await client.execute("qom-get", {"path": path, "property": "socket-id"}) == 1
    assert await client.execute("qom-get", {"path": path, "property": "type"}) == (
        "qemu64-x86_64-cpu"
    )
    words: Any = await client.execute("qom-get", {"path": path, "property": "feature-words"})
    assert {"cpuid-register", "cpuid-input-eax", "features"} <= words[0].keys()
    assert await error_of(client, "qom-get", {"path": path, "property": "nope"}) == (
        "GenericError: Property 'qemu64-x86_64-cpu.nope' not found"
    )
    smp = await client.execute("qom-get", {"path": "/machine", "property": "smp"})
    assert smp == {
        "cpus": 4, "maxcpus": 4, "sockets": 2, "dies": 1, "clusters": 1, "cores": 2, "threads": 1,
    }  # fmt: skip


async def test_the_qom_tree_holds_the_configured_objects_and_devices(
    four_cpus: QMPClient,
) -> None:
    client = four_cpus
    objects: Any = await client.execute("qom-list", {"path": "/objects"})
    assert {entry["name"]: entry["type"] for entry in objects} == {
        "type": "string",
        "iothread1": "child<iothread>",
        "io2": "child<iothread>",
        "masterKey0": "child<secret>",
        "pc.ram": "child<memory-backend-ram>",
    }
    peripheral: Any = await client.execute("qom-list", {"path": "/machine/peripheral"})
    assert peripheral[1:] == [{"name": "net0", "type": "child<virtio-net-pci>"}]
    anonymous: Any = await client.execute("qom-list", {"path": "peripheral-anon"})
    assert anonymous[1:] == [{"name": "device[0]", "type": "child<usb-tablet>"}]
    assert await client.execute("qom-get", {"path": "/machine", "property": "peripheral"}) == (
        "/machine/peripheral"
    )
    assert await client.execute("qom-get", {"path": "io2", "property": "poll-max-ns"}) == 100
    assert await error_of(client, "qom-list", {"path": "device[0]"}) == (
        "GenericError: Path 'device[0]' is ambiguous"
    )
    assert await error_of(client, "qom-list", {"path": "/machine/nope"}) == (
        "DeviceNotFound: Device '/machine/nope' not found"
    )
    threads: Any = await client.execute("query-iothreads")
    assert [(thread["id"], thread["poll-max-ns"]) for thread in threads] == [
        ("iothread1", 32768),
        ("io2", 100),
    ]
    assert await client.execute("query-block") == []
    assert await client.execute("query-block-jobs") == []
    assert await client.execute("query-named-block-nodes", {"flat": True}) == []


async def test_query_iothreads_creates_objects_on_a_machine_without_any(short_tmp: Path) -> None:
    async with serve_standin(short_tmp, MachineConfig(machine_type="none", ram_size=0)) as path:
        client = await connect(path)
        assert await error_of(client, "qom-list", {"path": "/objects"}) == (
            "DeviceNotFound: Device '/objects' not found"
        )
        assert await client.execute("query-cpus-fast") == []
        assert await client.execute("query-pci") == []
        assert await client.execute("query-iothreads") == []
        assert await client.execute("qom-list", {"path": "/objects"}) == [
            {"name": "type", "type": "string"}
        ]
        await client.disconnect()


async def test_chardev_filenames_follow_the_connections(short_tmp: Path) -> None:
    async with serve_standin(short_tmp, extra_sockets=("second.sock",)) as path:
        first = await connect(path)
        second_path = str(short_tmp / "second.sock")
        chardevs: Any = await first.execute("query-chardev")
        assert sorted((c["label"], c["filename"], c["frontend-open"]) for c in chardevs) == [
            ("compat_monitor0", f"unix:{path},server=on", True),
            ("compat_monitor1", f"disconnected:unix:{second_path},server=on", True),
        ]
        connected = "/chardevs/compat_monitor1"
        assert not await first.execute("qom-get", {"path": connected, "property": "connected"})
        second = await RawQMPClient.connect_unix(second_path)
        chardevs = await first.execute("query-chardev")
        assert f"unix:{second_path},server=on" in [c["filename"] for c in chardevs]
        assert await first.execute("qom-get", {"path": connected, "property": "connected"})
        await second.close()
        await first.disconnect()


def test_a_config_refuses_more_cpus_than_its_topology_holds() -> None:
    with pytest.raises(ValueError, match="5 CPUs do not fit the topology"):
        MachineConfig(cpus=5, topology=CpuTopology(sockets=2, cores=2))


async def test_query_events_is_not_a_command(four_cpus: QMPClient) -> None:
    # QEMU 6.0 removed it; QEMU 7.2 answers CommandNotFound, and so do we.
    with pytest.raises(ExecuteError) as caught:
        await four_cpus.execute("query-events")
    assert caught.value.error_class == "CommandNotFound"


async def test_the_probe_profile_is_read_only_when_first_needed(short_tmp: Path) -> None:
    reads: list[int] = []
    shipped = Path(profile_module.__file__).parent / "profiles" / DEFAULT_PROFILE_NAME

    def read_counted() -> bytes:
        reads.append(1)
        return shipped.read_bytes()

    profile = Profile("counted", read_counted)
    async with serve_standin(short_tmp, profile=profile) as path:
        client = await connect(path)
        await client.execute("query-status")
        assert reads == []
        await asyncio.gather(client.execute("query-target"), client.execute("query-kvm"))
        assert reads == [1]
        await client.disconnect()


async def test_a_machine_type_not_captured_answers_only_what_it_can(short_tmp: Path) -> None:
    config = MachineConfig(machine_type="pc-i440fx-6.2")
    async with serve_standin(short_tmp, config) as path:
        client = await connect(path)
        assert await client.execute("qom-get", {"path": "/machine", "property": "type"}) == (
            "pc-i440fx-6.2-machine"
        )
        cpu = "/machine/unattached/device[0]"
        for command, arguments in (
            ("qom-list", {"path": "/machine"}),
            ("qom-get", {"path": "/machine", "property": "firmware"}),
            ("qom-get", {"path": cpu, "property": "feature-words"}),
            ("query-pci", {}),
        ):
            assert (await error_of(client, command, arguments)).startswith(
                "GenericError: qmonitor: no reply to"
            ), command
        # What does not depend on the machine type is still answered: the CPU model's
        # properties, its topology.
        listing: Any = await client.execute("qom-list", {"path": cpu})
        assert {"name": "feature-words", "type": "X86CPUFeatureWordInfo"} in listing
        assert await client.execute("qom-get", {"path": cpu, "property": "apic-id"}) == 0
        await client.disconnect()


async def test_the_configured_uuid_is_the_machines(short_tmp: Path) -> None:
    uuid = "c0ffee00-0000-4000-8000-000000000001"
    async with serve_standin(short_tmp, MachineConfig(uuid=uuid)) as path:
        client = await connect(path)
        assert await client.execute("query-uuid") == {"UUID": uuid}
        await client.disconnect()
