"""The probe commands, answered from the capability profile (:mod:`qmonitor.machine.profile`).

What these commands return describes QEMU's build and target (its machine types, CPU models,
QOM types and their properties, command-line options...), which a simulated machine cannot
compute. Each is a real command with QEMU's QAPI signature (qapi/machine.json,
machine-target.json, misc-target.json, qom.json, qdev.json, misc.json, tpm.json), so argument
checking and ``query-qmp-schema`` are QEMU's; the reply is the one the profile recorded for
the same arguments, errors included.

For arguments the profile did not record, the answer is computed where the recorded data says
what QEMU would do, with QEMU's texts:

* ``qom-list-properties``/``device-list-properties`` of a type QEMU does not have:
  ``Class 'X' not found`` / ``Device 'X' not found`` (DeviceNotFound), of a type of the wrong
  kind: ``Parameter 'typename' expects a QOM type`` / ``... a non-abstract device type``
  (qom/qom-qmp-cmds.c);
* ``qom-list-types`` with other ``implements``/``abstract``: the recorded full list (with
  abstract types) filtered by ancestry, in QEMU's order; an unknown type implements nothing;
* ``query-command-line-options`` of one option: the recorded full list filtered, or
  ``invalid option name: X`` (util/qemu-config.c);
* ``query-cpu-model-expansion`` of a model QEMU does not have: ``CPU model 'X' not found``
  (target/i386/cpu-sysemu.c); ``props`` that are not a non-empty object apply nothing there.

Anything else the profile lacks (a type's properties not captured, an interface in
``implements``, CPU properties not captured) is a GenericError naming the request and the
profile: ``qmonitor: no reply to device-list-properties {"typename":"e1000"} in the capability
profile FILE (capture it with 'qmonitor profile capture')``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NotRequired, TypedDict

from qmonitor import ErrorClass, Monitor, QMPError, UInt64
from qmonitor.machine.profile import Profile, Reply, as_inserted


class SysEmuTarget(StrEnum):
    """qapi/machine.json ``SysEmuTarget``."""

    AARCH64 = "aarch64"
    ALPHA = "alpha"
    ARM = "arm"
    AVR = "avr"
    CRIS = "cris"
    HPPA = "hppa"
    I386 = "i386"
    LOONGARCH64 = "loongarch64"
    M68K = "m68k"
    MICROBLAZE = "microblaze"
    MICROBLAZEEL = "microblazeel"
    MIPS = "mips"
    MIPS64 = "mips64"
    MIPS64EL = "mips64el"
    MIPSEL = "mipsel"
    NIOS2 = "nios2"
    OR1K = "or1k"
    PPC = "ppc"
    PPC64 = "ppc64"
    RISCV32 = "riscv32"
    RISCV64 = "riscv64"
    RX = "rx"
    S390X = "s390x"
    SH4 = "sh4"
    SH4EB = "sh4eb"
    SPARC = "sparc"
    SPARC64 = "sparc64"
    TRICORE = "tricore"
    X86_64 = "x86_64"
    XTENSA = "xtensa"
    XTENSAEB = "xtensaeb"


class TargetInfo(TypedDict):
    """qapi/machine.json ``TargetInfo``."""

    arch: SysEmuTarget


class KvmInfo(TypedDict):
    """qapi/machine.json ``KvmInfo``."""

    enabled: bool
    present: bool


MachineInfo = TypedDict(
    "MachineInfo",
    {
        "name": str,
        "alias": NotRequired[str],
        "is-default": NotRequired[bool],
        "cpu-max": int,
        "hotpluggable-cpus": bool,
        "numa-mem-supported": bool,
        "deprecated": bool,
        "default-cpu-type": NotRequired[str],
        "default-ram-id": NotRequired[str],
    },
)
"""qapi/machine.json ``MachineInfo``."""

CpuDefinitionInfo = TypedDict(
    "CpuDefinitionInfo",
    {
        "name": str,
        "migration-safe": NotRequired[bool],
        "static": bool,
        "unavailable-features": NotRequired[list[str]],
        "typename": str,
        "alias-of": NotRequired[str],
        "deprecated": bool,
    },
)
"""qapi/machine-target.json ``CpuDefinitionInfo``."""


class ObjectTypeInfo(TypedDict):
    """qapi/qom.json ``ObjectTypeInfo``."""

    name: str
    abstract: NotRequired[bool]
    parent: NotRequired[str]


ObjectPropertyInfo = TypedDict(
    "ObjectPropertyInfo",
    {"name": str, "type": str, "description": NotRequired[str], "default-value": NotRequired[Any]},
)
"""qapi/qom.json ``ObjectPropertyInfo``."""


class CommandLineParameterType(StrEnum):
    """qapi/misc.json ``CommandLineParameterType``."""

    STRING = "string"
    BOOLEAN = "boolean"
    NUMBER = "number"
    SIZE = "size"


class CommandLineParameterInfo(TypedDict):
    """qapi/misc.json ``CommandLineParameterInfo``."""

    name: str
    type: CommandLineParameterType
    help: NotRequired[str]
    default: NotRequired[str]


class CommandLineOptionInfo(TypedDict):
    """qapi/misc.json ``CommandLineOptionInfo``."""

    option: str
    parameters: list[CommandLineParameterInfo]


class TpmModel(StrEnum):
    """qapi/tpm.json ``TpmModel``."""

    TPM_TIS = "tpm-tis"
    TPM_CRB = "tpm-crb"
    TPM_SPAPR = "tpm-spapr"


class TpmType(StrEnum):
    """qapi/tpm.json ``TpmType``."""

    PASSTHROUGH = "passthrough"
    EMULATOR = "emulator"


SevCapability = TypedDict(
    "SevCapability",
    {"pdh": str, "cert-chain": str, "cpu0-id": str, "cbitpos": int, "reduced-phys-bits": int},
)
"""qapi/misc-target.json ``SevCapability``."""


class SGXEPCSection(TypedDict):
    """qapi/misc-target.json ``SGXEPCSection``."""

    node: int
    size: UInt64


SGXInfo = TypedDict(
    "SGXInfo",
    {
        "sgx": bool,
        "sgx1": bool,
        "sgx2": bool,
        "flc": bool,
        "section-size": UInt64,
        "sections": list[SGXEPCSection],
    },
)
"""qapi/misc-target.json ``SGXInfo``."""


class CpuModelExpansionType(StrEnum):
    """qapi/machine-target.json ``CpuModelExpansionType``."""

    STATIC = "static"
    FULL = "full"


class CpuModelInfo(TypedDict):
    """qapi/machine-target.json ``CpuModelInfo`` (``props`` is free-form, QAPI ``any``)."""

    name: str
    props: NotRequired[Any]


class CpuModelExpansionInfo(TypedDict):
    """qapi/machine-target.json ``CpuModelExpansionInfo``."""

    model: CpuModelInfo


def profile_miss(profile: Profile, command: str, arguments: Mapping[str, Any]) -> QMPError:
    """The documented error for a request the profile has no reply to."""
    shown = json.dumps(dict(arguments), separators=(",", ":"))
    return QMPError(
        f"qmonitor: no reply to {command} {shown} in the capability profile {profile.source} "
        "(capture it with 'qmonitor profile capture')"
    )


def answer(reply: Reply) -> Any:
    """The recorded reply as a command outcome: its value, or its error raised."""
    if reply.error is not None:
        raise QMPError(reply.error["desc"], ErrorClass(reply.error["class"]))
    return as_inserted(reply.value)


def register_probe_commands(monitor: Monitor, profile: Profile) -> None:
    """Register the commands answered from ``profile`` (see the module docstring)."""
    command = monitor.command

    def recorded(name: str, arguments: Mapping[str, Any] | None = None) -> Any:
        reply = profile.reply(name, arguments)
        if reply is None:
            raise profile_miss(profile, name, arguments or {})
        return answer(reply)

    @command(name="query-target")
    def query_target() -> TargetInfo:
        """Return information about the target for this QEMU."""
        return recorded("query-target")  # type: ignore[no-any-return]

    @command(name="query-kvm")
    def query_kvm() -> KvmInfo:
        """Return information about KVM acceleration (as captured: the profile's accel)."""
        return recorded("query-kvm")  # type: ignore[no-any-return]

    @command(name="query-machines")
    def query_machines() -> list[MachineInfo]:
        """Return a list of supported machines."""
        return recorded("query-machines")  # type: ignore[no-any-return]

    @command(name="query-cpu-definitions")
    def query_cpu_definitions() -> list[CpuDefinitionInfo]:
        """Return a list of supported virtual CPU definitions."""
        return recorded("query-cpu-definitions")  # type: ignore[no-any-return]

    @command(name="query-tpm-models")
    def query_tpm_models() -> list[TpmModel]:
        """Return a list of supported TPM models."""
        return recorded("query-tpm-models")  # type: ignore[no-any-return]

    @command(name="query-tpm-types")
    def query_tpm_types() -> list[TpmType]:
        """Return a list of supported TPM types."""
        return recorded("query-tpm-types")  # type: ignore[no-any-return]

    @command(name="query-sev-capabilities")
    def query_sev_capabilities() -> SevCapability:
        """Return SEV capabilities (QEMU without SEV refuses, and so do we)."""
        return recorded("query-sev-capabilities")  # type: ignore[no-any-return]

    @command(name="query-sgx-capabilities")
    def query_sgx_capabilities() -> SGXInfo:
        """Return SGX capabilities (QEMU without SGX refuses, and so do we)."""
        return recorded("query-sgx-capabilities")  # type: ignore[no-any-return]

    @command(name="qom-list-types")
    def qom_list_types(
        implements: str | None = None, abstract: bool | None = None
    ) -> list[ObjectTypeInfo]:
        """List the QOM types, optionally those implementing a type, optionally abstract ones."""
        arguments: dict[str, Any] = {}
        if implements is not None:
            arguments["implements"] = implements
        if abstract is not None:
            arguments["abstract"] = abstract
        reply = profile.reply("qom-list-types", arguments)
        if reply is not None:
            return answer(reply)  # type: ignore[no-any-return]
        types = profile.types
        if not types:
            raise profile_miss(profile, "qom-list-types", arguments)
        if implements is not None and implements in types and profile.is_a(implements, "interface"):
            raise profile_miss(profile, "qom-list-types", arguments)
        listed = [
            entry
            for entry in types.values()
            if (abstract or not entry.get("abstract"))
            and (implements is None or profile.is_a(entry["name"], implements))
        ]
        return as_inserted(listed)  # type: ignore[no-any-return]

    @command(name="qom-list-properties")
    def qom_list_properties(typename: str) -> list[ObjectPropertyInfo]:
        """List the properties of a QOM type (qom/qom-qmp-cmds.c)."""
        reply = profile.reply("qom-list-properties", {"typename": typename})
        if reply is not None:
            return answer(reply)  # type: ignore[no-any-return]
        if typename not in profile.types:
            raise QMPError(f"Class '{typename}' not found", ErrorClass.DEVICE_NOT_FOUND)
        if not profile.is_a(typename, "object"):
            raise QMPError("Parameter 'typename' expects a QOM type")
        raise profile_miss(profile, "qom-list-properties", {"typename": typename})

    @command(name="device-list-properties")
    def device_list_properties(typename: str) -> list[ObjectPropertyInfo]:
        """List the properties of a device type (qom/qom-qmp-cmds.c)."""
        reply = profile.reply("device-list-properties", {"typename": typename})
        if reply is not None:
            return answer(reply)  # type: ignore[no-any-return]
        entry = profile.types.get(typename)
        if entry is None:
            raise QMPError(f"Device '{typename}' not found", ErrorClass.DEVICE_NOT_FOUND)
        if entry.get("abstract") or not profile.is_a(typename, "device"):
            raise QMPError("Parameter 'typename' expects a non-abstract device type")
        raise profile_miss(profile, "device-list-properties", {"typename": typename})

    @command(name="query-command-line-options")
    def query_command_line_options(option: str | None = None) -> list[CommandLineOptionInfo]:
        """List the command-line options and their parameters, or those of one option."""
        if option is None:
            return recorded("query-command-line-options")  # type: ignore[no-any-return]
        reply = profile.reply("query-command-line-options", {"option": option})
        if reply is not None:
            return answer(reply)  # type: ignore[no-any-return]
        everything = recorded("query-command-line-options")
        chosen = [entry for entry in everything if entry["option"] == option]
        if not chosen:
            raise QMPError(f"invalid option name: {option}")
        return chosen

    @command(name="query-cpu-model-expansion")
    def query_cpu_model_expansion(
        type: CpuModelExpansionType,
        model: CpuModelInfo,
    ) -> CpuModelExpansionInfo:
        """Expand a CPU model (static: onto ``base``; full: every property), as recorded."""
        props = model.get("props")
        wanted: dict[str, Any] = {"name": model["name"]}
        if isinstance(props, dict) and props:
            wanted["props"] = props
        arguments = {"type": type.value, "model": wanted}
        reply = profile.reply("query-cpu-model-expansion", arguments)
        if reply is not None:
            return answer(reply)  # type: ignore[no-any-return]
        if profile.cpu_models and model["name"] not in profile.cpu_models:
            raise QMPError(f"CPU model '{model['name']}' not found")
        raise profile_miss(profile, "query-cpu-model-expansion", arguments)
