"""Text as a random factor: a study may train every variant on several disjoint train/validation splits, seeds
nested within each. Seeds do not vary the text, so only an interval over splits covers other text: per split
the mean over its seeds, then the t interval over those means. With one split the unit falls back to the seed,
and every row says so. A model's split is the ``split`` column of a study's runs, curves and shapes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from mswelu.base import stats

__all__ = [
    "ONE_SPLIT",
    "by_split",
    "pooled",
    "split_count",
    "split_labels",
    "splits_text",
    "unit_values",
    "validation_tokens",
]

#: what a row on one split says of its interval
ONE_SPLIT = "the interval covers seeds (init and batch order), not other text"


def split_labels(frame: pd.DataFrame) -> pd.Series:
    """Each row's split label (``""`` where a frame has no ``split`` column or the cell is empty)."""
    if frame.empty or "split" not in frame.columns:
        return pd.Series("", index=frame.index, dtype=object)
    return frame["split"].map(
        lambda s: "" if s is None or (isinstance(s, float) and math.isnan(s)) else str(s)
    )


def by_split(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``frame`` cut into its splits, in order of appearance (one entry ``""`` without splits)."""
    labels = split_labels(frame)
    if frame.empty:
        return {"": frame}
    return {str(s): frame[labels == s] for s in dict.fromkeys(labels)}


def unit_values(runs: pd.DataFrame, variant: str, value: str) -> dict[tuple[str, int], float]:
    """``{(split, seed): value}`` of one variant's models (rows without the value left out)."""
    if runs.empty or "seed" not in runs.columns or value not in runs.columns:
        return {}
    mine = runs.loc[runs.variant.to_numpy() == variant]
    labels = split_labels(mine)
    return {
        (str(sp), int(s)): float(v)
        for sp, s, v in zip(labels, mine.seed, mine[value], strict=True)
        if v is not None and math.isfinite(float(v))
    }


def pooled(values: Mapping[tuple[str, int], float]) -> tuple[stats.Sample, pd.DataFrame]:
    """The sample a verdict is drawn from (seeds, or split means) and one row per split."""
    groups: dict[str, list[float]] = {}
    for (split, _seed), v in sorted(values.items()):
        if math.isfinite(v):
            groups.setdefault(split, []).append(float(v))
    rows = []
    for split, vals in groups.items():
        iv = stats.t_interval(vals)
        rows.append({"split": split, "seeds": len(vals), "mean": iv.mean, "lo": iv.lo, "hi": iv.hi})
    table = pd.DataFrame(rows, columns=["split", "seeds", "mean", "lo", "hi"])
    if len(groups) <= 1:
        return stats.Sample.of(next(iter(groups.values()), [])), table
    return stats.Sample.of(table["mean"].to_numpy(float), unit="split"), table


def splits_text(table: pd.DataFrame, pct: bool) -> str:
    """``"per split: a +0.52% [+0.1%, +0.9%] (5 seeds); b ..."`` (empty for one split)."""
    if len(table) <= 1:
        return ""
    parts = [
        f"{r.split or '(unnamed)'} {stats.format_effect(r.mean, r.lo, r.hi, pct=pct)} ({r.seeds} seeds)"
        for r in table.itertuples()
    ]
    return "per split: " + "; ".join(parts)


def split_count(frames: list[pd.DataFrame]) -> int:
    """The number of distinct splits in ``frames`` together (at least 1)."""
    labels = set()
    for f in frames:
        labels |= set(split_labels(f))
    return max(1, len(labels))


def validation_tokens(units: pd.DataFrame, variants: list[str]) -> float:
    """Validation tokens one model of ``variants`` scored at its end (mean over splits; NaN unrecorded)."""
    if units.empty or "tokens" not in units.columns:
        return math.nan
    mine = units[units.variant.isin(variants)]
    if mine.empty:
        return math.nan
    models = set(zip(split_labels(mine), mine.seed, mine.variant, strict=True))
    return float(np.nansum(mine.tokens.to_numpy(float))) / len(models)
