"""Equal wall-clock time, schedule-matched: the slower variant of a compared pair trains again, on its own
complete schedule, for the steps that fit the faster one's wall time at their side-by-side tokens/s. Read off
the slower run's curve instead, it would be judged before its learning rate annealed (:mod:`.curves`).

The throughput's uncertainty goes with the figure: the rounds of the side-by-side measurement are
interleaved, so each round gives one tokens/s ratio of the pair; the steps that the ratio's quartiles over
rounds allow are kept beside the steps trained, and the claims row prints them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from mswelu.analysis.claims import Claim, resolve

__all__ = ["MATCHED_COLUMNS", "TimeMatch", "time_matches", "time_pairs"]

#: a study's schedule-matched runs: one row per model of the slower variant of a pair
MATCHED_COLUMNS = ["variant", "seed", "matched_to", "steps", "steps_lo", "steps_hi", "ratio", "val_loss",
                   "val_bpb", "tokens", "run"]  # fmt: skip


@dataclass(frozen=True)
class TimeMatch:
    """The slower variant of a pair, the faster one, their tokens/s ratio (slower / faster) and the steps
    the slower trains: ``steps`` at the ratio of the medians, ``steps_lo``-``steps_hi`` at the quartiles of
    the per-round ratios (or at the slowest and fastest rounds where rounds are not kept)."""

    slower: str
    faster: str
    ratio: float
    steps: int
    steps_lo: int
    steps_hi: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_pairs(claims: Iterable[Claim], compare: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """The (ours, base) variant pairs of the claims judged at equal wall-clock time, in order, once each."""
    pairs = [(resolve(c.ours, compare), resolve(c.base, compare)) for c in claims if c.view == "time"]
    return list(dict.fromkeys(p for p in pairs if p[0] and p[1] and p[0] != p[1]))


def _rounds(row: pd.Series) -> list[float]:
    rounds = row.get("rounds")
    if isinstance(rounds, (list, tuple, np.ndarray)) and len(rounds):
        return [float(x) for x in rounds]
    return []


def _steps(max_steps: int, ratio: float) -> int:
    return max(1, min(int(max_steps), round(int(max_steps) * ratio)))


def time_matches(
    pairs: Sequence[tuple[str, str]], throughput: pd.DataFrame, max_steps: int
) -> list[TimeMatch]:
    """One :class:`TimeMatch` per pair whose variants were measured side by side at different tokens/s
    (a pair measured equal, or not measured, trains nothing more)."""
    if throughput is None or throughput.empty:
        return []
    speed = throughput.drop_duplicates("variant").set_index("variant")
    out: dict[tuple[str, str], TimeMatch] = {}
    for a, b in pairs:
        if a not in speed.index or b not in speed.index:
            continue
        ta, tb = float(speed.tokens_per_s[a]), float(speed.tokens_per_s[b])
        if not (math.isfinite(ta) and math.isfinite(tb) and ta > 0 and tb > 0) or ta == tb:
            continue
        slow, fast = (a, b) if ta < tb else (b, a)
        ratio = min(ta, tb) / max(ta, tb)
        r_slow, r_fast = _rounds(speed.loc[slow]), _rounds(speed.loc[fast])
        if r_slow and len(r_slow) == len(r_fast):  # interleaved: round i of each in the same round
            per_round = np.asarray(r_slow) / np.asarray(r_fast)
            lo, hi = (float(q) for q in np.percentile(per_round, [25, 75]))
        else:
            lo = float(speed.tokens_per_s_min[slow]) / float(speed.tokens_per_s_max[fast])
            hi = float(speed.tokens_per_s_max[slow]) / float(speed.tokens_per_s_min[fast])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            lo = hi = ratio
        out.setdefault(
            (slow, fast),
            TimeMatch(
                slow, fast, ratio, _steps(max_steps, ratio), _steps(max_steps, lo), _steps(max_steps, hi)
            ),
        )
    return list(out.values())
