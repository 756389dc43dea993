"""Metrics records (``metrics.jsonl`` dicts) as DataFrames, and reading values off evaluation curves.
Evaluations of different scopes (``val_scope``) are different measurements, so curve readers take one scope at
a time (:func:`scope_curve`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "EVAL_COLUMNS",
    "eval_frame",
    "loss_at",
    "loss_at_fraction",
    "scope_curve",
    "shape_trajectories",
    "tokens_to_reach",
    "train_frame",
]

#: the columns of :func:`eval_frame` (``scope`` is ``val_scope``; NaN / None for runs that did not log it)
EVAL_COLUMNS = ["step", "tokens", "val_loss", "val_ppl", "val_bpb", "val_tokens", "scope"]


def train_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Training-step rows by step (a resumed run's duplicates: the last); a per-group lr reads as its max."""
    cols = ["step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s"]
    rows = []
    for r in records:
        if r.get("loss") is None:
            continue
        row = {c: r.get(c) for c in cols}
        if isinstance(row["lr"], Mapping):  # one lr per optimizer group: show the largest
            row["lr"] = max((float(v) for v in row["lr"].values()), default=None)
        rows.append(row)
    df = pd.DataFrame(rows, columns=cols).astype(float)
    return _dedupe_steps(df)


def eval_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Evaluation rows (those with ``val_loss``); a step evaluated at two scopes keeps both rows."""
    rows = [
        {**{c: r.get(c) for c in EVAL_COLUMNS[:-1]}, "scope": r.get("val_scope")}
        for r in records
        if r.get("val_loss") is not None
    ]
    df = pd.DataFrame(rows, columns=EVAL_COLUMNS)
    df[EVAL_COLUMNS[:-1]] = df[EVAL_COLUMNS[:-1]].astype(float)
    if df.empty:
        return df.reset_index(drop=True)
    df["scope"] = df["scope"].astype(object).where(df["scope"].notna(), None)
    key = df["scope"].fillna("")
    return (
        df.assign(_key=key)
        .drop_duplicates(["step", "_key"], keep="last")
        .sort_values("step", kind="stable")
        .drop(columns="_key")
        .reset_index(drop=True)
    )


def _dedupe_steps(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df.reset_index(drop=True)
    return df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def shape_trajectories(records: Iterable[Mapping[str, Any]], param: str = "k") -> pd.DataFrame:
    """One shape parameter per logged step: index ``step``, one column per slot in the run's order."""
    rows, index = [], []
    for r in records:
        values = r.get(param)
        if isinstance(values, Mapping) and values and r.get("step") is not None:
            rows.append({str(n): float(v) for n, v in values.items()})
            index.append(int(r["step"]))
    df = pd.DataFrame(rows, index=pd.Index(index, name="step"))
    return df[~df.index.duplicated(keep="last")].sort_index()


def scope_curve(curve: pd.DataFrame, scope: str | None) -> pd.DataFrame:
    """The evaluations of one scope (``None``: a curve that recorded none), sorted by tokens."""
    if "scope" not in curve.columns:
        return curve.sort_values("tokens").reset_index(drop=True)
    keep = curve["scope"].isna() if scope is None else curve["scope"] == scope
    return curve[keep].sort_values("tokens").reset_index(drop=True)


def tokens_to_reach(curve: pd.DataFrame, target: float, x: str = "tokens", y: str = "val_loss") -> float:
    """First ``x`` where ``y`` falls to ``target`` (interpolated; NaN if never), on a curve of one scope."""
    c = curve[[x, y]].dropna().sort_values(x)
    xs, ys = c[x].to_numpy(float), c[y].to_numpy(float)
    for i, v in enumerate(ys):
        if v <= target:
            if i == 0:
                return float(xs[0])
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return float(x0 + (y0 - target) * (x1 - x0) / (y0 - y1))
    return float("nan")


def loss_at(curve: pd.DataFrame, at: float, x: str = "tokens", y: str = "val_loss") -> float:
    """``y`` interpolated linearly at ``x == at``; NaN outside the curve's evaluations (no extrapolation)."""
    c = curve[[x, y]].dropna().sort_values(x)
    if c.empty:
        return math.nan
    xs = c[x].to_numpy(float)
    if at < xs[0] - 1e-9 * max(1.0, abs(xs[0])) or at > xs[-1] + 1e-9 * max(1.0, abs(xs[-1])):
        return math.nan
    return float(np.interp(at, xs, c[y].to_numpy(float)))


def loss_at_fraction(
    curve: pd.DataFrame, fraction: float, x: str = "tokens", y: str = "val_loss", total: float | None = None
) -> float:
    """``y`` interpolated at ``fraction`` of ``total`` (default: the curve's last ``x``)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    c = curve[[x, y]].dropna().sort_values(x)
    if c.empty:
        return float("nan")
    total = float(c[x].iloc[-1]) if total is None else float(total)
    return loss_at(c, fraction * total, x, y)
