"""How run folders are named and read back: a stem of ``-``-joined parts, then ``-lr<lr>`` for a sweep's run
and ``-s<seed>`` for one seed of several (``study-mamba-swelu-s0``, ``study-tune-silu-lr0.001``).
:func:`check_run_name` is the one check of a user's name: a folder under ``runs/``, never a way out of it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["RunName", "check_run_name", "parse_run_name", "run_name"]

_SEED = re.compile(r"^(?P<rest>.+)-s(?P<seed>\d+)$")
_LR = re.compile(r"^(?P<rest>.+)-lr(?P<lr>\d[\d.]*(?:e[+-]?\d+)?)$")


class RunName(NamedTuple):
    """A run name read back: the stem, and the lr and seed it ends with (None where it does not)."""

    stem: str
    lr: float | None = None
    seed: int | None = None


def run_name(*parts: object, lr: float | None = None, seed: int | None = None) -> str:
    """The parts that are not None or empty joined by ``-``, then ``lr<lr:g>`` and ``s<seed>``."""
    words = [str(p) for p in parts if p is not None and str(p) != ""]
    if lr is not None:
        words.append(f"lr{float(lr):g}")
    if seed is not None:
        words.append(f"s{int(seed)}")
    if not words:
        raise ValueError("a run name needs at least one part")
    return "-".join(words)


def parse_run_name(name: str) -> RunName:
    """The stem, lr and seed of ``name`` (the inverse of :func:`run_name`)."""
    seed = lr = None
    if m := _SEED.match(name):
        name, seed = m["rest"], int(m["seed"])
    if m := _LR.match(name):
        name, lr = m["rest"], float(m["lr"])
    return RunName(name, lr, seed)


def check_run_name(name: object, what: str = "run_name") -> str:
    """``name`` when it names a folder inside ``runs/``; a ValueError saying why not."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty name, got {name!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(
            f"{what} {name!r} holds a control character; a run name is a folder name under runs/"
        )
    if name.startswith(("/", "~")) or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise ValueError(
            f"{what} {name!r} is a path, not a run name (a folder under runs/): give a name, or give the "
            "folder as out (--out)"
        )
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(
            f"{what} {name!r} would not be a folder inside runs/ (no '.', '..' or empty parts): give a name "
            "such as 'main' or 'study/main-s0'"
        )
    return name
