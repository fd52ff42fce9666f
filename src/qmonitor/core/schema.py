"""Typed Python functions as QMP commands: argument checking, result encoding, introspection.

QEMU describes every command in its QAPI schema (``qapi/*.json``) and generates C from it: a
marshaller that checks the ``arguments`` object with the QObject input visitor, and the
``query-qmp-schema`` data (``scripts/qapi/introspect.py``). qmonitor has no schema file; a
command's Python signature is its schema. :func:`compile_signature` reads the type hints once, at
registration, and builds from them

- ``convert_arguments``: JSON arguments -> keyword arguments, with QEMU's error texts;
- ``encode_return``: the handler's result -> a JSON-able value;
- the command's part of ``query-qmp-schema``, collected by :class:`SchemaBuilder`.

Types
=====
=========================  ===================  =========================================
Python                     QAPI type            accepts
=========================  ===================  =========================================
``int``                    ``int``              a JSON integer in int64 range, not a bool
``UInt64``, ``Size``       ``uint64``/``size``  0 to 2**64-1 (a negative int64 wraps)
``UInt8/16/32``            ``uint8/16/32``      as ``uint64``, then at most 2**N-1
``StrOrNull``              ``StrOrNull``        a string, or ``null`` (as :data:`JSON_NULL`)
``float``                  ``number``           any JSON number (an integer becomes float)
``bool``                   ``bool``             ``true`` / ``false``
``str``                    ``str``              a string
``enum.Enum`` of str       an enum type         one of the member values (``StrEnum``)
``list[T]``                ``[T]``              an array of T
``tuple[T, ...]``          ``[T]``              an array of T, given as a tuple
``@dataclass``, TypedDict  an object type       an object with exactly those members
``Annotated[B, Variants]``  a union              an object whose tag member picks its members
``typing.Any``             ``any``              any JSON value, ``null`` included
``dict[str, Any]``         ``any``              any JSON object
=========================  ===================  =========================================

A member (function parameter, dataclass field, TypedDict key) is optional when it has a default,
when its type is ``T | None`` or, for a TypedDict, when it is ``NotRequired``. An absent optional
member gets its default, else ``None``. A present member must have its type: like QEMU, an
explicit ``null`` is not a way to leave an optional member out (QEMU 7.2:
``{"cpu-index": null}`` -> ``Invalid parameter type for 'cpu-index', expected: integer``).
Python names become QMP names with ``_`` -> ``-`` (``command_line`` -> ``command-line``); override
with ``Annotated[T, QMPName("x_y")]`` on a parameter or ``field(metadata={"qmp_name": "x_y"})`` on
a dataclass field. TypedDict keys are QMP names already.

Checking arguments (QEMU's rules)
=================================
The generated marshallers (``qapi-commands-*.c``) visit the declared members in order and then
call ``visit_check_struct``; so the first missing or ill-typed member, in declaration order, is
reported before any unexpected one. The texts come from ``qapi/qobject-input-visitor.c``:

- ``Parameter 'NAME' is missing`` (``QERR_MISSING_PARAMETER``)
- ``Invalid parameter type for 'NAME', expected: integer`` (also ``number``, ``boolean``,
  ``string``, ``object``, ``array``; ``QERR_INVALID_PARAMETER_TYPE``). An integer outside int64
  is "not an integer" there too: QEMU's parser makes it a uint64 or a double.
- ``Parameter 'NAME' is unexpected`` (``qobject_input_check_struct``)
- ``Parameter 'NAME' expects uint8_t`` (also ``uint16_t``, ``uint32_t``: ``visit_type_uintN``
  after the ``uint64`` check) and ``Invalid parameter type for 'NAME', expected: StrOrNull``
  (the generated visitor of an alternate): both name the member bare, as the enum text does.

NAME is the full name built by ``full_name_nth``: ``model.name`` inside an object, ``enable[0]``
for an array element, ``capabilities[0].state`` for both. The enum text comes from
``input_type_enum`` in ``qapi/qapi-visit-core.c`` and uses the bare member name, ``null`` for an
array element: ``Parameter 'capability' does not accept value 'bogus'``. These texts were checked
against QEMU 7.2 (see ``tests/test_schema.py``).

Speed: a validation error deep inside nested objects is a :class:`QMPError` whose name grows as
it propagates out (``_ArgumentError.enclose``), so the success path never builds names. A
command without parameters gets a precomputed converter that only checks that the arguments are
empty; ``str``, ``bool`` and ``float`` members are accepted without a call.

Unions
======
QAPI's unions with a discriminator (``{'union': ..., 'base': ..., 'discriminator': ...}``) are
written ``Annotated[Base, Variants("type", {Kind.A: BaseA, ...})]``: ``Base`` is a dataclass
whose member named by the discriminator is a required enum, and each variant is a dataclass
subclass of ``Base`` adding the members of that case. A tag value without a variant has the base
members only (QAPI's implicit empty branch). Checking follows the generated ``visit_type_*``:
the base members in order, then the chosen variant's, then unexpected members against both; the
value built is the variant's class (the base's for an empty branch). In ``query-qmp-schema`` the
union is an object with ``tag`` and ``variants`` (the listed cases in order, then the other enum
values with the empty object type), each variant type holding only its own members, as
``scripts/qapi/introspect.py`` lays it out (qapi/yank.json ``YankInstance``).

Encoding results
================
``encode_return`` follows the declared return type: ``None`` -> ``{}`` (QEMU's reply for a
command without a result), a dataclass -> an object with QMP names that leaves out ``T | None``
fields holding ``None`` (an absent QAPI optional member), an enum -> its value, a tuple -> a
list; a TypedDict or ``dict[str, Any]`` passes through, with only what needs it re-encoded.
Values typed ``Any`` are encoded by their run-time type (:func:`encode_value`).

Introspection (``query-qmp-schema``)
====================================
Entries have the ``SchemaInfo`` shape of ``qapi/introspect.json`` and are laid out as
``scripts/qapi/introspect.py`` does: commands and events in definition order, then every type
they use, in order of first use. Names of object and enum types are masked as numbers ("0", "1",
...) in order of first use, as QEMU does by default: "Clients should examine commands and
events, not types. Hide type names as integers to reduce the temptation." Builtins keep their
names (``int``, ``str``, ``any``, ...) and an array is named after its element (``[int]``,
``[3]``); every integer type (``uint8`` ... ``uint64``, ``size``) is published as ``int``, as
introspect.py's ``_use_type`` does. A command without arguments or without a result, and an
event without data, refer to the empty object type, like QEMU's ``q_empty``. An optional member
carries ``"default": null``, the only value QEMU 7.2 ever sends; Python defaults are not
published. ``dict[str, Any]`` has no QAPI equivalent and is published as ``any``, as QEMU does
for free-form members (``props`` of ``CpuModelInfo``). With several unexpected members, the one
named is the first in QEMU's QDict order (:mod:`qmonitor.core.qdict`), as
qobject_input_check_struct does.

Deliberate differences from QEMU
================================
- Of QAPI's integer types ``int`` (int64), ``uint8/16/32/64`` and ``size`` exist; the signed
  sized ones (``int8``, ...) are left to handlers. The one alternate is ``StrOrNull``; unions
  with a discriminator are ``Variants`` (above); otherwise a Python union may only be
  ``T | None``.
- No ``features`` on types or members, only on commands and events.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Annotated, Any, Final, NotRequired, Required, TypeAlias, Union

from qmonitor.core.errors import QMPError
from qmonitor.core.qdict import member_order

__all__ = [
    "JSON_NULL",
    "MISSING",
    "ArgumentError",
    "CommandSignature",
    "Parameter",
    "QMPName",
    "SchemaBuilder",
    "StrOrNull",
    "UInt8",
    "UInt16",
    "UInt32",
    "Variants",
    "compile_signature",
    "encode_value",
]

_Converter: TypeAlias = Callable[[object], object]
_Encoder: TypeAlias = Callable[[object], object]
_ArgumentsConverter: TypeAlias = Callable[[Mapping[str, object]], dict[str, object]]

# QAPI's 'int' is int64_t (qobject_input_type_int64).
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1


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
    enum members to dataclass subclasses of ``Base`` (see "Unions" in the module docstring).
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


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One QMP argument of a command.

    ``annotation`` is the parameter's resolved type hint as declared; ``default`` is the value an
    absent optional parameter gets (``None`` for ``T | None`` without a default), ``MISSING`` for
    a required one.
    """

    qmp_name: str
    python_name: str
    annotation: object
    required: bool
    default: object


