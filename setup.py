"""Optional compiled form: with ``QMONITOR_COMPILE=mypyc`` the modules of the per-request path
are compiled to C extension modules with mypyc (docs/PERFORMANCE.md, "Compiled form").

Without it (the default: ``pip install .``, ``python3 dev.py run``) qmonitor installs as pure
Python and needs no C compiler; everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent

# The modules of the request path (qmonitor/form.py, which says at run time which form runs).
COMPILED_MODULES = runpy.run_path(str(ROOT / "src" / "qmonitor" / "form.py"))["COMPILED_MODULES"]

form = os.environ.get("QMONITOR_COMPILE", "")
if form == "mypyc":
    from mypyc.build import mypycify

    paths = ["src/" + name.replace(".", "/") + ".py" for name in COMPILED_MODULES]
    setup(ext_modules=mypycify(paths, opt_level="3", group_name="qmonitor"))
elif form:
    raise SystemExit(f"QMONITOR_COMPILE={form!r}: the only compiled form is 'mypyc'")
else:
    setup()
