"""What QEMU prints about a command line: errors and warnings, without the program name.

QEMU reports through util/error-report.c ``vreport()``: ``PROGRAM: LOCATION: MESSAGE`` on one
line, where PROGRAM is the base name of ``argv[0]`` and LOCATION is the option as it was typed
(``-m 64x``), then any hint lines as they are. Warnings put ``warning: `` before the message.
With ``-msg timestamp=on`` every report after it starts with the time (``2024-01-31T12:00:00.
000000Z ``). This module keeps everything but the program name and the time, which belong to
the caller: ``qmonitor-system-x86_64`` prints its own base name, as QEMU does.
"""

from __future__ import annotations

from typing import Final

from qmonitor.core.errors import QMonitorError
from qmonitor.core.record import Record


class Diagnostic(Record):
    """One report: ``message`` is the first line, ``hint`` the lines QEMU prints after it."""

    __slots__ = ("hint", "message", "timestamped")

    message: Final[str]
    hint: Final[str]
    timestamped: Final[bool]  # -msg timestamp=on was in effect when QEMU would print it

    def __init__(self, message: str, hint: str = "", timestamped: bool = False) -> None:
        self.message = message
        self.hint = hint
        self.timestamped = timestamped

    def render(self, program: str, timestamp: str = "") -> str:
        """The report as QEMU prints it: ``PROGRAM: MESSAGE\\nHINT``.

        ``timestamp`` is the time text QEMU prefixes when ``timestamped`` (its
        ``real_time_iso8601()``); the caller provides it because this package has no clock.
        """
        prefix = f"{timestamp} " if self.timestamped and timestamp else ""
        return f"{prefix}{program}: {self.message}\n{self.hint}"


class CommandLineError(QMonitorError):
    """A command line QEMU refuses. ``str()`` is QEMU's one line, without the program name.

    ``hint`` holds the lines QEMU prints after it (often empty), and ``warnings`` the warnings
    QEMU would have printed before it. QEMU exits with status 1 after printing them.
    """

    def __init__(
        self,
        message: str,
        hint: str = "",
        warnings: tuple[Diagnostic, ...] = (),
        *,
        timestamped: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.warnings = warnings
        self.timestamped = timestamped

    @property
    def diagnostic(self) -> Diagnostic:
        return Diagnostic(self.message, self.hint, self.timestamped)

    def render(self, program: str, timestamp: str = "") -> str:
        """Everything QEMU prints on stderr for this command line, warnings first."""
        reports = (*self.warnings, self.diagnostic)
        return "".join(report.render(program, timestamp) for report in reports)
