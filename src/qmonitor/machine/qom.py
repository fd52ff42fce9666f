"""The QOM tree management tools read: ``qom-list`` and ``qom-get`` over the machine's objects.

QEMU exposes its objects as a tree of properties (qom/object.c): ``/machine`` with its CPUs
under ``/machine/unattached``, devices under ``/machine/peripheral`` (with an id) and
``/machine/peripheral-anon``, ``-object`` objects under ``/objects``, chardevs under
``/chardevs``. libvirt reads CPU properties there after start (``feature-words``,
``filtered-features`` of ``/machine/unattached/device[0]``) and device aliases from
``qom-list /machine/peripheral``.

Our tree is built from the :class:`~qmonitor.machine.config.MachineConfig` and holds what the
configuration implies, a subset of QEMU's (no buses, no chipset devices, no memory regions
but ``system[0]`` and ``io[0]``). Where QEMU's answer is a fact of its build (the properties
a machine type or a CPU model has, and their values), it comes from the capability profile,
captured on the same machine type; where it follows from the configuration, it is computed:

* children, in QEMU's order: a listing walks the object's property hash table
  (:mod:`qmonitor.core.ghash`) and QMP prepends each entry, so it comes out reversed, after
  ``type``, which belongs to the root class and is visited last;
* CPUs: QEMU's x86 ``pc`` machines create the CPUs first, and realizing the first one creates
  the ``kvmvapic`` device (hw/intc/apic_common.c), so CPU 0 is ``device[0]``, the vapic
  ``device[1]`` and CPU *n* ``device[n+1]``; ``-machine none`` has no CPU on x86. Topology
  properties (``apic-id``, ``socket-id``, ``die-id``, ``core-id``, ``thread-id``) follow
  ``-smp`` as in hw/i386/x86.c (``x86_topo_ids_from_idx``, ``x86_apicid_from_topo_ids``);
  the other CPU properties are the captured first CPU's;
* ``/machine``: ``type``, ``memory``, ``smp`` and ``rtc-time`` are computed, the others are
  captured; the listing is the captured one without the children we do not have;
* ``/objects`` exists once there is an object, a RAM backend (``pc.ram`` on the ``pc``
  machines, ``ram`` on ``none`` with ``-m``: hw/core/machine.c ``create_default_memdev``), or
  after ``query-iothreads`` looked for it (``object_get_objects_root`` creates it);
* chardevs list ``type`` and, for sockets, ``connected`` and ``addr``.

Path resolution is QEMU's ``object_resolve_path``: absolute paths from ``/`` (empty
components ignored), partial paths matched anywhere in the tree, ``Path 'X' is ambiguous``
when they match more than once; links are not followed. Errors: ``Device 'X' not found``
(DeviceNotFound), ``Property 'TYPE.NAME' not found`` (qom/object.c).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, Final, NotRequired, TypedDict

from qmonitor import ErrorClass, Monitor, QMPError, ghash_iteration_order
from qmonitor.machine.config import (
    ChardevConfig,
    DeviceConfig,
    MachineConfig,
    ObjectConfig,
    SocketChardev,
)
from qmonitor.machine.probe_commands import answer, profile_miss
from qmonitor.machine.profile import MACHINE_CPU_PATH, Profile, as_inserted

TARGET_SUFFIX: Final = "-x86_64-cpu"
"""QOM type name of a CPU model: ``qemu64`` is ``qemu64-x86_64-cpu`` (target/i386/cpu.h)."""

IOTHREAD_DEFAULTS: Final[dict[str, int]] = {
    "poll-max-ns": 32768,
    "poll-grow": 0,
    "poll-shrink": 0,
    "aio-max-batch": 0,
    "thread-pool-min": 0,
    "thread-pool-max": 64,
}
"""An iothread's properties when ``-object iothread`` does not set them (iothread.c, Linux)."""


class Kind(Enum):
    """What a node of the tree is, which decides how it answers."""

    CONTAINER = "container"
    MACHINE = "machine"
    CPU = "cpu"
    OBJECT = "object"
    CHARDEV = "chardev"
    DEVICE = "device"
    OTHER = "other"  # a bus, a memory region, the vapic: its type, and what the profile has


