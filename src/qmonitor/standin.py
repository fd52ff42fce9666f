"""``qmonitor-system-x86_64``'s console script: :func:`qmonitor.launch.standin_main`, imported
with the cyclic garbage collector off.

Importing the stand-in's modules allocates tens of thousands of objects (functions, classes,
their dictionaries) and frees next to none: the collector's passes during those imports (one
every 700 new container objects, the older generations in turn) find nothing to collect and
cost about 3 ms of a start-up that every probe and test pays (docs/PERFORMANCE.md, "Third
round"). The collector is on again before the command line is read: the program runs with
Python's defaults.
"""

from __future__ import annotations

import gc


def main() -> int:
    """Import the stand-in with the collector off, then run it."""
    gc.disable()
    try:
        from qmonitor.launch import standin_main
    finally:
        gc.enable()
    return standin_main()
