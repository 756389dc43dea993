"""The one evaluator: claim specs and a study's data in, one row per claim out, all with :data:`COLUMNS`.

Rules, in order: **not tested** when a premise fails, a compared variant was never trained or its treatment
did not happen; **inconclusive** when data are missing or there are fewer than
:data:`~mswelu.base.stats.MIN_SEEDS` seeds; then the test (:func:`mswelu.base.stats.decide`); a censored
convergence seed keeps a verdict only where its bound cannot overturn it; an lr optimum not bracketed makes
the row inconclusive unless (gains at equal tokens) it survives one more grid step; a refutation below the
claim's scale reads **not reproduced at this scale**; Holm over every tested row (:mod:`.family`). Values are
paired by seed within a text split; several splits are pooled (:mod:`.splits`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mswelu.analysis.claims import COMPARABLE_FRACTION, Claim
from mswelu.analysis.family import apply_family
from mswelu.analysis.measures import Measurement
from mswelu.analysis.measures import moved as measured_movement
from mswelu.analysis.reader import read_study
from mswelu.analysis.schema import StudyData
from mswelu.analysis.splits import ONE_SPLIT, split_count, validation_tokens
from mswelu.analysis.tables import params_text as _params_text
from mswelu.analysis.tables import tokens_text
from mswelu.analysis.tuning import LrStatus, lr_status
from mswelu.base import stats

__all__ = ["COLUMNS", "VERDICTS", "evaluate_claims", "recompute"]

VERDICTS = ("supported", "refuted", "not reproduced at this scale", "not tested", "inconclusive")
#: the columns of every claims table (defined once)
COLUMNS = [
    "claim",
    "seed says",
    "compares",
    "view",
    "test",
    "relative",
    "measured",
    "estimate",
    "lo",
    "hi",
    "level",
    "n",
    "p",
    "role",
    "p (Holm)",
    "Holm",
    "MDE (80%)",
    "verdict",
    "why",
    "params",
    "tokens",
    "tokens/param",
    "scale",
    "inputs",
]
_TEST_WORDS = {
    "at_least": "at least",
    "at_most": "at most",
    "range": "within a range",
    "equivalent": "equivalent within +-margin (TOST)",
    "not_worse": "not worse than (one-sided)",
}


class _Row(Measurement):
    """A row under construction: the measurement, then the rules in order."""

    def __init__(self, claim: Claim, study: StudyData | None) -> None:
        self.claim, self.study = claim, study
        compare = (study.context.get("compare") if study else None) or {}
        self.ours = compare.get(claim.ours, claim.ours) if claim.ours else ""
        self.base = compare.get(claim.base, claim.base) if claim.base else ""
        self.verdict, self.why, self.measured = "inconclusive", "", "n/a"
        self.approximation = ""  # a figure read off a curve before a schedule's end: shown, not judged
        self.decision: stats.Decision | None = None
        self.inputs: dict[str, Any] = {"ours": self.ours, "base": self.base}
        self.bounds: dict[int, str] = {}
        runs = study.runs if study is not None else pd.DataFrame()
        mine = runs[runs.variant == self.ours] if not runs.empty else runs
        self.params = float(mine.params.max()) if len(mine) and mine.params.notna().any() else math.nan
        self.tokens = float(mine.tokens.max()) if len(mine) and mine.tokens.notna().any() else math.nan

    def comparable(self) -> bool:
        c, f = self.claim, COMPARABLE_FRACTION
        ok_t = not c.scale_tokens or (math.isfinite(self.tokens) and self.tokens >= f * c.scale_tokens)
        ok_p = not c.scale_params or (math.isfinite(self.params) and self.params >= f * c.scale_params)
        return ok_t and ok_p

    def scale_text(self) -> str:
        """What the row was judged on (scale, data, tokenizer, splits) and the claim's own scale."""
        c = self.claim
        if c.measure == "count":
            return "a count on the architecture the claim specifies (no training)"
        parts = [self.judged_on()]
        if c.scale_params or c.scale_tokens:
            claim = f"{_params_text(c.scale_params)} params, {tokens_text(c.scale_tokens)}"
            per = c.scale_tokens / c.scale_params if c.scale_params else math.nan
            comparable = f"comparable from {COMPARABLE_FRACTION:.0%} of both"
            parts.append(f"claimed at {claim} ({per:.3g} tokens/param); {comparable}")
        return "; ".join(parts)

    def judged_on(self) -> str:
        study = self.study
        if study is None or not math.isfinite(self.params) or self.untrained():
            return "not trained in this study"
        ctx = study.context
        per = self.tokens / self.params if self.params else math.nan
        size = f"{_params_text(self.params)} params, {tokens_text(self.tokens)}"
        scale = f"judged at {size} ({per:.3g} tokens/param)"
        if ctx.get("evaluated_on"):  # a study's own words for its data and held-out set (synthetic tasks)
            return f"{scale} {ctx['evaluated_on']}"
        data = f"on {ctx.get('data') or 'unrecorded data'}, tokenizer {ctx.get('tokenizer') or 'unrecorded'}"
        variants = [v for v in (self.ours, self.base) if v]
        runs = study.runs[study.runs.variant.isin(variants)] if not study.runs.empty else study.runs
        n = split_count([runs])
        val = validation_tokens(study.units, variants)
        scored = f"validation {val:,.0f} tokens" if math.isfinite(val) else "validation tokens not recorded"
        split = (
            f"one train/validation split ({scored}): {ONE_SPLIT}"
            if n == 1
            else f"{n} disjoint train/validation splits ({scored} each), pooled over splits"
        )
        return f"{scale} {data}; {split}"

    def untrained(self) -> str | None:
        """A variant the claim compares that the study never trained (a study without any runs: None)."""
        runs = self.study.runs if self.study is not None else pd.DataFrame()
        if self.claim.measure == "count" or runs.empty:
            return None
        trained = list(dict.fromkeys(runs.variant))
        missing = [v for v in (self.ours, self.base) if v and v not in trained]
        if not missing:
            return None
        return f"{' and '.join(missing)} was not trained in this study (its variants: {', '.join(trained)})"

    def premises(self) -> str | None:
        ctx = self.study.context if self.study else {}
        for key, want in self.claim.requires:
            have = str(ctx.get(key) or "")
            if want.lower() not in have.lower():
                return f"the claim is about {key} {want!r}; this study's {key} is {have or 'unrecorded'!r}"
        return None

    def treatment(self) -> str | None:
        c = self.claim
        if not c.moved or self.study is None:
            return None
        moved, n_slots = measured_movement(self.study, self.ours, c.param, c.group)
        self.inputs["moved"] = moved
        where = f"{c.group} " if c.group else ""
        if n_slots == 0 and not math.isfinite(moved):
            return f"{self.ours} has no learnable {where}{c.param} on record"
        if math.isfinite(moved) and moved < c.moved:
            return (
                f"{c.param} moved {moved:.3f} on average in {self.ours}'s {where}slots (the treatment needs "
                f">= {c.moved:g}; the seeds report 0.39)"
            )
        return None

    def censoring(self) -> None:
        """Flag censored seeds; keep a verdict only where the bounds' direction cannot overturn it."""
        if not self.bounds:
            return
        listed = ", ".join(f"{s}: {b} bound" for s, b in sorted(self.bounds.items()))
        note = f"{len(self.bounds)} seed(s) censored ({listed})"
        if self.verdict not in ("supported", "refuted"):
            self.why += f"; {note}"
            return
        iv, kinds = self.decision.interval, set(self.bounds.values())
        lo_c, hi_c = _claim_bounds(self.claim)
        relies_lo = (self.verdict == "supported" and math.isfinite(lo_c)) or (
            self.verdict == "refuted" and iv.lo > hi_c
        )
        relies_hi = (self.verdict == "supported" and math.isfinite(hi_c)) or (
            self.verdict == "refuted" and iv.hi < lo_c
        )
        if (relies_lo and "upper" in kinds) or (relies_hi and "lower" in kinds):
            self.why = f"{note}: the bounds could overturn {self.verdict!r}; {self.why}"
            self.verdict = "inconclusive"
        else:
            self.why += f"; {note}, which cannot overturn it"

    def lr_edges(self, lr: Mapping[str, LrStatus] | None) -> None:
        if self.claim.measure == "count":
            return
        deps = [v for v in (self.ours, self.base) if v]
        if lr is None:
            return
        missing = [v for v in deps if v not in lr]
        edges = {v: lr[v] for v in deps if v in lr and not lr[v].interior}
        self.inputs["lr"] = {v: lr[v].to_dict() for v in deps if v in lr}
        if missing:
            if self.verdict in ("supported", "refuted"):
                self.why = (
                    f"no lr sweep for {', '.join(missing)} (a verdict needs tuned variants); {self.why}"
                )
                self.verdict = "inconclusive"
            return
        if not edges:
            return
        said = "; ".join(f"{v}: {s.reason}" for v, s in edges.items())
        if self.verdict not in ("supported", "refuted"):
            self.why += f"; lr not bracketed ({said})"
            return
        if self.claim.measure == "gain" and self.claim.view == "tokens" and self._robust(edges):
            self.why += f"; lr not bracketed ({said}), but the verdict survives one more grid step for each"
            return
        self.why = f"lr optimum not bracketed ({said}); {self.why}"
        self.verdict = "inconclusive"

    def _robust(self, edges: Mapping[str, LrStatus]) -> bool:
        """The verdict holds with the interval widened by one more lr step: ours at most ``s_ours`` better
        (the gain up), the base at most ``s_base`` better (the gain down)."""
        iv = self.decision.interval
        s_o = edges[self.ours].sensitivity if self.ours in edges else 0.0
        s_b = edges[self.base].sensitivity if self.base in edges else 0.0
        if not (math.isfinite(s_o) and math.isfinite(s_b)) or s_b >= 1:
            return False
        lo = 1 - (1 - iv.lo) / (1 - s_b)
        hi = 1 - (1 - iv.hi) * (1 - s_o)
        lo_c, hi_c = _claim_bounds(self.claim)
        self.inputs["widened"] = [lo, hi]
        if self.verdict == "supported":
            return lo >= lo_c and hi <= hi_c
        return hi < lo_c if iv.hi < lo_c else lo > hi_c

    def scale(self) -> None:
        if self.verdict == "refuted" and not self.comparable():
            self.verdict = "not reproduced at this scale"
            self.why += (
                f"; below the claim's scale ({_params_text(self.params)} params, {tokens_text(self.tokens)})"
            )