@dataclass(slots=True)
class QomNode:
    """One object of the tree: its path, QOM type and children (in insertion order)."""

    path: str
    qom_type: str
    kind: Kind
    children: dict[str, QomNode] = field(default_factory=dict)
    cpu_index: int = -1
    item: ObjectConfig | ChardevConfig | DeviceConfig | None = None

    def add(self, name: str, qom_type: str, kind: Kind, **extra: Any) -> QomNode:
        """Add (or return the existing) child ``name``."""
        if name not in self.children:
            prefix = "" if self.path == "/" else self.path
            self.children[name] = QomNode(f"{prefix}/{name}", qom_type, kind, **extra)
        return self.children[name]

    def walk(self) -> Iterator[QomNode]:
        """This node and every node below it."""
        yield self
        for child in self.children.values():
            yield from child.walk()


ObjectPropertyInfo = TypedDict(
    "ObjectPropertyInfo",
    {"name": str, "type": str, "description": NotRequired[str], "default-value": NotRequired[Any]},
)
"""qapi/qom.json ``ObjectPropertyInfo``."""

ConnectionOf = Callable[[ChardevConfig], tuple[Any, Any] | None]
"""Where a chardev is connected now: (local address, peer address) as the socket module gives
them, or None; for ``connected`` and ``query-chardev``."""


def cpu_topology_ids(config: MachineConfig, index: int) -> dict[str, int]:
    """Socket, die, core and thread of CPU ``index`` (hw/i386/topology.h
    ``x86_topo_ids_from_idx``), and its APIC id (``x86_apicid_from_topo_ids``)."""
    topology = config.topology
    thread = index % topology.threads
    core = index // topology.threads % topology.cores
    die = index // (topology.threads * topology.cores) % topology.dies
    socket = index // (topology.threads * topology.cores * topology.dies)
    smt_width = (topology.threads - 1).bit_length()
    core_width = (topology.cores - 1).bit_length()
    die_width = (topology.dies - 1).bit_length()
    apic_id = (
        (socket << (die_width + core_width + smt_width))
        | (die << (core_width + smt_width))
        | (core << smt_width)
        | thread
    )
    return {
        "apic-id": apic_id,
        "socket-id": socket,
        "die-id": die,
        "core-id": core,
        "thread-id": thread,
    }


def cpu_paths(config: MachineConfig) -> list[str]:
    """The QOM path of each CPU (see the module docstring)."""
    if config.machine_type == "none":
        return []
    return [
        f"/machine/unattached/device[{index + 1 if index else 0}]" for index in range(config.cpus)
    ]