# --- Validation errors ---------------------------------------------------------------------------


class _ArgumentError(QMPError):
    """A GenericError about one argument, whose name grows as it leaves nested objects and lists.

    Raised where the problem is found, with as much of the name as is known there; each enclosing
    object adds its member name and each enclosing list its index (``enclose``), so ``desc``
    always reads like QEMU's ``full_name_nth``: ``capabilities[0].state``.
    """

    def __init__(self, before: str, after: str, *, bare_name: bool = False) -> None:
        super().__init__("")
        self._before = before
        self._after = after
        self._bare_name = bare_name
        self._path: list[str | int] = []  # innermost first

    @classmethod
    def missing(cls, name: str) -> _ArgumentError:
        error = cls("Parameter '", "' is missing")
        error.enclose(name)
        return error

    @classmethod
    def unexpected(cls, name: str) -> _ArgumentError:
        error = cls("Parameter '", "' is unexpected")
        error.enclose(name)
        return error

    @classmethod
    def invalid_type(cls, expected: str) -> _ArgumentError:
        return cls("Invalid parameter type for '", f"', expected: {expected}")

    @classmethod
    def invalid_enum_value(cls, value: str) -> _ArgumentError:
        # input_type_enum() names the member as visited: bare, and "null" for a list element.
        return cls("Parameter '", f"' does not accept value '{value}'", bare_name=True)

    def enclose(self, segment: str | int) -> None:
        """Add the name (or list index) of the container the offending value sits in."""
        self._path.append(segment)
        self.desc = self._before + self._name() + self._after
        self.args = (self.desc,)

    def _name(self) -> str:
        if self._bare_name:
            innermost = self._path[0]
            return innermost if isinstance(innermost, str) else "null"
        name = ""
        for segment in reversed(self._path):
            if isinstance(segment, int):
                name += f"[{segment}]"
            else:
                name = f"{name}.{segment}" if name else segment
        return name


ArgumentError = _ArgumentError
"""The same error for checkers outside this module (:mod:`qmonitor.core.introspected` checks
arguments against a ``query-qmp-schema`` reply), so that both build QEMU's texts one way."""


# --- The type model: one node per QAPI type ------------------------------------------------------


class _Type:
    """A QAPI type: how to check a JSON value of it, how to encode a Python value of it."""

    __slots__ = ("convert", "encode", "schema_key")

    def __init__(self, convert: _Converter, encode: _Encoder | None, schema_key: object) -> None:
        self.convert = convert  # raises _ArgumentError
        self.encode = encode  # None: a Python value of this type is JSON-able as it is
        self.schema_key = schema_key  # equal keys: one entry in query-qmp-schema


