"""A study's data and the schema of its ``metrics.json``: one writer (:func:`study_metrics`) and one reader
(:func:`mswelu.analysis.reader.read_study`), so that every verdict can be recomputed from the file alone.
Under ``metrics["study"]`` (schema :data:`SCHEMA`): ``context``, ``runs``, ``curves``, ``shapes``,
``sweep``/``lr``, ``throughput``, ``units`` (bootstrap), ``matched`` (schedule-matched equal-time runs,
:mod:`.equal_time`), ``claims``/``rows`` and ``counts``; a study of several text splits has a ``split`` column
in its runs, curves, shapes, units and matched runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mswelu.analysis.bootstrap import UNIT_COLUMNS, bootstrap_units
from mswelu.analysis.claims import Claim, resolve
from mswelu.analysis.curves import CURVE_COLUMNS
from mswelu.analysis.equal_time import MATCHED_COLUMNS
from mswelu.analysis.shapes import initial_value
from mswelu.analysis.tuning import SWEEP_COLUMNS, LrStatus, lr_status

__all__ = [
    "RUN_COLUMNS",
    "SCHEMA",
    "SHAPE_COLUMNS",
    "SUMMARY_COLUMNS",
    "THROUGHPUT_COLUMNS",
    "StudyData",
    "parse_study",
    "study_data",
    "study_metrics",
]

SCHEMA = 2
RUN_COLUMNS = [
    "variant",
    "seed",
    "lr",
    "val_loss",
    "val_bpb",
    "train_loss",
    "tokens",
    "params",
    "tokens_per_s",
    "wall_time_s",
    "run",
]
SHAPE_COLUMNS = [
    "variant",
    "seed",
    "slot",
    "group",
    "layer",
    "activation",
    "param",
    "value",
    "init",
    "learnable",
]
#: tokens/s is the median of the interleaved rounds; its spread (slowest, fastest, every round) goes with it
THROUGHPUT_COLUMNS = [
    "variant",
    "tokens_per_s",
    "flops_per_token",
    "tokens_per_s_min",
    "tokens_per_s_max",
    "rounds",
]
#: shape figures of a study that recorded only summaries over seeds (the first study): per variant, slot
#: group (``""``: every slot) and parameter, the mean over seeds of the per-seed mean value, its sd over
#: seeds, the seeds, and the mean |value - init|; ``measure`` says which of the two the mean/sd describe
SUMMARY_COLUMNS = ["variant", "group", "param", "measure", "mean", "sd", "n", "mean_abs_dev"]


def _frame(records: Any, columns: Sequence[str]) -> pd.DataFrame:
    df = pd.DataFrame(list(records or []))
    for c in columns:
        if c not in df.columns:
            df[c] = None
    return df[list(columns) + [c for c in df.columns if c not in columns]]


@dataclass
class StudyData:
    """Everything a study's verdicts are computed from (see the module docstring)."""

    context: dict[str, Any] = field(default_factory=dict)
    runs: pd.DataFrame = field(default_factory=lambda: _frame([], RUN_COLUMNS))
    curves: pd.DataFrame = field(default_factory=lambda: _frame([], CURVE_COLUMNS))
    shapes: pd.DataFrame = field(default_factory=lambda: _frame([], SHAPE_COLUMNS))
    sweep: pd.DataFrame = field(default_factory=lambda: _frame([], SWEEP_COLUMNS))
    lr: dict[str, LrStatus] = field(default_factory=dict)
    throughput: pd.DataFrame = field(default_factory=lambda: _frame([], THROUGHPUT_COLUMNS))
    units: pd.DataFrame = field(default_factory=lambda: _frame([], ["variant", "seed", *UNIT_COLUMNS]))
    shape_summary: pd.DataFrame = field(default_factory=lambda: _frame([], SUMMARY_COLUMNS))
    matched: pd.DataFrame = field(default_factory=lambda: _frame([], MATCHED_COLUMNS))
    claims: tuple[Claim, ...] = ()
    rows: pd.DataFrame | None = None
    missing: dict[str, str] = field(default_factory=dict)  # what the file lacks -> why (older schemas)

    def variant(self, role: str) -> str:
        """The variant a role of ``compare`` names (or ``role`` itself)."""
        return resolve(role, self.context.get("compare"))

    def tokens_per_s(self) -> tuple[dict[str, float], str]:
        """Training tokens/s per variant and where they come from: the side-by-side measurement, or else
        each variant's runs' own median (measured at other times, under other loads: flagged)."""
        t = self.throughput.dropna(subset=["tokens_per_s"]) if not self.throughput.empty else self.throughput
        if not t.empty:
            return {str(v): float(x) for v, x in zip(t.variant, t.tokens_per_s, strict=True)}, "side by side"
        own = self.runs.dropna(subset=["tokens_per_s"]).groupby("variant").tokens_per_s.median()
        return {str(v): float(x) for v, x in own.items()}, "each run's own (not measured side by side)"

    def flops_per_token(self) -> dict[str, float]:
        t = (
            self.throughput.dropna(subset=["flops_per_token"])
            if not self.throughput.empty
            else self.throughput
        )
        return {str(v): float(x) for v, x in zip(t.variant, t.flops_per_token, strict=True)}


