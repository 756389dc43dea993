"""Stopping a run cleanly: SIGINT (Ctrl-C) and SIGTERM (a scheduler, ``launch`` stopping its children)
ask the loop to stop after the current step, with a checkpoint; a second Ctrl-C stops at once."""

from __future__ import annotations

import signal
import threading
from types import TracebackType
from typing import Any

from mswelu.base.progress import log

__all__ = ["StopRequest"]


class StopRequest:
    """``reason`` is None until a stop is requested (by a signal while installed, or :meth:`request`)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.finishing = False  # set once training is complete: the final evaluation and final/ follow
        self._previous: dict[int, Any] = {}

    def request(self, reason: str) -> None:
        self.reason = reason

    def _handler(self, signum: int, frame: Any) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        if self.finishing:
            log(
                f"{self.reason} received: training is complete; finishing the final evaluation and final/ "
                "(a second Ctrl-C stops at once; --resume auto then finishes them)"
            )
        else:
            log(f"{self.reason} received: finishing this step, writing a checkpoint, then stopping")

    def __enter__(self) -> StopRequest:
        """Install the handlers (only the main thread can; elsewhere only :meth:`request` stops)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {
                sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)
            }
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
