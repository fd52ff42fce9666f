"""The machine types of qemu-system-x86_64 7.2 and QEMU's CPU topology rules for ``-smp``.

``-machine TYPE`` is checked against the types QEMU 7.2 has (captured from ``query-machines``
and ``-machine help`` of the real binary), and ``-smp`` is completed and checked by a port of
hw/core/machine-smp.c ``machine_parse_smp_config()``, whose outcome depends on the machine:
its CPU maximum, whether it has dies (the PC machines do), and whether it prefers sockets over
cores when filling in what was left out (PC machine types up to 6.1).
"""

from __future__ import annotations

from typing import Final

from qmonitor.cmdline.keyval import KeyvalDict
from qmonitor.core.cutils import qemu_strtoi64
from qmonitor.core.errors import QMonitorError
from qmonitor.core.record import Record


class MachineType(Record):
    """What ``-smp`` and ``-m`` need to know of a machine type (its MachineClass)."""

    __slots__ = ("alias", "cpu_max", "default_ram_size", "dies_supported", "name", "prefer_sockets")

    name: Final[str]
    cpu_max: Final[int]  # mc->max_cpus, query-machines "cpu-max"
    dies_supported: Final[bool]  # mc->smp_props.dies_supported
    prefer_sockets: Final[bool]  # mc->smp_props.prefer_sockets (machine types up to 6.1)
    default_ram_size: Final[int]  # mc->default_ram_size, used without -m
    alias: Final[str | None]

    def __init__(
        self,
        name: str,
        cpu_max: int,
        dies_supported: bool,
        prefer_sockets: bool,
        default_ram_size: int,
        alias: str | None = None,
    ) -> None:
        self.name = name
        self.cpu_max = cpu_max
        self.dies_supported = dies_supported
        self.prefer_sockets = prefer_sockets
        self.default_ram_size = default_ram_size
        self.alias = alias


_MIB: Final = 1024 * 1024
_PC_VERSIONS: Final = [
    "1.4",
    "1.5",
    "1.6",
    "1.7",
    "2.0",
    "2.1",
    "2.2",
    "2.3",
    "2.4",
    "2.5",
    "2.6",
    "2.7",
    "2.8",
    "2.9",
    "2.10",
    "2.11",
    "2.12",
    "3.0",
    "3.1",
    "4.0",
    "4.1",
    "4.2",
    "5.0",
    "5.1",
    "5.2",
    "6.0",
    "6.1",
    "6.2",
    "7.0",
    "7.1",
    "7.2",
]
_Q35_VERSIONS: Final = [
    "2.4",
    "2.5",
    "2.6",
    "2.7",
    "2.8",
    "2.9",
    "2.10",
    "2.11",
    "2.12",
    "3.0",
    "3.1",
    "4.0",
    "4.0.1",
    "4.1",
    "4.2",
    "5.0",
    "5.1",
    "5.2",
    "6.0",
    "6.1",
    "6.2",
    "7.0",
    "7.1",
    "7.2",
]


def _before_6_2(version: str) -> bool:
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) < (6, 2)


def _machine_types() -> dict[str, MachineType]:
    types = [
        MachineType("none", 1, False, False, 0),
        MachineType("isapc", 1, True, False, 128 * _MIB),
        MachineType("microvm", 288, False, False, 128 * _MIB),
        MachineType("x-remote", 1, False, False, 128 * _MIB),
    ]
    for version in _PC_VERSIONS:
        alias = "pc" if version == "7.2" else None
        types.append(
            MachineType(f"pc-i440fx-{version}", 255, True, _before_6_2(version), 128 * _MIB, alias)
        )
    for version in _Q35_VERSIONS:
        # query-machines: pc-q35-2.4 to 2.7 have 255 CPUs at most, later ones 288.
        cpu_max = 255 if version in ("2.4", "2.5", "2.6", "2.7") else 288
        alias = "q35" if version == "7.2" else None
        types.append(
            MachineType(f"pc-q35-{version}", cpu_max, True, _before_6_2(version), 128 * _MIB, alias)
        )
    return {machine.name: machine for machine in types}


MACHINE_TYPES: Final = _machine_types()
DEFAULT_MACHINE_TYPE: Final = "pc-i440fx-7.2"  # query-machines "is-default"


def find_machine_type(name: str) -> MachineType | None:
    """``find_machine()``: a type by its name or its alias (``pc``, ``q35``)."""
    machine = MACHINE_TYPES.get(name)
    if machine is not None:
        return machine
    for candidate in MACHINE_TYPES.values():
        if candidate.alias == name:
            return candidate
    return None


class TopologyError(QMonitorError):
    """``-smp`` QEMU refuses, with its message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SmpTopology(Record):
    """The machine's CPU topology after QEMU has filled in what ``-smp`` left out."""

    __slots__ = ("clusters", "cores", "cpus", "dies", "max_cpus", "sockets", "threads")

    cpus: Final[int]
    sockets: Final[int]
    dies: Final[int]
    clusters: Final[int]
    cores: Final[int]
    threads: Final[int]
    max_cpus: Final[int]

    def __init__(
        self,
        cpus: int,
        sockets: int,
        dies: int,
        clusters: int,
        cores: int,
        threads: int,
        max_cpus: int,
    ) -> None:
        self.cpus = cpus
        self.sockets = sockets
        self.dies = dies
        self.clusters = clusters
        self.cores = cores
        self.threads = threads
        self.max_cpus = max_cpus


