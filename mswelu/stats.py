"""The statistics behind every verdict: paired differences over seeds, Student-t intervals, and the rule
that turns an interval and a claimed effect into "supported", "refuted" or "inconclusive".

Variants trained with the same seed share their data order, so their difference per seed is the unit of
evidence (a paired comparison), not two independent means. With n seeds the 95% interval of the mean
difference is ``mean +/- t(0.975, n - 1) * sd / sqrt(n)``; with 3 seeds t is 4.30, not the 2 of a normal
approximation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

__all__ = ["MIN_SEEDS", "Interval", "judge", "paired_relative_gains", "t_interval"]

#: Fewest seeds (paired differences) a verdict is drawn from; fewer gives "inconclusive".
MIN_SEEDS = 3


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided ``level`` Student-t interval over ``n`` values (``lo``/``hi`` NaN for
    n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float
    level: float = 0.95

    def describe(self, pct: bool = True) -> str:
        """``+12.0% [+5.1%, +18.9%] (95% t interval, 3 seeds)`` (a relative effect, signed), or with
        ``pct=False`` ``4.61 [4.52, 4.70] (...)`` (a value)."""
        f = (lambda x: f"{x:+.1%}") if pct else (lambda x: f"{x:.4g}")
        if not math.isfinite(self.lo):
            return f"{f(self.mean)} ({self.n} seed{'s' if self.n != 1 else ''}: no interval)"
        return f"{f(self.mean)} [{f(self.lo)}, {f(self.hi)}] ({self.level:.0%} t interval, {self.n} seeds)"


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> Interval:
    """Mean of ``values`` with its two-sided Student-t interval (NaN values dropped)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, float("nan"), level)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n, float("nan"), level)
    sd = float(x.std(ddof=1))
    half = float(_scipy_stats.t.ppf(0.5 + level / 2, df=n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, level)


def paired_relative_gains(ours: Mapping[int, float], base: Mapping[int, float]) -> dict[int, float]:
    """Per seed present in both: the relative reduction ``(base - ours) / base`` (positive: ours is lower,
    i.e. better for a loss)."""
    common = sorted(set(ours) & set(base))
    return {
        s: (float(base[s]) - float(ours[s])) / float(base[s])
        for s in common
        if math.isfinite(float(ours[s])) and math.isfinite(float(base[s])) and float(base[s]) != 0
    }


def judge(
    interval: Interval, claimed: float | tuple[float, float], min_seeds: int = MIN_SEEDS, pct: bool = True
) -> tuple[str, str]:
    """Verdict on "the effect is ``claimed``" (a number: at least that much; a pair: within that range).

    - supported: the whole interval reaches the claim (its lower end is at or above the claimed effect;
      for a range, the interval lies inside it);
    - refuted: the whole interval misses it (its upper end is below the claimed effect, or for a range the
      interval lies entirely below or above it);
    - inconclusive otherwise, or with fewer than ``min_seeds`` paired seeds.
    Returns (verdict, reason).
    """
    lo_claim, hi_claim = (claimed, math.inf) if not isinstance(claimed, tuple) else claimed
    f = (lambda x: f"{x:.0%}") if pct else (lambda x: f"{x:.4g}")
    what = f"{f(lo_claim)}-{f(hi_claim)}" if math.isfinite(hi_claim) else f"at least {f(lo_claim)}"
    if interval.n < min_seeds or not math.isfinite(interval.lo):
        return "inconclusive", f"{interval.n} paired seed(s); a verdict needs at least {min_seeds}"
    shown = interval.describe(pct)
    if interval.lo >= lo_claim and interval.hi <= hi_claim:
        return "supported", f"{shown} lies within the claimed {what}"
    if interval.hi < lo_claim:
        return "refuted", f"{shown} lies entirely below the claimed {what}"
    if interval.lo > hi_claim:
        return "refuted", f"{shown} lies entirely above the claimed {what}"
    return "inconclusive", f"{shown} overlaps the claimed {what} without lying inside it"
