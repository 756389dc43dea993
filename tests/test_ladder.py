"""The size ladder's analysis (mswelu.analysis.ladder): each rung's gain over seeds, and the weighted slope of
the gain against log10(parameters), checked against numpy's weighted polynomial fit and Student's t."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mswelu.analysis.ladder import ladder_slope, ladder_table, rung_gains

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