# qapi/machine.json SMPConfiguration, in visiting order; every member is an 'int'.
_SMP_MEMBERS: Final = ("cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus")
_U32: Final = 1 << 32


def _signed32(value: int) -> int:
    """An ``unsigned`` printed with ``%d``."""
    return value - _U32 if value >= 1 << 31 else value


def smp_configuration(config: KeyvalDict) -> dict[str, int]:
    """The keyval visitor over SMPConfiguration (``-smp``'s part of the machine dictionary).

    Members in schema order, each read by ``qemu_strtoi64()`` base 0, then any key left over,
    with the keyval input visitor's messages (qapi/qobject-input-visitor.c).
    """
    values: dict[str, int] = {}
    for member in _SMP_MEMBERS:
        if member not in config:
            continue
        text = config[member]
        if not isinstance(text, str):
            raise TopologyError(f"Parameters 'smp.{member}.*' are unexpected")
        conversion = qemu_strtoi64(text, 0)
        if conversion.error:
            raise TopologyError(f"Parameter 'smp.{member}' expects integer")
        values[member] = conversion.value
    for key in config:
        if key not in _SMP_MEMBERS:
            raise TopologyError(f"Parameter 'smp.{key}' is unexpected")
    return values


def _divide(dividend: int, *factors: int) -> int:
    """C ``unsigned`` division by a product of ``unsigned`` factors (which wraps at 2^32).

    A product that wraps to 0 is a division by zero, which crashes QEMU 7.2 (SIGFPE); here it
    is refused as the topology it cannot be.
    """
    divisor = 1
    for factor in factors:
        divisor = divisor * factor % _U32
    if divisor == 0:
        raise TopologyError("Invalid CPU topology: the product of the hierarchy overflows")
    return dividend // divisor


def smp_topology(machine: MachineType, config: dict[str, int]) -> tuple[SmpTopology, bool]:
    """hw/core/machine-smp.c machine_parse_smp_config(); returns (topology, warn_zero).

    ``warn_zero`` is QEMU's warning "Deprecated CPU topology (considered invalid): CPU
    topology parameters must be greater than zero" for an explicit 0. Clusters exist on no
    x86 machine, so they must be 1 if given. The arithmetic is QEMU's, in C ``unsigned``.
    """
    warn_zero = any(value == 0 for value in config.values())
    cpus, sockets, dies, clusters, cores, threads, max_cpus = (
        config.get(member, 0) % _U32 for member in _SMP_MEMBERS
    )
    if not machine.dies_supported and dies > 1:
        raise TopologyError("dies not supported by this machine's CPU topology")
    if clusters > 1:
        raise TopologyError("clusters not supported by this machine's CPU topology")
    dies = dies or 1
    clusters = clusters or 1
    if cpus == 0 and max_cpus == 0:
        sockets = sockets or 1
        cores = cores or 1
        threads = threads or 1
    else:
        max_cpus = max_cpus or cpus
        if machine.prefer_sockets:
            if sockets == 0:
                cores = cores or 1
                threads = threads or 1
                sockets = _divide(max_cpus, dies, clusters, cores, threads)
            elif cores == 0:
                threads = threads or 1
                cores = _divide(max_cpus, sockets, dies, clusters, threads)
        elif cores == 0:
            sockets = sockets or 1
            threads = threads or 1
            cores = _divide(max_cpus, sockets, dies, clusters, threads)
        elif sockets == 0:
            threads = threads or 1
            sockets = _divide(max_cpus, dies, clusters, cores, threads)
        if threads == 0:
            threads = _divide(max_cpus, sockets, dies, clusters, cores)
    product = sockets * dies * clusters * cores * threads % _U32
    max_cpus = max_cpus or product
    cpus = cpus or max_cpus
    hierarchy = f"sockets ({sockets})"
    if machine.dies_supported:
        hierarchy += f" * dies ({dies})"
    hierarchy += f" * cores ({cores}) * threads ({threads})"
    if product != max_cpus:
        raise TopologyError(
            "Invalid CPU topology: product of the hierarchy must match maxcpus: "
            f"{hierarchy} != maxcpus ({max_cpus})"
        )
    if max_cpus < cpus:
        raise TopologyError(
            "Invalid CPU topology: maxcpus must be equal to or greater than smp: "
            f"{hierarchy} == maxcpus ({max_cpus}) < smp_cpus ({cpus})"
        )
    if cpus < 1:
        raise TopologyError(
            f"Invalid SMP CPUs {cpus}. The min CPUs supported by machine '{machine.name}' is 1"
        )
    if max_cpus > machine.cpu_max:
        raise TopologyError(
            f"Invalid SMP CPUs {_signed32(max_cpus)}. The max CPUs supported by machine "
            f"'{machine.name}' is {machine.cpu_max}"
        )
    topology = SmpTopology(cpus, sockets, dies, clusters, cores, threads, max_cpus)
    return topology, warn_zero
