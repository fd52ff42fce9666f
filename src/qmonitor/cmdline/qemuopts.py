"""QemuOpts: QEMU's ``key=value,...`` option syntax (util/qemu-option.c), sans I/O.

Most options that take a list of parameters (``-name``, ``-m``, ``-chardev``, ``-mon``,
``-overcommit``, ``-msg``, ``-rtc``, ``-sandbox``, ``-global``, ``-device``, ``-object`` in its
non-JSON form) are parsed by QemuOpts, and its rules are what users type:

- Parameters are separated by ``,``; a ``,`` inside a value is written ``,,``.
- An option list may have an *implied* first key (``QemuOptsList.implied_opt_name``): the first
  parameter may omit ``key=``, so ``-name vm0`` is ``-name guest=vm0`` and ``-m 64`` is
  ``-m size=64``. Only the very first parameter, and only where QEMU passes ``permit_abbrev``.
- A parameter without ``=`` is a boolean flag: ``server`` is ``server=on``, ``nowait`` is
  ``wait=off``. QEMU 7.2 deprecates that short form and warns ("short-form boolean option 'server'
  deprecated"); the warning is returned here for the caller to print, as QEMU does.
- ``help`` or ``?`` as a flag asks for the option's help (:class:`HelpRequested`).
- ``id=`` names the option group; it must be an identifier and unique within its list. Lists
  that merge (``-name``, ``-m``, ``-rtc``) take no ``id`` and add up across repeats.
- A list either knows its parameters (``QemuOptDesc``), refusing others with
  ``Invalid parameter 'x'`` and checking each typed value as it is parsed, or accepts any.

Parameter values are checked by type as QEMU does: booleans by ``qapi_bool_parse``, numbers by
``strtoull`` base 0, sizes by ``qemu_strtosz``, with QEMU's error texts.
"""

from __future__ import annotations

import enum
from typing import Final

from qmonitor.cmdline.errors import Diagnostic
from qmonitor.core.cutils import (
    ERANGE,
    SizeConversion,
    id_wellformed,
    qapi_bool_parse,
    qemu_strtosz,
    qemu_strtou64,
)
from qmonitor.core.errors import QMonitorError
from qmonitor.core.record import Record

# qemu-option.c parse_option_size(): the hint QEMU appends to a bad size.
SIZE_HINT = (
    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
    "and exabytes, respectively.\n"
)
# qemu-option.c qemu_opts_create(): the hint QEMU appends to a bad identifier.
ID_HINT = "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.\n"


class OptType(enum.Enum):
    """``enum QemuOptType`` (include/qemu/option.h)."""

    STRING = "string"  # any text, unchecked
    BOOL = "bool"  # on/off (and qapi_bool_parse's other spellings)
    NUMBER = "number"  # strtoull, base 0
    SIZE = "size"  # qemu_strtosz: bytes, with an optional K/M/G/T/P/E suffix


class QemuOptsList(Record):
    """``QemuOptsList``: the parameters an option takes. An empty ``descs`` accepts any."""

    __slots__ = ("descs", "implied_opt_name", "merge_lists", "name")

    name: Final[str]
    descs: Final[dict[str, OptType]]
    implied_opt_name: Final[str | None]
    merge_lists: Final[bool]

    def __init__(
        self,
        name: str,
        descs: dict[str, OptType] | None = None,
        implied_opt_name: str | None = None,
        merge_lists: bool = False,
    ) -> None:
        self.name = name
        self.descs = {} if descs is None else descs
        self.implied_opt_name = implied_opt_name
        self.merge_lists = merge_lists

    @property
    def accepts_any(self) -> bool:
        return not self.descs


