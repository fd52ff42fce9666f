"""JSON arguments -> Python values, with QEMU's error texts.

The converters :mod:`.compile` puts together for each type, and the error they raise.

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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Final, TypeAlias

from qmonitor.core.errors import QMPError
from qmonitor.core.qdict import member_order
from qmonitor.core.schema.types import _ABSENT, _REQUIRED, _SKIP, JSON_NULL

_Converter: TypeAlias = Callable[[object], object]
_ArgumentsConverter: TypeAlias = Callable[[Mapping[str, object]], dict[str, object]]

# QAPI's 'int' is int64_t (qobject_input_type_int64).
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1


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
"""The same error for checkers outside this package (:mod:`qmonitor.core.introspected` checks
arguments against a ``query-qmp-schema`` reply), so that both build QEMU's texts one way."""


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
