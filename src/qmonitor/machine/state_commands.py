"""The machine state management tools inspect after start, computed from the machine itself.

After starting a domain, libvirt asks for the chardevs (``query-chardev``, for PTY paths), the
vCPUs and their threads (``query-cpus-fast``), the iothreads, the block devices and jobs, and
go-qemu's ``Domain`` asks for PCI devices. The answers follow from the
:class:`~qmonitor.machine.config.MachineConfig` and the QOM tree (:mod:`qmonitor.machine.qom`),
with QEMU 7.2's shapes and order:

* ``query-chardev``: ``/chardevs`` walked in hash order, each entry prepended (chardev/char.c
  ``qmp_query_chardev``), so the order is ``qom-list /chardevs``'s. ``filename`` is a socket's
  address while nobody is connected (``disconnected:unix:PATH,server=on``), the connection's
  addresses while someone is (``unix:PATH,server=on``, ``tcp:H:P,server=on <-> H:P``),
  chardev/char-socket.c ``qemu_chr_socket_address``/``qemu_chr_compute_filename``;
  ``frontend-open`` says whether a monitor uses it.
* ``query-cpus-fast``: one entry per CPU in index order, with its QOM path and topology
  (``socket-id``, ``die-id`` only with several dies, ``core-id``, ``thread-id``:
  hw/i386/x86.c ``x86_possible_cpu_arch_ids``). ``thread-id`` is our process id: there are no
  vCPU threads, the guest runs on the event loop, and a vCPU thread id equal to the emulator's
  pid is how libvirt recognises TCG's shared thread (``qemuDomainRefreshVcpuInfo``), so it does
  not pin or move it.
* ``query-iothreads``: the ``iothread`` objects of ``/objects`` in hash order, appended
  (iothread.c ``qmp_query_iothreads``: the reverse of ``qom-list /objects``); properties as
  configured, else QEMU's defaults; ``thread-id`` is our process id, as above. Like QEMU, it
  creates ``/objects``.
* ``query-block``, ``query-named-block-nodes``, ``query-blockstats``, ``query-block-jobs``:
  empty (no drives).
* ``query-pci``: the chipset of the machine type, as captured in the profile (``-machine
  none`` has no PCI bus: empty); ``-device`` devices are not added.

``query-events`` is not here: QEMU 7.2 removed it (6.0) and answers CommandNotFound, as we do.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NotRequired, TypedDict

from qmonitor import (
    Context,
    ErrorClass,
    HumanSyntax,
    JobStatus,
    Monitor,
    QMPError,
    cpu_selection,
)
from qmonitor.machine.config import ChardevConfig, MachineConfig, ObjectConfig, SocketChardev
from qmonitor.machine.probe_commands import (
    SysEmuTarget,
    answer,
    profile_miss,
    register_probe_commands,
)
from qmonitor.machine.profile import Profile
from qmonitor.machine.qom import (
    IOTHREAD_DEFAULTS,
    ConnectionOf,
    Kind,
    QomTree,
    cpu_paths,
    cpu_topology_ids,
    register_qom_commands,
)


@dataclass(frozen=True, slots=True)
class ChardevInfo:
    """qapi/char.json ``ChardevInfo``."""

    label: str
    filename: str
    frontend_open: bool


@dataclass(frozen=True, slots=True)
class CpuInstanceProperties:
    """qapi/machine.json ``CpuInstanceProperties``."""

    node_id: int | None = None
    socket_id: int | None = None
    die_id: int | None = None
    cluster_id: int | None = None
    core_id: int | None = None
    thread_id: int | None = None


@dataclass(frozen=True, slots=True)
class CpuInfoFast:
    """qapi/machine.json ``CpuInfoFast`` (its base: x86 has no variant members)."""

    cpu_index: int
    qom_path: str
    thread_id: int
    target: SysEmuTarget
    props: CpuInstanceProperties | None = None


@dataclass(frozen=True, slots=True)
class IOThreadInfo:
    """qapi/misc.json ``IOThreadInfo``."""

    id: str
    thread_id: int
    poll_max_ns: int
    poll_grow: int
    poll_shrink: int
    aio_max_batch: int


class BlockDeviceIoStatus(StrEnum):
    """qapi/block-core.json ``BlockDeviceIoStatus``."""

    OK = "ok"
    FAILED = "failed"
    NOSPACE = "nospace"


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """qapi/block-core.json ``BlockInfo`` (``inserted``, a ``BlockDeviceInfo``, free-form here:
    no drive ever has one)."""

    device: str
    type: str
    removable: bool
    locked: bool
    qdev: str | None = None
    inserted: dict[str, Any] | None = None
    tray_open: bool | None = field(default=None, metadata={"qmp_name": "tray_open"})
    io_status: BlockDeviceIoStatus | None = None


@dataclass(frozen=True, slots=True)
class BlockJobInfo:
    """qapi/block-core.json ``BlockJobInfo``."""

    type: str
    device: str
    len: int
    offset: int
    busy: bool
    paused: bool
    speed: int
    io_status: BlockDeviceIoStatus
    ready: bool
    status: JobStatus
    auto_finalize: bool
    auto_dismiss: bool
    error: str | None = None


class PciMemoryRange(TypedDict):
    """qapi/pci.json ``PciMemoryRange``."""

    base: int
    limit: int


class PciMemoryRegion(TypedDict):
    """qapi/pci.json ``PciMemoryRegion``."""

    bar: int
    type: str
    address: int
    size: int
    prefetch: NotRequired[bool]
    mem_type_64: NotRequired[bool]


class PciBusInfo(TypedDict):
    """qapi/pci.json ``PciBusInfo``."""

    number: int
    secondary: int
    subordinate: int
    io_range: PciMemoryRange
    memory_range: PciMemoryRange
    prefetchable_range: PciMemoryRange


PciDeviceClass = TypedDict("PciDeviceClass", {"desc": NotRequired[str], "class": int})
"""qapi/pci.json ``PciDeviceClass`` (``class`` is a Python keyword, hence the functional form)."""

PciDeviceId = TypedDict(
    "PciDeviceId",
    {
        "device": int,
        "vendor": int,
        "subsystem": NotRequired[int],
        "subsystem-vendor": NotRequired[int],
    },
)
"""qapi/pci.json ``PciDeviceId``."""


class PciBridgeInfo(TypedDict):
    """qapi/pci.json ``PciBridgeInfo``."""

    bus: PciBusInfo
    devices: NotRequired[list[PciDeviceInfo]]


class PciDeviceInfo(TypedDict):
    """qapi/pci.json ``PciDeviceInfo``."""

    bus: int
    slot: int
    function: int
    class_info: PciDeviceClass
    id: PciDeviceId
    irq: NotRequired[int]
    irq_pin: int
    qdev_id: str
    pci_bridge: NotRequired[PciBridgeInfo]
    regions: list[PciMemoryRegion]


class PciInfo(TypedDict):
    """qapi/pci.json ``PciInfo``."""

    bus: int
    devices: list[PciDeviceInfo]


@dataclass(frozen=True, slots=True)
class BalloonInfo:
    """qapi/machine.json ``BalloonInfo``: the guest's memory in bytes."""

    actual: int


