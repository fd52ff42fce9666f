"""Reading ``-object`` properties as QEMU 7.2 reads them, with its errors (sans I/O).

:mod:`qmonitor.cmdline` checks an ``-object`` option's ``qom-type`` and ``id`` and keeps its
other properties as given: typed values for the JSON form (``-object '{"qom-type": ...}'``),
text for the ``-object TYPE,key=value`` form. The objects qmonitor acts on (the authz objects,
``tls-creds-x509``) read their members here, in QAPI order, with the messages of QEMU's input
visitors (qapi/qobject-input-visitor.c, qapi/opts-visitor.c).

QEMU reports two kinds of error about an object: those found while its option is read are
printed after the option (``-object authz-simple,id=a: Parameter 'identity' is missing``),
those of its creation after the command line alone (``Unable to access credentials ...``).
:class:`ObjectError` says which; :func:`command_line_error` writes it as QEMU prints it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from typing import TypeVar

from qmonitor.cmdline import CommandLineError, QemuCommandLine
from qmonitor.core.cutils import qapi_bool_parse
from qmonitor.core.errors import QMonitorError

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


def objects_with_options(
    command_line: QemuCommandLine, qom_types: frozenset[str]
) -> Iterator[tuple[Mapping[str, object], str, bool]]:
    """The ``-object``s of the given types: (properties, the option's argument, keyval form).

    ``command_line.objects`` keeps the ``-object`` options' properties in the order of the
    ``-object`` entries of ``command_line.options``; the argument locates errors and tells the
    JSON form (it starts with ``{``) from the key=value form.
    """
    arguments = [argument or "" for name, argument in command_line.options if name == "object"]
    for properties, argument in zip(command_line.objects, arguments, strict=True):
        if str(properties["qom-type"]) in qom_types:
            yield properties, argument, not argument.startswith("{")


def command_line_error(error: ObjectError, argument: str) -> CommandLineError:
    """``error`` as QEMU prints it: after ``-object ARGUMENT:`` when it is located."""
    if error.located:
        return CommandLineError(f"-object {argument}: {error.message}")
    return CommandLineError(error.message)
