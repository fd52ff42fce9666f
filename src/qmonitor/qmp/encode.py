"""JSON output exactly as QEMU writes it (qobject/json-writer.c, qobject/qdict.c).

Three details make QEMU's output what it is, and clients have been written against each:

* Separators are ``", "`` and ``": "`` (``{"return": {}}``), one message per line, ``\\r\\n``
  after it (monitor/qmp.c ``qmp_send_response``).
* Output is ASCII: every code point outside 0x20..0x7E is written as an upper-case ``\\uXXXX``
  escape (surrogate pairs beyond the BMP); only ``"``, ``\\``, ``\\b``, ``\\f``, ``\\n``,
  ``\\r`` and ``\\t`` get short escapes. Doubles are printed with ``%.17g``.
* Object members come out in QDict iteration order, not insertion order: a QDict is a hash
  table of 512 buckets (``QDICT_BUCKET_MAX``) walked from bucket 0 up, and within a bucket the
  member inserted last comes first (``QLIST_INSERT_HEAD``). That is why QEMU sends
  ``{"return": {}, "id": 1}`` but ``{"id": 1, "error": ...}``. We reproduce the order from
  QEMU's ``tdb_hash`` so that replies match QEMU's byte for byte.

A monitor made with ``pretty=on`` (``-qmp-pretty``) writes the same messages in json-writer.c's
pretty mode instead: see :func:`pretty_json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Final

from qmonitor.core.qdict import member_order
from qmonitor.core.schema import CommandSignature, ReturnMember

# json's C string encoder gives the short escapes QEMU uses and \\uxxxx (lower case) for the
# rest; QEMU additionally escapes DEL and writes hex digits in upper case.
_encode_ascii_string: Callable[[str], str] = json.encoder.encode_basestring_ascii
_NEEDS_FIXUP = re.compile(r"\\\\|\\u[0-9a-f]{4}|\x7f")  # an escaped backslash is skipped whole


def _fixup(match: re.Match[str]) -> str:
    text = match.group()
    if text == "\\\\":
        return text
    return "\\u007F" if text == "\x7f" else "\\u" + text[2:].upper()


def quoted_string(text: str) -> str:
    """``text`` as QEMU's ``quoted_str`` writes it."""
    quoted = _encode_ascii_string(text)
    if "\\u" in quoted or "\x7f" in quoted:
        return _NEEDS_FIXUP.sub(_fixup, quoted)
    return quoted


def _format_double(value: float) -> str:
    return "%.17g" % value  # noqa: UP031 - the exact printf format json-writer.c uses


def _encode(value: object, out: list[str]) -> None:
    # The order of the checks is the order of how common the types are in replies.
    if isinstance(value, str):
        out.append(quoted_string(value))
    elif isinstance(value, dict):
        _encode_dict(value, out)
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif value is None:
        out.append("null")
    elif isinstance(value, float):
        out.append(_format_double(value))
    elif isinstance(value, list | tuple):
        _encode_list(value, out)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _encode_dict(value: Mapping[str, object], out: list[str]) -> None:
    if not value:
        out.append("{}")
        return
    keys = tuple(value)
    values = list(value.values())
    out.append("{")
    first = True
    for position in member_order(keys):
        if not first:
            out.append(", ")
        first = False
        out.append(quoted_string(keys[position]))
        out.append(": ")
        _encode(values[position], out)
    out.append("}")


def _encode_list(value: Sequence[object], out: list[str]) -> None:
    if not value:
        out.append("[]")
        return
    out.append("[")
    first = True
    for item in value:
        if not first:
            out.append(", ")
        first = False
        _encode(item, out)
    out.append("]")


def _encode_deep(value: object, out: list[str]) -> None:
    """The same output as :func:`_encode`, without recursion, for values nested too deeply
    for Python's stack (a client may send ids nested 1024 deep, and we echo them)."""
    pending: list[object] = [value]
    while pending:
        item = pending.pop()
        if type(item) is _Text:
            out.append(item)
        elif isinstance(item, dict) and item:
            keys = tuple(item)
            values = list(item.values())
            parts: list[object] = [_Text("{")]
            for number, position in enumerate(member_order(keys)):
                prefix = ", " if number else ""
                parts.append(_Text(f"{prefix}{quoted_string(keys[position])}: "))
                parts.append(values[position])
            parts.append(_Text("}"))
            pending.extend(reversed(parts))
        elif isinstance(item, list | tuple) and item:
            parts = [_Text("[")]
            for number, element in enumerate(item):
                if number:
                    parts.append(_Text(", "))
                parts.append(element)
            parts.append(_Text("]"))
            pending.extend(reversed(parts))
        else:
            _encode(item, out)


