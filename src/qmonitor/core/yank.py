"""QEMU's yank feature: cutting the connections of a named instance to recover from a hang.

qapi/yank.json and util/yank.c (QEMU 7.2). Something that holds a connection which may hang (a
migration, a socket chardev, an NBD block node) registers a *yank instance* while it exists; the
``yank`` command calls the instance's yank function, which shuts the connection down at once so
that blocked I/O fails instead of waiting forever. Both ``yank`` and ``query-yank`` allow
out-of-band execution: a hung command blocks the in-band queue, and ``exec-oob`` is how a
client still gets through to unstick it.

The rules kept from util/yank.c:

* an instance is identified by its type and name (``chardev`` by ``id``, ``block-node`` by
  ``node-name``; there is one ``migration`` instance);
* ``query-yank`` lists the instances in the order they were registered;
* ``yank`` checks every instance it is given before yanking any: one unknown instance fails the
  whole command with DeviceNotFound ``Instance not found`` and yanks nothing.

The registry is plain data, used from the event loop only (yank functions must be quick: they
run in an out-of-band command).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final

from qmonitor.core.errors import ErrorClass, QMPError
from qmonitor.core.schema import Variants


class YankInstanceType(StrEnum):
    """qapi/yank.json ``YankInstanceType``."""

    BLOCK_NODE = "block-node"
    CHARDEV = "chardev"
    MIGRATION = "migration"


@dataclass(frozen=True, slots=True)
class YankInstance:
    """qapi/yank.json ``YankInstance``: the union's base (alone, the ``migration`` case)."""

    type: YankInstanceType


@dataclass(frozen=True, slots=True)
class YankInstanceBlockNode(YankInstance):
    """qapi/yank.json ``YankInstanceBlockNode``."""

    node_name: str


@dataclass(frozen=True, slots=True)
class YankInstanceChardev(YankInstance):
    """qapi/yank.json ``YankInstanceChardev``."""

    id: str


AnyYankInstance = Annotated[
    YankInstance,
    Variants(
        "type",
        {
            YankInstanceType.BLOCK_NODE: YankInstanceBlockNode,
            YankInstanceType.CHARDEV: YankInstanceChardev,
        },
    ),
]
"""The ``YankInstance`` union as commands declare it."""

MIGRATION_INSTANCE: Final = YankInstance(YankInstanceType.MIGRATION)
"""QEMU's ``MIGRATION_YANK_INSTANCE``: every migration connection, source or destination."""

INSTANCE_NOT_FOUND: Final = "Instance not found"


def chardev_instance(label: str) -> YankInstanceChardev:
    """QEMU's ``CHARDEV_YANK_INSTANCE(label)``."""
    return YankInstanceChardev(YankInstanceType.CHARDEV, label)


class YankRegistry:
    """The registered instances and their yank functions (util/yank.c's list)."""

    def __init__(self) -> None:
        self._instances: dict[YankInstance, Callable[[], None]] = {}

    def register(self, instance: YankInstance, yank: Callable[[], None]) -> None:
        """Add ``instance``; ``yank`` shuts its connections down (and does nothing when it has
        none at the moment, as QEMU's instance without registered functions)."""
        if instance in self._instances:
            raise ValueError("duplicate yank instance")  # util/yank.c's text
        self._instances[instance] = yank

    def unregister(self, instance: YankInstance) -> None:
        """Remove ``instance`` (it no longer has connections to cut)."""
        del self._instances[instance]

    def __contains__(self, instance: object) -> bool:
        return instance in self._instances

    def instances(self) -> list[YankInstance]:
        """``query-yank``: every instance, in registration order."""
        return list(self._instances)

    def yank(self, instances: Sequence[YankInstance]) -> None:
        """``yank``: all of ``instances`` must exist, then each is yanked in the order given."""
        for instance in instances:
            if instance not in self._instances:
                raise QMPError(INSTANCE_NOT_FOUND, ErrorClass.DEVICE_NOT_FOUND)
        for instance in instances:
            self._instances[instance]()
