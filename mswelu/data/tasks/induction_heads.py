"""Induction heads (Gu & Dao 2023, section 4.1; Olsson et al. 2022): a trigger id appears once followed by an
answer token and again as the last input; the model predicts that token (``A B ... A -> B``). One scored
position.

Differs from the paper (length 256, vocabulary 16, tested up to 2^20): a level fixes one length for training
and testing; train and test come from one distribution.
"""

from __future__ import annotations

import numpy as np

from mswelu.data.tasks.registry import Example, Knobs, Task, need, register_task

TRIGGER, FIRST_TOKEN = 0, 1


def check(k: Knobs) -> None:
    need(k["vocab"] >= 2, "induction_heads", f"vocab must be >= 2, got {k['vocab']}")
    need(k["seq_len"] >= 4, "induction_heads", f"seq_len must be >= 4, got {k['seq_len']}")


def sample(k: Knobs, rng: np.random.Generator, split: str) -> Example:
    length = k["seq_len"] + 1
    tokens = FIRST_TOKEN + rng.integers(0, k["vocab"], size=length)
    where = int(rng.integers(0, length - 3))  # the trigger and its answer end before the final pair
    tokens[where] = tokens[-2] = TRIGGER
    tokens[-1] = tokens[where + 1]
    return Example(tokens.astype(np.int64), np.array([length - 2]))


register_task(
    Task(
        name="induction_heads",
        paper="Mamba (Gu & Dao 2023), section 4.1: induction heads",
        knobs={"vocab": 16, "seq_len": 32},
        levels={
            "easy": {"vocab": 8, "seq_len": 16},
            "medium": {"vocab": 16, "seq_len": 64},
            "hard": {"vocab": 16, "seq_len": 256},
        },
        vocab_size=lambda k: FIRST_TOKEN + k["vocab"],
        seq_len=lambda k: k["seq_len"],
        sample=sample,
        check=check,
        description="after a trigger token seen once before, predict the token that followed it",
    )
)
