"""``python -m mswelu.runs list|show`` (:mod:`mswelu.runs.index`)."""

from mswelu.base.cli import run_command
from mswelu.runs.index import main

if __name__ == "__main__":
    raise SystemExit(run_command(main))
