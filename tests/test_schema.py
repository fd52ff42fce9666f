"""Type hints -> QEMU's argument checking, result encoding and query-qmp-schema.

The expected error texts were recorded from QEMU 7.2.22 (``-machine none``) with the sample
signatures below, which copy the QAPI definitions of the QEMU commands they are named after;
``test_qemu_gives_the_recorded_error_texts`` and ``test_qemu_schema_has_the_recorded_shapes``
check the recordings against the real binary when it is installed.
"""

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any, NotRequired, TypedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmonitor import Monitor
from qmonitor.core.commands import CommandRegistry
from qmonitor.core.errors import ErrorClass, QMPError
from qmonitor.core.schema import (
    MISSING,
    CommandSignature,
    Parameter,
    QMPName,
    SchemaBuilder,
    Size,
    UInt64,
    Variants,
    compile_signature,
    encode_value,
)
from qmonitor.testing import RawQMPClient, command_shape, start_qemu

# --- Sample commands: Python copies of QEMU 7.2 QAPI definitions -------------------------------


class QMPCapability(StrEnum):
    OOB = "oob"


class CpuModelExpansionType(StrEnum):
    STATIC = "static"
    FULL = "full"


@dataclass
class CpuModelInfo:
    name: str
    props: Any | None = None


@dataclass
class CpuModelExpansionInfo:
    model: CpuModelInfo


class MigrationCapability(StrEnum):  # a subset of QEMU's
    XBZRLE = "xbzrle"
    EVENTS = "events"


@dataclass
class MigrationCapabilityStatus:
    capability: MigrationCapability
    state: bool


class RebootAction(StrEnum):
    RESET = "reset"
    SHUTDOWN = "shutdown"


class RunState(StrEnum):
    DEBUG = "debug"
    INMIGRATE = "inmigrate"
    INTERNAL_ERROR = "internal-error"
    IO_ERROR = "io-error"
    PAUSED = "paused"
    POSTMIGRATE = "postmigrate"
    PRELAUNCH = "prelaunch"
    FINISH_MIGRATE = "finish-migrate"
    RESTORE_VM = "restore-vm"
    RUNNING = "running"
    SAVE_VM = "save-vm"
    SHUTDOWN = "shutdown"
    SUSPENDED = "suspended"
    WATCHDOG = "watchdog"
    GUEST_PANICKED = "guest-panicked"
    COLO = "colo"


@dataclass
class StatusInfo:
    running: bool
    singlestep: bool
    status: RunState


@dataclass
class VersionTriple:
    major: int
    minor: int
    micro: int


@dataclass
class VersionInfo:
    qemu: VersionTriple
    package: str


@dataclass
class ObjectPropertyInfo:
    name: str
    type: str
    description: str | None = None
    default_value: Any | None = None


def qmp_capabilities(enable: list[QMPCapability] | None = None) -> None:
    raise AssertionError("never called")


def human_monitor_command(command_line: str, cpu_index: int | None = None) -> str:
    raise AssertionError("never called")


def query_cpu_model_expansion(
    type: CpuModelExpansionType, model: CpuModelInfo
) -> CpuModelExpansionInfo:
    raise AssertionError("never called")


def migrate_set_capabilities(capabilities: list[MigrationCapabilityStatus]) -> None:
    raise AssertionError("never called")


def migrate(
    uri: str,
    blk: bool | None = None,
    inc: bool | None = None,
    detach: bool | None = None,
    resume: bool | None = None,
) -> None:
    raise AssertionError("never called")


def balloon(value: int) -> None:
    raise AssertionError("never called")


def set_action(reboot: RebootAction | None = None) -> None:
    raise AssertionError("never called")


def query_status() -> StatusInfo:
    raise AssertionError("never called")


def query_version() -> VersionInfo:
    raise AssertionError("never called")


def qom_list(path: str) -> list[ObjectPropertyInfo]:
    raise AssertionError("never called")


def x_exit_preconfig() -> None:
    raise AssertionError("never called")


class YankInstanceType(StrEnum):
    BLOCK_NODE = "block-node"
    CHARDEV = "chardev"
    MIGRATION = "migration"


@dataclass(frozen=True)
class YankInstance:
    type: YankInstanceType


@dataclass(frozen=True)
class YankInstanceBlockNode(YankInstance):
    node_name: str


@dataclass(frozen=True)
class YankInstanceChardev(YankInstance):
    id: str


AnyYankInstance = Annotated[
    YankInstance,
    Variants(
        "type",
        {
            YankInstanceType.BLOCK_NODE: YankInstanceBlockNode,
            YankInstanceType.CHARDEV: YankInstanceChardev,
        },
    ),
]


def yank(instances: list[AnyYankInstance]) -> None:
    raise AssertionError("never called")


def query_yank() -> list[AnyYankInstance]:
    raise AssertionError("never called")


QEMU_COMMANDS: dict[str, Callable[..., object]] = {
    "qmp_capabilities": qmp_capabilities,
    "human-monitor-command": human_monitor_command,
    "query-cpu-model-expansion": query_cpu_model_expansion,
    "migrate-set-capabilities": migrate_set_capabilities,
    "migrate": migrate,
    "balloon": balloon,
    "set-action": set_action,
    "query-status": query_status,
    "query-version": query_version,
    "qom-list": qom_list,
    "x-exit-preconfig": x_exit_preconfig,
    "yank": yank,
    "query-yank": query_yank,
}
SIGNATURES = {name: compile_signature(func) for name, func in QEMU_COMMANDS.items()}

