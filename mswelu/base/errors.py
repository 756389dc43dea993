"""Wording shared by user-facing errors, refusals notebooks show as one line, and help texts made plain."""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ParameterError",
    "RunRefused",
    "check_choice",
    "choice",
    "plain_text",
    "unknown_choice",
    "with_nearest",
]


class RunRefused(ValueError):
    """A run name that holds other work, refused before anything was written; notebooks show one line."""


class ParameterError(RunRefused):
    """A notebook parameter that cannot be right, refused before anything ran."""


class RunInterrupted(RuntimeError):
    """A training stopped by Ctrl-C or SIGTERM after its checkpoint: the report says "interrupted"."""


def with_nearest(unknown: Iterable[Any], known: Iterable[Any]) -> str:
    """``'d_modle' (did you mean 'd_model'?), 'foo'``: each unknown name with the closest known one."""
    names = [k for k in known if isinstance(k, str)]
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, names, 1) if isinstance(name, str) else []
        parts.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return ", ".join(parts)


def unknown_choice(what: str, value: Any, known: Iterable[Any]) -> str:
    """``unknown optimizer 'adamm' (did you mean 'adamw'?): expected one of adamw, muon``."""
    known = list(known)
    return f"unknown {what} {with_nearest([value], known)}: expected one of {', '.join(map(str, known))}"


def check_choice(what: str, value: Any, known: Iterable[Any]) -> None:
    """ValueError with :func:`unknown_choice`'s message unless ``value`` is one of ``known``."""
    known = list(known)
    if value not in known:
        raise ValueError(unknown_choice(what, value, known))


def choice(what: str, known: Iterable[Any]) -> Any:
    """An argparse ``type`` accepting one of ``known``, else :func:`unknown_choice`'s line."""
    known = list(known)

    def parse(value: str) -> str:
        if value not in known:
            raise argparse.ArgumentTypeError(unknown_choice(what, value, known))
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def positive_int(what: str) -> Any:
    """An argparse ``type`` for a count >= 1 (a typed 0 is never "the default")."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number >= 1, got {value!r}") from None
        if number < 1:
            raise argparse.ArgumentTypeError(f"{what} must be >= 1, got {number}")
        return number

    parse.__name__ = what
    return parse


_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain_text(text: str) -> str:
    """A docstring as ``--help`` shows it: reST roles as names, literals without backquotes."""
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return _LITERAL.sub(r"\1", text)
