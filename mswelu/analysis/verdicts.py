"""The one evaluator: claim specs (:class:`~mswelu.analysis.claims.Claim`) and a study's data in, one row per
claim out, every row with the same :data:`COLUMNS`.

One vocabulary (:data:`VERDICTS`) and one order of rules, applied to every row:

1. **not tested** when a premise of the claim does not hold in the study (other data, another tokenizer), a
   variant it compares was never trained, or its treatment did not happen (a learnable shape that did not
   move: "not tested: k moved 0.020 on average");
2. **inconclusive** when the data a measure needs are missing (the row says which), or with fewer than
   :data:`~mswelu.stats.MIN_SEEDS` seeds;
3. the test of the claim (:func:`mswelu.stats.decide`): **supported** when the interval's worse end reaches
   the claim, **refuted** when its better end falls short, else **inconclusive**;
4. a censored convergence seed keeps a verdict only where the bound's direction cannot overturn it;
5. a variant whose lr optimum is not bracketed (:mod:`mswelu.analysis.tuning`) makes the rows that depend on
   it **inconclusive**, unless (for gains at equal tokens) the verdict survives one more grid step for each
   variant at an edge (its :attr:`~mswelu.analysis.tuning.LrStatus.sensitivity`, in the adverse direction);
6. the scale rule: a refutation below the claim's scale (:data:`~mswelu.analysis.claims.COMPARABLE_FRACTION`
   of its parameters and tokens) reads **not reproduced at this scale**; a supported row stays supported (it
   holds at the scale the row states);
7. the multiplicity rule (:mod:`mswelu.analysis.family`): Holm over every row that ran a test (a
   pre-registered primary contrast alone), and a row that does not survive it reads **inconclusive**.

Each row states the parameters, tokens and tokens per parameter, the data, tokenizer and text split(s) it was
judged on, its p-value (on the scale where p <= 0.05 decides), its role (primary or exploratory), the
Holm-adjusted p and whether the row survives it, and its minimal detectable effect at 80% power. Every value
is paired by seed within a text split; a study of several splits pools the splits' means
(:mod:`mswelu.analysis.splits`: the interval covers other text).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mswelu import stats
from mswelu.analysis.claims import COMPARABLE_FRACTION, Claim
from mswelu.analysis.curves import budget_pairs, final_scope, paired_convergence
from mswelu.analysis.family import apply_family
from mswelu.analysis.frames import loss_at_fraction, scope_curve
from mswelu.analysis.reader import read_study
from mswelu.analysis.schema import StudyData
from mswelu.analysis.splits import (
    ONE_SPLIT,
    by_split,
    pooled,
    split_count,
    split_labels,
    splits_text,
    unit_values,
    validation_tokens,
)
from mswelu.analysis.tables import params_text as _params_text
from mswelu.analysis.tables import tokens_text
from mswelu.analysis.tuning import LrStatus, lr_status

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
#: the caveat of every figure read off a curve before its end
_ONE_SCHEDULE = "read off one cosine run's curve, not runs trained to that budget"
_TEST_WORDS = {
    "at_least": "at least",
    "at_most": "at most",
    "range": "within a range",
    "equivalent": "equivalent within +-margin (TOST)",
    "not_worse": "not worse than (one-sided)",
}


class _Row:
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

    # ------------------------------------------------------------------ scale
    def comparable(self) -> bool:
        c, f = self.claim, COMPARABLE_FRACTION
        ok_t = not c.scale_tokens or (math.isfinite(self.tokens) and self.tokens >= f * c.scale_tokens)
        ok_p = not c.scale_params or (math.isfinite(self.params) and self.params >= f * c.scale_params)
        return ok_t and ok_p

    def scale_text(self) -> str:
        """What the row was judged on: the scale, the data and tokenizer, the text split(s); and the scale
        the claim was made at, when it names one."""
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

    # ------------------------------------------------------------------ checks before measuring
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
        moved, n_slots = _moved(self.study, self.ours, c.param, c.group)
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

    # ------------------------------------------------------------------ measurements
    def sample(self) -> stats.Sample | None:
        c, study = self.claim, self.study
        if study is None:
            return None
        if c.measure == "gain":
            return self._gain()
        if c.measure == "convergence":
            return self._convergence()
        if c.measure == "loss_at":
            return self._loss_at()
        return self._shape()

    def _gain(self) -> stats.Sample | None:
        c, study = self.claim, self.study
        self.inputs["test_signature"] = _signature(c, self.ours, self.base, c.view)
        if c.view == "tokens":
            ours, base = (
                unit_values(study.runs, self.ours, c.value),
                unit_values(study.runs, self.base, c.value),
            )
            gains = stats.paired_relative_gains(ours, base)
            what = "final"
        else:
            tps, source = study.tokens_per_s()
            flops = study.flops_per_token()
            parts = [
                budget_pairs(curves, self.ours, self.base, c.view, tps, flops, c.value).assign(split=split)
                for split, curves in by_split(study.curves).items()
            ]
            pairs = pd.concat(parts, ignore_index=True)
            ok = pairs.dropna(subset=["ours", "base"])
            gains = {
                (sp, int(s)): (b - o) / b
                for sp, s, o, b in zip(ok.split, ok.seed, ok.ours, ok.base, strict=True)
            }
            view = "wall-clock time" if c.view == "time" else "model FLOPs"
            what = f"at equal {view} ({source} tokens/s; {_ONE_SCHEDULE})"
            f_o, f_b = flops.get(self.ours, math.nan), flops.get(self.base, math.nan)
            if c.view == "flops" and math.isfinite(f_o) and f_o == f_b:  # the equal-token test again
                self.inputs["same_test_as"] = _signature(c, self.ours, self.base, "tokens")
                what += f"; equal FLOPs per token ({f_o:,.0f} each): the equal-token comparison"
            self.inputs["budgets"] = pairs.to_dict("records")
            self._approximation(ok)
            if not gains:
                notes = "; ".join(sorted(set(pairs.note.dropna()) - {""})) or "no curves"
                self.why = f"needs curves of one scope that reach the common budget ({notes})"
                return None
        if not gains:
            self.why = f"needs {self.ours!r} and {self.base!r} runs with the same seeds"
            return None
        self._what = f"lower {c.value} of {self.ours} vs {self.base} {what}, paired by seed"
        return self._pool(gains)

    def _approximation(self, pairs: pd.DataFrame) -> None:
        """Flag a figure read before the end of a run's schedule (``budget_pairs``' ``ours_at``/``base_at``
        below 1): an approximation of the run trained to that budget, shown but not judged."""
        if pairs.empty:
            return
        at = min(float(pairs.ours_at.min()), float(pairs.base_at.min()))
        if at >= 1 - 1e-9:
            return
        who = self.ours if float(pairs.ours_at.min()) <= float(pairs.base_at.min()) else self.base
        view = "wall-clock time" if self.claim.view == "time" else "model FLOPs"
        self.approximation = (
            f"an approximation: {who} is read at {at:.0%} of its cosine schedule, before its learning rate "
            f"annealed; equal {view} needs {who} trained on its own complete schedule to that budget "
            "(schedule-matched runs, not in this study)"
        )

    def _pool(self, values: Mapping[tuple[str, int], float]) -> stats.Sample:
        """The row's sample from ``{(split, seed): value}`` (:func:`~mswelu.analysis.splits.pooled`), the
        values and each split's figure kept in its inputs."""
        self.inputs["values"] = {_unit_label(k): v for k, v in values.items()}
        sample, table = pooled(values)
        if len(table) > 1:
            self.inputs["splits"] = table.to_dict("records")
            self._what += f"; pooled over {len(table)} splits ({splits_text(table, self.claim.relative)})"
        return sample

    def _convergence(self) -> stats.Sample | None:
        c, study = self.claim, self.study
        parts = [
            paired_convergence(curves, self.ours, self.base, c.value).assign(split=split)
            for split, curves in by_split(study.curves).items()
        ]
        table = pd.concat(parts, ignore_index=True)
        self.inputs["crossings"] = table.to_dict("records")
        ok = table[table.bound != "unknown"].dropna(subset=["speedup"])
        if ok.empty:
            notes = "; ".join(sorted(set(table.note) - {""})) or study.missing.get("curves", "none recorded")
            self.why = f"needs evaluation curves of {self.ours} and {self.base} at one scope ({notes})"
            return None
        self.bounds = {
            _unit_label((sp, int(s))): b for sp, s, b in zip(ok.split, ok.seed, ok.bound, strict=True) if b
        }
        scope = str(ok.scope.iloc[0])
        self._what = (
            f"fewer tokens to each seed's own {self.base} final {c.value} ({scope} evaluations), paired"
            f" ({_ONE_SCHEDULE})"
        )
        return self._pool(
            {(sp, int(s)): float(v) for sp, s, v in zip(ok.split, ok.seed, ok.speedup, strict=True)}
        )

    def _loss_at(self) -> stats.Sample | None:
        c, study = self.claim, self.study
        curves = study.curves[study.curves.variant == self.ours]
        values = {}
        for split, part in by_split(curves).items():
            for seed, curve in part.groupby("seed"):
                total = float(curve.tokens.max())
                scopes = [final_scope(curve), *curve.scope.dropna().unique()]
                for s in dict.fromkeys(scopes):
                    v = loss_at_fraction(scope_curve(curve, s), c.fraction, y=c.value, total=total)
                    if math.isfinite(v):
                        values[(split, int(seed))] = v
                        break
        if not values:
            lacks = study.missing.get("curves", "none recorded")
            self.why = (
                f"needs an evaluation curve of {self.ours} reaching {c.fraction:.0%} of training ({lacks})"
            )
            return None
        self._what = f"{c.value} at {c.fraction:.0%} of training = {tokens_text(c.fraction * self.tokens)}"
        return self._pool(values)

    def _shape(self) -> stats.Sample | None:
        c, study = self.claim, self.study
        where = f"{c.group} " if c.group else ""
        moved = c.measure == "shape_moved"
        self._what = (
            f"mean |{c.param} - init| over {where}slots" if moved else f"mean {where}{c.param}"
        ) + f" of {self.ours} after {tokens_text(self.tokens)}"
        sh = study.shapes
        sh = sh[(sh.variant == self.ours) & (sh.param == c.param)] if not sh.empty else sh
        if c.group and not sh.empty:
            sh = sh[sh.group == c.group]
        if not sh.empty:
            dev = (sh.value - sh.init).abs() if moved else sh.value
            per_seed = dev.groupby([split_labels(sh), sh.seed]).mean()
            return self._pool({(str(sp), int(s)): float(v) for (sp, s), v in per_seed.items()})
        summ = study.shape_summary
        hit = (
            summ[
                (summ.variant == self.ours)
                & (summ.param == c.param)
                & (summ.group == c.group)
                & (summ.measure == ("deviation" if moved else "value"))
            ]
            if not summ.empty
            else summ
        )
        if not hit.empty:
            r = hit.iloc[0]
            self.inputs["summary"] = {"mean": float(r["mean"]), "sd": float(r["sd"]), "n": int(r["n"])}
            return stats.Sample(float(r["mean"]), float(r["sd"]), int(r["n"]))
        has_any = (
            not study.shapes[study.shapes.variant == self.ours].empty if not study.shapes.empty else False
        )
        lacks = study.missing.get("shapes", "none recorded")
        self.why = (
            f"the {self.ours} runs have no {where}{c.param}"
            if has_any
            else f"needs the final {c.param} of {self.ours} runs per slot ({lacks})"
        )
        return None

    # ------------------------------------------------------------------ rules after the test
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


