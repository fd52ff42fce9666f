"""Migration parameters and capabilities: all of QEMU 7.2's, the ones we do not implement fixed.

A management tool reads and writes these around every migration, by name: libvirt checks the
capabilities at start (``query-migrate-capabilities``) and turns ``events`` on, resets the TLS
parameters to ``""`` before a migration, and sets ``max-bandwidth``. So every name QEMU 7.2 has
exists here, with its QAPI type (qapi/migration.json ``MigrationCapability``,
``MigrateSetParameters``, ``MigrationParameters``) and QEMU's default value, and arguments go
through QEMU's checks first (migration/migration.c ``migrate_caps_check``,
``migrate_params_check``, with their texts). Then:

* parameters: ``max-bandwidth`` and ``downtime-limit`` are implemented (they drive the
  migration, :mod:`qmonitor.machine.migration`); every other parameter keeps QEMU's default.
  Setting one to the value it has is accepted (libvirt sets ``tls-creds`` to ``""``); setting
  it to another value is refused: ``qmonitor does not implement the migration parameter
  'compress-level' (it stays 1)``, and nothing of the request is applied.
* capabilities: ``events`` is implemented. The others report ``false``; turning one off is
  accepted, turning one on is refused: ``qmonitor does not implement the migration capability
  'xbzrle'``, and nothing of the request is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Final

from qmonitor import JSON_NULL, Monitor, QMPError, Size, StrOrNull, UInt8, UInt32, UInt64
from qmonitor.machine.machine import PAGE_SIZE
from qmonitor.machine.migration import MAX_DOWNTIME_MS, MigrationManager


class MigrationCapability(StrEnum):
    """qapi/migration.json ``MigrationCapability`` (QEMU 7.2, in its order)."""

    XBZRLE = "xbzrle"
    RDMA_PIN_ALL = "rdma-pin-all"
    AUTO_CONVERGE = "auto-converge"
    ZERO_BLOCKS = "zero-blocks"
    COMPRESS = "compress"
    EVENTS = "events"
    POSTCOPY_RAM = "postcopy-ram"
    X_COLO = "x-colo"
    RELEASE_RAM = "release-ram"
    BLOCK = "block"
    RETURN_PATH = "return-path"
    PAUSE_BEFORE_SWITCHOVER = "pause-before-switchover"
    MULTIFD = "multifd"
    DIRTY_BITMAPS = "dirty-bitmaps"
    POSTCOPY_BLOCKTIME = "postcopy-blocktime"
    LATE_BLOCK_ACTIVATE = "late-block-activate"
    X_IGNORE_SHARED = "x-ignore-shared"
    VALIDATE_UUID = "validate-uuid"
    BACKGROUND_SNAPSHOT = "background-snapshot"
    ZERO_COPY_SEND = "zero-copy-send"
    POSTCOPY_PREEMPT = "postcopy-preempt"


IMPLEMENTED_CAPABILITIES: Final = frozenset({MigrationCapability.EVENTS})
"""The capabilities that do something here; the others can only be off."""


@dataclass(frozen=True, slots=True)
class MigrationCapabilityStatus:
    """qapi/migration.json ``MigrationCapabilityStatus``."""

    capability: MigrationCapability
    state: bool


class MultiFDCompression(StrEnum):
    """qapi/migration.json ``MultiFDCompression`` (Debian's QEMU has ``zstd``)."""

    NONE = "none"
    ZLIB = "zlib"
    ZSTD = "zstd"


@dataclass(frozen=True, slots=True)
class BitmapMigrationBitmapAliasTransform:
    """qapi/migration.json ``BitmapMigrationBitmapAliasTransform``."""

    persistent: bool | None = None


@dataclass(frozen=True, slots=True)
class BitmapMigrationBitmapAlias:
    """qapi/migration.json ``BitmapMigrationBitmapAlias``."""

    name: str
    alias: str
    transform: BitmapMigrationBitmapAliasTransform | None = None


@dataclass(frozen=True, slots=True)
class BitmapMigrationNodeAlias:
    """qapi/migration.json ``BitmapMigrationNodeAlias``."""

    node_name: str
    alias: str
    bitmaps: list[BitmapMigrationBitmapAlias]


@dataclass(frozen=True, slots=True)
class MigrationParametersInfo:
    """qapi/migration.json ``MigrationParameters``: every member QEMU 7.2 has, in its order."""

    announce_initial: Size | None = None
    announce_max: Size | None = None
    announce_rounds: Size | None = None
    announce_step: Size | None = None
    compress_level: UInt8 | None = None
    compress_threads: UInt8 | None = None
    compress_wait_thread: bool | None = None
    decompress_threads: UInt8 | None = None
    throttle_trigger_threshold: UInt8 | None = None
    cpu_throttle_initial: UInt8 | None = None
    cpu_throttle_increment: UInt8 | None = None
    cpu_throttle_tailslow: bool | None = None
    tls_creds: str | None = None
    tls_hostname: str | None = None
    tls_authz: str | None = None
    max_bandwidth: Size | None = None
    downtime_limit: UInt64 | None = None
    x_checkpoint_delay: UInt32 | None = None
    block_incremental: bool | None = None
    multifd_channels: UInt8 | None = None
    xbzrle_cache_size: Size | None = None
    max_postcopy_bandwidth: Size | None = None
    max_cpu_throttle: UInt8 | None = None
    multifd_compression: MultiFDCompression | None = None
    multifd_zlib_level: UInt8 | None = None
    multifd_zstd_level: UInt8 | None = None
    block_bitmap_mapping: list[BitmapMigrationNodeAlias] | None = None


PARAMETER_NAMES: Final = tuple(item.name for item in fields(MigrationParametersInfo))
"""The members of ``MigrateSetParameters`` and ``MigrationParameters`` (Python spelling)."""

FIXED_PARAMETERS: Final[dict[str, Any]] = {
    "announce_initial": 50,
    "announce_max": 550,
    "announce_rounds": 5,
    "announce_step": 100,
    "compress_level": 1,
    "compress_threads": 8,
    "compress_wait_thread": True,
    "decompress_threads": 2,
    "throttle_trigger_threshold": 50,
    "cpu_throttle_initial": 20,
    "cpu_throttle_increment": 10,
    "cpu_throttle_tailslow": False,
    "tls_creds": "",
    "tls_hostname": "",
    "tls_authz": "",
    "x_checkpoint_delay": 20000,
    "block_incremental": False,
    "multifd_channels": 2,
    "xbzrle_cache_size": 64 << 20,
    "max_postcopy_bandwidth": 0,
    "max_cpu_throttle": 99,
    "multifd_compression": MultiFDCompression.NONE,
    "multifd_zlib_level": 1,
    "multifd_zstd_level": 1,
    "block_bitmap_mapping": None,  # QEMU leaves it out until it is set
}
"""The parameters we do not implement, at QEMU 7.2's defaults (migration/migration.c
``migration_properties``): they never change."""

_IMPLEMENTED_PARAMETERS: Final = ("max_bandwidth", "downtime_limit")


def _parameter_error(name: str, expected: str) -> QMPError:
    # QERR_INVALID_PARAMETER_VALUE with the C member name, as migrate_params_check writes it.
    return QMPError(f"Parameter '{name}' expects {expected}")


def check_parameters(merged: dict[str, Any]) -> None:
    """QEMU's ``migrate_params_check`` on the parameters as they would be after the request
    (texts and order from migration/migration.c; the zero-copy check needs a capability that
    cannot be on here). ``merged`` holds every parameter, Python names."""
    if merged["compress_level"] > 9:
        raise _parameter_error("compress_level", "a value between 0 and 9")
    if merged["compress_threads"] < 1:
        raise _parameter_error("compress_threads", "a value between 1 and 255")
    if merged["decompress_threads"] < 1:
        raise _parameter_error("decompress_threads", "a value between 1 and 255")
    if not 1 <= merged["throttle_trigger_threshold"] <= 100:
        raise _parameter_error("throttle_trigger_threshold", "an integer in the range of 1 to 100")
    if not 1 <= merged["cpu_throttle_initial"] <= 99:
        raise _parameter_error("cpu_throttle_initial", "an integer in the range of 1 to 99")
    if not 1 <= merged["cpu_throttle_increment"] <= 99:
        raise _parameter_error("cpu_throttle_increment", "an integer in the range of 1 to 99")
    # max_bandwidth > SIZE_MAX cannot happen: a size is at most 2**64 - 1.
    if merged["downtime_limit"] > MAX_DOWNTIME_MS:
        raise _parameter_error("downtime_limit", "an integer in the range of 0 to (2000 * 1000) ms")
    if merged["multifd_channels"] < 1:
        raise _parameter_error("multifd_channels", "a value between 1 and 255")
    # QEMU checks multifd_zlib_level (0-9) and multifd_zstd_level (0-20) here too, but
    # migrate_params_test_apply does not copy them into the parameters checked: QEMU 7.2 takes
    # any uint8, so the checks cannot fail, and are left out.
    cache = merged["xbzrle_cache_size"]
    if cache < PAGE_SIZE or cache & (cache - 1):
        raise _parameter_error(
            "xbzrle_cache_size", "a power of two no less than the target page size"
        )
    if not merged["cpu_throttle_initial"] <= merged["max_cpu_throttle"] <= 99:
        raise _parameter_error(
            "max_cpu_throttle", "an integer in the range of cpu_throttle_initial to 99"
        )
    if merged["announce_initial"] > 100000:
        raise _parameter_error("announce_initial", "a value between 0 and 100000")
    if merged["announce_max"] > 100000:
        raise _parameter_error("announce_max", "a value between 0 and 100000")
    if merged["announce_rounds"] > 1000:
        raise _parameter_error("announce_rounds", "a value between 0 and 1000")
    if not 1 <= merged["announce_step"] <= 10000:
        raise _parameter_error("announce_step", "a value between 0 and 10000")


def check_capabilities(enabled: dict[MigrationCapability, bool]) -> None:
    """QEMU's ``migrate_caps_check`` on the capabilities as they would be, for the checks that
    depend on nothing but them, then ours: an unimplemented capability cannot be on."""
    cap = MigrationCapability
    if enabled[cap.POSTCOPY_RAM] and enabled[cap.X_IGNORE_SHARED]:
        raise QMPError("Postcopy is not compatible with ignore-shared")
    if enabled[cap.ZERO_COPY_SEND] and (
        not enabled[cap.MULTIFD] or enabled[cap.COMPRESS] or enabled[cap.XBZRLE]
    ):
        raise QMPError("Zero copy only available for non-compressed non-TLS multifd migration")
    if enabled[cap.POSTCOPY_PREEMPT]:
        if not enabled[cap.POSTCOPY_RAM]:
            raise QMPError("Postcopy preempt requires postcopy-ram")
        if enabled[cap.COMPRESS]:
            raise QMPError("Postcopy preempt not compatible with compress")
    if enabled[cap.MULTIFD] and enabled[cap.COMPRESS]:
        raise QMPError("Multifd is not compatible with compress")
    for capability in MigrationCapability:
        if enabled[capability] and capability not in IMPLEMENTED_CAPABILITIES:
            raise QMPError(f"qmonitor does not implement the migration capability '{capability}'")


@dataclass(slots=True)
class MigrationSettings:
    """The parameters and capabilities of one machine's migrations (see the module docstring)."""

    migration: MigrationManager
    fixed: dict[str, Any] = field(default_factory=lambda: dict(FIXED_PARAMETERS))

    def _busy(self) -> bool:
        outgoing = self.migration.outgoing
        return outgoing is not None and outgoing.in_progress

    def parameters(self) -> MigrationParametersInfo:
        """``query-migrate-parameters``: every parameter and its value."""
        current = self.migration.parameters
        return MigrationParametersInfo(
            **self.fixed,
            max_bandwidth=current.max_bandwidth,
            downtime_limit=current.downtime_limit,
        )

    def set_parameters(self, **requested: Any) -> None:
        """``migrate-set-parameters``: check everything, then apply the implemented ones.

        ``requested`` holds the members given (QMP names with ``_``); a ``StrOrNull`` null is
        :data:`JSON_NULL`, which QEMU turns into ``""`` (qmp_migrate_set_parameters).
        """
        given = {name: value for name, value in requested.items() if value is not None}
        for name in ("tls_creds", "tls_hostname", "tls_authz"):
            if given.get(name) is JSON_NULL:
                given[name] = ""
        merged = {
            field.name: getattr(self.parameters(), field.name)
            for field in fields(MigrationParametersInfo)
        }
        merged.update(given)
        check_parameters(merged)
        for name, value in given.items():
            if name not in _IMPLEMENTED_PARAMETERS and value != self.fixed[name]:
                shown = "absent" if self.fixed[name] is None else _shown(self.fixed[name])
                raise QMPError(
                    f"qmonitor does not implement the migration parameter "
                    f"'{name.replace('_', '-')}' (it stays {shown})"
                )
        current = self.migration.parameters
        if "max_bandwidth" in given:
            current.max_bandwidth = given["max_bandwidth"]
        if "downtime_limit" in given:
            current.downtime_limit = given["downtime_limit"]

    def capabilities(self) -> list[MigrationCapabilityStatus]:
        """``query-migrate-capabilities``: every capability, in QEMU's order."""
        return [
            MigrationCapabilityStatus(
                capability, capability is MigrationCapability.EVENTS and self.migration.events
            )
            for capability in MigrationCapability
        ]

    def set_capabilities(self, requested: Sequence[MigrationCapabilityStatus]) -> None:
        """``migrate-set-capabilities``: refused during a migration, checked as a whole."""
        if self._busy():
            raise QMPError("There's a migration process in progress")
        enabled = {status.capability: status.state for status in self.capabilities()}
        for status in requested:
            enabled[status.capability] = status.state
        check_capabilities(enabled)
        self.migration.events = enabled[MigrationCapability.EVENTS]


def _shown(value: object) -> str:
    if isinstance(value, str):
        return f"'{value}'" if not isinstance(value, StrEnum) else str(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def register_migrate_set_parameters(monitor: Monitor, settings: MigrationSettings) -> None:
    """Register ``migrate-set-parameters`` with QEMU 7.2's ``MigrateSetParameters`` members."""

    @monitor.command(name="migrate-set-parameters")
    def migrate_set_parameters(
        announce_initial: Size | None = None,
        announce_max: Size | None = None,
        announce_rounds: Size | None = None,
        announce_step: Size | None = None,
        compress_level: UInt8 | None = None,
        compress_threads: UInt8 | None = None,
        compress_wait_thread: bool | None = None,
        decompress_threads: UInt8 | None = None,
        throttle_trigger_threshold: UInt8 | None = None,
        cpu_throttle_initial: UInt8 | None = None,
        cpu_throttle_increment: UInt8 | None = None,
        cpu_throttle_tailslow: bool | None = None,
        tls_creds: StrOrNull | None = None,
        tls_hostname: StrOrNull | None = None,
        tls_authz: StrOrNull | None = None,
        max_bandwidth: Size | None = None,
        downtime_limit: UInt64 | None = None,
        x_checkpoint_delay: UInt32 | None = None,
        block_incremental: bool | None = None,
        multifd_channels: UInt8 | None = None,
        xbzrle_cache_size: Size | None = None,
        max_postcopy_bandwidth: Size | None = None,
        max_cpu_throttle: UInt8 | None = None,
        multifd_compression: MultiFDCompression | None = None,
        multifd_zlib_level: UInt8 | None = None,
        multifd_zstd_level: UInt8 | None = None,
        block_bitmap_mapping: list[BitmapMigrationNodeAlias] | None = None,
    ) -> None:
        """Set migration parameters (see qmonitor.machine.migration_settings)."""
        arguments = locals()  # the parameters (and the closure's "settings", left out below)
        settings.set_parameters(**{name: arguments[name] for name in PARAMETER_NAMES})
