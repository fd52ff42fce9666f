"""Requests checked against an introspected schema: the SchemaInfo list of ``query-qmp-schema``.

:mod:`qmonitor.core.schema` goes from Python type hints to QEMU's argument checks and to
SchemaInfo. This module goes the other way: given the SchemaInfo entries a QEMU returned
(``qapi/introspect.json``), :class:`IntrospectedSchema` checks a request as QEMU would and raises
the error QEMU gives, in QEMU's order:

1. the command must exist: CommandNotFound ``The command NAME has not been found``
   (``qapi/qmp-dispatch.c`` ``qmp_dispatch``);
2. ``exec-oob`` only for a command marked ``allow-oob``: ``The command NAME does not support
   OOB`` (``monitor/qmp.c``; the same check as :mod:`qmonitor.server.qmp_session`);
3. the arguments, as the generated marshaller visits them with the QObject input visitor
   (``qapi/qobject-input-visitor.c``): each declared member in declaration order (missing or
   ill-typed), then a union's variant members, then any member not visited is unexpected. The
   texts and the member naming (``capabilities[0].state``) are those of
   :mod:`qmonitor.core.schema`, through its :class:`~qmonitor.core.schema.ArgumentError`.

What a SchemaInfo list cannot tell, and so is not checked (docs/TESTING.md):

- Every integer type is published as ``int`` (``scripts/qapi/introspect.py`` ``_use_type``), so
  any integer QEMU's parser reads as one (int64 or uint64) passes; the range errors of the
  sized types (``Parameter 'x' expects uint8_t``) and an int64 member given a value above
  2**63-1 are not reported.
- Type names are masked as numbers, so an alternate that no branch accepts is reported as
  ``expected: StrOrNull`` when its branches are a string and null (the only alternate whose
  name :mod:`qmonitor.core.schema` knows), and with its masked number otherwise, where QEMU
  names the C type (``BlockdevRef``).
- ``device_add`` is not generated from the schema (``'gen': false``; QEMU accepts any device
  property), so its arguments are not checked, as libvirt's test monitor also skips it
  (``tests/qemumonitortestutils.c``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from qmonitor.core.errors import CommandNotFound, QMonitorError, QMPError
from qmonitor.core.schema import ArgumentError, first_in_qdict_order

UNCHECKED_ARGUMENTS: Final = frozenset({"device_add"})
"""Commands whose arguments the schema does not describe fully (``'gen': false``)."""

_INT_RANGE: Final = range(-(2**63), 2**64)  # what QEMU's JSON parser reads as an integer
_BUILTIN_CHECKS: Final[dict[str, tuple[Callable[[object], bool], str]]] = {
    # json-type -> (accepts the value, the name QEMU's type error expects)
    "string": (lambda value: isinstance(value, str), "string"),
    "int": (lambda value: type(value) is int and value in _INT_RANGE, "integer"),
    "number": (lambda value: type(value) in (int, float), "number"),
    "boolean": (lambda value: type(value) is bool, "boolean"),
    "null": (lambda value: value is None, "null"),
    "value": (lambda value: True, "value"),
}
# The QType of a JSON value, as visit_start_alternate reads it to pick an alternate's branch.
_QTYPE_OF_JSON_TYPE: Final = {
    "string": "qstring",
    "int": "qnum",
    "number": "qnum",
    "boolean": "qbool",
    "null": "qnull",
}
_QTYPE_OF_META_TYPE: Final = {"enum": "qstring", "array": "qlist", "object": "qdict"}


class SchemaInfoError(QMonitorError, ValueError):
    """The SchemaInfo list is not one: a malformed entry or a type used but not defined."""


class IntrospectedSchema:
    """A ``query-qmp-schema`` reply, ready to check requests against (module docstring)."""

    def __init__(self, entries: Sequence[Mapping[str, Any]]) -> None:
        self._commands: dict[str, Mapping[str, Any]] = {}
        self._types: dict[str, Mapping[str, Any]] = {}
        for entry in entries:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise SchemaInfoError(f"query-qmp-schema: not a SchemaInfo entry: {entry!r}")
            meta_type = entry.get("meta-type")
            if meta_type == "command":
                self._commands[entry["name"]] = entry
            elif meta_type != "event":
                self._types[entry["name"]] = entry
        for name, entry in [*self._commands.items(), *self._types.items()]:
            for used in _types_used(entry):
                if used not in self._types:
                    raise SchemaInfoError(
                        f"query-qmp-schema: type '{used}' used by '{name}' is not defined"
                    )

    def has_command(self, name: str) -> bool:
        """Whether the schema has the command ``name``."""
        return name in self._commands

    def check_request(self, command: str, arguments: Mapping[str, Any], oob: bool) -> None:
        """Raise the :class:`QMPError` QEMU answers this request with, if any."""
        entry = self._commands.get(command)
        if entry is None:
            raise CommandNotFound(command)
        if oob and not entry.get("allow-oob", False):
            raise QMPError(f"The command {command} does not support OOB")
        if command not in UNCHECKED_ARGUMENTS:
            self._check_members(self._types[entry["arg-type"]], arguments)

    def _check(self, type_name: str, value: object) -> None:
        entry = self._types[type_name]
        meta_type = entry["meta-type"]
        if meta_type == "builtin":
            accepts, expected = _BUILTIN_CHECKS.get(entry["json-type"], _BUILTIN_CHECKS["value"])
            if not accepts(value):
                raise ArgumentError.invalid_type(expected)
        elif meta_type == "enum":
            if not isinstance(value, str):
                raise ArgumentError.invalid_type("string")
            if value not in entry["values"]:
                raise ArgumentError.invalid_enum_value(value)
        elif meta_type == "array":
            if not isinstance(value, list):
                raise ArgumentError.invalid_type("array")
            for index, element in enumerate(value):
                try:
                    self._check(entry["element-type"], element)
                except ArgumentError as error:
                    error.enclose(index)
                    raise
        elif meta_type == "object":
            if not isinstance(value, dict):
                raise ArgumentError.invalid_type("object")
            self._check_members(entry, value)
        elif meta_type == "alternate":
            self._check_alternate(entry, value)

    def _check_members(self, entry: Mapping[str, Any], value: Mapping[str, Any]) -> None:
        """An object's members in declaration order, a union's variant, then unexpected ones
        (the generated ``visit_type_T_members`` and ``visit_check_struct``)."""
        known: list[str] = []
        present = self._check_member_list(entry.get("members", []), value, known)
        if "variants" in entry:
            tag_value = value.get(entry["tag"])
            for variant in entry["variants"]:
                if variant["case"] == tag_value:
                    variant_entry = self._types[variant["type"]]
                    present += self._check_member_list(
                        variant_entry.get("members", []), value, known
                    )
                    break
        if present != len(value):
            raise ArgumentError.unexpected(first_in_qdict_order(value, known))

    def _check_member_list(
        self, members: Sequence[Mapping[str, Any]], value: Mapping[str, Any], known: list[str]
    ) -> int:
        present = 0
        for member in members:
            name = member["name"]
            known.append(name)
            if name not in value:
                if "default" not in member:  # introspect.py: optional members carry it
                    raise ArgumentError.missing(name)
                continue
            present += 1
            try:
                self._check(member["type"], value[name])
            except ArgumentError as error:
                error.enclose(name)
                raise
        return present

    def _check_alternate(self, entry: Mapping[str, Any], value: object) -> None:
        """The generated ``visit_type_ALTERNATE``: the branch for the value's JSON type."""
        branches = [self._types[member["type"]] for member in entry["members"]]
        qtype = _qtype(value)
        for branch in branches:
            if _branch_qtype(branch) == qtype:
                self._check(branch["name"], value)
                return
        json_types = sorted(b.get("json-type", "") for b in branches)
        name = "StrOrNull" if json_types == ["null", "string"] else entry["name"]
        raise ArgumentError("Invalid parameter type for '", f"', expected: {name}", bare_name=True)