class _Builtin(_Type):
    __slots__ = ("json_type", "name", "passthrough")

    def __init__(
        self,
        name: str,
        json_type: str,
        convert: _Converter,
        encode: _Encoder | None,
        passthrough: type | None = None,
    ) -> None:
        super().__init__(convert, encode, name)
        self.name = name
        self.json_type = json_type
        # A value of exactly this Python type is valid as it is: objects skip the convert call.
        self.passthrough = passthrough


class _Enum(_Type):
    __slots__ = ("values",)

    def __init__(self, enum_class: type[enum.Enum], values: tuple[str, ...]) -> None:
        by_value = {member.value: member for member in enum_class}

        def convert(value: object) -> object:
            if not isinstance(value, str):
                raise _ArgumentError.invalid_type("string")
            member = by_value.get(value)
            if member is None:
                raise _ArgumentError.invalid_enum_value(value)
            return member

        super().__init__(convert, _encode_enum, enum_class)
        self.values = values


class _Array(_Type):
    __slots__ = ("element",)

    def __init__(
        self, element: _Type, sequence_type: type[list[object] | tuple[object, ...]]
    ) -> None:
        super().__init__(
            _array_converter(element.convert, sequence_type),
            _array_encoder(element.encode),
            ("array", element.schema_key),
        )
        self.element = element


@dataclasses.dataclass(frozen=True)
class _Member:
    qmp_name: str
    python_name: str
    type: _Type
    optional: bool  # in the schema: "default": null
    if_absent: object  # _REQUIRED, _SKIP, or the value to pass
    omit_if_none: bool  # when encoding: a None value leaves the member out


class _AlternateType(_Type):
    """An alternate of builtins (only ``StrOrNull`` exists): a value of one of ``members``."""

    __slots__ = ("members",)

    def __init__(self, name: str, convert: _Converter, members: tuple[_Builtin, ...]) -> None:
        super().__init__(convert, _encode_json_null, name)
        self.members = members


class _Object(_Type):
    """A dataclass or TypedDict. ``members`` is filled after creation, for recursive types."""

    __slots__ = ("members",)
    encode: _Encoder

    def __init__(
        self, python_class: type, convert: _Converter, encode: _Encoder, members: list[_Member]
    ) -> None:
        super().__init__(convert, encode, python_class)
        self.members = members


class _Arguments:
    """An object type known by its members alone: a command's arguments (QEMU's
    ``q_obj_NAME-arg``), or a union variant's own members (keyed by the variant's class)."""

    __slots__ = ("members", "schema_key")

    def __init__(self, members: Sequence[_Member], schema_key: object = None) -> None:
        self.members = members
        self.schema_key = self if schema_key is None else schema_key


class _Union(_Type):
    """A union with a discriminator: the base's members, the tag, a type per tag value."""

    __slots__ = ("base", "tag", "variants")

    def __init__(
        self,
        convert: _Converter,
        encode: _Encoder,
        schema_key: object,
        base: _Object,
        tag: str,
        variants: list[tuple[str, _Arguments]],
    ) -> None:
        super().__init__(convert, encode, schema_key)
        self.base = base
        self.tag = tag
        self.variants = variants  # (case, the variant's own members) in introspection order


_EMPTY: Final = _Arguments(())  # QEMU's q_empty: no arguments, no result, no event data


# --- Converters: JSON value -> Python value ------------------------------------------------------


def _identity(value: object) -> object:
    return value


def _convert_uint64(value: object) -> object:
    # qobject_input_type_uint64 (also QAPI's "size"): negative int64 values are taken modulo
    # 2**64 "for backward compatibility"; anything else is "Parameter 'x' expects uint64".
    if type(value) is int:
        if 0 <= value <= _UINT64_MAX:
            return value
        if _INT64_MIN <= value < 0:
            return value + _UINT64_MAX + 1
    raise _ArgumentError("Parameter '", "' expects uint64")


def _sized_unsigned_converter(type_name: str, maximum: int) -> _Converter:
    # qapi/qapi-visit-core.c visit_type_uintN: the uint64 visit first, then the range, named
    # bare (name ? name : "null").
    def convert(value: object) -> object:
        number = _convert_uint64(value)
        assert isinstance(number, int)
        if number > maximum:
            raise _ArgumentError("Parameter '", f"' expects {type_name}_t", bare_name=True)
        return number

    return convert


def _convert_str_or_null(value: object) -> object:
    # The generated visit_type_StrOrNull: a QString or a QNull, else QERR_INVALID_PARAMETER_TYPE
    # with the bare member name.
    if isinstance(value, str):
        return value
    if value is None:
        return JSON_NULL
    raise _ArgumentError("Invalid parameter type for '", "', expected: StrOrNull", bare_name=True)


def _convert_int(value: object) -> object:
    if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
        return value
    raise _ArgumentError.invalid_type("integer")


def _convert_number(value: object) -> object:
    if type(value) is float:
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:  # QEMU's parser: strtod() gives +-HUGE_VAL
            return math.inf if value > 0 else -math.inf
    raise _ArgumentError.invalid_type("number")


def _convert_bool(value: object) -> object:
    if value is True or value is False:
        return value
    raise _ArgumentError.invalid_type("boolean")


def _convert_str(value: object) -> object:
    if isinstance(value, str):
        return value
    raise _ArgumentError.invalid_type("string")


def _convert_any_object(value: object) -> object:
    if isinstance(value, dict):
        return value
    raise _ArgumentError.invalid_type("object")


