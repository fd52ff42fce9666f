"""What the simulated machine is made of: the part of QEMU's command line its state depends on.

QEMU builds its machine from ``-machine``, ``-cpu``, ``-smp``, ``-m``, ``-uuid``, ``-chardev``
(and the chardevs ``-qmp``/``-monitor`` create), ``-object`` and ``-device``; management tools
then read that machine back through ``query-cpus-fast``, ``query-chardev``, ``qom-list`` and
``qom-get``. :class:`MachineConfig` holds those choices, already parsed and checked, so that the
answers (:mod:`qmonitor.machine.qom`, :mod:`qmonitor.machine.state_commands`) are a function of
one value. The command-line parser fills it; its defaults are QEMU's without options: the
default machine type with one CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from qmonitor import Record

DEFAULT_MACHINE_TYPE: Final = "pc-i440fx-7.2"
"""QEMU 7.2's default machine type on x86 (``pc``; ``is-default`` in ``query-machines``)."""

DEFAULT_CPU_MODEL: Final = "qemu64"
"""The CPU model of the ``pc`` machines when ``-cpu`` is not given (``default-cpu-type``)."""

DEFAULT_RAM_SIZE: Final = 128 << 20
"""QEMU's default RAM size on x86 (``mc->default_ram_size``), also ``qmonitor run``'s."""


class CpuTopology(Record):
    """``-smp``'s topology: sockets x dies x cores x threads (hw/core/machine-smp.c)."""

    __slots__ = ("cores", "dies", "sockets", "threads")

    sockets: Final[int]
    dies: Final[int]
    cores: Final[int]
    threads: Final[int]

    def __init__(self, sockets: int = 1, dies: int = 1, cores: int = 1, threads: int = 1) -> None:
        self.sockets = sockets
        self.dies = dies
        self.cores = cores
        self.threads = threads
        self.__post_init__()

    def __post_init__(self) -> None:
        for name in ("sockets", "dies", "cores", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"CPU topology: {name} must be at least 1")

    @property
    def max_cpus(self) -> int:
        """How many CPUs the topology has room for."""
        return self.sockets * self.dies * self.cores * self.threads


class SocketChardev(Record):
    """A ``socket`` chardev (``-chardev socket,...``, or ``-qmp``/``-monitor unix:|tcp:``).

    Values are kept as given, as QEMU keeps them to print ``query-chardev``'s ``filename``
    (chardev/char-socket.c ``qemu_chr_socket_address``): ``host`` and ``port`` are strings.
    ``fd`` names an inherited descriptor (``fd=N``).
    """

    __slots__ = ("family", "fd", "host", "path", "port", "server", "telnet")

    path: Final[str | None]
    host: Final[str | None]
    port: Final[str | None]
    fd: Final[str | None]
    server: Final[bool]
    telnet: Final[bool]
    family: Final[str | None]
    """``ipv4`` or ``ipv6`` for an address read from a socket (an inherited listening one):
    QEMU's ``SocketAddress`` then says which (util/qemu-sockets.c
    ``socket_sockaddr_to_address_inet``)."""

    def __init__(
        self,
        path: str | None = None,
        host: str | None = None,
        port: str | None = None,
        fd: str | None = None,
        server: bool = True,
        telnet: bool = False,
        family: str | None = None,
    ) -> None:
        self.path = path
        self.host = host
        self.port = port
        self.fd = fd
        self.server = server
        self.telnet = telnet
        self.family = family


class SimpleChardev(Record):
    """A chardev without a socket address (QOM type ``chardev-KIND``): ``stdio``, ``null``,
    ``file`` and ``pipe`` (``path``; a file's ``append=on``), ``pty`` (``device``: the
    ``/dev/pts/N`` it got, once opened), ``ringbuf``/``memory`` (``size``: the ring's bytes),
    and those recorded only (``vc``, ``serial``, ...)."""

    __slots__ = ("append", "device", "kind", "location", "path", "port", "size")
    NOT_COMPARED: ClassVar[frozenset[str]] = frozenset({"location"})

    kind: Final[str]
    path: Final[str | None]
    append: Final[bool]
    size: Final[int]
    device: Final[str | None]
    location: Final[str]
    """The option that made it, as typed: where QEMU's errors about opening it are located."""
    port: Final[str]
    """``serial``/``parallel`` for a ``-serial``/``-parallel`` chardev (QEMU names the device
    when it cannot open one)."""

    def __init__(
        self,
        kind: str,
        path: str | None = None,
        append: bool = False,
        size: int = 0,
        device: str | None = None,
        location: str = "",
        port: str = "",
    ) -> None:
        self.kind = kind
        self.path = path
        self.append = append
        self.size = size
        self.device = device
        self.location = location
        self.port = port


