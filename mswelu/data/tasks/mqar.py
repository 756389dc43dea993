"""Multi-query associative recall (MQAR; Zoology, Arora et al. 2023, arXiv 2312.04927, section 3).

An example: ``pairs`` key-value pairs ``k1 v1 k2 v2 ...`` (distinct keys), then a query region in which
every key appears once more, in a random order and at a random place, each followed by its value; the
model must predict the value after each queried key (one scored position per query). Keys and values have
vocabularies of their own (``keys`` and ``values`` ids), so an answer is never a key.

Differs from the paper: (1) the query region's other positions hold one filler id (0) where Zoology draws
random tokens; (2) the queries' places are uniform over the region where Zoology spaces them by a power
law (``power_a``), so that Zoology's long gaps are rarer here; (3) every key is queried exactly once.
Train and test examples are drawn from one distribution (as in Zoology, whose train and test sets come
from different seeds). Difficulty: ``pairs`` against the model's width, ``seq_len``, the vocabulary.
"""

from __future__ import annotations

import numpy as np

from mswelu.data.tasks.registry import Example, Knobs, Task, need, register_task

FILLER = 0


def vocab_size(k: Knobs) -> int:
    return 1 + k["keys"] + k["values"]


def check(k: Knobs) -> None:
    need(k["pairs"] >= 1, "mqar", f"pairs must be >= 1, got {k['pairs']}")
    need(k["keys"] >= k["pairs"], "mqar", f"keys ({k['keys']}) must be >= pairs ({k['pairs']})")
    need(k["values"] >= 2, "mqar", f"values must be >= 2, got {k['values']}")
    need(
        k["seq_len"] + 1 >= 4 * k["pairs"],
        "mqar",
        f"seq_len + 1 must hold the pairs and the queries (>= {4 * k['pairs']}), got {k['seq_len']}",
    )


def sample(k: Knobs, rng: np.random.Generator, split: str) -> Example:
    n, length = k["pairs"], k["seq_len"] + 1
    keys = 1 + rng.choice(k["keys"], size=n, replace=False)
    values = 1 + k["keys"] + rng.integers(0, k["values"], size=n)
    tokens = np.full(length, FILLER, dtype=np.int64)
    tokens[0 : 2 * n : 2], tokens[1 : 2 * n : 2] = keys, values
    region = length - 2 * n
    # n blocks of two (key, value) at distinct places of the region: sorted distinct s_i in [0, region - n)
    starts = 2 * n + np.sort(rng.choice(region - n, size=n, replace=False)) + np.arange(n)
    order = rng.permutation(n)
    tokens[starts], tokens[starts + 1] = keys[order], values[order]
    return Example(tokens, starts)  # the target at a query key's position is its value


register_task(
    Task(
        name="mqar",
        paper="Zoology (Arora et al. 2023), multi-query associative recall",
        knobs={"pairs": 4, "keys": 16, "values": 16, "seq_len": 32},
        levels={
            "easy": {"pairs": 2, "keys": 8, "values": 8, "seq_len": 16},
            "medium": {"pairs": 4, "keys": 16, "values": 16, "seq_len": 32},
            "hard": {"pairs": 8, "keys": 32, "values": 32, "seq_len": 64},
            "harder": {"pairs": 16, "keys": 64, "values": 64, "seq_len": 128},
        },
        vocab_size=vocab_size,
        seq_len=lambda k: k["seq_len"],
        sample=sample,
        check=check,
        description="the value bound to each queried key, every key queried once after the pairs",
    )
)