def _array_converter(
    convert_element: _Converter, sequence_type: type[list[object] | tuple[object, ...]]
) -> _Converter:
    def convert(value: object) -> object:
        if not isinstance(value, list):
            raise _ArgumentError.invalid_type("array")
        result = []
        for index, item in enumerate(value):
            try:
                result.append(convert_element(item))
            except _ArgumentError as error:
                error.enclose(index)
                raise
        return result if sequence_type is list else sequence_type(result)

    return convert


_Step: TypeAlias = tuple[str, str, type | None, _Converter, object]


def _convert_into(
    steps: list[_Step], arguments: Mapping[str, object], kwargs: dict[str, object]
) -> int:
    """Check the members ``steps`` describe, in order, into ``kwargs``; return how many of
    them were present (the caller compares that with the number of members sent)."""
    present = 0
    for qmp_name, python_name, passthrough, convert, if_absent in steps:
        value = arguments.get(qmp_name, _ABSENT)
        if value is _ABSENT:
            if if_absent is _REQUIRED:
                raise _ArgumentError.missing(qmp_name)
            if if_absent is not _SKIP:
                kwargs[python_name] = if_absent
            continue
        present += 1
        if type(value) is passthrough:
            kwargs[python_name] = value
            continue
        try:
            kwargs[python_name] = convert(value)
        except _ArgumentError as error:
            error.enclose(qmp_name)
            raise
    return present


def _members_converter(steps: list[_Step], known: Collection[str]) -> _ArgumentsConverter:
    """Check an object's members in declaration order, then reject any other member.

    ``steps`` and ``known`` may be filled after this returns (recursive types).
    """

    def convert_members(arguments: Mapping[str, object]) -> dict[str, object]:
        kwargs: dict[str, object] = {}
        if _convert_into(steps, arguments, kwargs) != len(arguments):
            raise _ArgumentError.unexpected(first_in_qdict_order(arguments, known))
        return kwargs

    return convert_members


_Branch: TypeAlias = tuple[type, list[_Step], frozenset[str]]


def _union_converter(
    base_steps: list[_Step], tag_python_name: str, branches: Mapping[object, _Branch]
) -> _Converter:
    """QAPI's generated ``visit_type_UNION``: the base members, then those of the variant the
    tag picks, then any other member is unexpected."""

    def convert(value: object) -> object:
        if not isinstance(value, dict):
            raise _ArgumentError.invalid_type("object")
        kwargs: dict[str, object] = {}
        present = _convert_into(base_steps, value, kwargs)
        variant_class, variant_steps, known = branches[kwargs[tag_python_name]]
        present += _convert_into(variant_steps, value, kwargs)
        if present != len(value):
            raise _ArgumentError.unexpected(first_in_qdict_order(value, known))
        return variant_class(**kwargs)

    return convert


def _convert_no_arguments(arguments: Mapping[str, object]) -> dict[str, object]:
    if arguments:
        raise _ArgumentError.unexpected(first_in_qdict_order(arguments, ()))
    return {}


def first_in_qdict_order(arguments: Mapping[str, object], known: Collection[str]) -> str:
    """The unexpected member QEMU reports: the first unknown one in QDict order
    (qobject_input_check_struct walks the table of members not visited)."""
    keys = tuple(key for key in arguments if key not in known)
    return keys[member_order(keys)[0]]


# --- Encoders: Python value -> JSON-able value ---------------------------------------------------


def _encode_enum(value: object) -> object:
    return value.value if isinstance(value, enum.Enum) else value


def _encode_json_null(value: object) -> object:
    return None if value is JSON_NULL else value


def _encode_nothing(value: object) -> object:
    return {}  # QEMU answers {"return": {}} for a command without a result


def _array_encoder(encode_element: _Encoder | None) -> _Encoder:
    if encode_element is None:
        return lambda value: (
            value if type(value) is list else list(typing.cast(tuple[object], value))
        )
    return lambda value: [encode_element(item) for item in typing.cast("list[object]", value)]


def _dataclass_encoder(steps: list[tuple[str, str, _Encoder | None, bool]]) -> _Encoder:
    def encode(value: object) -> object:
        result: dict[str, object] = {}
        for python_name, qmp_name, encode_member, omit_if_none in steps:
            item = getattr(value, python_name)
            if item is None:
                if not omit_if_none:
                    result[qmp_name] = None
            elif encode_member is None:
                result[qmp_name] = item
            else:
                result[qmp_name] = encode_member(item)
        return result

    return encode


def _typeddict_encoder(steps: list[tuple[str, _Encoder]]) -> _Encoder:
    """Pass the dict through, re-encoding only the members whose type needs it."""

    def encode(value: object) -> object:
        if not steps:
            return value
        result = dict(typing.cast("Mapping[str, object]", value))
        for key, encode_member in steps:
            item = result.get(key)
            if item is not None:
                result[key] = encode_member(item)
        return result

    return encode


_JSON_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_dataclass_encoders: dict[type, _Encoder] = {}


def encode_value(value: object) -> object:
    """Encode a value whose type is only known at run time (``Any`` results and members).

    Dataclasses become objects with QMP names (see ``encode_return``), enums their value, tuples
    lists; dicts and lists are encoded member by member.
    """
    value_type = type(value)
    if value_type in _JSON_SCALARS:
        return value
    if value_type is dict or isinstance(value, Mapping):
        mapping = typing.cast("Mapping[str, object]", value)
        return {key: encode_value(item) for key, item in mapping.items()}
    if value_type is list or isinstance(value, tuple | list):
        return [encode_value(item) for item in typing.cast("Sequence[object]", value)]
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        encoder = _dataclass_encoders.get(value_type)
        if encoder is None:
            node = _Compiler().object_type(value_type, "encode_value")
            encoder = _dataclass_encoders[value_type] = node.encode
        return encoder(value)
    if isinstance(value, str | int | float):
        return value
    raise TypeError(f"cannot encode a {value_type.__qualname__} as JSON: {value!r}")


