"""QEMU's command line, wired to the machine: ``qmonitor-system-x86_64`` and ``qmonitor run``.

Both programs read their arguments with :func:`qmonitor.cmdline.parse_command_line` (QEMU 7.2's
rules and errors) and turn the result into a :class:`~qmonitor.machine.run.RunPlan`. They
differ only in their defaults:

- ``qmonitor-system-x86_64`` behaves as QEMU: no monitor unless asked for, except QEMU's default
  human monitor on standard input/output with ``-nographic`` and without ``-nodefaults``
  (softmmu/vl.c ``qemu_create_default_devices``); an idle guest (``--dirty-rate 0``), since it
  is launched for every probe and every test; ``-pidfile`` and ``-daemonize`` as QEMU does them.
- ``qmonitor run`` is for a person: a QMP socket in a default place when no QMP monitor is
  given, the human monitor on the terminal unless ``-monitor`` is given, a busy guest, and
  lines saying where everything is.

Our own options keep their ``--double-dash`` names (QEMU reads ``--machine`` as ``-machine``,
so none of them is a QEMU option's name). The option table is in docs/STANDIN.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final, NoReturn

from qmonitor import __version__
from qmonitor.cmdline import (
    Chardev,
    CommandLineError,
    DaemonizePoint,
    FdSocketAddress,
    InetSocketAddress,
    MonitorSpec,
    QemuCommandLine,
    UnixSocketAddress,
    parse_command_line,
)
from qmonitor.cmdline.chardev import ringbuf_size
from qmonitor.cmdline.errors import Diagnostic
from qmonitor.core.cutils import qemu_strtosz
from qmonitor.core.errors import QMonitorError
from qmonitor.core.record import Record
from qmonitor.machine.config import (
    DEFAULT_CPU_MODEL,
    ChardevBackend,
    ChardevConfig,
    CpuTopology,
    DeviceConfig,
    MachineConfig,
    ObjectConfig,
    SimpleChardev,
    SocketChardev,
)
from qmonitor.machine.run import (
    DEFAULT_DIRTY_RATE,
    MonitorPlan,
    RunPlan,
    default_socket_dir,
    default_state_dir,
)
from qmonitor.server.listen import Address
from qmonitor.server.objects import CommandLineObjects

if TYPE_CHECKING:
    import ssl

    from qmonitor.server.peer import Admit

STANDIN_PROGRAM: Final = "qmonitor-system-x86_64"

QEMU_VERSION: Final = "7.2.22"
"""The QEMU whose command line and monitor we reproduce, as ``-version`` names it: the
version ``query-version`` and the greeting give (the capability profile's QEMU, Debian 12's)."""

NIL_UUID: Final = "00000000-0000-0000-0000-000000000000"
"""``query-uuid`` without ``-uuid``: QEMU's ``qemu_uuid``, all zeros until set."""

COPYRIGHT: Final = "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers"
"""include/qemu-common.h ``QEMU_COPYRIGHT`` of QEMU 7.2."""

MAX_RAM_SIZE: Final = 16 << 30
"""The most RAM the machine simulates (``loadvm`` holds a second copy while it checks a file)."""

RAM_ABOVE_LIMIT: Final = "cannot model more than {limit} of RAM"
"""QEMU's wording for a board's RAM limit (hw/arm/sbsa-ref.c, with ``size_to_str``)."""

NAME_NOT_A_FILE_NAME: Final = (
    "the name names the QMP socket (NAME.qmp) and the snapshot directory, so it cannot be "
    "empty, '.' or '..', or contain '/'"
)

PIDFILE_ERROR: Final = "cannot create PID file: {reason}"
"""softmmu/vl.c: ``error_reportf_err(err, "cannot create PID file: ")``."""

STANDIN_OWN_OPTIONS: Final[Mapping[str, bool]] = {
    "--state-dir": True,
    "--dirty-rate": True,
    "--strict-order": False,
    "--profile": True,
    "--faults": True,
    "--policy": True,
    "--audit-log": True,
    "--allow-path": True,
    "--allow-insecure-tcp": False,
}
"""``qmonitor-system-x86_64``'s own options (name: takes a value)."""

