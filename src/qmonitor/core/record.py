"""Value classes that cost nothing to define: the equality, hash and ``repr`` of a frozen
dataclass, shared instead of generated.

``@dataclass`` writes each class's ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__`` and ``__delattr__`` as source text and compiles it with ``exec`` when the class
is defined (and ``slots=True`` builds the class a second time): 0.3-0.5 ms per class on this
project's machine, about 30 ms for the 70-odd classes the stand-in defined before its QMP
greeting, against its whole start-up of about 100 ms (docs/PERFORMANCE.md, "Third round").
A :class:`Record` subclass writes its ``__slots__`` and ``__init__`` by hand, which are
compiled once into the byte code like any other function, and inherits the rest from here,
working from ``__slots__``.

Immutability is the type checker's: attributes are declared ``Final`` (mypy refuses an
assignment outside ``__init__``), where a frozen dataclass also refuses one at run time.
Classes whose fields the QAPI schema reads (``dataclasses.fields``: command arguments and
results) stay dataclasses.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self


class Record:
    """A value: equal to another of the same class with equal fields (``__slots__``, in
    order, less :attr:`NOT_COMPARED`), hashed by them, shown as its constructor call;
    :meth:`replace` copies it with changes."""

    __slots__ = ()

    NOT_COMPARED: ClassVar[frozenset[str]] = frozenset()
    """Fields left out of equality and hash (a dataclass's ``field(compare=False)``)."""

    def _compared(self) -> tuple[object, ...]:
        excluded = self.NOT_COMPARED
        return tuple(getattr(self, name) for name in _fields(self) if name not in excluded)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _fields(self))
        return f"{self.__class__.__qualname__}({shown})"

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (``dataclasses.replace``): ``__init__`` takes each field by
        the field's name."""
        values = {name: getattr(self, name) for name in _fields(self)}
        values.update(changes)
        return self.__class__(**values)


def _fields(record: Record) -> tuple[str, ...]:
    fields: tuple[str, ...] = record.__class__.__slots__
    return fields
