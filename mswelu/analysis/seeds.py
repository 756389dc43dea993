"""Figures over seeds: mean, spread and standard error per variant."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["aggregate_seeds", "mean_spread"]


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
