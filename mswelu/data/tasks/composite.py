"""The composite function task ("Achilles' heel of Mamba", Chen, Lin, Wang, Xu, NeurIPS 2025, arXiv
2509.17514; the anchor-function setting of Zhang et al. 2024, arXiv 2405.05409).

Each of ``anchors`` anchor ids stands for a function of a key: ``f_a(x) = (x + shift_a) mod keys`` (the
shifts are distinct, fixed by ``shifts``). An example: a key ``x`` followed by two anchors ``a1 a2``, at a
random place in a region of ``context`` noise tokens drawn from the keys' vocabulary (the key is the token
just before the anchors), then a separator and the answer ``f_a2(f_a1(x))``. One scored position (the answer).

One ordered anchor pair, ``(anchors - 1, anchors)``, never occurs in training; its reverse
``(anchors, anchors - 1)`` is trained with its answer shifted by ``asymmetry`` (so it is not a
composition). A model that learned each anchor's function answers the unseen pair with the composition
(the *compositional* solution, which the test scores as correct); a model that treats the pair as the
trained reverse one answers ``composition + asymmetry`` (the *symmetric* solution, scored wrong). The test
split holds the unseen pair only: test accuracy is the rate of compositional answers. The paper finds that
Mamba prefers the compositional solution and a Transformer the symmetric one, and that the conv controls
(weights fixed to one, a residual around the conv) move Mamba towards the Transformer.

Differs from the papers: shifts and sizes are drawn here (the papers use fixed shifts such as +5, +1, -2,
-8 on a wider range of keys), the keys wrap around ``mod keys`` and every anchor pair including ``a1 = a2``
is trained; only accuracy (the compositional rate) is scored, not the symmetric rate.
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
