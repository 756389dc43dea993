"""Figures over seeds: mean, spread and standard error per variant, the noise floor, and per-seed values
of one variant (the unit a paired comparison is made of)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["aggregate_seeds", "mean_spread", "noise_floor", "seed_values"]


def aggregate_seeds(
    results: pd.DataFrame,
    by: str | Sequence[str] = "variant",
    values: Sequence[str] = ("val_loss", "val_bpb", "tokens_per_s"),
) -> pd.DataFrame:
    """Per group: ``<value>_mean``, ``_std`` (ddof=1) and ``_sem`` of each value present, then ``n``."""
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in by if c not in results.columns]
    if missing:
        raise ValueError(f"results lacks grouping column(s) {missing}; has {list(results.columns)}")
    present = [v for v in values if v in results.columns]
    grouped = results.groupby(by, sort=False)
    out = pd.DataFrame(index=grouped.size().index)
    for v in present:
        out[f"{v}_mean"] = grouped[v].mean()
        out[f"{v}_std"] = grouped[v].std(ddof=1)
        out[f"{v}_sem"] = out[f"{v}_std"] / np.sqrt(grouped[v].count())
    out["n"] = grouped.size()
    return out


def mean_spread(mean: float, std: float, digits: int = 3) -> str:
    """``"3.214 ± 0.012"`` (``"3.214 (1 seed)"`` when there is no spread)."""
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def noise_floor(results: pd.DataFrame, value: str = "val_bpb") -> pd.Series:
    """Seed-to-seed standard deviation of ``value`` per variant (ddof=1; NaN with one seed): the smallest
    difference between variants that a comparison of this size can hope to resolve."""
    if "variant" not in results.columns or value not in results.columns:
        raise ValueError(f"results needs 'variant' and {value!r} columns; has {list(results.columns)}")
    return results.groupby("variant", sort=False)[value].std(ddof=1).rename(f"{value} seed sd")


def seed_values(results: pd.DataFrame, variant: str, value: str) -> dict[int, float]:
    """``{seed: value}`` of one variant's models (rows without the value left out)."""
    if "seed" not in results.columns or value not in results.columns:
        return {}
    rows = results.loc[results.variant == variant].dropna(subset=[value])
    return {int(s): float(v) for s, v in zip(rows.seed, rows[value], strict=True)}