def shapes_of(variant: str, seed: int, run: Any) -> list[dict[str, Any]]:
    """A run's final shape values as :data:`SHAPE_COLUMNS` rows, placed by its slot records."""
    rows = []
    slots = run.slots
    for param in run.shape_params():
        for name, value in run.final_shape(param).items():
            slot = slots.get(name)
            if slot is None:
                continue
            rows.append(
                {
                    "variant": variant,
                    "seed": int(seed),
                    "slot": name,
                    "group": slot.group,
                    "layer": slot.layer,
                    "activation": slot.activation,
                    "param": param,
                    "value": float(value),
                    "init": initial_value(slot, param),
                    "learnable": param in slot.learnable,
                }
            )
    return rows


def study_data(
    results: pd.DataFrame,
    curves: pd.DataFrame,
    runs: Mapping[str, Any],
    context: Mapping[str, Any],
    sweep: pd.DataFrame | None = None,
    throughput: pd.DataFrame | None = None,
    matched: pd.DataFrame | None = None,
) -> StudyData:
    """A study from notebook 05's results, curves, runs, sweep, side-by-side throughput, schedule-matched
    equal-time runs and context."""
    shapes, units = [], []
    for r in results.itertuples():
        run = runs.get(r.run)
        if run is None:
            continue
        split = getattr(r, "split", None)  # a study of several text splits labels each model's split
        shapes += [{**row, "split": split} if split else row for row in shapes_of(r.variant, r.seed, run)]
        u = getattr(run, "units", None)  # a ledger record keeps its units; a run folder its documents
        if u is None:
            docs = getattr(run, "documents", None)
            u = bootstrap_units(docs.get("documents"), docs.get("windows")) if docs else None
        if u is not None and not u.empty:
            units.append(u.assign(variant=r.variant, seed=int(r.seed), **({"split": split} if split else {})))
    curve_df = curves.rename(columns={"val_scope": "scope"}) if curves is not None else pd.DataFrame()
    sweep_df = sweep if sweep is not None else _frame([], SWEEP_COLUMNS)
    ctx = dict(context)
    return StudyData(
        context=ctx,
        runs=_frame(results.to_dict("records"), RUN_COLUMNS),
        curves=_frame(curve_df.to_dict("records"), CURVE_COLUMNS),
        shapes=_frame(shapes, SHAPE_COLUMNS),
        sweep=_frame(sweep_df.to_dict("records"), SWEEP_COLUMNS),
        lr=lr_status(sweep_df, ctx.get("lr_grid")) if not sweep_df.empty else {},
        throughput=_frame(
            throughput[[c for c in THROUGHPUT_COLUMNS if c in throughput.columns]].to_dict("records")
            if throughput is not None
            else [],
            THROUGHPUT_COLUMNS,
        ),
        units=_frame(
            pd.concat(units, ignore_index=True).to_dict("records") if units else [],
            ["variant", "seed", *UNIT_COLUMNS],
        ),
        matched=_frame(matched.to_dict("records") if matched is not None else [], MATCHED_COLUMNS),
    )