def render_balloon(info: BalloonInfo) -> str:
    """``hmp_info_balloon``: ``balloon: actual=MB``."""
    return f"balloon: actual={info.actual >> 20}\n"


def chardev_filename(chardev: ChardevConfig, connection: tuple[Any, Any] | None) -> str:
    """``query-chardev``'s ``filename`` (chardev/char-socket.c; the backend name otherwise)."""
    backend = chardev.backend
    if not isinstance(backend, SocketChardev):
        if backend.kind == "pty" and backend.device is not None:
            return f"pty:{backend.device}"  # chardev/char-pty.c char_pty_open
        return backend.kind
    listen = ",server=on" if backend.server else ""
    if connection is None:
        if backend.path is not None:
            return f"disconnected:unix:{backend.path}{listen}"
        if backend.fd is not None:
            return f"disconnected:fd:{backend.fd}{listen}"
        protocol = "telnet" if backend.telnet else "tcp"
        return f"disconnected:{protocol}:{backend.host or ''}:{backend.port or ''}{listen}"
    local, peer = connection
    if isinstance(local, str | bytes):
        path = local.decode(errors="replace") if isinstance(local, bytes) else local
        return f"unix:{path}{listen}"
    protocol = "telnet" if backend.telnet else "tcp"
    return f"{protocol}:{_host_port(local)}{listen} <-> {_host_port(peer)}"


