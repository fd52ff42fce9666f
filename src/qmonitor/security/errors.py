"""The policy's error, apart from the policy: whoever reports it (the programs, the public API)
need not load the policy's parser (TOML, the HMP argument parser) to catch it."""

from __future__ import annotations

from qmonitor.core.errors import QMonitorError


class PolicyError(QMonitorError, ValueError):
    """A policy file that cannot be used; ``str()`` is one line naming the file and the place."""
