"""The ``metaode`` console script (and ``python -m metaode``): ``metaode.cli.program.main``
behind its own imports.

Importing the command line loads numpy, scipy, numba and matplotlib (~0.6 s). A Ctrl-C in that
time ends, like any other interruption, with one line and exit status 130, not with Python's
traceback of the import it cut short (nothing has been read or written yet).
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
    """Import ``metaode.cli.program`` and run its ``main`` on sys.argv; the exit status."""
    try:
        from metaode.cli.program import main as run
    except KeyboardInterrupt:
        print("metaode: interrupted by SIGINT while starting (nothing was written)",
              file=sys.stderr)
        return 128 + signal.SIGINT
    return run()
