"""The checks QEMU's QAPI input visitors make on option dictionaries (qapi/qobject-input-visitor.c).

Options parsed into QAPI types (``-display``, ``-audiodev``, ``-object``) are checked member by
member in schema order: a required member that is missing, a value of the wrong type, an enum
value the type does not have, then any member the type does not have. The wording differs
between the two input forms: a keyval string (``none,gl=on``: every value is text, read as the
member's type) and JSON (``{"type": "none"}``: values must already have the right JSON type).
Only the members a caller names are checked, so a caller can check a union's common members
and leave its variant members alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from qmonitor.core.cutils import qapi_bool_parse
from qmonitor.core.errors import QMonitorError

# A member's type: "str", "bool", or the values of an enum.
MemberType = str | tuple[str, ...]
Member = tuple[str, MemberType, bool]  # name, type, required

STR: Final = "str"
BOOL: Final = "bool"


class QapiError(QMonitorError):
    """An input visitor's error, with QEMU's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def visit_members(data: Mapping[str, object], members: Sequence[Member], *, keyval: bool) -> None:
    """Visit ``members`` of ``data`` in order, raising QapiError as QEMU's visitor would."""
    for name, member_type, required in members:
        if name not in data:
            if required:
                raise QapiError(f"Parameter '{name}' is missing")
            continue
        value = data[name]
        if keyval:
            text = _keyval_scalar(name, value)
            if member_type == BOOL:
                if qapi_bool_parse(text) is None:
                    raise QapiError(f"Parameter '{name}' expects 'on' or 'off'")
                continue
        elif member_type == BOOL:
            if not isinstance(value, bool):
                raise QapiError(f"Invalid parameter type for '{name}', expected: boolean")
            continue
        elif not isinstance(value, str):
            raise QapiError(f"Invalid parameter type for '{name}', expected: string")
        else:
            text = value
        if isinstance(member_type, tuple) and text not in member_type:
            raise QapiError(f"Parameter '{name}' does not accept value '{text}'")


def _keyval_scalar(name: str, value: object) -> str:
    """qobject_input_get_keyval(): keyval leaves are strings; an object or list is unexpected."""
    if not isinstance(value, str):
        raise QapiError(f"Parameters '{name}.*' are unexpected")
    return value


def check_unexpected(data: Mapping[str, object], known: Sequence[str]) -> None:
    """qobject_input_check_struct(): the first member the type does not have."""
    for name in data:
        if name not in known:
            raise QapiError(f"Parameter '{name}' is unexpected")
