"""What every command line does on its way out: a reader that stopped early (``| head``) ends it quietly.
:func:`run_command` runs a ``python -m`` entry point's ``main`` and flushes stdout while a ``BrokenPipeError``
can still be caught; on one it points stdout at ``/dev/null`` (so the interpreter's last flush is silent) and
exits with SIGPIPE's status.
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
