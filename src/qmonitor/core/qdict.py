"""QEMU's QDict member order (qobject/qdict.c), which decides what QEMU writes and checks first.

A QDict is a hash table of 512 buckets (``QDICT_BUCKET_MAX``) walked from bucket 0 up; within a
bucket the member inserted last comes first (``QLIST_INSERT_HEAD``). Output (``{"return": {},
"id": 1}`` but ``{"id": 1, "error": ...}``) and "first offending member" errors both follow it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

QDICT_BUCKET_MAX: Final = 512  # qobject/qdict.c
_MASK32: Final = 0xFFFFFFFF


def qdict_bucket(key: str) -> int:
    """The QDict bucket QEMU puts ``key`` in: ``tdb_hash(key) % QDICT_BUCKET_MAX``."""
    raw = key.encode("utf-8", "surrogatepass")
    value = (0x238F13AF * len(raw)) & _MASK32
    for index, byte in enumerate(raw):
        value = (value + (byte << (index * 5 % 24))) & _MASK32
    return ((1103515243 * value + 12345) & _MASK32) % QDICT_BUCKET_MAX


@lru_cache(maxsize=4096)
def member_order(keys: tuple[str, ...]) -> tuple[int, ...]:
    """Positions of ``keys`` (in insertion order) rearranged into QDict iteration order."""
    return tuple(
        sorted(range(len(keys)), key=lambda position: (qdict_bucket(keys[position]), -position))
    )
