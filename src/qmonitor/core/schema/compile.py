"""Type hints -> the type model and a command's signature (:func:`compile_signature`).

:func:`compile_signature` reads a handler's type hints once, at registration, into
:class:`CommandSignature`: its ``convert_arguments`` and ``encode_return`` closures, and its part
of ``query-qmp-schema`` (for :class:`~qmonitor.core.schema.introspect.SchemaBuilder`). The
builtin types are here too, with :func:`encode_value`: encoding a value typed ``Any`` may compile
a dataclass met at run time, so it sits with the compiler.

:mod:`dataclasses` is imported by the functions that read a dataclass, not with this module: a
program imports the compiler to register its commands before its greeting, and compiles their
signatures later (at first use), so the module's import is not paid before the greeting
(docs/PERFORMANCE.md, start-up, fourth round). Compiling runs once per command; the import
statement then finds the module in ``sys.modules``.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Annotated, Any, Final, NotRequired, Required, Union

from qmonitor.core.record import Record
from qmonitor.core.schema.convert import (
    _ArgumentError,
    _ArgumentsConverter,
    _Branch,
    _convert_any_object,
    _convert_bool,
    _convert_int,
    _convert_no_arguments,
    _convert_number,
    _convert_str,
    _convert_str_or_null,
    _convert_uint64,
    _identity,
    _members_converter,
    _sized_unsigned_converter,
    _Step,
    _union_converter,
)
from qmonitor.core.schema.encode import (
    _dataclass_encoder,
    _encode_nothing,
    _Encoder,
    _typeddict_encoder,
)
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
from qmonitor.core.schema.types import (
    _REQUIRED,
    _SKIP,
    _UNSIGNED_MAXIMA,
    MISSING,
    Parameter,
    QMPName,
    Variants,
    _Alternate,
    _IntegerKind,
)

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
    encoder = _dataclass_encoders.get(value_type)
    if encoder is not None:
        return encoder(value)
    import dataclasses  # a dataclass met for the first time, or no dataclass

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
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
        import dataclasses  # (module docstring)

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
        """The node of ``Annotated[base_class, variants]`` ("Unions" in the package docstring)."""
        key = ("union", base_class, variants)
        node = self._unions.get(key)
        if node is not None:
            return node
        import dataclasses  # (module docstring)

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
        import dataclasses  # (module docstring)

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


class ReturnMember(Record):
    """One member of a dataclass result, for writers that encode results straight to text.

    ``json_type`` is ``"boolean"``, ``"integer"``, ``"string"``, ``"enum"`` (a str enum) or
    ``"other"``; ``encode`` turns a member value of type ``"other"`` into JSON-able data (None:
    it already is).
    """

    __slots__ = ("encode", "json_type", "omit_if_none", "python_name", "qmp_name")

    python_name: Final[str]
    qmp_name: Final[str]
    json_type: Final[str]
    encode: Final[_Encoder | None]
    omit_if_none: Final[bool]

    def __init__(
        self,
        python_name: str,
        qmp_name: str,
        json_type: str,
        encode: _Encoder | None,
        omit_if_none: bool,
    ) -> None:
        self.python_name = python_name
        self.qmp_name = qmp_name
        self.json_type = json_type
        self.encode = encode
        self.omit_if_none = omit_if_none


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
        import dataclasses  # (module docstring)

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
