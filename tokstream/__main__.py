"""``python -m tokstream``: the command line (see ``tokstream._trio._cli``)."""

from __future__ import annotations

import sys

from ._trio._cli import main

if __name__ == "__main__":
    sys.exit(main())
