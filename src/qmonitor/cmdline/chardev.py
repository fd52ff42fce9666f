"""Character devices and monitors on the command line: ``-chardev``, ``-mon``, ``-qmp``,
``-qmp-pretty``, ``-monitor`` (chardev/char.c, chardev/char-socket.c, monitor/monitor.c,
softmmu/vl.c ``monitor_parse()``).

QEMU keeps two QemuOpts lists: ``chardev`` (implied key ``backend``) and ``mon`` (implied key
``chardev``). ``-chardev`` and ``-mon`` add to them directly. The short forms add to both:
``-qmp ADDRESS`` makes a chardev labelled ``compat_monitorN`` from the legacy address syntax
(``qemu_chr_parse_compat()``: ``unix:PATH,...``, ``tcp:HOST:PORT,...``, ``stdio``, ...) and a
``mon`` entry in control mode on it; ``-qmp chardev:ID`` and ``-monitor chardev:ID`` use an
existing chardev. ``-monitor`` is readline mode, and any ``-monitor`` value starting with
``none`` turns the default monitor off without making one.

The checks happen when QEMU would make them: the syntax as the option is read, the chardev's
backend and socket address when the chardevs are created, and the monitor's mode and chardev
when the monitors are, all reported with the location of the option they came from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from qmonitor.cmdline.errors import Diagnostic
from qmonitor.cmdline.model import (
    Chardev,
    FdSocketAddress,
    InetSocketAddress,
    MonitorMode,
    MonitorSpec,
    UnixSocketAddress,
)
from qmonitor.cmdline.qemuopts import (
    HelpRequested,
    OptsError,
    OptsStore,
    OptType,
    QemuOpts,
    QemuOptsList,
    is_help_option,
    opts_do_parse,
)
from qmonitor.core.cutils import ERANGE, qemu_strtoi
from qmonitor.core.errors import QMonitorError

_S, _B, _N, _Z = OptType.STRING, OptType.BOOL, OptType.NUMBER, OptType.SIZE

# chardev/char.c qemu_chardev_opts.
CHARDEV_OPTS: Final = QemuOptsList(
    "chardev",
    {
        "backend": _S,
        "path": _S,
        "host": _S,
        "port": _S,
        "fd": _S,
        "localaddr": _S,
        "localport": _S,
        "to": _N,
        "ipv4": _B,
        "ipv6": _B,
        "wait": _B,
        "server": _B,
        "delay": _B,
        "nodelay": _B,
        "reconnect": _N,
        "telnet": _B,
        "tn3270": _B,
        "tls-creds": _S,
        "tls-authz": _S,
        "websocket": _B,
        "width": _N,
        "height": _N,
        "cols": _N,
        "rows": _N,
        "mux": _B,
        "signal": _B,
        "name": _S,
        "debug": _N,
        "size": _Z,
        "chardev": _S,
        "append": _B,
        "logfile": _S,
        "logappend": _B,
        "mouse": _B,
        "clipboard": _B,
        "tight": _B,
        "abstract": _B,
    },
    implied_opt_name="backend",
)

# monitor/monitor.c qemu_mon_opts.
MON_OPTS: Final = QemuOptsList(
    "mon", {"mode": _S, "chardev": _S, "pretty": _B}, implied_opt_name="chardev"
)

# `qemu-system-x86_64 -chardev help` of the Debian QEMU 7.2 build.
CHARDEV_BACKENDS: Final = frozenset(
    [
        "stdio",
        "ringbuf",
        "mux",
        "pipe",
        "qemu-vdagent",
        "null",
        "msmouse",
        "socket",
        "vc",
        "parallel",
        "udp",
        "memory",
        "file",
        "serial",
        "wctablet",
        "pty",
        "testdev",
    ]
)
# chardev/char.c chardev_alias_table: deprecated names and what they stand for.
CHARDEV_ALIASES: Final = {"parport": "parallel", "tty": "serial"}
# qapi/control.json MonitorMode.
MONITOR_MODES: Final = ("readline", "control")

# Plain backend names qemu_chr_parse_compat() takes as they are.
_COMPAT_PLAIN: Final = frozenset(
    ("null", "pty", "msmouse", "wctablet", "braille", "testdev", "stdio")
)
# The patterns below are compiled by re.compile's cache at their first use, not at import
# (start-up time: a -qmp unix: option uses none of them).
# sscanf("%64[^:]:%32[^,]%n") and its fallback ":%32[^,]%n" (tcp:, telnet:, ...).
_HOST_PORT: Final = r"([^:]{1,64}):([^,]{1,32})"
_PORT_ONLY: Final = r":([^,]{1,32})"
# The same for udp:, whose port may also end at '@'.
_UDP_HOST_PORT: Final = r"([^:]{1,64}):([^@,]{1,32})"
_UDP_PORT_ONLY: Final = r":([^@,]{1,32})"
_VC_PIXELS: Final = r"([0-9]{1,7})x([0-9]{1,7})"
_VC_CHARS: Final = r"([0-9]{1,7})Cx([0-9]{1,7})C"


class ChardevError(QMonitorError):
    """A chardev or monitor QEMU refuses, with QEMU's message (empty: QEMU says nothing more
    than its caller's "parse error") and hint."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _set(opts: QemuOpts, name: str, value: str) -> None:
    """``qemu_opt_set()`` of a value QEMU knows to be valid (``&error_abort``)."""
    parsed: bool | int | None = None
    opt_type = opts.opts_list.descs[name]
    if opt_type is OptType.BOOL:
        parsed = value == "on"
    opts.params.append((name, value, parsed))