_INT: Final = _Builtin("int", "int", _convert_int, None)
_UINT64: Final = _Builtin("uint64", "int", _convert_uint64, None)
_SIZE: Final = _Builtin("size", "int", _convert_uint64, None)
_SIZED_UNSIGNED: Final = {
    name: _Builtin(name, "int", _sized_unsigned_converter(name, maximum), None)
    for name, maximum in _UNSIGNED_MAXIMA.items()
}
_NULL: Final = _Builtin("null", "null", _identity, None)
_NUMBER: Final = _Builtin("number", "number", _convert_number, None, passthrough=float)
_BOOL: Final = _Builtin("bool", "boolean", _convert_bool, None, passthrough=bool)
_STR: Final = _Builtin("str", "string", _convert_str, None, passthrough=str)
_STR_OR_NULL: Final = _AlternateType("StrOrNull", _convert_str_or_null, (_STR, _NULL))
_ANY: Final = _Builtin("any", "value", _identity, encode_value)
_ANY_OBJECT: Final = _Builtin("any", "value", _convert_any_object, encode_value)


# --- Type hints -> model -------------------------------------------------------------------------


def _split_member_hint(hint: object) -> tuple[object, bool, list[QMPName]]:
    """Unwrap ``Annotated`` and ``T | None`` around a member's type: (T, optional, QMPNames)."""
    optional = False
    names: list[QMPName] = []
    while True:
        origin = typing.get_origin(hint)
        if origin is Annotated:
            hint, *metadata = typing.get_args(hint)
            names += [item for item in metadata if isinstance(item, QMPName)]
            kinds = [
                item for item in metadata if isinstance(item, _IntegerKind | _Alternate | Variants)
            ]
            if kinds:  # the type itself (UInt64, Size, StrOrNull, a union): type_of reads it
                return Annotated[hint, kinds[-1]], optional, names
        elif origin in (Union, types.UnionType) and type(None) in typing.get_args(hint):
            optional = True
            others = [arg for arg in typing.get_args(hint) if arg is not type(None)]
            if len(others) > 1:
                return Union[tuple(others)], optional, names  # noqa: UP007
            hint = others[0]
        else:
            return hint, optional, names


def _default_qmp_name(python_name: str) -> str:
    return python_name.replace("_", "-")


def _check_unique(members: Sequence[_Member], where: str) -> None:
    seen: set[str] = set()
    for member in members:
        if member.qmp_name in seen:
            raise TypeError(f"{where}: two members are named {member.qmp_name!r} in QMP")
        seen.add(member.qmp_name)


