"""A study's effect against scale for notebook 05: its ``swelu`` role's paired gain over its ``silu`` role
along its own training, and a size ladder that joins it with the committed studies of its smaller rungs
(each rebuilt from its own records, so every point is recomputable from committed files)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mswelu.analysis.ladder import Slope, gain_along_training, ladder_slope, ladder_table, rung_gains
from mswelu.workbook.study import Study, study_from_records

__all__ = ["Scale", "effect_at_scale"]


@dataclass(frozen=True)
class Scale:
    """``ours`` vs ``base``: the gain along training and (with rungs) by size, with the ladder's slope."""

    ours: str
    base: str
    along: pd.DataFrame
    ladder: pd.DataFrame | None = None
    slope: Slope | None = None

    def metrics(self) -> dict[str, Any]:
        """For ``metrics.json``: every point with its interval, and the slope (None where not estimable)."""

        def finite(x: float) -> float | None:
            return float(x) if math.isfinite(float(x)) else None

        out: dict[str, Any] = {
            "ours": self.ours,
            "base": self.base,
            "along_training": [{k: finite(v) for k, v in r.items()} for r in self.along.to_dict("records")],
        }
        if self.ladder is not None and self.slope is not None:
            out["ladder"] = [
                {k: (v if k == "rung" else finite(v)) for k, v in r.items()}
                for r in self.ladder.to_dict("records")
            ]
            s = self.slope
            out["slope_per_decade"] = {
                "value": finite(s.per_decade),
                "lo": finite(s.lo),
                "hi": finite(s.hi),
                "df": s.df,
            }
        return out


def _rung(study: Study, ours: str, base: str) -> tuple[float, float, dict[int, float]]:
    """(the base variant's parameters, its training tokens, {seed: paired gain}) of one rung's study."""
    runs = study.data.runs
    name = study.data.context.get("name")
    if "split" in runs.columns and runs.split.nunique() > 1:
        raise ValueError(f"study {name!r} runs several text splits: a ladder rung pairs by seed on one split")
    missing = {ours, base} - set(runs.variant)
    if missing:
        raise ValueError(
            f"study {name!r} trained no {sorted(missing)}: a ladder compares one pair at every rung"
        )
    reference = runs[runs.variant == base]
    return float(reference.params.mean()), float(reference.tokens.max()), rung_gains(runs, ours, base)


def effect_at_scale(
    study: Study, rungs: Sequence[str] = (), root: str | os.PathLike[str] | None = None
) -> Scale | None:
    """The :class:`Scale` of ``study``'s ``swelu`` role over its ``silu`` role (None unless it trains both),
    with ``rungs``: the ladder of this study and those committed studies (read from their records under
    ``root``, the project by default), in order of size, and the slope of the gain against log10(params)."""
    compare = study.data.context.get("compare") or {}
    ours, base = compare.get("swelu"), compare.get("silu")
    if ours is None or base is None or not {ours, base} <= set(study.data.runs.variant):
        if rungs:
            raise ValueError(f"a ladder needs the study's swelu and silu roles ({ours}, {base}) trained")
        return None
    along = gain_along_training(study.data.curves, ours, base)
    if not rungs:
        return Scale(ours, base, along)
    joined = {str(study.data.context.get("name")): _rung(study, ours, base)}
    for name in rungs:
        joined[name] = _rung(study_from_records(name, root), ours, base)
    table = ladder_table(joined)
    return Scale(ours, base, along, table, ladder_slope(table))
