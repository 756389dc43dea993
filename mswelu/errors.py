"""Wording shared by the errors a user reads."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["unknown_choice", "with_nearest"]


def with_nearest(unknown: Iterable[str], known: Iterable[str]) -> str:
    """``'d_modle' (did you mean 'd_model'?), 'foo'``: each unknown name with the closest known one."""
    known = list(known)
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, 1)
        parts.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return ", ".join(parts)


def unknown_choice(what: str, value: object, choices: Iterable[str]) -> str:
    """``unknown norm 'rms' (did you mean 'rmsnorm'?): expected one of ('layernorm', 'rmsnorm')``."""
    choices = tuple(choices)
    return f"unknown {what} {with_nearest([str(value)], choices)}: expected one of {choices}"
