"""A task as a data source: ``task:<name>?level=<level>&<knob>=<value>&test=<examples>`` in a run's ``data``
(``&eval=tune``: a tuning set apart from the test set). :class:`TaskSource` parses it (a bad name, level or
knob is one line) and makes ``(batch, 2, seq_len)`` input/target batches, targets :data:`~.registry.IGNORE`
except at the answers. Training batches are a pure function of ``(seed, step, row)``, so a :class:`TaskLoader`
resumes exactly from its step; the test set depends on the source alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import torch

from mswelu.data.positions import BATCH_SETTINGS, resume_step
from mswelu.data.tasks.registry import IGNORE, Example, task_spec

__all__ = ["TASK_PREFIX", "TaskLoader", "TaskSource", "is_task_source"]

TASK_PREFIX = "task:"
#: what a source's evaluations score (``eval=``): the reported test set, or the tuning set of lr sweeps
EVAL_SETS = ("test", "tune")
DEFAULT_TEST_EXAMPLES = 512
_TRAIN, _TEST, _TUNE = 1, 2, 3  # generator salts: train, test and tuning draws never share a stream


def is_task_source(data: Any) -> bool:
    """Whether a run's ``data`` names a task (``task:...``) rather than a prepared dataset folder."""
    return isinstance(data, str) and data.startswith(TASK_PREFIX)


class TaskSource:
    """One task at one setting (see the module docstring)."""

    def __init__(self, text: str) -> None:
        if not is_task_source(text):
            raise ValueError(f"a task source starts with {TASK_PREFIX!r}, got {text!r}")
        name, _, query = text[len(TASK_PREFIX) :].partition("?")
        options: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
            if key in options:
                raise ValueError(f"task source {text!r} sets {key} twice")
            options[key] = value
        self.text = text
        self.task = task_spec(name)
        self.level = options.pop("level", None)
        test = options.pop("test", str(DEFAULT_TEST_EXAMPLES))
        if not test.isdigit() or int(test) < 1:
            raise ValueError(f"task source {text!r}: test must be a positive integer, got {test!r}")
        self.test_examples = int(test)
        self.eval_set = options.pop("eval", "test")
        if self.eval_set not in EVAL_SETS:
            raise ValueError(f"task source {text!r}: eval must be one of {', '.join(EVAL_SETS)}")
        self.knobs = self.task.resolve(self.level, **options)
        self.vocab_size = int(self.task.vocab_size(self.knobs))
        self.seq_len = int(self.task.seq_len(self.knobs))

    @property
    def name(self) -> str:
        return self.task.name

    @cached_property
    def fingerprint(self) -> str:
        """What the examples depend on: the task, its knobs and the test set's size (not the spelling)."""
        ident = {"task": self.task.name, "knobs": self.knobs, "test": self.test_examples}
        if self.eval_set != "test":
            ident["eval"] = self.eval_set
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def meta(self) -> dict[str, Any]:
        """The ``meta.json`` fields a run reads, for a task."""
        return {
            "task": self.task.name,
            "knobs": dict(self.knobs),
            "tokenizer": f"{TASK_PREFIX}{self.task.name}",  # no tokenizer: final/ is saved without one
            "vocab_size": self.vocab_size,
            "eos_id": 0,
            "fingerprint": self.fingerprint,
            "splits": {"val": {"examples": self.test_examples, "tokens": self.test_examples * self.seq_len}},
        }

    def _example(self, salt: list[int], split: str) -> Example:
        ex = self.task.sample(self.knobs, np.random.default_rng(salt), split)
        if ex.tokens.shape != (self.seq_len + 1,):  # a task's contract, checked where it is used
            raise AssertionError(f"task {self.name}: example of {ex.tokens.shape}, not ({self.seq_len + 1},)")
        return ex

    def pairs(self, examples: list[Example]) -> torch.Tensor:
        """``(len(examples), 2, seq_len)``: inputs, and targets that are :data:`IGNORE` off the answers."""
        out = np.full((len(examples), 2, self.seq_len), IGNORE, dtype=np.int64)
        for i, ex in enumerate(examples):
            out[i, 0] = ex.tokens[:-1]
            out[i, 1, ex.answers] = ex.tokens[1:][ex.answers]
        return torch.from_numpy(out)

    def train_batch(self, seed: int, step: int, rows: range) -> torch.Tensor:
        """Rows ``rows`` of the global training batch of ``step`` for run seed ``seed``."""
        return self.pairs([self._example([_TRAIN, int(seed), int(step), r], "train") for r in rows])

    def test_batches(self, batch_size: int, sample: int | None = None) -> Iterator[torch.Tensor]:
        """The test set (``eval=tune``: a tuning set) in batches, its first ``sample`` when given."""
        count = self.test_examples if sample is None else min(int(sample), self.test_examples)
        salt = _TUNE if self.eval_set == "tune" else _TEST
        for start in range(0, count, batch_size):
            rows = range(start, min(start + batch_size, count))
            yield self.pairs([self._example([salt, r], "test") for r in rows])

    def __repr__(self) -> str:
        return f"TaskSource({self.text!r})"


class TaskLoader:
    """A task's training batches: deterministic, rank-sharded, exactly resumable, as a ``TokenLoader``."""

    split, mode = "train", "random"

    @classmethod
    def for_micro_steps(
        cls, source: TaskSource, micro_batch: int, seed: int, rank: int, world_size: int, accum: int
    ) -> list[TaskLoader]:
        """One loader per micro-step, each its own rank among ``world_size x accum``."""
        return [cls(source, micro_batch, seed, rank * accum + i, world_size * accum) for i in range(accum)]

    def __init__(self, source: TaskSource, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.source, self.batch_size, self.seed = source, int(batch_size), int(seed)
        self.rank, self.world_size, self.seq_len = int(rank), int(world_size), source.seq_len
        self.fingerprint = source.fingerprint
        self.step = 0

    def batch_at(self, step: int) -> torch.Tensor:
        first = self.rank * self.batch_size
        return self.source.train_batch(self.seed, step, range(first, first + self.batch_size))

    def __next__(self) -> torch.Tensor:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def __iter__(self) -> TaskLoader:
        return self

    def state_dict(self) -> dict[str, Any]:
        keys = ("step", "seed", "mode", "split", "batch_size", "seq_len", "world_size", "rank", "fingerprint")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at ``state["step"]``; the batch-defining settings must match (ValueError otherwise)."""
        self.step = resume_step(state, {key: getattr(self, key) for key in BATCH_SETTINGS})
