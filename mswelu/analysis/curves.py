"""Reading comparisons off evaluation curves: paired convergence and the equal-compute views. Rules: one scope
per reading (by default that of the baseline's final evaluation; never mixed); each seed's target is its own
baseline's final loss; a run that never reaches it gives a flagged bound, not a value. Points read off one
run's curve are not runs trained to those budgets (a cosine schedule anneals only at its end).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from mswelu.analysis.frames import loss_at, scope_curve, tokens_to_reach
from mswelu.base.errors import unknown_choice

__all__ = [
    "CURVE_COLUMNS",
    "VIEWS",
    "budget_pairs",
    "equal_compute_table",
    "final_scope",
    "paired_convergence",
]

#: a study's curves: one row per evaluation of one model
CURVE_COLUMNS = ["variant", "seed", "step", "tokens", "val_loss", "val_bpb", "scope"]
#: the views a comparison can take: equal training tokens, equal wall-clock time, equal model FLOPs
VIEWS = ("tokens", "time", "flops")


def final_scope(curve: pd.DataFrame) -> str | None:
    """The scope of a curve's last evaluation (its final one)."""
    if curve.empty or "scope" not in curve.columns:
        return None
    last = curve.sort_values(["tokens", "step"]).iloc[-1]["scope"]
    return None if last is None or (isinstance(last, float) and math.isnan(last)) else str(last)


def _curve(curves: pd.DataFrame, variant: str, seed: int) -> pd.DataFrame:
    return curves[(curves.variant == variant) & (curves.seed == seed)]


def paired_convergence(
    curves: pd.DataFrame,
    ours: str,
    base: str,
    value: str = "val_loss",
    scope: str | None = "auto",
    target: float | None = None,
) -> pd.DataFrame:
    """Per seed: the target, the tokens each variant needs to reach it, the speed-up ``1 - ours / base``
    and its ``bound`` (``""``, ``"upper"``, ``"lower"``, or ``"unknown"``: both censored, NaN)."""
    cols = ["seed", "scope", "evals", "target", "tokens_ours", "tokens_base", "speedup", "bound", "note"]
    rows = []
    seeds = sorted(
        set(curves.loc[curves.variant == ours, "seed"]) & set(curves.loc[curves.variant == base, "seed"])
    )
    for seed in seeds:
        b_all, o_all = _curve(curves, base, seed), _curve(curves, ours, seed)
        s = final_scope(b_all) if scope == "auto" else scope
        b, o = scope_curve(b_all, s), scope_curve(o_all, s)
        b, o = b.dropna(subset=[value]), o.dropna(subset=[value])
        if b.empty or o.empty:
            rows.append(
                [seed, s, 0, math.nan, math.nan, math.nan, math.nan, "unknown", f"no {s} evaluations"]
            )
            continue
        goal = float(b[value].iloc[-1]) if target is None else float(target)
        t_b, t_o = tokens_to_reach(b, goal, y=value), tokens_to_reach(o, goal, y=value)
        notes, bounds = [], set()
        for name, c, t in ((ours, o, t_o), (base, b, t_b)):
            first, end = float(c.tokens.iloc[0]), float(c.tokens.iloc[-1])
            if not math.isfinite(t):  # right-censored: it needs more than its run
                bounds.add("upper" if c is o else "lower")
                notes.append(f"{name} never reached {goal:.4f} within {end:.4g} tokens")
            elif t <= first and float(c[value].iloc[0]) <= goal:  # left-censored: at or before its first eval
                bounds.add("lower" if c is o else "upper")
                notes.append(
                    f"{name} was at {goal:.4f} or below at its first {s} evaluation ({first:.4g} tokens)"
                )
        t_o = t_o if math.isfinite(t_o) else float(o.tokens.iloc[-1])
        t_b = t_b if math.isfinite(t_b) else float(b.tokens.iloc[-1])
        bound = "unknown" if len(bounds) == 2 else (bounds.pop() if bounds else "")
        speedup = 1.0 - t_o / t_b if bound != "unknown" and t_b > 0 else math.nan
        rows.append([seed, s, min(len(o), len(b)), goal, t_o, t_b, speedup, bound, "; ".join(notes)])
    return pd.DataFrame(rows, columns=cols)


