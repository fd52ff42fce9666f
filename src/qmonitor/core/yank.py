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
run in an out-of-band command). It holds each instance as a plain :data:`YankKey`: the QAPI
classes (:mod:`qmonitor.core.yank_instances`) are made when ``query-yank``, ``yank`` or a
migration first needs them, not when a monitor's socket chardev registers itself at start-up
(before the greeting).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from qmonitor.core.errors import ErrorClass, QMPError
from qmonitor.core.yank_keys import YankKey

if TYPE_CHECKING:
    from qmonitor.core.yank_instances import YankInstance


INSTANCE_NOT_FOUND: Final = "Instance not found"


class YankRegistry:
    """The registered instances and their yank functions (util/yank.c's list)."""

    def __init__(self) -> None:
        self._instances: dict[YankKey, Callable[[], None]] = {}

    def register(self, instance: YankInstance, yank: Callable[[], None]) -> None:
        """Add ``instance``; ``yank`` shuts its connections down (and does nothing when it has
        none at the moment, as QEMU's instance without registered functions)."""
        self.register_key(instance.key, yank)

    def register_key(self, key: YankKey, yank: Callable[[], None]) -> None:
        """:meth:`register` the instance ``key`` stands for."""
        if key in self._instances:
            raise ValueError("duplicate yank instance")  # util/yank.c's text
        self._instances[key] = yank

    def unregister(self, instance: YankInstance) -> None:
        """Remove ``instance`` (it no longer has connections to cut)."""
        self.unregister_key(instance.key)

    def unregister_key(self, key: YankKey) -> None:
        """:meth:`unregister` the instance ``key`` stands for."""
        del self._instances[key]

    def __contains__(self, instance: object) -> bool:
        """Whether ``instance`` (a yank instance; anything else is not in it) is registered."""
        key = getattr(instance, "key", None)
        return key is not None and key in self._instances

    def instances(self) -> list[YankInstance]:
        """``query-yank``: every instance, in registration order."""
        from qmonitor.core.yank_instances import instance_of  # made here, not at start-up

        return [instance_of(key) for key in self._instances]

    def yank(self, instances: Sequence[YankInstance]) -> None:
        """``yank``: all of ``instances`` must exist, then each is yanked in the order given."""
        keys = [instance.key for instance in instances]
        for key in keys:
            if key not in self._instances:
                raise QMPError(INSTANCE_NOT_FOUND, ErrorClass.DEVICE_NOT_FOUND)
        for key in keys:
            self._instances[key]()
