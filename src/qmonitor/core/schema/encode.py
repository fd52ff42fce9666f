"""Python values -> JSON-able values: the encoders :mod:`.compile` puts together.

Encoding results
================
``encode_return`` follows the declared return type: ``None`` -> ``{}`` (QEMU's reply for a
command without a result), a dataclass -> an object with QMP names that leaves out ``T | None``
fields holding ``None`` (an absent QAPI optional member), an enum -> its value, a tuple -> a
list; a TypedDict or ``dict[str, Any]`` passes through, with only what needs it re-encoded.
Values typed ``Any`` are encoded by their run-time type (:func:`encode_value`).

:func:`~qmonitor.core.schema.encode_value` (run-time types) lives in :mod:`.compile`:
a dataclass it meets at run time is compiled there, once.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable, Mapping
from typing import TypeAlias

from qmonitor.core.schema.types import JSON_NULL

_Encoder: TypeAlias = Callable[[object], object]


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
