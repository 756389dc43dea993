"""The statistics behind every verdict: paired differences over seeds, Student-t intervals, one-sided and
equivalence (TOST) tests, p-values, the minimal detectable effect, Holm's correction, how effects print.

Variants trained with the same seed share their data order, so the per-seed difference is the unit of evidence
(with 3 seeds t is 4.30, not 2). A directional claim is decided by the two-sided ``1 - ALPHA`` interval (each
verdict a one-sided test at ``ALPHA / 2``); an equivalence claim by TOST at ``ALPHA``. Either way a verdict is
wrong at most ``ALPHA`` of the time at the claim's boundary, and every p-value is on the scale where ``p <=
ALPHA`` decides, so one Holm correction covers a table.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from scipy import optimize as _optimize
from scipy import stats as _scipy_stats

from mswelu.base.errors import unknown_choice

__all__ = [
    "ALPHA",
    "DEFAULT_SEEDS",
    "MIN_SEEDS",
    "TESTS",
    "Decision",
    "Interval",
    "Sample",
    "decide",
    "digits_for",
    "format_effect",
    "holm",
    "minimal_detectable_effect",
    "one_sided_p",
    "paired_relative_gains",
    "t_interval",
]

K = TypeVar("K")
#: Fewest seeds (paired differences) a verdict is drawn from; fewer gives "inconclusive".
MIN_SEEDS = 3
#: Seeds a study runs by default: with the paired sd of the first study (0.26%), 3 seeds resolve about 0.85%
#: at 80% power and 5 seeds about 0.44% (:func:`minimal_detectable_effect`).
DEFAULT_SEEDS = 5
#: The error rate of every verdict (see the module docstring).
ALPHA = 0.05
#: The claim tests :func:`decide` knows: the claimed effect is at least / at most a value, inside a range,
#: within +-margin (equivalence), or not below -margin (non-inferiority, "not worse than").
TESTS = ("at_least", "at_most", "range", "equivalent", "not_worse")


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided ``level`` t interval over ``n`` values (``lo``/``hi`` NaN for n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float
    level: float = 0.95
    unit: str = "seed"

    def describe(self, pct: bool = True) -> str:
        """``+1.56% [+0.91%, +2.21%] (95% t interval, 3 seeds)``; ``pct=False``: ``4.61 [4.52,
        4.70]``."""
        shown = format_effect(self.mean, self.lo, self.hi, pct=pct)
        if not math.isfinite(self.lo):
            return f"{shown} ({self.n} {self.unit}{'s' if self.n != 1 else ''}: no interval)"
        return f"{shown} ({self.level:.0%} t interval, {self.n} {self.unit}s)"


@dataclass(frozen=True)
class Sample:
    """Mean, sample sd and count of per-unit values: all a t test uses, so summaries suffice."""

    mean: float
    sd: float
    n: int
    values: tuple[float, ...] = field(default=(), compare=False)
    unit: str = "seed"

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray, unit: str = "seed") -> Sample:
        """From per-unit values (NaN dropped)."""
        x = np.asarray(values, dtype=float)
        x = x[np.isfinite(x)]
        n = int(x.size)
        mean = float(x.mean()) if n else math.nan
        sd = float(x.std(ddof=1)) if n > 1 else math.nan
        return cls(mean, sd, n, tuple(float(v) for v in x), unit)

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n) if self.n > 1 else math.nan

    def interval(self, level: float = 1 - ALPHA) -> Interval:
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        if self.n < 2 or not math.isfinite(self.sd):
            return Interval(self.mean, math.nan, math.nan, self.n, math.nan, level, self.unit)
        half = float(_scipy_stats.t.ppf(0.5 + level / 2, df=self.n - 1)) * self.se
        return Interval(self.mean, self.mean - half, self.mean + half, self.n, self.sd, level, self.unit)


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> Interval:
    """Mean of ``values`` with its two-sided Student-t interval (NaN values dropped)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return Sample.of(values).interval(level)


def paired_relative_gains(ours: Mapping[K, float], base: Mapping[K, float]) -> dict[K, float]:
    """Per pairing key in both: ``(base - ours) / base`` (positive: ours lower)."""
    common = sorted(set(ours) & set(base))
    return {
        s: (float(base[s]) - float(ours[s])) / float(base[s])
        for s in common
        if math.isfinite(float(ours[s])) and math.isfinite(float(base[s])) and float(base[s]) != 0
    }


def one_sided_p(sample: Sample, bound: float, side: str) -> float:
    """p-value of the one-sided t test that the true mean is above (``side="greater"``: H0 mean <= bound) or
    below (``"less"``: H0 mean >= bound) ``bound``. NaN without a spread; 0 or 1 when the spread is 0."""
    if side not in ("greater", "less"):
        raise ValueError(f"side must be 'greater' or 'less', got {side!r}")
    if sample.n < 2 or not math.isfinite(sample.sd):
        return math.nan
    diff = sample.mean - bound if side == "greater" else bound - sample.mean
    if sample.sd == 0:
        return 0.0 if diff > 0 else 1.0
    return float(_scipy_stats.t.sf(diff / sample.se, df=sample.n - 1))


def minimal_detectable_effect(sd: float, n: int, alpha: float = ALPHA / 2, power: float = 0.8) -> float:
    """The smallest distance from a claim's boundary that a one-sided t test at ``alpha`` over ``n``
    values with sd ``sd`` detects with probability ``power`` (exact, noncentral t)."""
    if n < 2 or not math.isfinite(sd) or sd <= 0:
        return math.nan
    return float(_noncentrality(n - 1, alpha, power) * sd / math.sqrt(n))