RUN_OWN_OPTIONS: Final[Mapping[str, bool]] = {
    **STANDIN_OWN_OPTIONS,
    "--log": True,
    "--verbose": False,
}
"""``qmonitor run``'s: the stand-in's, plus the log. ``--help``/``--version`` are QEMU's
``-help``/``-version`` (QEMU reads a double dash as a single one), answered with ours."""


class LaunchError(QMonitorError):
    """A value QEMU would take that we cannot: ``str()`` is the line after the program name."""


class Launch(Record):
    """A parsed command line and what to do with it."""

    __slots__ = ("command_line", "log", "plan", "verbose")

    command_line: Final[QemuCommandLine]
    plan: Final[RunPlan]
    verbose: Final[int]
    log: Final[str | None]

    def __init__(
        self, command_line: QemuCommandLine, plan: RunPlan, verbose: int = 0, log: str | None = None
    ) -> None:
        self.command_line = command_line
        self.plan = plan
        self.verbose = verbose
        self.log = log


def parse_rate(text: str) -> int:
    """``--dirty-rate``: bytes per second, with an optional K/M/G suffix."""
    from qmonitor.machine.machine import parse_size

    return parse_size(text)


def own_values(command_line: QemuCommandLine) -> dict[str, list[str | None]]:
    """The own options given, by name, in order."""
    values: dict[str, list[str | None]] = {}
    for option in command_line.own_options:
        values.setdefault(option.name, []).append(option.value)
    return values


def check_file_name(name: str, argument: str) -> None:
    """Refuse a name that cannot name a file, where it does (``qmonitor run``'s default socket
    and snapshot directory); QEMU takes any ``-name``."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        import shlex  # only for this message (start-up time)

        raise LaunchError(f"-name {shlex.quote(argument)}: {NAME_NOT_A_FILE_NAME}")


def chardev_address(spec: MonitorSpec) -> Address | None:
    """Where a monitor's chardev does its I/O, as the server layer takes it; ``None`` for a
    backend without I/O here (``null``, ``vc``, ``pty``...)."""
    chardev = spec.chardev
    if chardev.backend == "stdio":
        return Address("stdio")
    address = chardev.address
    if chardev.backend != "socket" or address is None:
        return None
    if isinstance(address, UnixSocketAddress):
        return Address("unix", path=address.path, server=chardev.server, wait=chardev.wait)
    if isinstance(address, InetSocketAddress):
        port = int(address.port) if address.port.isdigit() else 0
        host = address.host or "127.0.0.1"
        return Address("tcp", host=host, port=port, server=chardev.server, wait=chardev.wait)
    assert isinstance(address, FdSocketAddress)
    return Address("fd", fd=address.fd, server=chardev.server, wait=chardev.wait)


def chardev_backend(chardev: Chardev) -> ChardevBackend:
    """The machine's record of a chardev (``query-chardev``, QOM ``/chardevs``)."""
    address = chardev.address
    simple = SimpleChardev(chardev.backend, location=chardev.location, port=chardev.port)
    if chardev.backend in ("ringbuf", "memory"):
        return simple.replace(size=ringbuf_size(_size_option(chardev)))
    if chardev.backend in ("file", "pipe"):
        append = chardev.options.get("append") in ("on", "yes", "true", "y")
        return simple.replace(path=chardev.options.get("path"), append=append)
    if chardev.backend != "socket" or address is None:
        return simple
    telnet = chardev.options.get("telnet") in ("on", "yes", "true", "y")
    if isinstance(address, UnixSocketAddress):
        return SocketChardev(path=address.path, server=chardev.server, telnet=telnet)
    if isinstance(address, InetSocketAddress):
        return SocketChardev(
            host=address.host, port=address.port, server=chardev.server, telnet=telnet
        )
    if chardev.server:
        return _listening_fd_chardev(address.fd)
    return SocketChardev(fd=str(address.fd), server=False)