# (command, arguments as sent on the wire, QEMU 7.2.22's reply desc)
QEMU_ERRORS = [
    ("human-monitor-command", '{"command-line": 1}',
     "Invalid parameter type for 'command-line', expected: string"),
    ("human-monitor-command", '{"command-line": null}',
     "Invalid parameter type for 'command-line', expected: string"),
    ("human-monitor-command", "{}", "Parameter 'command-line' is missing"),
    ("human-monitor-command", '{"foo": 1}', "Parameter 'command-line' is missing"),
    ("human-monitor-command", '{"command-line": "info version", "foo": 1}',
     "Parameter 'foo' is unexpected"),
    ("human-monitor-command", '{"command-line": "x", "cpu-index": "x"}',
     "Invalid parameter type for 'cpu-index', expected: integer"),
    ("human-monitor-command", '{"command-line": "x", "cpu-index": true}',
     "Invalid parameter type for 'cpu-index', expected: integer"),
    ("human-monitor-command", '{"command-line": "x", "cpu-index": 1.0}',
     "Invalid parameter type for 'cpu-index', expected: integer"),
    ("human-monitor-command", '{"command-line": "x", "cpu-index": null}',
     "Invalid parameter type for 'cpu-index', expected: integer"),
    ("human-monitor-command", '{"command-line": "x", "cpu-index": 9223372036854775808}',
     "Invalid parameter type for 'cpu-index', expected: integer"),
    ("human-monitor-command", '{"command-line": "x", "cpu-index": -9223372036854775809}',
     "Invalid parameter type for 'cpu-index', expected: integer"),
    ("human-monitor-command", '{"command-line": "x", "cpu-index": 18446744073709551616}',
     "Invalid parameter type for 'cpu-index', expected: integer"),
    ("human-monitor-command", '{"command-line": "x", "cpu-index": []}',
     "Invalid parameter type for 'cpu-index', expected: integer"),
    ("human-monitor-command", '{"command-line": "x", "cpu-index": {}}',
     "Invalid parameter type for 'cpu-index', expected: integer"),
    ("qmp_capabilities", '{"enable": "x"}',
     "Invalid parameter type for 'enable', expected: array"),
    ("qmp_capabilities", '{"enable": ["bogus"]}',
     "Parameter 'null' does not accept value 'bogus'"),
    ("qmp_capabilities", '{"enable": [1]}',
     "Invalid parameter type for 'enable[0]', expected: string"),
    ("qmp_capabilities", '{"enable": [null]}',
     "Invalid parameter type for 'enable[0]', expected: string"),
    ("query-cpu-model-expansion", '{"type": "bogus", "model": {"name": "x"}}',
     "Parameter 'type' does not accept value 'bogus'"),
    ("query-cpu-model-expansion", '{"type": 1, "model": {"name": "x"}}',
     "Invalid parameter type for 'type', expected: string"),
    ("query-cpu-model-expansion", '{"type": 1}',
     "Invalid parameter type for 'type', expected: string"),
    ("query-cpu-model-expansion", '{"type": "static"}', "Parameter 'model' is missing"),
    ("query-cpu-model-expansion", '{"type": "static", "model": []}',
     "Invalid parameter type for 'model', expected: object"),
    ("query-cpu-model-expansion", '{"type": "static", "model": {}}',
     "Parameter 'model.name' is missing"),
    ("query-cpu-model-expansion", '{"type": "static", "model": {"name": 1}}',
     "Invalid parameter type for 'model.name', expected: string"),
    ("query-cpu-model-expansion", '{"type": "static", "model": {"name": "x", "extra": 1}}',
     "Parameter 'model.extra' is unexpected"),
    ("query-cpu-model-expansion", '{"model": {"name": 1}, "bogus": 1}',
     "Parameter 'type' is missing"),
    ("migrate-set-capabilities", '{"capabilities": [{"capability": "bogus", "state": true}]}',
     "Parameter 'capability' does not accept value 'bogus'"),
    ("migrate-set-capabilities", '{"capabilities": [{"capability": "xbzrle"}]}',
     "Parameter 'capabilities[0].state' is missing"),
    ("migrate-set-capabilities",
     '{"capabilities": [{"capability": "xbzrle", "state": true},'
     ' {"capability": "xbzrle", "state": 1}]}',
     "Invalid parameter type for 'capabilities[1].state', expected: boolean"),
    ("migrate-set-capabilities", '{"capabilities": [{"capability": "xbzrle", "state": true}, 5]}',
     "Invalid parameter type for 'capabilities[1]', expected: object"),
    ("migrate-set-capabilities",
     '{"capabilities": [{"capability": "xbzrle", "state": true, "x": 1}]}',
     "Parameter 'capabilities[0].x' is unexpected"),
    ("migrate-set-capabilities", '{"capabilities": {}}',
     "Invalid parameter type for 'capabilities', expected: array"),
    ("migrate", '{"uri": "x", "blk": "y"}', "Invalid parameter type for 'blk', expected: boolean"),
    ("migrate", '{"uri": "x", "blk": 1}', "Invalid parameter type for 'blk', expected: boolean"),
    ("balloon", '{"value": "x"}', "Invalid parameter type for 'value', expected: integer"),
    ("balloon", '{"value": 1e400}', "Invalid parameter type for 'value', expected: integer"),
    ("set-action", '{"reboot": "bogus"}', "Parameter 'reboot' does not accept value 'bogus'"),
    ("set-action", '{"reboot": 1}', "Invalid parameter type for 'reboot', expected: string"),
    ("qom-list", '{"path": true}', "Invalid parameter type for 'path', expected: string"),
    # A union (qapi/yank.json YankInstance): base members, the variant's, then unexpected ones.
    ("yank", "{}", "Parameter 'instances' is missing"),
    ("yank", '{"instances": {}}', "Invalid parameter type for 'instances', expected: array"),
    ("yank", '{"instances": [1]}', "Invalid parameter type for 'instances[0]', expected: object"),
    ("yank", '{"instances": [{}]}', "Parameter 'instances[0].type' is missing"),
    ("yank", '{"instances": [{"id": "x"}]}', "Parameter 'instances[0].type' is missing"),
    ("yank", '{"instances": [{"type": 1}]}',
     "Invalid parameter type for 'instances[0].type', expected: string"),
    ("yank", '{"instances": [{"type": "bogus"}]}',
     "Parameter 'type' does not accept value 'bogus'"),
    ("yank", '{"instances": [{"type": "chardev"}], "x": 1}',
     "Parameter 'instances[0].id' is missing"),
    ("yank", '{"instances": [{"type": "chardev", "id": "x", "node-name": "y"}]}',
     "Parameter 'instances[0].node-name' is unexpected"),
    ("yank", '{"instances": [{"type": "block-node", "node-name": 1}]}',
     "Invalid parameter type for 'instances[0].node-name', expected: string"),
    ("yank", '{"instances": [{"type": "migration"}, {"type": "chardev", "id": 2}]}',
     "Invalid parameter type for 'instances[1].id', expected: string"),
    ("yank", '{"instances": [{"type": "migration", "id": "x"}]}',
     "Parameter 'instances[0].id' is unexpected"),
    ("yank", '{"instances": [{"type": "migration", "zz": 1, "id": 2}]}',
     "Parameter 'instances[0].zz' is unexpected"),
    ("yank", '{"instances": [{"type": "block-node", "node-name": "n", "id": 1, "foo": 2}]}',
     "Parameter 'instances[0].id' is unexpected"),
    ("query-yank", '{"bogus": 1}', "Parameter 'bogus' is unexpected"),
    ("query-status", '{"a": 1}', "Parameter 'a' is unexpected"),
    ("x-exit-preconfig", '{"a": 1}', "Parameter 'a' is unexpected"),
]  # fmt: skip


