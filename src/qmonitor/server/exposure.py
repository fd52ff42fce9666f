"""Safe defaults, stated: no monitor in clear text beyond this host (issue 9 item 7; sans I/O).

QEMU listens wherever it is told, TLS or not. A monitor is a privileged interface (whoever
reaches it can stop the guest, write files through ``migrate``, read its memory), so qmonitor
refuses, at start and before anything is bound, a TCP monitor (listening or connecting out)
on an address other than a loopback one without TLS, unless the operator says
``--allow-insecure-tcp`` (docs/PROTOCOL.md, "Deliberate differences").

Loopback is decided from the address as written, never by a name lookup (which can change
between the check and the bind): an IPv4 address in 127.0.0.0/8, ``::1``, or the name
``localhost`` (which resolvers give loopback addresses, RFC 6761 section 6.3). Any other
host name, and the wildcard addresses (``0.0.0.0``, ``::``, which listen on every
interface), count as reachable from elsewhere.
"""

from __future__ import annotations

from typing import Final, Protocol

INSECURE_TCP: Final = (
    "tcp:{host}:{port}: a TCP monitor on a non-loopback address needs TLS (tls-creds=); "
    "give --allow-insecure-tcp to serve it in clear text anyway"
)


class _TcpAddress(Protocol):
    @property
    def transport(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as written in the address) names only this machine."""
    if host.lower() == "localhost":
        return True
    import ipaddress  # for TCP monitors only: a unix socket's start does not load it

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it could resolve anywhere


def insecure_tcp_error(address: _TcpAddress, *, tls: bool) -> str | None:
    """The one-line refusal of a TCP monitor ``address`` (listening, or connecting out: the
    monitor's traffic crosses the network either way) in clear text beyond this host; None
    when it may be served (not TCP, TLS, or loopback)."""
    if address.transport != "tcp" or tls or is_loopback(address.host):
        return None
    return INSECURE_TCP.format(host=address.host, port=address.port)
