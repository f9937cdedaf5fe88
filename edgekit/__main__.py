"""``python -m edgekit`` is the ``edgekit`` command."""

import sys

from edgekit.cli import main

if __name__ == "__main__":  # spawn workers (edgekit tune) import this module again
    sys.exit(main())