def convert(command: str, arguments: str) -> dict[str, object]:
    return SIGNATURES[command].convert_arguments(json.loads(arguments))


def error_of(signature: CommandSignature, arguments: dict[str, Any]) -> str:
    with pytest.raises(QMPError) as caught:
        signature.convert_arguments(arguments)
    assert caught.value.error_class is ErrorClass.GENERIC_ERROR
    assert str(caught.value) == caught.value.desc
    return caught.value.desc


# --- Argument errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "arguments", "desc"), QEMU_ERRORS)
def test_invalid_arguments_get_qemus_error_text(command: str, arguments: str, desc: str) -> None:
    assert error_of(SIGNATURES[command], json.loads(arguments)) == desc


@pytest.mark.parametrize(
    ("command", "arguments"),
    [
        # QEMU 7.2.22 accepts these and fails later, in the handler.
        ("human-monitor-command", '{"command-line": "x", "cpu-index": 9223372036854775807}'),
        ("query-cpu-model-expansion", '{"type": "static", "model": {"name": "x", "props": null}}'),
        ("query-cpu-model-expansion", '{"type": "static", "model": {"name": "x", "props": {}}}'),
    ],
)
def test_arguments_qemu_accepts_are_accepted(command: str, arguments: str) -> None:
    convert(command, arguments)


def test_declared_order_decides_which_error_is_reported() -> None:
    def command(first: int, second: str, third: bool) -> None: ...

    signature = compile_signature(command)
    assert error_of(signature, {"third": 1, "second": 2}) == "Parameter 'first' is missing"
    assert (
        error_of(signature, {"third": 1, "second": 2, "first": 3})
        == "Invalid parameter type for 'second', expected: string"
    )
    assert (
        error_of(signature, {"first": 1, "second": "x", "third": True, "zz": 0})
        == "Parameter 'zz' is unexpected"
    )


def test_number_accepts_integers_and_rejects_the_rest() -> None:
    def command(ratio: float) -> None: ...

    signature = compile_signature(command)
    assert signature.convert_arguments({"ratio": 0.5}) == {"ratio": 0.5}
    converted = signature.convert_arguments({"ratio": 3})
    assert converted == {"ratio": 3.0} and type(converted["ratio"]) is float
    # QEMU's parser turns an integer beyond uint64 into a double, overflowing to infinity.
    assert signature.convert_arguments({"ratio": 10**400}) == {"ratio": math.inf}
    assert signature.convert_arguments({"ratio": -(10**400)}) == {"ratio": -math.inf}
    for value in (True, "1", None, [], {}):
        assert (
            error_of(signature, {"ratio": value})
            == "Invalid parameter type for 'ratio', expected: number"
        )


def test_int_accepts_exactly_the_int64_range() -> None:
    signature = SIGNATURES["balloon"]
    assert signature.convert_arguments({"value": -(2**63)}) == {"value": -(2**63)}
    assert signature.convert_arguments({"value": 2**63 - 1}) == {"value": 2**63 - 1}
    for value in (2**63, -(2**63) - 1, False, 1.0):
        assert error_of(signature, {"value": value}).endswith("expected: integer")


def test_free_form_object_must_be_an_object() -> None:
    def command(options: dict[str, Any]) -> None: ...

    signature = compile_signature(command)
    assert signature.convert_arguments({"options": {"a": [1]}}) == {"options": {"a": [1]}}
    assert (
        error_of(signature, {"options": [1]})
        == "Invalid parameter type for 'options', expected: object"
    )


def test_any_accepts_every_json_value_but_absence() -> None:
    def command(value: Any) -> None: ...

    signature = compile_signature(command)
    for value in (None, 1, "s", [1, {}], {"a": None}):
        assert signature.convert_arguments({"value": value}) == {"value": value}
    assert error_of(signature, {}) == "Parameter 'value' is missing"


def test_array_elements_are_checked_like_members() -> None:
    def command(
        names: list[str], flags: list[bool], ratios: list[float], counts: tuple[int, ...]
    ) -> None: ...

    signature = compile_signature(command)
    valid = {"names": ["a"], "flags": [True], "ratios": [0.5, 1], "counts": [1, 2]}
    assert signature.convert_arguments(valid) == {
        "names": ["a"],
        "flags": [True],
        "ratios": [0.5, 1.0],
        "counts": (1, 2),
    }
    for member, value, expected in [
        ("names", [1], "string"),
        ("flags", ["x"], "boolean"),
        ("ratios", [None], "number"),
        ("counts", [True], "integer"),
    ]:
        assert (
            error_of(signature, {**valid, member: value})
            == f"Invalid parameter type for '{member}[0]', expected: {expected}"
        )


# --- Conversion ----------------------------------------------------------------------------------


def test_optional_arguments_get_their_defaults() -> None:
    def command(
        name: str, count: int = 3, label: str | None = None, *, verbose: bool = False
    ) -> None: ...

    signature = compile_signature(command)
    assert signature.convert_arguments({"name": "a"}) == {
        "name": "a",
        "count": 3,
        "label": None,
        "verbose": False,
    }
    assert signature.convert_arguments(
        {"verbose": True, "label": "l", "count": 1, "name": "a"}
    ) == {"name": "a", "count": 1, "label": "l", "verbose": True}