def _clean(x: Any) -> Any:
    """JSON-safe: NaN and inf become None, numpy scalars Python numbers, tuples lists."""
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _records(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    if df is None or df.empty:
        return []
    return [_clean(r) for r in df.astype(object).where(df.notna(), None).to_dict("records")]


def study_metrics(
    study: StudyData, rows: pd.DataFrame, claims: Sequence[Claim], counts: pd.DataFrame | None = None
) -> dict[str, Any]:
    """A study's ``metrics.json`` figures: summaries and everything its verdicts come from."""
    runs = study.runs
    means = runs.groupby("variant", sort=False)[["val_loss", "val_bpb"]].mean() if not runs.empty else None
    main = study.variant("swelu")
    out: dict[str, Any] = {}
    if means is not None:
        out.update({f"{v}_val_loss": float(m) for v, m in means.val_loss.items()})
        if main in means.index:
            out.update(val_loss=float(means.loc[main, "val_loss"]), val_bpb=float(means.loc[main, "val_bpb"]))
        out.update(tokens=int(runs.tokens.max()), models=len(runs))
    out["claims"] = dict(zip(rows["claim"], rows["verdict"], strict=True)) if len(rows) else {}
    if counts is not None and len(counts):
        out["counts"] = {
            r["claim"]: {"count": r["estimate"], "verdict": r["verdict"]} for r in counts.to_dict("records")
        }
    out["study"] = {
        "schema": SCHEMA,
        "context": _clean(study.context),
        "runs": _records(study.runs),
        "curves": _records(study.curves),
        "shapes": _records(study.shapes),
        "sweep": _records(study.sweep),
        "lr": {v: _clean(s.to_dict()) for v, s in study.lr.items()},
        "throughput": _records(study.throughput),
        "units": _records(study.units),
        "matched": _records(study.matched),
        "claims": [_clean(c.to_dict()) for c in claims],
        "rows": _records(rows),
        "counts": _records(counts),
    }
    return _clean(out)


def parse_study(doc: Mapping[str, Any]) -> StudyData:
    """A :class:`StudyData` from a schema-2 ``metrics.json`` (its dict, or its ``metrics``)."""
    metrics = doc.get("metrics", doc)
    s = metrics["study"]
    if int(s.get("schema", 0)) != SCHEMA:
        raise ValueError(f"study schema {s.get('schema')!r} is not {SCHEMA}: a newer mswelu wrote it")

    def num(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
        for c in cols:
            if c in df.columns:
                df[c] = pd.to_numeric(df[c], errors="coerce")
        return df

    rows = _frame(s.get("rows"), [])
    return StudyData(
        context=dict(s.get("context") or {}),
        runs=num(_frame(s.get("runs"), RUN_COLUMNS), RUN_COLUMNS[2:-1]),
        curves=num(_frame(s.get("curves"), CURVE_COLUMNS), ["step", "tokens", "val_loss", "val_bpb"]),
        shapes=num(_frame(s.get("shapes"), SHAPE_COLUMNS), ["value", "init"]),
        sweep=num(_frame(s.get("sweep"), SWEEP_COLUMNS), ["lr", "tune_val_loss"]),
        lr={v: LrStatus.from_dict(d) for v, d in (s.get("lr") or {}).items()},
        throughput=num(_frame(s.get("throughput"), THROUGHPUT_COLUMNS), THROUGHPUT_COLUMNS[1:-1]),
        units=num(_frame(s.get("units"), ["variant", "seed", *UNIT_COLUMNS]), ["loss", "tokens", "bytes"]),
        claims=tuple(Claim.from_dict(c) for c in s.get("claims") or ()),
        rows=rows if not rows.empty else None,
        matched=num(_frame(s.get("matched"), MATCHED_COLUMNS), MATCHED_COLUMNS[3:-1]),
    )