def _claim_bounds(claim: Claim) -> tuple[float, float]:
    e = claim.effect
    return {
        "at_least": lambda: (float(e), math.inf),
        "at_most": lambda: (-math.inf, float(e)),
        "range": lambda: (float(e[0]), float(e[1])),
        "equivalent": lambda: (-float(e), float(e)),
        "not_worse": lambda: (-float(e), math.inf),
    }[claim.test]()


def _evaluate(
    claim: Claim, study: StudyData | None, counts: Mapping[str, float], lr: Any, alpha: float
) -> dict:
    row = _Row(claim, study)
    c = claim
    row._what = ""
    if c.measure == "count":
        value = float(counts.get(c.count, math.nan))
        lo_c, hi_c = _claim_bounds(c)
        row.measured = f"{value:,.0f}" if math.isfinite(value) else "n/a"
        if not math.isfinite(value):
            row.why = f"needs the count {c.count!r}"
        else:
            row.verdict = "supported" if lo_c <= value <= hi_c else "refuted"
            lies = "lies" if row.verdict == "supported" else "does not lie"
            row.why = f"{value:,.0f} {lies} in [{lo_c:,.0f}, {hi_c:,.0f}]"
        row.inputs["values"] = {"count": value}
        return _assemble(row, value, math.nan, math.nan, math.nan, math.nan, math.nan)
    reason = row.premises() or row.untrained() or row.treatment()
    if reason is not None:
        sample = row.sample() if study is not None else None  # shown, not judged
        row.verdict, row.why = "not tested", reason
        if sample is not None and sample.n:
            iv = sample.interval()
            row.measured = f"{iv.describe(c.relative)} {row._what} (not judged)"
        return _assemble(row)
    sample = row.sample()
    if sample is None:
        row.why = row.why or "no data"
        return _assemble(row)
    if row.approximation:
        row.why = row.approximation
        row.measured = f"{sample.interval().describe(c.relative)} {row._what} (an approximation, not judged)"
        return _assemble(row)
    decision = stats.decide(sample, c.test, c.effect, pct=c.relative, alpha=alpha)
    row.decision = decision
    row.verdict, row.why = decision.verdict, decision.why
    level = "90% t: TOST at 5%" if c.test == "equivalent" else None
    row.measured = f"{decision.interval.describe(c.relative)} {row._what}" + (f" ({level})" if level else "")
    row.inputs["sample"] = {"mean": sample.mean, "sd": sample.sd, "n": sample.n}
    row.censoring()
    row.lr_edges(lr)
    row.scale()
    iv = decision.interval
    return _assemble(row, iv.mean, iv.lo, iv.hi, iv.level, decision.p, decision.mde, iv.n)


