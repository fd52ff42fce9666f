"""QEMU's authz objects (issue 9 item 2) without sockets: building them from ``-object``
options, their decisions, GLib's glob and file reading compared with GLib itself, list files."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qmonitor.cmdline import CommandLineError, parse_command_line
from qmonitor.cmdline.objects import ObjectError
from qmonitor.security.authz import (
    AUTHZ_TYPES,
    AuthzList,
    AuthzListFile,
    AuthzSimple,
    ListFormat,
    ListPolicy,
    ListRule,
    glob_match,
    parse_list_file,
)
from qmonitor.server.authorize import read_like_glib
from qmonitor.server.objects import MADE_TYPES, CommandLineObjects
from qmonitor.server.tls import TLS_CREDS_X509


def _glib() -> ctypes.CDLL | None:
    try:
        library = ctypes.CDLL(ctypes.util.find_library("glib-2.0") or "libglib-2.0.so.0")
    except OSError:
        return None
    library.g_pattern_match_simple.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    library.g_pattern_match_simple.restype = ctypes.c_int
    return library


GLIB = _glib()
needs_glib = pytest.mark.skipif(GLIB is None, reason="GLib is not installed")


def objects(*options: str) -> dict[str, object]:
    arguments = [part for option in options for part in ("-object", option)]
    made = CommandLineObjects()
    parse_command_line(arguments, objects=made)
    return dict(made.authorizer.objects)


def test_the_command_line_makes_every_authz_type_and_x509_credentials() -> None:
    """``MADE_TYPES`` is spelled out (the modules load only for a command line that makes
    one of them): it must name exactly the types those modules make."""
    assert {*AUTHZ_TYPES, TLS_CREDS_X509} == MADE_TYPES


def test_objects_from_both_forms_and_both_list_file_names() -> None:
    found = objects(
        "authz-simple,id=s,identity=O=Example,,CN=alice",
        "authz-list,id=l,policy=allow,rules.0.match=CN=*,rules.0.policy=deny,"
        "rules.0.format=glob,rules.1.match=CN=bob,rules.1.policy=allow",
        '{"qom-type": "authz-list", "id": "j", "rules": [{"match": "x", "policy": "allow"}]}',
    )
    assert found == {
        "s": AuthzSimple("s", "O=Example,CN=alice"),
        "l": AuthzList(
            "l",
            ListPolicy.ALLOW,
            (
                ListRule("CN=*", ListPolicy.DENY, ListFormat.GLOB),
                ListRule("CN=bob", ListPolicy.ALLOW),
            ),
        ),
        "j": AuthzList("j", ListPolicy.DENY, (ListRule("x", ListPolicy.ALLOW),)),
    }


@pytest.mark.parametrize("qom_type", ["authz-list-file", "authz-listfile"])
def test_the_list_file_type_has_both_its_names(qom_type: str, tmp_path: Path) -> None:
    path = tmp_path / "acl.json"
    path.write_text('{"rules": [{"match": "CN=alice", "policy": "allow"}]}')
    assert objects(f"{qom_type},id=f,filename={path},refresh=off") == {
        "f": AuthzListFile("f", str(path), refresh=False)
    }
    json_form = json.dumps({"qom-type": qom_type, "id": "f", "filename": str(path)})
    assert objects(json_form) == {"f": AuthzListFile("f", str(path), refresh=True)}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        # the dotted form QEMU 7.2 refuses altogether: keyval's rules (util/keyval.c)
        (
            "authz-list,id=a,rules.0.match=x",
            "-object authz-list,id=a,rules.0.match=x: Parameter 'rules[0].policy' is missing",
        ),
        (
            "authz-list,id=a,rules.1.match=x,rules.1.policy=allow",
            "-object authz-list,id=a,rules.1.match=x,rules.1.policy=allow: "
            "Parameter 'rules.0' missing",
        ),
        (
            "authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.0.bogus=1",
            "-object authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.0.bogus=1: "
            "Parameter 'rules[0].bogus' is unexpected",
        ),
        (
            "authz-list,id=a,rules=x",
            "-object authz-list,id=a,rules=x: Invalid parameter type for 'rules', expected: array",
        ),
        (
            "authz-list-file,id=a,filename=x,refresh=maybe",
            "-object authz-list-file,id=a,filename=x,refresh=maybe: "
            "Parameter 'refresh' expects 'on' or 'off'",
        ),
        (
            "authz-list-file,id=a,filename=x.json,refresh=on",
            "Unable to read 'x.json': Failed to open file “x.json”: No such file or directory",
        ),
    ],
)
def test_errors_qemu_cannot_show_are_worded_as_its_others(option: str, message: str) -> None:
    with pytest.raises(CommandLineError) as raised:
        objects(option)
    assert str(raised.value) == message


def test_a_watched_list_file_needs_a_directory_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("acl.json").write_text("{}")
    with pytest.raises(CommandLineError) as raised:
        objects("authz-list-file,id=a,filename=acl.json")
    assert str(raised.value) == "Filename must be an absolute path"
    assert objects("authz-list-file,id=a,filename=acl.json,refresh=off")
    assert objects("authz-list-file,id=a,filename=./acl.json,refresh=off")
    with pytest.raises(CommandLineError, match="Filename must be an absolute path"):
        objects("authz-list-file,id=a,filename=./acl.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "Expecting a JSON value"),
        (b"  \n", "Expecting a JSON value"),
        (b'{"policy": "allow", ', "JSON parse error, premature EOI"),
        (b"[1]", "File '/f.json' must contain a JSON object"),
        (b'{"policy": "allow"} {}', "Expecting at most one JSON value"),
        (b'{"policy": "maybe"}', "Parameter 'policy' does not accept value 'maybe'"),
        (b'{"policy": 1}', "Invalid parameter type for 'policy', expected: string"),
        (b'{"rules": [{"match": "x"}]}', "Parameter 'rules[0].policy' is missing"),
        (b'{"id": "x"}', "Property 'authz-list.id' not found"),
        (b'{"qom-type": "authz-list"}', "Property 'authz-list.qom-type' not found"),
    ],
)
def test_list_file_errors(content: bytes, message: str) -> None:
    with pytest.raises(ObjectError) as raised:
        parse_list_file(content, "/f.json")
    assert raised.value.message == message
    assert not raised.value.located


def test_a_list_file_is_read_up_to_a_nul_as_qemu_reads_a_c_string() -> None:
    assert parse_list_file(b'{"policy": "allow"}\0garbage', "/f") == AuthzList(
        None, ListPolicy.ALLOW
    )


def test_decisions_first_matching_rule_else_the_policy() -> None:
    rules = AuthzList(
        "a",
        ListPolicy.ALLOW,
        (
            ListRule("CN=bob", ListPolicy.DENY),
            ListRule("CN=b*", ListPolicy.ALLOW, ListFormat.GLOB),
            ListRule("CN=?", ListPolicy.DENY, ListFormat.GLOB),
        ),
    )
    assert not rules.is_allowed("CN=bob")
    assert rules.is_allowed("CN=bobby")
    assert not rules.is_allowed("CN=x")
    assert rules.is_allowed("CN=xy")
    assert not AuthzList("a").is_allowed("anything")
    assert AuthzSimple("s", "CN=a").is_allowed("CN=a")
    assert not AuthzSimple("s", "CN=a").is_allowed("CN=a ")
    assert not AuthzListFile("f", "/f").is_allowed("CN=a", None)


_GLOB_CHARS = st.sampled_from(["*", "?", "a", "b", "[", "]", "\\", "é", ",", "="])


@needs_glib
@settings(max_examples=500, deadline=None)
@given(
    pattern=st.lists(_GLOB_CHARS, max_size=7).map("".join),
    text=st.lists(_GLOB_CHARS, max_size=7).map("".join),
)
@example(pattern="a[b]", text="a[b]")
@example(pattern="a\\*", text="a\\bc")
@example(pattern="**a*", text="ba")
@example(pattern="?", text="é")
def test_glob_is_glibs_g_pattern_match_simple(pattern: str, text: str) -> None:
    assert GLIB is not None
    expected = bool(GLIB.g_pattern_match_simple(pattern.encode(), text.encode()))
    assert glob_match(pattern, text) is expected


class _GError(ctypes.Structure):
    _fields_ = [("domain", ctypes.c_uint32), ("code", ctypes.c_int), ("message", ctypes.c_char_p)]


def glib_file_get_contents(path: str) -> bytes | str:
    """GLib's own g_file_get_contents: the bytes, or its error message."""
    assert GLIB is not None
    contents = ctypes.c_char_p()
    length = ctypes.c_size_t()
    error = ctypes.POINTER(_GError)()
    function = GLIB.g_file_get_contents
    function.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.POINTER(_GError)),
    ]
    if function(path.encode(), ctypes.byref(contents), ctypes.byref(length), ctypes.byref(error)):
        data = ctypes.string_at(contents, length.value)
        GLIB.g_free(contents)
        return data
    message = error.contents.message.decode()
    GLIB.g_error_free(error)
    return message