def _listening_fd_chardev(fd: int) -> SocketChardev:
    """An inherited listening socket, named by its own address as QEMU names it
    (char-socket.c ``qmp_chardev_open_socket_server``: ``s->addr`` is the listener's local
    address), so ``query-chardev`` says ``disconnected:unix:PATH,server=on`` (libvirt's
    ``fd=N``) and ``qom-get addr`` the path. A descriptor that is no socket is kept as
    ``fd:N`` (the listener refuses it when serving starts)."""
    import socket

    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            family, local = sock.family, sock.getsockname()
    except OSError:
        return SocketChardev(fd=str(fd), server=True)
    if family == socket.AF_UNIX:
        path = local.decode(errors="replace") if isinstance(local, bytes) else local
        return SocketChardev(path=path, server=True)
    if family in (socket.AF_INET, socket.AF_INET6):
        family_flag = "ipv4" if family == socket.AF_INET else "ipv6"
        return SocketChardev(host=local[0], port=str(local[1]), server=True, family=family_flag)
    return SocketChardev(fd=str(fd), server=True)


def _size_option(chardev: Chardev) -> int:
    """A ringbuf's ``size=``, as the command line checked it (0: not given)."""
    text = chardev.options.get("size")
    return 0 if text is None else qemu_strtosz(text).value


MAX_ISA_SERIAL_PORTS: Final = 4
"""include/hw/char/serial.h ``MAX_ISA_SERIAL_PORT``: the ISA serial ports a PC board connects
(hw/i386/pc.c ``pc_basic_device_init``); its parallel ports are the (at most three) given."""


def port_connected(chardev: Chardev, machine_type: str) -> bool:
    """Whether the board connects a ``-serial``/``-parallel`` chardev to a device (its
    ``frontend-open``): every x86 board but ``none`` has ISA serial ports for ``serial0`` to
    ``serial3`` and parallel ports for every ``-parallel``."""
    if not chardev.port or machine_type == "none":
        return False
    if chardev.port == "serial":
        return int(chardev.id.removeprefix("serial")) < MAX_ISA_SERIAL_PORTS
    return True


def machine_config(
    command_line: QemuCommandLine, monitors: Sequence[MonitorSpec], ram_argument: str | None
) -> MachineConfig:
    """The machine the command line describes (``-machine``, ``-cpu``, ``-smp``, ``-m``,
    ``-uuid``, the chardevs, ``-object``, ``-device``).

    Without ``-uuid`` the uuid is all zeros, as QEMU's ``qemu_uuid`` (``query-uuid``).
    """
    if command_line.ram_size > MAX_RAM_SIZE:
        limit = RAM_ABOVE_LIMIT.format(limit=f"{MAX_RAM_SIZE >> 30} GiB")
        raise LaunchError(f"-m {ram_argument}: {limit}" if ram_argument else limit)
    smp = command_line.smp
    used = {spec.chardev.id for spec in monitors}
    chardevs = {
        chardev.id: ChardevConfig(
            chardev.id,
            chardev_backend(chardev),
            frontend=chardev.id in used or port_connected(chardev, command_line.machine.type),
        )
        for chardev in command_line.chardevs
    }
    for spec in monitors:
        chardevs.setdefault(
            spec.chardev.id, ChardevConfig(spec.chardev.id, chardev_backend(spec.chardev))
        )
    return MachineConfig(
        machine_type=command_line.machine.type,
        # -cpu MODEL[,FEATURE=VALUE...]: the model is what precedes the first comma
        # (hw/core/cpu-common.c parse_cpu_option: g_strsplit(cpu_option, ",", 2)).
        cpu_model=(command_line.cpu or DEFAULT_CPU_MODEL).split(",", 1)[0],
        cpus=smp.cpus,
        topology=CpuTopology(smp.sockets, smp.dies, smp.cores, smp.threads),
        uuid=str(command_line.uuid) if command_line.uuid is not None else NIL_UUID,
        ram_size=command_line.ram_size,
        chardevs=tuple(chardevs.values()),
        objects=tuple(
            ObjectConfig(
                str(item["qom-type"]),
                str(item["id"]),
                {key: value for key, value in item.items() if key not in ("qom-type", "id")},
            )
            for item in command_line.objects
        ),
        devices=tuple(
            DeviceConfig(
                str(item["driver"]),
                str(item["id"]) if "id" in item else None,
                {key: value for key, value in item.items() if key not in ("driver", "id")},
            )
            for item in command_line.devices
        ),
    )


