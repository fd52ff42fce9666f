"""The HMP command table and line parser: QEMU's syntax and QEMU's error texts.

Texts marked "QEMU 7.2" were observed on a real ``-monitor unix:...`` socket.
"""

from __future__ import annotations

import pytest

from hmp_app import DemoState, add_demo_commands
from qmonitor import HumanSyntax
from qmonitor.core.commands import CommandRegistry
from qmonitor.hmp.builtins import register_hmp_builtins
from qmonitor.hmp.parse import ParsedLine, ParseFailure, parse_line
from qmonitor.hmp.table import ArgSpec, CommandTable, command_table, parse_args_type


@pytest.fixture
def registry() -> CommandRegistry:
    registry = CommandRegistry()
    register_hmp_builtins(registry)
    add_demo_commands(registry, DemoState())

    @registry.command(
        hmp=HumanSyntax(args_type="detach:-d,blk:-b,inc:-i,resume:-r,uri:s"),
        detachable=True,
    )
    async def migrate(uri: str, blk: bool = False, inc: bool = False, resume: bool = False) -> None:
        """migrate to URI"""

    @registry.command(hmp=HumanSyntax(name="info lapic", args_type="apic-id:i?"))
    def lapic(apic_id: int | None = None) -> None:
        """show local apic state"""

    @registry.command(name="x-wait", hmp=HumanSyntax(name="wait", args_type="delay:T"))
    def wait(delay: float) -> float:
        """wait"""
        return delay

    @registry.command(name="x-named", hmp=HumanSyntax(name="named", args_type="name:-ns,id:l"))
    def named(id: int, name: str | None = None) -> None:
        """named"""

    return registry


@pytest.fixture
def table(registry: CommandRegistry) -> CommandTable:
    return command_table(registry)


def parsed(table: CommandTable, line: str) -> ParsedLine:
    result = parse_line(table, line)
    assert isinstance(result, ParsedLine), result
    return result


def failure(table: CommandTable, line: str) -> str:
    result = parse_line(table, line)
    assert isinstance(result, ParseFailure), result
    return result.text


def test_names_are_derived_from_the_qmp_name_and_info_from_query() -> None:
    registry = CommandRegistry()

    @registry.command(hmp=HumanSyntax())
    def system_reset() -> None:
        """Reset the machine.

        More text that help does not show."""

    @registry.command(hmp=HumanSyntax())
    def query_migrate_parameters() -> None:
        """show migration parameters"""

    @registry.command
    def qmp_only() -> None:
        """not a human command"""

    table = command_table(registry)
    assert set(table.top) == {"system_reset"}
    assert set(table.info) == {"migrate_parameters"}
    assert table.top["system_reset"].help == "Reset the machine."


def test_args_type_and_params_are_derived_from_the_signature(table: CommandTable) -> None:
    entry = table.top["set_mode"]
    assert entry.args == (ArgSpec("mode", "s"), ArgSpec("verbose", "b", optional=True))
    assert entry.params == "mode [verbose]"
    slow = table.top["slow"]
    assert slow.args == (ArgSpec("detach", "-", flag="d"), ArgSpec("seconds", "T", optional=True))
    assert slow.params == "[-d] [seconds]"


def test_unsupported_letters_and_types_are_refused_at_table_build() -> None:
    with pytest.raises(ValueError, match="unsupported args_type 'B'"):
        parse_args_type("device:B", "command 'x'")
    registry = CommandRegistry()

    @registry.command(hmp="takes_list")
    def takes_list(items: list[int]) -> None:
        """no human spelling for a list"""

    with pytest.raises(ValueError, match="parameter 'items' has no human syntax"):
        command_table(registry)


def test_two_commands_with_one_name_are_refused() -> None:
    registry = CommandRegistry()

    def nothing() -> None:
        """do nothing"""

    registry.register(nothing, name="a", hmp="same")
    registry.register(nothing, name="b", hmp="same")
    with pytest.raises(ValueError, match="share the name 'same'"):
        command_table(registry)


def test_blank_line_does_nothing(table: CommandTable) -> None:
    assert parse_line(table, "   ") is None


def test_unknown_command_texts_match_qemu(table: CommandTable) -> None:
    # QEMU 7.2: the typed text up to the end of the name, leading spaces and "info" included.
    assert failure(table, "xyz") == "unknown command: 'xyz'\n"
    assert failure(table, "  xyz abc") == "unknown command: '  xyz'\n"
    assert failure(table, "info   bogus") == "unknown command: 'info   bogus'\n"
    assert failure(table, "stopx") == "unknown command: 'stopx'\n"


