"""What every command line does on its way out: a reader that stopped early (``| head``) ends it quietly.

Python raises ``BrokenPipeError`` on the next write to a pipe whose reader has gone, and again when it
flushes stdout at exit ("Exception ignored ..."). :func:`run_command` runs a command's ``main``, flushes
stdout while the error can still be caught, and on a broken pipe points stdout at ``/dev/null`` (so that the
interpreter's own last flush is silent) and exits with the status a shell gives a process ended by
SIGPIPE. It is only for ``python -m`` entry points: a notebook's kernel keeps Python's behaviour.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

__all__ = ["BROKEN_PIPE_STATUS", "run_command"]

#: 128 + SIGPIPE, what a shell reports for ``cmd | head`` when cmd is killed by the signal
BROKEN_PIPE_STATUS = 141


def run_command(main: Callable[[], int | None]) -> int:
    """``main()``'s exit status; :data:`BROKEN_PIPE_STATUS`, with no traceback, when stdout's reader left."""
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return BROKEN_PIPE_STATUS
    return int(status or 0)
