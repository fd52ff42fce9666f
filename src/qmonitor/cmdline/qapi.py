"""The checks QEMU's QAPI input visitors make on option dictionaries.

Options parsed into QAPI types (``-display``, ``-audiodev``, ``-object``) are checked member by
member in schema order: a required member that is missing, a value of the wrong type, an enum
value the type does not have, then any member the type does not have. The wording depends on
which of QEMU's three input forms carries the value (:class:`InputForm`):

* JSON (``{"type": "none"}``), read by qapi/qobject-input-visitor.c: values must already have
  the right JSON type; names in errors are full paths (``limits.iops-total``, ``host-nodes[1]``).
* keyval (``none,gl=on``), the same visitor in its keyval mode: every value is text, read as
  the member's type.
* QemuOpts (``-object memory-backend-ram,id=m,size=1M``), read by qapi/opts-visitor.c: text
  too, but with that visitor's words (``expects an int64 value``, ``Invalid parameter``), its
  last-one-wins repeated keys and its integer lists (``host-nodes=0-3,host-nodes=5``).

Integer types narrower than 64 bits are range-checked after they are read
(qapi/qapi-visit-core.c ``visit_type_uintN``/``visit_type_intN``), with the member's own name,
or ``null`` for a list element. An unexpected member is the first one left in the visitor's
``GHashTable`` of members not yet read (:class:`qmonitor.core.ghash.StringSet`), which is not
the order they were given in.

Only the members a caller names are checked, so a caller can check a union's common members
and leave its variant members alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from qmonitor.core.cutils import (
    c_strtoll,
    parse_uint,
    qapi_bool_parse,
    qemu_strtoi64,
    qemu_strtosz,
    qemu_strtou64,
)
from qmonitor.core.errors import QMonitorError
from qmonitor.core.ghash import StringSet
from qmonitor.core.qdict import member_order


class ListOf:
    """A QAPI list member (``['uint16']``).

    Plain classes rather than dataclasses: this module is imported at start-up, and a
    dataclass costs a good part of a millisecond to create.
    """

    __slots__ = ("element",)

    def __init__(self, element: MemberType) -> None:
        self.element = element


class StructOf:
    """A member whose type is a struct: its members, in visiting order."""

    __slots__ = ("members",)

    def __init__(self, members: Members) -> None:
        self.members = members


# A member's type: a built-in type's name ("str", "bool", "uint32", "size"...), the values of
# an enum, a list or a struct; UNMODELLED for a union or alternate, which is not checked.
MemberType = str | tuple[str, ...] | ListOf | StructOf
Member = tuple[str, MemberType, bool]  # name, type, required
Members = tuple[Member, ...]

STR: Final = "str"
BOOL: Final = "bool"
UNMODELLED: Final = "unmodelled"

# qapi/qapi-visit-core.c: the narrower integer types, their ranges and the names errors use.
_INT_RANGES: Final = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint8": (0, (1 << 8) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
}
_SIGNED: Final = frozenset(("int", "int64", "int8", "int16", "int32"))
_UNSIGNED: Final = frozenset(("uint64", "uint8", "uint16", "uint32"))
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_UINT64_END: Final = 1 << 64
# qapi/opts-visitor.c: the most elements one "a-b" range of a list may give.
OPTS_VISITOR_RANGE_MAX: Final = 65536


class QapiError(QMonitorError):
    """An input visitor's error, with QEMU's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputForm:
    """Which of QEMU's input visitors reads the value (see the module docstring)."""

    JSON: Final = "json"
    KEYVAL: Final = "keyval"
    OPTS: Final = "opts"


def visit_members(data: Mapping[str, object], members: Sequence[Member], *, keyval: bool) -> None:
    """Visit ``members`` of ``data`` in order, raising QapiError as QEMU's visitor would."""
    form = InputForm.KEYVAL if keyval else InputForm.JSON
    _QObjectInput(form).members(data, members, "")


def check_unexpected(data: Mapping[str, object], known: Sequence[str]) -> None:
    """qobject_input_check_struct(): the first member the type does not have."""
    for name in data:
        if name not in known:
            raise QapiError(f"Parameter '{name}' is unexpected")


def visit_struct(data: Mapping[str, object], members: Members, form: str) -> None:
    """Visit a whole struct as QEMU does: its members, then the members it does not have.

    For :attr:`InputForm.OPTS`, ``data`` maps each name to its values in the order given
    (QemuOpts keeps repeated keys), ``id`` last.
    """
    if form == InputForm.OPTS:
        _OptsInput(data).struct(members)
    else:
        _QObjectInput(form).struct(data, members, "")


