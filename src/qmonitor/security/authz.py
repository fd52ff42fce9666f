"""QEMU's authorization objects: which identities a TLS listener admits (sans I/O).

A chardev with ``tls-authz=ID`` asks the object ``ID`` whether the client certificate's
distinguished name (:mod:`qmonitor.security.x509dn`) may connect; a refused client is disconnected
before the greeting. The objects are QEMU 7.2's (authz/simple.c, authz/list.c,
authz/listfile.c, qapi/authz.json):

- ``authz-simple,id=ID,identity=DN``: exactly one identity (``g_str_equal``).
- ``authz-list``: ``rules`` tried in order, the first that matches decides (its ``policy``);
  ``policy`` (default ``deny``) decides when none does. A rule's ``format`` is ``exact``
  (the default) or ``glob``: GLib's ``g_pattern_match_simple``, where ``*`` is any text and
  ``?`` one character, nothing else is special and nothing escapes.
- ``authz-list-file,id=ID,filename=FILE[,refresh=on|off]``: an ``authz-list`` read from a JSON
  file (``{"policy": "deny", "rules": [...]}``), read again when it changes if ``refresh``
  (QEMU's default on Linux, where it has inotify). If a reload fails, everything is refused
  until the file loads again; a deleted file keeps the rules last loaded, as QEMU's inotify
  watch ignores deletions. The reading is the caller's (see :mod:`qmonitor.server.authorize`):
  here :meth:`AuthzListFile.is_allowed` takes the rules last loaded.

Objects are built from the ``-object`` properties :mod:`qmonitor.cmdline` parsed, with QEMU's
errors (:class:`~qmonitor.cmdline.objects.ObjectError`). Where we differ on purpose:

- QEMU 7.2's QAPI names the file type ``authz-listfile`` but QOM registers it as
  ``authz-list-file``, so QEMU 7.2 can create neither; both names work here.
- QEMU 7.2 refuses ``authz-list`` rules in the ``-object key=value`` form
  (``Invalid parameter 'rules.0.match'``): only its JSON form can give rules. Here the dotted
  keyval form (``rules.0.match=...,rules.0.policy=allow``) is accepted too and read as QEMU's
  keyval parser reads dotted keys (util/keyval.c), with its errors.
- The properties of a list file are read in file order; QEMU reads them in its hash order,
  which only decides which of two errors in one file is reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from qmonitor.cmdline.keyval import KeyvalError, keyval_parse
from qmonitor.cmdline.objects import ObjectError, PropertyVisitor, members_of
from qmonitor.cmdline.qjson import JSONValueError, parse_json_value

AUTHZ_SIMPLE: Final = "authz-simple"
AUTHZ_LIST: Final = "authz-list"
AUTHZ_LIST_FILE: Final = "authz-list-file"  # QOM's name (authz/listfile.h TYPE_QAUTHZ_LIST_FILE)
AUTHZ_LISTFILE: Final = "authz-listfile"  # QAPI's name (qapi/qom.json ObjectType)
AUTHZ_TYPES: Final = frozenset({AUTHZ_SIMPLE, AUTHZ_LIST, AUTHZ_LIST_FILE, AUTHZ_LISTFILE})

REFRESH_DEFAULT: Final = True
"""authz/listfile.c qauthz_list_file_init: ``refresh`` defaults to on with CONFIG_INOTIFY1."""


class ListPolicy(StrEnum):
    """qapi/authz.json ``QAuthZListPolicy``."""

    DENY = "deny"
    ALLOW = "allow"


class ListFormat(StrEnum):
    """qapi/authz.json ``QAuthZListFormat``."""

    EXACT = "exact"  # the whole identity, byte for byte
    GLOB = "glob"  # g_pattern_match_simple: '*' and '?'


def glob_match(pattern: str, identity: str) -> bool:
    """GLib's ``g_pattern_match_simple(pattern, identity)``.

    ``*`` matches any text (empty too), ``?`` exactly one character (a UTF-8 character in
    GLib, a code point here); every other character, ``[`` and ``\\`` included, is itself.
    """
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    return re.fullmatch(regex, identity, re.DOTALL) is not None


@dataclass(frozen=True, slots=True)
class ListRule:
    """qapi/authz.json ``QAuthZListRule``."""

    match: str
    policy: ListPolicy
    format: ListFormat = ListFormat.EXACT

    def matches(self, identity: str) -> bool:
        """authz/list.c qauthz_list_is_allowed: ``g_str_equal`` or the glob."""
        if self.format is ListFormat.GLOB:
            return glob_match(self.match, identity)
        return self.match == identity


@dataclass(frozen=True, slots=True)
class AuthzSimple:
    """``authz-simple``: admits one identity."""

    id: str
    identity: str

    def is_allowed(self, identity: str) -> bool:
        """authz/simple.c qauthz_simple_is_allowed."""
        return identity == self.identity


@dataclass(frozen=True, slots=True)
class AuthzList:
    """``authz-list``: the first matching rule decides, else ``policy``.

    ``id`` is None for the list a list file holds (QEMU creates it without one).
    """

    id: str | None
    policy: ListPolicy = ListPolicy.DENY
    rules: tuple[ListRule, ...] = ()

    def is_allowed(self, identity: str) -> bool:
        """authz/list.c qauthz_list_is_allowed."""
        for rule in self.rules:
            if rule.matches(identity):
                return rule.policy is ListPolicy.ALLOW
        return self.policy is ListPolicy.ALLOW


@dataclass(frozen=True, slots=True)
class AuthzListFile:
    """``authz-list-file``: an :class:`AuthzList` kept in a JSON file."""

    id: str
    filename: str
    refresh: bool = REFRESH_DEFAULT

    def is_allowed(self, identity: str, loaded: AuthzList | None) -> bool:
        """authz/listfile.c qauthz_list_file_is_allowed: refused while nothing is loaded."""
        return loaded is not None and loaded.is_allowed(identity)


Authz = AuthzSimple | AuthzList | AuthzListFile


# --- Properties -> objects (QEMU's QAPI input visitors) -------------------------------------


_MEMBERS: Final[dict[str, tuple[str, ...]]] = {
    AUTHZ_SIMPLE: ("identity",),
    AUTHZ_LIST: ("policy", "rules"),
    AUTHZ_LIST_FILE: ("filename", "refresh"),
    AUTHZ_LISTFILE: ("filename", "refresh"),
}
_RULE_MEMBERS: Final = ("match", "policy", "format")


def _rules(visitor: PropertyVisitor, data: Mapping[str, object]) -> tuple[ListRule, ...]:
    """qapi/authz.json ``rules``: a list of ``QAuthZListRule``, each checked in order."""
    value = data.get("rules")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ObjectError("Invalid parameter type for 'rules', expected: array")
    rules = []
    for index, element in enumerate(value):
        path = f"rules[{index}]"
        if not isinstance(element, dict):
            raise ObjectError(f"Invalid parameter type for '{path}', expected: object")
        match = visitor.required_string(element, "match", f"{path}.match")
        policy = visitor.enum(element, "policy", f"{path}.policy", ListPolicy)
        if policy is None:
            raise visitor.missing(f"{path}.policy")
        rule_format = visitor.enum(element, "format", f"{path}.format", ListFormat)
        visitor.unexpected(element, _RULE_MEMBERS, f"{path}.")
        rules.append(ListRule(match, policy, rule_format or ListFormat.EXACT))
    return tuple(rules)


def _crumple_dotted(members: Mapping[str, object]) -> dict[str, object]:
    """The key=value form's members, dotted keys nested as util/keyval.c nests them.

    QemuOpts keeps ``rules.0.match=x`` as one flat key; writing the members back as a keyval
    string (``,`` doubled in values) and parsing it gives keyval's lists and its errors.
    """
    text = ",".join(f"{key}={str(value).replace(',', ',,')}" for key, value in members.items())
    try:
        return dict(keyval_parse(text, None, help_allowed=False))
    except KeyvalError as error:
        raise ObjectError(error.message) from None


def authz_from_properties(properties: Mapping[str, object], *, keyval: bool) -> Authz:
    """The authz object an ``-object`` option describes, or :class:`ObjectError`.

    ``properties`` hold ``qom-type`` (one of :data:`AUTHZ_TYPES`) and ``id``, checked by
    :mod:`qmonitor.cmdline`, and the object's members; ``keyval`` is true for the
    ``-object TYPE,key=value`` form and false for the JSON form. A list file is not read here
    (:mod:`qmonitor.server.authorize` reads it).
    """
    qom_type = str(properties["qom-type"])
    object_id = str(properties["id"])
    members = members_of(properties)
    if keyval:
        members = _crumple_dotted(members)
    visitor = PropertyVisitor(keyval=keyval)
    authz: Authz
    if qom_type == AUTHZ_SIMPLE:
        authz = AuthzSimple(object_id, visitor.required_string(members, "identity", "identity"))
    elif qom_type == AUTHZ_LIST:
        policy = visitor.enum(members, "policy", "policy", ListPolicy) or ListPolicy.DENY
        authz = AuthzList(object_id, policy, _rules(visitor, members))
    elif qom_type in (AUTHZ_LIST_FILE, AUTHZ_LISTFILE):
        filename = visitor.required_string(members, "filename", "filename")
        refresh = visitor.boolean(members, "refresh", "refresh")
        authz = AuthzListFile(object_id, filename, REFRESH_DEFAULT if refresh is None else refresh)
    else:
        raise ValueError(f"{qom_type} is not an authz object type")
    visitor.unexpected(members, _MEMBERS[qom_type])
    return authz


def _glib_dirname(path: str) -> str:
    """``g_path_get_dirname``: ``.`` for a path without a separator."""
    head, separator, _ = path.rpartition("/")
    if not separator:
        return "."
    stripped = head.rstrip("/")
    return stripped if stripped else "/"


def watch_error(filename: str) -> ObjectError | None:
    """What QEMU says about watching ``filename`` for ``refresh=on`` (None: nothing).

    authz/listfile.c qauthz_list_file_complete checks this after the first load, so a file
    that does not load is reported first. (Its other check, a last component ``.``, cannot
    fail there: such a path is a directory, which does not load.)
    """
    if _glib_dirname(filename) == ".":
        return ObjectError("Filename must be an absolute path", located=False)
    return None


# --- List files ---------------------------------------------------------------------------


def read_error(filename: str, reason: str) -> ObjectError:
    """authz/listfile.c qauthz_list_file_load: the file could not be read (GLib's reason)."""
    return ObjectError(f"Unable to read '{filename}': {reason}", located=False)


def parse_list_file(content: bytes, filename: str) -> AuthzList:
    """authz/listfile.c qauthz_list_file_load: the list a file's bytes describe.

    The file is QEMU's JSON (its lexer and errors), read as a C string (up to a NUL), and must
    be an object whose members are an ``authz-list``'s properties; each is set as QEMU sets a
    property (``Property 'authz-list.foo' not found`` for any other).
    """
    text = content.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    try:
        value = parse_json_value(text)
    except JSONValueError as error:
        raise ObjectError(error.message, located=False) from None
    if not isinstance(value, dict):
        raise ObjectError(f"File '{filename}' must contain a JSON object", located=False)
    visitor = PropertyVisitor(keyval=False)
    policy = ListPolicy.DENY
    rules: tuple[ListRule, ...] = ()
    try:
        for name in value:
            if name == "policy":
                policy = visitor.enum(value, "policy", "policy", ListPolicy) or policy
            elif name == "rules":
                rules = _rules(visitor, value)
            else:
                raise ObjectError(f"Property '{AUTHZ_LIST}.{name}' not found")
    except ObjectError as error:
        raise ObjectError(error.message, located=False) from None
    return AuthzList(None, policy, rules)