class QomTree:
    """The machine's QOM tree (see the module docstring)."""

    def __init__(
        self,
        config: MachineConfig,
        profile: Profile,
        connection_of: ConnectionOf = lambda chardev: None,
    ) -> None:
        self.config = config
        self.profile = profile
        self.connection_of = connection_of
        self.objects_root_wanted = False
        self._root: QomNode | None = None

    @cached_property
    def machine_type(self) -> str:
        """The machine type's full name (``pc`` is ``pc-i440fx-7.2``), by the profile."""
        info = self.profile.machine_info(self.config.machine_type)
        return info["name"] if info is not None else self.config.machine_type

    @cached_property
    def ram_id(self) -> str | None:
        """The id of the RAM backend the machine creates in ``/objects``, if any."""
        info = self.profile.machine_info(self.config.machine_type)
        if info is None or not self.config.ram_size:
            return None
        ram_id = info.get("default-ram-id")
        return ram_id if isinstance(ram_id, str) else None

    @property
    def root(self) -> QomNode:
        """``/``; built on first use, as the machine type needs the profile."""
        if self._root is None:
            self._root = QomNode("/", "container", Kind.CONTAINER)
            self._build(self._root)
        return self._root

    def _build(self, root: QomNode) -> None:
        config = self.config
        machine = root.add("machine", f"{self.machine_type}-machine", Kind.MACHINE)
        if config.chardevs:
            chardevs = root.add("chardevs", "container", Kind.CONTAINER)
            for chardev in config.chardevs:
                chardevs.add(chardev.label, chardev.qom_type, Kind.CHARDEV, item=chardev)
        machine.add("peripheral-anon", "container", Kind.CONTAINER)
        machine.add("peripheral", "container", Kind.CONTAINER)
        unattached = machine.add("unattached", "container", Kind.CONTAINER)
        unattached.add("sysbus", "System", Kind.OTHER)
        unattached.add("system[0]", "memory-region", Kind.OTHER)
        unattached.add("io[0]", "memory-region", Kind.OTHER)
        for index, path in enumerate(cpu_paths(config)):
            name = path.rsplit("/", 1)[1]
            unattached.add(name, config.cpu_model + TARGET_SUFFIX, Kind.CPU, cpu_index=index)
            if index == 0:
                unattached.add("device[1]", "kvmvapic", Kind.OTHER)
        anonymous = 0
        for device in config.devices:
            if device.id is not None:
                container = machine.children["peripheral"]
                container.add(device.id, device.driver, Kind.DEVICE, item=device)
            else:
                container = machine.children["peripheral-anon"]
                container.add(f"device[{anonymous}]", device.driver, Kind.DEVICE, item=device)
                anonymous += 1
        self._add_objects()

    def _objects_in_creation_order(self) -> list[ObjectConfig]:
        # softmmu/vl.c: "early" objects first, then the late ones (memory backends, and the
        # types whose properties name other backends), which are created before the machine.
        late = ("memory-backend-", "filter-", "rng-egd", "colo-compare", "cryptodev-vhost-user")
        objects = list(self.config.objects)
        early = [item for item in objects if not item.qom_type.startswith(late)]
        return early + [item for item in objects if item.qom_type.startswith(late)]

    def _add_objects(self) -> None:
        if not (self.config.objects or self.ram_id or self.objects_root_wanted):
            return
        objects = self.root.add("objects", "container", Kind.CONTAINER)
        for item in self._objects_in_creation_order():
            objects.add(item.id, item.qom_type, Kind.OBJECT, item=item)
        if self.ram_id is not None:
            ram = ObjectConfig("memory-backend-ram", self.ram_id, {"size": self.config.ram_size})
            objects.add(self.ram_id, "memory-backend-ram", Kind.OBJECT, item=ram)

    def objects_root(self) -> QomNode:
        """``/objects``, created if it does not exist yet (``object_get_objects_root``)."""
        self.objects_root_wanted = True
        self._add_objects()
        return self.root.children["objects"]

    # -- paths -----------------------------------------------------------------------------

    def resolve(self, path: str) -> QomNode:
        """``object_resolve_path``: the node at ``path``, or QEMU's error."""
        parts = path.split("/")
        if path.startswith("/"):
            node: QomNode | None = self.root
            for part in parts[1:]:
                if part and node is not None:
                    node = node.children.get(part)
            if node is None:
                raise QMPError(f"Device '{path}' not found", ErrorClass.DEVICE_NOT_FOUND)
            return node
        wanted = [part for part in parts if part]
        matches = [node for node in self.root.walk() if self._follows(node, wanted)]
        if len(matches) > 1:
            raise QMPError(f"Path '{path}' is ambiguous")
        if not matches:
            raise QMPError(f"Device '{path}' not found", ErrorClass.DEVICE_NOT_FOUND)
        return matches[0]

    @staticmethod
    def _follows(node: QomNode, parts: list[str]) -> bool:
        # object_resolve_partial_path: some node from which the parts lead to ``node``.
        names = node.path.strip("/").split("/") if node.path != "/" else []
        return len(names) >= len(parts) and (not parts or names[-len(parts) :] == parts)

    def cpu(self, index: int) -> QomNode:
        """The node of CPU ``index``."""
        path = cpu_paths(self.config)[index]
        return self.resolve(path)

    # -- qom-list --------------------------------------------------------------------------

    def _children_listing(self, node: QomNode) -> list[dict[str, Any]]:
        order = ghash_iteration_order(list(node.children))
        return [
            {"name": name, "type": f"child<{node.children[name].qom_type}>"}
            for name in reversed(order)
        ]

    def _recorded_listing(self, command: str, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        # qom-list of a path depends on the machine; a type's properties do not.
        if command == "qom-list":
            reply = self.profile.machine_reply(self.machine_type, command, arguments)
        else:
            reply = self.profile.reply(command, arguments)
        if reply is None:
            raise profile_miss(self.profile, command, arguments)
        value = answer(reply)
        return [{"name": entry["name"], "type": entry["type"]} for entry in value]

    def listing(self, node: QomNode) -> list[dict[str, Any]]:
        """``qom-list`` of ``node``: its properties, QEMU's order."""
        if node.kind is Kind.CONTAINER:
            return [{"name": "type", "type": "string"}, *self._children_listing(node)]
        if node.kind is Kind.MACHINE:
            captured = self._recorded_listing("qom-list", {"path": "/machine"})
            return [
                entry
                for entry in captured
                if not entry["type"].startswith("child<") or entry["name"] in node.children
            ]
        if node.kind is Kind.CPU:
            if node.qom_type == self._captured_cpu_type():
                return self._recorded_listing("qom-list", {"path": MACHINE_CPU_PATH})
            return self._recorded_listing("qom-list-properties", {"typename": node.qom_type})
        if node.kind is not Kind.DEVICE:
            return self._recorded_listing("qom-list-properties", {"typename": node.qom_type})
        raise profile_miss(self.profile, "qom-list", {"path": node.path})

    def _captured_cpu_type(self) -> Any:
        reply = self.profile.machine_reply(
            self.machine_type, "qom-get", {"path": MACHINE_CPU_PATH, "property": "type"}
        )
        return reply.value if reply is not None and reply.error is None else None

    # -- qom-get ---------------------------------------------------------------------------

    def get(self, node: QomNode, name: str) -> Any:
        """``qom-get`` of property ``name`` of ``node``."""
        if name == "type":
            return node.qom_type
        child = node.children.get(name)
        if child is not None:
            return child.path
        value = self._computed(node, name)
        if value is _NOT_COMPUTED:
            value = self._recorded_value(node, name)
        if value is not _NOT_COMPUTED:
            return value
        try:
            names = {entry["name"] for entry in self.listing(node)}
        except QMPError:
            names = set()
        if names and name not in names:
            raise QMPError(f"Property '{node.qom_type}.{name}' not found")
        raise profile_miss(self.profile, "qom-get", {"path": node.path, "property": name})

    def _recorded_value(self, node: QomNode, name: str) -> Any:
        """The captured value, for ``/machine`` and for CPUs of the captured model."""
        if node.kind is Kind.MACHINE:
            path = "/machine"
        elif node.kind is Kind.CPU and node.qom_type == self._captured_cpu_type():
            path = MACHINE_CPU_PATH
        else:
            return _NOT_COMPUTED
        reply = self.profile.machine_reply(
            self.machine_type, "qom-get", {"path": path, "property": name}
        )
        return _NOT_COMPUTED if reply is None else answer(reply)

    def _computed(self, node: QomNode, name: str) -> Any:
        config = self.config
        if node.kind is Kind.CPU:
            ids = cpu_topology_ids(config, node.cpu_index)
            if name in ids:
                return ids[name]
        elif node.kind is Kind.MACHINE:
            if name == "memory":
                return {"size": config.ram_size}
            if name == "smp":
                topology = config.topology
                return as_inserted(
                    {
                        "cpus": config.cpus,
                        "maxcpus": topology.max_cpus,
                        "threads": topology.threads,
                        "cores": topology.cores,
                        "dies": topology.dies,
                        "sockets": topology.sockets,
                        "clusters": 1,
                    }
                )
            if name == "rtc-time":
                now = time.gmtime()
                return as_inserted(
                    {
                        "tm_year": now.tm_year - 1900,
                        "tm_sec": now.tm_sec,
                        "tm_hour": now.tm_hour,
                        "tm_min": now.tm_min,
                        "tm_mon": now.tm_mon - 1,
                        "tm_mday": now.tm_mday,
                    }
                )
        elif node.kind is Kind.OBJECT:
            assert isinstance(node.item, ObjectConfig)
            if name in node.item.properties:
                return node.item.properties[name]
            if node.qom_type == "iothread" and name in IOTHREAD_DEFAULTS:
                return IOTHREAD_DEFAULTS[name]
        elif node.kind is Kind.CHARDEV:
            assert isinstance(node.item, ChardevConfig)
            backend = node.item.backend
            if isinstance(backend, SocketChardev):
                if name == "connected":
                    return self.connection_of(node.item) is not None
                if name == "addr":
                    return socket_address(backend)
        return _NOT_COMPUTED


_NOT_COMPUTED: Final = object()


def socket_address(backend: SocketChardev) -> dict[str, Any]:
    """A socket chardev's ``addr`` property: QAPI ``SocketAddress`` as QEMU keeps it."""
    if backend.path is not None:
        return {"path": backend.path, "type": "unix"}
    if backend.fd is not None:
        return {"str": backend.fd, "type": "fd"}
    inet: dict[str, Any] = {"type": "inet", "host": backend.host or "", "port": backend.port or ""}
    if backend.family is not None:
        inet[backend.family] = True
    return as_inserted(inet)  # type: ignore[no-any-return]


def register_qom_commands(monitor: Monitor, tree: QomTree) -> None:
    """Register ``qom-list`` and ``qom-get`` (qapi/qom.json) over ``tree``."""

    @monitor.command(name="qom-list")
    def qom_list(path: str) -> list[ObjectPropertyInfo]:
        """List the properties of the object at ``path``."""
        return tree.listing(tree.resolve(path))  # type: ignore[return-value]

    @monitor.command(name="qom-get")
    def qom_get(path: str, property: str) -> Any:
        """Return the value of property ``property`` of the object at ``path``."""
        node = tree.resolve(path)
        return tree.get(node, property)