def _resolve_hints(owner: object, where: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(owner, include_extras=True)
    except Exception as error:
        raise TypeError(f"{where}: cannot resolve type hints: {error!r}") from error


class _Compiler:
    """Turns type hints into ``_Type`` nodes; a class met twice (or recursively) is one node."""

    def __init__(self) -> None:
        self._objects: dict[type, _Object] = {}
        self._unions: dict[object, _Union] = {}

    def type_of(self, hint: object, where: str) -> _Type:
        if typing.get_origin(hint) is Annotated:
            base, *metadata = typing.get_args(hint)
            if any(isinstance(item, QMPName) for item in metadata):
                raise TypeError(f"{where}: QMPName only names a function parameter")
            for item in metadata:
                if isinstance(item, _Alternate):
                    return _STR_OR_NULL
                if isinstance(item, _IntegerKind):
                    if base is not int:
                        raise TypeError(f"{where}: {item.name} annotates int, not {base!r}")
                    if item.name in _SIZED_UNSIGNED:
                        return _SIZED_UNSIGNED[item.name]
                    return _UINT64 if item.name == "uint64" else _SIZE
                if isinstance(item, Variants):
                    return self.union_type(base, item, where)
            return self.type_of(base, where)
        if hint is bool:
            return _BOOL
        if hint is int:
            return _INT
        if hint is float:
            return _NUMBER
        if hint is str:
            return _STR
        if hint is Any:
            return _ANY
        origin = typing.get_origin(hint)
        if hint is list or origin is list:
            (element,) = typing.get_args(hint) or (Any,)
            return _Array(self.type_of(element, f"{where}: list element"), list)
        if origin is tuple:
            arguments = typing.get_args(hint)
            if len(arguments) != 2 or arguments[1] is not ...:
                raise TypeError(f"{where}: {hint!r}: a tuple must be tuple[T, ...] (an array)")
            return _Array(self.type_of(arguments[0], f"{where}: tuple element"), tuple)
        if hint is dict or origin is dict:
            if typing.get_args(hint) not in ((), (str, Any)):
                raise TypeError(f"{where}: {hint!r}: the only mapping type is dict[str, Any]")
            return _ANY_OBJECT
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return self._enum_type(hint, where)
        if isinstance(hint, type) and (dataclasses.is_dataclass(hint) or typing.is_typeddict(hint)):
            return self.object_type(hint, where)
        if origin in (Union, types.UnionType):
            raise TypeError(
                f"{where}: {hint!r}: a union may only be 'T | None', for an optional member"
            )
        raise TypeError(f"{where}: unsupported type {hint!r}")

    def _enum_type(self, enum_class: type[enum.Enum], where: str) -> _Enum:
        values = tuple(member.value for member in enum_class)
        for value in values:
            if not isinstance(value, str):
                raise TypeError(f"{where}: enum {enum_class.__qualname__} has a non-str value")
        return _Enum(enum_class, values)

    def object_type(self, python_class: type, where: str) -> _Object:
        """The node of a dataclass or TypedDict."""
        node = self._objects.get(python_class)
        if node is not None:
            return node
        steps: list[_Step] = []
        known: set[str] = set()
        members: list[_Member] = []
        convert_members = _members_converter(steps, known)
        where = f"{where}: {python_class.__qualname__}"
        if typing.is_typeddict(python_class):
            encode_steps: list[tuple[str, _Encoder]] = []

            def convert_typeddict(value: object) -> object:
                if not isinstance(value, dict):
                    raise _ArgumentError.invalid_type("object")
                return convert_members(value)

            node = _Object(
                python_class, convert_typeddict, _typeddict_encoder(encode_steps), members
            )
            self._objects[python_class] = node
            members += self._typeddict_members(python_class, where)
            encode_steps += [
                (member.qmp_name, member.type.encode)
                for member in members
                if member.type.encode is not None
            ]
        else:
            dataclass_steps: list[tuple[str, str, _Encoder | None, bool]] = []

            def convert_dataclass(value: object) -> object:
                if not isinstance(value, dict):
                    raise _ArgumentError.invalid_type("object")
                return python_class(**convert_members(value))

            node = _Object(
                python_class, convert_dataclass, _dataclass_encoder(dataclass_steps), members
            )
            self._objects[python_class] = node
            members += self._dataclass_members(python_class, where)
            dataclass_steps += [
                (member.python_name, member.qmp_name, member.type.encode, member.omit_if_none)
                for member in members
            ]
        _check_unique(members, where)
        steps += _conversion_steps(members)
        known.update(member.qmp_name for member in members)
        return node

    def union_type(self, base_class: object, variants: Variants, where: str) -> _Union:
        """The node of ``Annotated[base_class, variants]`` (see "Unions" above)."""
        key = ("union", base_class, variants)
        node = self._unions.get(key)
        if node is not None:
            return node
        if not (isinstance(base_class, type) and dataclasses.is_dataclass(base_class)):
            raise TypeError(f"{where}: {variants!r} needs a dataclass base, not {base_class!r}")
        where = f"{where}: union {base_class.__qualname__}"
        base = self.object_type(base_class, where)
        tags = [member for member in base.members if member.qmp_name == variants.tag]
        if len(tags) != 1 or not isinstance(tags[0].type, _Enum) or tags[0].optional:
            raise TypeError(f"{where}: the tag {variants.tag!r} must be a required enum member")
        tag = tags[0]
        enum_class = typing.cast("type[enum.Enum]", tag.type.schema_key)
        base_names = [member.qmp_name for member in base.members]
        cases: dict[object, type] = {}
        for case, variant_class in variants.cases:
            if not isinstance(case, enum_class) or case in cases:
                raise TypeError(f"{where}: {case!r} is not a distinct {enum_class.__qualname__}")
            if not (
                isinstance(variant_class, type)
                and issubclass(variant_class, base_class)
                and dataclasses.is_dataclass(variant_class)
            ):
                raise TypeError(f"{where}: {variant_class!r} is not a dataclass subclass of it")
            cases[case] = variant_class
        listed = [case for case, _ in variants.cases]
        encoders: dict[type, _Encoder] = {base_class: base.encode}
        branches: dict[object, _Branch] = {}
        layout: list[tuple[str, _Arguments]] = []
        for case in listed + [member for member in enum_class if member not in cases]:
            variant_class = cases.get(case, base_class)
            if variant_class is base_class:
                own: list[_Member] = []
                layout.append((case.value, _EMPTY))
            else:
                full = self.object_type(variant_class, where)
                own = full.members[len(base_names) :]  # a dataclass lists inherited fields first
                encoders[variant_class] = full.encode
                layout.append((case.value, _Arguments(own, ("variant", variant_class))))
            known = frozenset(base_names + [member.qmp_name for member in own])
            branches[case] = (variant_class, _conversion_steps(own), known)

        def encode(value: object) -> object:
            encode_variant = encoders.get(type(value))
            if encode_variant is None:
                raise TypeError(f"{type(value).__qualname__} is not a variant of {where}")
            return encode_variant(value)

        convert = _union_converter(_conversion_steps(base.members), tag.python_name, branches)
        node = _Union(convert, encode, key, base, variants.tag, layout)
        self._unions[key] = node
        return node

    def _dataclass_members(self, python_class: type, where: str) -> list[_Member]:
        hints = _resolve_hints(python_class, where)
        members = []
        for field in dataclasses.fields(python_class):
            if not field.init:
                continue  # not settable from QMP, so not a QMP member
            field_where = f"{where}: field {field.name!r}"
            hint, optional, names = _split_member_hint(hints[field.name])
            if names:
                raise TypeError(
                    f"{field_where}: QMPName only names a function parameter; "
                    "use field(metadata={'qmp_name': ...})"
                )
            has_default = (
                field.default is not dataclasses.MISSING
                or field.default_factory is not dataclasses.MISSING
            )
            if has_default:
                if_absent: object = _SKIP
            else:
                if_absent = None if optional else _REQUIRED
            members.append(
                _Member(
                    qmp_name=field.metadata.get("qmp_name", _default_qmp_name(field.name)),
                    python_name=field.name,
                    type=self.type_of(hint, field_where),
                    optional=optional or has_default,
                    if_absent=if_absent,
                    omit_if_none=optional,
                )
            )
        return members

    def _typeddict_members(self, python_class: type, where: str) -> list[_Member]:
        required_keys: frozenset[str] = python_class.__required_keys__  # type: ignore[attr-defined]
        members = []
        for key, declared in _resolve_hints(python_class, where).items():
            # With postponed annotations, Python 3.11 misses (Not)Required in __required_keys__.
            origin = typing.get_origin(declared)
            if origin is NotRequired or origin is Required:
                may_be_absent = origin is NotRequired
                (declared,) = typing.get_args(declared)
            else:
                may_be_absent = key not in required_keys
            hint, optional, names = _split_member_hint(declared)
            if names:
                raise TypeError(f"{where}: key {key!r}: a TypedDict key is its QMP name already")
            if may_be_absent:
                if_absent: object = _SKIP
            else:
                if_absent = None if optional else _REQUIRED
            members.append(
                _Member(
                    qmp_name=key,
                    python_name=key,
                    type=self.type_of(hint, f"{where}: key {key!r}"),
                    optional=optional or may_be_absent,
                    if_absent=if_absent,
                    omit_if_none=False,
                )
            )
        return members


def _conversion_steps(members: Sequence[_Member]) -> list[_Step]:
    return [
        (
            member.qmp_name,
            member.python_name,
            member.type.passthrough if isinstance(member.type, _Builtin) else None,
            member.type.convert,
            member.if_absent,
        )
        for member in members
    ]


# --- Commands ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ReturnMember:
    """One member of a dataclass result, for writers that encode results straight to text.

    ``json_type`` is ``"boolean"``, ``"integer"``, ``"string"``, ``"enum"`` (a str enum) or
    ``"other"``; ``encode`` turns a member value of type ``"other"`` into JSON-able data (None:
    it already is).
    """

    python_name: str
    qmp_name: str
    json_type: str
    encode: _Encoder | None
    omit_if_none: bool


def _json_type_of(node: _Type) -> str:
    if node is _BOOL:
        return "boolean"
    if node is _INT:
        return "integer"
    if node is _STR:
        return "string"
    if isinstance(node, _Enum):
        return "enum"
    return "other"


class CommandSignature:
    """What ``compile_signature`` learnt from a handler.

    ``convert_arguments(arguments)`` checks a request's ``arguments`` object and returns the
    handler's keyword arguments (Python names; enums, dataclasses built; defaults filled); it
    raises :class:`QMPError` with QEMU's text. ``encode_return(value)`` turns the handler's
    result into a JSON-able value (``{}`` for a handler returning ``None``). Both are closures
    built at compile time and stored as attributes, to spare a call per request.

    ``parameters`` lists the QMP arguments in declaration order; ``return_type`` is the declared
    result type (``None`` for none).
    """

    __slots__ = (
        "_arguments",
        "_returns",
        "convert_arguments",
        "encode_return",
        "parameters",
        "return_type",
    )

    parameters: tuple[Parameter, ...]
    return_type: object
    convert_arguments: _ArgumentsConverter
    encode_return: _Encoder

    def __init__(
        self,
        parameters: tuple[Parameter, ...],
        return_type: object,
        arguments: _Arguments,
        returns: _Type | _Arguments,
        convert_arguments: _ArgumentsConverter,
        encode_return: _Encoder,
    ) -> None:
        self.parameters = parameters
        self.return_type = return_type
        self._arguments = arguments
        self._returns = returns
        self.convert_arguments = convert_arguments
        self.encode_return = encode_return

    def return_members(self) -> tuple[ReturnMember, ...] | None:
        """The members of a dataclass result in declaration order; None for other results."""
        returns = self._returns
        if not isinstance(returns, _Object) or not dataclasses.is_dataclass(self.return_type):
            return None
        return tuple(
            ReturnMember(
                member.python_name,
                member.qmp_name,
                _json_type_of(member.type),
                member.type.encode,
                member.omit_if_none,
            )
            for member in returns.members
        )

    def __repr__(self) -> str:
        names = ", ".join(parameter.qmp_name for parameter in self.parameters)
        return f"CommandSignature({names}) -> {inspect.formatannotation(self.return_type)}"


def compile_signature(
    func: Callable[..., object],
    *,
    exclude: Collection[str] = (),
    return_type: object = MISSING,
) -> CommandSignature:
    """Read ``func``'s type hints once and build its argument converter and result encoder.

    ``exclude`` names parameters that are not QMP arguments (a context or completion object the
    registry passes itself). ``return_type`` replaces the return hint (a completion-style handler
    returns ``None`` but completes with a value). Raises ``TypeError`` naming the function and the
    parameter for a signature that QMP cannot express.
    """
    where = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)!s}"
    hints = _resolve_hints(func, where)
    compiler = _Compiler()
    parameters = []
    members = []
    for python_parameter in inspect.signature(func).parameters.values():
        python_name = python_parameter.name
        if python_name in exclude:
            continue
        parameter_where = f"{where}: parameter {python_name!r}"
        if python_parameter.kind not in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            raise TypeError(f"{parameter_where}: must be passable by keyword")
        if python_name not in hints:
            raise TypeError(f"{parameter_where}: has no type hint")
        hint, optional, names = _split_member_hint(hints[python_name])
        qmp_name = names[-1].name if names else _default_qmp_name(python_name)
        if python_parameter.default is not inspect.Parameter.empty:
            default: object = python_parameter.default
        else:
            default = None if optional else MISSING
        parameters.append(
            Parameter(
                qmp_name=qmp_name,
                python_name=python_name,
                annotation=hints[python_name],
                required=default is MISSING,
                default=default,
            )
        )
        members.append(
            _Member(
                qmp_name=qmp_name,
                python_name=python_name,
                type=compiler.type_of(hint, parameter_where),
                optional=default is not MISSING,
                if_absent=_REQUIRED if default is MISSING else default,
                omit_if_none=False,
            )
        )
    _check_unique(members, where)

    if return_type is MISSING:
        if "return" not in hints:
            raise TypeError(f"{where}: has no return type hint (use '-> None')")
        return_type = hints["return"]
    returns: _Type | _Arguments
    encode_return: _Encoder
    if return_type is None or return_type is type(None):
        return_type = None
        returns, encode_return = _EMPTY, _encode_nothing
    else:
        returns = compiler.type_of(return_type, f"{where}: return type")
        encode_return = returns.encode or _identity

    if members:
        arguments = _Arguments(tuple(members))
        convert_arguments = _members_converter(
            _conversion_steps(members), frozenset(member.qmp_name for member in members)
        )
    else:
        arguments, convert_arguments = _EMPTY, _convert_no_arguments
    return CommandSignature(
        tuple(parameters), return_type, arguments, returns, convert_arguments, encode_return
    )