def last_argument(command_line: QemuCommandLine, name: str) -> str | None:
    """The argument of the last ``-NAME`` given, as typed."""
    found = None
    for option, argument in command_line.options:
        if option == name:
            found = argument
    return found


class MonitorTls(Record):
    """What a monitor chardev's ``tls-creds=ID[,tls-authz=AUTHZ]`` make of its listener
    (``ca_file``: the credentials' CA, for the line telling how to connect)."""

    __slots__ = ("admit", "ca_file", "context")

    context: Final[ssl.SSLContext]
    admit: Final[Admit | None]
    ca_file: Final[str]

    def __init__(self, context: ssl.SSLContext, admit: Admit | None, ca_file: str) -> None:
        self.context = context
        self.admit = admit
        self.ca_file = ca_file


TLS_CREDS_TYPE_UNSUPPORTED: Final = (
    "chardev '{chardev}': tls-creds={creds}: {qom_type} credentials are not supported by "
    "qmonitor; use tls-creds-x509"
)
TLS_CONNECTING_OUT_UNSUPPORTED: Final = (
    "chardev '{chardev}': tls-creds={creds}: TLS on a monitor that connects out (server=off) "
    "is not supported by qmonitor"
)


def tls_for_monitors(
    command_line: QemuCommandLine, objects: CommandLineObjects
) -> dict[str, MonitorTls]:
    """The TLS of each monitor chardev with ``tls-creds=``, by chardev id; LaunchError.

    The ``-object tls-creds-x509`` and ``authz-*`` objects were made while the command line
    was read, where QEMU makes them (every one, used or not; QEMU's errors in QEMU's order:
    :mod:`qmonitor.server.objects`), and that ``tls-creds=`` names TLS credentials for the
    chardev's endpoint was checked there too (char-socket.c, QEMU's texts). A ``tls-authz=``
    id is looked up at each connection, as QEMU does (authz/base.c
    ``qauthz_is_allowed_by_id``): an id that names no authz object starts, and refuses every
    client with a certificate.

    Not QEMU's (docs/STANDIN.md): ``tls-creds-anon``/``tls-creds-psk`` credentials and TLS on a
    monitor that connects out are refused at start with one line.
    """
    monitors = [spec for spec in command_line.monitors if "tls-creds" in spec.chardev.options]
    if not monitors:
        return {}
    from qmonitor.server.peer import tls_authz_gate
    from qmonitor.server.tls import CA_CERT, TLS_CREDS_X509

    qom_types = {str(item["id"]): str(item["qom-type"]) for item in command_line.objects}
    found: dict[str, MonitorTls] = {}
    for spec in monitors:
        chardev = spec.chardev
        creds_id = chardev.options["tls-creds"]
        names = {"chardev": chardev.id, "creds": creds_id}
        if qom_types.get(creds_id) != TLS_CREDS_X509:
            qom_type = qom_types.get(creds_id, "?")
            raise LaunchError(TLS_CREDS_TYPE_UNSUPPORTED.format(**names, qom_type=qom_type))
        if not chardev.server:
            raise LaunchError(TLS_CONNECTING_OUT_UNSUPPORTED.format(**names))
        authz_id = chardev.options.get("tls-authz")
        admit = None if authz_id is None else tls_authz_gate(objects.authorizer, authz_id)
        credentials = objects.credentials[creds_id]
        found[chardev.id] = MonitorTls(credentials.context, admit, credentials.creds.path(CA_CERT))
    return found


def monitor_plans(
    command_line: QemuCommandLine,
    objects: CommandLineObjects,
    *,
    interactive: bool = False,
    wait: bool = False,
) -> list[MonitorPlan]:
    """The command line's monitors, each with its chardev's TLS (:func:`tls_for_monitors`);
    with ``wait``, a listening chardev with ``wait=on`` holds start-up until its first client,
    as in QEMU (the stand-in; ``qmonitor run`` serves at once)."""
    tls = tls_for_monitors(command_line, objects)
    plans = []
    for spec in command_line.monitors:
        secured = tls.get(spec.chardev.id)
        plans.append(
            MonitorPlan(
                spec.mode,
                chardev_address(spec),
                spec.chardev.id,
                interactive=interactive,
                wait_location=spec.chardev.location if wait and _waits(spec.chardev) else None,
                pretty=spec.pretty,
                tls=None if secured is None else secured.context,
                admit=None if secured is None else secured.admit,
                tls_ca_file=None if secured is None else secured.ca_file,
            )
        )
    return plans