def _axis(view: str, variant: str, throughput: Mapping[str, float], flops: Mapping[str, float]) -> float:
    """Units of the view per training token of ``variant`` (seconds or FLOPs per token); NaN if unknown."""
    if view == "tokens":
        return 1.0
    if view == "time":
        tps = float(throughput.get(variant, math.nan))
        return 1.0 / tps if tps > 0 else math.nan
    if view == "flops":
        return float(flops.get(variant, math.nan))
    raise ValueError(unknown_choice("view", view, VIEWS))


def budget_pairs(
    curves: pd.DataFrame,
    ours: str,
    base: str,
    view: str,
    throughput: Mapping[str, float],
    flops: Mapping[str, float],
    value: str = "val_loss",
) -> pd.DataFrame:
    """Per seed: both variants' ``value`` at the smaller of their budgets in the view (interpolated, NaN
    where a curve does not reach back), and the fraction of its run each is read at (``ours_at``,
    ``base_at``)."""
    cols = ["seed", "scope", "budget", "ours", "base", "note", "ours_at", "base_at"]
    a_o, a_b = _axis(view, ours, throughput, flops), _axis(view, base, throughput, flops)
    rows = []
    seeds = sorted(
        set(curves.loc[curves.variant == ours, "seed"]) & set(curves.loc[curves.variant == base, "seed"])
    )
    for seed in seeds:
        o_all, b_all = _curve(curves, ours, seed), _curve(curves, base, seed)
        s = final_scope(b_all)
        o, b = scope_curve(o_all, s).dropna(subset=[value]), scope_curve(b_all, s).dropna(subset=[value])
        if o.empty or b.empty or not (math.isfinite(a_o) and math.isfinite(a_b)):
            why = f"no {s} evaluations" if o.empty or b.empty else f"no {view} per token for both variants"
            rows.append([seed, s, math.nan, math.nan, math.nan, why, math.nan, math.nan])
            continue
        end_o, end_b = float(o.tokens.iloc[-1]), float(b.tokens.iloc[-1])
        budget = min(end_o * a_o, end_b * a_b)
        v_o, v_b = loss_at(o, budget / a_o, y=value), loss_at(b, budget / a_b, y=value)
        note = "" if math.isfinite(v_o) and math.isfinite(v_b) else f"the {s} curve does not reach the budget"
        rows.append([seed, s, budget, v_o, v_b, note, budget / a_o / end_o, budget / a_b / end_b])
    return pd.DataFrame(rows, columns=cols)


def equal_compute_table(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    throughput: Mapping[str, float],
    flops: Mapping[str, float],
    value: str = "val_loss",
    reference: str | None = None,
) -> pd.DataFrame:
    """One row per variant: tokens/s (and relative to ``reference``), FLOPs per token, the budget in
    seconds and FLOPs, and the mean ``value`` at equal tokens, time and FLOPs (the smallest common budget)."""
    variants = list(dict.fromkeys(runs.variant))
    reference = reference or (variants[0] if variants else None)
    tokens = runs.groupby("variant", sort=False).tokens.max()
    rows = []
    budgets = {
        view: min((float(tokens[v]) * _axis(view, v, throughput, flops) for v in variants), default=math.nan)
        for view in ("time", "flops")
    }
    for v in variants:
        at = {}
        for view in ("time", "flops"):
            axis = _axis(view, v, throughput, flops)
            vals = []
            for seed in sorted(set(runs.loc[runs.variant == v, "seed"])):
                c = _curve(curves, v, seed)
                c = scope_curve(c, final_scope(c)).dropna(subset=[value])
                vals.append(loss_at(c, budgets[view] / axis, y=value) if math.isfinite(axis) else math.nan)
            at[view] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
        tps = float(throughput.get(v, math.nan))
        ref = float(throughput.get(reference, math.nan)) if reference else math.nan
        rows.append(
            {
                "variant": v,
                "tokens/s": tps,
                f"tokens/s vs {reference}": tps / ref if ref > 0 else math.nan,
                "training FLOPs/token": float(flops.get(v, math.nan)),
                "tokens": float(tokens[v]),
                "seconds": float(tokens[v]) / tps if tps > 0 else math.nan,
                "FLOPs": float(tokens[v]) * float(flops.get(v, math.nan)),
                f"{value} at equal tokens": float(runs.loc[runs.variant == v, value].mean()),
                f"{value} at equal time": at["time"],
                f"{value} at equal FLOPs": at["flops"],
            }
        )
    return pd.DataFrame(rows)