def test_enums_and_nested_dataclasses_are_built() -> None:
    assert convert("query-cpu-model-expansion", '{"type": "full", "model": {"name": "max"}}') == {
        "type": CpuModelExpansionType.FULL,
        "model": CpuModelInfo(name="max"),
    }
    assert convert(
        "migrate-set-capabilities", '{"capabilities": [{"capability": "events", "state": false}]}'
    ) == {"capabilities": [MigrationCapabilityStatus(MigrationCapability.EVENTS, False)]}
    assert convert("qmp_capabilities", '{"enable": ["oob"]}') == {"enable": [QMPCapability.OOB]}
    assert convert("qmp_capabilities", "{}") == {"enable": None}


class Limits(TypedDict):
    size: int
    depth: "NotRequired[int]"  # a string: Python 3.11 then gets __required_keys__ wrong
    label: str | None


# Functional syntax: the only way to spell a key with a dash.
DashedLimits = TypedDict("DashedLimits", {"max-depth": int, "unit": NotRequired[str]})


def test_typeddict_arguments_keep_their_qmp_keys() -> None:
    def command(limits: Limits, dashed: DashedLimits) -> None: ...

    signature = compile_signature(command)
    assert signature.convert_arguments({"limits": {"size": 1}, "dashed": {"max-depth": 2}}) == {
        "limits": {"size": 1, "label": None},
        "dashed": {"max-depth": 2},
    }
    assert (
        error_of(signature, {"limits": {"size": 1}, "dashed": {"unit": "b"}})
        == "Parameter 'dashed.max-depth' is missing"
    )
    assert (
        error_of(signature, {"limits": {"size": 1, "depth": "x"}, "dashed": {}})
        == "Invalid parameter type for 'limits.depth', expected: integer"
    )


@dataclass
class Renamed:
    internal_name: str = field(metadata={"qmp_name": "node_name"})
    block_size: int = 512
    tags: list[str] = field(default_factory=list)
    cache: int = field(init=False, default=0)


def test_qmp_names_can_be_overridden() -> None:
    def command(
        node: Renamed, fd_name: Annotated[str, QMPName("fdname")], snake_case: int | None = None
    ) -> None: ...

    signature = compile_signature(command)
    assert [parameter.qmp_name for parameter in signature.parameters] == [
        "node",
        "fdname",
        "snake-case",
    ]
    assert signature.convert_arguments({"node": {"node_name": "n"}, "fdname": "f"}) == {
        "node": Renamed("n"),
        "fd_name": "f",
        "snake_case": None,
    }
    assert (
        error_of(signature, {"node": {"node_name": "n", "cache": 1}, "fdname": "f"})
        == "Parameter 'node.cache' is unexpected"
    )


@dataclass
class Tree:
    name: str
    children: "list[Tree]" = field(default_factory=list)


def test_recursive_types_are_checked_to_any_depth() -> None:
    def command(tree: Tree) -> Tree: ...

    signature = compile_signature(command)
    arguments = {"tree": {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}}
    assert signature.convert_arguments(arguments) == {"tree": Tree("a", [Tree("b", [Tree("c")])])}
    arguments["tree"]["children"][0]["children"].append({"name": 1})  # type: ignore[index]
    assert (
        error_of(signature, arguments)
        == "Invalid parameter type for 'tree.children[0].children[1].name', expected: string"
    )


def test_foreign_annotated_metadata_is_ignored() -> None:
    def command(values: list[Annotated[int, "doc"]]) -> None: ...

    assert compile_signature(command).convert_arguments({"values": [1]}) == {"values": [1]}


def test_parameters_describe_the_qmp_arguments() -> None:
    assert SIGNATURES["human-monitor-command"].parameters == (
        Parameter("command-line", "command_line", str, required=True, default=MISSING),
        Parameter("cpu-index", "cpu_index", int | None, required=False, default=None),
    )


def test_excluded_parameters_are_not_arguments() -> None:
    class Context: ...

    def command(value: int, ctx: Context, done: object) -> None: ...

    signature = compile_signature(command, exclude={"ctx", "done"})
    assert [parameter.python_name for parameter in signature.parameters] == ["value"]
    assert error_of(signature, {"value": 1, "ctx": 2}) == "Parameter 'ctx' is unexpected"


def test_each_call_returns_a_fresh_kwargs_dict() -> None:
    signature = SIGNATURES["query-status"]
    first = signature.convert_arguments({})
    first["ctx"] = "injected by the registry"
    assert signature.convert_arguments({}) == {}


# --- Result encoding -----------------------------------------------------------------------------


class Color(Enum):
    RED = "red"


@dataclass
class Report:
    node_name: str
    color: Color
    total: int | None = None
    extra: Any = None
    history: tuple[int, ...] = ()
    reports: "list[Report]" = field(default_factory=list)
    renamed: str = field(default="r", metadata={"qmp_name": "x_renamed"})


class ReportDict(TypedDict):
    color: Color
    name: str


def encoder_for(return_type: object) -> Callable[[object], object]:
    def command() -> None: ...

    return compile_signature(command, return_type=return_type).encode_return


@pytest.mark.parametrize(
    ("return_type", "value", "encoded"),
    [
        (None, None, {}),
        (str, "VM status: running\r\n", "VM status: running\r\n"),
        (int, 5, 5),
        (float, 0.5, 0.5),
        (bool, True, True),
        (Color, Color.RED, "red"),
        (list[int], (1, 2), [1, 2]),
        (list[Color], [Color.RED], ["red"]),
        (Any, {"a": (Color.RED, Report("n", Color.RED))},
         {"a": ["red", {"node-name": "n", "color": "red", "extra": None, "history": [],
                        "reports": [], "x_renamed": "r"}]}),
        (dict[str, Any], {"nested": [{"c": Color.RED}]}, {"nested": [{"c": "red"}]}),
        (Report, Report("n", Color.RED, total=3, extra=[1], history=(1,),
                        reports=[Report("m", Color.RED)]),
         {"node-name": "n", "color": "red", "total": 3, "extra": [1], "history": [1],
          "reports": [{"node-name": "m", "color": "red", "extra": None, "history": [],
                       "reports": [], "x_renamed": "r"}], "x_renamed": "r"}),
        (ReportDict, {"color": Color.RED, "name": "n"}, {"color": "red", "name": "n"}),
        (list[StatusInfo], [StatusInfo(True, False, RunState.RUNNING)],
         [{"running": True, "singlestep": False, "status": "running"}]),
    ],
)  # fmt: skip
def test_results_are_encoded_as_json_values(
    return_type: object, value: object, encoded: object
) -> None:
    assert encoder_for(return_type)(value) == encoded


