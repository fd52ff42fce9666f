"""The authz objects of a command line, ready to answer "may this identity connect?".

:mod:`qmonitor.security.authz` decides; this module owns the I/O the decisions need: reading an
``authz-list-file`` at start (with QEMU's errors, GLib's texts inside them) and again when
the file has changed. QEMU watches the file with inotify and reloads on its ``CREATED`` and
``MODIFIED`` events (util/filemonitor-inotify.c: a write, or a file renamed over it); here the
file's identity and times (``st_dev``, ``st_ino``, ``st_size``, ``st_mtime_ns``,
``st_ctime_ns``) are compared at each authorization, one ``stat()``, and the file is read
again when they differ: the same decisions, taken when they are needed. As with QEMU, a
deleted file keeps the rules last loaded, and a reload that fails refuses everyone (and is
logged) until the file loads again.

Also here: :func:`load_policy`, the roles policy read from its file with user names resolved.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qmonitor.cmdline.objects import ObjectError
from qmonitor.security.authz import (
    Authz,
    AuthzList,
    AuthzListFile,
    parse_list_file,
    read_error,
    watch_error,
)
from qmonitor.security.errors import PolicyError as PolicyError  # for qmonitor.__init__

if TYPE_CHECKING:
    from qmonitor.security.policy import Policy

log = logging.getLogger("qmonitor.authz")

_READ_CHUNK = 65536


def read_like_glib(filename: str) -> bytes:
    """``g_file_get_contents(filename)``; OSError's text is GLib's message for the failure.

    GLib 2.74 gfileutils.c: ``Failed to open file “F”: REASON`` when it does not open,
    ``Failed to read from file “F”: REASON`` for a regular file that fails to read, and
    ``Error reading file “F”: REASON`` for anything else (a directory: ``Is a directory``).
    """
    try:
        descriptor = os.open(filename, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise OSError(f"Failed to open file “{filename}”: {error.strerror}") from None
    try:
        regular = stat.S_ISREG(os.fstat(descriptor).st_mode)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(descriptor, _READ_CHUNK)
            except OSError as error:
                kind = "Failed to read from file" if regular else "Error reading file"
                raise OSError(f"{kind} “{filename}”: {error.strerror}") from None
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(descriptor)


_FileStamp = tuple[int, int, int, int, int]


def _stamp(status: os.stat_result) -> _FileStamp:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def _load(spec: AuthzListFile) -> tuple[AuthzList, _FileStamp | None]:
    """Read and parse the file: (its rules, the stamp of what was read); ObjectError."""
    try:
        status = os.stat(spec.filename)
    except OSError:
        status = None
    try:
        content = read_like_glib(spec.filename)
    except OSError as error:
        raise read_error(spec.filename, str(error)) from None
    return parse_list_file(content, spec.filename), _stamp(status) if status else None


class ListFileRules:
    """The rules an ``authz-list-file`` holds now (see the module docstring)."""

    def __init__(self, spec: AuthzListFile) -> None:
        """Load the file once; ObjectError with QEMU's message if it does not load."""
        self.spec = spec
        self.rules: AuthzList | None
        self.rules, self._stamp = _load(spec)
        if spec.refresh:
            problem = watch_error(spec.filename)
            if problem is not None:
                raise problem

    def current(self) -> AuthzList | None:
        """The rules to decide with: reloaded first if ``refresh`` and the file changed."""
        if not self.spec.refresh:
            return self.rules
        try:
            stamp = _stamp(os.stat(self.spec.filename))
        except OSError:
            return self.rules  # deleted: QEMU's watch ignores it
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.rules, _ = _load(self.spec)
                log.info("authz %s: reloaded %s", self.spec.id, self.spec.filename)
            except ObjectError as error:
                self.rules = None
                log.error("%s", error.message)
        return self.rules


@dataclass(frozen=True, slots=True)
class _Checker:
    authz: Authz
    file: ListFileRules | None = None

    def is_allowed(self, identity: str) -> bool:
        if isinstance(self.authz, AuthzListFile):
            assert self.file is not None
            return self.authz.is_allowed(identity, self.file.current())
        return self.authz.is_allowed(identity)


class Authorizer:
    """The authz objects by id; :meth:`is_allowed` is what a ``tls-authz=ID`` listener asks.

    :meth:`add` objects (a list file is read there: ObjectError if it does not load); a
    command line's come from :class:`qmonitor.server.objects.CommandLineObjects`.
    """

    def __init__(self) -> None:
        self._checkers: dict[str, _Checker] = {}

    def add(self, authz: Authz) -> None:
        """Make ``authz`` available by its id, reading its file if it has one."""
        assert authz.id is not None
        rules = ListFileRules(authz) if isinstance(authz, AuthzListFile) else None
        self._checkers[authz.id] = _Checker(authz, rules)

    def __contains__(self, authz_id: object) -> bool:
        return authz_id in self._checkers

    @property
    def objects(self) -> Mapping[str, Authz]:
        """The objects by id."""
        return {authz_id: checker.authz for authz_id, checker in self._checkers.items()}

    def is_allowed(self, authz_id: str, identity: str) -> bool:
        """Whether object ``authz_id`` admits ``identity`` (KeyError for an unknown id)."""
        allowed = self._checkers[authz_id].is_allowed(identity)
        log.debug("authz %s: identity=%s allowed=%s", authz_id, identity, allowed)
        return allowed


def _uid_of_user(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def load_policy(path: str | Path) -> Policy:
    """``--policy FILE``: the file read and parsed; PolicyError (one line) if unusable.

    The policy module (TOML, the HMP argument parser) is imported here, not with this module:
    every monitor imports this one, few have a policy (docs/PERFORMANCE.md, start-up).
    """
    from qmonitor.security.policy import parse_policy

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise PolicyError(f"{path}: {reason}") from None
    return parse_policy(text, str(path), uid_of_user=_uid_of_user)
