"""qmonitor.cmdline: QEMU's command line as QEMU 7.2 reads it (the parser alone, no processes).

The exact error texts are compared with the real binary in test_cmdline_qemu.py; these tests pin
what the typed result holds for the command lines QEMU's launchers use, the rules of the
syntaxes (QemuOpts, keyval, JSON values, sizes), and that no input gets anything but a
CommandLineError out of the parser.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmonitor.cmdline import (
    CommandLineError,
    FdSocketAddress,
    InetSocketAddress,
    QemuCommandLine,
    UnixSocketAddress,
    parse_command_line,
)
from qmonitor.cmdline.keyval import KeyvalError, keyval_parse
from qmonitor.cmdline.options import QEMU_OPTIONS
from qmonitor.cmdline.qemuopts import OptsStore, OptType, QemuOptsList, qemu_opts_parse
from qmonitor.cmdline.qjson import JSONValueError, parse_json_value
from qmonitor.core.cutils import EINVAL, ERANGE, qemu_strtosz, qemu_strtou64

# libvirt 9.0 probing an emulator (qemuProcessQMPLaunch), as in issue 12.
LIBVIRT_PROBE = (
    "-S -no-user-config -nodefaults -nographic -machine none,accel=kvm:tcg"
    " -qmp unix:/run/probe.sock,server=on,wait=off -pidfile /run/probe.pid -daemonize"
)
# QEMU's python/qemu/machine/machine.py QEMUMachine._base_args: the 7.2 path form (QEMU
# connects to the test's listening socket) and the newer socketpair form.
QEMU_MACHINE_PATH = (
    "-display none -vga none -chardev socket,id=mon,path=/tmp/qemu-machine.sock"
    " -mon chardev=mon,mode=control"
)
QEMU_MACHINE_FD = (
    "-display none -vga none -chardev socket,id=mon,fd=5 -mon chardev=mon,mode=control"
)
# libvirt 9.0 starting a domain without disks (domain XML: 64 MiB, one vCPU, no devices).
LIBVIRT_DOMAIN = [
    *("-name", "guest=test,debug-threads=on", "-S"),
    "-object",
    '{"qom-type":"secret","id":"masterKey0","format":"raw",'
    '"file":"/var/lib/libvirt/qemu/domain-1-test/master-key.aes"}',
    *("-machine", "pc-i440fx-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram"),
    *("-accel", "tcg", "-cpu", "qemu64", "-m", "64"),
    *("-object", '{"qom-type":"memory-backend-ram","id":"pc.ram","size":67108864}'),
    *("-overcommit", "mem-lock=off", "-smp", "1,sockets=1,cores=1,threads=1"),
    *("-uuid", "c7a5fdbd-edaf-9455-926a-d65c16db1809", "-display", "none"),
    *("-no-user-config", "-nodefaults"),
    *("-chardev", "socket,id=charmonitor,fd=24,server=on,wait=off"),
    *("-mon", "chardev=charmonitor,id=monitor,mode=control"),
    *("-rtc", "base=utc", "-no-shutdown", "-boot", "strict=on"),
    "-device",
    '{"driver":"piix3-usb-uhci","id":"usb","bus":"pci.0","addr":"0x1.0x2"}',
    *("-audiodev", '{"id":"audio1","driver":"none"}'),
    *("-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"),
    *("-msg", "timestamp=on"),
]


def parse(line: str | Sequence[str], **options: bool) -> QemuCommandLine:
    argv = shlex.split(line) if isinstance(line, str) else list(line)
    return parse_command_line(argv, own_options=options or None)


def error_of(line: str | Sequence[str]) -> CommandLineError:
    with pytest.raises(CommandLineError) as caught:
        parse(line)
    return caught.value


# -- the command lines of QEMU's launchers ---------------------------------------------------


def test_libvirt_probe_line_gives_a_paused_daemon_with_one_qmp_listener() -> None:
    command_line = parse(LIBVIRT_PROBE)
    assert command_line.start_paused and command_line.daemonize
    assert command_line.pidfile == "/run/probe.pid"
    assert not command_line.defaults and not command_line.user_config
    assert command_line.nographic
    assert command_line.machine.type == "none" and command_line.machine.type_given
    assert [accel.name for accel in command_line.accelerators] == ["kvm", "tcg"]
    assert command_line.ram_size == 0  # the none machine has no default RAM
    (monitor,) = command_line.monitors
    assert monitor.mode == "control" and not monitor.pretty
    assert monitor.chardev.address == UnixSocketAddress("/run/probe.sock")
    assert monitor.chardev.server and not monitor.chardev.wait
    assert not command_line.default_monitor


def test_qemu_machine_path_form_connects_out_to_the_launchers_socket() -> None:
    (monitor,) = parse(QEMU_MACHINE_PATH).monitors
    assert monitor.mode == "control"
    assert monitor.chardev.id == "mon"
    assert monitor.chardev.address == UnixSocketAddress("/tmp/qemu-machine.sock")
    assert not monitor.chardev.server  # QEMU's default: a client


def test_qemu_machine_socketpair_form_names_an_inherited_fd() -> None:
    command_line = parse(QEMU_MACHINE_FD)
    (monitor,) = command_line.monitors
    assert monitor.chardev.address == FdSocketAddress(5)
    assert not monitor.chardev.server
    assert command_line.display == {"type": "none"} and command_line.vga == "none"


def test_libvirt_domain_line_gives_the_machine_libvirt_described() -> None:
    command_line = parse(LIBVIRT_DOMAIN)
    assert command_line.name == "test" and command_line.debug_threads is True
    assert command_line.uuid == uuid.UUID("c7a5fdbd-edaf-9455-926a-d65c16db1809")
    assert command_line.ram_size == 64 << 20 and command_line.ram_size_given
    assert (command_line.smp.cpus, command_line.smp.max_cpus) == (1, 1)
    assert command_line.machine.type == "pc-i440fx-7.2"
    assert command_line.machine.properties["memory-backend"] == "pc.ram"
    assert [accel.name for accel in command_line.accelerators] == ["tcg"]
    assert command_line.cpu == "qemu64"
    assert [obj["qom-type"] for obj in command_line.objects] == ["secret", "memory-backend-ram"]
    assert command_line.audiodevs == ({"id": "audio1", "driver": "none"},)
    assert command_line.overcommit_mem_lock is False
    assert command_line.rtc == {"base": "utc"} and command_line.boot == {"strict": "on"}
    assert command_line.sandbox["obsolete"] == "deny"
    assert command_line.msg_timestamp and command_line.no_shutdown and command_line.start_paused
    (monitor,) = command_line.monitors
    assert monitor.id == "monitor" and monitor.mode == "control"
    assert monitor.chardev.address == FdSocketAddress(24)
    assert monitor.chardev.server and not monitor.chardev.wait


def test_memory_backend_gives_the_ram_size_when_m_is_absent() -> None:
    command_line = parse(
        [
            *("-machine", "pc,memory-backend=ram0"),
            *("-object", '{"qom-type":"memory-backend-ram","id":"ram0","size":33554432}'),
        ]
    )
    assert command_line.ram_size == 32 << 20 and not command_line.ram_size_given


def test_monitor_short_forms_make_compat_chardevs() -> None:
    command_line = parse(
        "-qmp unix:/tmp/a.sock,server,nowait -qmp-pretty tcp:127.0.0.1:4444,server=on,wait=off"
        " -monitor stdio -chardev socket,id=h,host=::1,port=5555,server=on -qmp chardev:h"
    )
    first, second, third, fourth = command_line.monitors
    assert (first.chardev.id, first.mode, first.pretty) == ("compat_monitor0", "control", False)
    assert first.chardev.address == UnixSocketAddress("/tmp/a.sock")
    assert first.chardev.server and not first.chardev.wait
    assert second.pretty and second.chardev.address == InetSocketAddress("127.0.0.1", "4444")
    assert (third.mode, third.chardev.backend) == ("readline", "stdio")
    assert fourth.chardev.id == "h" and fourth.chardev.address == InetSocketAddress("::1", "5555")
    assert not command_line.reports  # -qmp's short-form flags are not warned about


def test_monitor_none_only_turns_the_default_monitor_off() -> None:
    command_line = parse("-monitor none")
    assert command_line.monitors == () and not command_line.default_monitor
    assert parse("").default_monitor


def test_mon_defaults_to_the_human_monitor() -> None:
    (monitor,) = parse("-chardev stdio,id=s -mon s").monitors
    assert monitor.mode == "readline"


# -- option lookup ----------------------------------------------------------------------------


def test_double_dash_is_the_same_option() -> None:
    assert parse("--machine none --m 256 --S").ram_size == 256 << 20


def test_no_abbreviations_and_no_equals_form() -> None:
    assert str(error_of("-mach none")) == "-mach: invalid option"
    assert str(error_of("-m=64")) == "-m=64: invalid option"


def test_every_option_is_known_before_any_value_is_read() -> None:
    assert str(error_of("-m 64x -xyz")) == "-xyz: invalid option"


def test_version_ends_the_parse_where_it_stands() -> None:
    command_line = parse("-version -m 64x")
    assert command_line.version and command_line.ram_size == 128 << 20
    assert str(error_of("-m 64x -version")).startswith("-m 64x: ")
    assert parse("-h").help and parse("--help").help


def test_own_options_pass_through_in_order() -> None:
    command_line = parse(
        "--state-dir /var/x -S --strict-order --dirty-rate=1M",
        **{
            "--state-dir": True,
            "--strict-order": False,
            "--dirty-rate": True,
        },
    )
    assert [(own.name, own.value) for own in command_line.own_options] == [
        ("--state-dir", "/var/x"),
        ("--strict-order", None),
        ("--dirty-rate", "1M"),
    ]
    assert command_line.start_paused


def test_own_option_names_cannot_be_qemus() -> None:
    with pytest.raises(ValueError, match="--name"):
        parse_command_line([], own_options={"--name": True})


def test_options_qemu_has_but_qmonitor_lacks_are_refused_clearly() -> None:
    assert str(error_of("-drive file=x.img")) == (
        "-drive file=x.img: option not supported by qmonitor"
    )
    assert str(error_of("-snapshot")) == "-snapshot: option not supported by qmonitor"
    assert str(error_of("disk.img")) == "disk.img: disk images are not supported by qmonitor"


def test_option_help_is_a_named_limit() -> None:
    assert (
        str(error_of("-machine help")) == "-machine help: option help is not available in qmonitor"
    )
    assert (
        str(error_of("-chardev help")) == "-chardev help: option help is not available in qmonitor"
    )


def test_a_bad_accel_option_is_an_error_where_qemu_lists_accelerators() -> None:
    # QEMU 7.2 prints the error, then its accelerator list, and exits 0 (docs/STANDIN.md).
    assert (
        str(error_of("-accel tcg,id=1x"))
        == "-accel tcg,id=1x: Parameter 'id' expects an identifier"
    )


def test_the_option_table_is_qemu_72s() -> None:
    assert len(QEMU_OPTIONS) == 122
    assert QEMU_OPTIONS["qmp-pretty"].takes_argument
    assert not QEMU_OPTIONS["nodefaults"].takes_argument
    assert not QEMU_OPTIONS["prom-env"].on_this_target


# -- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "size"),
    [
        ("64", 64 << 20),
        ("size=64M", 64 << 20),
        ("1G", 1 << 30),
        ("100k", 106496),  # aligned up to 8 KiB
        ("1b", 8192),
        ("1.5G", 3 << 29),
        ("0x40", 64 << 20),
        (" 64", 64 << 20),
        ("0", 128 << 20),  # 0 is "not given": the machine's default
    ],
)
def test_m_reads_sizes_as_qemu_does(argument: str, size: int) -> None:
    assert parse(["-m", argument]).ram_size == size


def test_hex_size_with_suffix_warns_when_read_and_when_applied() -> None:
    # As QEMU 7.2: once as -m is read (located), once as the machine takes the size.
    assert [report.message for report in parse(["-m", "0x40K"]).reports] == [
        "-m 0x40K: warning: Using a multiplier suffix on hex numbers is deprecated: 0x40K",
        "warning: Using a multiplier suffix on hex numbers is deprecated: 0x40K",
    ]
    assert [report.message for report in parse(["-m", "0x40"]).reports] == [
        "warning: Using a multiplier suffix on hex numbers is deprecated: 0x40M",
    ]


def test_smp_completes_the_topology() -> None:
    topology = parse("-smp 4").smp
    assert (topology.cpus, topology.sockets, topology.cores, topology.threads) == (4, 1, 4, 1)
    legacy = parse("-machine pc-i440fx-6.1 -smp 4").smp  # prefers sockets before 6.2
    assert (legacy.sockets, legacy.cores) == (4, 1)
    assert parse("-smp 2,maxcpus=8").smp.max_cpus == 8


def test_short_form_flags_are_deprecated_but_work() -> None:
    command_line = parse("-chardev socket,id=c,path=/tmp/c,server,nowait -mon c")
    assert command_line.monitors[0].chardev.server
    assert not command_line.monitors[0].chardev.wait
    assert [report.hint for report in command_line.reports] == [
        "Please use server=on instead\n",
        "Please use wait=off instead\n",
    ]


def test_errors_after_msg_timestamp_are_timestamped() -> None:
    error = error_of("-msg timestamp=on -m 64x")
    assert error.timestamped
    assert error.render("qemu-system-x86_64", "T").startswith("T qemu-system-x86_64: -m 64x: ")
    assert not error_of("-m 64x").timestamped


def test_error_render_puts_warnings_first_then_the_error_and_its_hint() -> None:
    error = error_of("-name ,a")
    assert error.render("prog") == (
        "prog: -name ,a: warning: short-form boolean option 'a' deprecated\n"
        "Please use a=on instead\n"
        "prog: -name ,a: Invalid parameter 'a'\n"
    )


def test_unknown_accelerators_are_reported_and_skipped() -> None:
    command_line = parse("-machine none,accel=xen:tcg")
    assert [accel.name for accel in command_line.accelerators] == ["tcg"]
    assert [report.message for report in command_line.reports] == ["invalid accelerator xen"]
    assert str(error_of("-machine none,accel=xen")) == "invalid accelerator xen"


# -- the syntaxes, by property ----------------------------------------------------------------

_KEY = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True).filter(lambda key: key != "id")
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@given(st.dictionaries(_KEY, _TEXT, min_size=1, max_size=5))
def test_qemuopts_values_round_trip_through_comma_escaping(params: dict[str, str]) -> None:
    opts_list = QemuOptsList("test", dict.fromkeys(params, OptType.STRING))
    text = ",".join(f"{key}={value.replace(',', ',,')}" for key, value in params.items())
    opts = qemu_opts_parse(OptsStore(), opts_list, text, permit_abbrev=False, warnings=[])
    assert opts.as_dict() == params


@given(_TEXT.filter(lambda value: "=" not in value.replace(",,", "")), _TEXT)
def test_the_implied_key_takes_the_first_value(first: str, other: str) -> None:
    opts_list = QemuOptsList("test", {"name": OptType.STRING, "x": OptType.STRING}, "name")
    text = f"{first.replace(',', ',,')},x={other.replace(',', ',,')}"
    opts = qemu_opts_parse(OptsStore(), opts_list, text, permit_abbrev=True, warnings=[])
    assert opts.as_dict() == {"name": first, "x": other}


@given(st.dictionaries(_KEY, _TEXT, min_size=1, max_size=5))
def test_keyval_values_round_trip_through_comma_escaping(params: dict[str, str]) -> None:
    text = ",".join(f"{key}={value.replace(',', ',,')}" for key, value in params.items())
    assert keyval_parse(text, None, help_allowed=False) == params


def test_keyval_builds_objects_and_lists_from_dotted_keys() -> None:
    assert keyval_parse("a.b=1,a.c=2,l.1=y,l.0=x", None, help_allowed=False) == {
        "a": {"b": "1", "c": "2"},
        "l": ["x", "y"],
    }
    with pytest.raises(KeyvalError, match=r"Parameter 'l\.0' missing"):
        keyval_parse("l.1=y", None, help_allowed=False)
    with pytest.raises(KeyvalError, match=r"Parameters 'a\.\*' used inconsistently"):
        keyval_parse("a.b=1,a=2", None, help_allowed=False)


@pytest.mark.parametrize(
    ("text", "error", "value"),
    [
        ("64", 0, 64),
        ("64k", 0, 65536),
        ("1.5M", 0, 3 << 19),
        ("1.k", 0, 1024),
        ("0x10", 0, 16),
        ("1.5", EINVAL, 0),
        ("1e3", EINVAL, 0),
        ("-1", EINVAL, 0),
        ("16E", ERANGE, 0),
        ("99999999999999999999", ERANGE, 0),
        ("99999999999999999999x", EINVAL, 0),
        ("", EINVAL, 0),
    ],
)
def test_qemu_strtosz(text: str, error: int, value: int) -> None:
    conversion = qemu_strtosz(text)
    assert (conversion.error, conversion.value) == (error, value)


def test_qemu_strtou64_is_strtoull() -> None:
    assert qemu_strtou64("-1").value == (1 << 64) - 1
    assert qemu_strtou64("010").value == 8
    assert qemu_strtou64("0x1f").value == 31
    assert qemu_strtou64("0x").error == EINVAL  # "0" then trailing "x"
    assert qemu_strtou64("18446744073709551616").error == ERANGE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a":1', "JSON parse error, premature EOI"),
        ("{", "JSON parse error, premature EOI"),
        ('{"a', "JSON parse error, stray '\"a'"),
        ('{"a":-', "JSON parse error, stray '-'"),
        ("{}x", "Expecting at most one JSON value"),
        ('{"a":1} {', "Expecting at most one JSON value"),
        ('{"a":1,}', "JSON parse error, expecting value"),
    ],
)
def test_json_values_end_as_qemus_parser_ends_them(text: str, message: str) -> None:
    with pytest.raises(JSONValueError) as caught:
        parse_json_value(text)
    assert caught.value.message == message


def test_json_values_take_single_quotes() -> None:
    assert parse_json_value("{'qom-type': 'secret'}") == {"qom-type": "secret"}


_TOKENS = [
    f"-{name}" for name in ("m", "name", "smp", "machine", "chardev", "mon", "qmp", "monitor")
] + [
    *("-object", "-audiodev", "-display", "-device", "-global", "-rtc", "-sandbox", "-uuid"),
    *("-S", "-msg", "-overcommit", "-accel", "-boot", "-version", "--own", "-xyz"),
]
_ARGUMENT = st.text(alphabet=",=.:{}[]\"'-_ 0123456789abcdefgimnoprstuxyzEKMG@", max_size=30)


@settings(max_examples=400)
@given(st.lists(st.one_of(st.sampled_from(_TOKENS), _ARGUMENT, _TEXT), max_size=8))
def test_any_command_line_gives_a_result_or_a_command_line_error(argv: list[str]) -> None:
    try:
        parse_command_line(argv, own_options={"--own": True})
    except CommandLineError as error:
        assert str(error)  # QEMU's line: never empty (it echoes the option, newlines and all)
