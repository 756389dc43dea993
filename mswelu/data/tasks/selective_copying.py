"""Selective copying (Gu & Dao 2023, section 4.1, appendix E.1): ``tokens`` data tokens at random places among
noise in a region of ``context`` positions, a separator, then the data tokens again in order; the copies are
scored. The content-aware spacing defeats a time-invariant convolution.

Differs from the paper: the copy is teacher-forced next-token prediction after one separator, and the levels
are CPU-sized (the paper: context 4096, 16 tokens of 16). Train and test come from one distribution.
"""

from __future__ import annotations

import numpy as np

from mswelu.data.tasks.registry import Example, Knobs, Task, need, register_task

NOISE, SEPARATOR, FIRST_DATA = 0, 1, 2


def check(k: Knobs) -> None:
    need(k["tokens"] >= 1, "selective_copying", f"tokens must be >= 1, got {k['tokens']}")
    need(k["vocab"] >= 2, "selective_copying", f"vocab must be >= 2, got {k['vocab']}")
    need(
        k["context"] >= k["tokens"],
        "selective_copying",
        f"context ({k['context']}) must hold the {k['tokens']} data tokens",
    )


def sample(k: Knobs, rng: np.random.Generator, split: str) -> Example:
    n, context = k["tokens"], k["context"]
    data = FIRST_DATA + rng.integers(0, k["vocab"], size=n)
    tokens = np.full(context + 1 + n, NOISE, dtype=np.int64)
    tokens[np.sort(rng.choice(context, size=n, replace=False))] = data
    tokens[context] = SEPARATOR
    tokens[context + 1 :] = data
    # the target at position context + i (input: the separator or the i-th copied token) is data[i]
    return Example(tokens, context + np.arange(n))


register_task(
    Task(
        name="selective_copying",
        paper="Mamba (Gu & Dao 2023), section 4.1: selective copying",
        knobs={"tokens": 4, "vocab": 8, "context": 16},
        levels={
            "easy": {"tokens": 2, "vocab": 4, "context": 8},
            "medium": {"tokens": 4, "vocab": 8, "context": 16},
            "hard": {"tokens": 8, "vocab": 16, "context": 48},
            "harder": {"tokens": 16, "vocab": 16, "context": 112},
        },
        vocab_size=lambda k: FIRST_DATA + k["vocab"],
        seq_len=lambda k: k["context"] + k["tokens"],
        sample=sample,
        check=check,
        description="copy the data tokens scattered among noise, in order, after a separator",
    )
)
