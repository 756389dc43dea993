"""``python -m mswelu.runs list|show``: every run's status and figures (the command line of
:mod:`mswelu.runs.index`)."""

import sys

from mswelu.runs.index import main

if __name__ == "__main__":
    sys.exit(main())
