"""Verdict statistics: t intervals against their formula, paired gains, the verdict rule on its edges, and
how often each verdict comes out on synthetic seeds with a known effect and noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mswelu import stats


def test_t_interval_matches_the_formula_and_tabulated_quantiles():
    x = [0.10, 0.14, 0.12]
    iv = stats.t_interval(x)
    half = 4.302653 * np.std(x, ddof=1) / math.sqrt(3)  # t(0.975, 2) from a printed table
    assert iv.n == 3 and iv.mean == pytest.approx(0.12)
    assert (iv.lo, iv.hi) == pytest.approx((0.12 - half, 0.12 + half), rel=1e-6)
    five = stats.t_interval([1.0, 2.0, 3.0, 4.0, 5.0], level=0.90)  # t(0.95, 4) = 2.131847
    assert five.hi - five.mean == pytest.approx(2.131847 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    one = stats.t_interval([0.3, float("nan")])
    assert one.n == 1 and math.isnan(one.lo) and "no interval" in one.describe()
    with pytest.raises(ValueError):
        stats.t_interval(x, level=1.0)


def test_paired_gains_use_only_common_seeds():
    gains = stats.paired_relative_gains({0: 3.0, 1: 2.0, 5: 1.0}, {0: 4.0, 1: 2.5, 2: 9.0})
    assert gains == pytest.approx({0: 0.25, 1: 0.2})


@pytest.mark.parametrize(
    ("values", "claimed", "verdict"),
    [
        ([0.30, 0.31, 0.29], 0.22, "supported"),  # the whole interval above the claim
        ([0.01, 0.02, 0.00], 0.22, "refuted"),  # the whole interval below it
        ([0.05, 0.40, 0.25], 0.22, "inconclusive"),  # straddles it
        ([0.30, 0.31], 0.22, "inconclusive"),  # two seeds: too few, however clear
        ([0.35, 0.36, 0.34], (0.30, 0.40), "supported"),  # inside a range claim
        ([0.70, 0.71, 0.69], (0.30, 0.40), "refuted"),  # entirely above a range claim
        ([0.28, 0.36, 0.32], (0.30, 0.40), "inconclusive"),
    ],
)
def test_verdict_rule(values, claimed, verdict):
    got, why = stats.judge(stats.t_interval(values), claimed)
    assert got == verdict, why


def _rates(
    true_gain: float, noise: float, claimed: float, seeds: int, trials: int = 4000
) -> dict[str, float]:
    """How often each verdict comes out over simulated studies: per seed the base loss varies (shared by
    both variants, as a seed's data order is) and each variant adds its own noise."""
    rng = np.random.default_rng(0)
    counts = {"supported": 0, "refuted": 0, "inconclusive": 0}
    for _ in range(trials):
        base = 4.0 + rng.normal(0, 0.2, seeds)
        ours = base * (1 - true_gain) + rng.normal(0, noise, seeds)
        theirs = base + rng.normal(0, noise, seeds)
        gains = stats.paired_relative_gains(dict(enumerate(ours)), dict(enumerate(theirs)))
        counts[stats.judge(stats.t_interval(list(gains.values())), claimed)[0]] += 1
    return {k: v / trials for k, v in counts.items()}


def test_a_null_effect_is_supported_no_more_often_than_the_error_rate():
    # No true effect and a claim of 0+ (the most lenient): "supported" needs the interval's lower end >= 0,
    # a one-sided 2.5% test; allow the Monte-Carlo error of 4000 trials.
    for seeds in (3, 5):
        assert _rates(0.0, 0.05, 0.0, seeds)["supported"] <= 0.025 + 0.01
    # ... and with the seeds' claim of 22% a null effect is essentially never "supported"
    assert _rates(0.0, 0.05, 0.22, 3)["supported"] == 0.0


def test_true_effects_come_out_as_they_are_once_the_noise_allows():
    clear = _rates(0.30, 0.01, 0.22, 5)  # 30% real gain, low noise: supported nearly always
    assert clear["supported"] > 0.95 and clear["refuted"] == 0.0
    none = _rates(0.0, 0.01, 0.22, 5)  # no gain, low noise: the 22% claim is refuted nearly always
    assert none["refuted"] > 0.95 and none["supported"] == 0.0
    at_claim = _rates(0.22, 0.01, 0.22, 5)  # exactly the claimed effect: rarely decided either way
    assert at_claim["supported"] <= 0.035 and at_claim["refuted"] <= 0.035
