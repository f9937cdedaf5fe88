"""``python -m runtimes.server PKG ...``: the same as ``edgekit serve``."""

from __future__ import annotations

import sys

from edgekit.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
