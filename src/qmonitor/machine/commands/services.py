"""What the machine's commands act on, shared by the command groups."""

from __future__ import annotations

from dataclasses import dataclass

from qmonitor import FaultPoint, JobManager
from qmonitor.machine.machine import Machine
from qmonitor.machine.migration import MigrationManager
from qmonitor.machine.snapshots import SnapshotStore


@dataclass(slots=True)
class MachineServices:
    """What the machine's commands act on; made by :func:`register_machine_commands`."""

    machine: Machine
    snapshots: SnapshotStore
    migration: MigrationManager
    jobs: JobManager
    faults: FaultPoint | None = None