class _Text(str):
    """Output text queued by :func:`_encode_deep` (as opposed to a value still to encode)."""

    __slots__ = ()


def encode_json(value: object) -> str:
    """``value`` (JSON-able Python data) as QEMU's non-pretty ``qobject_to_json`` writes it."""
    out: list[str] = []
    try:
        _encode(value, out)
    except RecursionError:
        out = []
        _encode_deep(value, out)
    return "".join(out)


def encode_message(message: Mapping[str, object], pretty: bool = False) -> bytes:
    """One QMP output message: the JSON text followed by CRLF (monitor/qmp.c), pretty-printed
    for a ``pretty=on`` monitor."""
    text = encode_json(message)
    return ((pretty_json(text) if pretty else text) + "\r\n").encode("ascii")


# Outside strings, QEMU's compact text holds structure only in these tokens; a string is taken
# whole so that brackets and ", " inside it are left alone.
_LAYOUT_TOKEN = re.compile(r'(\{\}|\[\]|[{\[]|[}\]]|, )|"(?:[^"\\]|\\.)*"|[^"{}\[\],]+|.')
_INDENT = "    "


def pretty_json(text: str) -> str:
    """QEMU's compact JSON ``text`` (:func:`encode_json`) laid out as json-writer.c's pretty
    mode writes the same value (``qobject_to_json_pretty(obj, true)``).

    json-writer.c's rules: a member or element starts a new line indented 4 spaces per open
    container (``pretty_newline``: ``"\\n%*s"``, ``container->len * 4``); ``,`` ends the line
    before the next one (``maybe_comma_name``); a closing bracket goes on its own line at its
    container's own indent, even for an empty container (``{``, newline, ``}``: there is no
    special case for empty ones). Names are followed by ``": "`` as in compact mode. The
    monitor turns every ``\\n`` into ``\\r\\n`` (monitor_puts); a string never holds a raw
    newline (it is escaped), so all of them are line ends.

    The layout is applied to the compact text rather than to the value: the compact text is
    what every writer here produces (the envelopes, :func:`result_writer`'s generated
    writers, events), already in QDict order, and its structure is unambiguous outside
    strings, so one pass gives the same bytes as writing the value in pretty mode.
    """
    out: list[str] = []
    depth = 0
    for match in _LAYOUT_TOKEN.finditer(text):
        token = match.group()
        if match.group(1) is None:
            out.append(token)
        elif token == ", ":
            out.append(",\r\n" + _INDENT * depth)
        elif len(token) == 2:  # an empty container
            out.append(f"{token[0]}\r\n{_INDENT * depth}{token[1]}")
        elif token in "{[":
            depth += 1
            out.append(token + "\r\n" + _INDENT * depth)
        else:
            depth = max(depth - 1, 0)
            out.append("\r\n" + _INDENT * depth + token)
    return "".join(out)


def pretty_lines(data: bytes) -> bytes:
    """Output ``data`` (whole compact messages, each ending in CRLF) as a ``pretty=on`` monitor
    writes it: each message laid out by :func:`pretty_json`."""
    lines = data.decode("ascii").split("\r\n")
    return "\r\n".join(pretty_json(line) for line in lines).encode("ascii")


_INLINE_WRITERS = {
    # How a member of a declared JSON type is written, as an expression of ``{v}`` (the value,
    # bound once); anything unexpected (None included) goes through the generic writer ``G``.
    "boolean": "('true' if {v} is True else 'false' if {v} is False else G({v}))",
    "integer": "(str({v}) if type({v}) is int else G({v}))",
    "string": "(Q({v}) if type({v}) is str else G({v}))",
    # An enum member's text is written once and kept (T, by member; N writes and keeps it).
    "enum": "((T.get({v}) or N({v})) if isinstance({v}, Enum) else G({v}))",
}
_ENUM_TEXTS: dict[Enum, str] = {}
# Member types whose values cannot change (a frozen dataclass of them cannot either).
_IMMUTABLE_JSON_TYPES: Final = frozenset(("boolean", "integer", "string", "enum"))
_NOTHING: Final = object()  # a writer's last result before the first


