"""The typed result of parsing a QEMU command line: what was given, as QEMU understood it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from qmonitor.cmdline.errors import Diagnostic
from qmonitor.cmdline.machines import SmpTopology

MonitorMode = Literal["control", "readline"]


@dataclass(frozen=True, slots=True)
class UnixSocketAddress:
    """``path=``: a unix socket (``abstract``/``tight`` are Linux's abstract namespace)."""

    path: str
    abstract: bool = False
    tight: bool = True


@dataclass(frozen=True, slots=True)
class InetSocketAddress:
    """``host=``/``port=``: a TCP socket; ``port`` is text, as QEMU keeps it (a service name)."""

    host: str
    port: str
    ipv4: bool | None = None
    ipv6: bool | None = None
    to: int | None = None  # try ports up to this one when listening


@dataclass(frozen=True, slots=True)
class FdSocketAddress:
    """``fd=``: a socket the launcher passed down, listening (libvirt) or connected
    (QEMUMachine's socketpair)."""

    fd: int


SocketAddress = UnixSocketAddress | InetSocketAddress | FdSocketAddress


@dataclass(frozen=True, slots=True)
class Chardev:
    """One character device (``-chardev``, or made by ``-qmp``/``-monitor`` from an address).

    ``backend`` is QEMU's backend name after alias translation (``socket``, ``stdio``,
    ``null``, ...). For a socket, ``address``, ``server`` and ``wait`` say where and how; QEMU's
    default is a client (``server=off``), and ``wait`` (on by default) only applies to a
    server. ``options`` holds every parameter as text, for what is not modelled here
    (``telnet``, ``reconnect``, ``logfile``, ...). ``location`` is the option that made it, as
    typed (``-qmp unix:P,server=on``), which QEMU's reports about it start with once it is
    created (the ``QEMU waiting for connection`` of a ``wait=on`` server).
    """

    id: str
    backend: str
    address: SocketAddress | None = None
    server: bool = False
    wait: bool = True
    mux: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    location: str = field(default="", compare=False)
    port: str = ""
    """``serial`` or ``parallel`` for the chardev of a ``-serial``/``-parallel`` option: the
    device QEMU connects to it (a machine's ISA port), named in QEMU's errors about it."""


@dataclass(frozen=True, slots=True)
class MonitorSpec:
    """A monitor (``-mon``, ``-qmp``, ``-qmp-pretty``, ``-monitor``) on a chardev.

    ``mode`` is ``control`` (QMP) or ``readline`` (the human monitor); ``id`` is the ``-mon``
    id, or QEMU's ``compat_monitorN`` label for the short forms.
    """

    chardev: Chardev
    mode: MonitorMode
    pretty: bool = False
    id: str | None = None


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """``-machine``/``-M`` (and the options QEMU turns into machine properties).

    ``type`` is the machine type's canonical name (``pc`` is ``pc-i440fx-7.2``), the default
    one if none was given; ``properties`` is the rest of the machine dictionary as QEMU's
    keyval parser built it (strings, and objects for dotted keys), with ``accel``, ``memory``
    and ``smp`` taken out (see :class:`QemuCommandLine`).
    """

    type: str
    type_given: bool
    properties: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Accelerator:
    """One accelerator to try, in order (``-accel NAME,PROP=VALUE`` or ``accel=a:b``)."""

    name: str
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GlobalProperty:
    """``-global DRIVER.PROPERTY=VALUE``."""

    driver: str
    property: str
    value: str


@dataclass(frozen=True, slots=True)
class OwnOption:
    """A ``--double-dash`` option of the program's own, passed through in order."""

    name: str
    value: str | None


@dataclass(frozen=True, slots=True)
class QemuCommandLine:
    """Everything a QEMU command line gave, checked and typed as QEMU reads it.

    Options QEMU stops at (``-version``, ``-help``) set ``version``/``help`` and end the
    parse: what follows them is only checked for being options. ``options`` lists every QEMU
    option in order as ``(name, argument)``, with the name without dashes. ``reports`` are
    the warnings and non-fatal messages QEMU prints on the way (deprecations, an accelerator
    it does not know), for the caller to print.
    """

    argv: tuple[str, ...]
    options: tuple[tuple[str, str | None], ...] = ()
    version: bool = False
    help: bool = False
    name: str | None = None
    process_name: str | None = None
    debug_threads: bool | None = None
    uuid: uuid.UUID | None = None
    ram_size: int = 128 * 1024 * 1024  # bytes, aligned up to 8 KiB; the machine's default
    ram_size_given: bool = False
    max_ram_size: int | None = None  # -m maxmem=
    ram_slots: int | None = None  # -m slots=
    smp: SmpTopology = field(default_factory=lambda: SmpTopology(1, 1, 1, 1, 1, 1, 1))
    machine: MachineSpec = field(
        default_factory=lambda: MachineSpec("pc-i440fx-7.2", type_given=False)
    )
    accelerators: tuple[Accelerator, ...] = ()
    cpu: str | None = None
    start_paused: bool = False
    incoming: str | None = None
    no_shutdown: bool = False
    no_reboot: bool = False
    pidfile: str | None = None
    daemonize: bool = False
    chardevs: tuple[Chardev, ...] = ()
    monitors: tuple[MonitorSpec, ...] = ()
    default_monitor: bool = True  # no -monitor/-qmp/-mon (nor a "mon:" serial) was given
    defaults: bool = True  # no -nodefaults
    user_config: bool = True  # no -no-user-config
    display: Mapping[str, object] | None = None  # -display as a QAPI DisplayOptions dict
    nographic: bool = False
    vga: str | None = None
    objects: tuple[Mapping[str, object], ...] = ()
    devices: tuple[Mapping[str, object], ...] = ()
    audiodevs: tuple[Mapping[str, object], ...] = ()
    globals: tuple[GlobalProperty, ...] = ()
    serials: tuple[str, ...] = ()
    parallels: tuple[str, ...] = ()
    rtc: Mapping[str, str] = field(default_factory=dict)
    boot: Mapping[str, str] = field(default_factory=dict)
    sandbox: Mapping[str, str] = field(default_factory=dict)
    overcommit_mem_lock: bool = False
    overcommit_cpu_pm: bool = False
    msg_timestamp: bool = False
    msg_guest_name: bool = False
    own_options: tuple[OwnOption, ...] = ()
    reports: tuple[Diagnostic, ...] = ()
