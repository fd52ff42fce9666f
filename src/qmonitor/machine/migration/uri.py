"""Migration URIs: ``tcp:HOST:PORT``, ``unix:PATH``, ``file:PATH`` and ``fd:NAME``, parsed with
QEMU's error texts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from qmonitor import QMPError


@dataclass(frozen=True, slots=True)
class MigrationAddress:
    """A parsed migration URI; ``fd:`` keeps the name or number as written, in ``path``."""

    transport: Literal["tcp", "unix", "file", "fd"]
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.transport == "tcp":
            return f"{self.host}:{self.port}"
        return self.path

    @property
    def one_way(self) -> bool:
        """No confirmation byte comes back: a ``file:`` or ``fd:`` stream may be read by
        something else than a destination (a file, libvirt's ``libvirt_iohelper``)."""
        return self.transport in ("file", "fd")


INVALID_PROTOCOL: Final = "Parameter 'uri' expects a valid migration protocol"


def parse_uri(uri: str) -> MigrationAddress:
    """Parse ``tcp:HOST:PORT``, ``unix:PATH``, ``file:PATH`` or ``fd:NAME`` with QEMU's error
    texts."""
    scheme, _, rest = uri.partition(":")
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise QMPError(f"error parsing address '{rest}'")
        return MigrationAddress("tcp", host=host.strip("[]"), port=int(port))
    if scheme == "unix":
        if not rest:
            raise QMPError("invalid Unix socket address")
        return MigrationAddress("unix", path=rest)
    if scheme == "file":
        if not rest:
            raise QMPError("invalid file path")
        return MigrationAddress("file", path=rest)
    if scheme == "fd":
        return MigrationAddress("fd", path=rest)
    raise QMPError(INVALID_PROTOCOL)