def _waits(chardev: Chardev) -> bool:
    """Whether start-up waits for a first client (char-socket.c: a listening socket with
    ``wait=on``; no other backend waits)."""
    return chardev.backend == "socket" and chardev.server and chardev.wait


def read_command_line(
    arguments: Sequence[str],
    own_options: Mapping[str, bool] | None = None,
    at_daemonize: DaemonizePoint | None = None,
) -> tuple[QemuCommandLine, CommandLineObjects]:
    """The arguments read as QEMU reads them, and the TLS and authz objects they make
    (CommandLineError, in QEMU's order); ``at_daemonize`` as for ``parse_command_line``."""
    objects = CommandLineObjects()
    return parse_command_line(arguments, own_options, objects, at_daemonize), objects


def standin_launch(
    command_line: QemuCommandLine, objects: CommandLineObjects, program: str = STANDIN_PROGRAM
) -> Launch:
    """``qmonitor-system-x86_64``: QEMU's defaults (see the module docstring); ``objects`` are
    those :func:`read_command_line` made."""
    own = own_values(command_line)
    monitors = list(command_line.monitors)
    plans = monitor_plans(command_line, objects, wait=True)
    if command_line.default_monitor and command_line.defaults and command_line.nographic:
        # vl.c: with -nographic, the default monitor is muxed with the serial port on stdio.
        plans.append(MonitorPlan("readline", Address("stdio"), "compat_monitor0"))
    config = machine_config(command_line, monitors, last_argument(command_line, "m"))
    name = command_line.name
    state_dir = _state_dir(own, name)
    plan = _run_plan(
        command_line,
        own,
        name,
        config,
        plans,
        state_dir,
        program,
        idle_dirty_rate=0,
        announce=False,
    )
    return Launch(command_line, plan)


def run_launch(
    command_line: QemuCommandLine, objects: CommandLineObjects, program: str = "qmonitor"
) -> Launch:
    """``qmonitor run``: a person's defaults (see the module docstring); ``objects`` are those
    :func:`read_command_line` made."""
    own = own_values(command_line)
    name = "vm0" if command_line.name is None else command_line.name
    name_argument = last_argument(command_line, "name") or name
    monitors = list(command_line.monitors)
    plans = monitor_plans(command_line, objects, interactive=True)
    qmp = [plan for plan in plans if plan.mode == "control"]
    default_socket = not qmp
    if default_socket:
        check_file_name(name, name_argument)
    human_given = any(option == "monitor" for option, _ in command_line.options) or any(
        plan.mode == "readline" for plan in plans
    )
    stdio_used = any(
        plan.address is not None and plan.address.transport == "stdio" for plan in plans
    )
    state_dir = _last(own, "--state-dir")
    if state_dir is None:
        check_file_name(name, name_argument)
        state_dir = default_state_dir(name)
    index = len(plans)
    if default_socket:
        directory = default_socket_dir()
        path = os.path.join(directory, f"{name}.qmp")
        plans.append(
            MonitorPlan(
                "control", Address("unix", path=path, server=True), f"compat_monitor{index}"
            )
        )
        index += 1
    if not human_given and not stdio_used:
        plans.append(
            MonitorPlan("readline", Address("stdio"), f"compat_monitor{index}", interactive=True)
        )
    config = machine_config(command_line, monitors, last_argument(command_line, "m"))
    config_chardevs = list(config.chardevs)
    for planned in plans[len(monitors) :]:
        assert planned.address is not None and planned.label is not None
        backend: ChardevBackend = (
            SocketChardev(path=planned.address.path, server=True)
            if planned.address.transport == "unix"
            else SimpleChardev("stdio")
        )
        config_chardevs.append(ChardevConfig(planned.label, backend))
    config = config.replace(chardevs=tuple(config_chardevs))
    verbose = len(own.get("--verbose", []))
    plan = _run_plan(
        command_line,
        own,
        name,
        config,
        plans,
        state_dir,
        program,
        idle_dirty_rate=DEFAULT_DIRTY_RATE,
        announce=True,
        default_socket=default_socket,
    )
    return Launch(command_line, plan, verbose=verbose, log=_last(own, "--log"))


