"""The roles policy (issue 9 item 4): parsing, deciding, the human monitor's names.

Decisions are checked on the real registry of ``qmonitor run`` (the machine's commands, the
human monitor's, ``human-monitor-command``), so the names are the ones clients use.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmonitor import Monitor
from qmonitor.core.commands import Command
from qmonitor.hmp.table import command_table
from qmonitor.machine.commands import register_machine_commands
from qmonitor.machine.machine import Machine
from qmonitor.machine.snapshots import SnapshotStore
from qmonitor.security.policy import (
    Identity,
    Policy,
    PolicyError,
    command_names,
    parse_policy,
)
from qmonitor.server.human import register_human_commands, register_human_monitor_command

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "policy.toml"
ALICE = Identity("tcp", "127.0.0.1:40000", tls_dn="O=Example,CN=alice")
MALLORY = Identity("tcp", "127.0.0.1:40001", tls_dn="O=Example,CN=mallory")
UNIX_1000 = Identity("unix", "/run/vm.qmp", uid=1000, gid=1000, pid=42)
UNIX_1001 = Identity("unix", "/run/vm.qmp", uid=1001, gid=1001, pid=43)


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> Monitor:
    """A monitor with every command ``qmonitor run`` has."""
    monitor = Monitor()
    register_machine_commands(
        monitor,
        Machine(ram_size=1 << 20),
        SnapshotStore(tmp_path_factory.mktemp("state")),
        on_exit=lambda status: None,
    )
    register_human_commands(monitor)
    register_human_monitor_command(monitor)
    return monitor


@pytest.fixture(scope="module")
def example() -> Policy:
    return parse_policy(EXAMPLE.read_text(), str(EXAMPLE))


def command(monitor: Monitor, name: str) -> Command:
    found = monitor.registry.get(name)
    assert found is not None, name
    return found


def test_the_example_policy_gives_each_identity_its_role(example: Policy) -> None:
    assert example.role_for(ALICE) == "operator"
    assert example.role_for(UNIX_1000) == "operator"
    assert example.role_for(MALLORY) == "observer"
    assert example.role_for(UNIX_1001) == "observer"
    assert example.role_for(Identity("tcp", "127.0.0.1:1")) == "observer"


def test_without_a_default_role_an_identity_no_grant_names_is_refused() -> None:
    policy = parse_policy('[roles.admin]\nallow = ["*"]\n[[grant]]\nuid = 0\nrole = "admin"\n')
    assert policy.role_for(Identity("unix", uid=0)) == "admin"
    assert policy.role_for(UNIX_1000) is None
    assert policy.role_for(Identity("tcp")) is None


def test_a_grant_by_user_name_is_the_users_uid() -> None:
    policy = parse_policy(
        '[roles.a]\nallow = ["*"]\n[[grant]]\nuser = "alice"\nrole = "a"\n',
        uid_of_user={"alice": 1000}.get,
    )
    assert policy.role_for(UNIX_1000) == "a"
    assert policy.role_for(UNIX_1001) is None


def test_the_first_grant_naming_an_identity_decides() -> None:
    policy = parse_policy(
        '[roles.a]\n[roles.b]\n[[grant]]\nidentity = "CN=x"\nrole = "a"\n'
        '[[grant]]\nuid = 1000\nrole = "b"\n'
    )
    both = Identity("tcp", tls_dn="CN=x", uid=1000)
    assert policy.role_for(both) == "a"


def test_an_observer_may_query_but_not_stop(example: Policy, monitor: Monitor) -> None:
    assert example.allows("observer", command(monitor, "query-status"))
    assert example.allows("observer", command(monitor, "x-query-ram-digest"))
    refused = example.allows("observer", command(monitor, "stop"))
    assert not refused
    assert refused.error().desc == "The command 'stop' is not allowed for role 'observer'"
    assert refused.error().error_class.value == "GenericError"


def test_deny_wins_over_allow_star(example: Policy, monitor: Monitor) -> None:
    assert example.allows("operator", command(monitor, "stop"))
    decision = example.allows("operator", command(monitor, "quit"))
    assert not decision
    assert decision.entry == "quit"
    assert example.allows("operator", "quit").entry == "quit"


def test_a_uri_scheme_entry_refuses_only_that_scheme(example: Policy, monitor: Monitor) -> None:
    migrate = command(monitor, "migrate")
    refused = example.allows("operator", migrate, {"uri": "file:/tmp/vm.state"})
    assert not refused
    assert refused.error().desc == (
        "The command 'migrate' is not allowed for role 'operator' with a 'file' URI"
    )
    assert example.allows("operator", migrate, {"uri": "tcp:127.0.0.1:4444"})
    assert example.allows("operator", migrate)  # listed: it runs with other URIs


def test_a_scheme_entry_with_a_glob_covers_incoming_migration_too(monitor: Monitor) -> None:
    policy = parse_policy('[roles.a]\nallow = ["*"]\ndeny = ["migrate*:file"]\n')
    table = command_table(monitor.registry)
    for line in ("migrate file:/x", "migrate_incoming file:/x"):
        decision = policy.check_human_line("a", table, line)
        assert decision is not None and not decision
    incoming = command(monitor, "migrate-incoming")
    assert not policy.allows("a", incoming, {"uri": "file:/x"})
    assert policy.allows("a", incoming, {"uri": "unix:/x"})
    assert policy.allows("a", command(monitor, "migrate-set-parameters"), {})


def test_the_query_commands_listing_leaves_out_what_the_role_may_not_run(
    example: Policy, monitor: Monitor
) -> None:
    observer = {c.name for c in example.visible("observer", monitor.registry.qmp_commands())}
    assert {"query-status", "query-commands", "qmp_capabilities", "human-monitor-command"} <= (
        observer
    )
    assert not observer & {"stop", "cont", "quit", "migrate", "snapshot-save"}
    operator = {c.name for c in example.visible("operator", monitor.registry.qmp_commands())}
    assert "stop" in operator and "migrate" in operator
    assert not operator & {"quit", "human-monitor-command"}


def test_commands_are_known_by_their_qmp_and_human_names(monitor: Monitor) -> None:
    assert command_names(command(monitor, "query-status")) == (
        "query-status",
        "info status",
        "info",
    )
    assert command_names(command(monitor, "hmp-migrate")) == ("hmp-migrate", "migrate")
    assert command_names(command(monitor, "migrate")) == ("migrate",)
    assert command_names(command(monitor, "stop")) == ("stop",)
    assert command_names(command(monitor, "info-snapshots")) == (
        "info-snapshots",
        "info snapshots",
        "info",
    )


@pytest.mark.parametrize(
    ("role", "line", "allowed", "desc"),
    [
        ("observer", "info status", True, None),
        ("observer", "  info snapshots", True, None),
        ("observer", "info", True, None),
        ("observer", "help stop", True, None),
        ("observer", "stop", False, "The command 'stop' is not allowed for role 'observer'"),
        ("observer", "s", False, "The command 'stop' is not allowed for role 'observer'"),
        ("observer", "migrate -d tcp:x:1", False, None),
        ("operator", "stop", True, None),
        ("operator", "migrate -d tcp:127.0.0.1:4444", True, None),
        (
            "operator",
            "migrate -d file:/tmp/x",
            False,
            "The command 'migrate' is not allowed for role 'operator' with a 'file' URI",
        ),
        ("operator", "migrate_incoming file:/tmp/x", True, None),  # "migrate" names not this
        ("operator", "q", False, "The command 'quit' is not allowed for role 'operator'"),
        ("operator", "migrate", True, None),  # no URI: refused later by the parser, not here
    ],
)
def test_human_command_lines_are_checked_as_the_command_they_run(
    example: Policy, monitor: Monitor, role: str, line: str, allowed: bool, desc: str | None
) -> None:
    decision = example.check_human_line(role, command_table(monitor.registry), line)
    assert decision is not None
    assert bool(decision) is allowed
    if desc is not None:
        assert decision.error().desc == desc


def test_a_line_naming_no_command_is_left_to_the_human_monitor(
    example: Policy, monitor: Monitor
) -> None:
    table = command_table(monitor.registry)
    assert example.check_human_line("observer", table, "   ") is None
    assert example.check_human_line("observer", table, "frobnicate now") is None


def test_entries_naming_no_command_are_reported(monitor: Monitor) -> None:
    policy = parse_policy('[roles.a]\nallow = ["query-*", "qiut"]\ndeny = ["stpo", "migrate:file"]')
    assert policy.unmatched_entries(monitor.registry) == [
        "roles.a.allow: 'qiut'",
        "roles.a.deny: 'stpo'",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "roles = 1 2",
            "p.toml: Expected newline or end of document after a statement (at line 1, column 11)",
        ),
        (
            "[roles.a]\n[other]\n",
            "p.toml: unknown key 'other' (expected default-role, roles, grant)",
        ),
        ("", "p.toml: defines no role (add a [roles.NAME] table)"),
        ('[roles.a]\nalow = ["*"]\n', "p.toml: roles.a: unknown key 'alow' (expected allow, deny)"),
        (
            '[roles."a b"]\n',
            "p.toml: roles.a b: a role name is a letter, then letters, digits, '_.-'",
        ),
        ('[roles.a]\nallow = "*"\n', "p.toml: roles.a.allow: expected an array of command names"),
        ("[roles.a]\nallow = [1]\n", "p.toml: roles.a.allow[0]: expected a string, not int"),
        (
            '[roles.a]\nallow = ["q", "[abc"]\n',
            "p.toml: roles.a.allow[1]: '[abc' has a '[' without its ']'",
        ),
        ('[roles.a]\nallow = ["a]"]\n', "p.toml: roles.a.allow[0]: 'a]' has a ']' without its '['"),
        (
            '[roles.a]\nallow = ["[]"]\n',
            "p.toml: roles.a.allow[0]: '[]' has a bad character class '[]'",
        ),
        (
            '[roles.a]\nallow = ["[!]x"]\n',
            "p.toml: roles.a.allow[0]: '[!]x' has a bad character class '[!]'",
        ),
        ('[roles.a]\nallow = [""]\n', "p.toml: roles.a.allow[0]: '' is empty"),
        (
            '[roles.a]\nallow = ["stop, cont"]\n',
            "p.toml: roles.a.allow[0]: 'stop, cont' has the character ',', "
            "which no command name has",
        ),
        (
            '[roles.a]\nallow = [" stop"]\n',
            "p.toml: roles.a.allow[0]: ' stop' has spaces at an end or two in a row",
        ),
        (
            '[roles.a]\nallow = ["migrate:file"]\n',
            "p.toml: roles.a.allow[0]: 'migrate:file' names a URI scheme, "
            "which only a deny entry can refuse",
        ),
        (
            '[roles.a]\ndeny = ["migrate:"]\n',
            "p.toml: roles.a.deny[0]: 'migrate:' has a URI scheme that is empty",
        ),
        (
            '[roles.a]\ndeny = ["migrate:fi/le"]\n',
            "p.toml: roles.a.deny[0]: 'migrate:fi/le' has a URI scheme that has the "
            "character '/', which no command name has",
        ),
        ('default-role = "b"\n[roles.a]\n', "p.toml: default-role 'b' is not defined in [roles]"),
        ("default-role = 1\n[roles.a]\n", "p.toml: default-role must be a role's name"),
        (
            '[roles.a]\n[[grant]]\nuid = 1\nrole = "b"\n',
            "p.toml: [[grant]] #1: role 'b' is not defined in [roles]",
        ),
        ("[roles.a]\n[[grant]]\nuid = 1\n", 'p.toml: [[grant]] #1: needs role = "NAME"'),
        (
            '[roles.a]\n[[grant]]\nrole = "a"\n',
            "p.toml: [[grant]] #1: needs exactly one of identity, uid and user",
        ),
        (
            '[roles.a]\n[[grant]]\nuid = 1\nidentity = "CN=x"\nrole = "a"\n',
            "p.toml: [[grant]] #1: needs exactly one of identity, uid and user",
        ),
        (
            '[roles.a]\n[[grant]]\nuid = -1\nrole = "a"\n',
            "p.toml: [[grant]] #1: uid must be an integer from 0 to 4294967295",
        ),
        (
            '[roles.a]\n[[grant]]\nidentity = ""\nrole = "a"\n',
            "p.toml: [[grant]] #1: identity must be a non-empty string",
        ),
        (
            '[roles.a]\n[[grant]]\nuser = "nobody-here"\nrole = "a"\n',
            "p.toml: [[grant]] #1: there is no user 'nobody-here'",
        ),
        (
            '[roles.a]\n[[grant]]\nuid = 1\nrole = "a"\ncolour = "red"\n',
            "p.toml: [[grant]] #1: unknown key 'colour' (expected identity, uid, user, role)",
        ),
        (
            '[roles.a]\n[[grant]]\nuid = 1\nrole = "a"\n[[grant]]\nuid = 1\nrole = "a"\n',
            "p.toml: [[grant]] #2 names the same uid as [[grant]] #1",
        ),
        ("[roles.a]\ngrant = 3\n", "p.toml: roles.a: unknown key 'grant' (expected allow, deny)"),
        ("grant = 3\n[roles.a]\n", "p.toml: grant must be an array of tables ([[grant]])"),
    ],
)
def test_a_bad_policy_gets_one_line_naming_the_file_and_the_place(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, "p.toml")
    assert str(raised.value) == message
    assert "\n" not in str(raised.value)


# --- Deny always wins (hypothesis) ----------------------------------------------------------

_PIECES = st.sampled_from(["query", "x", "migrate", "stop", "info", "-", "_", "a", "b", "*", "?"])
_PATTERNS = st.lists(_PIECES, min_size=1, max_size=4).map("".join)
_SCHEMES = st.sampled_from(["file", "tcp", "unix", "f*", "*", "?cp"])
_DENY_ENTRIES = _PATTERNS | st.tuples(_PATTERNS, _SCHEMES).map(":".join)
_NAMES = (
    st.lists(
        st.sampled_from(["query", "x", "migrate", "stop", "info", "-", "_", "a", "b", " "]),
        min_size=1,
        max_size=5,
    )
    .map("".join)
    .map(str.strip)
    .filter(bool)
)
_URIS = st.tuples(st.sampled_from(["file", "tcp", "unix", "fd", ""]), st.text(max_size=3)).map(
    ":".join
)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


@settings(max_examples=300, deadline=None)
@given(
    allow=st.lists(_PATTERNS, max_size=4),
    deny=st.lists(_DENY_ENTRIES, min_size=1, max_size=4),
    names=st.lists(_NAMES, min_size=1, max_size=3),
    uri=_URIS,
)
def test_random_policies_never_grant_what_a_deny_entry_names(
    allow: list[str], deny: list[str], names: list[str], uri: str
) -> None:
    policy = parse_policy(f"[roles.r]\nallow = {_toml_list(allow)}\ndeny = {_toml_list(deny)}\n")
    for name in names:
        for arguments in (None, {"uri": uri}):
            decision = policy.allows("r", name, arguments)
            for entry in deny:
                command, _, scheme = entry.partition(":")
                if not fnmatch.fnmatchcase(name, command):
                    continue
                if not scheme or (
                    arguments is not None and fnmatch.fnmatchcase(uri.partition(":")[0], scheme)
                ):
                    assert not decision, (entry, name, arguments)
            if decision:
                assert any(fnmatch.fnmatchcase(name, pattern) for pattern in allow)