@needs_glib
def test_files_are_read_with_glibs_error_texts(tmp_path: Path) -> None:
    regular = tmp_path / "acl.json"
    regular.write_bytes(b'{"policy": "allow"}')
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for path in (regular, empty, tmp_path, tmp_path / "missing", tmp_path / "missing" / "x"):
        expected = glib_file_get_contents(str(path))
        try:
            got: bytes | str = read_like_glib(str(path))
        except OSError as error:
            got = str(error)
        assert got == expected, path


def test_a_list_file_is_read_in_its_place_among_the_objects(tmp_path: Path) -> None:
    """``authz-list-file`` (which QEMU 7.2 cannot create) is made where QEMU makes the other
    early objects: in command-line order, after every option's properties were checked."""
    missing_file = f"authz-list-file,id=f,filename={tmp_path}/none.json"
    missing_dir = f"tls-creds-x509,id=t,dir={tmp_path}/none,endpoint=server"
    unreadable = f"Unable to read '{tmp_path}/none.json'"
    inaccessible = f"Unable to access credentials {tmp_path}/none/ca-cert.pem"

    def first_error(*options: str) -> str:
        arguments = [part for option in options for part in ("-object", option)]
        with pytest.raises(CommandLineError) as raised:
            parse_command_line(arguments, objects=CommandLineObjects())
        return str(raised.value)

    assert first_error(missing_file, missing_dir).startswith(unreadable)
    assert first_error(missing_dir, missing_file).startswith(inaccessible)
    assert first_error(missing_file, "authz-simple,id=a") == (
        "-object authz-simple,id=a: Parameter 'identity' is missing"
    )
