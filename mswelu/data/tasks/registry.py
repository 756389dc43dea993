"""Synthetic tasks by name: the one table that ``data: task:<name>?<knobs>``, the task loader, the task
evaluator, notebook 07 and the probes study read.

A task is registered as a :class:`Task` spec: its knobs with their defaults (what sets its difficulty:
sequence length, vocabulary, number of pairs, noise, ...), named difficulty levels (knob values, easiest
first), the vocabulary and sequence length its knobs imply, and ``sample``: one example from a NumPy
generator. An example is a token sequence of ``seq_len + 1`` ids and the positions of its answers; read as
next-token prediction (inputs ``tokens[:-1]``, targets ``tokens[1:]``), only the targets at ``answers``
are scored (the loss and the accuracy), every other target is :data:`IGNORE`.

A task's ``split`` argument is ``"train"`` or ``"test"``; a task whose paper holds examples out of training
(the composite function task's unseen anchor pairs, inverse matching's held-out sequences) draws the two
splits from disjoint sets; the others draw both from one distribution with independent seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mswelu.base.errors import unknown_choice, with_nearest

__all__ = ["IGNORE", "SPLITS", "TASKS", "Example", "Task", "need", "register_task", "task_spec"]

#: the target of a position that is not scored (the loss's ``ignore_index``)
IGNORE = -100
SPLITS = ("train", "test")

Knobs = Mapping[str, Any]


@dataclass(frozen=True)
class Example:
    """One example: ``tokens`` (``seq_len + 1`` int64 ids) and ``answers``, the target positions scored
    (indices into ``tokens[1:]``: the answer at position ``i`` is ``tokens[i + 1]``, predicted from
    ``tokens[: i + 1]``)."""

    tokens: np.ndarray
    answers: np.ndarray


@dataclass(frozen=True)
class Task:
    """One registered task.

    Attributes:
        name: its name in ``data: task:<name>`` and records.
        paper: where its definition comes from (the docstring of its file says what differs).
        knobs: every knob with its default value (ints or strings); a source may set any of them.
        levels: named difficulty levels, easiest first: each a mapping of knob values over the defaults.
        vocab_size: ``(knobs) -> int``: the vocabulary its examples use (ids ``0 .. vocab_size - 1``).
        seq_len: ``(knobs) -> int``: the inputs' length (an example holds ``seq_len + 1`` tokens).
        sample: ``(knobs, rng, split) -> Example``.
        check: ``(knobs) -> None``: ValueError for knob values that cannot make an example.
        description: one line for docs and reports.
    """

    name: str
    paper: str
    knobs: Mapping[str, Any]
    levels: Mapping[str, Mapping[str, Any]]
    vocab_size: Callable[[Knobs], int]
    seq_len: Callable[[Knobs], int]
    sample: Callable[[Knobs, np.random.Generator, str], Example]
    check: Callable[[Knobs], None] = field(default=lambda knobs: None)
    description: str = ""

    def resolve(self, level: str | None = None, **overrides: Any) -> dict[str, Any]:
        """The knob values of ``level`` (default: the defaults) with ``overrides`` on top, type-checked
        against the defaults and checked by the task (ValueError with one clear line otherwise)."""
        knobs = dict(self.knobs)
        if level is not None:
            if level not in self.levels:
                raise ValueError(unknown_choice(f"level of task {self.name!r}", level, self.levels))
            knobs.update(self.levels[level])
        unknown = [k for k in overrides if k not in self.knobs]
        if unknown:
            raise ValueError(
                f"task {self.name!r} has no knob {with_nearest(unknown, self.knobs)}: its knobs are "
                f"{', '.join(self.knobs)}"
            )
        for key, value in overrides.items():
            knobs[key] = _as_type(self.name, key, value, self.knobs[key])
        self.check(knobs)
        return knobs


def _as_type(task: str, key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default`` (knobs read from a ``task:`` string arrive as text)."""
    if isinstance(default, bool) or not isinstance(default, int):
        return str(value)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"task {task!r}: knob {key} must be an integer, got {value!r}") from None
    if str(number) != str(value).strip() and not isinstance(value, int):
        raise ValueError(f"task {task!r}: knob {key} must be an integer, got {value!r}")
    return number


def need(condition: bool, task: str, message: str) -> None:
    """ValueError ``task <name>: <message>`` unless ``condition`` (the knob checks of every task)."""
    if not condition:
        raise ValueError(f"task {task!r}: {message}")


TASKS: dict[str, Task] = {}


def register_task(spec: Task) -> Task:
    if spec.name in TASKS:
        raise ValueError(f"task {spec.name!r} is already registered")
    if len(spec.levels) < 3:
        raise ValueError(f"task {spec.name!r} needs at least 3 named difficulty levels")
    for level in spec.levels.values():
        spec.resolve(**level)  # every level is a valid setting
    TASKS[spec.name] = spec
    return spec


def task_spec(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(unknown_choice("task", name, TASKS))
    return TASKS[name]