def test_optional_dataclass_fields_set_to_none_are_left_out() -> None:
    # Like an absent QAPI optional member; a non-optional one is sent as null.
    assert encoder_for(Report)(Report("n", Color.RED, total=None, extra=None)) == {
        "node-name": "n",
        "color": "red",
        "extra": None,
        "history": [],
        "reports": [],
        "x_renamed": "r",
    }


def test_json_ready_typeddicts_pass_through_unchanged() -> None:
    value = {"size": 1, "depth": 2, "label": None}
    assert encoder_for(Limits)(value) is value
    assert encoder_for(str)("x") == "x"


def test_encode_value_keeps_subclasses_of_json_scalars() -> None:
    class Tag(str): ...

    assert encode_value([Tag("t")]) == ["t"]


def test_signature_repr_names_the_qmp_arguments() -> None:
    assert repr(SIGNATURES["balloon"]) == "CommandSignature(value) -> None"


def test_encode_value_rejects_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError, match="cannot encode a set"):
        encode_value({"a": {1}})


# --- Registration errors -------------------------------------------------------------------------


def unsupported_type(value: complex) -> None: ...
def alternate(value: int | str) -> None: ...
def no_hint(value) -> None: ...  # type: ignore[no-untyped-def]
def variadic(*values: int) -> None: ...
def positional_only(value: int, /) -> None: ...
def int_mapping(values: dict[str, int]) -> None: ...
def no_return(value: int): ...  # type: ignore[no-untyped-def]
def duplicate(a_b: int, a__b: Annotated[int, QMPName("a-b")]) -> None: ...


@dataclass
class MisnamedField:
    value: Annotated[int, QMPName("v")]


def misnamed_field(arg: MisnamedField) -> None: ...


class Numbered(Enum):
    ONE = 1


def numbered(value: Numbered) -> None: ...
def nested_unsupported(values: list[set[int]]) -> None: ...
def optional_alternate(value: int | str | None = None) -> None: ...
def unresolvable(value: "Undefined") -> None: ...  # type: ignore[name-defined]  # noqa: F821
def nested_qmp_name(values: list[Annotated[int, QMPName("v")]]) -> None: ...
def fixed_tuple(values: tuple[int, str]) -> None: ...


class KeyRenamed(TypedDict):
    key: Annotated[int, QMPName("other")]


def typeddict_qmp_name(arg: KeyRenamed) -> None: ...
def nullable_elements(values: list[int | None]) -> None: ...


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (unsupported_type, r"unsupported_type: parameter 'value': unsupported type <class 'comp"),
        (alternate, r"alternate: parameter 'value': .* a union may only be 'T \| None'"),
        (no_hint, r"no_hint: parameter 'value': has no type hint"),
        (variadic, r"variadic: parameter 'values': must be passable by keyword"),
        (positional_only, r"positional_only: parameter 'value': must be passable by keyword"),
        (int_mapping, r"int_mapping: parameter 'values': .* mapping type is dict\[str, Any\]"),
        (no_return, r"no_return: has no return type hint"),
        (duplicate, r"duplicate: two members are named 'a-b'"),
        (misnamed_field, r"misnamed_field: parameter 'arg': MisnamedField: field 'value': QMPN"),
        (numbered, r"numbered: parameter 'value': enum Numbered has a non-str value"),
        (nested_unsupported, r"nested_unsupported: parameter 'values': list element: unsupported"),
        (nullable_elements, r"nullable_elements: parameter 'values': list element: .* a union"),
        (optional_alternate, r"optional_alternate: parameter 'value': .* a union may only be"),
        (unresolvable, r"unresolvable: cannot resolve type hints: NameError"),
        (nested_qmp_name, r"nested_qmp_name: parameter 'values': list element: QMPName only"),
        (fixed_tuple, r"fixed_tuple: parameter 'values': .* a tuple must be tuple\[T, \.\.\.\]"),
        (typeddict_qmp_name, r"typeddict_qmp_name: parameter 'arg': KeyRenamed: key 'key': a Typ"),
    ],
)  # fmt: skip
def test_unsupported_signatures_are_refused_at_registration(
    func: Callable[..., object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        compile_signature(func)


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (no_hint, r"no_hint: parameter 'value': has no type hint"),
        (no_return, r"no_return: has no return type hint"),
        (alternate, r"alternate: parameter 'value': .* a union may only be 'T \| None'"),
    ],
)
def test_a_deferring_registry_raises_the_same_error_at_first_use(
    func: Callable[..., object], message: str
) -> None:
    """``defer_signatures`` (what ``qmonitor run`` sets to start faster) moves the compile,
    and its error, from registration to the first use; ``compile_all`` brings it forward."""
    eager = CommandRegistry()
    with pytest.raises(TypeError, match=message):
        eager.register(func)
    deferring = CommandRegistry()
    deferring.defer_signatures = True
    command = deferring.register(func)
    with pytest.raises(TypeError, match=message):
        deferring.compile_all()
    with pytest.raises(TypeError, match=message):
        _ = command.signature


async def test_deferred_signatures_answer_on_the_wire_as_compiled_ones(short_tmp: Path) -> None:
    """The schema, a result and every argument error are the same whether a monitor compiled
    its commands at registration or compiles them when they are first used."""

    def echo_status(status: StatusInfo, times: int = 1) -> list[StatusInfo]:
        return [status] * times

    status = {"running": True, "singlestep": False, "status": "running"}
    requests: list[tuple[str, dict[str, Any] | None]] = [
        ("echo-status", {"status": status, "times": 2}),
        ("echo-status", {"status": {"running": True}}),
        ("echo-status", {"status": status, "times": "2"}),
        ("echo-status", {"status": status, "other": 1}),
        ("balloon", None),
        ("migrate-set-capabilities", {"capabilities": [{"capability": "nope", "state": True}]}),
        ("query-qmp-schema", None),
    ]
    answers = []
    for defer in (False, True):
        monitor = Monitor("vm0")
        monitor.registry.defer_signatures = defer
        for command in (echo_status, balloon, migrate_set_capabilities):
            monitor.registry.register(command)
        path = str(short_tmp / f"defer-{defer}.sock")
        await monitor.listen(f"unix:{path},server=on,wait=off")
        try:
            client = await RawQMPClient.connect_unix(path)
            await client.negotiate()
            answers.append([await client.execute(name, arguments) for name, arguments in requests])
            await client.close()
        finally:
            await monitor.close()
    assert answers[0] == answers[1]
    assert answers[0][0] == {"return": [status, status]}
    assert all("error" in answer for answer in answers[0][1:6])