def _compat_options(opts: QemuOpts, params: str, firstname: str | None) -> None:
    """``qemu_opts_do_parse()`` inside the compat syntax: no flag warnings, no help."""
    opts_do_parse(opts, params, firstname, [], warn_on_flag=False, help_allowed=False)


def parse_compat(store: OptsStore, label: str, filename: str, *, permit_mux_mon: bool) -> QemuOpts:
    """chardev/char.c qemu_chr_parse_compat(): a legacy chardev address as chardev options.

    Raises ChardevError with the message QEMU reports (empty if it reports none) when the
    address does not parse; the caller adds "parse error: ADDRESS" as monitor_parse() does.
    """
    try:
        opts = store.create(CHARDEV_OPTS, label)
    except OptsError as error:
        raise ChardevError(error.message, error.hint) from None
    try:
        _parse_compat_into(opts, filename, permit_mux_mon)
    except (OptsError, ChardevError):
        store.delete(opts)
        raise
    return opts


def _parse_compat_into(opts: QemuOpts, filename: str, permit_mux_mon: bool) -> None:
    if filename.startswith("mon:"):
        if not permit_mux_mon:
            raise ChardevError("mon: isn't supported in this context")
        filename = filename[4:]
        _set(opts, "mux", "on")
        if filename == "stdio":
            _set(opts, "signal", "off")
    if filename in _COMPAT_PLAIN:
        _set(opts, "backend", filename)
        return
    if filename.startswith("vc"):
        _set(opts, "backend", "vc")
        rest = filename[2:]
        if rest.startswith(":"):
            if pixels := re.compile(_VC_PIXELS).match(rest, 1):
                _set(opts, "width", pixels[1])
                _set(opts, "height", pixels[2])
            elif chars := re.compile(_VC_CHARS).match(rest, 1):
                _set(opts, "cols", chars[1])
                _set(opts, "rows", chars[2])
            else:
                raise ChardevError("")
        return
    if filename == "con:":
        _set(opts, "backend", "console")
        return
    if filename.startswith("COM"):
        _set(opts, "backend", "serial")
        _set(opts, "path", filename)
        return
    for prefix, backend in (("file:", "file"), ("pipe:", "pipe")):
        if filename.startswith(prefix):
            _set(opts, "backend", backend)
            _set(opts, "path", filename[len(prefix) :])
            return
    for prefix in ("tcp:", "telnet:", "tn3270:", "websocket:"):
        if filename.startswith(prefix):
            _parse_compat_tcp(opts, filename[len(prefix) :], prefix[:-1])
            return
    if filename.startswith("udp:"):
        _parse_compat_udp(opts, filename[4:])
        return
    if filename.startswith("unix:"):
        _set(opts, "backend", "socket")
        try:
            _compat_options(opts, filename[5:], "path")
        except OptsError as error:
            raise ChardevError(error.message, error.hint) from None
        return
    if filename.startswith(("/dev/parport", "/dev/ppi")):
        _set(opts, "backend", "parallel")
        _set(opts, "path", filename)
        return
    if filename.startswith("/dev/"):
        _set(opts, "backend", "serial")
        _set(opts, "path", filename)
        return
    raise ChardevError(f"'{filename}' is not a valid char driver")