def _run_plan(
    command_line: QemuCommandLine,
    own: Mapping[str, list[str | None]],
    name: str | None,
    config: MachineConfig,
    plans: Sequence[MonitorPlan],
    state_dir: str,
    program: str,
    *,
    idle_dirty_rate: int,
    announce: bool,
    default_socket: bool = False,
) -> RunPlan:
    """The :class:`RunPlan` of either program: what differs is passed in (the workload without
    ``--dirty-rate``, whether to announce the monitors, a made-up socket); the command line's
    run options and the own options both programs take are read here alike."""
    return RunPlan(
        name=name,
        config=config,
        monitors=tuple(plans),
        state_dir=state_dir,
        program=program,
        start_paused=command_line.start_paused,
        incoming=command_line.incoming,
        no_shutdown=command_line.no_shutdown,
        dirty_rate=_dirty_rate(own, idle_dirty_rate),
        announce=announce,
        default_socket=default_socket,
        strict_order="--strict-order" in own,
        profile=_last(own, "--profile"),
        faults=_last(own, "--faults"),
        policy=_last(own, "--policy"),
        audit_log=_last(own, "--audit-log"),
        allow_path=tuple(path for path in own.get("--allow-path", []) if path is not None),
        allow_insecure_tcp="--allow-insecure-tcp" in own,
    )


def _last(own: Mapping[str, list[str | None]], name: str) -> str | None:
    values = own.get(name)
    return values[-1] if values else None


def _dirty_rate(own: Mapping[str, list[str | None]], default: int) -> int:
    text = _last(own, "--dirty-rate")
    if text is None:
        return default
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise LaunchError(f"--dirty-rate {text}: {exc}") from None


def _state_dir(own: Mapping[str, list[str | None]], name: str | None) -> str:
    """The stand-in's snapshot directory: ``--state-dir``, else qmonitor run's default for the
    machine's name when it can name a directory (``vm0`` otherwise)."""
    given = _last(own, "--state-dir")
    if given is not None:
        return given
    if name is None or name in ("", ".", "..") or "/" in name or "\0" in name:
        name = "vm0"
    return default_state_dir(name)


# -- -version, -help -----------------------------------------------------------------------------


def version_text() -> str:
    """``-version``: QEMU's two lines (softmmu/vl.c ``version()``: ``QEMU_FULL_VERSION``, the
    version then the package in parentheses), our package where a distribution puts its own
    (``QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)``): the same package
    string as ``query-version``'s ``package``."""
    return f"QEMU emulator version {QEMU_VERSION} (qmonitor {__version__})\n{COPYRIGHT}\n"


STANDIN_HELP: Final = """\
usage: {program} [options]

qmonitor's stand-in for qemu-system-x86_64: QEMU's command line and monitor (QMP and HMP)
in front of a simulated machine, for tools that launch QEMU (libvirt, QEMUMachine, go-qemu).
Options are QEMU's, read as QEMU 7.2 reads them; docs/STANDIN.md lists what each one does.

Standard options:
-h or -help     display this help and exit
-version        display version information and exit
-machine [type=]name[,prop[=value][,...]]
                selects emulated machine (recorded; 'none' has no CPU and no RAM)
-cpu cpu        select CPU (recorded)
-accel [accel=]accelerator[,prop[=value][,...]]
                recorded
-smp [[cpus=]n][,maxcpus=maxcpus][,sockets=sockets][,dies=dies][,cores=cores][,threads=threads]
                the machine's CPUs (query-cpus-fast, QOM)
-m [size=]megs[,slots=n,maxmem=size]
                guest RAM
-name string1[,process=string2][,debug-threads=on|off]
                the guest's name (query-name)
-uuid %08x-%04x-%04x-%04x-%012x
                the guest's UUID (query-uuid; all zeros without it)

Character devices and monitors:
-chardev socket,id=id[,path=path|host=host,port=port|fd=n][,server=on|off][,wait=on|off]
                a socket: listen, connect out, or an inherited listening or connected fd
-mon [chardev=]name[,mode=readline|control][,pretty[=on|off]]
-qmp dev        QMP on dev (unix:PATH[,server=on,wait=off], tcp:HOST:PORT[,...], stdio)
-qmp-pretty dev
-monitor dev    the human monitor on dev

Run state:
-S              freeze CPU at startup (use 'c' to start execution)
-incoming tcp:[host]:port|unix:socketpath|file:path|fd:N|defer
                wait for an incoming migration
-no-shutdown    stop before shutdown
-pidfile file   write PID to 'file'
-daemonize      daemonize QEMU after initializing

Own options (qmonitor's):
--state-dir DIR     where snapshots are kept
--dirty-rate RATE   bytes of RAM the guest writes per second (default 0: idle)
--strict-order      answer each client's requests one at a time, in order
--profile FILE      capability profile answering the probe queries
--faults FILE       inject faults: a JSON file {{"faults": [RULE, ...]}} (docs/TESTING.md)
--policy FILE       roles policy (TOML): which commands each connection may run
--audit-log FILE    append one JSON record per session and request to FILE
--allow-path DIR    a directory migrate file: URIs may use (repeatable; the state directory
                    always)
--allow-insecure-tcp
                    serve a TCP monitor on a non-loopback address without TLS

Other options QEMU has for x86 (-display, -vga, -nographic, -nodefaults, -object, -device,
-rtc, -boot, -audiodev, -sandbox, -msg, -global, -overcommit, ...) are checked and recorded.
"""


