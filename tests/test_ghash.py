"""GLib's GHashTable order, which QEMU's QOM listings follow."""

from __future__ import annotations

import ctypes
import ctypes.util
import random
import string

import pytest

from qmonitor.core.ghash import g_str_hash, iteration_order


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
    buffers = [ctypes.create_string_buffer(key.encode()) for key in keys]
    for buffer in buffers:
        glib.g_hash_table_insert(table, ctypes.cast(buffer, ctypes.c_char_p), None)
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
