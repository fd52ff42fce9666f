"""``query-qmp-schema``: :class:`SchemaBuilder` lays commands, events and types out as QEMU.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from qmonitor.core.record import Record
from qmonitor.core.schema.compile import _INT, CommandSignature, _Compiler
from qmonitor.core.schema.model import (
    _EMPTY,
    _AlternateType,
    _Arguments,
    _Array,
    _Builtin,
    _Enum,
    _Member,
    _Object,
    _Type,
    _Union,
)


class _Definition(Record):
    __slots__ = ("allow_oob", "arg_type", "features", "meta_type", "name", "ret_type")

    name: Final[str]
    meta_type: Final[str]  # "command" or "event"
    arg_type: Final[_Type | _Arguments]
    ret_type: Final[_Type | _Arguments | None]  # None for an event
    allow_oob: Final[bool]
    features: Final[tuple[str, ...]]

    def __init__(
        self,
        name: str,
        meta_type: str,
        arg_type: _Type | _Arguments,
        ret_type: _Type | _Arguments | None,
        allow_oob: bool,
        features: tuple[str, ...],
    ) -> None:
        self.name = name
        self.meta_type = meta_type
        self.arg_type = arg_type
        self.ret_type = ret_type
        self.allow_oob = allow_oob
        self.features = features


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
