"""What a claims row measures per model (a seed within a text split): paired gain at equal tokens, time or
FLOPs, paired convergence, a value at a fraction of training, or a shape value, pooled into one sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from mswelu.analysis.claims import Claim
from mswelu.analysis.curves import budget_pairs, final_scope, paired_convergence
from mswelu.analysis.frames import loss_at_fraction, scope_curve
from mswelu.analysis.schema import StudyData
from mswelu.analysis.splits import by_split, pooled, split_labels, splits_text, unit_values
from mswelu.analysis.tables import tokens_text
from mswelu.base import stats

__all__ = ["ONE_SCHEDULE", "Measurement", "moved"]

#: the caveat of every figure read off a curve before its end
ONE_SCHEDULE = "read off one cosine run's curve, not runs trained to that budget"


class Measurement:
    """The measuring half of a claims row: reads ``claim``, ``study``, ``ours``, ``base``; fills ``inputs``,
    ``why`` (what is missing), ``bounds`` (censored seeds) and ``approximation``."""

    claim: Claim
    study: StudyData | None
    ours: str
    base: str
    inputs: dict[str, Any]
    why: str
    bounds: dict[str, str]
    approximation: str
    tokens: float
    _what: str

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
        self.inputs["test_signature"] = signature(c, self.ours, self.base, c.view)
        if c.view == "tokens":
            ours, base = (
                unit_values(study.runs, self.ours, c.value),
                unit_values(study.runs, self.base, c.value),
            )
            gains = stats.paired_relative_gains(ours, base)
            what = "final"
        elif c.view == "time" and (matched := self._time_matched()) is not None:
            gains, what = matched
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
            what = f"at equal {view} ({source} tokens/s; {ONE_SCHEDULE})"
            f_o, f_b = flops.get(self.ours, math.nan), flops.get(self.base, math.nan)
            if c.view == "flops" and math.isfinite(f_o) and f_o == f_b:  # the equal-token test again
                self.inputs["same_test_as"] = signature(c, self.ours, self.base, "tokens")
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

    def _time_matched(self) -> tuple[dict[tuple[str, int], float], str] | None:
        """Paired gains at equal wall-clock time from schedule-matched runs (:mod:`.equal_time`): the slower
        variant's own complete schedule over the faster one's time; None where the study has none."""
        c, m = self.claim, self.study.matched
        if m.empty:
            return None
        mine = m[
            ((m.variant == self.ours) & (m.matched_to == self.base))
            | ((m.variant == self.base) & (m.matched_to == self.ours))
        ]
        if mine.empty:
            return None
        first = mine.iloc[0]
        slow, fast = str(first.variant), str(first.matched_to)
        short = unit_values(mine, slow, c.value)
        full = unit_values(self.study.runs, fast, c.value)
        ours, base = (short, full) if slow == self.ours else (full, short)
        steps, lo, hi = int(first.steps), int(first.steps_lo), int(first.steps_hi)
        full_steps = self.study.context.get("max_steps", "all")
        self.inputs["time_matched"] = {
            "slower": slow, "faster": fast, "ratio": float(first.ratio), "steps": steps, "steps_lo": lo,
            "steps_hi": hi, "full_steps": full_steps,
        }  # fmt: skip
        spread = f"{lo}-{hi} steps" if lo != hi else "no other step count"
        what = (
            f"at equal wall-clock time ({slow} trained {steps} of {full_steps} steps on its own complete "
            f"schedule: {fast}'s time at their side-by-side tokens/s ratio {float(first.ratio):.3f}; the "
            f"ratio's interquartile range over the interleaved rounds allows {spread})"
        )
        return stats.paired_relative_gains(ours, base), what

    def _approximation(self, pairs: pd.DataFrame) -> None:
        """Flag a figure read before the end of a run's schedule: shown, not judged."""
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
        """The row's sample from ``{(split, seed): value}``, kept in its inputs with each split's
        figure."""
        self.inputs["values"] = {unit_label(k): v for k, v in values.items()}
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
            unit_label((sp, int(s))): b for sp, s, b in zip(ok.split, ok.seed, ok.bound, strict=True) if b
        }
        scope = str(ok.scope.iloc[0])
        self._what = (
            f"fewer tokens to each seed's own {self.base} final {c.value} ({scope} evaluations), paired"
            f" ({ONE_SCHEDULE})"
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


def signature(claim: Claim, ours: str, base: str, view: str) -> str:
    """What makes two rows the same test: the pair, the figure, the test and effect, the view."""
    return f"{ours}|{base}|{claim.value}|{claim.test}|{claim.effect}|{view}"


def unit_label(key: tuple[str, int]) -> str:
    """A model's label in a row's inputs and notes: its seed, or ``split/seed`` in a study of splits."""
    split, seed = key
    return f"{split}/{seed}" if split else str(seed)


def moved(study: StudyData, variant: str, param: str, group: str) -> tuple[float, int]:
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
