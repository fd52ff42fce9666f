"""Where ``file:`` migration streams may be written and read (``--allow-path DIR``; issue 9).

QEMU opens a ``migrate "file:PATH"`` (and ``-incoming file:PATH``) wherever its process may
write or read: whoever reaches the monitor can overwrite any file the process can. qmonitor
confines those paths to the directories the operator names, and always its state directory
(where snapshots live).

A path is allowed when, once made absolute and resolved (every symbolic link followed, every
``..`` taken: ``os.path.realpath``), it lies inside one of the allowed directories, resolved
the same way. So ``ALLOWED/../etc/x`` and a symlink in ``ALLOWED`` pointing out are refused,
with one line naming the path as given, before anything is opened or created.

The resolved path is the one opened. What this does not close: a component of it swapped
for a symlink between the check and the open (whoever can do that can already write inside an
allowed directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Final

from qmonitor import QMPError

OUTSIDE: Final = "Path '{path}' is outside the directories migration files may use (--allow-path)"
"""The error of a path outside every allowed directory (one line; the path as given)."""


class PathConfinement:
    """The directories ``file:`` paths must lie in (see the module docstring)."""

    def __init__(self, directories: Iterable[str | os.PathLike[str]]) -> None:
        self.directories = tuple(os.path.realpath(directory) for directory in directories)

    def resolve(self, path: str) -> str:
        """``path`` resolved, if it lies inside an allowed directory; else QMPError."""
        resolved = os.path.realpath(path)
        for directory in self.directories:
            if os.path.commonpath((directory, resolved)) == directory:
                return resolved
        raise QMPError(OUTSIDE.format(path=path))
