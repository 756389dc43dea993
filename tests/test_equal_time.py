"""Schedule-matched equal wall-clock time (mswelu.analysis.equal_time): which pairs, which variant trains
again, for how many steps, and the steps the throughput's spread over interleaved rounds allows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mswelu.analysis import claim_set
from mswelu.analysis.equal_time import TimeMatch, time_matches, time_pairs


def _speeds(**variants: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"variant": v, "tokens_per_s": float(np.median(r)), "tokens_per_s_min": min(r),
             "tokens_per_s_max": max(r), "rounds": r}
            for v, r in variants.items()
        ]
    )  # fmt: skip


def test_the_pairs_are_those_judged_at_equal_time_once_each() -> None:
    compare = {"swelu": "mamba-swelu", "silu": "mamba"}
    assert time_pairs(claim_set(["compute"]), compare) == [("mamba-swelu", "mamba")]
    assert time_pairs(claim_set(["compute", "compute"]), compare) == [("mamba-swelu", "mamba")]
    assert time_pairs(claim_set(["shape-vs-learning"]), compare) == []  # judged at equal tokens only


def test_the_slower_variant_trains_the_faster_ones_time_with_the_rounds_spread() -> None:
    fast = [1000.0, 1200.0, 1100.0, 1000.0, 900.0]
    slow = [890.0, 1000.0, 1000.0, 880.0, 850.0]
    speeds = _speeds(**{"mamba": fast, "mamba-swelu": slow})
    (match,) = time_matches([("mamba-swelu", "mamba")], speeds, max_steps=250)
    ratio = np.median(slow) / np.median(fast)
    per_round = np.array(slow) / np.array(fast)
    lo, hi = np.percentile(per_round, [25, 75])
    assert match == TimeMatch(
        "mamba-swelu", "mamba", ratio, round(250 * ratio), round(250 * lo), round(250 * hi)
    )
    assert match.steps_lo <= match.steps <= match.steps_hi < 250
    # the pair named the other way round, or twice: the same single match
    assert time_matches([("mamba", "mamba-swelu"), ("mamba-swelu", "mamba")], speeds, 250) == [match]


def test_without_rounds_the_extremes_bound_the_steps_and_equal_speeds_train_nothing() -> None:
    speeds = _speeds(a=[100.0, 80.0, 120.0], b=[50.0, 40.0, 60.0]).drop(columns="rounds")
    (match,) = time_matches([("a", "b")], speeds, max_steps=100)
    assert (match.slower, match.steps, match.steps_lo, match.steps_hi) == (
        "b",
        50,
        round(100 * 40 / 120),
        60 / 80 * 100,
    )
    assert time_matches([("a", "b")], _speeds(a=[100.0], b=[100.0]), 100) == []
    assert time_matches([("a", "c")], speeds, 100) == []  # not measured side by side
