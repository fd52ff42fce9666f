"""Capability profiles: what a real QEMU answered, recorded once, to answer what we cannot compute.

A management tool probes an emulator before it uses it: libvirt asks ``query-target``,
``query-machines``, ``query-cpu-definitions``, ``qom-list-types``, the properties of some
thirty device types, CPU model expansions... (src/qemu/qemu_capabilities.c
``virQEMUCapsInitQMPMonitor``; its test data ``caps_7.2.0_x86_64.replies`` shows the exact
requests). Those answers describe QEMU's build and target, not a machine's state, and a
simulated machine has no way to compute them. So ``qmonitor profile capture`` starts the real
binary, sends the same requests and records every reply, errors included, verbatim; the
stand-in answers from the recording (:mod:`qmonitor.machine.probe_commands`).

File format (JSON, ``format`` ``qmonitor-profile``, ``version`` 1)::

    {"format": "qmonitor-profile", "version": 1,
     "qemu": {"binary": ..., "version": <query-version's return>, "accel": "tcg"},
     "probe": {"argv": [...], "replies": [REPLY, ...]},
     "machines": {"pc-i440fx-7.2": {"argv": [...], "replies": [REPLY, ...]}, ...}}

    REPLY = {"execute": NAME, "arguments": {...}, "return": VALUE}
          | {"execute": NAME, "arguments": {...}, "error": {"class": ..., "desc": ...}}

``probe`` was captured under ``-machine none`` (what libvirt probes with), and serves as that
machine type's entry too; each ``machines`` entry under its machine type, for what depends on it
(the chipset's ``query-pci``, the properties of ``/machine`` and of the first CPU). A reply is
found by command and arguments, compared as JSON values (member order does not matter). Objects
are stored in the order QEMU wrote them, which is its QDict order; :func:`as_inserted` turns
them back into an insertion order from which our encoder (:mod:`qmonitor.qmp.encode`) writes
exactly QEMU's bytes.

This module reads and looks up; the capture itself (processes, sockets) is in
:mod:`qmonitor.machine.capture`, which follows :data:`PROBE_PLAN` and :func:`machine_plan`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cached_property
from typing import Any, Final

import orjson

from qmonitor import QMonitorError, Record, qdict_bucket

FORMAT_NAME: Final = "qmonitor-profile"
FORMAT_VERSION: Final = 1

DEFAULT_PROFILE_NAME: Final = "qemu-7.2-x86_64.json"
"""The profile shipped with the package (captured from Debian 12's QEMU 7.2, TCG)."""

LIBVIRT_DEVICE_TYPES: Final = (
    "virtio-blk-pci", "virtio-net-pci", "virtio-scsi-pci", "virtio-net-ccw", "virtio-scsi-ccw",
    "vfio-pci", "scsi-hd", "ide-hd", "PIIX4_PM", "usb-redir", "usb-storage", "kvm-pit", "VGA",
    "vmware-svga", "qxl", "virtio-gpu-pci", "virtio-gpu-device", "ICH9-LPC",
    "virtio-balloon-pci", "virtio-balloon-ccw", "virtio-balloon-device", "intel-iommu", "mch",
    "nvdimm", "pcie-root-port", "usb-host", "vhost-user-fs-device", "virtio-mem-pci",
    "virtio-iommu-pci",
)  # fmt: skip
"""``device-list-properties`` requests of libvirt 9's probe on x86, in its order."""

LIBVIRT_OBJECT_TYPES: Final = (
    "memory-backend-file", "memory-backend-memfd", "max-x86_64-cpu", "none-machine",
)  # fmt: skip
"""``qom-list-properties`` requests of libvirt 9's probe (TCG) on x86, in its order."""

EXTRA_OBJECT_TYPES: Final = (
    "qemu64-x86_64-cpu", "iothread", "secret", "memory-backend-ram", "container",
    "chardev-socket", "chardev-stdio", "chardev-null", "chardev-pty",
    "pc-i440fx-7.2-machine", "pc-q35-7.2-machine",
)  # fmt: skip
"""Types whose properties our QOM tree lists (CPUs, objects, chardevs, machines)."""

CPU_EXPANSIONS: Final = tuple(
    {"type": expansion, "model": model}
    for expansion, model in (
        ("static", {"name": "max"}),
        ("static", {"name": "max", "props": {"migratable": False}}),
        ("full", {"name": "max"}),
        ("full", {"name": "max", "props": {"migratable": False}}),
        ("static", {"name": "host"}),
        ("static", {"name": "host", "props": {"migratable": False}}),
        ("full", {"name": "host", "props": {"migratable": False, "hv-passthrough": True}}),
    )
)
"""``query-cpu-model-expansion`` requests: libvirt's for TCG (``max``) and for KVM (``host``,
which a TCG QEMU refuses; the refusal is recorded), plus the full expansions."""

PROBE_PLAN: Final[tuple[tuple[str, dict[str, Any]], ...]] = (
    ("query-version", {}),
    ("query-target", {}),
    ("query-kvm", {}),
    ("qom-list-types", {}),
    ("qom-list-types", {"abstract": True}),
    *(("device-list-properties", {"typename": name}) for name in LIBVIRT_DEVICE_TYPES),
    *(("qom-list-properties", {"typename": name}) for name in LIBVIRT_OBJECT_TYPES),
    *(("qom-list-properties", {"typename": name}) for name in EXTRA_OBJECT_TYPES),
    ("query-machines", {}),
    ("query-cpu-definitions", {}),
    ("query-tpm-models", {}),
    ("query-tpm-types", {}),
    ("query-command-line-options", {}),
    ("query-migrate-capabilities", {}),
    ("query-sev-capabilities", {}),
    ("query-sgx-capabilities", {}),
    *(("query-cpu-model-expansion", arguments) for arguments in CPU_EXPANSIONS),
)
"""What ``profile capture`` asks a QEMU started with ``-machine none``."""

CAPTURED_MACHINES: Final = ("pc", "q35")
"""Machine types captured by default, each in a QEMU of its own (with ``-smp 1``)."""

MACHINE_CPU_PATH: Final = "/machine/unattached/device[0]"
"""Where the first CPU of an x86 ``pc`` machine is (hw/i386/x86.c creates the CPUs first)."""


def machine_plan() -> tuple[tuple[str, dict[str, Any]], ...]:
    """The fixed part of what is asked of a QEMU started with a machine type; the capture adds
    a ``qom-get`` for every property ``qom-list`` shows on ``/machine`` and on the first CPU
    (links and children excepted: their values are paths)."""
    return (
        ("query-cpus-fast", {}),
        ("query-pci", {}),
        ("qom-list", {"path": "/machine"}),
        ("qom-list", {"path": MACHINE_CPU_PATH}),
    )


VOLATILE_PROPERTIES: Final = frozenset({"rtc-time"})
"""Properties whose value changes by itself (``/machine``'s clock): computed, not recorded."""


def readable_properties(listing: Iterable[Mapping[str, Any]]) -> list[str]:
    """The properties of a ``qom-list`` reply whose value ``qom-get`` should record."""
    return [
        entry["name"]
        for entry in listing
        if not str(entry["type"]).startswith(("child<", "link<"))
        and entry["name"] not in VOLATILE_PROPERTIES
    ]


class ProfileError(QMonitorError):
    """A profile file that cannot be used; the message is one line naming the file."""


def request_key(command: str, arguments: Mapping[str, Any] | None) -> str:
    """How a request is looked up: the command and its arguments as canonical JSON.

    orjson with sorted keys: a profile keys its thousand replies at its first use, which the
    ``json`` module took about half of (start-up of the first ``query-chardev``, ``qom-list``).
    What orjson cannot write (an integer beyond 64 bits) is written by ``json``: either way the
    key is a function of the request alone, which is all a lookup needs.
    """
    try:
        canonical = orjson.dumps(arguments or {}, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        canonical = json.dumps(arguments or {}, sort_keys=True, separators=(",", ":"))
    return f"{command} {canonical}"


class Reply(Record):
    """One recorded reply: ``value`` (the ``return``) or ``error`` (``class`` and ``desc``)."""

    __slots__ = ("arguments", "command", "error", "value")

    command: Final[str]
    arguments: Final[Mapping[str, Any]]
    value: Final[Any]
    error: Final[Mapping[str, str] | None]

    def __init__(
        self,
        command: str,
        arguments: Mapping[str, Any],
        value: Any = None,
        error: Mapping[str, str] | None = None,
    ) -> None:
        self.command = command
        self.arguments = arguments
        self.value = value
        self.error = error


def as_inserted(value: Any) -> Any:
    """``value`` with every object's members put back in QEMU's insertion order.

    QEMU wrote the members in QDict order: buckets ascending (``tdb_hash``), and within a
    bucket the member inserted last first. Reversing each bucket's members gives an insertion
    order that QDict order turns back into exactly what QEMU wrote.
    """
    if isinstance(value, dict):
        positions = {key: index for index, key in enumerate(value)}
        keys = sorted(value, key=lambda key: (qdict_bucket(key), -positions[key]))
        return {key: as_inserted(value[key]) for key in keys}
    if isinstance(value, list):
        return [as_inserted(item) for item in value]
    return value


class ReplySet:
    """The replies captured from one QEMU process, by request."""

    __slots__ = ("argv", "replies")

    argv: tuple[str, ...]
    replies: dict[str, Reply]

    def __init__(self, argv: tuple[str, ...], replies: dict[str, Reply] | None = None) -> None:
        self.argv = argv
        self.replies = {} if replies is None else replies

    def get(self, command: str, arguments: Mapping[str, Any] | None = None) -> Reply | None:
        """The reply recorded for this request, if any."""
        return self.replies.get(request_key(command, arguments))

    def __iter__(self) -> Iterator[Reply]:
        return iter(self.replies.values())


def _reply_from_json(data: object, where: str) -> Reply:
    if not isinstance(data, dict) or not isinstance(data.get("execute"), str):
        raise ProfileError(f"{where}: a reply lacks its 'execute' member")
    arguments = data.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ProfileError(f"{where}: the arguments of '{data['execute']}' are not an object")
    if "error" in data:
        error = data["error"]
        if not (
            isinstance(error, dict)
            and isinstance(error.get("class"), str)
            and isinstance(error.get("desc"), str)
        ):
            raise ProfileError(f"{where}: the error of '{data['execute']}' is malformed")
        return Reply(
            data["execute"], arguments, error={"class": error["class"], "desc": error["desc"]}
        )
    if "return" not in data:
        raise ProfileError(f"{where}: '{data['execute']}' has neither 'return' nor 'error'")
    return Reply(data["execute"], arguments, value=data["return"])


def _reply_set(data: object, where: str) -> ReplySet:
    if not isinstance(data, dict) or not isinstance(data.get("replies"), list):
        raise ProfileError(f"{where}: expected an object with a 'replies' list")
    argv = data.get("argv", [])
    if not isinstance(argv, list) or not all(isinstance(item, str) for item in argv):
        raise ProfileError(f"{where}: 'argv' is not a list of strings")
    reply_set = ReplySet(tuple(argv))
    for item in data["replies"]:
        reply = _reply_from_json(item, where)
        reply_set.replies.setdefault(request_key(reply.command, reply.arguments), reply)
    return reply_set


class Profile:
    """A capability profile (see the module docstring), with the lookups the commands need.

    A profile made by :meth:`file` or :meth:`default` is read on first use: the shipped one
    takes about 10 ms to parse, which a stand-in launched for every probe should not spend
    before its greeting. :meth:`load` reads it now (``--profile FILE`` does, to report a bad
    file before serving).
    """

    def __init__(self, source: str, read: Callable[[], bytes] | None = None) -> None:
        self.source = source  # where it comes from, for messages
        self._read = read
        self._qemu: Mapping[str, Any] = {}
        self._probe = ReplySet(())
        self._machines: dict[str, ReplySet] = {}
        self._loaded = read is None

    # -- reading ---------------------------------------------------------------------------

    @classmethod
    def file(cls, path: str | os.PathLike[str]) -> Profile:
        """The profile in file ``path``, read on first use."""
        name = os.fspath(path)

        def read() -> bytes:
            try:
                with open(name, "rb") as stream:
                    return stream.read()
            except OSError as exc:
                raise ProfileError(f"cannot read profile {name}: {exc.strerror}") from None

        return cls(name, read)

    @classmethod
    def default(cls) -> Profile:
        """The profile shipped with qmonitor (QEMU 7.2, x86_64, TCG), read on first use."""
        # A path next to this module (package data), not importlib.resources: importing that
        # costs a stand-in about 5 ms before its greeting.
        path = os.path.join(os.path.dirname(__file__), "profiles", DEFAULT_PROFILE_NAME)

        def read() -> bytes:
            with open(path, "rb") as stream:
                return stream.read()

        return cls(f"(built-in) {DEFAULT_PROFILE_NAME}", read)

    @classmethod
    def from_json(cls, data: object, source: str) -> Profile:
        """A profile from its parsed JSON (see the module docstring)."""
        profile = cls(source)
        profile._fill(data)
        return profile

    def load(self) -> Profile:
        """Read the profile now if not done yet; :class:`ProfileError` says what is wrong."""
        if not self._loaded:
            assert self._read is not None
            text = self._read()
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise ProfileError(f"{self.source}: not JSON ({exc})") from None
            self._fill(data)
        return self

    def _fill(self, data: object) -> None:
        source = self.source
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ProfileError(f"{source}: not a qmonitor capability profile")
        if data.get("version") != FORMAT_VERSION:
            raise ProfileError(
                f"{source}: profile format version {data.get('version')!r} "
                f"(this qmonitor reads version {FORMAT_VERSION})"
            )
        qemu = data.get("qemu", {})
        machines = data.get("machines", {})
        if not isinstance(qemu, dict) or not isinstance(machines, dict):
            raise ProfileError(f"{source}: 'qemu' and 'machines' must be objects")
        self._probe = _reply_set(data.get("probe"), f"{source}: probe")
        self._machines = {
            name: _reply_set(entry, f"{source}: machine {name}") for name, entry in machines.items()
        }
        self._qemu = qemu
        self._loaded = True

    @property
    def qemu(self) -> Mapping[str, Any]:
        """What was captured: ``binary``, ``version`` (query-version's return), ``accel``."""
        return self.load()._qemu

    @property
    def probe(self) -> ReplySet:
        """The replies captured under ``-machine none``."""
        return self.load()._probe

    @property
    def machines(self) -> Mapping[str, ReplySet]:
        """The replies captured under each machine type, by full machine type name."""
        return self.load()._machines

    # -- lookups ---------------------------------------------------------------------------

    def reply(self, command: str, arguments: Mapping[str, Any] | None = None) -> Reply | None:
        """The probe's reply to this request (captured under ``-machine none``)."""
        return self.probe.get(command, arguments)

    def machine_reply(
        self, machine_type: str, command: str, arguments: Mapping[str, Any] | None = None
    ) -> Reply | None:
        """The reply captured under ``machine_type`` (a full name; ``none`` is the probe's)."""
        captured = self.probe if machine_type == "none" else self.machines.get(machine_type)
        return captured.get(command, arguments) if captured is not None else None

    def value(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """A probe reply's return value, or None if it failed or was not recorded."""
        reply = self.reply(command, arguments)
        return reply.value if reply is not None and reply.error is None else None

    @cached_property
    def machine_types(self) -> dict[str, dict[str, Any]]:
        """``query-machines`` entries by name and by alias."""
        found: dict[str, dict[str, Any]] = {}
        for entry in self.value("query-machines") or []:
            found[entry["name"]] = entry
            if "alias" in entry:
                found.setdefault(entry["alias"], entry)
        return found

    def machine_info(self, name: str) -> dict[str, Any] | None:
        """The ``query-machines`` entry of a machine type, by name or alias."""
        return self.machine_types.get(name)

    @cached_property
    def types(self) -> dict[str, dict[str, Any]]:
        """Every QOM type (``qom-list-types`` with ``abstract``), by name, in QEMU's order."""
        return {
            entry["name"]: entry for entry in self.value("qom-list-types", {"abstract": True}) or []
        }

    def is_a(self, type_name: str, ancestor: str) -> bool:
        """Whether ``type_name`` is ``ancestor`` or derives from it (parents only: the
        interfaces a type implements are not recorded)."""
        seen = set()
        current: str | None = type_name
        while current is not None and current not in seen:
            if current == ancestor:
                return True
            seen.add(current)
            current = self.types.get(current, {}).get("parent")
        return False

    @cached_property
    def cpu_models(self) -> frozenset[str]:
        """The CPU model names ``query-cpu-definitions`` lists (aliases included)."""
        return frozenset(entry["name"] for entry in self.value("query-cpu-definitions") or [])
