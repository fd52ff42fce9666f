"""qapi/yank.json's ``YankInstance`` union as QAPI classes, made when first needed.

:mod:`qmonitor.core.yank`'s registry holds plain keys; these classes are what the ``yank`` and
``query-yank`` commands declare and a migration registers. They live apart so that a monitor
starting up (whose socket chardevs are registered as keys before its greeting) does not create
them nor import :mod:`dataclasses`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

from qmonitor.core.schema import Variants
from qmonitor.core.yank_keys import YankInstanceType, YankKey


@dataclass(frozen=True, slots=True)
class YankInstance:
    """qapi/yank.json ``YankInstance``: the union's base (alone, the ``migration`` case)."""

    type: YankInstanceType

    @property
    def key(self) -> YankKey:
        """The registry's key for this instance."""
        return (self.type, None)


@dataclass(frozen=True, slots=True)
class YankInstanceBlockNode(YankInstance):
    """qapi/yank.json ``YankInstanceBlockNode``."""

    node_name: str

    @property
    def key(self) -> YankKey:
        """The registry's key for this instance."""
        return (self.type, self.node_name)


@dataclass(frozen=True, slots=True)
class YankInstanceChardev(YankInstance):
    """qapi/yank.json ``YankInstanceChardev``."""

    id: str

    @property
    def key(self) -> YankKey:
        """The registry's key for this instance."""
        return (self.type, self.id)


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


def instance_of(key: YankKey) -> YankInstance:
    """The instance ``key`` stands for (the inverse of ``.key``)."""
    kind, name = key
    if name is None:
        return YankInstance(kind)
    if kind is YankInstanceType.BLOCK_NODE:
        return YankInstanceBlockNode(kind, name)
    return YankInstanceChardev(kind, name)