def _parse_compat_tcp(opts: QemuOpts, address: str, protocol: str) -> None:
    host = ""
    match = re.compile(_HOST_PORT).match(address)
    if match:
        host, port = match[1], match[2]
    else:
        match = re.compile(_PORT_ONLY).match(address)
        if not match:
            raise ChardevError("")
        port = match[1]
    _set(opts, "backend", "socket")
    _set(opts, "host", host)
    _set(opts, "port", port)
    end = match.end()
    if address[end : end + 1] == ",":
        try:
            _compat_options(opts, address[end + 1 :], None)
        except OptsError as error:
            raise ChardevError(error.message, error.hint) from None
    if protocol != "tcp":
        _set(opts, protocol, "on")


def _parse_compat_udp(opts: QemuOpts, address: str) -> None:
    _set(opts, "backend", "udp")
    host = ""
    match = re.compile(_UDP_HOST_PORT).match(address)
    if not match:
        match = re.compile(_UDP_PORT_ONLY).match(address)
        if not match:
            raise ChardevError("")
        port = match[1]
    else:
        host, port = match[1], match[2]
    _set(opts, "host", host)
    _set(opts, "port", port)
    end = match.end()
    if address[end : end + 1] == "@":
        local = address[end + 1 :]
        local_host = ""
        local_match = re.compile(_HOST_PORT).match(local) or re.compile(_PORT_ONLY).match(local)
        if not local_match:
            raise ChardevError("")
        if local_match.re.pattern == _HOST_PORT:
            local_host, local_port = local_match[1], local_match[2]
        else:
            local_port = local_match[1]
        _set(opts, "localaddr", local_host)
        _set(opts, "localport", local_port)


def monitor_compat(
    store: OptsStore, label: str, chardev_id: str, mode: MonitorMode, pretty: bool
) -> QemuOpts:
    """vl.c monitor_parse()'s ``mon`` entry for ``-qmp``/``-qmp-pretty``/``-monitor``."""
    try:
        opts = store.create(MON_OPTS, label)
    except OptsError as error:
        raise ChardevError(error.message, error.hint) from None
    _set(opts, "mode", mode)
    _set(opts, "chardev", chardev_id)
    if mode == "control":
        _set(opts, "pretty", "on" if pretty else "off")
    return opts


