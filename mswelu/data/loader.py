"""Batches of token windows from prepared shards (``np.memmap``), deterministic, rank-sharded and exactly
resumable.

A batch is an int64 ``(batch_size, seq_len + 1)`` tensor (inputs ``w[:, :-1]``, targets ``w[:, 1:]``) and a
pure function of ``(seed, step, rank)``, so the loader's whole state is its step. ``"random"`` mode draws
``world_size * batch_size`` starts per step from a generator seeded with ``(seed, step)``, rank ``r`` taking
its rows of that one stream; ``"sequential"`` reads windows at stride ``seq_len`` in shard order, wrapping at
the end, ranks taking disjoint windows. Under a ``DataLoader`` with ``w`` workers, worker ``i`` yields steps
``step + i, step + i + w, ...``; the trainer counts consumed batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mswelu.base.errors import check_choice, unknown_choice
from mswelu.data.dataset_checks import check_shards, load_meta
from mswelu.data.positions import BATCH_SETTINGS, resume_step

if TYPE_CHECKING:
    from mswelu.data.tasks.source import TaskLoader

MODES = ("random", "sequential")


class TokenLoader(IterableDataset):
    """Iterator over ``(batch_size, seq_len + 1)`` int64 windows of one split of a prepared dataset."""

    @classmethod
    def for_micro_steps(
        cls,
        path: str | Path,
        micro_batch: int,
        seq_len: int,
        seed: int,
        rank: int,
        world_size: int,
        accum: int,
    ) -> list[TokenLoader] | list[TaskLoader]:
        """One training loader per micro-step, each its own rank among ``world_size x accum``, so a
        step's windows are one draw however the batch is split (a ``task:`` source gets its ``TaskLoader``
        s)."""
        from mswelu.data.tasks.source import TaskLoader, TaskSource, is_task_source

        if is_task_source(path):
            return TaskLoader.for_micro_steps(TaskSource(path), micro_batch, seed, rank, world_size, accum)
        return [
            cls(
                path,
                "train",
                batch_size=micro_batch,
                seq_len=seq_len,
                seed=seed,
                rank=rank * accum + i,
                world_size=world_size * accum,
                mode="random",
            )
            for i in range(accum)
        ]

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        batch_size: int = 8,
        seq_len: int = 1024,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        mode: str = "random",
    ) -> None:
        self.path = Path(path).expanduser()
        self.meta = check_shards(self.path, load_meta(self.path))
        if split not in self.meta["splits"]:
            raise ValueError(f"{unknown_choice('split', split, sorted(self.meta['splits']))} ({self.path})")
        check_choice("mode", mode, MODES)
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("world_size", world_size)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
        self.split, self.batch_size, self.seq_len = split, int(batch_size), int(seq_len)
        self.seed, self.rank, self.world_size, self.mode = int(seed), int(rank), int(world_size), mode
        self.num_tokens = int(self.meta["splits"][split]["tokens"])
        if self.num_tokens < self.seq_len + 1:
            raise ValueError(
                f"split {split!r} of {self.path} has {self.num_tokens} tokens, fewer than "
                f"seq_len + 1 = {self.seq_len + 1}"
            )
        self.num_windows = (self.num_tokens - 1) // self.seq_len  # sequential windows
        self.step = 0
        self._data: np.memmap | None = None

    @property
    def data(self) -> np.memmap:
        if self._data is None:  # opened lazily so the loader pickles cheaply into DataLoader workers
            self._data = np.memmap(self.path / f"{self.split}.bin", dtype=self.meta["dtype"], mode="r")
        return self._data

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_data"] = None
        return state

    def _gather(self, starts: np.ndarray, length: int) -> torch.Tensor:
        data = self.data
        rows = np.stack([data[s : s + length] for s in starts.tolist()])
        return torch.from_numpy(rows.astype(np.int64))

    def window_starts(self, step: int) -> np.ndarray:
        """Start offsets of this rank's windows at ``step`` (the whole definition of a batch)."""
        b, w = self.batch_size, self.world_size
        if self.mode == "random":
            rng = np.random.default_rng([self.seed, int(step)])
            starts = rng.integers(0, self.num_tokens - self.seq_len, size=w * b, dtype=np.int64)
            return starts[self.rank * b : (self.rank + 1) * b]
        first = (int(step) * w + self.rank) * b
        return ((first + np.arange(b, dtype=np.int64)) % self.num_windows) * self.seq_len

    def batch_at(self, step: int) -> torch.Tensor:
        return self._gather(self.window_starts(step), self.seq_len + 1)

    def __next__(self) -> torch.Tensor:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        if info is None:
            return self
        return (self.batch_at(s) for s in range(self.step + info.id, 2**62, info.num_workers))

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "seed": self.seed,
            "mode": self.mode,
            "split": self.split,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "world_size": self.world_size,
            "rank": self.rank,
            "fingerprint": self.meta.get("fingerprint"),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue at ``state["step"]``; the batch-defining settings must match (ValueError otherwise)."""
        mine = {key: getattr(self, key, self.meta.get(key)) for key in BATCH_SETTINGS}
        self.step = resume_step(state, mine)

    def check_vocab(self, model_vocab_size: int) -> None:
        """ValueError when the dataset's token ids do not fit a model with ``model_vocab_size`` rows."""
        largest = max(
            [self.meta["vocab_size"] - 1] + [s.get("max_token_id", -1) for s in self.meta["splits"].values()]
        )
        if largest >= model_vocab_size:
            raise ValueError(
                f"dataset {self.path} uses tokenizer {self.meta['tokenizer']!r} with vocabulary "
                f"{self.meta['vocab_size']} (ids up to {largest}), which does not fit a model with "
                f"vocab_size="
                f"{model_vocab_size}; prepare with the model's tokenizer or enlarge the model's vocabulary"
            )

    def eval_windows(self, seq_len: int | None = None, sample: int | None = None) -> np.ndarray:
        """Indices of the evaluation windows at stride ``seq_len``: all of them, or ``sample`` spread
        evenly from first to last, so a partial evaluation still covers every part of the split."""
        length = seq_len or self.seq_len
        windows = (self.num_tokens - 1) // length
        if windows < 1:
            raise ValueError(f"split {self.split!r} has {self.num_tokens} tokens, fewer than seq_len + 1")
        if sample is None or int(sample) >= windows:
            return np.arange(windows, dtype=np.int64)
        if int(sample) < 1:
            raise ValueError(f"sample must be >= 1 window, got {sample}")
        return np.unique(np.linspace(0, windows - 1, int(sample)).round().astype(np.int64))

    def iter_eval_batches(
        self,
        batch_size: int | None = None,
        seq_len: int | None = None,
        max_batches: int | None = None,
        sample: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """Deterministic pass over this split's :meth:`eval_windows` in order; global batch ``i`` goes
        to rank ``i % world_size``, so what is evaluated does not depend on the number of ranks.
        ``max_batches`` caps the global batches."""
        b = batch_size or self.batch_size
        length = seq_len or self.seq_len
        chosen = self.eval_windows(length, sample)
        total = math.ceil(len(chosen) / b)
        if max_batches is not None:
            total = min(total, int(max_batches))
        for i in range(self.rank, total, self.world_size):
            yield self._gather(chosen[i * b : (i + 1) * b] * length, length + 1)

    def __repr__(self) -> str:
        return (
            f"TokenLoader({str(self.path)!r}, split={self.split!r}, batch_size={self.batch_size}, "
            f"seq_len={self.seq_len}, mode={self.mode!r}, rank={self.rank}/{self.world_size}, "
            f"step={self.step})"
        )


def iter_eval_batches(
    path: str | Path,
    batch_size: int,
    seq_len: int,
    max_batches: int | None = None,
    split: str = "val",
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[torch.Tensor]:
    """Shortcut for ``TokenLoader(path, split, ...).iter_eval_batches(max_batches=...)``."""
    loader = TokenLoader(
        path,
        split,
        batch_size=batch_size,
        seq_len=seq_len,
        rank=rank,
        world_size=world_size,
        mode="sequential",
    )
    return loader.iter_eval_batches(max_batches=max_batches)
