"""keyval: QEMU's newer ``KEY=VALUE,...`` syntax with dotted keys (util/keyval.c), sans I/O.

Used where QEMU parses an option straight into QAPI types: ``-machine``, ``-smp``, ``-boot``,
``-display``, ``-audiodev`` (and, through the same machine dictionary, ``-m``). Its grammar,
from keyval.c::

    key-vals     = [ key-val { ',' key-val } [ ',' ] ]
    key-val      = key '=' val | help
    key          = key-fragment { '.' key-fragment }
    key-fragment = qapi-name | index
    qapi-name    = '__' / [a-z0-9.-]+ / '_' / [A-Za-z][A-Za-z0-9_-]* /
    index        = / [0-9]+ /
    val          = { / [^,]+ / | ',,' }
    help         = 'help' | '?'

A dotted key builds nested objects (``a.b=1`` is ``{"a": {"b": "1"}}``), numeric fragments
build lists (``a.0=x,a.1=y``), every leaf is a string, and the first parameter may omit its key
when the option has an implied one (``-smp 4`` is ``cpus=4``). Unlike QemuOpts there are no
flags: ``foo`` alone is an error unless it is the implied key's value.

The result is a plain ``dict`` of ``str``, ``dict`` and ``list``. QEMU's QDict iterates in
hash order; where that decides which of two errors comes first, this follows insertion order.
"""

from __future__ import annotations

from typing import Final

from qmonitor.core.cutils import qemu_strtou64
from qmonitor.core.errors import QMonitorError

KeyvalDict = dict[str, object]

# keyval.c keyval_parse_one(): char key_in_cur[128], so fragments of 128 bytes or more fail.
MAX_FRAGMENT_LENGTH: Final = 127
_INT_MAX: Final = (1 << 31) - 1


