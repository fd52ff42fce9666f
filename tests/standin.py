"""A stand-in machine served in the test process, from a MachineConfig, on a unix socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from qmonitor import Monitor
from qmonitor.machine.commands import register_machine_commands
from qmonitor.machine.config import ChardevConfig, MachineConfig, SocketChardev
from qmonitor.machine.machine import Machine
from qmonitor.machine.profile import Profile
from qmonitor.machine.snapshots import SnapshotStore


@contextlib.asynccontextmanager
async def serve_standin(
    directory: Path,
    config: MachineConfig | None = None,
    profile: Profile | None = None,
    *,
    extra_sockets: tuple[str, ...] = (),
) -> AsyncIterator[str]:
    """Serve a machine built from ``config``; QMP on ``directory/ours.sock`` (chardev
    ``compat_monitor0``, as QEMU names a first ``-qmp``), plus QMP on each of
    ``extra_sockets`` (``compat_monitor1``...). Yields the first socket's path."""
    paths = [str(directory / "ours.sock"), *(str(directory / name) for name in extra_sockets)]
    chardevs = tuple(
        ChardevConfig(f"compat_monitor{index}", SocketChardev(path=path))
        for index, path in enumerate(paths)
    )
    config = config or MachineConfig()
    config = config.replace(chardevs=chardevs + config.chardevs)
    monitor = Monitor("vm0")
    machine = Machine("vm0", ram_size=1 << 20)
    snapshots = SnapshotStore(str(directory / "state"))
    services = register_machine_commands(
        monitor, machine, snapshots, on_exit=lambda status: None, config=config, profile=profile
    )
    for path in paths:
        await monitor.listen(f"unix:{path},server=on,wait=off")
    try:
        yield paths[0]
    finally:
        await monitor.close()
        await services.migration.close()
        await services.jobs.close()
        await machine.close()
