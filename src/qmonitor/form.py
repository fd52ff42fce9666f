"""Which form of qmonitor runs: pure Python, or with its request path compiled by mypyc.

The modules of :data:`COMPILED_MODULES` are pure Python first; an installation built with
``QMONITOR_COMPILE=mypyc`` (setup.py, ``python3 dev.py test-compiled``) has each of them as an
extension module too, which Python imports in preference to the source beside it. Nothing
else differs, so a machine without a C compiler installs and runs the pure form.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util

COMPILED_MODULES: tuple[str, ...] = (
    # the per-request path: framing, request checks, dispatch, argument conversion, session
    "qmonitor.qmp.stream",
    "qmonitor.qmp.protocol",
    "qmonitor.qmp.messages",
    "qmonitor.core.dispatch",
    "qmonitor.core.schema.convert",
    "qmonitor.server.monitor",
    "qmonitor.server.qmp_session",
    # every unix-socket monitor's transport: the read and write of every request
    "qmonitor.server.fds",
)
"""The modules setup.py compiles (read from this file, which imports nothing of qmonitor)."""

PURE = "pure Python"
COMPILED = "compiled with mypyc"


def running_form() -> str:
    """:data:`COMPILED` when every module of :data:`COMPILED_MODULES` would be loaded from an
    extension module, :data:`PURE` when none would; found without importing them."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    compiled = []
    for name in COMPILED_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None and spec.origin.endswith(suffixes):
            compiled.append(name)
    if not compiled:
        return PURE
    if len(compiled) == len(COMPILED_MODULES):
        return COMPILED
    return f"partly compiled with mypyc: {', '.join(compiled)}"
