"""QEMU 7.2's option table for qemu-system-x86_64 (qemu-options.hx, softmmu/vl.c).

QEMU looks an option up by its exact name (softmmu/vl.c ``lookup_opt()``): no abbreviations,
one leading dash, and ``--name`` is the same as ``-name``. Whether an option takes an argument
comes from the table, never from the text (``-m=64`` is the unknown option ``-m=64``). The
table is generated from qemu-options.hx of QEMU 7.2 and checked option by option against the
real binary (every name exists, each ``HAS_ARG`` one answers "requires an argument" alone).
Options whose architecture mask leaves out x86 are known but refused with "Option not supported
for this target", as qemu-system-x86_64 does.
"""

from __future__ import annotations

from typing import Final

from qmonitor.core.record import Record


class QemuOption(Record):
    """One ``QEMUOption``: its name (without the dash) and ``HAS_ARG``."""

    __slots__ = ("name", "on_this_target", "takes_argument")

    name: Final[str]
    takes_argument: Final[bool]
    on_this_target: Final[bool]  # its arch_mask includes QEMU_ARCH_I386 (x86 and x86_64)

    def __init__(self, name: str, takes_argument: bool, on_this_target: bool) -> None:
        self.name = name
        self.takes_argument = takes_argument
        self.on_this_target = on_this_target


# vl.c qemu_options[]: { "h", 0, QEMU_OPTION_h, QEMU_ARCH_ALL } and then qemu-options.def.
_TABLE: Final[tuple[tuple[str, bool, bool], ...]] = (
    ("h", False, True),
    ("help", False, True),
    ("version", False, True),
    ("machine", True, True),
    ("M", True, True),
    ("cpu", True, True),
    ("accel", True, True),
    ("smp", True, True),
    ("numa", True, True),
    ("add-fd", True, True),
    ("set", True, True),
    ("global", True, True),
    ("boot", True, True),
    ("m", True, True),
    ("mem-path", True, True),
    ("mem-prealloc", False, True),
    ("k", True, True),
    ("audio-help", False, True),
    ("audio", True, True),
    ("audiodev", True, True),
    ("device", True, True),
    ("name", True, True),
    ("uuid", True, True),
    ("fda", True, True),
    ("fdb", True, True),
    ("hda", True, True),
    ("hdb", True, True),
    ("hdc", True, True),
    ("hdd", True, True),
    ("cdrom", True, True),
    ("blockdev", True, True),
    ("drive", True, True),
    ("mtdblock", True, True),
    ("sd", True, True),
    ("snapshot", False, True),
    ("fsdev", True, True),
    ("virtfs", True, True),
    ("iscsi", True, True),
    ("usb", False, True),
    ("usbdevice", True, True),
    ("display", True, True),
    ("nographic", False, True),
    ("spice", True, True),
    ("portrait", False, True),
    ("rotate", True, True),
    ("vga", True, True),
    ("full-screen", False, True),
    ("g", True, False),
    ("vnc", True, True),
    ("win2k-hack", False, True),
    ("no-fd-bootchk", False, True),
    ("no-acpi", False, True),
    ("no-hpet", False, True),
    ("acpitable", True, True),
    ("smbios", True, True),
    ("netdev", True, True),
    ("nic", True, True),
    ("net", True, True),
    ("chardev", True, True),
    ("tpmdev", True, True),
    ("bios", True, True),
    ("pflash", True, True),
    ("kernel", True, True),
    ("append", True, True),
    ("initrd", True, True),
    ("dtb", True, True),
    ("compat", True, True),
    ("fw_cfg", True, True),
    ("serial", True, True),
    ("parallel", True, True),
    ("monitor", True, True),
    ("qmp", True, True),
    ("qmp-pretty", True, True),
    ("mon", True, True),
    ("debugcon", True, True),
    ("pidfile", True, True),
    ("singlestep", False, True),
    ("preconfig", False, True),
    ("S", False, True),
    ("overcommit", True, True),
    ("gdb", True, True),
    ("s", False, True),
    ("d", True, True),
    ("D", True, True),
    ("dfilter", True, True),
    ("seed", True, True),
    ("L", True, True),
    ("enable-kvm", False, True),
    ("xen-domid", True, True),
    ("xen-attach", False, True),
    ("xen-domid-restrict", False, True),
    ("no-reboot", False, True),
    ("no-shutdown", False, True),
    ("action", True, True),
    ("loadvm", True, True),
    ("daemonize", False, True),
    ("option-rom", True, True),
    ("rtc", True, True),
    ("icount", True, True),
    ("watchdog-action", True, True),
    ("echr", True, True),
    ("incoming", True, True),
    ("only-migratable", False, True),
    ("nodefaults", False, True),
    ("chroot", True, True),
    ("runas", True, True),
    ("prom-env", True, False),
    ("semihosting", False, False),
    ("semihosting-config", True, False),
    ("old-param", False, False),
    ("sandbox", True, True),
    ("readconfig", True, True),
    ("no-user-config", False, True),
    ("trace", True, True),
    ("plugin", True, True),
    ("qtest", True, True),
    ("qtest-log", True, True),
    ("async-teardown", False, True),
    ("msg", True, True),
    ("dump-vmstate", True, True),
    ("enable-sync-profile", False, True),
    ("object", True, True),
)

QEMU_OPTIONS: Final[dict[str, QemuOption]] = {
    name: QemuOption(name, takes_argument, on_this_target)
    for name, takes_argument, on_this_target in _TABLE
}