def _assemble(
    row: _Row,
    estimate: float = math.nan,
    lo: float = math.nan,
    hi: float = math.nan,
    level: float = math.nan,
    p: float = math.nan,
    mde: float = math.nan,
    n: int = 0,
) -> dict[str, Any]:
    c = row.claim
    per = (
        row.tokens / row.params
        if math.isfinite(row.tokens) and math.isfinite(row.params) and row.params
        else math.nan
    )
    compares = (
        f"{row.ours} vs {row.base}" if row.base else (row.ours if c.measure != "count" else "architecture")
    )
    return {
        "claim": c.name,
        "seed says": c.says,
        "compares": compares,
        "view": "count" if c.measure == "count" else c.view,
        "test": _TEST_WORDS[c.test],
        "relative": c.relative,
        "measured": row.measured,
        "estimate": estimate,
        "lo": lo,
        "hi": hi,
        "level": level,
        "n": int(n),
        "p": p,
        "role": "",
        "p (Holm)": math.nan,
        "Holm": "",
        "MDE (80%)": mde,
        "verdict": row.verdict,
        "why": row.why,
        "params": row.params,
        "tokens": row.tokens,
        "tokens/param": per,
        "scale": row.scale_text(),
        "inputs": row.inputs,
    }


def evaluate_claims(
    claims: Sequence[Claim],
    study: StudyData | None = None,
    counts: Mapping[str, float] | None = None,
    alpha: float = stats.ALPHA,
) -> pd.DataFrame:
    """Every claim judged on ``study``, one row each; ``counts`` feeds ``count`` measures."""
    lr: Mapping[str, LrStatus] | None = None
    if study is not None:
        lr = study.lr or (
            lr_status(study.sweep, study.context.get("lr_grid")) if not study.sweep.empty else {}
        )
    rows = [_evaluate(c, study, counts or {}, lr, alpha) for c in claims]
    df = pd.DataFrame(rows, columns=COLUMNS)
    primary = str((study.context.get("primary") if study is not None else "") or "")
    return apply_family(df, alpha, primary) if len(df) else df


def recompute(
    source: str | os.PathLike[str] | Mapping[str, Any], companions: Sequence[Any] = ()
) -> pd.DataFrame:
    """Every verdict of a study recomputed from its ``metrics.json`` alone, lr statuses from its sweep."""
    from mswelu.analysis.claims import SEED_CLAIMS

    study = read_study(source, companions)
    if not study.sweep.empty:
        study.lr = lr_status(study.sweep, study.context.get("lr_grid"))
    return evaluate_claims(study.claims or SEED_CLAIMS, study)