def _signature(claim: Claim, ours: str, base: str, view: str) -> str:
    """What makes two rows the same test: the pair, the figure, the test and effect, the view."""
    return f"{ours}|{base}|{claim.value}|{claim.test}|{claim.effect}|{view}"


def _unit_label(key: tuple[str, int]) -> str:
    """A model's label in a row's inputs and notes: its seed, or ``split/seed`` in a study of splits."""
    split, seed = key
    return f"{split}/{seed}" if split else str(seed)


def _claim_bounds(claim: Claim) -> tuple[float, float]:
    e = claim.effect
    return {
        "at_least": lambda: (float(e), math.inf),
        "at_most": lambda: (-math.inf, float(e)),
        "range": lambda: (float(e[0]), float(e[1])),
        "equivalent": lambda: (-float(e), float(e)),
        "not_worse": lambda: (-float(e), math.inf),
    }[claim.test]()


def _moved(study: StudyData, variant: str, param: str, group: str) -> tuple[float, int]:
    """Mean |value - init| over ``variant``'s learnable ``param`` slots (of ``group``) and seeds, and the
    number of such slot values; from a summary when the study recorded only that."""
    sh = study.shapes
    if not sh.empty:
        sh = sh[(sh.variant == variant) & (sh.param == param) & sh.learnable.astype(bool)]
        if group:
            sh = sh[sh.group == group]
        if not sh.empty:
            return float((sh.value - sh.init).abs().mean()), len(sh)
    summ = study.shape_summary
    if not summ.empty:
        hit = summ[(summ.variant == variant) & (summ.param == param) & (summ.group == group)]
        if not hit.empty and pd.notna(hit.mean_abs_dev.iloc[0]):
            return float(hit.mean_abs_dev.iloc[0]), int(hit.n.iloc[0])
    return math.nan, 0


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
    """Every claim judged on ``study`` (see the module docstring), one row each with :data:`COLUMNS`;
    ``counts`` feeds the ``count`` measures. The lr rule reads ``study.lr``; a study without a sweep leaves
    verdicts that need tuned variants inconclusive."""
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
    """Every verdict of a study recomputed from its ``metrics.json`` alone (the specs it recorded, or the
    seed claims for a file of the first study's schema), with the lr statuses recomputed from its sweep."""
    from mswelu.analysis.claims import SEED_CLAIMS

    study = read_study(source, companions)
    if not study.sweep.empty:
        study.lr = lr_status(study.sweep, study.context.get("lr_grid"))
    return evaluate_claims(study.claims or SEED_CLAIMS, study)
