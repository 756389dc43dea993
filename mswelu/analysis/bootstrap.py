"""How much a model's validation bits per byte depend on which text was scored: a bootstrap over the
validation split's documents (``eval_documents.json``), beside the interval over seeds (which holds the text
fixed). Every variant and seed is resampled with the same documents, so differences keep their pairing.

With fewer than :data:`MIN_DOCUMENTS` documents the units are :data:`BLOCKS` contiguous stretches of
evaluation windows, labelled as such: a judgement, since stretches of one play are correlated and give a
narrower interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mswelu.base.stats import Interval, t_interval

__all__ = ["BLOCKS", "MIN_DOCUMENTS", "UNIT_COLUMNS", "bpb_intervals", "bootstrap_units", "study_bootstrap"]

#: fewest documents a document bootstrap uses; fewer: :data:`BLOCKS` stretches of windows
MIN_DOCUMENTS = 20
#: the number of contiguous stretches of windows when the documents are too few
BLOCKS = 32
#: a unit table's columns (one row per unit of one run)
UNIT_COLUMNS = ["unit", "kind", "loss", "tokens", "bytes"]
_LN2 = math.log(2)


def bootstrap_units(
    documents: Mapping[str, Sequence[float]] | None,
    windows: Mapping[str, Sequence[float]] | None = None,
    min_documents: int = MIN_DOCUMENTS,
    blocks: int = BLOCKS,
) -> pd.DataFrame:
    """A run's bootstrap units: its documents, or ``blocks`` stretches of windows below ``min_documents``."""
    docs = pd.DataFrame({k: list((documents or {}).get(k) or []) for k in ("loss", "tokens", "bytes")})
    docs = docs[docs.tokens > 0] if not docs.empty else docs
    if len(docs) >= min_documents or not windows:
        return docs.assign(unit=range(len(docs)), kind="document")[UNIT_COLUMNS]
    win = pd.DataFrame({k: list(windows.get(k) or []) for k in ("loss", "tokens", "bytes")})
    edges = np.linspace(0, len(win), min(blocks, len(win)) + 1).round().astype(int)
    label = np.repeat(np.arange(len(edges) - 1), np.diff(edges))
    out = win.groupby(label).sum()
    return out.assign(unit=range(len(out)), kind="block")[UNIT_COLUMNS]


def _counts(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot).astype(np.float64)


def _percentile(values: np.ndarray, point: float, level: float, n: int) -> Interval:
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(point, float(lo), float(hi), n, float(np.std(values, ddof=1)), level)


def _matrix(units: pd.DataFrame, key: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(loss, bytes) as (runs, units) matrices over the units every run has, and those units."""
    pivot_l = units.pivot_table(index=list(key), columns="unit", values="loss", aggfunc="sum")
    pivot_b = units.pivot_table(index=list(key), columns="unit", values="bytes", aggfunc="sum")
    common = [u for u in pivot_l.columns if pivot_l[u].notna().all() and pivot_b[u].notna().all()]
    return pivot_l[common].to_numpy(float), pivot_b[common].to_numpy(float), list(pivot_l.index)


def study_bootstrap(
    units: pd.DataFrame, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Per variant: the seed-mean val bpb and its text-bootstrap interval (the same units for every run)."""
    cols = ["variant", "bpb", "lo", "hi", "units", "kind", "seeds"]
    if units is None or units.empty:
        return pd.DataFrame(columns=cols)
    loss, nbytes, index = _matrix(units, ["variant", "seed"])
    if loss.shape[1] < 2:
        return pd.DataFrame(columns=cols)
    c = _counts(loss.shape[1], n_boot, np.random.default_rng(seed))
    boot = (c @ loss.T) / (c @ nbytes.T) / _LN2  # (n_boot, runs)
    point = loss.sum(1) / nbytes.sum(1) / _LN2
    variants = pd.Series([v for v, _ in index])
    kind = str(units["kind"].iloc[0])
    rows = []
    for variant in dict.fromkeys(variants):
        cols_v = np.flatnonzero(variants == variant)
        iv = _percentile(boot[:, cols_v].mean(1), float(point[cols_v].mean()), level, loss.shape[1])
        rows.append([variant, iv.mean, iv.lo, iv.hi, loss.shape[1], kind, len(cols_v)])
    return pd.DataFrame(rows, columns=cols)


def bpb_intervals(
    runs: pd.DataFrame, units: pd.DataFrame | None, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Per variant, the two uncertainties of its val bpb side by side: the t interval over seeds (the text
    fixed) and the text bootstrap (the seeds fixed; NaN without units), with the units' number and kind."""
    boot = study_bootstrap(units, n_boot, level, seed).set_index("variant") if units is not None else None
    rows = []
    for variant, part in runs.groupby("variant", sort=False):
        iv = t_interval(part["val_bpb"].to_numpy(float), level)
        b = boot.loc[variant] if boot is not None and variant in boot.index else None
        rows.append(
            {
                "variant": variant,
                "val_bpb": iv.mean,
                "seeds": iv.n,
                "seed lo": iv.lo,
                "seed hi": iv.hi,
                "text lo": float(b["lo"]) if b is not None else math.nan,
                "text hi": float(b["hi"]) if b is not None else math.nan,
                "text units": f"{int(b['units'])} {b['kind']}s" if b is not None else "",
            }
        )
    return pd.DataFrame(rows)
