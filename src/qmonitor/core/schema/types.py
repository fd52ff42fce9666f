"""The names handlers write in their type hints: QAPI's types Python lacks, and markers.

``UInt8`` ... ``UInt64`` and ``Size`` (QAPI's unsigned integers), ``StrOrNull`` and its
``JSON_NULL`` (QAPI's one alternate of builtins), ``Variants`` (a union with a discriminator),
``QMPName`` (a parameter's QMP name) and ``Secret`` (a value the audit trail never writes); also
``Parameter``, what :func:`~qmonitor.core.schema.compile_signature` reports of each argument,
and ``MISSING``. Nothing here checks or encodes anything: :mod:`.compile` reads these markers.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Final, TypeAlias, Union

from qmonitor.core.record import Record


class _Sentinel(enum.Enum):
    MISSING = "MISSING"
    ABSENT = "ABSENT"  # a member not present in the arguments
    REQUIRED = "REQUIRED"  # what to do when absent: report it missing
    SKIP = "SKIP"  # what to do when absent: leave it out (a dataclass default applies)


MISSING: Final = _Sentinel.MISSING
"""``Parameter.default`` of a required parameter; ``compile_signature(return_type=...)`` unset."""

_ABSENT: Final = _Sentinel.ABSENT
_REQUIRED: Final = _Sentinel.REQUIRED
_SKIP: Final = _Sentinel.SKIP


class QMPName:
    """``Annotated[T, QMPName("x_y")]``: a parameter's QMP name, when ``_`` -> ``-`` is wrong."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"QMPName({self.name!r})"


class Secret:
    """``Annotated[str, Secret()]``: a parameter whose value the audit trail never writes.

    A password or key: :mod:`qmonitor.server.audit` writes ``"***"`` in its place. It changes
    nothing else (validation, the schema).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret()"


def _is_secret(hint: object) -> bool:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *metadata = typing.get_args(hint)
        return any(isinstance(item, Secret) for item in metadata) or _is_secret(base)
    if origin in (Union, types.UnionType):
        return any(_is_secret(argument) for argument in typing.get_args(hint))
    return False


def secret_parameters(parameters: Sequence[Parameter]) -> frozenset[str]:
    """The QMP names of the parameters declared :class:`Secret`."""
    return frozenset(p.qmp_name for p in parameters if _is_secret(p.annotation))


class _IntegerKind:
    """Annotated marker for QAPI's unsigned integer types (see :data:`UInt64`, :data:`Size`)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"_IntegerKind({self.name!r})"


UInt64: TypeAlias = Annotated[int, _IntegerKind("uint64")]
"""QAPI ``uint64``: 0 to 2**64-1; like QEMU, a negative int64 is accepted modulo 2**64."""
Size: TypeAlias = Annotated[int, _IntegerKind("size")]
"""QAPI ``size`` (a byte count): checked as ``uint64``."""
UInt8: TypeAlias = Annotated[int, _IntegerKind("uint8")]
"""QAPI ``uint8``: read as ``uint64``, then ``Parameter 'x' expects uint8_t`` above 255."""
UInt16: TypeAlias = Annotated[int, _IntegerKind("uint16")]
"""QAPI ``uint16``, likewise (``uint16_t``)."""
UInt32: TypeAlias = Annotated[int, _IntegerKind("uint32")]
"""QAPI ``uint32``, likewise (``uint32_t``)."""

_UNSIGNED_MAXIMA: Final = {"uint8": 2**8 - 1, "uint16": 2**16 - 1, "uint32": 2**32 - 1}


class _JsonNull:
    """The type of :data:`JSON_NULL`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "JSON_NULL"


JSON_NULL: Final = _JsonNull()
"""An explicit JSON ``null`` given for a ``StrOrNull`` member (absent members get ``None``)."""


class _Alternate:
    """Annotated marker for the alternate ``StrOrNull`` (see :data:`StrOrNull`)."""

    __slots__ = ()


StrOrNull: TypeAlias = Annotated[str | _JsonNull, _Alternate()]
"""QAPI's alternate ``StrOrNull`` (qapi/common.json): a string or ``null``; ``null`` arrives as
:data:`JSON_NULL`, so that an optional member can tell it from absence."""


class Variants:
    """``Annotated[Base, Variants(tag, cases)]``: a QAPI union with a discriminator.

    ``tag`` is the QMP name of ``Base``'s enum member that picks the variant; ``cases`` maps
    enum members to dataclass subclasses of ``Base`` (see "Unions" in the package docstring).
    """

    __slots__ = ("cases", "tag")

    def __init__(self, tag: str, cases: Mapping[enum.Enum, type]) -> None:
        self.tag = tag
        self.cases = tuple(cases.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Variants) and (self.tag, self.cases) == (other.tag, other.cases)

    def __hash__(self) -> int:
        return hash((self.tag, self.cases))

    def __repr__(self) -> str:
        return f"Variants({self.tag!r}, {dict(self.cases)!r})"


class Parameter(Record):
    """One QMP argument of a command.

    ``annotation`` is the parameter's resolved type hint as declared; ``default`` is the value an
    absent optional parameter gets (``None`` for ``T | None`` without a default), ``MISSING`` for
    a required one.
    """

    __slots__ = ("annotation", "default", "python_name", "qmp_name", "required")

    qmp_name: Final[str]
    python_name: Final[str]
    annotation: Final[object]
    required: Final[bool]
    default: Final[object]

    def __init__(
        self, qmp_name: str, python_name: str, annotation: object, required: bool, default: object
    ) -> None:
        self.qmp_name = qmp_name
        self.python_name = python_name
        self.annotation = annotation
        self.required = required
        self.default = default