def help_text(program: str) -> str:
    """``-help``: QEMU's layout (version line, usage, option groups), with our options."""
    return f"QEMU emulator version {QEMU_VERSION} (qmonitor {__version__})\n" + (
        STANDIN_HELP.format(program=program)
    )


# -- -pidfile --------------------------------------------------------------------------------


class PidFile:
    """QEMU's pid file (util/oslib-posix.c ``qemu_write_pidfile``), removed at exit.

    Opened (created 0600), locked with a write lock held for the process's life, checked to
    still be the file at that path (another QEMU may have replaced it meanwhile), then truncated
    and written ``PID\\n``. A file another live process holds locked is refused
    (``Cannot lock pid file: Resource temporarily unavailable``).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._realpath = ""

    def write(self) -> None:
        """Create, lock and write it; :class:`LaunchError` with QEMU's text if that fails."""
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            except OSError as exc:
                raise LaunchError(
                    PIDFILE_ERROR.format(
                        reason=f"Could not create '{self.path}': {os.strerror(exc.errno or 0)}"
                    )
                ) from None
            try:
                opened = os.fstat(fd)
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                reason = f"Cannot lock pid file: {os.strerror(exc.errno or errno.EAGAIN)}"
                raise LaunchError(PIDFILE_ERROR.format(reason=reason)) from None
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                os.close(fd)
                continue
            if now.st_ino == opened.st_ino:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        self._realpath = os.path.realpath(self.path)

    def remove(self) -> None:
        """At exit: unlink it (vl.c ``qemu_unlink_pidfile``) and drop the lock."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._realpath)
        os.close(self._fd)
        self._fd = -1


# -- -daemonize ------------------------------------------------------------------------------


def daemonize() -> Callable[[], None]:
    """QEMU's ``os_daemonize`` (os-posix.c): fork twice; the first parent waits.

    Done before any event loop exists (a forked event loop, uvloop's above all, is unusable).
    The first parent exits with status 0 once the daemon reports that it is ready (its
    monitors listen), 1 if the daemon exits first. Returns the daemon's ``ready``: it puts
    /dev/null on standard input, output and error (``os_setup_post``), and reports.
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        status = b""
        with contextlib.suppress(InterruptedError):
            status = os.read(read_end, 1)
        os._exit(0 if status == b"\0" else 1)
    os.close(read_end)
    os.set_inheritable(write_end, False)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.umask(0o027)

    def ready() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_RDWR)
        for fileno in (0, 1, 2):
            os.dup2(null, fileno)
        os.close(null)
        os.write(write_end, b"\0")
        os.close(write_end)

    return ready


# -- the programs ------------------------------------------------------------------------------


