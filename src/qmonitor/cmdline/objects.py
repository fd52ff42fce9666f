"""Reading ``-object`` properties as QEMU 7.2 reads them, with its errors (sans I/O).

:mod:`qmonitor.cmdline` checks an ``-object`` option's members against QEMU's schema
(:mod:`qmonitor.cmdline.qom_members`) and keeps them as given: typed values for the JSON form
(``-object '{"qom-type": ...}'``), text for the ``-object TYPE,key=value`` form. The objects
qmonitor acts on (the authz objects, ``tls-creds-x509``) read their members here instead, in
QAPI order, with the messages of QEMU's input visitors (qapi/qobject-input-visitor.c,
qapi/opts-visitor.c).

QEMU looks at an object twice (softmmu/vl.c). While the option loop reads ``-object`` it
visits the object's properties (``object_option_parse``: QAPI's ``visit_type_ObjectOptions``),
so a bad property is reported there, after the option
(``-object authz-simple,id=a: Parameter 'identity' is missing``), before any later option is
read. After the loop, ``qemu_create_early_backends`` creates the objects (all the types here:
``object_create_early``), in command-line order, before any chardev; their errors are printed
alone (``Unable to access credentials ...``). An :class:`ObjectMaker` is called at those two
moments by :func:`qmonitor.cmdline.parse_command_line`, which does no I/O itself: the maker is
the layer that does. :class:`ObjectError` says whether QEMU prints an error after the option.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Final, Protocol, TypeVar

from qmonitor.core.cutils import qapi_bool_parse
from qmonitor.core.errors import QMonitorError
from qmonitor.core.record import Record

_E = TypeVar("_E", bound=StrEnum)


class ObjectError(QMonitorError, ValueError):
    """An object QEMU refuses; ``str()`` is QEMU's message.

    ``located`` is true for an error QEMU prints after the ``-object`` option (found while the
    option's properties are read), false for one of the object's creation.
    """

    def __init__(self, message: str, *, located: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.located = located


class PropertyVisitor:
    """The checks of QEMU's input visitors on one object's members, with QEMU's texts.

    ``keyval`` is the ``-object key=value`` form, where every value is text read as the
    member's type; otherwise values are typed JSON. Names in errors are full paths
    (``rules[1].policy``), except in an enum's error, which QEMU words with the member's own
    name.
    """

    def __init__(self, *, keyval: bool) -> None:
        self.keyval = keyval

    @staticmethod
    def missing(path: str) -> ObjectError:
        """``Parameter 'PATH' is missing``."""
        return ObjectError(f"Parameter '{path}' is missing")

    def string(self, data: Mapping[str, object], name: str, path: str) -> str | None:
        """A ``str`` member, None when absent."""
        if name not in data:
            return None
        value = data[name]
        if isinstance(value, str):
            return value
        if self.keyval:
            raise ObjectError(f"Parameters '{path}.*' are unexpected")
        raise ObjectError(f"Invalid parameter type for '{path}', expected: string")

    def required_string(self, data: Mapping[str, object], name: str, path: str) -> str:
        """A required ``str`` member."""
        value = self.string(data, name, path)
        if value is None:
            raise self.missing(path)
        return value

    def boolean(self, data: Mapping[str, object], name: str, path: str) -> bool | None:
        """A ``bool`` member (``on``/``off``... as text), None when absent."""
        if name not in data:
            return None
        value = data[name]
        if self.keyval:
            flag = qapi_bool_parse(self.required_string(data, name, path))
            if flag is None:
                raise ObjectError(f"Parameter '{name}' expects 'on' or 'off'")
            return flag
        if not isinstance(value, bool):
            raise ObjectError(f"Invalid parameter type for '{path}', expected: boolean")
        return value

    def enum(self, data: Mapping[str, object], name: str, path: str, enum: type[_E]) -> _E | None:
        """An enum member, None when absent."""
        text = self.string(data, name, path)
        if text is None:
            return None
        try:
            return enum(text)
        except ValueError:
            raise ObjectError(f"Parameter '{name}' does not accept value '{text}'") from None

    def unexpected(
        self, data: Mapping[str, object], known: Sequence[str], prefix: str = ""
    ) -> None:
        """The first member the type does not have (``visit_check_struct``).

        The key=value form is read by QEMU's opts visitor, whose wording differs for the
        object's own members (``Invalid parameter 'foo'``).
        """
        for name in data:
            if name not in known:
                if self.keyval and not prefix:
                    raise ObjectError(f"Invalid parameter '{name}'")
                raise ObjectError(f"Parameter '{prefix}{name}' is unexpected")


BASE_MEMBERS = ("qom-type", "id")
"""qapi/qom.json ObjectOptions' common members, checked by :mod:`qmonitor.cmdline`."""


def members_of(properties: Mapping[str, object]) -> dict[str, object]:
    """An object's own members: its properties without ``qom-type`` and ``id``."""
    return {key: value for key, value in properties.items() if key not in BASE_MEMBERS}


class ObjectOption(Record):
    """One ``-object`` option: its properties, and its argument as given (which locates its
    errors and tells the JSON form, starting with ``{``, from the key=value form)."""

    __slots__ = ("argument", "properties")

    properties: Final[Mapping[str, object]]
    argument: Final[str]

    def __init__(self, properties: Mapping[str, object], argument: str) -> None:
        self.properties = properties
        self.argument = argument

    @property
    def keyval(self) -> bool:
        """The ``-object TYPE,key=value`` form (every value text), not JSON."""
        return not self.argument.startswith("{")


class ObjectMaker(Protocol):
    """Makes the ``-object`` types in :attr:`qom_types`, at QEMU's two moments (see above).

    Both methods raise :class:`ObjectError`; ``parse_command_line`` turns it into QEMU's
    :class:`~qmonitor.cmdline.errors.CommandLineError`, after the option when it is located.
    """

    @property
    def qom_types(self) -> frozenset[str]:
        """The types this maker reads and creates; other objects are only recorded."""
        ...

    def read(self, option: ObjectOption) -> None:
        """Check the option's properties as the option loop reads it (no I/O)."""
        ...

    def create(self, option: ObjectOption) -> None:
        """Create the object (files read, contexts made), after the loop, before chardevs."""
        ...