class KeyvalError(QMonitorError):
    """A keyval syntax error, with QEMU's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _key_to_index(key: str, start: int) -> tuple[int, int]:
    """keyval.c key_to_index() with an end pointer: (index or -1, end of the digits)."""
    if not key[start : start + 1].isascii() or not key[start : start + 1].isdigit():
        return -1, start
    end = start
    while end < len(key) and "0" <= key[end] <= "9":
        end += 1
    conversion = qemu_strtou64(key[start:end], 10)
    return min(conversion.value, _INT_MAX), end


def _whole_key_index(key: str) -> int:
    """key_to_index() without an end pointer: the index, or -1 if ``key`` is not all digits."""
    index, end = _key_to_index(key, 0)
    return index if end == len(key) and index >= 0 else -1


def _is_alpha(char: str) -> bool:
    return ("a" <= char <= "z") or ("A" <= char <= "Z")


def _is_alnum(char: str) -> bool:
    return _is_alpha(char) or ("0" <= char <= "9")


def parse_qapi_name(text: str, start: int) -> int:
    """qapi/qapi-util.c parse_qapi_name(str, false): the length of the name at ``start``, or -1."""
    position = start
    end = len(text)
    if position < end and text[position] == "_":  # downstream __RFQDN_
        position += 1
        if position >= end or text[position] != "_":
            return -1
        position += 1
        while position < end and (_is_alnum(text[position]) or text[position] in "-."):
            position += 1
        if position >= end or text[position] != "_":
            return -1
        position += 1
    if position >= end or not _is_alpha(text[position]):
        return -1
    position += 1
    while position < end and (_is_alnum(text[position]) or text[position] in "-_"):
        position += 1
    return position - start


def _starts_with_help_option(text: str) -> int:
    """include/qemu/help_option.h starts_with_help_option()."""
    if text.startswith("?"):
        return 1
    if text.startswith("help"):
        return 4
    return 0


def _put(current: KeyvalDict, fragment: str, value: str | None, key_shown: str) -> KeyvalDict | str:
    """keyval.c keyval_parse_put(): map ``fragment`` to ``value`` (None: to an object)."""
    old = current.get(fragment)
    if old is not None:
        # A list (from an earlier -machine, already listified) conflicts with both.
        if not isinstance(old, dict if value is None else str):
            raise KeyvalError(f"Parameters '{key_shown}.*' used inconsistently")
        if isinstance(old, dict):
            return old
    new: KeyvalDict | str = {} if value is None else value
    current[fragment] = new
    return new


def _parse_one(
    qdict: KeyvalDict, params: str, start: int, implied_key: str | None
) -> tuple[int, bool]:
    """keyval.c keyval_parse_one(): (index of the next parameter, whether it asked for help)."""
    length = start
    while length < len(params) and params[length] not in "=,":
        length += 1
    length -= start
    key = params
    key_start = start
    value_end = -1
    if length and (start + length == len(params) or params[start + length] != "="):
        if _starts_with_help_option(params[start:]) == length:
            position = start + length
            if position < len(params) and params[position] == ",":
                position += 1
            return position, True
        if implied_key is not None:
            key = implied_key
            key_start = 0
            value_end = start + length
            length = len(implied_key)
    key_end = key_start + length
    current = qdict
    fragment_start = key_start
    fragment = ""
    while True:
        index, index_end = (
            _key_to_index(key, fragment_start) if fragment_start != key_start else (-1, 0)
        )
        if index >= 0:
            fragment_length = index_end - fragment_start
        else:
            fragment_length = max(parse_qapi_name(key[:key_end], fragment_start), 0)
        after = fragment_start + fragment_length
        if not fragment_length or (after < key_end and key[after] != "."):
            raise KeyvalError(f"Invalid parameter '{key[key_start:key_end]}'")
        if fragment_length > MAX_FRAGMENT_LENGTH:
            whole = fragment_start == key_start and after == key_end
            raise KeyvalError(
                f"Parameter{'' if whole else ' fragment'} '{key[fragment_start:after]}' is too long"
            )
        if fragment_start != key_start:
            nested = _put(current, fragment, None, key[key_start : fragment_start - 1])
            assert isinstance(nested, dict)
            current = nested
        fragment = key[fragment_start:after]
        fragment_start = after
        if fragment_start >= key_end or key[fragment_start] != ".":
            break
        fragment_start += 1
    if value_end >= 0:
        value = params[start:value_end]
        position = value_end
        if position < len(params) and params[position] == ",":
            position += 1
    else:
        if fragment_start >= len(params) or params[fragment_start] != "=":
            raise KeyvalError(f"Expected '=' after parameter '{params[key_start:fragment_start]}'")
        position = fragment_start + 1
        pieces = []
        while position < len(params):
            if params[position] == ",":
                position += 1
                if position >= len(params) or params[position] != ",":
                    break
            pieces.append(params[position])
            position += 1
        value = "".join(pieces)
    _put(current, fragment, value, key[key_start:key_end])
    return position, False


def _reassemble(path: list[str]) -> str:
    return "".join(f"{fragment}." for fragment in path)


def _listify(current: KeyvalDict, path: list[str]) -> KeyvalDict | list[object]:
    """keyval.c keyval_listify(): objects whose keys are all indexes become lists."""
    has_index = False
    has_member = False
    for fragment, value in list(current.items()):
        if _whole_key_index(fragment) >= 0:
            has_index = True
        else:
            has_member = True
        if isinstance(value, dict):
            current[fragment] = _listify(value, [*path, fragment])
    if has_index and has_member:
        raise KeyvalError(f"Parameters '{_reassemble(path)}*' used inconsistently")
    if not has_index:
        return current
    slots = len(current) + 1  # one extra, as QEMU's sentinel
    elements: list[object | None] = [None] * slots
    max_index = -1
    for fragment, value in current.items():
        index = _whole_key_index(fragment)
        max_index = max(max_index, index)
        if index < slots - 1:
            elements[index] = value
    listed: list[object] = []
    for index in range(min(slots, max_index + 1)):
        element = elements[index]
        if element is None:
            raise KeyvalError(f"Parameter '{_reassemble(path)}{index}' missing")
        listed.append(element)
    return listed


def keyval_parse_into(
    qdict: KeyvalDict, params: str, implied_key: str | None, *, help_allowed: bool
) -> bool:
    """keyval.c keyval_parse_into(): parse ``params`` into ``qdict``; return whether help was asked.

    With ``help_allowed`` false (QEMU's null ``p_help``) a help request is the error "Help is
    not available for this option". On error, ``qdict`` may hold what was parsed before it.
    """
    position = 0
    wants_help = False
    while position < len(params):
        position, asked = _parse_one(qdict, params, position, implied_key)
        wants_help = wants_help or asked
        implied_key = None
    if wants_help and not help_allowed:
        raise KeyvalError("Help is not available for this option")
    listified = _listify(qdict, [])
    assert listified is qdict
    return wants_help


def keyval_parse(params: str, implied_key: str | None, *, help_allowed: bool) -> KeyvalDict:
    """keyval.c keyval_parse() into a new dictionary (help requests raise if not allowed)."""
    qdict: KeyvalDict = {}
    keyval_parse_into(qdict, params, implied_key, help_allowed=help_allowed)
    return qdict


def keyval_merge(dest: KeyvalDict, merged: KeyvalDict, path: str = "") -> None:
    """keyval.c keyval_merge(): objects merge, lists concatenate, strings are replaced."""
    for key, value in merged.items():
        old = dest.get(key)
        if old is not None:
            if type(old) is not type(value):
                raise KeyvalError(f"Parameter '{path}{key}' used inconsistently")
            if isinstance(value, dict):
                assert isinstance(old, dict)
                keyval_merge(old, value, f"{path}{key}.")
                continue
            if isinstance(value, list):
                assert isinstance(old, list)
                old.extend(value)
                continue
        dest[key] = value
