"""The type model: one node per QAPI type, built by :mod:`.compile`, laid out by :mod:`.introspect`.

A node holds how to check a JSON value of its type (a converter of :mod:`.convert`), how to
encode a Python value of it (an encoder of :mod:`.encode`) and its key in ``query-qmp-schema``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

from qmonitor.core.record import Record
from qmonitor.core.schema.convert import _ArgumentError, _array_converter, _Converter
from qmonitor.core.schema.encode import _array_encoder, _encode_enum, _encode_json_null, _Encoder


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


class _Member(Record):
    __slots__ = ("if_absent", "omit_if_none", "optional", "python_name", "qmp_name", "type")

    qmp_name: Final[str]
    python_name: Final[str]
    type: Final[_Type]
    optional: Final[bool]  # in the schema: "default": null
    if_absent: Final[object]  # _REQUIRED, _SKIP, or the value to pass
    omit_if_none: Final[bool]  # when encoding: a None value leaves the member out

    def __init__(
        self,
        qmp_name: str,
        python_name: str,
        type: _Type,
        optional: bool,
        if_absent: object,
        omit_if_none: bool,
    ) -> None:
        self.qmp_name = qmp_name
        self.python_name = python_name
        self.type = type
        self.optional = optional
        self.if_absent = if_absent
        self.omit_if_none = omit_if_none


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
