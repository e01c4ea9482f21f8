"""``python -m metaode``: the ``metaode`` command line, exactly as the console script
(``metaode.cli.entry``)."""

import sys

from metaode.cli.entry import main

if __name__ == "__main__":
    sys.exit(main())
