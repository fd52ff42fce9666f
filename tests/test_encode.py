"""The output writer: QEMU's bytes exactly (json-writer.c, QDict member order)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from hypothesis import given, settings
from hypothesis import strategies as st

from qmonitor.core.schema import compile_signature
from qmonitor.qmp.encode import encode_json, encode_message, result_writer


def test_members_come_out_in_qemu_qdict_order() -> None:
    # Recorded from QEMU 7.2.22.
    assert encode_message({"return": {}, "id": 5}) == b'{"return": {}, "id": 5}\r\n'
    assert encode_message({"error": {"class": "GenericError", "desc": "x"}, "id": 5}) == (
        b'{"id": 5, "error": {"class": "GenericError", "desc": "x"}}\r\n'
    )
    assert encode_json({"running": True, "singlestep": False, "status": "running"}) == (
        '{"status": "running", "singlestep": false, "running": true}'
    )
    assert encode_json({"major": 7, "minor": 2, "micro": 22}) == (
        '{"micro": 22, "minor": 2, "major": 7}'
    )


def test_strings_are_ascii_with_upper_case_escapes() -> None:
    # Recorded from QEMU 7.2.22: "The command x-y\u00E9\u007F has not been found".
    assert encode_json("x-y\u00e9\x7f") == '"x-y\\u00E9\\u007F"'
    assert encode_json("\U0001f600") == '"\\uD83D\\uDE00"'
    assert encode_json('"\\\b\f\n\r\t/') == '"\\"\\\\\\b\\f\\n\\r\\t/"'
    assert encode_json("\\ud800") == '"\\\\ud800"'  # an escaped backslash stays as it is


def test_doubles_are_printed_with_17_significant_digits() -> None:
    # Recorded from QEMU 7.2.22, echoing the id [0.1,1.0,-0.0,2.5e300].
    assert encode_json([0.1, 1.0, -0.0, 2.5e300]) == (
        "[0.10000000000000001, 1, -0, 2.5000000000000001e+300]"
    )


def test_values_nested_deeper_than_the_python_stack_are_written() -> None:
    deep: list[object] = []
    innermost = deep
    for _ in range(1100):
        inner: list[object] = []
        innermost.append(inner)
        innermost = inner
    assert encode_json({"id": deep}) == '{"id": ' + "[" * 1101 + "]" * 1101 + "}"


class Colour(StrEnum):
    RED = "red"


@dataclass
class Inner:
    depth: int


@dataclass
class Everything:
    flag: bool
    count: int
    name: str
    colour: Colour
    inner: Inner
    items: list[Inner]
    maybe: str | None = None
    renamed_member: float = field(default=0.5, metadata={"qmp_name": "renamed"})


def test_result_writer_equals_the_generic_path() -> None:
    def command() -> Everything: ...

    signature = compile_signature(command)
    write = result_writer(signature)
    for value in (
        Everything(True, 3, "n\u00e9", Colour.RED, Inner(1), [Inner(2), Inner(3)]),
        Everything(False, -1, "", Colour.RED, Inner(0), [], maybe="here", renamed_member=1.5),
    ):
        assert write(value) == encode_json(signature.encode_return(value))


@dataclass
class NoOptionalMembers:
    flag: bool
    count: int
    name: str
    colour: Colour
    inner: Inner
    items: list[Inner]
    value: float


def test_compiled_result_writer_equals_the_generic_path() -> None:
    def command() -> NoOptionalMembers: ...

    signature = compile_signature(command)
    write = result_writer(signature)
    value = NoOptionalMembers(True, 7, "\u00e9\x7f", Colour.RED, Inner(1), [Inner(2)], 0.1)
    assert write(value) == encode_json(signature.encode_return(value))
    # Values their hints deny still come out as the generic writer would write them.
    nothing = NoOptionalMembers(None, None, None, None, None, None, None)  # type: ignore[arg-type]
    assert write(nothing) == encode_json(signature.encode_return(nothing))
    odd = NoOptionalMembers(1, True, 5, "red", Inner(1), [], 1)  # type: ignore[arg-type]
    assert write(odd) == encode_json(signature.encode_return(odd))


@dataclass(frozen=True)
class FrozenScalars:
    running: bool
    count: int
    colour: Colour


@dataclass(frozen=True)
class FrozenWithList:
    items: list[int]


@dataclass
class Mutable:
    running: bool
    count: int


def test_a_result_written_again_comes_out_as_it_is_now() -> None:
    """A writer may remember the text of a result that cannot change (a frozen dataclass of
    booleans, integers, strings and enum members: query-status answers with one per run
    state), never of one that can."""

    def frozen() -> FrozenScalars: ...

    def frozen_with_list() -> FrozenWithList: ...

    def mutable() -> Mutable: ...

    signature = compile_signature(frozen)
    write = result_writer(signature)
    first, second = FrozenScalars(True, 1, Colour.RED), FrozenScalars(False, 2, Colour.RED)
    for value in (first, first, second, first):
        assert write(value) == encode_json(signature.encode_return(value))
    signature = compile_signature(frozen_with_list)
    write = result_writer(signature)
    with_list = FrozenWithList([1])
    assert write(with_list) == '{"items": [1]}'
    with_list.items.append(2)
    assert write(with_list) == '{"items": [1, 2]}'
    signature = compile_signature(mutable)
    write = result_writer(signature)
    changing = Mutable(True, 1)
    assert write(changing) == encode_json(signature.encode_return(changing))
    changing.count = 2
    assert write(changing) == '{"count": 2, "running": true}'


def test_result_writer_for_results_that_are_not_dataclasses() -> None:
    def nothing() -> None: ...

    def numbers() -> list[int]: ...

    assert result_writer(compile_signature(nothing))(None) == "{}"
    assert result_writer(compile_signature(numbers))([1, 2]) == "[1, 2]"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_output_is_ascii_json_that_reads_back_as_the_value(value: object) -> None:
    text = encode_json(value)
    assert text.isascii()
    assert json.loads(text) == value