@functools.lru_cache(maxsize=256)
def _noncentrality(df: int, alpha: float, power: float) -> float:
    """The noncentrality at which a one-sided t test rejects with probability ``power`` (cached)."""
    crit = float(_scipy_stats.t.ppf(1 - alpha, df))
    return float(_optimize.brentq(lambda nc: _scipy_stats.nct.sf(crit, df, nc) - power, 1e-9, 1e4))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count towards the family size)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = [i for i in np.argsort(p, kind="stable") if math.isfinite(p[i])]
    m, running = len(idx), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def digits_for(lo: float, hi: float, value: float = math.nan) -> int:
    """Decimals showing an interval's half-width to two significant digits (1-6), else ``value`` to three."""
    width = (hi - lo) / 2 if math.isfinite(lo) and math.isfinite(hi) else math.nan
    ref = width if math.isfinite(width) and width > 0 else abs(value)
    if not math.isfinite(ref) or ref == 0:
        return 1
    return int(min(6, max(1, 1 - math.floor(math.log10(ref)))))


def format_effect(mean: float, lo: float = math.nan, hi: float = math.nan, pct: bool = True) -> str:
    """``-0.025% [-0.044%, -0.005%]`` or ``0.0591 [0.0528, 0.0654]``: digits enough for small effects."""
    if not math.isfinite(mean):
        return "n/a"
    scale = 100.0 if pct else 1.0
    d = digits_for(lo * scale, hi * scale, mean * scale)
    f = (lambda x: f"{x * 100:+.{d}f}%") if pct else (lambda x: f"{x:.{max(d, 3)}f}")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f(mean)
    return f"{f(mean)} [{f(lo)}, {f(hi)}]"


@dataclass(frozen=True)
class Decision:
    """The statistical part of a verdict: verdict, interval, p-value (NaN without a test), MDE and why."""

    verdict: str
    interval: Interval
    p: float
    mde: float
    why: str


def _bounds(test: str, effect: float | tuple[float, float]) -> tuple[float, float]:
    if test not in TESTS:
        raise ValueError(unknown_choice("test", test, TESTS))
    if test == "range":
        if not isinstance(effect, (tuple, list)) or len(effect) != 2 or effect[0] > effect[1]:
            raise ValueError(f"a range claim needs (lo, hi) with lo <= hi, got {effect!r}")
        return float(effect[0]), float(effect[1])
    if isinstance(effect, (tuple, list)):
        raise ValueError(f"test {test!r} takes one number, got {effect!r}")
    e = float(effect)
    if test in ("equivalent", "not_worse") and e < 0:
        raise ValueError(f"a margin must be >= 0, got {e}")
    return {
        "at_least": (e, math.inf),
        "at_most": (-math.inf, e),
        "equivalent": (-e, e),
        "not_worse": (-e, math.inf),
    }[test]


def decide(
    sample: Sample,
    test: str,
    effect: float | tuple[float, float],
    min_seeds: int = MIN_SEEDS,
    pct: bool = True,
    alpha: float = ALPHA,
) -> Decision:
    """Whether ``sample`` supports (the interval's worse end reaches the claim) or refutes (its better end
    falls short) "the effect is ``test`` ``effect``", else inconclusive, as with fewer than ``min_seeds``
    values."""
    lo_c, hi_c = _bounds(test, effect)
    equivalence = test == "equivalent"
    level = 1 - 2 * alpha if equivalence else 1 - alpha
    iv = sample.interval(level)
    one = alpha if equivalence else alpha / 2  # the one-sided level of each test
    mde = minimal_detectable_effect(sample.sd, sample.n, one) if sample.n >= 2 else math.nan
    fmt = (lambda x: f"{x * 100:g}%") if pct else (lambda x: f"{x:g}")
    claim = (
        f"{fmt(lo_c)} to {fmt(hi_c)}"
        if math.isfinite(lo_c) and math.isfinite(hi_c)
        else (f"at least {fmt(lo_c)}" if math.isfinite(lo_c) else f"at most {fmt(hi_c)}")
    )
    if sample.n < min_seeds:
        why = f"{sample.n} paired {sample.unit}(s); a verdict needs at least {min_seeds}"
        return Decision("inconclusive", iv, math.nan, mde, why)
    if not math.isfinite(iv.lo):
        why = f"no spread over the {sample.unit}s is recorded: no interval"
        return Decision("inconclusive", iv, math.nan, mde, why)
    scale = 1.0 if equivalence else 2.0  # p on the scale where p <= alpha decides
    p_lo_above = one_sided_p(sample, lo_c, "greater") if math.isfinite(lo_c) else 0.0  # mean > lo_c
    p_hi_below = one_sided_p(sample, hi_c, "less") if math.isfinite(hi_c) else 0.0  # mean < hi_c
    p_support = min(1.0, scale * max(p_lo_above, p_hi_below))
    p_below = one_sided_p(sample, lo_c, "less") if math.isfinite(lo_c) else 1.0  # mean < lo_c
    p_above = one_sided_p(sample, hi_c, "greater") if math.isfinite(hi_c) else 1.0  # mean > hi_c
    p_refute = min(1.0, scale * min(p_below, p_above))
    shown = f"{iv.describe(pct)}"
    if iv.lo >= lo_c and iv.hi <= hi_c:
        return Decision("supported", iv, p_support, mde, f"{shown} lies within the claimed {claim}")
    if iv.hi < lo_c:
        return Decision("refuted", iv, p_refute, mde, f"{shown} lies entirely below the claimed {claim}")
    if iv.lo > hi_c:
        return Decision("refuted", iv, p_refute, mde, f"{shown} lies entirely above the claimed {claim}")
    why = f"{shown} overlaps the claimed {claim} without lying inside it"
    return Decision("inconclusive", iv, min(p_support, p_refute), mde, why)
