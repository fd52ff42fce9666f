"""The yank registry's own rules (util/yank.c), seen through the public API."""

from __future__ import annotations

import pytest

from qmonitor import MIGRATION_INSTANCE, QMPError, YankRegistry
from qmonitor.core.yank_instances import YankInstanceChardev, YankInstanceType


def chardev_instance(label: str) -> YankInstanceChardev:
    return YankInstanceChardev(YankInstanceType.CHARDEV, label)


def test_membership_order_and_all_or_nothing_yank() -> None:
    registry = YankRegistry()
    yanked: list[str] = []
    registry.register(chardev_instance("mon"), lambda: yanked.append("mon"))
    registry.register(MIGRATION_INSTANCE, lambda: yanked.append("migration"))
    assert chardev_instance("mon") in registry
    assert MIGRATION_INSTANCE in registry
    assert chardev_instance("other") not in registry
    assert object() not in registry  # not a yank instance: not in it, not an error
    assert registry.instances() == [chardev_instance("mon"), MIGRATION_INSTANCE]
    with pytest.raises(QMPError, match="Instance not found"):
        registry.yank([MIGRATION_INSTANCE, chardev_instance("other")])
    assert yanked == []  # one unknown instance: nothing yanked
    registry.yank([MIGRATION_INSTANCE, chardev_instance("mon")])
    assert yanked == ["migration", "mon"]
