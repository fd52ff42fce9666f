"""GLib's GHashTable order, which QEMU's QOM listings follow."""

from __future__ import annotations

import ctypes
import ctypes.util
import random
import string

import pytest

from qmonitor.core.ghash import StringSet, g_str_hash, iteration_order


def test_chardev_order_seen_from_qemu_7_2() -> None:
    # qemu-system-x86_64 -qmp unix:a -qmp unix:b -monitor unix:h -chardev socket,id=charmonitor
    # -mon chardev=charmonitor -qmp tcp:... -chardev null,id=nul answered query-chardev with
    # compat_monitor3, compat_monitor1, nul, compat_monitor2, compat_monitor0, charmonitor:
    # the table's order, reversed by QAPI_LIST_PREPEND.
    created = ["compat_monitor0", "compat_monitor1", "compat_monitor2", "charmonitor"]
    created += ["compat_monitor3", "nul"]
    assert list(reversed(iteration_order(created))) == [
        "compat_monitor3", "compat_monitor1", "nul", "compat_monitor2", "compat_monitor0",
        "charmonitor",
    ]  # fmt: skip


def test_str_hash_is_djb2_over_signed_chars() -> None:
    assert g_str_hash("") == 5381
    assert g_str_hash("a") == 5381 * 33 + ord("a")
    # A byte above 127 counts as negative (signed char), as in g_str_hash.
    assert g_str_hash("\xe9") == ((5381 * 33 + (0xC3 - 256)) * 33 + (0xA9 - 256)) & 0xFFFFFFFF


def _glib() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("glib-2.0")
    return ctypes.CDLL(name) if name else None


def _glib_order(glib: ctypes.CDLL, keys: list[str]) -> list[str]:
    return _glib_order_after(glib, [(True, key) for key in keys])


def _glib_order_after(glib: ctypes.CDLL, operations: list[tuple[bool, str]]) -> list[str]:
    """The iteration order of a GLib table after ``operations`` (True: insert, False:
    remove), in order."""
    glib.g_hash_table_new.restype = ctypes.c_void_p
    glib.g_hash_table_new.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    glib.g_hash_table_insert.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    glib.g_hash_table_iter_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    glib.g_hash_table_iter_next.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_void_p,
    ]
    glib.g_hash_table_unref.argtypes = [ctypes.c_void_p]
    table = glib.g_hash_table_new(
        ctypes.cast(glib.g_str_hash, ctypes.c_void_p),
        ctypes.cast(glib.g_str_equal, ctypes.c_void_p),
    )
    glib.g_hash_table_remove.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    buffers = {key: ctypes.create_string_buffer(key.encode()) for _, key in operations}
    for insert, key in operations:
        pointer = ctypes.cast(buffers[key], ctypes.c_char_p)
        if insert:
            glib.g_hash_table_insert(table, pointer, None)
        else:
            glib.g_hash_table_remove(table, pointer)
    iterator = ctypes.create_string_buffer(128)  # a GHashTableIter is 6 pointers
    glib.g_hash_table_iter_init(iterator, table)
    found = []
    key = ctypes.c_char_p()
    while glib.g_hash_table_iter_next(iterator, ctypes.byref(key), None):
        assert key.value is not None
        found.append(key.value.decode())
    glib.g_hash_table_unref(table)
    return found


@pytest.mark.host_facility
def test_order_matches_the_installed_glib_for_random_key_sets() -> None:
    glib = _glib()
    if glib is None:
        pytest.skip("libglib-2.0 is not installed")
    rng = random.Random(20221214)
    alphabet = string.ascii_letters + string.digits + "-_[].é"
    for _ in range(400):
        count = rng.choice([rng.randint(0, 12), rng.randint(0, 300)])
        keys = [
            f"device[{rng.randint(0, 400)}]"
            if rng.random() < 0.3
            else "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16)))
            for _ in range(count)
        ]
        assert iteration_order(keys) == _glib_order(glib, keys), keys


@pytest.mark.host_facility
def test_insertions_and_removals_match_the_installed_glib() -> None:
    """Removals leave tombstones that a later insertion reuses (g_hash_table_lookup_node's
    first tombstone) and may shrink the table: random interleavings, as GLib orders them."""
    glib = _glib()
    if glib is None:
        pytest.skip("libglib-2.0 is not installed")
    rng = random.Random(20261130)
    for _ in range(300):
        pool = [f"k{number}" for number in range(rng.randint(1, 60))]
        operations = [(rng.random() < 0.6, rng.choice(pool)) for _ in range(rng.randint(1, 200))]
        table = StringSet()
        for insert, key in operations:
            if insert:
                table.insert(key)
            else:
                table.remove(key)
        assert list(table) == _glib_order_after(glib, operations), operations