# --- query-qmp-schema ----------------------------------------------------------------------------


def build_schema(commands: dict[str, Callable[..., object]]) -> list[dict[str, object]]:
    builder = SchemaBuilder()
    for name, func in commands.items():
        builder.add_command(name, compile_signature(func), features=QEMU_FEATURES.get(name, ()))
    return builder.entries()


QEMU_FEATURES = {
    "human-monitor-command": ["savevm-monitor-nodes"],
    "x-exit-preconfig": ["unstable"],
}
NO_MEMBERS = {"members": []}
CPU_MODEL_INFO = {"members": [["name", "str"], ["props?", "any"]]}
YANK_INSTANCE = {
    "members": [["type", {"enum": ["block-node", "chardev", "migration"]}]],
    "tag": "type",
    "variants": [
        ["block-node", {"members": [["node-name", "str"]]}],
        ["chardev", {"members": [["id", "str"]]}],
        ["migration", NO_MEMBERS],
    ],
}
# Recorded from QEMU 7.2.22's query-qmp-schema.
QEMU_COMMAND_SHAPES: dict[str, dict[str, object]] = {
    "qmp_capabilities": {
        "arg-type": {"members": [["enable?", [{"enum": ["oob"]}]]]},
        "ret-type": NO_MEMBERS, "allow-oob": False, "features": [],
    },
    "human-monitor-command": {
        "arg-type": {"members": [["command-line", "str"], ["cpu-index?", "int"]]},
        "ret-type": "str", "allow-oob": False, "features": ["savevm-monitor-nodes"],
    },
    "query-cpu-model-expansion": {
        "arg-type": {"members": [["type", {"enum": ["static", "full"]}],
                                 ["model", CPU_MODEL_INFO]]},
        "ret-type": {"members": [["model", CPU_MODEL_INFO]]}, "allow-oob": False, "features": [],
    },
    "migrate": {
        "arg-type": {"members": [["uri", "str"], ["blk?", "bool"], ["inc?", "bool"],
                                 ["detach?", "bool"], ["resume?", "bool"]]},
        "ret-type": NO_MEMBERS, "allow-oob": False, "features": [],
    },
    "balloon": {
        "arg-type": {"members": [["value", "int"]]},
        "ret-type": NO_MEMBERS, "allow-oob": False, "features": [],
    },
    "query-status": {
        "arg-type": NO_MEMBERS,
        "ret-type": {"members": [["running", "bool"], ["singlestep", "bool"],
                                 ["status", {"enum": [state.value for state in RunState]}]]},
        "allow-oob": False, "features": [],
    },
    "query-version": {
        "arg-type": NO_MEMBERS,
        "ret-type": {"members": [["qemu", {"members": [["major", "int"], ["minor", "int"],
                                                       ["micro", "int"]]}],
                                 ["package", "str"]]},
        "allow-oob": False, "features": [],
    },
    "qom-list": {
        "arg-type": {"members": [["path", "str"]]},
        "ret-type": [{"members": [["name", "str"], ["type", "str"], ["description?", "str"],
                                  ["default-value?", "any"]]}],
        "allow-oob": False, "features": [],
    },
    "x-exit-preconfig": {
        "arg-type": NO_MEMBERS, "ret-type": NO_MEMBERS, "allow-oob": False,
        "features": ["unstable"],
    },
    "yank": {
        "arg-type": {"members": [["instances", [YANK_INSTANCE]]]},
        "ret-type": NO_MEMBERS, "allow-oob": True, "features": [],
    },
    "query-yank": {
        "arg-type": NO_MEMBERS, "ret-type": [YANK_INSTANCE], "allow-oob": True, "features": [],
    },
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(QEMU_COMMAND_SHAPES))
def test_schema_entries_have_qemus_shape(command: str) -> None:
    builder = SchemaBuilder()
    builder.add_command(
        command,
        compile_signature(QEMU_COMMANDS[command]),
        allow_oob=command in ("yank", "query-yank"),
        features=QEMU_FEATURES.get(command, ()),
    )
    assert command_shape(builder.entries(), command) == QEMU_COMMAND_SHAPES[command]


def test_union_layout_follows_qemus_introspect_generator() -> None:
    """QEMU 7.2: the union, then its tag's enum and the variants' types in that order; an
    enum value without a variant gets the empty object, and two commands share the union."""
    builder = SchemaBuilder()
    builder.add_command("yank", SIGNATURES["yank"], allow_oob=True)
    builder.add_command("query-yank", SIGNATURES["query-yank"], allow_oob=True)
    entries = builder.entries()
    check_schema_integrity(entries)
    assert entries == [
        {"name": "yank", "meta-type": "command", "arg-type": "0", "ret-type": "1",
         "allow-oob": True},
        {"name": "query-yank", "meta-type": "command", "arg-type": "1", "ret-type": "[2]",
         "allow-oob": True},
        {"name": "0", "meta-type": "object", "members": [{"name": "instances", "type": "[2]"}]},
        {"name": "1", "meta-type": "object", "members": []},
        {"name": "[2]", "meta-type": "array", "element-type": "2"},
        {"name": "2", "meta-type": "object", "members": [{"name": "type", "type": "3"}],
         "tag": "type", "variants": [{"case": "block-node", "type": "4"},
                                     {"case": "chardev", "type": "5"},
                                     {"case": "migration", "type": "1"}]},
        {"name": "3", "meta-type": "enum",
         "members": [{"name": "block-node"}, {"name": "chardev"}, {"name": "migration"}],
         "values": ["block-node", "chardev", "migration"]},
        {"name": "4", "meta-type": "object", "members": [{"name": "node-name", "type": "str"}]},
        {"name": "5", "meta-type": "object", "members": [{"name": "id", "type": "str"}]},
        {"name": "str", "meta-type": "builtin", "json-type": "string"},
    ]  # fmt: skip


