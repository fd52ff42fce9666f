"""Per-command roles: who may run which command (beyond QEMU; sans I/O).

QEMU admits a client or not; once in, it may run every command. libvirt adds read-only and
manage ACLs per API. qmonitor's ``--policy FILE`` gives each connection a *role* and each role
the commands it may run::

    default-role = "observer"            # for identities no grant names; omit to refuse them
    [roles.observer]
    allow = ["query-*", "x-query-*", "qmp_capabilities", "human-monitor-command", "info", "help"]
    [roles.operator]
    allow = ["*"]
    deny = ["quit", "human-monitor-command", "migrate:file"]
    [[grant]]
    identity = "O=Example,CN=alice"      # a TLS distinguished name, as QEMU writes it
    role = "operator"
    [[grant]]
    uid = 1000                           # a unix peer (or user = "name")
    role = "operator"

The rules, all decided here:

- **Roles.** The first ``[[grant]]`` (in file order) naming the connection's identity gives its
  role: ``identity`` is a TLS distinguished name compared exactly, ``uid`` (or ``user``,
  turned into a uid when the file is read) a unix peer's SO_PEERCRED uid. Otherwise the
  connection gets ``default-role``, and without one it is refused.
- **Names.** ``allow`` and ``deny`` hold command names and glob patterns (``fnmatch``'s ``*``,
  ``?`` and ``[...]``, case-sensitive). A command is known by its registry name (its QMP name:
  ``query-status``, or ``hmp-migrate`` for a human-only command) and, when it has one, by its
  human monitor name (``info status``, ``migrate``); an ``info`` sub-command is also known as
  ``info``, the HMP command it is an argument of. So ``"query-*"`` lets ``info status`` run
  in the human monitor, ``"migrate"`` names QMP's ``migrate`` and HMP's, and ``"info"`` every
  ``info`` sub-command (QEMU's ``info`` commands only show things).
- **Deny wins.** A command one of whose names matches a ``deny`` entry is refused; otherwise it
  runs if one of its names matches an ``allow`` entry; otherwise it is refused.
- **URI schemes.** A ``deny`` entry ``COMMAND:SCHEME`` (``"migrate:file"``, ``"migrate*:unix"``)
  refuses a request of a command matching COMMAND whose ``uri`` argument has a scheme matching
  SCHEME. The scheme is the text before the URI's first ``:`` (all of it without one), case
  sensitive, as the migration code reads it; the commands with a ``uri`` argument are
  ``migrate``, ``migrate-incoming`` and HMP's ``migrate`` and ``migrate_incoming``. Such an
  entry only refuses requests, it never hides the command: ``query-commands`` lists what a role
  may run with some arguments.
- **The human monitor.** A human command line is checked as the registry command it names,
  with the arguments it parsed to (:meth:`Policy.check_human_line`); ``human-monitor-command``
  is checked itself, then again for the command its ``command-line`` runs.

A refused command gets one GenericError naming the command and the role
(:meth:`Decision.error`) and runs nothing.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from qmonitor.core.commands import Command
from qmonitor.core.errors import QMPError
from qmonitor.core.session import Identity
from qmonitor.hmp.parse import ArgumentError, find_command, parse_arguments
from qmonitor.hmp.table import INFO, CommandTable, human_name
from qmonitor.security.errors import PolicyError as PolicyError  # raised here, defined apart

URI_ARGUMENT: Final = "uri"
"""The argument a ``COMMAND:SCHEME`` entry reads (qapi/migration.json ``migrate``)."""

_TOP_KEYS: Final = ("default-role", "roles", "grant")
_ROLE_KEYS: Final = ("allow", "deny")
_GRANT_KEYS: Final = ("identity", "uid", "user", "role")
_GRANT_SUBJECTS: Final = ("identity", "uid", "user")
_ROLE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_SCHEME_CHARS: Final = _NAME_CHARS | {"+"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``allow``/``deny`` entry: a command pattern, and for ``deny`` maybe a URI scheme."""

    text: str  # as written in the file
    command: str
    scheme: str | None = None

    def names_match(self, names: Iterable[str]) -> bool:
        """Whether the command pattern matches one of a command's names."""
        return any(fnmatch.fnmatchcase(name, self.command) for name in names)


