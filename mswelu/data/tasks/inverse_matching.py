"""Inverse sequence matching ("Achilles' heel of Mamba", Chen et al., NeurIPS 2025, arXiv 2509.17514): is one
sequence the other reversed? The paper finds Mamba's conv + SiLU before the scan makes this hard for Mamba and
easy for a Transformer.

An example: ``a``, a separator, ``b``, a query id and the label (TRUE exactly when ``b`` is ``a`` reversed;
half are). A negative is random (``negatives=random``) or ``reversed(a)`` with ``changes`` positions replaced
(``near``, harder). Differs from the paper: a next-token reading of its description with near-miss negatives
added; ``a`` is in the test split when a fixed hash of it is 0 mod 5, so no test pair was seen in training.
"""

from __future__ import annotations

import numpy as np

from mswelu.data.tasks.registry import Example, Knobs, Task, need, register_task

SEPARATOR, QUERY, FALSE, TRUE, FIRST_DATA = 0, 1, 2, 3, 4
NEGATIVES = ("random", "near")
TEST_SHARE = 5  # one sequence in 5 is held out for testing


def in_test_split(a: np.ndarray) -> bool:
    """Whether sequence ``a`` (data ids) is held out for testing: a fixed polynomial hash, 0 mod 5."""
    h = 0
    for t in a.tolist():
        h = (h * 1_000_003 + int(t) + 1) % 2_147_483_647
    return (h * 2_654_435_761 % 2**32) % TEST_SHARE == 0


def check(k: Knobs) -> None:
    need(k["length"] >= 2, "inverse_matching", f"length must be >= 2, got {k['length']}")
    need(k["vocab"] >= 2, "inverse_matching", f"vocab must be >= 2, got {k['vocab']}")
    need(
        k["negatives"] in NEGATIVES,
        "inverse_matching",
        f"negatives must be one of {', '.join(NEGATIVES)}, got {k['negatives']!r}",
    )
    need(
        1 <= k["changes"] <= k["length"],
        "inverse_matching",
        f"changes must be in [1, length={k['length']}], got {k['changes']}",
    )


def sample(k: Knobs, rng: np.random.Generator, split: str) -> Example:
    n, vocab = k["length"], k["vocab"]
    while True:  # rejection: the split's share of sequences
        a = rng.integers(0, vocab, size=n)
        if in_test_split(a) == (split == "test"):
            break
    b = a[::-1].copy()
    if rng.random() >= 0.5:  # a negative
        if k["negatives"] == "random":
            b = rng.integers(0, vocab, size=n)
        else:
            where = rng.choice(n, size=k["changes"], replace=False)
            b[where] = (b[where] + rng.integers(1, vocab, size=len(where))) % vocab  # each one changed
    label = TRUE if np.array_equal(b, a[::-1]) else FALSE
    tokens = np.concatenate([FIRST_DATA + a, [SEPARATOR], FIRST_DATA + b, [QUERY, label]]).astype(np.int64)
    return Example(tokens, np.array([2 * n + 1]))


register_task(
    Task(
        name="inverse_matching",
        paper="Achilles' heel of Mamba (Chen, Lin, Wang, Xu 2025): inverse sequence matching",
        knobs={"length": 4, "vocab": 8, "negatives": "random", "changes": 1},
        levels={
            "easy": {"length": 3, "vocab": 8, "negatives": "random"},
            "medium": {"length": 6, "vocab": 8, "negatives": "random"},
            "hard": {"length": 6, "vocab": 8, "negatives": "near"},
            "harder": {"length": 12, "vocab": 16, "negatives": "near"},
        },
        vocab_size=lambda k: FIRST_DATA + k["vocab"],
        seq_len=lambda k: 2 * k["length"] + 2,
        sample=sample,
        check=check,
        description="is the second sequence the first reversed? (a TRUE / FALSE label)",
    )
)