def create_chardev(
    opts: QemuOpts,
    reports: list[Diagnostic],
    location: str,
    warned_aliases: set[str],
    objects: Mapping[str, Mapping[str, object]],
) -> Chardev:
    """chardev/char.c qemu_chr_new_from_opts() up to opening: the chardev QEMU would make.

    Checks what QEMU checks before it touches the host: an id, a backend it has, and for a
    socket an address that is one of path, host and port, or fd, with options that fit it
    (qemu_chr_parse_socket(), qmp_chardev_validate_socket(), socket_get_fd()'s number).
    Whether the fd is really a socket, and binding or connecting, are the caller's. QEMU warns
    about a deprecated backend alias once per process (``warned_aliases``). ``objects`` are
    the ``-object``s by id, where ``tls-creds=`` must find its credentials.
    """
    backend = opts.get("backend")
    if backend is not None and backend in CHARDEV_ALIASES:
        if backend not in warned_aliases:
            warned_aliases.add(backend)
            reports.append(
                Diagnostic(
                    f"{location}: warning: The alias '{backend}' is deprecated, "
                    f"use '{CHARDEV_ALIASES[backend]}' instead"
                )
            )
        backend = CHARDEV_ALIASES[backend]
    if backend is not None and is_help_option(backend):
        raise HelpRequested
    if opts.id is None:
        raise ChardevError("chardev: no id specified")
    if backend is None:
        raise ChardevError(f'chardev: "{opts.id}" missing backend')
    if backend not in CHARDEV_BACKENDS:
        raise ChardevError(f"'{backend}' is not a valid char driver name")
    options = opts.as_dict()
    mux = opts.get_bool("mux", False)
    if backend != "socket":
        _check_backend_options(opts, backend)
        return Chardev(opts.id, backend, mux=mux, options=options, location=location)
    given = _socket_address(opts)
    server = opts.get_bool("server", False)
    wait = opts.get_bool("wait", True)
    creds_id = opts.get("tls-creds")
    if creds_id is not None:
        _check_tls_creds(objects.get(creds_id), creds_id, "server" if server else "client")
    _validate_socket(opts, given, server)
    address = _fd_address(given) if isinstance(given, str) else given
    return Chardev(opts.id, backend, address, server, wait, mux, options, location)


RINGBUF_DEFAULT_SIZE: Final = 65536
"""chardev/char-ringbuf.c ``ringbuf_chr_open``: the size without ``size=`` (or with 0)."""


def ringbuf_size(opts_size: int) -> int:
    """chardev/char-ringbuf.c: the ring's size for ``size=`` (0 if not given), as QEMU makes it.

    ``ringbuf_chr_parse`` reads the size into an ``int`` (so modulo 2^32, signed), a 0 meaning
    "not given"; ``ringbuf_chr_open`` takes it as a ``size_t`` (a negative one wraps) and
    refuses one that is not a power of two. ``size=4G`` is therefore the default size.
    """
    value = opts_size % (1 << 32)
    if value >= 1 << 31:
        value -= 1 << 32
    if value == 0:
        return RINGBUF_DEFAULT_SIZE
    size = value % (1 << 64)
    if size & (size - 1):
        raise ChardevError("size of ringbuf chardev must be power of two")
    return size


def _check_backend_options(opts: QemuOpts, backend: str) -> None:
    """What the backends qmonitor opens check before touching the host (chardev/char-file.c
    ``qemu_chr_parse_file_out``, char-pipe.c ``qemu_chr_parse_pipe``, char-ringbuf.c)."""
    if backend == "file" and opts.get("path") is None:
        raise ChardevError("chardev: file: no filename given")
    if backend == "pipe" and opts.get("path") is None:
        raise ChardevError("chardev: pipe: no device path given")
    if backend in ("ringbuf", "memory"):
        ringbuf_size(opts.get_number("size", 0))


def _socket_address(opts: QemuOpts) -> UnixSocketAddress | InetSocketAddress | str:
    """qemu_chr_parse_socket(): exactly one of path, host (with port) and fd (as text)."""
    path = opts.get("path")
    host = opts.get("host")
    port = opts.get("port")
    fd = opts.get("fd")
    if (path is not None) + (fd is not None) + (host is not None) > 1:
        raise ChardevError("None or one of 'path', 'fd' or 'host' option required.")
    if host is not None and port is None:
        raise ChardevError("chardev: socket: no port given")
    if opts.has("delay") and opts.has("nodelay"):
        raise ChardevError("'delay' and 'nodelay' are mutually exclusive")
    if path is not None:
        return UnixSocketAddress(
            path, opts.get_bool("abstract", False), opts.get_bool("tight", True)
        )
    if host is not None:
        assert port is not None
        return InetSocketAddress(
            host,
            port,
            opts.get_bool("ipv4", False) if opts.has("ipv4") else None,
            opts.get_bool("ipv6", False) if opts.has("ipv6") else None,
            opts.get_number("to", 0) if opts.has("to") else None,
        )
    return fd or ""  # no address at all reads as an fd of "" (QAPI's empty string)


