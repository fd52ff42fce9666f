"""The typed result of parsing a QEMU command line: what was given, as QEMU understood it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Final, Literal

from qmonitor.cmdline.errors import Diagnostic
from qmonitor.cmdline.machines import SmpTopology
from qmonitor.core.record import Record

if TYPE_CHECKING:
    from uuid import UUID

MonitorMode = Literal["control", "readline"]


class UnixSocketAddress(Record):
    """``path=``: a unix socket (``abstract``/``tight`` are Linux's abstract namespace)."""

    __slots__ = ("abstract", "path", "tight")

    path: Final[str]
    abstract: Final[bool]
    tight: Final[bool]

    def __init__(self, path: str, abstract: bool = False, tight: bool = True) -> None:
        self.path = path
        self.abstract = abstract
        self.tight = tight


class InetSocketAddress(Record):
    """``host=``/``port=``: a TCP socket; ``port`` is text, as QEMU keeps it (a service name)."""

    __slots__ = ("host", "ipv4", "ipv6", "port", "to")

    host: Final[str]
    port: Final[str]
    ipv4: Final[bool | None]
    ipv6: Final[bool | None]
    to: Final[int | None]  # try ports up to this one when listening

    def __init__(
        self,
        host: str,
        port: str,
        ipv4: bool | None = None,
        ipv6: bool | None = None,
        to: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.to = to


class FdSocketAddress(Record):
    """``fd=``: a socket the launcher passed down, listening (libvirt) or connected
    (QEMUMachine's socketpair)."""

    __slots__ = ("fd",)

    fd: Final[int]

    def __init__(self, fd: int) -> None:
        self.fd = fd


SocketAddress = UnixSocketAddress | InetSocketAddress | FdSocketAddress


class Chardev(Record):
    """One character device (``-chardev``, or made by ``-qmp``/``-monitor`` from an address).

    ``backend`` is QEMU's backend name after alias translation (``socket``, ``stdio``,
    ``null``, ...). For a socket, ``address``, ``server`` and ``wait`` say where and how; QEMU's
    default is a client (``server=off``), and ``wait`` (on by default) only applies to a
    server. ``options`` holds every parameter as text, for what is not modelled here
    (``telnet``, ``reconnect``, ``logfile``, ...). ``location`` is the option that made it, as
    typed (``-qmp unix:P,server=on``), which QEMU's reports about it start with once it is
    created (the ``QEMU waiting for connection`` of a ``wait=on`` server).
    """

    __slots__ = ("address", "backend", "id", "location", "mux", "options", "port", "server", "wait")
    NOT_COMPARED: ClassVar[frozenset[str]] = frozenset({"location"})

    id: Final[str]
    backend: Final[str]
    address: Final[SocketAddress | None]
    server: Final[bool]
    wait: Final[bool]
    mux: Final[bool]
    options: Final[Mapping[str, str]]
    location: Final[str]
    port: Final[str]
    """``serial`` or ``parallel`` for the chardev of a ``-serial``/``-parallel`` option: the
    device QEMU connects to it (a machine's ISA port), named in QEMU's errors about it."""

    def __init__(
        self,
        id: str,
        backend: str,
        address: SocketAddress | None = None,
        server: bool = False,
        wait: bool = True,
        mux: bool = False,
        options: Mapping[str, str] | None = None,
        location: str = "",
        port: str = "",
    ) -> None:
        self.id = id
        self.backend = backend
        self.address = address
        self.server = server
        self.wait = wait
        self.mux = mux
        self.options = {} if options is None else options
        self.location = location
        self.port = port


class MonitorSpec(Record):
    """A monitor (``-mon``, ``-qmp``, ``-qmp-pretty``, ``-monitor``) on a chardev.

    ``mode`` is ``control`` (QMP) or ``readline`` (the human monitor); ``id`` is the ``-mon``
    id, or QEMU's ``compat_monitorN`` label for the short forms.
    """

    __slots__ = ("chardev", "id", "mode", "pretty")

    chardev: Final[Chardev]
    mode: Final[MonitorMode]
    pretty: Final[bool]
    id: Final[str | None]

    def __init__(
        self, chardev: Chardev, mode: MonitorMode, pretty: bool = False, id: str | None = None
    ) -> None:
        self.chardev = chardev
        self.mode = mode
        self.pretty = pretty
        self.id = id


class MachineSpec(Record):
    """``-machine``/``-M`` (and the options QEMU turns into machine properties).

    ``type`` is the machine type's canonical name (``pc`` is ``pc-i440fx-7.2``), the default
    one if none was given; ``properties`` is the rest of the machine dictionary as QEMU's
    keyval parser built it (strings, and objects for dotted keys), with ``accel``, ``memory``
    and ``smp`` taken out (see :class:`QemuCommandLine`).
    """

    __slots__ = ("properties", "type", "type_given")

    type: Final[str]
    type_given: Final[bool]
    properties: Final[Mapping[str, object]]

    def __init__(
        self, type: str, type_given: bool, properties: Mapping[str, object] | None = None
    ) -> None:
        self.type = type
        self.type_given = type_given
        self.properties = {} if properties is None else properties


class Accelerator(Record):
    """One accelerator to try, in order (``-accel NAME,PROP=VALUE`` or ``accel=a:b``)."""

    __slots__ = ("name", "properties")

    name: Final[str]
    properties: Final[Mapping[str, str]]

    def __init__(self, name: str, properties: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.properties = {} if properties is None else properties


class GlobalProperty(Record):
    """``-global DRIVER.PROPERTY=VALUE``."""

    __slots__ = ("driver", "property", "value")

    driver: Final[str]
    property: Final[str]
    value: Final[str]

    def __init__(self, driver: str, property: str, value: str) -> None:
        self.driver = driver
        self.property = property
        self.value = value


class OwnOption(Record):
    """A ``--double-dash`` option of the program's own, passed through in order."""

    __slots__ = ("name", "value")

    name: Final[str]
    value: Final[str | None]

    def __init__(self, name: str, value: str | None) -> None:
        self.name = name
        self.value = value


class QemuCommandLine(Record):
    """Everything a QEMU command line gave, checked and typed as QEMU reads it.

    Options QEMU stops at (``-version``, ``-help``) set ``version``/``help`` and end the
    parse: what follows them is only checked for being options. ``options`` lists every QEMU
    option in order as ``(name, argument)``, with the name without dashes. ``reports`` are
    the warnings and non-fatal messages QEMU prints on the way (deprecations, an accelerator
    it does not know), for the caller to print.
    """

    __slots__ = (
        "accelerators",
        "argv",
        "audiodevs",
        "boot",
        "chardevs",
        "cpu",
        "daemonize",
        "debug_threads",
        "default_monitor",
        "defaults",
        "devices",
        "display",
        "globals",
        "help",
        "incoming",
        "machine",
        "max_ram_size",
        "monitors",
        "msg_guest_name",
        "msg_timestamp",
        "name",
        "no_reboot",
        "no_shutdown",
        "nographic",
        "objects",
        "options",
        "overcommit_cpu_pm",
        "overcommit_mem_lock",
        "own_options",
        "parallels",
        "pidfile",
        "process_name",
        "ram_size",
        "ram_size_given",
        "ram_slots",
        "reports",
        "rtc",
        "sandbox",
        "serials",
        "smp",
        "start_paused",
        "user_config",
        "uuid",
        "version",
        "vga",
    )

    argv: Final[tuple[str, ...]]
    options: Final[tuple[tuple[str, str | None], ...]]
    version: Final[bool]
    help: Final[bool]
    name: Final[str | None]
    process_name: Final[str | None]
    debug_threads: Final[bool | None]
    uuid: Final[UUID | None]
    ram_size: Final[int]  # bytes, aligned up to 8 KiB; the machine's default
    ram_size_given: Final[bool]
    max_ram_size: Final[int | None]  # -m maxmem=
    ram_slots: Final[int | None]  # -m slots=
    smp: Final[SmpTopology]
    machine: Final[MachineSpec]
    accelerators: Final[tuple[Accelerator, ...]]
    cpu: Final[str | None]
    start_paused: Final[bool]
    incoming: Final[str | None]
    no_shutdown: Final[bool]
    no_reboot: Final[bool]
    pidfile: Final[str | None]
    daemonize: Final[bool]
    chardevs: Final[tuple[Chardev, ...]]
    monitors: Final[tuple[MonitorSpec, ...]]
    default_monitor: Final[bool]  # no -monitor/-qmp/-mon (nor a "mon:" serial) was given
    defaults: Final[bool]  # no -nodefaults
    user_config: Final[bool]  # no -no-user-config
    display: Final[Mapping[str, object] | None]  # -display as a QAPI DisplayOptions dict
    nographic: Final[bool]
    vga: Final[str | None]
    objects: Final[tuple[Mapping[str, object], ...]]
    devices: Final[tuple[Mapping[str, object], ...]]
    audiodevs: Final[tuple[Mapping[str, object], ...]]
    globals: Final[tuple[GlobalProperty, ...]]
    serials: Final[tuple[str, ...]]
    parallels: Final[tuple[str, ...]]
    rtc: Final[Mapping[str, str]]
    boot: Final[Mapping[str, str]]
    sandbox: Final[Mapping[str, str]]
    overcommit_mem_lock: Final[bool]
    overcommit_cpu_pm: Final[bool]
    msg_timestamp: Final[bool]
    msg_guest_name: Final[bool]
    own_options: Final[tuple[OwnOption, ...]]
    reports: Final[tuple[Diagnostic, ...]]

    def __init__(
        self,
        argv: tuple[str, ...],
        options: tuple[tuple[str, str | None], ...] = (),
        version: bool = False,
        help: bool = False,
        name: str | None = None,
        process_name: str | None = None,
        debug_threads: bool | None = None,
        uuid: UUID | None = None,
        ram_size: int = 128 * 1024 * 1024,
        ram_size_given: bool = False,
        max_ram_size: int | None = None,
        ram_slots: int | None = None,
        smp: SmpTopology | None = None,
        machine: MachineSpec | None = None,
        accelerators: tuple[Accelerator, ...] = (),
        cpu: str | None = None,
        start_paused: bool = False,
        incoming: str | None = None,
        no_shutdown: bool = False,
        no_reboot: bool = False,
        pidfile: str | None = None,
        daemonize: bool = False,
        chardevs: tuple[Chardev, ...] = (),
        monitors: tuple[MonitorSpec, ...] = (),
        default_monitor: bool = True,
        defaults: bool = True,
        user_config: bool = True,
        display: Mapping[str, object] | None = None,
        nographic: bool = False,
        vga: str | None = None,
        objects: tuple[Mapping[str, object], ...] = (),
        devices: tuple[Mapping[str, object], ...] = (),
        audiodevs: tuple[Mapping[str, object], ...] = (),
        globals: tuple[GlobalProperty, ...] = (),
        serials: tuple[str, ...] = (),
        parallels: tuple[str, ...] = (),
        rtc: Mapping[str, str] | None = None,
        boot: Mapping[str, str] | None = None,
        sandbox: Mapping[str, str] | None = None,
        overcommit_mem_lock: bool = False,
        overcommit_cpu_pm: bool = False,
        msg_timestamp: bool = False,
        msg_guest_name: bool = False,
        own_options: tuple[OwnOption, ...] = (),
        reports: tuple[Diagnostic, ...] = (),
    ) -> None:
        self.argv = argv
        self.options = options
        self.version = version
        self.help = help
        self.name = name
        self.process_name = process_name
        self.debug_threads = debug_threads
        self.uuid = uuid
        self.ram_size = ram_size
        self.ram_size_given = ram_size_given
        self.max_ram_size = max_ram_size
        self.ram_slots = ram_slots
        self.smp = SmpTopology(1, 1, 1, 1, 1, 1, 1) if smp is None else smp
        self.machine = (
            MachineSpec("pc-i440fx-7.2", type_given=False) if machine is None else machine
        )
        self.accelerators = accelerators
        self.cpu = cpu
        self.start_paused = start_paused
        self.incoming = incoming
        self.no_shutdown = no_shutdown
        self.no_reboot = no_reboot
        self.pidfile = pidfile
        self.daemonize = daemonize
        self.chardevs = chardevs
        self.monitors = monitors
        self.default_monitor = default_monitor
        self.defaults = defaults
        self.user_config = user_config
        self.display = display
        self.nographic = nographic
        self.vga = vga
        self.objects = objects
        self.devices = devices
        self.audiodevs = audiodevs
        self.globals = globals
        self.serials = serials
        self.parallels = parallels
        self.rtc = {} if rtc is None else rtc
        self.boot = {} if boot is None else boot
        self.sandbox = {} if sandbox is None else sandbox
        self.overcommit_mem_lock = overcommit_mem_lock
        self.overcommit_cpu_pm = overcommit_cpu_pm
        self.msg_timestamp = msg_timestamp
        self.msg_guest_name = msg_guest_name
        self.own_options = own_options
        self.reports = reports
