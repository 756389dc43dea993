"""The effect against scale. Along training: the paired gain over seeds at each whole-split evaluation of one
study (the same run read at several budgets, so the points are not independent runs and only the last one
was annealed). Against model size (a size ladder: the same pair of variants at several sizes, one study per
rung, at a fixed tokens-per-parameter ratio): each rung's paired gain over seeds with its t interval, and the
slope of the gain against log10(parameters), weighted by the rungs' inverse squared standard errors, with a t
interval on (rungs - 2) degrees of freedom from the weighted residuals. With three rungs that interval is
wide by construction (one degree of freedom): it says how the gain moves across the sizes measured, and
nothing about sizes beyond them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from mswelu.analysis.curves import final_scope
from mswelu.analysis.frames import scope_curve
from mswelu.base import stats

__all__ = [
    "ALONG_COLUMNS",
    "LADDER_COLUMNS",
    "Slope",
    "gain_along_training",
    "ladder_slope",
    "ladder_table",
    "rung_gains",
]

#: one row per rung
LADDER_COLUMNS = ["rung", "params", "tokens", "tokens/param", "n", "gain", "se", "lo", "hi"]
#: one row per evaluation point along training
ALONG_COLUMNS = ["tokens", "n", "gain", "lo", "hi"]


@dataclass(frozen=True)
class Slope:
    """The gain's change per tenfold parameters, with its ``level`` t interval on ``df`` degrees of freedom
    (NaN where there are fewer than three rungs with an interval)."""

    per_decade: float
    lo: float
    hi: float
    df: int
    level: float = 0.95


def ladder_table(rungs: Mapping[str, tuple[float, float, Mapping[int, float]]]) -> pd.DataFrame:
    """``{rung: (parameters, tokens, {seed: paired relative gain})}`` as :data:`LADDER_COLUMNS` rows in
    order of size: each rung's mean gain over seeds and its 95% t interval."""
    rows = []
    for name, (params, tokens, gains) in rungs.items():
        sample = stats.Sample.of(list(gains.values()))
        ci = sample.interval()
        rows.append(
            {
                "rung": name,
                "params": float(params),
                "tokens": float(tokens),
                "tokens/param": float(tokens) / float(params),
                "n": sample.n,
                "gain": sample.mean,
                "se": sample.se,
                "lo": ci.lo,
                "hi": ci.hi,
            }
        )
    return pd.DataFrame(rows, columns=LADDER_COLUMNS).sort_values("params", ignore_index=True)


def ladder_slope(table: pd.DataFrame, level: float = 0.95) -> Slope:
    """The weighted least-squares slope of ``gain`` against log10(``params``) over the rungs of
    :func:`ladder_table` that have a standard error (weights 1 / se^2), its standard error from the weighted
    residuals (scale estimated, not assumed), and its t interval on (rungs - 2) degrees of freedom."""
    ok = table[np.isfinite(table.se) & (table.se > 0) & np.isfinite(table.gain)]
    df = len(ok) - 2
    if df < 1 or np.ptp(np.log10(ok.params.to_numpy(float))) == 0:  # no spread in size: no slope
        return Slope(math.nan, math.nan, math.nan, max(df, 0), level)
    x, y, w = np.log10(ok.params.to_numpy(float)), ok.gain.to_numpy(float), 1.0 / ok.se.to_numpy(float) ** 2
    xm, ym = np.average(x, weights=w), np.average(y, weights=w)
    sxx = float(np.sum(w * (x - xm) ** 2))
    slope = float(np.sum(w * (x - xm) * (y - ym)) / sxx)
    residual = y - (ym + slope * (x - xm))
    scale = float(np.sum(w * residual**2)) / df
    half = float(scipy_stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(scale / sxx)
    return Slope(slope, slope - half, slope + half, df, level)


def rung_gains(runs: pd.DataFrame, ours: str, base: str, value: str = "val_loss") -> dict[int, float]:
    """``{seed: (base - ours) / base}`` of one study's runs (columns ``variant``, ``seed`` and ``value``)."""

    def by_seed(variant: str) -> dict[int, float]:
        part = runs[runs.variant == variant]
        return {int(s): float(v) for s, v in zip(part.seed, part[value], strict=True)}

    return stats.paired_relative_gains(by_seed(ours), by_seed(base))


def gain_along_training(
    curves: pd.DataFrame, ours: str, base: str, value: str = "val_loss", scope: str | None = "auto"
) -> pd.DataFrame:
    """:data:`ALONG_COLUMNS`: at each number of training tokens where both variants were evaluated (in the
    scope of the base's final evaluation), the mean of ``(base - ours) / base`` over the pairs (a seed, or a
    seed on one text split where the curves have a ``split`` column) and its 95% t interval (NaN bounds with
    one pair)."""
    units = ["seed", "split"] if "split" in curves.columns else ["seed"]
    points: dict[float, tuple[dict[tuple, float], dict[tuple, float]]] = {}
    for unit, both in curves[curves.variant.isin([ours, base])].groupby(units):
        s = final_scope(both[both.variant == base]) if scope == "auto" else scope
        for variant, slot in ((ours, 0), (base, 1)):
            curve = scope_curve(both[both.variant == variant], s)
            for tokens, v in zip(curve.tokens, curve[value], strict=True):
                if math.isfinite(float(v)):
                    points.setdefault(float(tokens), ({}, {}))[slot][unit] = float(v)
    rows = []
    for tokens, (o, b) in sorted(points.items()):
        gains = stats.paired_relative_gains(o, b)
        if gains:
            sample = stats.Sample.of(list(gains.values()))
            ci = sample.interval()
            rows.append({"tokens": tokens, "n": sample.n, "gain": sample.mean, "lo": ci.lo, "hi": ci.hi})
    return pd.DataFrame(rows, columns=ALONG_COLUMNS)
