"""Progress lines for whoever started a run: one per log interval and one per evaluation. Inside a Jupyter
kernel they go to the file descriptor the kernel inherited (papermill's terminal), not into the notebook;
elsewhere to stderr. ``MSWELU_PROGRESS=off`` silences them, ``=on`` forces them.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import sys
import time
from typing import Any

__all__ = ["after_bar", "format_duration", "format_eval", "format_step", "in_kernel", "say"]


def in_kernel() -> bool:
    """True inside an IPython kernel (ipykernel replaces sys.stderr with its OutStream)."""
    return "ipykernel" in sys.modules and type(sys.stderr).__name__ == "OutStream"


def _enabled() -> bool:
    mode = os.environ.get("MSWELU_PROGRESS", "auto").lower()
    if mode in ("off", "0", "false", "no"):
        return False
    if mode in ("on", "1", "true", "yes"):
        return True
    # A kernel started by a Jupyter server (JupyterLab) has no user terminal: its stderr is the server log.
    return not (in_kernel() and os.environ.get("JPY_SESSION_NAME"))


def log(message: str, source: str = "mswelu.train") -> None:
    """A one-line notice on stderr, ``[mswelu.train] ...``: always shown, unlike progress lines."""
    print(f"[{source}] {message}", file=sys.stderr, flush=True)


_AFTER_BAR = [False]  # the launching terminal's cursor sits at the end of another program's progress bar


def after_bar() -> None:
    """Another program's bar (papermill's) ends the current line: start the next progress line afresh."""
    _AFTER_BAR[0] = True


def say(text: str, bar: Any = None) -> None:
    """Write one progress line to the launching terminal (see the module docstring)."""
    if not _enabled():
        return
    line = text.rstrip("\n") + "\n"
    if in_kernel():
        if _AFTER_BAR[0]:
            line, _AFTER_BAR[0] = "\n" + line, False
        try:  # ipykernel captures fd 2 into the notebook and hands out the launcher's copy here
            fd = sys.stderr.fileno()
        except (OSError, ValueError, AttributeError):  # not captured (e.g. under pytest): fd 2 is it
            fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else None
        if fd is not None:
            os.write(fd, line.encode("utf-8", "replace"))
        return
    if bar is not None and not getattr(bar, "disable", True):
        bar.write(line.rstrip("\n"), file=sys.stderr)
    else:
        print(line, end="", file=sys.stderr, flush=True)


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``4:05``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _clock() -> str:
    return _dt.datetime.now().strftime("%H:%M:%S")


def format_step(
    run: str,
    step: int,
    total: int,
    loss: float | None,
    tokens_per_s: float | None,
    seconds_left: float | None,
) -> str:
    """``[12:00:01 main] step 50/300  loss 6.5123  640 tok/s  4:10 left``."""
    width = len(str(total))
    parts = [f"[{_clock()} {run}] step {step:>{width}}/{total}"]
    parts.append(f"loss {loss:.4f}" if loss is not None else "loss -")
    parts.append(f"{tokens_per_s:,.0f} tok/s" if tokens_per_s else "- tok/s")
    parts.append(f"{format_duration(seconds_left)} left")
    return "  ".join(parts)


def format_eval(
    run: str,
    step: int,
    total: int,
    val_loss: float,
    val_bpb: float | None,
    scope: str | None = None,
    tokens: int | None = None,
) -> str:
    """``[12:00:05 main] eval at step 50/300 (whole split, 84,480 tokens): val loss 7.3400, 2.931
    bits/byte``; the scope keeps a whole-split figure from reading as a change from a sampled one."""
    bpb = f", {val_bpb:.3f} bits/byte" if val_bpb is not None else ""
    what = ""
    if scope:
        what = f" ({'sampled windows' if scope == 'sample' else scope}"
        what += f", {tokens:,} tokens)" if tokens else ")"
    return f"[{_clock()} {run}] eval at step {step}/{total}{what}: val loss {val_loss:.4f}{bpb}"


#: how often a run with its progress off (a comparison's, a study's) still says where it is: its runs can take
#: hours, and silence for that long reads as a hang
HEARTBEAT_S = 600.0


class RunProgress:
    """A run's tqdm bar and progress lines, with an ETA; when ``enabled`` is false, no bar and, from the first
    process of a run (torchrun's ``RANK`` 0), a step line per :data:`HEARTBEAT_S` (none in a shorter run)."""

    def __init__(self, run: str, total: int, initial: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.run, self.total, self.enabled = run, total, enabled
        self.first, self.t0 = initial, time.perf_counter()
        self._beat = self.t0 if os.environ.get("RANK", "0") == "0" else math.inf
        self._tokens, self._seconds = 0, 0.0
        self.bar = tqdm(
            total=total, initial=initial, desc=run, unit="step", disable=not enabled, dynamic_ncols=True
        )

    def advance(self, tokens: int, seconds: float) -> None:
        """One optimizer step of ``tokens`` in ``seconds`` (the rate counts training only)."""
        self.bar.update(1)
        self._tokens += tokens
        self._seconds += seconds

    def interval_rate(self) -> float | None:
        """Training tokens/s since the previous call."""
        rate = self._tokens / self._seconds if self._seconds > 0 else None
        self._tokens, self._seconds = 0, 0.0
        return rate

    def step(self, step: int, loss: float, tokens_per_s: float | None) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        done = step - self.first
        left = (time.perf_counter() - self.t0) / done * (self.total - step) if done > 0 else None
        now = time.perf_counter()
        if self.enabled or now - self._beat >= HEARTBEAT_S:
            self._beat = now
            say(format_step(self.run, step, self.total, loss, tokens_per_s, left), self.bar)

    def eval(
        self,
        step: int,
        val_loss: float,
        val_bpb: float | None,
        scope: str | None = None,
        tokens: int | None = None,
    ) -> None:
        if self.enabled:
            say(format_eval(self.run, step, self.total, val_loss, val_bpb, scope, tokens), self.bar)

    def close(self) -> None:
        self.bar.close()
