"""The composite function task ("Achilles' heel of Mamba", Chen et al., NeurIPS 2025, arXiv 2509.17514; after
Zhang et al. 2024, arXiv 2405.05409).

Each anchor id stands for ``f_a(x) = (x + shift_a) mod keys``. An example: a key ``x`` and two anchors ``a1
a2`` at a random place in ``context`` noise tokens, a separator and the answer ``f_a2(f_a1(x))``. The pair
``(anchors - 1, anchors)`` never occurs in training and its reverse is trained with its answer shifted by
``asymmetry``; the test split holds the unseen pair only, so test accuracy is the rate of *compositional*
answers (the paper: Mamba composes, a Transformer answers the *symmetric* way, and the conv controls move
Mamba towards it).

Differs from the papers: shifts and sizes are drawn, keys wrap ``mod keys``, every pair including ``a1 = a2``
is trained, and only the compositional rate is scored.
"""

from __future__ import annotations

import numpy as np

from mswelu.data.tasks.registry import Example, Knobs, Task, need, register_task

SEPARATOR, FIRST_ANCHOR = 0, 1


def first_key(k: Knobs) -> int:
    return FIRST_ANCHOR + k["anchors"]


def shift_table(k: Knobs) -> np.ndarray:
    """``shift_a`` of every anchor (index 0 is anchor 1): distinct, in ``[1, keys)``, fixed by ``shifts``."""
    rng = np.random.default_rng([0x5EED, k["shifts"], k["keys"]])
    return 1 + rng.choice(k["keys"] - 1, size=k["anchors"], replace=False)


def held_out(k: Knobs) -> tuple[int, int]:
    """The anchor pair (1-based) never trained on: the test split's only pair."""
    return k["anchors"] - 1, k["anchors"]


def answer(k: Knobs, x: int, a1: int, a2: int) -> int:
    """The trained answer of key ``x`` (0-based) under anchors ``a1 a2`` (1-based), 0-based: the
    composition ``f_a2(f_a1(x))``, plus ``asymmetry`` for the reverse of the held-out pair."""
    shifts = shift_table(k)
    y = x + shifts[a1 - 1] + shifts[a2 - 1]
    if (a2, a1) == held_out(k):
        y += k["asymmetry"]
    return int(y % k["keys"])


def check(k: Knobs) -> None:
    need(k["anchors"] >= 2, "composite", f"anchors must be >= 2, got {k['anchors']}")
    need(
        k["keys"] > k["anchors"],
        "composite",
        f"keys ({k['keys']}) must exceed anchors ({k['anchors']}) (distinct shifts)",
    )
    need(k["context"] >= 3, "composite", f"context must hold a key and 2 anchors (>= 3), got {k['context']}")
    need(
        k["asymmetry"] % k["keys"] != 0,
        "composite",
        f"asymmetry must not be a multiple of keys={k['keys']} (the two solutions would agree)",
    )


def sample(k: Knobs, rng: np.random.Generator, split: str) -> Example:
    first, context = first_key(k), k["context"]
    pairs = [(a, b) for a in range(1, k["anchors"] + 1) for b in range(1, k["anchors"] + 1)]
    unseen = held_out(k)
    if split == "test":
        a1, a2 = unseen
    else:
        trained = [p for p in pairs if p != unseen]
        a1, a2 = trained[int(rng.integers(0, len(trained)))]
    x = int(rng.integers(0, k["keys"]))
    tokens = first + rng.integers(0, k["keys"], size=context + 2)
    where = int(rng.integers(0, context - 2))
    tokens[where : where + 3] = first + x, a1, a2
    tokens[context] = SEPARATOR
    tokens[context + 1] = first + answer(k, x, a1, a2)
    return Example(tokens.astype(np.int64), np.array([context]))


register_task(
    Task(
        name="composite",
        paper="Achilles' heel of Mamba (Chen, Lin, Wang, Xu 2025): composite function task",
        knobs={"keys": 16, "anchors": 4, "context": 8, "asymmetry": 3, "shifts": 0},
        levels={
            "easy": {"keys": 8, "anchors": 3, "context": 4},
            "medium": {"keys": 16, "anchors": 4, "context": 8},
            "hard": {"keys": 32, "anchors": 6, "context": 16},
        },
        vocab_size=lambda k: first_key(k) + k["keys"],
        seq_len=lambda k: k["context"] + 1,
        sample=sample,
        check=check,
        description="f_a2(f_a1(x)) for an anchor pair never trained on (its reverse trained, shifted)",
    )
)
