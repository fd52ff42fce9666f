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
from dataclasses import dataclass, field
from typing import Any, Final

DEFAULT_MACHINE_TYPE: Final = "pc-i440fx-7.2"
"""QEMU 7.2's default machine type on x86 (``pc``; ``is-default`` in ``query-machines``)."""

DEFAULT_CPU_MODEL: Final = "qemu64"
"""The CPU model of the ``pc`` machines when ``-cpu`` is not given (``default-cpu-type``)."""

DEFAULT_RAM_SIZE: Final = 128 << 20
"""QEMU's default RAM size on x86 (``mc->default_ram_size``), also ``qmonitor run``'s."""


@dataclass(frozen=True, slots=True)
class CpuTopology:
    """``-smp``'s topology: sockets x dies x cores x threads (hw/core/machine-smp.c)."""

    sockets: int = 1
    dies: int = 1
    cores: int = 1
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("sockets", "dies", "cores", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"CPU topology: {name} must be at least 1")

    @property
    def max_cpus(self) -> int:
        """How many CPUs the topology has room for."""
        return self.sockets * self.dies * self.cores * self.threads


@dataclass(frozen=True, slots=True)
class SocketChardev:
    """A ``socket`` chardev (``-chardev socket,...``, or ``-qmp``/``-monitor unix:|tcp:``).

    Values are kept as given, as QEMU keeps them to print ``query-chardev``'s ``filename``
    (chardev/char-socket.c ``qemu_chr_socket_address``): ``host`` and ``port`` are strings.
    ``fd`` names an inherited descriptor (``fd=N``).
    """

    path: str | None = None
    host: str | None = None
    port: str | None = None
    fd: str | None = None
    server: bool = True
    telnet: bool = False
    family: str | None = None
    """``ipv4`` or ``ipv6`` for an address read from a socket (an inherited listening one):
    QEMU's ``SocketAddress`` then says which (util/qemu-sockets.c
    ``socket_sockaddr_to_address_inet``)."""


@dataclass(frozen=True, slots=True)
class SimpleChardev:
    """A chardev without a socket address (QOM type ``chardev-KIND``): ``stdio``, ``null``,
    ``file`` and ``pipe`` (``path``; a file's ``append=on``), ``pty`` (``device``: the
    ``/dev/pts/N`` it got, once opened), ``ringbuf``/``memory`` (``size``: the ring's bytes),
    and those recorded only (``vc``, ``serial``, ...)."""

    kind: str
    path: str | None = None
    append: bool = False
    size: int = 0
    device: str | None = None
    location: str = field(default="", compare=False)
    """The option that made it, as typed: where QEMU's errors about opening it are located."""
    port: str = ""
    """``serial``/``parallel`` for a ``-serial``/``-parallel`` chardev (QEMU names the device
    when it cannot open one)."""


ChardevBackend = SocketChardev | SimpleChardev


@dataclass(frozen=True, slots=True)
class ChardevConfig:
    """One chardev: its id (``label``), backend, and whether a frontend (a monitor) uses it."""

    label: str
    backend: ChardevBackend
    frontend: bool = True

    @property
    def qom_type(self) -> str:
        """Its QOM type under ``/chardevs``: ``chardev-socket``, ``chardev-stdio``, ..."""
        if isinstance(self.backend, SocketChardev):
            return "chardev-socket"
        return f"chardev-{self.backend.kind}"


@dataclass(frozen=True, slots=True)
class ObjectConfig:
    """An ``-object``: QOM type, id and properties (JSON values)."""

    qom_type: str
    id: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """A ``-device``: driver, optional id and properties. Devices are listed under
    ``/machine/peripheral`` (with an id) or ``/machine/peripheral-anon`` (without); their
    behaviour is not simulated."""

    driver: str
    id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MachineConfig:
    """The machine's configuration (see the module docstring).

    ``machine_type`` may be an alias (``pc``, ``q35``); the capability profile resolves it.
    ``cpus`` is the number of CPUs present at start, at most ``topology.max_cpus``. ``uuid`` is
    ``-uuid``'s (``query-uuid``); None leaves the machine's own. ``ram_size`` 0 means no RAM,
    as for ``-machine none`` without ``-m``.
    """

    machine_type: str = DEFAULT_MACHINE_TYPE
    cpu_model: str = DEFAULT_CPU_MODEL
    cpus: int = 1
    topology: CpuTopology = field(default_factory=CpuTopology)
    uuid: str | None = None
    ram_size: int = DEFAULT_RAM_SIZE
    chardevs: tuple[ChardevConfig, ...] = ()
    objects: tuple[ObjectConfig, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()

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