class OptsError(QMonitorError):
    """A QemuOpts error: QEMU's message (one line) and the hint lines it prints after it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class HelpRequested(QMonitorError):
    """The parameters ask for help (``help`` or ``?`` as a flag)."""


class QemuOpts:
    """One option group: ``id`` and its parameters in order, each as given and as parsed."""

    __slots__ = ("id", "opts_list", "params")

    opts_list: QemuOptsList
    id: str | None
    params: list[tuple[str, str, bool | int | None]]

    def __init__(
        self,
        opts_list: QemuOptsList,
        id: str | None,
        params: list[tuple[str, str, bool | int | None]] | None = None,
    ) -> None:
        self.opts_list = opts_list
        self.id = id
        self.params = [] if params is None else params

    def get(self, name: str) -> str | None:
        """``qemu_opt_get()``: the text of the last ``name`` given, or None."""
        for param_name, text, _ in reversed(self.params):
            if param_name == name:
                return text
        return None

    def has(self, name: str) -> bool:
        return any(param_name == name for param_name, _, _ in self.params)

    def get_bool(self, name: str, default: bool) -> bool:
        """``qemu_opt_get_bool()`` of a parameter declared BOOL."""
        for param_name, _, value in reversed(self.params):
            if param_name == name:
                assert isinstance(value, bool)
                return value
        return default

    def get_number(self, name: str, default: int) -> int:
        """``qemu_opt_get_number()``/``qemu_opt_get_size()`` of a NUMBER or SIZE parameter."""
        for param_name, _, value in reversed(self.params):
            if param_name == name:
                assert isinstance(value, int) and not isinstance(value, bool)
                return value
        return default

    def as_dict(self) -> dict[str, str]:
        """The parameters as text, the last of each name winning (what QEMU's getters see)."""
        return {name: text for name, text, _ in self.params}


class OptsStore:
    """Every ``QemuOpts`` created so far, per list: what ``id`` uniqueness and merging see."""

    __slots__ = ("groups",)

    groups: dict[str, list[QemuOpts]]

    def __init__(self, groups: dict[str, list[QemuOpts]] | None = None) -> None:
        self.groups = {} if groups is None else groups

    def of(self, opts_list: QemuOptsList) -> list[QemuOpts]:
        return self.groups.setdefault(opts_list.name, [])

    def find(self, opts_list: QemuOptsList, opts_id: str | None) -> QemuOpts | None:
        """``qemu_opts_find()``."""
        for opts in self.of(opts_list):
            if opts.id == opts_id:
                return opts
        return None

    def create(self, opts_list: QemuOptsList, opts_id: str | None) -> QemuOpts:
        """``qemu_opts_create(list, id, !merge_lists)``: a new group, or the merged one."""
        if opts_list.merge_lists:
            if opts_id is not None:
                raise OptsError("Invalid parameter 'id'")
            existing = self.find(opts_list, None)
            if existing is not None:
                return existing
        elif opts_id is not None:
            if not id_wellformed(opts_id):
                raise OptsError("Parameter 'id' expects an identifier", ID_HINT)
            if self.find(opts_list, opts_id) is not None:
                raise OptsError(f"Duplicate ID '{opts_id}' for {opts_list.name}")
        opts = QemuOpts(opts_list, opts_id)
        self.of(opts_list).append(opts)
        return opts

    def delete(self, opts: QemuOpts) -> None:
        """``qemu_opts_del()``."""
        self.of(opts.opts_list).remove(opts)


def get_opt_value(params: str, start: int) -> tuple[str, int]:
    """``get_opt_value()``: the value at ``start`` up to a single ``,`` (``,,`` is a comma).

    Returns the value and the index of the ``,`` that ends it (or ``len(params)``).
    """
    pieces = []
    while True:
        comma = params.find(",", start)
        if comma < 0:
            pieces.append(params[start:])
            return "".join(pieces), len(params)
        if params[comma + 1 : comma + 2] != ",":
            pieces.append(params[start:comma])
            return "".join(pieces), comma
        pieces.append(params[start : comma + 1])
        start = comma + 2


def is_help_option(text: str) -> bool:
    """include/qemu/help_option.h is_help_option()."""
    return text in ("?", "help")


def _name_value(
    params: str, start: int, firstname: str | None, warnings: list[Diagnostic] | None
) -> tuple[str, str, bool, int]:
    """``get_opt_name_value()``: (name, value, whether it is a help flag, next index).

    ``warnings`` None is QEMU's ``warn_on_flag`` false: no deprecation warning for a flag.
    """
    end = start
    while end < len(params) and params[end] not in "=,":
        end += 1
    is_help = False
    if end == len(params) or params[end] != "=":
        if firstname is not None:
            name = firstname
            value, position = get_opt_value(params, start)
        else:
            name = params[start:end]
            position = end
            prefix = ""
            if name.startswith("no"):
                name = name[2:]
                value = "off"
                prefix = "no"
            else:
                value = "on"
                is_help = is_help_option(name)
            if not is_help and warnings is not None:
                if name == "delay":
                    hint = f"Please use nodelay={'on' if prefix else 'off'} instead\n"
                else:
                    hint = f"Please use {name}={value} instead\n"
                warnings.append(
                    Diagnostic(f"short-form boolean option '{prefix}{name}' deprecated", hint)
                )
    else:
        name = params[start:end]
        value, position = get_opt_value(params, end + 1)
    if position < len(params):
        position += 1  # the ',' after the parameter
    return name, value, is_help, position


def _opts_parse_id(params: str) -> str | None:
    """``opts_parse_id()``: the first ``id`` parameter, read without an implied key."""
    position = 0
    while position < len(params):
        name, value, _, position = _name_value(params, position, None, None)
        if name == "id":
            return value
    return None


def _validate(
    opts_list: QemuOptsList, name: str, text: str, warnings: list[Diagnostic]
) -> bool | int | None:
    """``opt_validate()``: the parsed value of one parameter, or OptsError."""
    opt_type = opts_list.descs.get(name)
    if opt_type is None:
        if not opts_list.accepts_any:
            raise OptsError(f"Invalid parameter '{name}'")
        return None
    if opt_type is OptType.BOOL:
        flag = qapi_bool_parse(text)
        if flag is None:
            raise OptsError(f"Parameter '{name}' expects 'on' or 'off'")
        return flag
    if opt_type is OptType.NUMBER:
        number = qemu_strtou64(text, 0)
        if number.error == ERANGE:
            raise OptsError(f"Value '{text}' is too large for parameter '{name}'")
        if number.error:
            raise OptsError(f"Parameter '{name}' expects a number")
        return number.value
    if opt_type is OptType.SIZE:
        size = parse_size_warning(text, warnings)
        if size.error == ERANGE:
            raise OptsError(f"Value '{text}' is out of range for parameter '{name}'")
        if size.error:
            raise OptsError(
                f"Parameter '{name}' expects a non-negative number below 2^64", SIZE_HINT
            )
        return size.value
    return None


def parse_size_warning(text: str, warnings: list[Diagnostic]) -> SizeConversion:
    """``qemu_strtosz()``, adding QEMU's warning about a multiplier on a hex number."""
    size = qemu_strtosz(text)
    if size.hex_with_suffix:
        warnings.append(
            Diagnostic(f"Using a multiplier suffix on hex numbers is deprecated: {text}")
        )
    return size


def opts_do_parse(
    opts: QemuOpts,
    params: str,
    firstname: str | None,
    warnings: list[Diagnostic],
    *,
    warn_on_flag: bool,
    help_allowed: bool,
) -> None:
    """``opts_do_parse()``: add the parameters of ``params`` to ``opts``.

    ``warn_on_flag`` is QEMU's: whether a short-form boolean is warned about.
    ``help_allowed`` is QEMU's non-null ``help_wanted``: a help flag raises HelpRequested.
    """
    flag_warnings = warnings if warn_on_flag else None
    position = 0
    while position < len(params):
        name, text, is_help, position = _name_value(params, position, firstname, flag_warnings)
        if help_allowed and is_help:
            raise HelpRequested
        firstname = None
        if name == "id":
            continue
        opts.params.append((name, text, _validate(opts.opts_list, name, text, warnings)))


def qemu_opts_parse(
    store: OptsStore,
    opts_list: QemuOptsList,
    params: str,
    *,
    permit_abbrev: bool,
    warnings: list[Diagnostic],
) -> QemuOpts:
    """``qemu_opts_parse_noisily()``: a new (or merged) option group from ``params``.

    Raises OptsError (nothing is kept: QEMU deletes the group) or HelpRequested.
    """
    firstname = opts_list.implied_opt_name if permit_abbrev else None
    opts = store.create(opts_list, _opts_parse_id(params))
    try:
        opts_do_parse(
            opts,
            params,
            firstname,
            warnings,
            warn_on_flag=True,
            help_allowed=not opts_list.accepts_any,
        )
    except (OptsError, HelpRequested):
        store.delete(opts)
        raise
    return opts