def event_loop_runner(*, prefer_uvloop: bool = True) -> asyncio.Runner:
    """uvloop's runner where uvloop is installed (and preferred), asyncio's otherwise.

    ``qmonitor run`` prefers uvloop: its QMP throughput and latency figures
    (docs/PERFORMANCE.md) are uvloop's. The stand-in does not: importing uvloop and making its
    loop cost about 5 ms before the greeting, while the ~400 requests libvirt sends at a
    domain's start cost about 1 ms more on asyncio's loop (measured side by side; its unix
    socket monitors use qmonitor's own transport on either loop).
    """
    if not prefer_uvloop:
        return asyncio.Runner()
    with contextlib.suppress(ImportError):
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def ensure_standard_streams() -> None:
    """Put /dev/null on standard descriptors we were started without.

    Otherwise the first socket we open becomes descriptor 0, 1 or 2, and libuv (uvloop) aborts
    the process when it closes it; and a closed stdin would read as "no console".
    """
    for fileno, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fileno)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fileno:
                os.dup2(opened, fileno)
                os.close(opened)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fileno, mode, closefd=False))  # noqa: SIM115 - process-long


def print_reports(reports: Sequence[Diagnostic], program: str) -> None:
    """The warnings QEMU prints while it starts."""
    sys.stderr.write("".join(report.render(program) for report in reports))


class _Started:
    """What ``-daemonize`` and ``-pidfile`` did, at the moment QEMU does them.

    QEMU daemonizes and writes its pid file after the option loop and the earliest objects,
    before the RTC, memory, machine, other objects and chardevs are set up (vl.c
    ``qemu_maybe_daemonize``), so a pid file that cannot be written is the error reported
    before any of theirs, and one of theirs removes the pid file as QEMU's exit notifier does
    (a stale file at that path included).
    """

    def __init__(self) -> None:
        self.ready: Callable[[], None] | None = None
        self.pidfile: PidFile | None = None

    def daemonize_and_write_pidfile(self, pidfile: str | None, daemonize_requested: bool) -> None:
        if daemonize_requested:
            self.ready = daemonize()
        if pidfile is not None:
            written = PidFile(pidfile)
            written.write()
            self.pidfile = written


def standin_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qmonitor-system-x86_64`` console script."""
    from qmonitor.machine.run import run_machine

    ensure_standard_streams()
    program = os.path.basename(sys.argv[0]) if argv is None else STANDIN_PROGRAM
    arguments = sys.argv[1:] if argv is None else list(argv)
    started = _Started()
    try:
        try:
            command_line, objects = read_command_line(
                arguments, STANDIN_OWN_OPTIONS, started.daemonize_and_write_pidfile
            )
        except CommandLineError as error:
            sys.stderr.write(error.render(program))
            return 1
        except LaunchError as error:
            print(f"{program}: {error}", file=sys.stderr)
            return 1
        print_reports(command_line.reports, program)
        if command_line.version:
            sys.stdout.write(version_text())
            return 0
        if command_line.help:
            sys.stdout.write(help_text(program))
            return 0
        try:
            launch = standin_launch(command_line, objects, program)
        except LaunchError as error:
            print(f"{program}: {error}", file=sys.stderr)
            return 1
        with event_loop_runner(prefer_uvloop=False) as runner:
            status = runner.run(run_machine(launch.plan, on_ready=started.ready))
    finally:
        if started.pidfile is not None:
            started.pidfile.remove()
    if argv is None:
        exit_after_shutdown(status)
    return status


def exit_after_shutdown(status: int) -> NoReturn:
    """End the stand-in's process once its machine has shut down, without Python's
    finalization.

    Finalization frees every module and object one by one: for the stand-in, tens of
    milliseconds (over 100 on a loaded host) between the last byte it owes anyone and its
    exit, which every test of the pytest plugin waits for at teardown. Nothing needs it by
    then: the machine has closed its monitors and sockets, the event loop's runner has joined
    its worker threads, the audit log's writer is joined when its monitor closes, and the pid
    file is gone. QEMU, likewise, calls ``exit()`` straight after ``qemu_cleanup()``
    (softmmu/main.c). Only the console script's process ends this way (``standin_main()``
    without arguments): a caller that passes ``argv`` gets the status back.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone, a stream closed
            stream.flush()
    os._exit(status)
