"""``python -m qmonitor`` is the ``qmonitor`` command."""

import sys

from qmonitor.cli import main

sys.exit(main())