@dataclass(frozen=True, slots=True)
class Role:
    """A role's ``allow`` and ``deny`` entries."""

    name: str
    allow: tuple[Entry, ...] = ()
    deny: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class Grant:
    """A ``[[grant]]``: the identity it names (one of three kinds) and the role it gives."""

    role: str
    identity: str | None = None
    uid: int | None = None
    user: str | None = None  # as written; ``uid`` holds the user's uid

    def matches(self, identity: Identity) -> bool:
        """Whether ``identity`` is the one this grant names."""
        if self.identity is not None:
            return identity.tls_dn == self.identity
        return identity.uid is not None and identity.uid == self.uid


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a role may run a command; truthy when it may.

    ``command`` is the name to show (the human name for a human command line), ``entry`` the
    entry that decided (None: no ``allow`` entry matched), ``scheme`` the refused URI scheme.
    """

    allowed: bool
    role: str
    command: str
    entry: str | None = None
    scheme: str | None = None

    def __bool__(self) -> bool:
        return self.allowed

    def error(self) -> QMPError:
        """The GenericError a refused request is answered with."""
        text = f"The command '{self.command}' is not allowed for role '{self.role}'"
        if self.scheme is not None:
            text += f" with a '{self.scheme}' URI"
        return QMPError(text)


def command_names(command: Command) -> tuple[str, ...]:
    """Every name the policy knows ``command`` by (see the module docstring)."""
    names = [command.name]
    human = human_name(command)
    if human is not None and human != command.name:
        names.append(human)
    if human is not None and human.startswith(f"{INFO} "):
        names.append(INFO)
    return tuple(names)


def uri_scheme(uri: str) -> str:
    """The scheme a ``COMMAND:SCHEME`` entry compares: the text before the first ``:``."""
    return uri.partition(":")[0]


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy file (see the module docstring); immutable, shared by all sessions."""

    roles: Mapping[str, Role]
    grants: tuple[Grant, ...] = ()
    default_role: str | None = None
    source: str = "<policy>"

    def role_for(self, identity: Identity) -> str | None:
        """The role of a connection, or None to refuse it."""
        for grant in self.grants:
            if grant.matches(identity):
                return grant.role
        return self.default_role

    def allows(
        self,
        role: str,
        command: Command | str,
        arguments: Mapping[str, object] | None = None,
        *,
        human: bool = False,
    ) -> Decision:
        """May ``role`` run ``command`` (a registry command, or a bare name) with ``arguments``?

        Without ``arguments`` the URI-scheme entries are not consulted (for listing commands).
        ``human`` shows the command by its human name in the decision's error. Raises KeyError
        for a role the policy does not define.
        """
        rules = self.roles[role]
        if isinstance(command, Command):
            names = command_names(command)
            shown = (human_name(command) if human else None) or command.name
        else:
            names = (command,)
            shown = command
        uri = arguments.get(URI_ARGUMENT) if arguments is not None else None
        for entry in rules.deny:
            if not entry.names_match(names):
                continue
            if entry.scheme is None:
                return Decision(False, role, shown, entry.text)
            if isinstance(uri, str) and fnmatch.fnmatchcase(uri_scheme(uri), entry.scheme):
                return Decision(False, role, shown, entry.text, uri_scheme(uri))
        for entry in rules.allow:
            if entry.names_match(names):
                return Decision(True, role, shown, entry.text)
        return Decision(False, role, shown)

    def visible(self, role: str, commands: Iterable[Command]) -> list[Command]:
        """The commands ``role`` may run (with some arguments): for ``query-commands``,
        ``query-qmp-schema`` and ``help``."""
        return [command for command in commands if self.allows(role, command)]

    def check_human_line(self, role: str, table: CommandTable, line: str) -> Decision | None:
        """The decision for a human command line, checked before it runs.

        None when the line names no command (blank, or unknown: the human monitor prints its
        own error and runs nothing). A line whose arguments do not parse is decided by its
        command alone, so a refused command is refused before its arguments are read.
        """
        found = find_command(table, line)
        if not isinstance(found, tuple):
            return None
        entry, arguments_start = found
        decision = self.allows(role, entry.command, human=True)
        if not decision:
            return decision
        try:
            arguments = parse_arguments(entry, line[arguments_start:])
        except ArgumentError:
            return decision
        return self.allows(role, entry.command, arguments, human=True)

    def unmatched_entries(self, commands: Iterable[Command]) -> list[str]:
        """Entries that match none of ``commands``: likely typos, worth a warning at start."""
        names = [name for command in commands for name in command_names(command)]
        unmatched = []
        for role in self.roles.values():
            for kind, entries in (("allow", role.allow), ("deny", role.deny)):
                for entry in entries:
                    if not entry.names_match(names):
                        unmatched.append(f"roles.{role.name}.{kind}: '{entry.text}'")
        return unmatched


# --- Reading a policy -------------------------------------------------------------------------


def _pattern_error(pattern: str, allowed: frozenset[str], *, spaces: bool) -> str | None:
    """Why ``pattern`` is not a name or glob (None: it is one)."""
    if not pattern:
        return "is empty"
    if pattern != pattern.strip(" ") or "  " in pattern:
        return "has spaces at an end or two in a row"
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "[":
            end = pattern.find("]", position + 1)
            if end < 0:
                return "has a '[' without its ']'"
            body = pattern[position + 1 : end].removeprefix("!")
            if not body or any(c not in allowed for c in body):
                return f"has a bad character class '{pattern[position : end + 1]}'"
            position = end + 1
            continue
        if char == "]":
            return "has a ']' without its '['"
        if char not in allowed and char not in "*?" and not (spaces and char == " "):
            return f"has the character {char!r}, which no command name has"
        position += 1
    return None


