"""A split's documents read back from its shard: their lengths, and the documents themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mswelu.base.errors import check_choice
from mswelu.data.dataset_checks import check_shards, load_meta

__all__ = ["document_lengths", "split_documents"]


def document_lengths(path: str | Path, split: str = "train") -> np.ndarray:
    """Token count of each document in a split (EOS included), read from the shard's EOS positions."""
    meta = check_shards(path)
    check_choice("split", split, sorted(meta["splits"]))
    data = (
        np.memmap(Path(path) / f"{split}.bin", dtype=meta["dtype"], mode="r")
        if meta["splits"][split]["tokens"]
        else np.zeros(0, dtype=meta["dtype"])
    )
    ends = np.flatnonzero(data == meta["eos_id"])
    return np.diff(np.concatenate([[-1], ends])).astype(np.int64)


def split_documents(path: str | Path, split: str = "val") -> set[bytes]:
    """Each document of a split as bytes, to tell whether two splits share one."""
    meta = load_meta(path)
    check_choice("split", split, sorted(meta["splits"]))
    ids = np.fromfile(Path(path) / f"{split}.bin", dtype=meta["dtype"])
    ends = np.flatnonzero(ids == meta["eos_id"])
    starts = np.concatenate([[0], ends + 1])[: len(ends)]
    return {ids[s:e].tobytes() for s, e in zip(starts, ends, strict=True)}