ChardevBackend = SocketChardev | SimpleChardev


class ChardevConfig(Record):
    """One chardev: its id (``label``), backend, and whether a frontend (a monitor) uses it."""

    __slots__ = ("backend", "frontend", "label")

    label: Final[str]
    backend: Final[ChardevBackend]
    frontend: Final[bool]

    def __init__(self, label: str, backend: ChardevBackend, frontend: bool = True) -> None:
        self.label = label
        self.backend = backend
        self.frontend = frontend

    @property
    def qom_type(self) -> str:
        """Its QOM type under ``/chardevs``: ``chardev-socket``, ``chardev-stdio``, ..."""
        if isinstance(self.backend, SocketChardev):
            return "chardev-socket"
        return f"chardev-{self.backend.kind}"


class ObjectConfig(Record):
    """An ``-object``: QOM type, id and properties (JSON values)."""

    __slots__ = ("id", "properties", "qom_type")

    qom_type: Final[str]
    id: Final[str]
    properties: Final[Mapping[str, Any]]

    def __init__(self, qom_type: str, id: str, properties: Mapping[str, Any] | None = None) -> None:
        self.qom_type = qom_type
        self.id = id
        self.properties = {} if properties is None else properties


class DeviceConfig(Record):
    """A ``-device``: driver, optional id and properties. Devices are listed under
    ``/machine/peripheral`` (with an id) or ``/machine/peripheral-anon`` (without); their
    behaviour is not simulated."""

    __slots__ = ("driver", "id", "properties")

    driver: Final[str]
    id: Final[str | None]
    properties: Final[Mapping[str, Any]]

    def __init__(
        self, driver: str, id: str | None = None, properties: Mapping[str, Any] | None = None
    ) -> None:
        self.driver = driver
        self.id = id
        self.properties = {} if properties is None else properties


class MachineConfig(Record):
    """The machine's configuration (see the module docstring).

    ``machine_type`` may be an alias (``pc``, ``q35``); the capability profile resolves it.
    ``cpus`` is the number of CPUs present at start, at most ``topology.max_cpus``. ``uuid`` is
    ``-uuid``'s (``query-uuid``); None leaves the machine's own. ``ram_size`` 0 means no RAM,
    as for ``-machine none`` without ``-m``.
    """

    __slots__ = (
        "chardevs",
        "cpu_model",
        "cpus",
        "devices",
        "machine_type",
        "objects",
        "ram_size",
        "topology",
        "uuid",
    )

    machine_type: Final[str]
    cpu_model: Final[str]
    cpus: Final[int]
    topology: Final[CpuTopology]
    uuid: Final[str | None]
    ram_size: Final[int]
    chardevs: Final[tuple[ChardevConfig, ...]]
    objects: Final[tuple[ObjectConfig, ...]]
    devices: Final[tuple[DeviceConfig, ...]]

    def __init__(
        self,
        machine_type: str = DEFAULT_MACHINE_TYPE,
        cpu_model: str = DEFAULT_CPU_MODEL,
        cpus: int = 1,
        topology: CpuTopology | None = None,
        uuid: str | None = None,
        ram_size: int = DEFAULT_RAM_SIZE,
        chardevs: tuple[ChardevConfig, ...] = (),
        objects: tuple[ObjectConfig, ...] = (),
        devices: tuple[DeviceConfig, ...] = (),
    ) -> None:
        self.machine_type = machine_type
        self.cpu_model = cpu_model
        self.cpus = cpus
        self.topology = CpuTopology() if topology is None else topology
        self.uuid = uuid
        self.ram_size = ram_size
        self.chardevs = chardevs
        self.objects = objects
        self.devices = devices
        self.__post_init__()

    def __post_init__(self) -> None:
        if not 0 <= self.cpus <= self.topology.max_cpus:
            raise ValueError(
                f"{self.cpus} CPUs do not fit the topology ({self.topology.max_cpus} at most)"
            )
        labels = [chardev.label for chardev in self.chardevs]
        if len(set(labels)) != len(labels):
            raise ValueError("two chardevs have the same id")
        ids = [item.id for item in self.objects]
        if len(set(ids)) != len(ids):
            raise ValueError("two objects have the same id")
