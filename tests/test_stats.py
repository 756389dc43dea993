"""Verdict statistics against their formulas: t intervals, one-sided p-values, TOST, the minimal detectable
effect (noncentral t), Holm's correction, effect printing, and the decision rule on its edges."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from mswelu.base import stats


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
    # a summary (mean, sd, n) gives the same interval as the values it summarises
    s = stats.Sample.of(x)
    assert stats.Sample(s.mean, s.sd, s.n).interval(0.95) == iv


def test_paired_gains_use_only_common_seeds():
    gains = stats.paired_relative_gains({0: 3.0, 1: 2.0, 5: 1.0}, {0: 4.0, 1: 2.5, 2: 9.0})
    assert gains == pytest.approx({0: 0.25, 1: 0.2})


def test_one_sided_p_matches_scipy_ttest():
    x = np.array([0.012, 0.018, 0.009, 0.021, 0.015])
    s = stats.Sample.of(x)
    for bound in (0.0, 0.01, 0.02):
        assert stats.one_sided_p(s, bound, "greater") == pytest.approx(
            sps.ttest_1samp(x, bound, alternative="greater").pvalue
        )
        assert stats.one_sided_p(s, bound, "less") == pytest.approx(
            sps.ttest_1samp(x, bound, alternative="less").pvalue
        )


def test_minimal_detectable_effect_has_the_stated_power():
    # the first study's paired sd 0.26%: 3 seeds resolve ~0.85% at 80% power, 5 seeds ~0.44%
    assert stats.minimal_detectable_effect(0.0026, 3) == pytest.approx(0.00849, abs=5e-5)
    assert stats.minimal_detectable_effect(0.0026, 5) == pytest.approx(0.00437, abs=5e-5)
    for n in (3, 5, 8):
        mde = stats.minimal_detectable_effect(0.01, n)
        crit = sps.t.ppf(0.975, n - 1)
        power = sps.nct.sf(crit, n - 1, mde / (0.01 / math.sqrt(n)))  # P(reject | true effect = MDE)
        assert power == pytest.approx(0.8, abs=1e-6)
    assert math.isnan(stats.minimal_detectable_effect(0.01, 1))


def test_holm_matches_the_step_down_formula():
    p = [0.01, 0.04, 0.03, float("nan"), 0.005]
    adj = stats.holm(p)
    # sorted finite p: 0.005, 0.01, 0.03, 0.04 with m = 4: 0.02, 0.03, 0.06, max(0.06, 0.04) = 0.06
    assert adj[4] == pytest.approx(0.02) and adj[0] == pytest.approx(0.03)
    assert adj[2] == pytest.approx(0.06) and adj[1] == pytest.approx(0.06) and math.isnan(adj[3])
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_small_effects_print_with_their_sign_and_size():
    assert stats.format_effect(-0.00025, -0.00044, -0.00005) == "-0.025% [-0.044%, -0.005%]"
    assert stats.format_effect(0.0156, 0.0091, 0.0221) == "+1.56% [+0.91%, +2.21%]"
    assert stats.format_effect(0.0591, 0.0528, 0.0654, pct=False) == "0.0591 [0.0528, 0.0654]"
    assert stats.format_effect(0.25) == "+25.0%"
    assert stats.format_effect(float("nan")) == "n/a"


@pytest.mark.parametrize(
    ("values", "test", "effect", "verdict"),
    [
        ([0.30, 0.31, 0.29], "at_least", 0.22, "supported"),  # the whole interval above the claim
        ([0.01, 0.02, 0.00], "at_least", 0.22, "refuted"),  # the whole interval below it
        ([0.05, 0.40, 0.25], "at_least", 0.22, "inconclusive"),  # straddles it
        ([0.30, 0.31], "at_least", 0.22, "inconclusive"),  # two seeds: too few, however clear
        ([0.35, 0.36, 0.34], "range", (0.30, 0.40), "supported"),  # inside a range claim
        ([0.70, 0.71, 0.69], "range", (0.30, 0.40), "refuted"),  # entirely above a range claim
        ([0.28, 0.36, 0.32], "range", (0.30, 0.40), "inconclusive"),
        ([4.5, 4.52, 4.51], "at_most", 4.6, "supported"),
        ([0.01, -0.01, 0.0], "equivalent", 0.05, "supported"),  # within +-5% (TOST)
        ([0.063, 0.062, 0.0625], "equivalent", 0.05, "refuted"),  # better by more than the margin
        ([-0.01, -0.02, -0.015], "not_worse", 0.05, "supported"),
        ([-0.10, -0.11, -0.105], "not_worse", 0.05, "refuted"),
    ],
)
def test_decision_rule(values, test, effect, verdict):
    d = stats.decide(stats.Sample.of(values), test, effect)
    assert d.verdict == verdict, d.why
    if verdict != "inconclusive":
        assert d.p <= stats.ALPHA  # the p-value of the test that decided it
    level = 0.90 if test == "equivalent" else 0.95
    assert d.interval.level == pytest.approx(level)


def test_decision_p_values_match_the_interval():
    """``p <= ALPHA`` exactly when the interval decides: directional p is twice the one-sided t test's."""
    x = np.array([0.031, 0.018, 0.026, 0.022, 0.029])
    d = stats.decide(stats.Sample.of(x), "at_least", 0.0)
    assert d.verdict == "supported"
    assert d.p == pytest.approx(2 * sps.ttest_1samp(x, 0.0, alternative="greater").pvalue)
    eq = stats.decide(stats.Sample.of(x - 0.025), "equivalent", 0.02)
    p_tost = max(
        sps.ttest_1samp(x - 0.025, -0.02, alternative="greater").pvalue,
        sps.ttest_1samp(x - 0.025, 0.02, alternative="less").pvalue,
    )
    assert eq.p == pytest.approx(p_tost) and eq.verdict == ("supported" if p_tost <= 0.05 else "inconclusive")
    with pytest.raises(ValueError):
        stats.decide(stats.Sample.of(x), "bigger", 0.1)
    with pytest.raises(ValueError):
        stats.decide(stats.Sample.of(x), "range", 0.1)