def test_union_builds_the_variant_the_tag_picks_and_encodes_it_back() -> None:
    instances = [
        {"type": "chardev", "id": "compat_monitor0"},
        {"node-name": "nbd0", "type": "block-node"},
        {"type": "migration"},
    ]
    converted = convert("yank", json.dumps({"instances": instances}))
    assert converted == {
        "instances": [
            YankInstanceChardev(YankInstanceType.CHARDEV, "compat_monitor0"),
            YankInstanceBlockNode(YankInstanceType.BLOCK_NODE, "nbd0"),
            YankInstance(YankInstanceType.MIGRATION),
        ]
    }
    assert type(converted["instances"][2]) is YankInstance  # type: ignore[index]
    encoded = SIGNATURES["query-yank"].encode_return(converted["instances"])
    assert encoded == [
        {"type": "chardev", "id": "compat_monitor0"},
        {"type": "block-node", "node-name": "nbd0"},
        {"type": "migration"},
    ]
    assert encode_value(converted["instances"]) == encoded

    @dataclass(frozen=True)
    class Stranger(YankInstance):
        other: int

    with pytest.raises(TypeError, match="Stranger is not a variant"):
        SIGNATURES["query-yank"].encode_return([Stranger(YankInstanceType.CHARDEV, 1)])


@dataclass
class UntaggedBase:
    name: str


@dataclass
class OptionalTag:
    type: YankInstanceType | None = None


@dataclass
class NotASubclass:
    type: YankInstanceType
    id: str