def _qtype(value: object) -> str:
    if isinstance(value, str):
        return "qstring"
    if type(value) is bool:
        return "qbool"
    if isinstance(value, int | float):
        return "qnum"
    if value is None:
        return "qnull"
    return "qlist" if isinstance(value, list) else "qdict"


def _branch_qtype(branch: Mapping[str, Any]) -> str:
    if branch["meta-type"] == "builtin":
        return _QTYPE_OF_JSON_TYPE.get(branch["json-type"], "")
    return _QTYPE_OF_META_TYPE.get(branch["meta-type"], "")


def _types_used(entry: Mapping[str, Any]) -> list[str]:
    """The type names an entry refers to."""
    meta_type = entry.get("meta-type")
    try:
        if meta_type == "command":
            return [entry["arg-type"], entry["ret-type"]]
        if meta_type == "array":
            return [entry["element-type"]]
        if meta_type == "object":
            used = [member["type"] for member in entry.get("members", [])]
            return used + [variant["type"] for variant in entry.get("variants", [])]
        if meta_type == "alternate":
            return [member["type"] for member in entry["members"]]
        if meta_type in ("builtin", "enum"):
            return []
    except (KeyError, TypeError):
        pass
    raise SchemaInfoError(f"query-qmp-schema: malformed entry '{entry.get('name')}'")
