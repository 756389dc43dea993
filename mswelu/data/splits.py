"""Which documents go to validation: the seeded split by document, and disjoint folds of it.

Each document's key is hashed with the split seed to u in [0, 1) (:func:`doc_hash`), a fixed order no other
document changes, cut into blocks of ``max(1, round(val_fraction * n))`` documents (or width ``val_fraction``
in u for streams). Block 0 is the plain split's validation and the folds' tuning split (fold 0); fold ``j`` in
1..K validates on block ``j``, so folds never overlap each other or the tuning split, and block ``j`` does not
depend on K (checked: ``(K + 1) * k <= n``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

TUNING_FOLD = 0


def doc_hash(key: str, seed: int) -> float:
    """Seeded, order-independent position of a document in [0, 1) (decides its split)."""
    h = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=f"mswelu{seed}"[:16].encode())
    return int.from_bytes(h.digest(), "little") / 2.0**64


def check_folds(folds: Any, fold: Any) -> None:
    """ValueError unless both are None or ``folds`` >= 1 and ``fold`` in 0..folds (0: the tuning split)."""
    if folds is None and fold is None:
        return
    if folds is None or fold is None:
        raise ValueError(
            f"folds and fold go together (got folds={folds!r}, fold={fold!r}): e.g. folds=4, fold=2 for "
            "fold 2 of 4, fold=0 for the scheme's tuning split"
        )
    for name, value in (("folds", folds), ("fold", fold)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if folds < 1 or not 0 <= fold <= folds:
        raise ValueError(
            f"fold {fold!r} of {folds!r}: folds must be >= 1 and fold from 1 to folds (0: the tuning split)"
        )


def block_bounds(
    hashes: np.ndarray, val_fraction: float, block: int, blocks: int, description: str
) -> tuple[float, float]:
    """Finite sources: ``(lo, hi)`` with block ``block``'s documents exactly those whose u has
    ``lo < u <= hi``; ``blocks`` blocks of ``k`` documents must leave at least one training document."""
    n = len(hashes)
    if n == 0:
        raise ValueError(f"empty corpus: {description} holds no non-blank documents")
    k = max(1, round(val_fraction * n))
    if blocks * k >= n + (blocks > 1):
        if blocks == 1:
            raise ValueError(
                f"{description} has {n} document(s): too few for a validation split of "
                f"{val_fraction} by document (use more documents, or txt_sample_by='paragraph' for one big "
                ".txt)"
            )
        raise ValueError(
            f"{description} has {n} documents: {blocks - 1} folds and a tuning split of {k} documents each "
            f"(val_fraction {val_fraction}) need {blocks * k}; use fewer folds or a smaller val_fraction"
        )
    ordered = np.sort(hashes)
    lo = -1.0 if block == 0 else float(ordered[block * k - 1])
    return lo, float(ordered[(block + 1) * k - 1])


def validation_rule(
    keys: Callable[[], Iterable[str]],
    finite: bool,
    val_fraction: float,
    seed: int,
    description: str,
    folds: int | None = None,
    fold: int | None = None,
) -> Callable[[str], bool]:
    """Whether a document key belongs to validation; ``keys()`` lists a finite source's keys (read once)."""
    check_folds(folds, fold)
    block = 0 if fold is None else int(fold)
    blocks = 1 if folds is None else int(folds) + 1
    if finite:
        hashes = np.fromiter((doc_hash(k, seed) for k in keys()), dtype=np.float64)
        lo, hi = block_bounds(hashes, val_fraction, block, blocks, description)
        return lambda key: lo < doc_hash(key, seed) <= hi
    if blocks * val_fraction > 1:
        raise ValueError(
            f"{folds} folds and a tuning split of val_fraction {val_fraction} each exceed the whole stream"
        )
    lo_u, hi_u = block * val_fraction, (block + 1) * val_fraction
    return lambda key: lo_u <= doc_hash(key, seed) < hi_u


def fold_record(folds: int | None, fold: int | None) -> dict | None:
    """What ``meta.json`` records about a dataset's place in a fold scheme (None for the plain split)."""
    if folds is None:
        return None
    role = "tuning" if fold == TUNING_FOLD else "validation fold"
    return {
        "folds": int(folds),
        "fold": int(fold),  # type: ignore[arg-type]
        "role": role,
        "validation_block": int(fold),  # type: ignore[arg-type]
        "rule": "blocks of the seeded hash order; block 0 the tuning split, block j fold j",
    }