def _enum_text(member: Enum) -> str:
    """An enum member's value as JSON text, kept for the next result that holds it."""
    text = _ENUM_TEXTS[member] = quoted_string(member._value_)  # .value is a descriptor
    return text


def _compiled_writer(
    steps: list[tuple[str, str, ReturnMember]], remember_last: bool = False
) -> Callable[[object], str]:
    """A writer for one dataclass, generated from its member list (in QDict order).

    As the dataclasses module does for ``__init__``, the code is built from the fields: without
    optional members it is one string concatenation; with them, one statement per member that
    leaves out a None optional member (QAPI's absent member). No call per member for the
    common JSON types. With ``remember_last`` the writer keeps its last result and text, and
    answers the same result object again with the same text (see :func:`result_writer`).
    """
    namespace: dict[str, object] = {
        "G": encode_json,
        "Q": quoted_string,
        "Enum": Enum,
        "T": _ENUM_TEXTS,
        "N": _enum_text,
        "L": [_NOTHING, ""],  # the last result written, and its text
    }
    fetches, expressions = [], []
    for number, (_, python_name, member) in enumerate(steps):
        expression = _INLINE_WRITERS.get(member.json_type)
        if expression is None:
            namespace[f"E{number}"] = member.encode or (lambda item: item)
            expression = "('null' if {v} is None else G(E%d({v})))" % number  # noqa: UP031
        fetches.append(f"v{number} = result.{python_name}")
        expressions.append(expression.format(v=f"v{number}"))
    lines = ["def write(result):"]
    if remember_last:
        lines.append("    if result is L[0]: return L[1]")
    lines += [f"    {fetch}" for fetch in fetches]
    if not any(member.omit_if_none for _, _, member in steps):
        pieces = [
            repr(("{" if number == 0 else ", ") + key_text) + " + " + expression
            for number, ((key_text, _, _), expression) in enumerate(
                zip(steps, expressions, strict=True)
            )
        ]
        lines.append("    text = " + (" + ".join(pieces) + " + '}'" if pieces else "'{}'"))
    else:
        lines.append("    parts = []")
        for number, ((key_text, _, member), expression) in enumerate(
            zip(steps, expressions, strict=True)
        ):
            append = f"parts.append({key_text!r} + {expression})"
            if member.omit_if_none:
                lines.append(f"    if v{number} is not None: {append}")
            else:
                lines.append(f"    {append}")
        lines.append("    text = '{' + ', '.join(parts) + '}'")
    if remember_last:
        lines.append("    L[0] = result; L[1] = text")
    lines.append("    return text")
    exec("\n".join(lines) + "\n", namespace)
    return namespace["write"]  # type: ignore[return-value]


def result_writer(signature: CommandSignature) -> Callable[[object], str]:
    """A function writing a handler's result straight to QEMU's JSON text.

    Equal to ``encode_json(signature.encode_return(result))``, but for a dataclass result it
    skips building the intermediate dict: members are written in QDict order from attributes.
    This is the hot path of every typed sync command (``query-status`` and the like).

    A frozen dataclass whose members are all booleans, integers, strings and enum members
    cannot change once made, so its text cannot either: the writer remembers the last one it
    wrote, and a handler that answers with an object it keeps (``query-status``, one per run
    state) has its text written once, not per request.
    """
    if signature.return_type is None:
        return lambda result: "{}"
    members = signature.return_members()
    encode_return = signature.encode_return
    if members is None:
        return lambda result: encode_json(encode_return(result))
    order = member_order(tuple(member.qmp_name for member in members))
    params = getattr(signature.return_type, "__dataclass_params__", None)
    immutable = getattr(params, "frozen", False) and all(
        member.json_type in _IMMUTABLE_JSON_TYPES for member in members
    )
    return _compiled_writer(
        [
            (quoted_string(members[p].qmp_name) + ": ", members[p].python_name, members[p])
            for p in order
        ],
        remember_last=immutable,
    )
