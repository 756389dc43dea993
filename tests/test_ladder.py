"""The size ladder's analysis (mswelu.analysis.ladder): each rung's gain over seeds, and the weighted slope of
the gain against log10(parameters), checked against numpy's weighted polynomial fit and Student's t."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mswelu.analysis.ladder import gain_along_training, ladder_slope, ladder_table, rung_gains

RUNGS = {
    "L": (3.2e6, 16e6, {0: 0.004, 1: 0.006, 2: 0.002, 3: 0.005, 4: 0.003}),
    "S": (0.42e6, 2.1e6, {0: 0.012, 1: 0.008, 2: 0.013}),
    "M": (1.09e6, 5.5e6, {0: 0.007, 1: 0.009, 2: 0.004}),
}


def test_each_rung_is_its_mean_gain_with_a_t_interval_in_order_of_size() -> None:
    table = ladder_table(RUNGS)
    assert table.rung.tolist() == ["S", "M", "L"]
    s = table.iloc[0]
    g = np.array([0.012, 0.008, 0.013])
    half = stats.t.ppf(0.975, 2) * g.std(ddof=1) / math.sqrt(3)
    assert (s.gain, s.lo, s.hi, s.n) == pytest.approx((g.mean(), g.mean() - half, g.mean() + half, 3))
    assert s["tokens/param"] == pytest.approx(5.0)


def test_the_slope_is_numpys_weighted_fit_with_a_residual_scaled_t_interval() -> None:
    table = ladder_table(RUNGS)
    got = ladder_slope(table)
    x, y, se = np.log10(table.params), table.gain.to_numpy(), table.se.to_numpy()
    coef, cov = np.polyfit(x, y, 1, w=1 / se, cov="unscaled")
    residual = (y - np.polyval(coef, x)) / se
    scale = float(np.sum(residual**2)) / (len(x) - 2)
    half = stats.t.ppf(0.975, 1) * math.sqrt(cov[0, 0] * scale)
    assert got.df == 1 and got.per_decade == pytest.approx(coef[0])
    assert (got.lo, got.hi) == pytest.approx((coef[0] - half, coef[0] + half))
    assert got.per_decade < 0 and got.lo < 0 < got.hi  # falling gains, but one degree of freedom


def test_two_rungs_give_no_slope_interval_and_gains_pair_by_seed() -> None:
    two = ladder_slope(ladder_table({k: RUNGS[k] for k in ("S", "L")}))
    assert two.df == 0 and math.isnan(two.per_decade)
    runs = pd.DataFrame(
        {"variant": ["a", "b", "a", "b", "a"], "seed": [0, 0, 1, 1, 2], "val_loss": [3.9, 4.0, 3.0, 3.0, 1.0]}
    )
    assert rung_gains(runs, "a", "b") == pytest.approx({0: 0.025, 1: 0.0})  # seed 2 has no pair


def test_rungs_of_one_size_give_no_slope() -> None:
    same = {k: (1e6, v[1], v[2]) for k, v in RUNGS.items()}
    assert math.isnan(ladder_slope(ladder_table(same)).per_decade)


def test_the_gain_along_training_pairs_seeds_at_each_evaluation_in_the_final_scope() -> None:
    rows = []
    for seed, (a, b) in enumerate(
        [((3.0, 2.0), (3.3, 2.1)), ((3.1, 2.2), (3.2, 2.2)), ((2.9, 1.9), (3.0, 2.0))]
    ):
        for tokens, va, vb in zip((100, 200), a, b, strict=True):
            rows += [("a", seed, tokens, va, "all"), ("b", seed, tokens, vb, "all")]
        rows += [("a", seed, 50, 1.0, "part"), ("b", seed, 50, 9.0, "part")]  # another scope: left out
    rows += [("a", 7, 100, 2.0, "all")]  # a seed without its pair
    curves = pd.DataFrame(rows, columns=["variant", "seed", "tokens", "val_loss", "scope"])
    curves["step"] = curves.tokens // 10
    got = gain_along_training(curves, "a", "b")
    assert got.tokens.tolist() == [100, 200] and got.n.tolist() == [3, 3]
    g = np.array([0.1 / 2.1, 0.0, 0.1 / 2.0])
    half = stats.t.ppf(0.975, 2) * g.std(ddof=1) / math.sqrt(3)
    last = got.iloc[1]
    assert (last.gain, last.lo, last.hi) == pytest.approx((g.mean(), g.mean() - half, g.mean() + half))
    assert got.gain.iloc[0] == pytest.approx(np.mean([0.3 / 3.3, 0.1 / 3.2, 0.1 / 3.0]))


def test_on_several_splits_a_pair_is_a_seed_on_one_split() -> None:
    rows = [
        (v, seed, split, 100, loss, "all")
        for split, shift in (("f1", 0.0), ("f2", 1.0))
        for seed in (0, 1)
        for v, loss in (("a", 2.0 + shift - 0.1 * seed), ("b", 2.2 + shift))
    ]
    curves = pd.DataFrame(rows, columns=["variant", "seed", "split", "tokens", "val_loss", "scope"])
    curves["step"] = 1
    got = gain_along_training(curves, "a", "b")
    want = np.mean([0.2 / 2.2, 0.3 / 2.2, 0.2 / 3.2, 0.3 / 3.2])
    assert got.n.tolist() == [4] and got.gain.iloc[0] == pytest.approx(want)
