"""QAPI's sized unsigned integers and the StrOrNull alternate, as QEMU's visitors check them."""

from __future__ import annotations

from typing import Any

import pytest

from qmonitor import JSON_NULL, QMPError, StrOrNull, UInt8, UInt16, UInt32
from qmonitor.core.schema import SchemaBuilder, compile_signature


def _params(
    level: UInt8 | None = None,
    port: UInt16 | None = None,
    delay: UInt32 | None = None,
    creds: StrOrNull | None = None,
) -> None: ...


SIGNATURE = compile_signature(_params)


def error_of(arguments: dict[str, Any]) -> str:
    with pytest.raises(QMPError) as caught:
        SIGNATURE.convert_arguments(arguments)
    return caught.value.desc


@pytest.mark.parametrize(
    ("name", "maximum", "c_type"),
    [("level", 255, "uint8_t"), ("port", 65535, "uint16_t"), ("delay", 2**32 - 1, "uint32_t")],
)
def test_sized_unsigned_integers_are_read_as_uint64_then_bounded(
    name: str, maximum: int, c_type: str
) -> None:
    assert SIGNATURE.convert_arguments({name: maximum})[name] == maximum
    assert SIGNATURE.convert_arguments({name: 0})[name] == 0
    # visit_type_uintN: over the maximum, or negative (taken modulo 2**64 by the uint64 visit).
    assert error_of({name: maximum + 1}) == f"Parameter '{name}' expects {c_type}"
    assert error_of({name: -1}) == f"Parameter '{name}' expects {c_type}"
    # Not a number at all: the uint64 visit's own text.
    assert error_of({name: "1"}) == f"Parameter '{name}' expects uint64"


def test_str_or_null_takes_a_string_or_null_and_null_differs_from_absence() -> None:
    assert SIGNATURE.convert_arguments({"creds": "tls0"})["creds"] == "tls0"
    assert SIGNATURE.convert_arguments({"creds": None})["creds"] is JSON_NULL
    assert SIGNATURE.convert_arguments({})["creds"] is None
    for wrong in (5, True, [], {}):
        assert error_of({"creds": wrong}) == (
            "Invalid parameter type for 'creds', expected: StrOrNull"
        )


def test_schema_publishes_the_sized_types_and_the_alternate() -> None:
    builder = SchemaBuilder()
    builder.add_command("params", SIGNATURE)
    entries = builder.entries()
    by_name = {entry["name"]: entry for entry in entries}
    (arguments,) = [entry for entry in entries if entry["name"] == "0"]
    types = {member["name"]: member["type"] for member in arguments["members"]}  # type: ignore[union-attr]
    # QEMU publishes every integer type as int (scripts/qapi/introspect.py _use_type).
    assert types["level"] == types["port"] == types["delay"] == "int"
    alternate = by_name[types["creds"]]
    assert alternate == {
        "name": types["creds"],
        "meta-type": "alternate",
        "members": [{"type": "str"}, {"type": "null"}],
    }
    assert by_name["null"] == {"name": "null", "meta-type": "builtin", "json-type": "null"}
    assert by_name["int"] == {"name": "int", "meta-type": "builtin", "json-type": "int"}
    assert "uint8" not in by_name
