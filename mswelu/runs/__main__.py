"""``python -m mswelu.runs list|show`` (:mod:`mswelu.runs.index`)."""

import sys

from mswelu.runs.index import main

if __name__ == "__main__":
    sys.exit(main())
