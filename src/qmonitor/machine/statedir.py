"""The snapshot directory's temporaries, apart from the snapshot files: what a program does
with its state directory at start (:func:`reclaim_temporaries`) without loading the file
format's module (:mod:`qmonitor.machine.snapshots`, with its hashing and encodings) before it
greets its clients."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator

TEMPORARY_NAME = re.compile(r"\..+\.qmsnap\.[0-9]+\.tmp")
"""``.TAG.qmsnap.PID.tmp``: a :class:`~qmonitor.machine.snapshots.SnapshotWriter`'s file until
it is renamed."""


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Held while a writer creates and locks its temporary and while temporaries are
    reclaimed, so a reclaimer never finds a writer's temporary before its lock is taken."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _reclaim(path: str) -> None:
    """Delete the temporary ``path`` if no writer holds its lock (under the directory lock)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return  # gone meanwhile, or nothing a writer of ours made
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
    except OSError:
        pass  # BlockingIOError: its writer is alive
    finally:
        os.close(fd)


def reclaim_temporaries(directory: str | os.PathLike[str]) -> None:
    """Delete every temporary whose writer is gone, whoever it was.

    A writer holds an exclusive ``flock`` on its temporary from creation to rename; the
    kernel drops it when the writer's last descriptor closes, however the process ended.
    A temporary whose lock can be taken is therefore abandoned. A PID in the name cannot
    tell that: a killed writer that is not yet reaped (a zombie) still answers
    ``kill(pid, 0)``, and a PID is reused by unrelated processes.
    """
    with directory_lock(directory):
        for name in os.listdir(directory):
            if TEMPORARY_NAME.fullmatch(name):
                _reclaim(os.path.join(directory, name))
