"""``qmonitor.core.record.Record``: the value semantics of the frozen dataclasses it replaces
on the stand-in's start-up path (equality, hash, ``repr``, ``replace``), without generating
code per class."""

from __future__ import annotations

import pytest

from qmonitor.cmdline.model import Chardev, FdSocketAddress, UnixSocketAddress


def test_equal_fields_make_equal_values_and_equal_hashes() -> None:
    assert UnixSocketAddress("/s") == UnixSocketAddress("/s", abstract=False, tight=True)
    assert hash(UnixSocketAddress("/s")) == hash(UnixSocketAddress("/s"))
    assert UnixSocketAddress("/s") != UnixSocketAddress("/s", abstract=True)
    assert len({FdSocketAddress(3), FdSocketAddress(3), FdSocketAddress(4)}) == 2


def test_another_class_with_the_same_fields_is_not_equal() -> None:
    assert FdSocketAddress(3) != 3
    assert UnixSocketAddress("/s") != Chardev("/s", "socket")


def test_a_field_left_out_of_comparison_does_not_make_values_differ() -> None:
    typed = Chardev("c", "socket", location="-qmp unix:/s")
    assert typed == Chardev("c", "socket", location="-chardev socket,id=c")
    assert typed != Chardev("c", "null")


def test_repr_shows_the_constructor_call() -> None:
    assert (
        repr(UnixSocketAddress("/s")) == "UnixSocketAddress(abstract=False, path='/s', tight=True)"
    )


def test_replace_copies_with_changes_and_refuses_unknown_fields() -> None:
    original = Chardev("c", "socket", server=True, options={"path": "/s"})
    changed = original.replace(wait=False)
    assert (changed.server, changed.wait, changed.options) == (True, False, {"path": "/s"})
    assert original.wait is True
    with pytest.raises(TypeError):
        original.replace(colour="red")
