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

Deliberate differences from QEMU
================================
- Of QAPI's integer types ``int`` (int64), ``uint8/16/32/64`` and ``size`` exist; the signed
  sized ones (``int8``, ...) are left to handlers. The one alternate is ``StrOrNull``; unions
  with a discriminator are ``Variants`` (above); otherwise a Python union may only be
  ``T | None``.
- No ``features`` on types or members, only on commands and events.

Modules
=======
The package is cut along the way a type hint travels; each module imports only those above it.

- :mod:`.types`: the markers and aliases handlers write (``UInt64``, ``StrOrNull``, ``Variants``,
  ``QMPName``, ``Secret``, ...) and ``Parameter``;
- :mod:`.convert`: JSON -> Python converters and :class:`ArgumentError`; its docstring gives
  QEMU's rules for checking arguments, and their texts;
- :mod:`.encode`: Python -> JSON encoders; its docstring gives the rules for results;
- :mod:`.model`: the type model, one node per QAPI type;
- :mod:`.compile`: type hints -> the model, :func:`compile_signature`, :func:`encode_value`;
- :mod:`.introspect`: :class:`SchemaBuilder`; its docstring says how ``query-qmp-schema``
  entries are laid out and named, as QEMU does.

Names with a leading underscore are shared between these modules only; this ``__init__`` holds
the names the rest of qmonitor uses.
"""

from __future__ import annotations

from qmonitor.core.schema.compile import (
    CommandSignature,
    ReturnMember,
    compile_signature,
    encode_value,
)
from qmonitor.core.schema.convert import ArgumentError, first_in_qdict_order
from qmonitor.core.schema.introspect import SchemaBuilder
from qmonitor.core.schema.types import (
    JSON_NULL,
    MISSING,
    Parameter,
    QMPName,
    Secret,
    Size,
    StrOrNull,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Variants,
    secret_parameters,
)

__all__ = [
    "JSON_NULL",
    "MISSING",
    "ArgumentError",
    "CommandSignature",
    "Parameter",
    "QMPName",
    "ReturnMember",
    "SchemaBuilder",
    "Secret",
    "Size",
    "StrOrNull",
    "UInt8",
    "UInt16",
    "UInt32",
    "UInt64",
    "Variants",
    "compile_signature",
    "encode_value",
    "first_in_qdict_order",
    "secret_parameters",
]