def _fd_address(text: str) -> FdSocketAddress:
    """util/qemu-sockets.c socket_get_fd() outside a monitor: qemu_strtoi(), base 10."""
    number = qemu_strtoi(text, 10)
    if number.error:
        # error_setg_errno(): qemu_strtoi() sets errno only when the number is out of range.
        suffix = ": Numerical result out of range" if number.error == ERANGE else ""
        raise ChardevError(f"Unable to parse FD number {text}{suffix}")
    return FdSocketAddress(number.value)


def _check_tls_creds(creds: Mapping[str, object] | None, creds_id: str, endpoint: str) -> None:
    """char-socket.c qmp_chardev_open_socket(): the credentials object, for this endpoint.

    crypto/tlscreds.c: credentials are made for one endpoint, "client" unless said otherwise.
    """
    if creds is None:
        raise ChardevError(f"No TLS credentials with id '{creds_id}'")
    if not str(creds.get("qom-type")).startswith(("tls-creds-", "tls-cipher-suites")):
        raise ChardevError(f"Object with id '{creds_id}' is not TLS credentials")
    if creds.get("endpoint", "client") != endpoint:
        raise ChardevError(f"Expected TLS credentials for a {endpoint} endpoint")


def _validate_socket(
    opts: QemuOpts, address: UnixSocketAddress | InetSocketAddress | str, server: bool
) -> None:
    """char-socket.c qmp_chardev_validate_socket(), in its order (a str ``address`` is an fd)."""
    has_reconnect = opts.has("reconnect")
    has_tls_creds = opts.get("tls-creds") is not None
    if isinstance(address, str):
        if has_reconnect:
            raise ChardevError("'reconnect' option is incompatible with 'fd' address type")
        if has_tls_creds and not server:
            raise ChardevError(
                "'tls_creds' option is incompatible with 'fd' address type as client"
            )
    elif isinstance(address, UnixSocketAddress) and has_tls_creds:
        raise ChardevError("'tls_creds' option is incompatible with 'unix' address type")
    if opts.get("tls-authz") is not None and not has_tls_creds:
        raise ChardevError("'tls_authz' option requires 'tls_creds' option")
    if server:
        if has_reconnect:
            raise ChardevError(
                "'reconnect' option is incompatible with socket in server listen mode"
            )
    else:
        if opts.has("websocket") and opts.get_bool("websocket", False):
            raise ChardevError("Websocket client is not implemented")
        if opts.has("wait"):
            raise ChardevError("'wait' option is incompatible with socket in client connect mode")


def create_monitor(opts: QemuOpts, chardevs: dict[str, Chardev]) -> MonitorSpec:
    """monitor/monitor.c monitor_init_opts(): the MonitorOptions visit, then monitor_init()."""
    mode_text = opts.get("mode")
    if mode_text is not None and mode_text not in MONITOR_MODES:
        raise ChardevError(f"Parameter 'mode' does not accept value '{mode_text}'")
    chardev_id = opts.get("chardev")
    if chardev_id is None:
        raise ChardevError("Parameter 'chardev' is missing")
    chardev = chardevs.get(chardev_id)
    if chardev is None:
        raise ChardevError(f'chardev "{chardev_id}" not found')
    mode: MonitorMode = "control" if mode_text == "control" else "readline"
    pretty = opts.get_bool("pretty", False)
    if mode == "readline" and pretty:
        raise ChardevError("'pretty' is not compatible with HMP monitors")
    return MonitorSpec(chardev, mode, pretty, opts.id)
