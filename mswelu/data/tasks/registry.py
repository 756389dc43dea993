"""Synthetic tasks by name: the one table the task source, loader and evaluator, notebook 07 and the probes
study read. A :class:`Task` spec has knobs with defaults, named difficulty levels (easiest first), the
vocabulary and length its knobs imply, and ``sample``. An example is ``seq_len + 1`` ids read as next-token
prediction; only the targets at its answers are scored, every other target is :data:`IGNORE`. Tasks whose
paper holds examples out of training draw ``train`` and ``test`` from disjoint sets; the others from one
distribution with independent seeds.
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
    """``tokens`` (``seq_len + 1`` int64 ids) and ``answers``, the scored positions in ``tokens[1:]``."""

    tokens: np.ndarray
    answers: np.ndarray


@dataclass(frozen=True)
class Task:
    """One registered task: ``knobs`` with defaults, ``levels`` (knob values over the defaults, easiest
    first), ``vocab_size(knobs)``, ``seq_len(knobs)``, ``sample(knobs, rng, split)``, ``check(knobs)``
    (ValueError for values that cannot make an example), and where it comes from (``paper``; its file says
    what differs)."""

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
