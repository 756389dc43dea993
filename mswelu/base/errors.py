"""Wording shared by the errors a user reads, and the one error a notebook shows as a single line; help
texts made plain (a docstring's reST markup is for readers of the code, not of ``--help``)."""

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
    """A run name that holds other work, refused before anything was written; the message says why and
    what to do instead. Notebooks show it as one line, not a traceback (``mswelu.workbook.start``)."""


class ParameterError(RunRefused):
    """A notebook parameter that cannot be right (an unknown name, a single value where a list belongs),
    refused at the start of the run before anything ran; shown as one line like every refusal."""


class RunInterrupted(RuntimeError):
    """A training stopped by Ctrl-C or SIGTERM after writing its checkpoint: the notebook stops there, its
    report says "interrupted" (not "failed") and how to continue, shown as one line."""


def with_nearest(unknown: Iterable[Any], known: Iterable[Any]) -> str:
    """``'d_modle' (did you mean 'd_model'?), 'foo'``: each unknown name with the closest known one."""
    names = [k for k in known if isinstance(k, str)]
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, names, 1) if isinstance(name, str) else []
        parts.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return ", ".join(parts)


def unknown_choice(what: str, value: Any, known: Iterable[Any]) -> str:
    """``unknown optimizer 'adamm' (did you mean 'adamw'?): expected one of adamw, muon``: the message
    for a ``value`` of ``what`` that is none of ``known``."""
    known = list(known)
    return f"unknown {what} {with_nearest([value], known)}: expected one of {', '.join(map(str, known))}"


def check_choice(what: str, value: Any, known: Iterable[Any]) -> None:
    """ValueError with :func:`unknown_choice`'s message unless ``value`` is one of ``known``."""
    known = list(known)
    if value not in known:
        raise ValueError(unknown_choice(what, value, known))


def choice(what: str, known: Iterable[Any]) -> Any:
    """An argparse ``type`` that accepts one of ``known`` and otherwise says :func:`unknown_choice`'s line
    (argparse's own ``choices`` lists them without the nearest one). Pair it with ``metavar``."""
    known = list(known)

    def parse(value: str) -> str:
        if value not in known:
            raise argparse.ArgumentTypeError(unknown_choice(what, value, known))
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def positive_int(what: str) -> Any:
    """An argparse ``type`` for a count a user types (``--seq-len``, ``--gpus``): an integer >= 1, else
    one line saying so (a typed 0 is never read as "the default")."""

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
    """A docstring as a command's ``--help`` shows it: reST roles (``:func:`decode```) become their target's
    name (``decode``; ``~a.b`` gives ``b``) and double-backquoted literals lose their backquotes."""
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return _LITERAL.sub(r"\1", text)
