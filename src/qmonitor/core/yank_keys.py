"""The yank instances as plain keys: what a monitor registers while starting up.

qapi/yank.json's ``YankInstanceType`` and a key per instance, apart from both the registry
(:mod:`qmonitor.core.yank`) and the QAPI classes (:mod:`qmonitor.core.yank_instances`, made
when first needed), which both use them.
"""

from __future__ import annotations

from enum import StrEnum


class YankInstanceType(StrEnum):
    """qapi/yank.json ``YankInstanceType``."""

    BLOCK_NODE = "block-node"
    CHARDEV = "chardev"
    MIGRATION = "migration"


YankKey = tuple[YankInstanceType, str | None]
"""An instance as the registry holds it: its type and its name (``None``: the union's base,
the ``migration`` instance); two instances are the same exactly when their keys are equal."""


def chardev_key(label: str) -> YankKey:
    """QEMU's ``CHARDEV_YANK_INSTANCE(label)``, as a key."""
    return (YankInstanceType.CHARDEV, label)