def _entry(text: object, where: str, *, deny: bool) -> Entry:
    if not isinstance(text, str):
        raise PolicyError(f"{where}: expected a string, not {type(text).__name__}")
    command, colon, scheme = text.partition(":")
    problem = _pattern_error(command, _NAME_CHARS, spaces=True)
    if problem is None and colon:
        if not deny:
            problem = "names a URI scheme, which only a deny entry can refuse"
        else:
            scheme_problem = _pattern_error(scheme, _SCHEME_CHARS, spaces=False)
            problem = f"has a URI scheme that {scheme_problem}" if scheme_problem else None
    if problem is not None:
        raise PolicyError(f"{where}: '{text}' {problem}")
    return Entry(text, command, scheme if colon else None)


def _unknown_keys(table: Mapping[str, object], known: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            expected = ", ".join(known)
            raise PolicyError(f"{where}unknown key '{key}' (expected {expected})")


def _role(name: str, table: object, source: str) -> Role:
    where = f"{source}: roles.{name}"
    if not _ROLE_NAME.fullmatch(name):
        raise PolicyError(f"{where}: a role name is a letter, then letters, digits, '_.-'")
    if not isinstance(table, dict):
        raise PolicyError(f"{where}: expected a table with allow and deny")
    _unknown_keys(table, _ROLE_KEYS, f"{where}: ")
    lists: dict[str, tuple[Entry, ...]] = {}
    for kind in _ROLE_KEYS:
        value = table.get(kind, [])
        if not isinstance(value, list):
            raise PolicyError(f"{where}.{kind}: expected an array of command names")
        lists[kind] = tuple(
            _entry(item, f"{where}.{kind}[{index}]", deny=kind == "deny")
            for index, item in enumerate(value)
        )
    return Role(name, lists["allow"], lists["deny"])


def _grant(
    index: int,
    table: object,
    roles: Mapping[str, Role],
    source: str,
    uid_of_user: Callable[[str], int | None],
) -> Grant:
    where = f"{source}: [[grant]] #{index + 1}"
    if not isinstance(table, dict):
        raise PolicyError(f"{where}: expected a table")
    _unknown_keys(table, _GRANT_KEYS, f"{where}: ")
    role = table.get("role")
    if not isinstance(role, str):
        raise PolicyError(f'{where}: needs role = "NAME"')
    if role not in roles:
        raise PolicyError(f"{where}: role '{role}' is not defined in [roles]")
    subjects = [key for key in _GRANT_SUBJECTS if key in table]
    if len(subjects) != 1:
        raise PolicyError(f"{where}: needs exactly one of identity, uid and user")
    value = table[subjects[0]]
    if subjects[0] == "uid":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
            raise PolicyError(f"{where}: uid must be an integer from 0 to 4294967295")
        return Grant(role, uid=value)
    if not isinstance(value, str) or not value:
        raise PolicyError(f"{where}: {subjects[0]} must be a non-empty string")
    if subjects[0] == "identity":
        return Grant(role, identity=value)
    uid = uid_of_user(value)
    if uid is None:
        raise PolicyError(f"{where}: there is no user '{value}'")
    return Grant(role, uid=uid, user=value)


def _no_users(name: str) -> int | None:
    return None


def parse_policy(
    text: str,
    source: str = "<policy>",
    *,
    uid_of_user: Callable[[str], int | None] = _no_users,
) -> Policy:
    """Read a policy file's text; :class:`PolicyError` names the first problem.

    ``source`` names the file in errors. ``uid_of_user`` turns a grant's ``user`` into a
    uid (``pwd``, by the caller, which owns the I/O); by default no user exists.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{source}: {error}") from None
    _unknown_keys(document, _TOP_KEYS, f"{source}: ")
    roles_table = document.get("roles", {})
    if not isinstance(roles_table, dict) or not roles_table:
        raise PolicyError(f"{source}: defines no role (add a [roles.NAME] table)")
    roles = {name: _role(name, table, source) for name, table in roles_table.items()}
    default_role = document.get("default-role")
    if default_role is not None:
        if not isinstance(default_role, str):
            raise PolicyError(f"{source}: default-role must be a role's name")
        if default_role not in roles:
            raise PolicyError(f"{source}: default-role '{default_role}' is not defined in [roles]")
    grant_tables = document.get("grant", [])
    if not isinstance(grant_tables, list):
        raise PolicyError(f"{source}: grant must be an array of tables ([[grant]])")
    grants = tuple(
        _grant(index, table, roles, source, uid_of_user) for index, table in enumerate(grant_tables)
    )
    seen: dict[tuple[str, object], int] = {}
    for index, grant in enumerate(grants):
        key = ("identity", grant.identity) if grant.identity is not None else ("uid", grant.uid)
        if key in seen:
            raise PolicyError(
                f"{source}: [[grant]] #{index + 1} names the same {key[0]} as "
                f"[[grant]] #{seen[key] + 1}"
            )
        seen[key] = index
    return Policy(roles, grants, default_role, source)
