"""A comparison study assembled in one place: notebook 05 after its runs and :func:`study_from_records` both
call :func:`assemble_study`, so they give the same context, table, verdicts and ``metrics.json``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mswelu import analysis
from mswelu.analysis.claims import Claim
from mswelu.analysis.equal_time import TimeMatch, time_matches, time_pairs
from mswelu.analysis.schema import StudyData
from mswelu.base.run_names import run_name
from mswelu.workbook.compare import _curve_frame, _result_row, matched_row, time_run_name
from mswelu.workbook.ledger import REBUILD, Ledger, LedgerError, read_ledger_json
from mswelu.workbook.profiles import data_label
from mswelu.workbook.record_checks import check_study_records, split_labels
from mswelu.workbook.sweep import sweep_row

__all__ = ["Study", "assemble_study", "study_from_records", "time_plan"]


@dataclass
class Study:
    """A comparison: its study data, claims, seeds aggregated, results table and each variant's lr."""

    data: StudyData
    claims: tuple[Claim, ...]
    summary: pd.DataFrame
    table: pd.DataFrame
    lr: dict[str, float] = field(default_factory=dict)

    def judge(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(the claims judged on the study, the seeds' counts checked on the architecture they specify)."""
        return analysis.evaluate_claims(self.claims, self.data), analysis.architecture_claims()

    def compute_table(self) -> pd.DataFrame:
        """Equal tokens, equal wall-clock time and equal model FLOPs, against the ``silu`` role."""
        d = self.data
        reference = d.context["compare"]["silu"]
        return analysis.equal_compute_table(
            d.runs, d.curves, *d.tokens_per_s()[:1], d.flops_per_token(), reference=reference
        )

    def metrics(self, judged: pd.DataFrame, counts: pd.DataFrame) -> dict[str, Any]:
        """The study's ``metrics.json`` figures, with counts, lrs and a summary per variant."""
        metrics = analysis.study_metrics(self.data, judged, self.claims, counts=counts)
        variants = {
            v: {
                "params": int(r.params_mean),
                "seeds": int(r.n),
                "lr": self.lr[v],
                "val_bpb_mean": r.val_bpb_mean,
                "val_bpb_sd": r.val_bpb_std,
                "val_loss_mean": r.val_loss_mean,
                "val_loss_sd": r.val_loss_std,
            }
            for v, r in self.summary.iterrows()
        }
        metrics.update({"lr": self.lr, "variants": variants})
        return metrics


def _compare(params: Mapping[str, Any]) -> dict[str, str]:
    return {"shapes": "swelu", **params.get("compare", {})}


def time_plan(params: Mapping[str, Any], throughput: pd.DataFrame) -> list[TimeMatch]:
    """The schedule-matched equal-time runs notebook 05's ``params`` ask for (``equal_time``): the slower of
    each pair its claims judge at equal wall-clock time, for the steps their side-by-side ``throughput``
    fits (none without ``equal_time``)."""
    if not params.get("equal_time"):
        return []
    claims = analysis.claim_set(params.get("claims") or ["seed", "compute"])
    variants = set(params["variants"])
    pairs = [p for p in time_pairs(claims, _compare(params)) if set(p) <= variants]
    return time_matches(pairs, throughput, int(params["max_steps"]))


def assemble_study(
    name: str,
    params: Mapping[str, Any],
    results: pd.DataFrame,
    curves: pd.DataFrame,
    runs: Mapping[str, Any],
    lrs: Mapping[str, float],
    sweep: pd.DataFrame | None,
    throughput: pd.DataFrame,
    matched: pd.DataFrame | None = None,
) -> Study:
    """The :class:`Study` from notebook 05's parameters, results, curves, runs, lrs, sweep, throughput and
    schedule-matched equal-time runs."""
    context = dict(
        name=name,
        data=data_label(params.get("splits") or params.get("data")),
        tokenizer=params.get("tokenizer", "gpt2"),
        seq_len=params["seq_len"],
        batch_size=params["batch_size"],
        max_steps=params["max_steps"],
        seeds=list(params["seeds"]),
        lr_grid=list(params.get("lr_grid") or []),
        compare=_compare(params),
        primary=params.get("primary", ""),
    )
    if params.get("splits"):
        context["splits"] = sorted(set(results.split))
    speed = throughput[["variant", "tokens_per_s", "flops_per_token"]]
    data = analysis.study_data(results, curves, runs, context, sweep, throughput, matched)
    summary = analysis.aggregate_seeds(results, values=("val_loss", "val_bpb", "params"))
    claims = analysis.claim_set(params.get("claims") or ["seed", "compute"])
    return Study(data, claims, summary, _results_table(data, summary, speed, lrs), dict(lrs))


def _results_table(
    data: StudyData, summary: pd.DataFrame, speed: pd.DataFrame, lrs: Mapping[str, float]
) -> pd.DataFrame:
    """One row per variant: val bpb (mean ± sd), the seed and text intervals, size, side-by-side speed, lr."""
    intervals = analysis.bpb_intervals(data.runs, data.units).set_index("variant")
    speed = speed.set_index("variant")
    return pd.DataFrame(
        {
            "val bpb": [
                analysis.mean_spread(m, s)
                for m, s in zip(summary.val_bpb_mean, summary.val_bpb_std, strict=True)
            ],
            "seed 95% CI": [f"[{r['seed lo']:.3f}, {r['seed hi']:.3f}]" for _, r in intervals.iterrows()],
            "text 95% CI": [
                f"[{r['text lo']:.3f}, {r['text hi']:.3f}] ({r['text units']})" if r["text units"] else ""
                for _, r in intervals.iterrows()
            ],
            "params (M)": (summary.params_mean / 1e6).round(2),
            "tokens/s (side by side)": speed.tokens_per_s.round(0),
            "GFLOP/token": (speed.flops_per_token / 1e9).round(4),
            "lr": pd.Series(dict(lrs)),
            "lr bracketed": pd.Series(
                {v: "yes" if s.interior else f"no ({s.reason})" for v, s in data.lr.items()}
            ),
            "seeds": summary.n,
        },
        index=summary.index,
    )


def study_from_records(study: str, root: str | os.PathLike[str] | None = None) -> Study:
    """A committed study rebuilt from its committed files alone; a ValueError names a missing record."""
    import yaml

    from mswelu.base.paths import project_root

    root = Path(root) if root is not None else project_root()
    params = yaml.safe_load((root / "notebooks" / "studies" / f"{study}.yaml").read_text())
    ledger = Ledger(root / "reports" / "studies" / study / "runs")
    records = ledger.records()
    check_study_records(study, params, records, ledger.folder)
    rows, curves, runs, lrs = [], [], {}, {}
    for label in split_labels(params):
        for variant in params["variants"]:
            for seed in params["seeds"]:
                name = run_name(study, label, variant, seed=seed)
                if name not in records:
                    raise ValueError(f"study {study!r} has no record of {name} in {ledger.folder}")
                record = runs[name] = records[name]
                lrs[variant] = float(record.config["lr"])
                row = _result_row(record, variant, int(seed), lrs[variant], name)
                rows.append(row if label is None else {**row, "split": label})
                ev = record.eval.assign(variant=variant, seed=int(seed))
                if not ev.empty:
                    curves.append(ev if label is None else ev.assign(split=label))
    sweep = [
        sweep_row(r.final_metrics()["final_val_loss"], r.variant, float(r.config["lr"]), n)
        for n, r in records.items()
        if r.kind == "sweep"
    ]
    speeds = ledger.folder.parent / "throughput.json"
    throughput = Ledger.throughput_table(speeds, read_ledger_json(speeds))
    if not {"variant", "tokens_per_s", "flops_per_token"} <= set(throughput.columns):
        raise LedgerError(f"{speeds} lacks the columns variant, tokens_per_s, flops_per_token: {REBUILD}")
    sweep_frame = pd.DataFrame(sweep) if sweep else None
    matched = _matched_records(study, params, records, throughput, ledger.folder)
    return assemble_study(
        study, params, pd.DataFrame(rows), _curve_frame(curves), runs, lrs, sweep_frame, throughput, matched
    )


def _matched_records(
    study: str, params: Mapping[str, Any], records: Mapping[str, Any], throughput: pd.DataFrame, folder: Path
) -> pd.DataFrame | None:
    """The schedule-matched runs' rows from their records, each trained for the steps the committed
    throughput gives (else refused: a rerun trains what the measurement now asks for)."""
    rows = []
    for label in split_labels(params):
        for match in time_plan(params, throughput):
            for seed in params["seeds"]:
                name = time_run_name(study, label, match.slower, seed)
                if name not in records:
                    raise ValueError(f"study {study!r} has no record of {name} in {folder}")
                trained = int(records[name].config["max_steps"])
                if trained != match.steps:
                    raise LedgerError(
                        f"{folder / f'{name}.json'} trained {trained} steps; the study's throughput.json "
                        f"fits {match.steps} ({REBUILD})"
                    )
                rows.append(matched_row(records[name], match, int(seed), label, name))
    return pd.DataFrame(rows) if rows else None
