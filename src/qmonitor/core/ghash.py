"""GLib's ``GHashTable`` iteration order for string keys, which decides QEMU's QOM listing order.

QEMU keeps an object's properties (its children included) in a ``GHashTable`` keyed by name
(qom/object.c ``object_initialize_with_type``: ``g_hash_table_new_full(g_str_hash,
g_str_equal, ...)``), and walks it to answer ``qom-list`` and ``query-chardev``, or to find the
iothreads under ``/objects``. The order a client sees is therefore the table's slot order,
which depends on the names, on the order they were inserted and on GLib's probing and resizing
rules. :func:`iteration_order` replays those rules (glib/ghash.c as shipped in GLib 2.74,
Debian 12's, which QEMU 7.2 links):

* ``g_str_hash`` is djb2 over the bytes as *signed* chars: ``h = h * 33 + c`` from 5381;
  a hash of 0 or 1 becomes 2 (those mark empty slots and tombstones).
* A table of ``1 << shift`` slots (shift 3 at creation) starts probing at
  ``(hash * 11) % prime_mod[shift]`` (the product wraps at 32 bits) and steps
  quadratically (``index += ++step``, masked).
* After an insertion into an empty slot, ``g_hash_table_maybe_resize`` resizes when
  ``size <= occupied + occupied / 16`` (or shrinks when under a quarter full). The new shift
  is the bit length of ``int(nnodes * 1.333)`` (at least 3), and the entries are moved in
  place: slots are visited in order, each entry is carried to its new home, evicting (and
  then carrying on) whatever sits there, with a bitmap of slots already settled.

* Removal leaves a tombstone (hash 1) and then calls ``g_hash_table_maybe_resize`` as well,
  which shrinks a table more than four times too large. QEMU's input visitors remove each
  member they read from such a table and report the first one left as unexpected
  (qapi/qobject-input-visitor.c ``qobject_input_check_struct``, qapi/opts-visitor.c
  ``opts_check_struct``): :class:`StringSet`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

HASH_TABLE_MIN_SHIFT: Final = 3
"""glib/ghash.c: a new table has 1 << 3 == 8 slots."""

PRIME_MOD: Final = (
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521,
    131071, 262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393, 67108859,
    134217689, 268435399, 536870909, 1073741789, 2147483647,
)  # fmt: skip
"""glib/ghash.c ``prime_mod``: the largest prime below ``1 << shift``, by shift."""

_MASK32: Final = 0xFFFFFFFF


def g_str_hash(key: str) -> int:
    """GLib's ``g_str_hash`` (djb2 over signed chars); 0 and 1 become 2, as in the table."""
    value = 5381
    for byte in key.encode("utf-8", "surrogatepass"):
        signed = byte - 256 if byte > 127 else byte
        value = (value * 33 + signed) & _MASK32
    return value if value > 1 else 2


def _closest_shift(count: int) -> int:
    return max(count.bit_length(), HASH_TABLE_MIN_SHIFT)


class StringSet:
    """Just enough of a ``GHashTable`` of strings to know where each key sits."""

    def __init__(self) -> None:
        self.shift = HASH_TABLE_MIN_SHIFT
        self.hashes: list[int] = [0] * (1 << self.shift)
        self.keys: list[str | None] = [None] * (1 << self.shift)
        self.nnodes = 0
        self.noccupied = 0

    @property
    def size(self) -> int:
        return 1 << self.shift

    def _home(self, hash_value: int) -> int:
        return ((hash_value * 11) & _MASK32) % PRIME_MOD[self.shift]  # guint arithmetic

    def _lookup_node(self, key: str, hash_value: int) -> int:
        """``g_hash_table_lookup_node()``: the slot holding ``key``; else the first tombstone
        passed on the way, else the empty slot that ended the probe (where it would go)."""
        mask = self.size - 1
        index = self._home(hash_value)
        step = 0
        first_tombstone = -1
        while (node_hash := self.hashes[index]) != 0:
            if node_hash == hash_value and self.keys[index] == key:
                return index
            if node_hash == 1 and first_tombstone < 0:
                first_tombstone = index
            step += 1
            index = (index + step) & mask
        return first_tombstone if first_tombstone >= 0 else index

    def insert(self, key: str) -> None:
        """``g_hash_table_insert_node()``: a present key keeps its slot; a new one fills the
        slot found (a tombstone is reused), and filling an empty slot may resize."""
        hash_value = g_str_hash(key)
        index = self._lookup_node(key, hash_value)
        old_hash = self.hashes[index]
        if old_hash > 1:
            return  # replacing a value changes no position
        self.hashes[index] = hash_value
        self.keys[index] = key
        self.nnodes += 1
        if old_hash == 0:
            self.noccupied += 1
            self._maybe_resize()

    def remove(self, key: str) -> None:
        """``g_hash_table_remove()``: a tombstone where ``key`` was, then maybe a resize."""
        index = self._lookup_node(key, g_str_hash(key))
        if self.hashes[index] > 1:
            self.hashes[index] = 1
            self.keys[index] = None
            self.nnodes -= 1
            self._maybe_resize()

    def __iter__(self) -> Iterator[str]:
        """The keys in ``g_hash_table_iter_next()`` order."""
        return (key for key in self.keys if key is not None)

    def _maybe_resize(self) -> None:
        size = self.size
        occupied = self.noccupied
        if (size > self.nnodes * 4 and size > 1 << HASH_TABLE_MIN_SHIFT) or (
            size <= occupied + occupied // 16
        ):
            self._resize()

    def _resize(self) -> None:
        old_size = self.size
        self.shift = _closest_shift(int(self.nnodes * 1.333))
        new_size = self.size
        if new_size > old_size:
            self.hashes += [0] * (new_size - old_size)
            self.keys += [None] * (new_size - old_size)
        settled = [False] * max(new_size, old_size)
        mask = new_size - 1
        for slot in range(old_size):
            node_hash = self.hashes[slot]
            if node_hash <= 1:
                self.hashes[slot] = 0
                continue
            if settled[slot]:
                continue
            key = self.keys[slot]
            self.hashes[slot] = 0
            self.keys[slot] = None
            while True:
                index = self._home(node_hash)
                step = 0
                while settled[index]:
                    step += 1
                    index = (index + step) & mask
                settled[index] = True
                replaced_hash, replaced_key = self.hashes[index], self.keys[index]
                self.hashes[index], self.keys[index] = node_hash, key
                if replaced_hash <= 1:
                    break
                node_hash, key = replaced_hash, replaced_key
        if new_size < old_size:
            del self.hashes[new_size:], self.keys[new_size:]
        self.noccupied = self.nnodes


def iteration_order(keys: Sequence[str]) -> list[str]:
    """The order ``g_hash_table_iter_next`` yields ``keys`` inserted in the order given."""
    table = StringSet()
    for key in keys:
        table.insert(key)
    return [key for key in table.keys if key is not None]