def _range_check(value: int, member_type: str, name: str | None) -> None:
    bounds = _INT_RANGES.get(member_type)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise QapiError(f"Parameter '{name or 'null'}' expects {member_type}_t")


class _QObjectInput:
    """qapi/qobject-input-visitor.c over a JSON value or a keyval_parse() dictionary."""

    def __init__(self, form: str) -> None:
        self.keyval = form == InputForm.KEYVAL

    def struct(self, data: Mapping[str, object], members: Members, path: str) -> None:
        keys = tuple(data)
        unvisited = StringSet()
        for position in member_order(keys):
            unvisited.insert(keys[position])
        self.members(data, members, path, unvisited)
        for key in unvisited:
            raise QapiError(f"Parameter '{path}{key}' is unexpected")

    def members(
        self,
        data: Mapping[str, object],
        members: Sequence[Member],
        path: str,
        unvisited: StringSet | None = None,
    ) -> None:
        for name, member_type, required in members:
            if name not in data:
                if required:
                    raise QapiError(f"Parameter '{path}{name}' is missing")
                continue
            if unvisited is not None:
                unvisited.remove(name)
            self.value(data[name], member_type, name, f"{path}{name}")

    def value(self, value: object, member_type: MemberType, name: str | None, path: str) -> None:
        """One value; ``name`` is what range and enum errors say (None: a list element)."""
        if member_type == UNMODELLED:
            return
        if isinstance(member_type, StructOf):
            if not isinstance(value, dict):
                raise QapiError(f"Invalid parameter type for '{path}', expected: object")
            self.struct(value, member_type.members, f"{path}.")
            return
        if isinstance(member_type, ListOf):
            if not isinstance(value, list):
                raise QapiError(f"Invalid parameter type for '{path}', expected: array")
            separator = ".{}" if self.keyval else "[{}]"
            for index, element in enumerate(value):
                self.value(element, member_type.element, None, path + separator.format(index))
            return
        if self.keyval:
            self._keyval_scalar(value, member_type, name, path)
        else:
            self._json_scalar(value, member_type, name, path)

    def _json_scalar(
        self, value: object, member_type: MemberType, name: str | None, path: str
    ) -> None:
        integer = value if isinstance(value, int) and not isinstance(value, bool) else None
        if member_type == BOOL:
            if not isinstance(value, bool):
                raise QapiError(f"Invalid parameter type for '{path}', expected: boolean")
        elif isinstance(member_type, str) and member_type in _SIGNED:
            if integer is None or not _INT64_MIN <= integer <= _INT64_MAX:
                raise QapiError(f"Invalid parameter type for '{path}', expected: integer")
            _range_check(integer, member_type, name)
        elif isinstance(member_type, str) and (member_type in _UNSIGNED or member_type == "size"):
            # qobject_input_type_uint64(): a negative int64 is taken modulo 2^64.
            if integer is None or not _INT64_MIN <= integer < _UINT64_END:
                raise QapiError(f"Parameter '{path}' expects uint64")
            _range_check(integer % _UINT64_END, member_type, name)
        elif member_type == "number":
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise QapiError(f"Invalid parameter type for '{path}', expected: number")
        elif member_type != "any":
            if not isinstance(value, str):
                raise QapiError(f"Invalid parameter type for '{path}', expected: string")
            _enum_check(value, member_type, name)

    def _keyval_scalar(
        self, value: object, member_type: MemberType, name: str | None, path: str
    ) -> None:
        if member_type == "any":
            return
        if not isinstance(value, str):  # qobject_input_get_keyval()
            raise QapiError(f"Parameters '{path}.*' are unexpected")
        if member_type == BOOL:
            if qapi_bool_parse(value) is None:
                raise QapiError(f"Parameter '{path}' expects 'on' or 'off'")
        elif isinstance(member_type, str) and member_type in _SIGNED:
            number = qemu_strtoi64(value)
            if number.error:
                raise QapiError(f"Parameter '{path}' expects integer")
            _range_check(number.value, member_type, name)
        elif isinstance(member_type, str) and member_type in _UNSIGNED:
            unsigned = qemu_strtou64(value)
            if unsigned.error:
                raise QapiError(f"Parameter '{path}' expects integer")
            _range_check(unsigned.value, member_type, name)
        elif member_type == "size":
            if qemu_strtosz(value).error:
                raise QapiError(f"Parameter '{path}' expects size")
        elif member_type != "number":
            _enum_check(value, member_type, name)