# --- query-qmp-schema ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Definition:
    name: str
    meta_type: str  # "command" or "event"
    arg_type: _Type | _Arguments
    ret_type: _Type | _Arguments | None  # None for an event
    allow_oob: bool
    features: tuple[str, ...]


class SchemaBuilder:
    """Collects commands and events and lays them out as ``query-qmp-schema`` returns them."""

    def __init__(self) -> None:
        self._definitions: list[_Definition] = []
        self._names: set[tuple[str, str]] = set()

    def add_command(
        self,
        name: str,
        signature: CommandSignature,
        *,
        allow_oob: bool = False,
        features: Sequence[str] = (),
    ) -> None:
        """``features``: QAPI feature names for the entry, such as ``unstable``, ``deprecated``."""
        self._add(
            _Definition(
                name,
                "command",
                signature._arguments,
                signature._returns,
                allow_oob,
                tuple(features),
            )
        )

    def add_event(
        self, name: str, data_type: object | None, *, features: Sequence[str] = ()
    ) -> None:
        """``data_type``: the dataclass or TypedDict of the event's ``data``, None for none."""
        if data_type is None:
            arg_type: _Type | _Arguments = _EMPTY
        else:
            arg_type = _Compiler().type_of(data_type, f"event {name}")
            if not isinstance(arg_type, _Object):
                raise TypeError(f"event {name}: data must be a dataclass or TypedDict")
        self._add(_Definition(name, "event", arg_type, None, False, tuple(features)))

    def _add(self, definition: _Definition) -> None:
        key = (definition.meta_type, definition.name)
        if key in self._names:
            raise ValueError(f"{definition.meta_type} {definition.name!r} is already defined")
        self._names.add(key)
        self._definitions.append(definition)

    def entries(self) -> list[dict[str, object]]:
        """The ``SchemaInfo`` list (qapi/introspect.json), in QEMU's order and naming."""
        return _SchemaLayout(self._definitions).entries


