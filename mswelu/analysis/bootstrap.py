"""How much a model's validation bits per byte depend on which text was scored: a bootstrap over the
validation split's documents, reported beside the interval over seeds (which holds the text fixed).

The final whole-split evaluation saves each document's summed loss, scored tokens and bytes, and the same
per evaluation window (``eval_documents.json`` in the run folder, :mod:`mswelu.training.evaluation`).
Resampling documents with replacement and recomputing ``sum(loss) / ln 2 / sum(bytes)`` gives the spread that
another
draw of text of the same kind would show. Every variant and seed is resampled with the same documents in a
replicate (they scored the same split), so differences between variants keep their pairing.

With fewer than :data:`MIN_DOCUMENTS` documents (the embedded corpus' validation split holds two plays) a
document bootstrap cannot say anything; the units are then :data:`BLOCKS` contiguous stretches of evaluation
windows, labelled as such. That is a judgement: stretches of one play are correlated, so a block interval
is narrower than a document interval would be.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mswelu.base.stats import Interval, t_interval

__all__ = [
    "BLOCKS",
    "MIN_DOCUMENTS",
    "UNIT_COLUMNS",
    "bootstrap_bpb",
    "bpb_intervals",
    "bootstrap_units",
    "paired_bootstrap_gain",
    "study_bootstrap",
]

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
    """The units a run's bootstrap resamples (:data:`UNIT_COLUMNS`): its documents when there are at least
    ``min_documents`` of them, else ``blocks`` contiguous stretches of its evaluation windows. ``documents``
    and ``windows`` are ``{"loss": [...], "tokens": [...], "bytes": [...]}`` (``eval_documents.json``)."""
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


def bootstrap_bpb(units: pd.DataFrame, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """One run's val bpb with its percentile bootstrap interval over ``units`` (:func:`bootstrap_units`);
    ``n`` of the interval is the number of units."""
    loss, nbytes = units["loss"].to_numpy(float), units["bytes"].to_numpy(float)
    if len(units) < 2 or nbytes.sum() <= 0:
        point = float(loss.sum() / nbytes.sum() / _LN2) if nbytes.sum() > 0 else math.nan
        return Interval(point, math.nan, math.nan, len(units), math.nan, level)
    c = _counts(len(units), n_boot, np.random.default_rng(seed))
    boot = (c @ loss) / (c @ nbytes) / _LN2
    return _percentile(boot, float(loss.sum() / nbytes.sum() / _LN2), level, len(units))


def _matrix(units: pd.DataFrame, key: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(loss, bytes) as (runs, units) matrices over the units every run has, and those units."""
    pivot_l = units.pivot_table(index=list(key), columns="unit", values="loss", aggfunc="sum")
    pivot_b = units.pivot_table(index=list(key), columns="unit", values="bytes", aggfunc="sum")
    common = [u for u in pivot_l.columns if pivot_l[u].notna().all() and pivot_b[u].notna().all()]
    return pivot_l[common].to_numpy(float), pivot_b[common].to_numpy(float), list(pivot_l.index)


def study_bootstrap(
    units: pd.DataFrame, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Per variant: the mean over seeds of each seed's val bpb and its text-bootstrap interval (the same
    units resampled for every variant and seed), the number and kind of units. ``units``: long form with
    ``variant``, ``seed`` and :data:`UNIT_COLUMNS`."""
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


def paired_bootstrap_gain(
    units: pd.DataFrame, ours: str, base: str, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> Interval:
    """The relative bpb gain of ``ours`` over ``base`` (``(base - ours) / base`` of their seed-mean bpb,
    over the seeds both have) with its text-bootstrap interval: the same units resampled for both."""
    part = units[units.variant.isin([ours, base])]
    loss, nbytes, index = _matrix(part, ["variant", "seed"])
    seeds = {v: {s for vv, s in index if vv == v} for v in (ours, base)}
    common = seeds[ours] & seeds[base]
    if not common or loss.shape[1] < 2:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan, level)
    rows_o = [i for i, (v, s) in enumerate(index) if v == ours and s in common]
    rows_b = [i for i, (v, s) in enumerate(index) if v == base and s in common]
    c = _counts(loss.shape[1], n_boot, np.random.default_rng(seed))
    bpb = (c @ loss.T) / (c @ nbytes.T) / _LN2
    o, b = bpb[:, rows_o].mean(1), bpb[:, rows_b].mean(1)
    p = loss.sum(1) / nbytes.sum(1) / _LN2
    point = (p[rows_b].mean() - p[rows_o].mean()) / p[rows_b].mean()
    return _percentile((b - o) / b, float(point), level, loss.shape[1])


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