def union_of(base: object, cases: dict[Any, type], tag: str = "type") -> Callable[..., None]:
    def command(value: Annotated[base, Variants(tag, cases)]) -> None: ...  # type: ignore[valid-type]

    return command


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (union_of(int, {}), r"needs a dataclass base, not <class 'int'>"),
        (union_of(UntaggedBase, {}), r"the tag 'type' must be a required enum member"),
        (union_of(OptionalTag, {}), r"the tag 'type' must be a required enum member"),
        (union_of(YankInstance, {}, tag="kind"), r"the tag 'kind' must be a required enum"),
        (union_of(YankInstance, {"chardev": YankInstanceChardev}), r"'chardev' is not a distinct"),
        (union_of(YankInstance, {YankInstanceType.CHARDEV: NotASubclass}),
         r"NotASubclass'> is not a dataclass subclass"),
    ],
)  # fmt: skip
def test_unions_that_qapi_could_not_express_are_refused(
    command: Callable[..., None], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        compile_signature(command)


ENTRY_KEYS = {
    "builtin": ({"name", "meta-type", "json-type"}, set()),
    "alternate": ({"name", "meta-type", "members"}, {"features"}),
    "enum": ({"name", "meta-type", "members", "values"}, {"features"}),
    "array": ({"name", "meta-type", "element-type"}, set()),
    "object": ({"name", "meta-type", "members"}, {"features", "tag", "variants"}),
    "command": ({"name", "meta-type", "arg-type", "ret-type"}, {"allow-oob", "features"}),
    "event": ({"name", "meta-type", "arg-type"}, {"features"}),
}


def check_schema_integrity(entries: list[dict[str, Any]], *, all_used: bool = True) -> None:
    """Every entry has SchemaInfo's keys, every type is defined once, every reference resolves
    (and, with ``all_used``, every type is referenced)."""
    type_names = [e["name"] for e in entries if e["meta-type"] not in ("command", "event")]
    assert len(type_names) == len(set(type_names))
    referenced = set()
    for entry in entries:
        required, optional = ENTRY_KEYS[entry["meta-type"]]
        assert required <= entry.keys() <= required | optional, entry
        assert entry.get("allow-oob", True) is True and entry.get("features", [1]) != []
        referenced |= {entry.get("arg-type"), entry.get("ret-type"), entry.get("element-type")}
        referenced |= {member["type"] for member in entry.get("members", []) if "type" in member}
        referenced |= {variant["type"] for variant in entry.get("variants", [])}
        for member in entry.get("members", []):
            assert member.get("default", None) is None
    referenced.discard(None)
    assert referenced <= set(type_names)
    assert set(type_names) <= referenced or not all_used


def test_schema_references_resolve_and_entries_have_schemainfo_keys() -> None:
    builder = SchemaBuilder()
    for name, signature in SIGNATURES.items():
        builder.add_command(name, signature, allow_oob=name == "qmp_capabilities")
    builder.add_event("STOP", None)
    builder.add_event("REPORT", Report)
    builder.add_event("LIMITS", Limits)
    entries = builder.entries()
    check_schema_integrity(entries)
    assert builder.entries() == entries


def test_schema_layout_follows_qemus_introspect_generator() -> None:
    # Commands and events first, in definition order; then types in order of first use, with
    # object and enum names masked as numbers in that order; builtins and arrays by name.
    builder = SchemaBuilder()
    builder.add_command("query-status", SIGNATURES["query-status"])
    builder.add_command("balloon", SIGNATURES["balloon"])
    builder.add_command("qmp_capabilities", SIGNATURES["qmp_capabilities"], allow_oob=True)
    builder.add_event("STOP", None)
    builder.add_event("TREE", Tree, features=["unstable"])
    runstate = [state.value for state in RunState]
    assert builder.entries() == [
        {"name": "query-status", "meta-type": "command", "arg-type": "0", "ret-type": "1"},
        {"name": "balloon", "meta-type": "command", "arg-type": "2", "ret-type": "0"},
        {"name": "qmp_capabilities", "meta-type": "command", "arg-type": "3", "ret-type": "0",
         "allow-oob": True},
        {"name": "STOP", "meta-type": "event", "arg-type": "0"},
        {"name": "TREE", "meta-type": "event", "arg-type": "4", "features": ["unstable"]},
        {"name": "0", "meta-type": "object", "members": []},
        {"name": "1", "meta-type": "object", "members": [
            {"name": "running", "type": "bool"}, {"name": "singlestep", "type": "bool"},
            {"name": "status", "type": "5"}]},
        {"name": "2", "meta-type": "object", "members": [{"name": "value", "type": "int"}]},
        {"name": "3", "meta-type": "object", "members": [
            {"name": "enable", "type": "[6]", "default": None}]},
        {"name": "4", "meta-type": "object", "members": [
            {"name": "name", "type": "str"}, {"name": "children", "type": "[4]", "default": None}]},
        {"name": "bool", "meta-type": "builtin", "json-type": "boolean"},
        {"name": "5", "meta-type": "enum", "members": [{"name": v} for v in runstate],
         "values": runstate},
        {"name": "int", "meta-type": "builtin", "json-type": "int"},
        {"name": "[6]", "meta-type": "array", "element-type": "6"},
        {"name": "6", "meta-type": "enum", "members": [{"name": "oob"}], "values": ["oob"]},
        {"name": "str", "meta-type": "builtin", "json-type": "string"},
        {"name": "[4]", "meta-type": "array", "element-type": "4"},
    ]  # fmt: skip


def test_schema_refuses_duplicates_and_non_object_event_data() -> None:
    builder = SchemaBuilder()
    builder.add_command("balloon", SIGNATURES["balloon"])
    with pytest.raises(ValueError, match="already defined"):
        builder.add_command("balloon", SIGNATURES["balloon"])
    with pytest.raises(TypeError, match="dataclass or TypedDict"):
        builder.add_event("BAD", int)


# --- Robustness ----------------------------------------------------------------------------------


def ratio(value: float, options: dict[str, Any] | None = None) -> None: ...
def shapes(limits: Limits, dashed: DashedLimits, tree: Tree, items: tuple[Color, ...]) -> None: ...


PROPERTY_SIGNATURES = {
    **SIGNATURES,
    "ratio": compile_signature(ratio),
    "shapes": compile_signature(shapes),
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["name", "state", "capability", "children", "size", "max-depth", "x"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=10,
)


@pytest.mark.parametrize("command", sorted(PROPERTY_SIGNATURES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_json_arguments_convert_or_raise_qmperror(command: str, data: st.DataObject) -> None:
    signature = PROPERTY_SIGNATURES[command]
    names = [parameter.qmp_name for parameter in signature.parameters] + ["bogus"]
    arguments = data.draw(st.dictionaries(st.sampled_from(names), json_values))
    try:
        signature.convert_arguments(arguments)
    except QMPError as error:
        assert error.desc.startswith(("Parameter '", "Invalid parameter type for '"))


# --- Against real QEMU ---------------------------------------------------------------------------


@pytest.mark.qemu
async def test_qemu_gives_the_recorded_error_texts() -> None:
    with tempfile.TemporaryDirectory(prefix="qm-") as directory:
        path = str(Path(directory) / "qmp.sock")
        async with start_qemu(path):
            client = await RawQMPClient.connect_unix(path)
            await client.negotiate()
            replies = []
            for command, arguments, _ in QEMU_ERRORS:
                await client.send_raw(
                    f'{{"execute": "{command}", "arguments": {arguments}}}'.encode()
                )
                replies.append(await client.receive_reply())
            await client.close()
    assert replies == [
        {"error": {"class": "GenericError", "desc": desc}} for _, _, desc in QEMU_ERRORS
    ]


@pytest.mark.qemu
async def test_qemu_schema_has_the_recorded_shapes() -> None:
    with tempfile.TemporaryDirectory(prefix="qm-") as directory:
        path = str(Path(directory) / "qmp.sock")
        async with start_qemu(path):
            client = await RawQMPClient.connect_unix(path)
            await client.negotiate()
            entries = (await client.execute("query-qmp-schema"))["return"]
            await client.close()
    for command, shape in QEMU_COMMAND_SHAPES.items():
        assert command_shape(entries, command) == shape, command
    # QEMU keeps a few types whose only users are compiled out (the Cocoa display options).
    check_schema_integrity(entries, all_used=False)


def test_dataclass_fields_without_init_are_not_members() -> None:
    def command(node: Renamed) -> None: ...

    entries = build_schema({"command": command})
    assert command_shape(entries, "command")["arg-type"] == {
        "members": [
            [
                "node",
                {"members": [["node_name", "str"], ["block-size?", "int"], ["tags?", ["str"]]]},
            ]
        ]
    }


def test_several_unexpected_members_name_the_first_in_qdict_order() -> None:
    """QEMU 7.2: query-status {"foo": 1, "bar": 2} says 'bar' (its hash table's first)."""

    def no_arguments() -> None: ...

    def one_argument(a: int) -> None: ...

    for function, arguments in (
        (no_arguments, {"foo": 1, "bar": 2}),
        (one_argument, {"a": 1, "foo": 1, "bar": 2}),
    ):
        with pytest.raises(QMPError, match=r"^Parameter 'bar' is unexpected$"):
            compile_signature(function).convert_arguments(arguments)


def test_uint64_and_size_follow_qobject_input_type_uint64() -> None:
    """QEMU 7.2 (migrate-set-parameters): 'expects uint64', negative int64 taken mod 2**64."""

    def command(limit: UInt64, bandwidth: Size | None = None) -> None: ...

    signature = compile_signature(command)
    assert signature.convert_arguments({"limit": 5}) == {"limit": 5, "bandwidth": None}
    assert signature.convert_arguments({"limit": 2**64 - 1, "bandwidth": -1}) == {
        "limit": 2**64 - 1,
        "bandwidth": 2**64 - 1,
    }
    for bad in ("x", True, 1.5, 2**64, -(2**63) - 1):
        with pytest.raises(QMPError, match=r"^Parameter 'limit' expects uint64$"):
            signature.convert_arguments({"limit": bad})
    builder = SchemaBuilder()
    builder.add_command("command", signature)
    builtins = {
        entry["name"]: entry["json-type"]
        for entry in builder.entries()
        if entry["meta-type"] == "builtin"
    }
    # QEMU publishes every integer type as plain int (scripts/qapi/introspect.py _use_type).
    assert builtins == {"int": "int"}