def _enum_check(text: str, member_type: MemberType, name: str | None) -> None:
    """qapi-visit-core.c input_type_enum(), worded with the member's own name."""
    if isinstance(member_type, tuple) and text not in member_type:
        raise QapiError(f"Parameter '{name or 'null'}' does not accept value '{text}'")


class _OptsInput:
    """qapi/opts-visitor.c over one QemuOpts: every member's values, as text, in order."""

    def __init__(self, opts: Mapping[str, object]) -> None:
        self.opts: dict[str, list[str]] = {}
        self.unprocessed = StringSet()
        for name, values in opts.items():
            assert isinstance(values, list)
            self.opts[name] = [str(value) for value in values]
            self.unprocessed.insert(name)

    def struct(self, members: Members) -> None:
        self.members(members)
        for name in self.unprocessed:  # opts_check_struct()
            raise QapiError(f"Invalid parameter '{name}'")

    def members(self, members: Members) -> None:
        for name, member_type, required in members:
            if name not in self.opts:  # opts_optional(), lookup_distinct()
                if required:
                    raise QapiError(f"Parameter '{name}' is missing")
                continue
            if member_type == UNMODELLED:
                self._processed(name)
            elif isinstance(member_type, StructOf):
                # A nested struct has no QemuOpt of its own: its members are looked up
                # among the others (opts_start_struct() below the top), and the option that
                # made it present is left unprocessed.
                self.members(member_type.members)
            elif isinstance(member_type, ListOf):
                self._list(name, member_type.element)
            else:
                self._scalar(name, self.opts[name][-1], member_type)
                self._processed(name)

    def _processed(self, name: str) -> None:
        if name in self.opts:
            del self.opts[name]
            self.unprocessed.remove(name)

    def _scalar(self, name: str, text: str, member_type: MemberType) -> None:
        if member_type == BOOL:
            if qapi_bool_parse(text) is None:
                raise QapiError(f"Parameter '{name}' expects 'on' or 'off'")
        elif isinstance(member_type, str) and member_type in _SIGNED:
            number = c_strtoll(text)
            if number.error or number.end != len(text):
                raise QapiError(f"Parameter '{name}' expects an int64 value")
            _range_check(number.value, member_type, name)
        elif isinstance(member_type, str) and member_type in _UNSIGNED:
            unsigned = parse_uint(text)
            if unsigned.error or unsigned.end != len(text):
                raise QapiError(f"Parameter '{name}' expects a uint64 value")
            _range_check(unsigned.value, member_type, name)
        elif member_type == "size":
            if qemu_strtosz(text).error:
                raise QapiError(f"Parameter '{name}' expects a size value")
        else:
            _enum_check(text, member_type, name)

    def _list(self, name: str, element: MemberType) -> None:
        """opts_start_list()/opts_next_list(): one element per occurrence, integer ranges."""
        signed = element in _SIGNED
        kind = "an int64 value or range" if signed else "a uint64 value or range"
        for text in self.opts[name]:
            if not (signed or element in _UNSIGNED):
                self._scalar(name, text, element)
                continue
            first = c_strtoll(text) if signed else parse_uint(text)
            if first.error:
                raise QapiError(f"Parameter '{name}' expects {kind}")
            values = [first.value]
            if first.end != len(text):
                values = self._range(text, first.value, first.end, signed)
                if not values:
                    raise QapiError(f"Parameter '{name}' expects {kind}")
            for value in values:
                assert isinstance(element, str)
                _range_check(value, element, None)
        self._processed(name)

    @staticmethod
    def _range(text: str, low: int, end: int, signed: bool) -> list[int]:
        """``a-b`` after ``a``: the values from ``a`` to ``b``, or none if it is not a range."""
        if text[end] != "-":
            return []
        rest = text[end + 1 :]
        second = c_strtoll(rest) if signed else parse_uint(rest)
        if second.error or second.end != len(rest) or second.value < low:
            return []
        if signed:
            if not (
                low > _INT64_MAX - OPTS_VISITOR_RANGE_MAX
                or second.value < low + OPTS_VISITOR_RANGE_MAX
            ):
                return []
        elif second.value - low >= OPTS_VISITOR_RANGE_MAX:
            return []
        return list(range(low, second.value + 1))
