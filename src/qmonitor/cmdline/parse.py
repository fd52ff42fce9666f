"""QEMU's command line, read in QEMU's order with QEMU's errors (softmmu/vl.c ``qemu_init()``).

QEMU reads its arguments twice. The first pass only looks options up: an unknown one is
``-xyz: invalid option``, a missing argument ``-m: requires an argument``, before any value is
looked at. The second pass handles the options in order; each value is parsed as its option
reads it (QemuOpts, keyval or JSON), and ``-version`` or ``-help`` ends the parse where it
stands. After the loop come the checks that need everything: sandbox and RTC settings, the
memory size, the machine type, the objects an :class:`~qmonitor.cmdline.objects.ObjectMaker`
makes, the chardevs, the machine's memory and CPU topology, the accelerators, the monitors and
the RAM backend, in that order. Every error is QEMU's text,
with the option it came from in front where QEMU puts it (``-m 64x: Parameter 'size' expects
...``); :class:`~qmonitor.cmdline.errors.CommandLineError` carries it.

What is not checked here (it needs QEMU's catalogs of devices, CPU models and properties, or
touches the host) is recorded for the caller: ``-device`` drivers, ``-cpu`` models,
``-machine`` properties other than memory and CPU topology, accelerator properties, ``-vga``
types, ``-audiodev`` members beyond their common ones, what ``-object`` types check when
QEMU creates them (those of an ObjectMaker excepted), file descriptors, socket paths,
migration URIs. ``-object`` members are checked against QEMU's schema
(:mod:`qmonitor.cmdline.qom_members`), imported on the first ``-object`` only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Final

from qmonitor.cmdline.chardev import (
    CHARDEV_OPTS,
    MON_OPTS,
    ChardevError,
    create_chardev,
    create_monitor,
    monitor_compat,
    parse_compat,
)
from qmonitor.cmdline.errors import CommandLineError, Diagnostic
from qmonitor.cmdline.keyval import (
    KeyvalDict,
    KeyvalError,
    keyval_merge,
    keyval_parse,
    keyval_parse_into,
)
from qmonitor.cmdline.machines import (
    DEFAULT_MACHINE_TYPE,
    MachineType,
    SmpTopology,
    TopologyError,
    find_machine_type,
    smp_configuration,
    smp_topology,
)
from qmonitor.cmdline.model import (
    Accelerator,
    Chardev,
    GlobalProperty,
    MachineSpec,
    MonitorMode,
    MonitorSpec,
    OwnOption,
    QemuCommandLine,
)
from qmonitor.cmdline.objects import ObjectError, ObjectMaker, ObjectOption
from qmonitor.cmdline.options import QEMU_OPTIONS, QemuOption
from qmonitor.cmdline.qapi import (
    BOOL,
    STR,
    InputForm,
    Member,
    QapiError,
    check_unexpected,
    visit_members,
    visit_struct,
)
from qmonitor.cmdline.qemuopts import (
    HelpRequested,
    OptsError,
    OptsStore,
    OptType,
    QemuOpts,
    QemuOptsList,
    is_help_option,
    parse_size_warning,
    qemu_opts_parse,
)
from qmonitor.cmdline.qjson import JSONValueError, parse_json_value
from qmonitor.core.cutils import qemu_strtosz, qemu_strtou64

if TYPE_CHECKING:
    from uuid import UUID

_S, _B, _N, _Z = OptType.STRING, OptType.BOOL, OptType.NUMBER, OptType.SIZE

# softmmu/vl.c option lists (the ones this module reads).
MEMORY_OPTS: Final = QemuOptsList(
    "memory", {"size": _Z, "slots": _N, "maxmem": _Z}, implied_opt_name="size", merge_lists=True
)
NAME_OPTS: Final = QemuOptsList(
    "name", {"guest": _S, "process": _S, "debug-threads": _B}, "guest", merge_lists=True
)
RTC_OPTS: Final = QemuOptsList("rtc", {"base": _S, "clock": _S, "driftfix": _S}, merge_lists=True)
ACCEL_OPTS: Final = QemuOptsList("accel", implied_opt_name="accel")
OBJECT_OPTS: Final = QemuOptsList("object", implied_opt_name="qom-type")
OVERCOMMIT_OPTS: Final = QemuOptsList("overcommit", {"mem-lock": _B, "cpu-pm": _B})
MSG_OPTS: Final = QemuOptsList("msg", {"timestamp": _B, "guest-name": _B})
# softmmu/qemu-seccomp.c qemu_sandbox_opts.
SANDBOX_OPTS: Final = QemuOptsList(
    "sandbox",
    {"enable": _B, "obsolete": _S, "elevateprivileges": _S, "spawn": _S, "resourcecontrol": _S},
    implied_opt_name="enable",
)
# softmmu/qdev-monitor.c qemu_device_opts and qemu_global_opts.
DEVICE_OPTS: Final = QemuOptsList("device", implied_opt_name="driver")
GLOBAL_OPTS: Final = QemuOptsList("global", {"driver": _S, "property": _S, "value": _S})

# qapi/qom.json ObjectType (every member is built into QEMU 7.2 for Linux x86_64).
OBJECT_TYPES: Final = tuple(
    [
        "authz-list",
        "authz-listfile",
        "authz-pam",
        "authz-simple",
        "can-bus",
        "can-host-socketcan",
        "colo-compare",
        "cryptodev-backend",
        "cryptodev-backend-builtin",
        "cryptodev-backend-lkcf",
        "cryptodev-vhost-user",
        "dbus-vmstate",
        "filter-buffer",
        "filter-dump",
        "filter-mirror",
        "filter-redirector",
        "filter-replay",
        "filter-rewriter",
        "input-barrier",
        "input-linux",
        "iothread",
        "main-loop",
        "memory-backend-epc",
        "memory-backend-file",
        "memory-backend-memfd",
        "memory-backend-ram",
        "pef-guest",
        "pr-manager-helper",
        "qtest",
        "rng-builtin",
        "rng-egd",
        "rng-random",
        "secret",
        "secret_keyring",
        "sev-guest",
        "thread-context",
        "s390-pv-guest",
        "throttle-group",
        "tls-creds-anon",
        "tls-creds-psk",
        "tls-creds-x509",
        "tls-cipher-suites",
        "x-remote-object",
        "x-vfio-user-server",
    ]
)
# QOM's name for QAPI's authz-listfile (authz/listfile.h): QEMU 7.2 refuses both spellings, one
# in its QAPI schema and the other when creating it; qmonitor accepts both (docs/SECURITY.md).
_OBJECT_TYPES_ACCEPTED: Final = (*OBJECT_TYPES, "authz-list-file")
_QAPI_OBJECT_TYPE: Final = {"authz-list-file": "authz-listfile"}
_MEMORY_BACKENDS: Final = frozenset(name for name in OBJECT_TYPES if name.startswith("memory-"))
# qapi/audio.json AudiodevDriver.
AUDIODEV_DRIVERS: Final = [
    "none",
    "alsa",
    "coreaudio",
    "dbus",
    "dsound",
    "jack",
    "oss",
    "pa",
    "sdl",
    "sndio",
    "spice",
    "wav",
]
# qapi/ui.json DisplayType, as built into Debian's QEMU 7.2 (no cocoa).
DISPLAY_TYPES: Final = (
    "default",
    "none",
    "gtk",
    "sdl",
    "egl-headless",
    "curses",
    "spice-app",
    "dbus",
)
_DISPLAY_BASE: Final[tuple[Member, ...]] = (
    ("type", DISPLAY_TYPES, True),
    ("full-screen", BOOL, False),
    ("window-close", BOOL, False),
    ("show-cursor", BOOL, False),
    ("gl", ("off", "on", "core", "es"), False),
)
_DISPLAY_VARIANTS: Final[dict[str, tuple[Member, ...]]] = {
    "gtk": (
        ("grab-on-hover", BOOL, False),
        ("zoom-to-fit", BOOL, False),
        ("show-tabs", BOOL, False),
        ("show-menubar", BOOL, False),
    ),
    "curses": (("charset", STR, False),),
    "egl-headless": (("rendernode", STR, False),),
    "dbus": (
        ("rendernode", STR, False),
        ("addr", STR, False),
        ("p2p", BOOL, False),
        ("audiodev", STR, False),
    ),
    "sdl": (("grab-mod", ("lctrl-lalt", "lshift-lctrl-lalt", "rctrl"), False),),
}
# Accelerators this QEMU build has (`-accel help`, plus qtest, which it leaves out).
ACCELERATORS: Final = frozenset(("tcg", "kvm", "qtest"))

# hw/core/machine.c machine_set_mem(): RAM sizes are rounded up to 8 KiB.
RAM_ALIGNMENT: Final = 8192

# QEMU options qmonitor reads; any other option QEMU has is refused (UNSUPPORTED).
UNSUPPORTED: Final = "option not supported by qmonitor"

# util/uuid.c qemu_uuid_is_valid(): 8-4-4-4-12 hex digits.
# These patterns are compiled by re.compile's cache at their first use (start-up time).
_UUID: Final = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# softmmu/rtc.c configure_rtc_base_datetime(): sscanf("%d-%d-%dT%d:%d:%d") or "%d-%d-%d".
_C_INT: Final = r"[ \t\n\v\f\r]*([-+]?[0-9]+)"
_RTC_DATETIME: Final = f"{_C_INT}-{_C_INT}-{_C_INT}T{_C_INT}:{_C_INT}:{_C_INT}"
_RTC_DATE: Final = f"{_C_INT}-{_C_INT}-{_C_INT}"


class _State:
    """What the second pass has gathered (vl.c's globals and option lists)."""

    __slots__ = (
        "argv",
        "at_daemonize",
        "audiodevs",
        "cpu",
        "created_ids",
        "current_location",
        "daemonize",
        "default_monitor",
        "defaults",
        "devices",
        "display",
        "globals",
        "guest_name",
        "incoming",
        "locations",
        "machine",
        "maker",
        "max_ram_size",
        "monitor_index",
        "no_reboot",
        "no_shutdown",
        "nographic",
        "object_options",
        "objects",
        "options",
        "overcommit_cpu_pm",
        "overcommit_mem_lock",
        "own_options",
        "parallel_locations",
        "parallels",
        "pidfile",
        "ram_size",
        "ram_size_given",
        "ram_slots",
        "reports",
        "serial_locations",
        "serials",
        "start_paused",
        "stdio_in_use",
        "store",
        "timestamp",
        "user_config",
        "uuid",
        "vga",
    )

    argv: tuple[str, ...]
    maker: ObjectMaker | None
    at_daemonize: DaemonizePoint | None
    store: OptsStore
    locations: dict[int, str]  # id(QemuOpts) -> location
    reports: list[Diagnostic]
    options: list[tuple[str, str | None]]
    own_options: list[OwnOption]
    machine: KeyvalDict  # vl.c machine_opts_dict
    current_location: str | None  # the option being handled, for help requests
    timestamp: bool
    guest_name: bool
    start_paused: bool
    no_shutdown: bool
    no_reboot: bool
    daemonize: bool
    defaults: bool
    user_config: bool
    nographic: bool
    uuid: UUID | None
    cpu: str | None
    vga: str | None
    incoming: str | None
    pidfile: str | None
    display: KeyvalDict | None
    overcommit_mem_lock: bool
    overcommit_cpu_pm: bool
    ram_size: int
    ram_size_given: bool
    max_ram_size: int | None
    ram_slots: int | None
    objects: list[dict[str, object]]
    object_options: list[tuple[ObjectOption, str]]  # + location
    created_ids: set[str]  # the objects made so far (/objects)
    devices: list[Mapping[str, object]]
    audiodevs: list[Mapping[str, object]]
    globals: list[GlobalProperty]
    serials: list[str]
    parallels: list[str]
    serial_locations: list[str]
    stdio_in_use: bool
    parallel_locations: list[str]
    monitor_index: int
    default_monitor: bool

    def __init__(
        self,
        argv: tuple[str, ...],
        maker: ObjectMaker | None = None,
        at_daemonize: DaemonizePoint | None = None,
        store: OptsStore | None = None,
        locations: dict[int, str] | None = None,
        reports: list[Diagnostic] | None = None,
        options: list[tuple[str, str | None]] | None = None,
        own_options: list[OwnOption] | None = None,
        machine: KeyvalDict | None = None,
        current_location: str | None = None,
        timestamp: bool = False,
        guest_name: bool = False,
        start_paused: bool = False,
        no_shutdown: bool = False,
        no_reboot: bool = False,
        daemonize: bool = False,
        defaults: bool = True,
        user_config: bool = True,
        nographic: bool = False,
        uuid: UUID | None = None,
        cpu: str | None = None,
        vga: str | None = None,
        incoming: str | None = None,
        pidfile: str | None = None,
        display: KeyvalDict | None = None,
        overcommit_mem_lock: bool = False,
        overcommit_cpu_pm: bool = False,
        ram_size: int = 0,
        ram_size_given: bool = False,
        max_ram_size: int | None = None,
        ram_slots: int | None = None,
        objects: list[dict[str, object]] | None = None,
        object_options: list[tuple[ObjectOption, str]] | None = None,
        created_ids: set[str] | None = None,
        devices: list[Mapping[str, object]] | None = None,
        audiodevs: list[Mapping[str, object]] | None = None,
        globals: list[GlobalProperty] | None = None,
        serials: list[str] | None = None,
        parallels: list[str] | None = None,
        serial_locations: list[str] | None = None,
        stdio_in_use: bool = False,
        parallel_locations: list[str] | None = None,
        monitor_index: int = 0,
        default_monitor: bool = True,
    ) -> None:
        self.argv = argv
        self.maker = maker
        self.at_daemonize = at_daemonize
        self.store = OptsStore() if store is None else store
        self.locations = {} if locations is None else locations
        self.reports = [] if reports is None else reports
        self.options = [] if options is None else options
        self.own_options = [] if own_options is None else own_options
        self.machine = {} if machine is None else machine
        self.current_location = current_location
        self.timestamp = timestamp
        self.guest_name = guest_name
        self.start_paused = start_paused
        self.no_shutdown = no_shutdown
        self.no_reboot = no_reboot
        self.daemonize = daemonize
        self.defaults = defaults
        self.user_config = user_config
        self.nographic = nographic
        self.uuid = uuid
        self.cpu = cpu
        self.vga = vga
        self.incoming = incoming
        self.pidfile = pidfile
        self.display = display
        self.overcommit_mem_lock = overcommit_mem_lock
        self.overcommit_cpu_pm = overcommit_cpu_pm
        self.ram_size = ram_size
        self.ram_size_given = ram_size_given
        self.max_ram_size = max_ram_size
        self.ram_slots = ram_slots
        self.objects = [] if objects is None else objects
        self.object_options = [] if object_options is None else object_options
        self.created_ids = set() if created_ids is None else created_ids
        self.devices = [] if devices is None else devices
        self.audiodevs = [] if audiodevs is None else audiodevs
        self.globals = [] if globals is None else globals
        self.serials = [] if serials is None else serials
        self.parallels = [] if parallels is None else parallels
        self.serial_locations = [] if serial_locations is None else serial_locations
        self.stdio_in_use = stdio_in_use
        self.parallel_locations = [] if parallel_locations is None else parallel_locations
        self.monitor_index = monitor_index
        self.default_monitor = default_monitor

    def report(self, message: str, hint: str = "") -> Diagnostic:
        return Diagnostic(message, hint, self.timestamp)

    def fail(self, location: str | None, message: str, hint: str = "") -> CommandLineError:
        """The error QEMU reports at ``location`` (None: none), with the warnings before it."""
        text = f"{location}: {message}" if location else message
        return CommandLineError(text, hint, tuple(self.reports), timestamped=self.timestamp)

    def warn(self, location: str | None, message: str, hint: str = "") -> None:
        text = f"{location}: warning: {message}" if location else f"warning: {message}"
        self.reports.append(self.report(text, hint))

    def located(self, opts: QemuOpts, location: str) -> QemuOpts:
        self.locations[id(opts)] = location
        return opts

    def location_of(self, opts: QemuOpts) -> str:
        return self.locations[id(opts)]


DaemonizePoint = Callable[[str | None, bool], None]
"""Called with the ``-pidfile`` path (or None) and whether ``-daemonize`` was given."""


def parse_command_line(
    argv: Sequence[str],
    own_options: Mapping[str, bool] | None = None,
    objects: ObjectMaker | None = None,
    at_daemonize: DaemonizePoint | None = None,
) -> QemuCommandLine:
    """Parse QEMU's command line ``argv`` (without the program name) as QEMU 7.2 does.

    ``own_options`` maps the caller's own ``--double-dash`` option names (``"--state-dir"``)
    to whether each takes an argument (given as ``--name VALUE`` or ``--name=VALUE``); they
    are passed through, in order, in ``QemuCommandLine.own_options``. Their names must not be
    QEMU's, since QEMU reads ``--name`` as ``-name``. ``objects`` reads and creates the
    ``-object`` types it makes where QEMU does (:class:`~qmonitor.cmdline.objects.ObjectMaker`),
    so that its errors come in QEMU's order among the others. ``at_daemonize`` is called
    where QEMU daemonizes and writes its pid file (vl.c ``qemu_maybe_daemonize``): after the
    option loop, the ``-name`` options and the objects made before the sandbox, before the
    RTC and memory settings, the machine and the other objects are looked at, so that an
    error it raises comes before theirs, and theirs come after the pid file exists. Raises
    CommandLineError for anything QEMU refuses, and for QEMU options qmonitor does not
    implement.
    """
    own = dict(own_options or {})
    for name in own:
        if not name.startswith("--") or _lookup(name) is not None:
            raise ValueError(f"own option {name!r} must start with -- and not be QEMU's")
    state = _State(tuple(argv), objects, at_daemonize)
    _first_pass(state, own)
    try:
        stopped = _second_pass(state, own)
        if stopped is not None:
            return QemuCommandLine(
                argv=state.argv,
                options=tuple(state.options),
                version=stopped == "version",
                help=stopped == "help",
                own_options=tuple(state.own_options),
                reports=tuple(state.reports),
            )
        return _after_the_loop(state)
    except HelpRequested:
        raise state.fail(
            state.current_location, "option help is not available in qmonitor"
        ) from None


def _lookup(token: str) -> QemuOption | None:
    """vl.c lookup_opt(): ``--foo`` is ``-foo``; the name must match exactly."""
    name = token[2:] if token.startswith("--") else token[1:]
    return QEMU_OPTIONS.get(name)


def _own_option(token: str, own: Mapping[str, bool]) -> tuple[str, str | None] | None:
    """``(name, inline value)`` if ``token`` is one of the caller's own options."""
    if not token.startswith("--"):
        return None
    name, equals, value = token.partition("=")
    if name not in own:
        return None
    return name, value if equals else None


def _first_pass(state: _State, own: Mapping[str, bool]) -> None:
    """vl.c's first pass: every option must exist and have its argument."""
    argv = state.argv
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if not token.startswith("-"):
            continue  # a disk image
        option = _lookup(token)
        if option is not None:
            takes_argument = option.takes_argument
        else:
            own_option = _own_option(token, own)
            if own_option is None:
                raise state.fail(token, "invalid option")
            takes_argument = own[own_option[0]] and own_option[1] is None
        if takes_argument:
            if index >= len(argv):
                raise state.fail(token, "requires an argument")
            index += 1


def _second_pass(state: _State, own: Mapping[str, bool]) -> str | None:
    """vl.c's second pass: each option in order. Returns "version"/"help" if one ends it."""
    argv = state.argv
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if not token.startswith("-"):
            raise state.fail(token, "disk images are not supported by qmonitor")
        option = _lookup(token)
        if option is None:
            own_option = _own_option(token, own)
            assert own_option is not None
            name, value = own_option
            if own[name] and value is None:
                value = argv[index]
                index += 1
            state.own_options.append(OwnOption(name, value))
            continue
        argument = None
        location = token
        if option.takes_argument:
            argument = argv[index]
            index += 1
            location = f"{token} {argument}"
        state.current_location = location
        if not option.on_this_target:
            raise state.fail(location, "Option not supported for this target")
        state.options.append((option.name, argument))
        if option.name in ("h", "help"):
            return "help"
        if option.name == "version":
            return "version"
        _handle(state, option.name, argument, location)
    state.current_location = None
    return None


def _opts(
    state: _State,
    opts_list: QemuOptsList,
    argument: str,
    location: str,
    *,
    permit_abbrev: bool,
) -> QemuOpts:
    """qemu_opts_parse_noisily() of an option's argument, with its warnings and errors located."""
    warnings: list[Diagnostic] = []
    try:
        opts = qemu_opts_parse(
            state.store, opts_list, argument, permit_abbrev=permit_abbrev, warnings=warnings
        )
    except OptsError as error:
        _add_warnings(state, location, warnings)
        raise state.fail(location, error.message, error.hint) from None
    _add_warnings(state, location, warnings)
    return state.located(opts, location)


def _add_warnings(state: _State, location: str | None, warnings: list[Diagnostic]) -> None:
    for warning in warnings:
        state.warn(location, warning.message, warning.hint)


def _keyval(state: _State, argument: str, implied_key: str, location: str) -> KeyvalDict:
    """keyval_parse() of an option that prints help when asked (-smp, -boot)."""
    qdict: KeyvalDict = {}
    try:
        wants_help = keyval_parse_into(qdict, argument, implied_key, help_allowed=True)
    except KeyvalError as error:
        raise state.fail(location, error.message) from None
    if wants_help:
        raise HelpRequested
    return qdict


def _merge_machine_property(state: _State, name: str, prop: KeyvalDict, location: str) -> None:
    """vl.c machine_merge_property()."""
    try:
        keyval_merge(state.machine, {name: prop})
    except KeyvalError as error:
        raise state.fail(location, error.message) from None


def _handle(state: _State, name: str, argument: str | None, location: str) -> None:
    """One option of the second pass (vl.c's big switch), for the options qmonitor reads."""
    if argument is None:
        if name == "S":
            state.start_paused = True
        elif name == "no-shutdown":
            state.no_shutdown = True
        elif name == "no-reboot":
            state.no_reboot = True
        elif name == "daemonize":
            state.daemonize = True
        elif name == "nodefaults":
            state.defaults = False
        elif name == "no-user-config":
            state.user_config = False
        elif name == "nographic":
            state.machine["graphics"] = "off"
            state.nographic = True
            state.display = {"type": "none"}
        elif name == "enable-kvm":
            state.machine["accel"] = "kvm"
        elif name == "no-acpi":
            state.machine["acpi"] = "off"
        else:
            raise state.fail(location, UNSUPPORTED)
        return
    handler = _HANDLERS.get(name)
    if handler is None:
        raise state.fail(location, UNSUPPORTED)
    handler(state, argument, location)


def _name(state: _State, argument: str, location: str) -> None:
    _opts(state, NAME_OPTS, argument, location, permit_abbrev=True)


def _memory(state: _State, argument: str, location: str) -> None:
    _opts(state, MEMORY_OPTS, argument, location, permit_abbrev=True)


def _uuid(state: _State, argument: str, location: str) -> None:
    """vl.c QEMU_OPTION_uuid: qemu_uuid_parse()."""
    if len(argument) != 36 or not re.fullmatch(_UUID, argument):
        raise state.fail(location, "failed to parse UUID string: wrong format")
    from uuid import UUID  # only with -uuid (start-up time)

    state.uuid = UUID(argument)


def _smp(state: _State, argument: str, location: str) -> None:
    _merge_machine_property(state, "smp", _keyval(state, argument, "cpus", location), location)


def _boot(state: _State, argument: str, location: str) -> None:
    _merge_machine_property(state, "boot", _keyval(state, argument, "order", location), location)


def _machine(state: _State, argument: str, location: str) -> None:
    """vl.c QEMU_OPTION_machine: keyval_parse_into() the one machine dictionary."""
    try:
        wants_help = keyval_parse_into(state.machine, argument, "type", help_allowed=True)
    except KeyvalError as error:
        raise state.fail(location, error.message) from None
    if wants_help:
        raise HelpRequested


def _accel(state: _State, argument: str, location: str) -> None:
    opts = _opts(state, ACCEL_OPTS, argument, location, permit_abbrev=True)
    accel = opts.get("accel")
    if accel is None or is_help_option(accel):
        raise HelpRequested


def _cpu(state: _State, argument: str, location: str) -> None:
    state.cpu = argument


def _vga(state: _State, argument: str, location: str) -> None:
    state.vga = argument


def _incoming(state: _State, argument: str, location: str) -> None:
    state.incoming = argument


def _pidfile(state: _State, argument: str, location: str) -> None:
    state.pidfile = argument


def _input_dict(state: _State, argument: str, implied_key: str, location: str) -> KeyvalDict:
    """qobject_input_visitor_new_str(): JSON if it starts with '{', else keyval (no help)."""
    if argument.startswith("{"):
        return _json_object(state, argument, location)
    try:
        return keyval_parse(argument, implied_key, help_allowed=False)
    except KeyvalError as error:
        raise state.fail(location, error.message) from None


def _json_object(state: _State, argument: str, location: str) -> KeyvalDict:
    """qobject_from_json() of a value starting with '{' (always an object, or an error)."""
    try:
        value = parse_json_value(argument)
    except JSONValueError as error:
        raise state.fail(location, error.message) from None
    assert isinstance(value, dict)
    return value


def _display(state: _State, argument: str, location: str) -> None:
    """vl.c parse_display(): help, the vnc= form, or DisplayOptions."""
    if is_help_option(argument):
        raise HelpRequested
    if argument.startswith("vnc"):
        if argument[3:4] == "=":
            raise state.fail(location, UNSUPPORTED)
        raise state.fail(location, "VNC requires a display argument vnc=<display>")
    keyval = not argument.startswith("{")
    display = _input_dict(state, argument, "type", location)
    try:
        visit_members(display, _DISPLAY_BASE, keyval=keyval)
        variant = _DISPLAY_VARIANTS.get(str(display["type"]), ())
        visit_members(display, variant, keyval=keyval)
        check_unexpected(display, [member[0] for member in (*_DISPLAY_BASE, *variant)])
    except QapiError as error:
        raise state.fail(location, error.message) from None
    state.display = display


def _object(state: _State, argument: str, location: str) -> None:
    """vl.c object_option_parse(): JSON, or QemuOpts; then ``visit_type_ObjectOptions``.

    The base members are checked here; the variant's members by :func:`_visit_object`,
    unless the maker reads the type itself (its errors are QEMU's too).
    """
    opts_values: dict[str, object] = {}
    if argument.startswith("{"):
        properties = _json_object(state, argument, location)
        try:
            visit_members(
                properties,
                (("qom-type", _OBJECT_TYPES_ACCEPTED, True), ("id", STR, True)),
                keyval=False,
            )
        except QapiError as error:
            raise state.fail(location, error.message) from None
    else:
        opts = _opts(state, OBJECT_OPTS, argument, location, permit_abbrev=True)
        qom_type = opts.get("qom-type")
        if qom_type is None:
            raise state.fail(location, "Parameter 'qom-type' is missing")
        if is_help_option(qom_type) or opts.has("help"):
            raise HelpRequested
        if qom_type not in _OBJECT_TYPES_ACCEPTED:
            raise state.fail(location, f"Parameter 'qom-type' does not accept value '{qom_type}'")
        if opts.id is None:
            raise state.fail(location, "Parameter 'id' is missing")
        properties = {"qom-type": qom_type, "id": opts.id, **opts.as_dict()}
        for name, text, _ in opts.params:
            values = opts_values.setdefault(name, [])
            assert isinstance(values, list)
            values.append(text)
        opts_values["id"] = [opts.id]  # opts_start_struct(): the id is visited as a member
    made = state.maker is not None and properties["qom-type"] in state.maker.qom_types
    if not made:
        _visit_object(state, properties, opts_values, location)
    state.objects.append(properties)
    option = ObjectOption(properties, argument)
    state.object_options.append((option, location))
    if made:
        assert state.maker is not None
        try:
            state.maker.read(option)
        except ObjectError as error:
            raise state.fail(location if error.located else None, error.message) from None


def _visit_object(
    state: _State,
    properties: Mapping[str, object],
    opts_values: Mapping[str, object],
    location: str,
) -> None:
    """The ``ObjectOptions`` variant's members (qapi/qom.json), checked with QEMU's errors.

    ``opts_values`` holds a QemuOpts form's values (empty for JSON), read by QEMU's options
    visitor; the table is imported on the first ``-object``, not at start-up.
    """
    from qmonitor.cmdline.qom_members import OBJECT_MEMBERS

    qom_type = str(properties["qom-type"])
    variant = OBJECT_MEMBERS.get(_QAPI_OBJECT_TYPE.get(qom_type, qom_type), ())
    members = (("qom-type", STR, True), ("id", STR, True), *variant)
    form = InputForm.OPTS if opts_values else InputForm.JSON
    try:
        visit_struct(opts_values or properties, members, form)
    except QapiError as error:
        raise state.fail(location, error.message) from None


class _ObjectPhase(Enum):
    """When QEMU 7.2 creates an object (vl.c ``object_create_pre_sandbox``,
    ``object_create_early``): most before the chardevs, those that name a chardev, a netdev or
    a block node after them, memory backends after them too (their allocation must not delay
    the monitor's socket), ``thread-context`` before the sandbox is applied."""

    PRE_SANDBOX = "pre-sandbox"
    EARLY = "early"
    LATE = "late"


_LATE_TYPES: Final = frozenset(
    {
        "rng-egd",
        "qtest",
        "cryptodev-vhost-user",
        "filter-buffer",
        "filter-dump",
        "filter-mirror",
        "filter-redirector",
        "colo-compare",
        "filter-rewriter",
        "filter-replay",
    }
)


def _phase_of(qom_type: str) -> _ObjectPhase:
    if qom_type == "thread-context":
        return _ObjectPhase.PRE_SANDBOX
    if qom_type in _LATE_TYPES or qom_type.startswith("memory-backend-"):
        return _ObjectPhase.LATE
    return _ObjectPhase.EARLY


def _create_objects(state: _State, phase: _ObjectPhase) -> None:
    """vl.c ``object_option_foreach_add()``: the objects of one phase, in command-line order.

    Each is added to QOM's ``/objects`` container, which refuses a second child of the same
    name (qom/object.c ``object_property_try_add``): two ``-object`` options with one id and
    at least one in the JSON form (QemuOpts catches two key=value ones as they are read).
    The types the maker makes are made here, with their errors.
    """
    maker = state.maker
    for option, location in state.object_options:
        qom_type = str(option.properties["qom-type"])
        if _phase_of(qom_type) is not phase:
            continue
        object_id = str(option.properties["id"])
        if object_id in state.created_ids:
            raise state.fail(
                None,
                f"attempt to add duplicate property '{object_id}' to object (type 'container')",
            )
        state.created_ids.add(object_id)
        if maker is not None and qom_type in maker.qom_types:
            try:
                maker.create(option)
            except ObjectError as error:
                raise state.fail(location if error.located else None, error.message) from None


def _device(state: _State, argument: str, location: str) -> None:
    """vl.c QEMU_OPTION_device: a JSON object, or QemuOpts with the implied key ``driver``."""
    if argument.startswith("{"):
        state.devices.append(_json_object(state, argument, location))
        return
    opts = _opts(state, DEVICE_OPTS, argument, location, permit_abbrev=True)
    device: dict[str, object] = dict(opts.as_dict())
    if opts.id is not None:
        device["id"] = opts.id
    state.devices.append(device)


def _audiodev(state: _State, argument: str, location: str) -> None:
    """audio/audio.c audio_parse_option(): the Audiodev base members (id, driver)."""
    if is_help_option(argument):
        raise HelpRequested
    keyval = not argument.startswith("{")
    audiodev = _input_dict(state, argument, "driver", location)
    try:
        visit_members(
            audiodev, (("id", STR, True), ("driver", tuple(AUDIODEV_DRIVERS), True)), keyval=keyval
        )
    except QapiError as error:
        raise state.fail(location, error.message) from None
    state.audiodevs.append(audiodev)


def _global(state: _State, argument: str, location: str) -> None:
    """softmmu/qdev-monitor.c qemu_global_option(): DRIVER.PROPERTY=VALUE, or QemuOpts."""
    short = re.match(r"([^.=]{1,63})\.([^=]{1,63})=", argument)
    if short:
        state.globals.append(GlobalProperty(short[1], short[2], argument[short.end() :]))
        return
    opts = _opts(state, GLOBAL_OPTS, argument, location, permit_abbrev=False)
    driver, prop, value = opts.get("driver"), opts.get("property"), opts.get("value")
    if driver is None or prop is None or value is None:
        raise state.fail(location, "options 'driver', 'property', and 'value' are required")
    state.globals.append(GlobalProperty(driver, prop, value))


def _rtc(state: _State, argument: str, location: str) -> None:
    _opts(state, RTC_OPTS, argument, location, permit_abbrev=False)


def _overcommit(state: _State, argument: str, location: str) -> None:
    opts = _opts(state, OVERCOMMIT_OPTS, argument, location, permit_abbrev=False)
    state.overcommit_mem_lock = opts.get_bool("mem-lock", False)
    state.overcommit_cpu_pm = opts.get_bool("cpu-pm", False)


def _msg(state: _State, argument: str, location: str) -> None:
    """vl.c configure_msg(): from here on, QEMU's messages carry a timestamp (or not)."""
    opts = _opts(state, MSG_OPTS, argument, location, permit_abbrev=False)
    state.timestamp = opts.get_bool("timestamp", False)
    state.guest_name = opts.get_bool("guest-name", False)


def _sandbox(state: _State, argument: str, location: str) -> None:
    _opts(state, SANDBOX_OPTS, argument, location, permit_abbrev=True)


def _chardev(state: _State, argument: str, location: str) -> None:
    _opts(state, CHARDEV_OPTS, argument, location, permit_abbrev=True)


def _mon(state: _State, argument: str, location: str) -> None:
    _opts(state, MON_OPTS, argument, location, permit_abbrev=True)
    state.default_monitor = False


def _monitor_parse(
    state: _State, argument: str, location: str, mode: MonitorMode, pretty: bool
) -> None:
    """vl.c monitor_parse(): a ``compat_monitorN`` chardev and monitor, or ``chardev:ID``."""
    if argument.startswith("chardev:"):
        label = argument[len("chardev:") :][:31]  # snprintf into char label[32]
    else:
        label = f"compat_monitor{state.monitor_index}"
        try:
            state.located(parse_compat(state.store, label, argument, permit_mux_mon=True), location)
        except ChardevError as error:
            if error.message:
                state.reports.append(state.report(f"{location}: {error.message}", error.hint))
            raise state.fail(location, f"parse error: {argument}") from None
    try:
        opts = monitor_compat(state.store, label, label, mode, pretty)
    except ChardevError as error:
        # QEMU passes &error_fatal here, which exits before error_append_hint() adds the hint.
        raise state.fail(location, error.message) from None
    state.located(opts, location)
    state.monitor_index += 1


def _qmp(state: _State, argument: str, location: str) -> None:
    _monitor_parse(state, argument, location, "control", False)
    state.default_monitor = False


def _qmp_pretty(state: _State, argument: str, location: str) -> None:
    _monitor_parse(state, argument, location, "control", True)
    state.default_monitor = False


def _human_monitor(state: _State, argument: str, location: str) -> None:
    """vl.c QEMU_OPTION_monitor: anything starting with "none" only disables the default."""
    state.default_monitor = False
    if not argument.startswith("none"):
        _monitor_parse(state, argument, location, "readline", False)


def _serial(state: _State, argument: str, location: str) -> None:
    state.serials.append(argument)
    state.serial_locations.append(location)
    if argument.startswith("mon:"):
        state.default_monitor = False


def _parallel(state: _State, argument: str, location: str) -> None:
    state.parallels.append(argument)
    state.parallel_locations.append(location)
    if argument.startswith("mon:"):
        state.default_monitor = False


_HANDLERS: Final = {
    "name": _name,
    "m": _memory,
    "uuid": _uuid,
    "smp": _smp,
    "boot": _boot,
    "machine": _machine,
    "M": _machine,
    "accel": _accel,
    "cpu": _cpu,
    "vga": _vga,
    "incoming": _incoming,
    "pidfile": _pidfile,
    "display": _display,
    "object": _object,
    "device": _device,
    "audiodev": _audiodev,
    "global": _global,
    "rtc": _rtc,
    "overcommit": _overcommit,
    "msg": _msg,
    "sandbox": _sandbox,
    "chardev": _chardev,
    "mon": _mon,
    "qmp": _qmp,
    "qmp-pretty": _qmp_pretty,
    "monitor": _human_monitor,
    "serial": _serial,
    "parallel": _parallel,
}


def _groups(state: _State, opts_list: QemuOptsList) -> list[QemuOpts]:
    return list(state.store.of(opts_list))


def _after_the_loop(state: _State) -> QemuCommandLine:
    """What qemu_init() does after the option loop, for what qmonitor models, in its order."""
    _create_objects(state, _ObjectPhase.PRE_SANDBOX)  # qemu_process_early_options()
    for opts in _groups(state, SANDBOX_OPTS):
        _check_sandbox(state, opts)
    if state.at_daemonize is not None:  # qemu_maybe_daemonize()
        state.at_daemonize(state.pidfile, state.daemonize)
    rtc = state.store.find(RTC_OPTS, None)
    if rtc is not None:
        _check_rtc(state, rtc)
    _memory_into_machine(state)
    machine_type, type_given = _select_machine(state)
    _create_objects(state, _ObjectPhase.EARLY)  # qemu_create_early_backends()
    chardevs = _create_chardevs(state)
    memory_backend = state.machine.get("memory-backend")  # qemu_apply_legacy_machine_options()
    smp = _apply_machine_options(state, machine_type)
    accelerators = _configure_accelerators(state)
    _create_objects(state, _ObjectPhase.LATE)  # qemu_create_late_backends()
    monitors = _create_monitors(state, chardevs)
    _create_port_chardevs(state, chardevs)
    if isinstance(memory_backend, str):
        _resolve_memory_backend(state, memory_backend)
    name = state.store.find(NAME_OPTS, None)
    boot = state.machine.get("boot")
    properties = {
        key: value
        for key, value in state.machine.items()
        if key not in ("smp", "memory", "boot", "accel")
    }
    return QemuCommandLine(
        argv=state.argv,
        options=tuple(state.options),
        name=name.get("guest") if name else None,
        process_name=name.get("process") if name else None,
        debug_threads=(
            name.get_bool("debug-threads", False) if name and name.has("debug-threads") else None
        ),
        uuid=state.uuid,
        ram_size=state.ram_size,
        ram_size_given=state.ram_size_given,
        max_ram_size=state.max_ram_size,
        ram_slots=state.ram_slots,
        smp=smp,
        machine=MachineSpec(machine_type.name, type_given, properties),
        accelerators=accelerators,
        cpu=state.cpu,
        start_paused=state.start_paused,
        incoming=state.incoming,
        no_shutdown=state.no_shutdown,
        no_reboot=state.no_reboot,
        pidfile=state.pidfile,
        daemonize=state.daemonize,
        chardevs=tuple(chardevs.values()),
        monitors=tuple(monitors),
        default_monitor=state.default_monitor,
        defaults=state.defaults,
        user_config=state.user_config,
        display=state.display,
        nographic=state.nographic,
        vga=state.vga,
        objects=tuple(state.objects),
        devices=tuple(state.devices),
        audiodevs=tuple(state.audiodevs),
        globals=tuple(state.globals),
        serials=tuple(state.serials),
        parallels=tuple(state.parallels),
        rtc=rtc.as_dict() if rtc else {},
        boot={key: str(value) for key, value in boot.items()} if isinstance(boot, dict) else {},
        sandbox=_sandbox_settings(state),
        overcommit_mem_lock=state.overcommit_mem_lock,
        overcommit_cpu_pm=state.overcommit_cpu_pm,
        msg_timestamp=state.timestamp,
        msg_guest_name=state.guest_name,
        own_options=tuple(state.own_options),
        reports=tuple(state.reports),
    )


def _check_sandbox(state: _State, opts: QemuOpts) -> None:
    """softmmu/qemu-seccomp.c parse_sandbox(): the values, when the sandbox is on."""
    if not opts.get_bool("enable", False):
        return
    allowed = {
        "obsolete": ("allow", "deny"),
        "elevateprivileges": ("deny", "children", "allow"),
        "spawn": ("deny", "allow"),
        "resourcecontrol": ("deny", "allow"),
    }
    for key, choices in allowed.items():
        value = opts.get(key)
        if value is not None and value not in choices:
            raise state.fail(state.location_of(opts), f"invalid argument for {key}")


def _sandbox_settings(state: _State) -> dict[str, str]:
    settings: dict[str, str] = {}
    for opts in _groups(state, SANDBOX_OPTS):
        settings.update(opts.as_dict())
    return settings


def _mktimegm(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    """util/cutils.c mktimegm(): C division truncates toward zero; time_t is 64 bits."""

    def div(dividend: int, divisor: int) -> int:
        quotient = abs(dividend) // divisor
        return quotient if dividend >= 0 else -quotient

    if month < 3:
        month += 12
        year -= 1
    days = day + div(153 * month - 457, 5) + 365 * year + div(year, 4) - div(year, 100)
    days += div(year, 400) - 719469
    seconds = (86400 * days + 3600 * hour + 60 * minute + second) % (1 << 64)
    return seconds - (1 << 64) if seconds >= 1 << 63 else seconds


def _c_int(digits: str) -> int:
    """What sscanf("%d") stores: strtol() (clamped to 64 bits), truncated to a C int."""
    negative = digits.startswith("-")
    magnitude = digits.lstrip("+-").lstrip("0") or "0"
    value = (1 << 63) if len(magnitude) > 19 else int(magnitude)
    value = max(-(1 << 63), min(-value if negative else value, (1 << 63) - 1))
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _check_rtc(state: _State, opts: QemuOpts) -> None:
    """softmmu/rtc.c configure_rtc(): base, clock and driftfix values (reported unlocated)."""
    base = opts.get("base")
    if base is not None and base not in ("utc", "localtime"):
        match = re.match(_RTC_DATETIME, base)
        fields = [_c_int(group) for group in match.groups()] if match else None
        if fields is None:
            date = re.match(_RTC_DATE, base)
            if date:
                fields = [_c_int(group) for group in date.groups()] + [0, 0, 0]
        if fields is None or _mktimegm(*fields) == -1:
            raise state.fail(
                None,
                "invalid datetime format",
                "valid formats: '2006-06-17T16:01:21' or '2006-06-17'\n",
            )
    for key, choices in (("clock", ("host", "rt", "vm")), ("driftfix", ("slew", "none"))):
        value = opts.get(key)
        if value is not None and value not in choices:
            raise state.fail(None, f"invalid option value '{value}'")


def _memory_into_machine(state: _State) -> None:
    """vl.c parse_memory_options(): -m into the machine dictionary ("64" means 64M)."""
    opts = state.store.find(MEMORY_OPTS, None)
    if opts is None:
        return
    memory: KeyvalDict = {}
    if opts.get_number("size", 0) != 0:
        size = opts.get("size")
        assert size is not None
        memory["size"] = f"{size}M" if size[-1].isascii() and size[-1].isdigit() else size
    maxmem = opts.get("maxmem")
    if maxmem is not None:
        memory["max-size"] = maxmem
    slots = opts.get("slots")
    if slots is not None:
        memory["slots"] = slots
    try:
        keyval_merge(state.machine, {"memory": memory})
    except KeyvalError as error:
        raise state.fail(state.location_of(opts), error.message) from None


def _select_machine(state: _State) -> tuple[MachineType, bool]:
    """vl.c select_machine(): the type given (by name or alias) or the default; and if given."""
    given = state.machine.pop("type", None)
    if isinstance(given, str):
        machine = find_machine_type(given)
        if machine is None:
            raise state.fail(
                None, "unsupported machine type", "Use -machine help to list supported machines\n"
            )
        return machine, True
    machine = find_machine_type(DEFAULT_MACHINE_TYPE)
    assert machine is not None
    return machine, False


def _claim_stdio(state: _State, chardev: Chardev) -> None:
    """chardev/char-stdio.c ``qemu_chr_open_stdio``: standard input and output serve one
    chardev, and none under ``-daemonize`` (whose standard streams go to /dev/null)."""
    if chardev.backend != "stdio":
        return
    if state.daemonize:
        raise ChardevError("cannot use stdio with -daemonize")
    if state.stdio_in_use:
        raise ChardevError("cannot use stdio by multiple character devices")
    state.stdio_in_use = True


def _create_chardevs(state: _State) -> dict[str, Chardev]:
    """vl.c qemu_create_early_backends(): every chardev, in order."""
    chardevs: dict[str, Chardev] = {}
    warned_aliases: set[str] = set()
    objects = {str(properties["id"]): properties for properties in state.objects}
    for opts in _groups(state, CHARDEV_OPTS):
        location = state.location_of(opts)
        try:
            chardev = create_chardev(opts, state.reports, location, warned_aliases, objects)
            _claim_stdio(state, chardev)
        except ChardevError as error:
            raise state.fail(location, error.message, error.hint) from None
        except HelpRequested:
            state.current_location = location
            raise
        chardevs[chardev.id] = chardev
    return chardevs


def _apply_machine_options(state: _State, machine: MachineType) -> SmpTopology:
    """The machine's ``memory`` and ``smp`` properties (hw/core/machine.c), unlocated errors."""
    state.ram_size = machine.default_ram_size
    memory = state.machine.get("memory")
    if isinstance(memory, dict):
        _apply_memory(state, memory)
    elif memory is not None:
        raise state.fail(None, "Invalid parameter type for 'memory', expected: object")
    smp = state.machine.get("smp")
    config: dict[str, int] = {}
    try:
        if isinstance(smp, dict):
            config = smp_configuration(smp)
        elif smp is not None:
            raise state.fail(None, "Invalid parameter type for 'smp', expected: object")
        topology, warn_zero = smp_topology(machine, config)
    except TopologyError as error:
        raise state.fail(None, error.message) from None
    if warn_zero:
        state.warn(
            None,
            "Deprecated CPU topology (considered invalid): "
            "CPU topology parameters must be greater than zero",
        )
    return topology


def _apply_memory(state: _State, memory: KeyvalDict) -> None:
    """hw/core/machine.c machine_set_mem() over MemorySizeConfiguration."""
    sizes: dict[str, int] = {}
    for member in ("size", "max-size", "slots"):
        text = memory.get(member)
        if text is None:
            continue
        if not isinstance(text, str):
            raise state.fail(None, f"Parameters 'memory.{member}.*' are unexpected")
        if member == "slots":
            number = qemu_strtou64(text, 0)
            if number.error:
                raise state.fail(None, "Parameter 'memory.slots' expects integer")
            sizes[member] = number.value
            continue
        warnings: list[Diagnostic] = []
        size = parse_size_warning(text, warnings)
        _add_warnings(state, None, warnings)
        if size.error:
            raise state.fail(None, f"Parameter 'memory.{member}' expects size")
        sizes[member] = size.value
    for key in memory:
        if key not in ("size", "max-size", "slots"):
            raise state.fail(None, f"Parameter 'memory.{key}' is unexpected")
    ram_size = -(-sizes.get("size", state.ram_size) // RAM_ALIGNMENT) * RAM_ALIGNMENT
    if "max-size" in sizes:
        max_size = sizes["max-size"]
        if max_size < ram_size:
            raise state.fail(
                None,
                "invalid value of maxmem: maximum memory size "
                f"(0x{max_size:x}) must be at least the initial memory size (0x{ram_size:x})",
            )
        if sizes.get("slots") and max_size == ram_size:
            raise state.fail(
                None,
                "invalid value of maxmem: memory slots were specified but maximum memory size "
                f"(0x{max_size:x}) is equal to the initial memory size (0x{ram_size:x})",
            )
        state.max_ram_size = max_size
    elif "slots" in sizes:
        raise state.fail(None, "slots specified but no max-size")
    state.ram_size = ram_size
    state.ram_size_given = "size" in sizes
    if "slots" in sizes:
        state.ram_slots = sizes["slots"]


def _configure_accelerators(state: _State) -> tuple[Accelerator, ...]:
    """vl.c configure_accelerators(): -accel options, or -machine accel=A:B, or the default.

    An accelerator QEMU does not know is reported ("invalid accelerator NAME") and skipped;
    with none left QEMU exits. Which of them initialises is the caller's (QEMU's default
    "tcg:kvm" means TCG first).
    """
    requested = state.machine.get("accel")
    accel_groups = _groups(state, ACCEL_OPTS)
    if accel_groups:
        if requested is not None:
            raise state.fail(None, 'The -accel and "-machine accel=" options are incompatible')
        accelerators = []
        invalid: list[tuple[str | None, str]] = []
        for opts in accel_groups:
            name = opts.get("accel")
            assert name is not None
            if name not in ACCELERATORS:
                invalid.append((state.location_of(opts), name))
                continue
            properties = {key: value for key, value in opts.as_dict().items() if key != "accel"}
            accelerators.append(Accelerator(name, properties))
    else:
        names = requested if isinstance(requested, str) else "tcg:kvm"
        accelerators = [Accelerator(name) for name in names.split(":") if name in ACCELERATORS]
        invalid = [(None, name) for name in names.split(":") if name not in ACCELERATORS]
    for location, name in invalid:
        state.reports.append(
            state.report(
                f"{location}: invalid accelerator {name}"
                if location
                else f"invalid accelerator {name}"
            )
        )
    if not accelerators:
        last = state.reports.pop()
        raise CommandLineError(last.message, "", tuple(state.reports), timestamped=last.timestamped)
    return tuple(accelerators)


MAX_PARALLEL_PORTS: Final = 3
"""include/hw/char/parallel.h: ``-parallel`` beyond the third is "too many parallel ports"."""


def _create_port_chardevs(state: _State, chardevs: dict[str, Chardev]) -> None:
    """vl.c qemu_create_late_backends(): the chardevs of ``-serial`` then ``-parallel``, after
    the monitors (``serial_parse``, ``parallel_parse``).

    ``-serial DEV`` is chardev ``serialN``, N counting every ``-serial`` (``none`` makes no
    chardev but takes its number); ``-parallel DEV`` is ``parallelN``, N counting the others
    (``none`` takes none), at most three. DEV is the legacy address syntax of
    ``qemu_chr_parse_compat``; an error in it, or in the chardev, is followed by QEMU's
    ``could not connect serial device to character backend 'DEV'``. ``mon:DEV`` (a monitor
    muxed with the port) makes no chardev here (docs/STANDIN.md).
    """
    for index, (argument, location) in enumerate(
        zip(state.serials, state.serial_locations, strict=True)
    ):
        if argument != "none" and not argument.startswith("mon:"):
            chardev = _port_chardev(state, "serial", f"serial{index}", argument, location)
            chardevs[chardev.id] = chardev
    count = 0
    for argument, location in zip(state.parallels, state.parallel_locations, strict=True):
        if argument == "none":
            continue
        if count == MAX_PARALLEL_PORTS:
            raise state.fail(location, "too many parallel ports")
        if not argument.startswith("mon:"):
            chardev = _port_chardev(state, "parallel", f"parallel{count}", argument, location)
            chardevs[chardev.id] = chardev
        count += 1


def _port_chardev(state: _State, port: str, label: str, argument: str, location: str) -> Chardev:
    """chardev/char.c ``qemu_chr_new_mux_mon``: the port's chardev, or QEMU's two errors."""
    could_not = f"could not connect {port} device to character backend '{argument}'"
    try:
        opts = parse_compat(state.store, label, argument, permit_mux_mon=True)
        chardev = create_chardev(opts, state.reports, location, set(), {})
        _claim_stdio(state, chardev)
    except ChardevError as error:
        if error.message:
            state.reports.append(state.report(f"{location}: {error.message}", error.hint))
        raise state.fail(location, could_not) from None
    return chardev.replace(port=port)


def _create_monitors(state: _State, chardevs: dict[str, Chardev]) -> list[MonitorSpec]:
    """vl.c qemu_create_late_backends(): every monitor, in order."""
    monitors = []
    for opts in _groups(state, MON_OPTS):
        try:
            monitors.append(create_monitor(opts, chardevs))
        except ChardevError as error:
            raise state.fail(state.location_of(opts), error.message, error.hint) from None
    return monitors


def _resolve_memory_backend(state: _State, backend_id: str) -> None:
    """vl.c qemu_resolve_machine_memdev(): ``-machine memory-backend=ID`` names a RAM object.

    Without ``-m``, the machine's RAM size is the backend's ``size``.
    """
    for properties in state.objects:
        if properties.get("id") == backend_id and properties.get("qom-type") in _MEMORY_BACKENDS:
            break
    else:
        raise state.fail(None, f"Memory backend '{backend_id}' not found")
    if not state.ram_size_given:
        size = properties["size"]
        # A negative JSON size is taken modulo 2^64, "for backward compatibility" (QEMU's visitor).
        state.ram_size = (
            size % (1 << 64) if isinstance(size, int) else qemu_strtosz(str(size)).value
        )
