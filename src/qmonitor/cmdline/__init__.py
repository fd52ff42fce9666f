"""QEMU's command line, parsed as QEMU 7.2 parses it (sans I/O).

``qmonitor-system-x86_64`` and ``qmonitor run`` take QEMU's own options, so that the tools that
launch QEMU (libvirt, QEMU's ``QEMUMachine``, go-qemu, test suites) can launch qmonitor
instead. :func:`parse_command_line` turns the arguments into a typed, frozen
:class:`QemuCommandLine`, or raises :class:`CommandLineError` whose ``str()`` is the line QEMU
would print after its program name::

    try:
        command_line = parse_command_line(sys.argv[1:], own_options={"--state-dir": True})
    except CommandLineError as error:
        sys.stderr.write(error.render(os.path.basename(sys.argv[0])))
        sys.exit(1)
    for monitor in command_line.monitors:
        ...  # monitor.mode, monitor.chardev.address, .server, .wait

The rules and the options qmonitor accepts are listed in docs/STANDIN.md ("Command line").
"""

from qmonitor.cmdline.errors import CommandLineError, Diagnostic
from qmonitor.cmdline.machines import SmpTopology
from qmonitor.cmdline.model import (
    Accelerator,
    Chardev,
    FdSocketAddress,
    GlobalProperty,
    InetSocketAddress,
    MachineSpec,
    MonitorMode,
    MonitorSpec,
    OwnOption,
    QemuCommandLine,
    SocketAddress,
    UnixSocketAddress,
)
from qmonitor.cmdline.parse import DaemonizePoint, parse_command_line

__all__ = [
    "Accelerator",
    "Chardev",
    "CommandLineError",
    "DaemonizePoint",
    "Diagnostic",
    "FdSocketAddress",
    "GlobalProperty",
    "InetSocketAddress",
    "MachineSpec",
    "MonitorMode",
    "MonitorSpec",
    "OwnOption",
    "QemuCommandLine",
    "SmpTopology",
    "SocketAddress",
    "UnixSocketAddress",
    "parse_command_line",
]
