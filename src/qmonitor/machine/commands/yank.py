"""Yank: the monitors' socket chardevs and the migration (qapi/yank.json,
:mod:`qmonitor.core.yank`)."""

from __future__ import annotations

from qmonitor import AnyYankInstance, Monitor


def register_yank(monitor: Monitor) -> None:
    """QEMU's ``yank`` and ``query-yank`` (util/yank.c), out-of-band as in QEMU; no HMP
    command, as QEMU 7.2 has none."""
    registry = monitor.yank

    @monitor.command(name="yank", allow_oob=True)
    def yank(instances: list[AnyYankInstance]) -> None:
        """Recover from a hang by shutting down the connections of the given instances.

        All must exist (else DeviceNotFound ``Instance not found`` and nothing is yanked).
        Yanking ``migration`` fails the migration rather than cancelling it.
        """
        registry.yank(instances)

    @monitor.command(name="query-yank", allow_oob=True)
    def query_yank() -> list[AnyYankInstance]:
        """The yank instances, in the order they appeared."""
        return registry.instances()