class _SchemaLayout:
    """One run of scripts/qapi/introspect.py's QAPISchemaGenIntrospectVisitor."""

    def __init__(self, definitions: Sequence[_Definition]) -> None:
        self._masked_names: dict[object, str] = {}
        self._used: list[_Type | _Arguments] = []
        self._used_keys: set[object] = set()
        self.entries: list[dict[str, object]] = []
        for definition in definitions:
            entry: dict[str, object] = {
                "name": definition.name,
                "meta-type": definition.meta_type,
                "arg-type": self._use(definition.arg_type),
            }
            if definition.ret_type is not None:
                entry["ret-type"] = self._use(definition.ret_type)
            if definition.allow_oob:
                entry["allow-oob"] = True
            if definition.features:
                entry["features"] = list(definition.features)
            self.entries.append(entry)
        index = 0
        while index < len(self._used):  # visiting a type may use more types
            self.entries.append(self._type_entry(self._used[index]))
            index += 1

    def _use(self, node: _Type | _Arguments) -> str:
        if isinstance(node, _Builtin) and node.json_type == "int":
            # introspect.py _use_type: "Map the various integer types to plain int".
            node = _INT
        key = node.schema_key
        if key not in self._used_keys:
            self._used_keys.add(key)
            self._used.append(node)
        if isinstance(node, _Builtin):
            return node.name
        if isinstance(node, _Array):
            return f"[{self._use(node.element)}]"
        return self._masked_names.setdefault(key, str(len(self._masked_names)))

    def _type_entry(self, node: _Type | _Arguments) -> dict[str, object]:
        if isinstance(node, _Builtin):
            return {"name": node.name, "meta-type": "builtin", "json-type": node.json_type}
        if isinstance(node, _Array):
            element = self._use(node.element)
            return {"name": f"[{element}]", "meta-type": "array", "element-type": element}
        name = self._use(node)
        if isinstance(node, _AlternateType):
            variants = [{"type": self._use(member)} for member in node.members]
            return {"name": name, "meta-type": "alternate", "members": variants}
        if isinstance(node, _Enum):
            return {
                "name": name,
                "meta-type": "enum",
                "members": [{"name": value} for value in node.values],
                "values": list(node.values),
            }
        if isinstance(node, _Union):
            entry = self._object_entry(name, node.base.members)
            entry["tag"] = node.tag
            entry["variants"] = [
                {"case": case, "type": self._use(variant)} for case, variant in node.variants
            ]
            return entry
        assert isinstance(node, _Object | _Arguments)
        return self._object_entry(name, node.members)

    def _object_entry(self, name: str, members: Sequence[_Member]) -> dict[str, object]:
        infos: list[dict[str, object]] = []
        for member in members:
            info: dict[str, object] = {"name": member.qmp_name, "type": self._use(member.type)}
            if member.optional:
                info["default"] = None
            infos.append(info)
        return {"name": name, "meta-type": "object", "members": infos}