def test_argument_errors_are_followed_by_try_help(table: CommandTable) -> None:
    # QEMU 7.2 texts.
    assert failure(table, "info status extra") == (
        "status: extraneous characters at the end of line\n"
        'Try "help info status" for more information\n'
    )
    assert failure(table, "loadvm") == (
        'loadvm: string expected\nTry "help loadvm" for more information\n'
    )
    assert failure(table, "stop now") == (
        'stop|s: extraneous characters at the end of line\nTry "help stop" for more information\n'
    )
    assert failure(table, "migrate -z x").startswith("migrate: unsupported option -z\n")
    assert failure(table, "migrate -d").startswith("migrate: string expected\n")


def test_aliases_and_info_items(table: CommandTable) -> None:
    assert parsed(table, "s").entry.command.name == "stop"
    assert parsed(table, "  info   status  ").entry.command.name == "query-status"
    assert parsed(table, "info").entry.command.name == "info"
    assert parsed(table, "?  stop").arguments == {"name": "stop"}


def test_strings_words_quotes_and_rest_of_line(table: CommandTable) -> None:
    assert parsed(table, "loadvm alpha").arguments == {"name": "alpha"}
    assert parsed(table, r'loadvm "two words\n\"q\""').arguments == {"name": 'two words\n"q"'}
    assert parsed(table, "echo  hello   world ").arguments == {"text": "hello   world "}
    assert failure(table, 'loadvm "open').startswith("loadvm: string expected\n")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5 * 1024 * 1024),
        ("0x10", 16 * 1024 * 1024),
        ("010", 8 * 1024 * 1024),
        ("2*(3+4)", 14 * 1024 * 1024),
        ("'a'", 97 * 1024 * 1024),
        ("7/2", 3 * 1024 * 1024),
        ("-7/2+4", 1 * 1024 * 1024),
        ("~0&15", 15 * 1024 * 1024),
    ],
)
def test_integer_expressions(table: CommandTable, text: str, value: int) -> None:
    assert parsed(table, f"balloon {text}").arguments == {"value": value}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # QEMU 7.2 texts.
        ("-5", "enter a positive value"),
        ("1+", "unexpected end of expression"),
        ("(2", "')' expected"),
        ("5/0", "division by zero"),
        ("'a", "missing terminating ' character"),
        ("99999999999999999999999", "number too large"),
        ("foo", "invalid char 'f' in expression"),
        ("$pc", "unknown register"),
    ],
)
def test_integer_expression_errors(table: CommandTable, text: str, message: str) -> None:
    assert failure(table, f"balloon {text}") == (
        f'{message}\nTry "help balloon" for more information\n'
    )


def test_32_bit_integers(table: CommandTable) -> None:
    assert parsed(table, "info lapic 0xffffffff").arguments == {"apic-id": 0xFFFFFFFF}
    assert parsed(table, "info lapic").arguments == {}
    assert failure(table, "info lapic 0x100000000").startswith(
        "'lapic' has failed: integer is for 32-bit values\n"
    )
    assert failure(table, "info lapic -1").startswith("'lapic' has failed")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1024**2),
        ("10K", 10 * 1024),
        ("10k", 10 * 1024),
        ("1.5G", 3 * 1024**3 // 2),
        ("512B", 512),
        ("1.k", 1024),
        ("8E", None),
        ("1.5B", None),
        ("0x10", None),
        ("-1", None),
        ("K", None),
    ],
)
def test_sizes(table: CommandTable, text: str, value: int | None) -> None:
    if value is None:
        assert failure(table, f"size {text}") == (
            'invalid size\nTry "help size" for more information\n'
        )
    else:
        assert parsed(table, f"size {text}").arguments == {"value": value}


def test_times_and_booleans(table: CommandTable) -> None:
    assert parsed(table, "wait 1.5").arguments == {"delay": 1.5}
    assert parsed(table, "wait 250ms").arguments == {"delay": 0.25}
    assert failure(table, "wait 5h").startswith("Unknown unit suffix\n")
    assert failure(table, "wait x").startswith("Number expected\n")
    assert failure(table, "wait inf").startswith("Bad number\n")
    assert parsed(table, "set_mode fast on").arguments == {"mode": "fast", "verbose": True}
    assert failure(table, "set_mode fast yes").startswith("Expected 'on' or 'off'\n")


def test_flags_in_any_order_and_detach(table: CommandTable) -> None:
    line = parsed(table, "migrate -b -d tcp:host:4444")
    assert line.detach is True
    assert line.arguments == {"blk": True, "uri": "tcp:host:4444"}
    line = parsed(table, "migrate -r tcp:host:4444")
    assert line.detach is False
    assert line.arguments == {"resume": True, "uri": "tcp:host:4444"}
    assert parsed(table, "slow -d 0.5").detach is True


def test_flag_with_a_value_and_negative_numbers(table: CommandTable) -> None:
    assert parsed(table, 'named -n "my name" 3').arguments == {"name": "my name", "id": 3}
    assert parsed(table, "named -3").arguments == {"id": -3}
    assert failure(table, "named -n").startswith("named: value expected for -n\n")