def _host_port(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def session_connection(session: Any) -> tuple[Any, Any] | None:
    """The (local, peer) socket addresses of a session being served on a socket."""
    transport = getattr(session, "transport", None)
    if transport is None or transport.is_closing():
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
        return None
    return transport.get_extra_info("sockname"), transport.get_extra_info("peername")


def connection_finder(monitor: Monitor) -> ConnectionOf:
    """``connection_of`` for :class:`~qmonitor.machine.qom.QomTree`: a socket chardev is
    connected while a session served on it (the monitor's chardev of the same label) is."""

    def connection_of(chardev: ChardevConfig) -> tuple[Any, Any] | None:
        if not isinstance(chardev.backend, SocketChardev):
            return None
        served = [c for c in monitor.chardevs if c.label == chardev.label]
        sessions: list[Any] = [*monitor.qmp_sessions, *monitor.human_sessions]
        for session in sessions:
            if any(c.serves(session) for c in served):
                connection = session_connection(session)
                if connection is not None:
                    return connection
        return None

    return connection_of


def register_state_commands(monitor: Monitor, tree: QomTree) -> None:
    """Register the state queries (see the module docstring) over ``tree``."""
    command = monitor.command
    config = tree.config

    @command(name="query-chardev")
    def query_chardev() -> list[ChardevInfo]:
        """Return information about the chardevs."""
        chardevs = tree.root.children.get("chardevs")
        if chardevs is None:
            return []
        listed = []
        for entry in tree.listing(chardevs)[1:]:
            chardev = chardevs.children[entry["name"]].item
            assert isinstance(chardev, ChardevConfig)
            filename = chardev_filename(chardev, tree.connection_of(chardev))
            listed.append(ChardevInfo(chardev.label, filename, chardev.frontend))
        return listed

    @command(
        name="hmp-info-chardev",
        qmp=False,
        hmp=HumanSyntax(name="info chardev", help="show the character devices"),
    )
    def info_chardev() -> str:
        """``hmp_info_chardev`` (chardev/char-hmp-cmds.c): ``LABEL: filename=FILENAME``."""
        return "".join(f"{info.label}: filename={info.filename}\n" for info in query_chardev())

    @command(name="query-cpus-fast")
    def query_cpus_fast() -> list[CpuInfoFast]:
        """Return information about the vCPUs."""
        cpus = []
        for index in range(len(cpu_paths(config))):
            ids = cpu_topology_ids(config, index)
            props = CpuInstanceProperties(
                socket_id=ids["socket-id"],
                die_id=ids["die-id"] if config.topology.dies > 1 else None,
                core_id=ids["core-id"],
                thread_id=ids["thread-id"],
            )
            cpus.append(
                CpuInfoFast(index, tree.cpu(index).path, os.getpid(), SysEmuTarget.X86_64, props)
            )
        return cpus

    @command(
        name="hmp-info-cpus",
        qmp=False,
        hmp=HumanSyntax(name="info cpus", help="show infos for each CPU"),
    )
    def info_cpus(ctx: Context) -> str:
        """``hmp_info_cpus`` (monitor/hmp-cmds.c): each CPU and its thread, the monitor's
        current CPU marked ``*`` (the first until ``cpu`` picks another)."""
        current = cpu_selection(monitor, ctx.session).cpu_index or 0
        return "".join(
            f"{'*' if info.cpu_index == current else ' '} CPU #{info.cpu_index}: "
            f"thread_id={info.thread_id}\n"
            for info in query_cpus_fast()
        )

    @command(
        name="hmp-cpu",
        qmp=False,
        hmp=HumanSyntax(
            name="cpu", args_type="index:i", params="index", help="set the default CPU"
        ),
    )
    def cpu(index: int, ctx: Context) -> str:
        """``hmp_cpu`` (monitor/hmp-cmds.c): make CPU ``index`` this monitor's current CPU;
        QEMU prints ``invalid CPU index`` (not an error) when no CPU has that index."""
        if not 0 <= index < len(cpu_paths(config)):
            return "invalid CPU index\n"
        cpu_selection(monitor, ctx.session).cpu_index = index
        return ""

    balloon_present = any(device.driver.startswith("virtio-balloon") for device in config.devices)

    def check_balloon() -> None:
        """softmmu/balloon.c ``have_balloon``: a balloon device must exist."""
        if not balloon_present:
            raise QMPError("No balloon device has been activated", ErrorClass.DEVICE_NOT_ACTIVE)

    @command(
        name="balloon",
        hmp=HumanSyntax(
            name="balloon",
            args_type="value:M",
            params="target",
            help="request VM to change its memory allocation (in MB)",
        ),
    )
    def balloon(value: int) -> None:
        """Request the guest to change its memory allocation (softmmu/balloon.c ``qmp_balloon``).

        Asked of the balloon device's guest driver; the simulated guest has none, as a guest
        that never loaded virtio_balloon: the request is taken, ``actual`` stays the RAM size
        and no ``BALLOON_CHANGE`` comes, as on QEMU without a guest driver.
        """
        check_balloon()
        if value <= 0:
            raise QMPError("Parameter 'target' expects a size")

    @command(
        name="query-balloon",
        hmp=HumanSyntax(name="info balloon", help="show balloon information"),
        human=render_balloon,
    )
    def query_balloon() -> BalloonInfo:
        """Return the guest's memory as the balloon sees it (all of it: see ``balloon``)."""
        check_balloon()
        return BalloonInfo(config.ram_size)

    @command(name="query-iothreads")
    def query_iothreads() -> list[IOThreadInfo]:
        """Return the iothreads (the ``iothread`` objects)."""
        objects = tree.objects_root()
        threads = []
        for entry in reversed(tree.listing(objects)[1:]):  # appended, so table order
            node = objects.children[entry["name"]]
            if node.kind is not Kind.OBJECT or node.qom_type != "iothread":
                continue
            assert isinstance(node.item, ObjectConfig)
            values = {**IOTHREAD_DEFAULTS, **node.item.properties}
            threads.append(
                IOThreadInfo(
                    node.item.id,
                    os.getpid(),
                    values["poll-max-ns"],
                    values["poll-grow"],
                    values["poll-shrink"],
                    values["aio-max-batch"],
                )
            )
        return threads

    @command(name="query-block")
    def query_block() -> list[BlockInfo]:
        """Return the block devices (none: the machine has no drives)."""
        return []

    @command(name="query-named-block-nodes")
    def query_named_block_nodes(flat: bool | None = None) -> list[dict[str, Any]]:
        """Return the named block nodes (none)."""
        return []

    @command(name="query-blockstats")
    def query_blockstats(query_nodes: bool | None = None) -> list[dict[str, Any]]:
        """Return the block devices' I/O statistics (none: the machine has no drives).

        ``query-nodes`` asks for every node rather than the devices' roots (qapi/block-core.json
        ``query-blockstats``); there are none either way.
        """
        return []

    @command(name="query-block-jobs")
    def query_block_jobs() -> list[BlockJobInfo]:
        """Return the block jobs (none: snapshot jobs are not block jobs, as in QEMU)."""
        return []

    @command(name="query-pci")
    def query_pci() -> list[PciInfo]:
        """Return the PCI buses and devices: the machine type's chipset, as captured."""
        reply = tree.profile.machine_reply(tree.machine_type, "query-pci")
        if reply is None:
            raise profile_miss(tree.profile, "query-pci", {})
        return answer(reply)  # type: ignore[no-any-return]


def register_machine_state(monitor: Monitor, config: MachineConfig, profile: Profile) -> QomTree:
    """Register the probe commands, ``qom-list``/``qom-get`` and the state queries."""
    register_probe_commands(monitor, profile)
    tree = QomTree(config, profile, connection_finder(monitor))
    register_qom_commands(monitor, tree)
    register_state_commands(monitor, tree)
    return tree
