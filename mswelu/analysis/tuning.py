"""Whether each variant's learning-rate sweep brackets its optimum, and how to extend the grid when not: a
best lr at the grid's edge means the comparison partly measures how well each grid fitted.

Rule: while the best lr (a diverged run never wins) is the largest (smallest) tried, try ``best *`` (``/``)
:data:`FACTOR`, until it has a tried neighbour on both sides (divergence brackets from above), at most
:data:`MAX_EXTENSIONS` times per direction and inside :data:`LR_BOUNDS`; a grid still at its edge then was
centred badly. Rows depending on an unbracketed variant become inconclusive unless they survive one more step,
judged by :attr:`LrStatus.sensitivity` (under a loss convex in log(lr), the next step gains at most what the
last one did).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

__all__ = [
    "FACTOR",
    "LR_BOUNDS",
    "MAX_EXTENSIONS",
    "SWEEP_COLUMNS",
    "LrStatus",
    "extend_lr_grid",
    "lr_status",
    "unseeded_points",
]

#: each extension multiplies (divides) the grid's edge lr by this
FACTOR = 2.0
#: extensions per direction beyond the original grid (see the module docstring)
MAX_EXTENSIONS = 3
#: no lr is proposed outside this range
LR_BOUNDS = (1e-6, 1.0)
#: the columns of a sweep table (one row per variant x lr)
SWEEP_COLUMNS = ["variant", "lr", "tune_val_loss", "diverged", "run"]


@dataclass(frozen=True)
class LrStatus:
    """One variant's sweep, read: the best ``lr``; ``edge`` ``""``, ``"high"`` or ``"low"``;
    ``sensitivity``, the relative gain of the last grid step towards that edge; ``next_lr`` (None when
    bracketed or at the bound)."""

    variant: str
    lr: float
    tried: tuple[float, ...]
    edge: str
    sensitivity: float
    next_lr: float | None
    reason: str

    @property
    def interior(self) -> bool:
        return self.edge == ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tried": list(self.tried), "interior": self.interior}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LrStatus:
        return cls(
            str(d["variant"]),
            float(d["lr"]),
            tuple(float(x) for x in d.get("tried") or ()),
            str(d.get("edge") or ""),
            float(d.get("sensitivity") or 0.0),
            None if d.get("next_lr") is None else float(d["next_lr"]),
            str(d.get("reason") or ""),
        )


def _extensions(tried: Sequence[float], grid: Sequence[float], up: bool) -> int:
    edge = max(grid) if up else min(grid)
    return sum(1 for lr in tried if (lr > edge * (1 + 1e-9) if up else lr < edge * (1 - 1e-9)))


def _per_lr(part: pd.DataFrame) -> pd.DataFrame:
    """One row per lr: the mean tuning loss over its seeds, diverged if any seed diverged."""
    part = part.assign(tune_val_loss=pd.to_numeric(part.tune_val_loss, errors="coerce"))
    return part.groupby("lr", as_index=False).agg(
        tune_val_loss=("tune_val_loss", "mean"), diverged=("diverged", "any")
    )


def _status(variant: str, part: pd.DataFrame, grid: Sequence[float]) -> LrStatus:
    part = _per_lr(part)
    tried = tuple(sorted({float(x) for x in part.lr}))
    ok = part[~part.diverged.astype(bool) & part.tune_val_loss.map(lambda v: math.isfinite(float(v)))]
    lo_bound, hi_bound = LR_BOUNDS
    if ok.empty:  # every lr diverged: go down
        nxt = min(tried) / FACTOR
        room = _extensions(tried, grid, up=False) < MAX_EXTENSIONS and nxt >= lo_bound
        return LrStatus(
            variant,
            math.nan,
            tried,
            "low",
            math.inf,
            nxt if room else None,
            f"every lr of {list(tried)} diverged" + ("" if room else "; the downward bound is reached"),
        )
    ordered = ok.sort_values(["tune_val_loss", "lr"])
    best = float(ordered.lr.iloc[0])
    best_loss = float(ordered.tune_val_loss.iloc[0])
    higher = [x for x in tried if x > best * (1 + 1e-9)]
    lower = [x for x in tried if x < best * (1 - 1e-9)]
    if higher and lower:
        return LrStatus(variant, best, tried, "", 0.0, None, f"best lr {best:g} has tried lrs on both sides")
    up = not higher
    edge = "high" if up else "low"
    finite = ok.set_index("lr").tune_val_loss.astype(float)
    neighbours = [x for x in (lower if up else higher) if x in finite.index]
    neighbour = (max(neighbours) if up else min(neighbours)) if neighbours else None
    sens = (
        max(0.0, (float(finite[neighbour]) - best_loss) / float(finite[neighbour]))
        if neighbour is not None
        else math.inf
    )
    nxt = best * FACTOR if up else best / FACTOR
    room = _extensions(tried, grid, up) < MAX_EXTENSIONS and lo_bound <= nxt <= hi_bound
    where = "largest" if up else "smallest"
    reason = f"best lr {best:g} is the {where} tried ({', '.join(f'{x:g}' for x in tried)})"
    if not room:
        reason += (
            f"; the extension bound is reached ({MAX_EXTENSIONS} x {FACTOR:g} beyond the grid, {LR_BOUNDS})"
        )
    return LrStatus(variant, best, tried, edge, sens, nxt if room else None, reason)


def lr_status(sweep: pd.DataFrame, grid: Sequence[float] | None = None) -> dict[str, LrStatus]:
    """Each variant's :class:`LrStatus` from a sweep; ``grid``: the original grid (default: all lrs)."""
    missing = {"variant", "lr", "tune_val_loss"} - set(sweep.columns)
    if missing:
        raise ValueError(f"a sweep needs columns {sorted(missing)}; has {list(sweep.columns)}")
    sweep = sweep.assign(diverged=sweep.get("diverged", False))
    out = {}
    for variant, part in sweep.groupby("variant", sort=False):
        g = list(grid) if grid else sorted({float(x) for x in part.lr})
        out[str(variant)] = _status(str(variant), part, g)
    return out


def unseeded_points(sweep: pd.DataFrame, grid: Sequence[float] | None, seeds: Sequence[int]) -> dict:
    """``{(variant, lr): [seed, ...]}``: the ``seeds`` not yet run at each variant's best lr and the tried lrs
    next to it (a sweep point's seed is its ``seed`` column, else ``seeds[0]``), so that the choice between
    neighbours rests on several seeds."""
    seeded = sweep.assign(seed=sweep["seed"] if "seed" in sweep else seeds[0])
    out = {}
    for variant, status in lr_status(sweep, grid).items():
        if not math.isfinite(status.lr):
            continue
        i = status.tried.index(status.lr)
        part = seeded[seeded.variant == variant]
        for lr in status.tried[max(0, i - 1) : i + 2]:
            have = {int(s) for s in part[part.lr == lr].seed}
            if missing := [int(s) for s in seeds if int(s) not in have]:
                out[(variant, lr)] = missing
    return out


def extend_lr_grid(sweep: pd.DataFrame, grid: Sequence[float] | None = None) -> dict[str, list[float]]:
    """The lrs still to run per variant: one step beyond an edge optimum, up to the bound."""
    return {v: [s.next_lr] for v, s in lr_status(sweep, grid).items() if s.next_lr is not None}
