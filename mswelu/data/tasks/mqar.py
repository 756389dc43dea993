"""Multi-query associative recall (MQAR; Zoology, Arora et al. 2023, arXiv 2312.04927, section 3): ``pairs``
key-value pairs, then every key once more in a query region, each to be followed by its value (one scored
position per query); keys and values have vocabularies of their own.

Differs from Zoology: filler id 0 instead of random tokens in the query region, query places uniform rather
than power-law spaced, every key queried exactly once. Train and test come from one distribution.
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
