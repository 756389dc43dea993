"""The lr sweep of a comparison (notebook 05): every variant the same grid and budget on a tuning split that
never scores the reported validation, extended until each optimum is bracketed, with more seeds at the best
lr and its neighbours where asked."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mswelu import analysis
from mswelu.analysis.tuning import LrStatus
from mswelu.base.run_names import parse_run_name, run_name
from mswelu.data import load_meta, prepare, resolve_source, split_documents, tokenizer_name
from mswelu.training.variants import learned_source, with_learned_shape
from mswelu.workbook.compare import _sources_first, run_or_record, variant_config
from mswelu.workbook.ledger import Ledger
from mswelu.workbook.prologue import require_list
from mswelu.workbook.reuse import as_run

__all__ = ["bracketed_lr_sweep", "lr_sweep", "sweep_row", "tuning_data"]


def sweep_row(loss: float | None, variant: str, lr: float, name: str) -> dict[str, Any]:
    loss = math.inf if loss is None else float(loss)
    return {
        "variant": variant,
        "lr": float(lr),
        "tune_val_loss": loss,
        "diverged": not math.isfinite(loss),
        "run": name,
        "seed": parse_run_name(name).seed or 0,  # a sweep's first seed (0) is not in its points' names
    }


def tuning_data(data: str | os.PathLike[str], max_tries: int = 20) -> str:
    """A dataset for choosing hyperparameters that never scores the reported validation split: same source
    and tokenizer, the next split seed whose validation documents share none with ``data``'s (a fold gets its
    scheme's tuning fold; a source split by hash width, the code corpus or a stream, the next block of the
    same order, disjoint by construction: another seed's 5% would almost surely share some of the reported
    5%), prepared once beside ``data`` as ``<name>-tune``."""
    data = Path(data)
    meta = load_meta(data)
    reported = split_documents(data)
    out = data.with_name(f"{data.name}-tune")
    fold = meta.get("fold")

    def split(offset: int, **fold_args: int) -> None:
        prepare(
            meta["source"],
            out=out,
            tokenizer=tokenizer_name(data, meta),
            val_fraction=float(meta["val_fraction"]),
            max_tokens=meta.get("max_tokens"),
            seed=int(meta["seed"]) + offset,
            text_field=meta.get("text_field", "text"),
            txt_sample_by=meta.get("txt_sample_by", "document"),
            progress=False,
            **fold_args,
        )

    if fold:  # the scheme's own tuning split: disjoint from every fold's validation by construction
        split(0, folds=int(fold["folds"]), fold=0)
        return str(out)
    if not resolve_source(meta["source"]).finite:  # validation is block 0 of the hash order: take block 1
        split(0, folds=1, fold=1)
        return str(out)
    for offset in range(1, max_tries + 1):
        split(offset)
        if not reported & split_documents(out):
            return str(out)
    raise ValueError(
        f"no split seed among the next {max_tries} gives {data} a validation split disjoint from its own; "
        "use a larger corpus or val_fraction"
    )


def lr_sweep(
    base: dict[str, Any],
    variants: Sequence[str],
    lrs: Sequence[float],
    prefix: str,
    seed: int = 0,
    reuse: bool = True,
    ledger: Ledger | None = None,
    evaluations: int | None = None,
) -> pd.DataFrame:
    """The same lr grid for every variant on :func:`tuning_data`: one row per point (the choice of each
    variant's lr is :func:`mswelu.analysis.lr_status`'s, from each point's final evaluation alone, so
    ``evaluations`` may cut a point's whole-split evaluations to that many; default: the base's)."""
    require_list("variants", variants)
    if evaluations is not None:
        if not (isinstance(evaluations, int) and evaluations >= 1):
            raise ValueError(f"sweep evaluations must be a whole number >= 1, got {evaluations!r}")
        base = {**base, "eval_every": max(1, int(base["max_steps"]) // evaluations)}
    require_list("lr_grid", lrs)
    if not lrs or any(not isinstance(x, (int, float)) or x <= 0 for x in lrs):
        raise ValueError(f"lrs must be a non-empty list of positive numbers, got {lrs!r}")
    tune = tuning_data(base["data"])
    rows = []
    named = None if seed == 0 else seed  # the first seed's points keep their names from before seeds
    for variant in _sources_first(variants, require_sources=False):
        for lr in lrs:
            name = run_name(prefix, "tune", variant, lr=lr, seed=named)
            cfg = as_run(variant_config(base, variant), name, data=tune, lr=float(lr), seed=int(seed))
            try:
                if source := learned_source(variant):  # the source's point at the same lr (trained if new)
                    point = run_name(prefix, "tune", source, lr=lr, seed=named)
                    source_cfg = as_run(
                        variant_config(base, source), point, data=tune, lr=float(lr), seed=seed
                    )
                    from_run = run_or_record(source_cfg, point, source, int(seed), "sweep", True, ledger)
                    if source not in variants:  # a point the source's own grid lacked is one of its points
                        rows.append(sweep_row(from_run.final_metrics()["final_val_loss"], source, lr, point))
                    cfg = with_learned_shape(cfg, from_run)
                run = run_or_record(cfg, name, variant, int(seed), "sweep", reuse, ledger)
                loss = run.final_metrics()["final_val_loss"]
            except FloatingPointError:  # the trainer stops a run whose steps keep going non-finite
                loss = None
            rows.append(sweep_row(loss, variant, lr, name))
    return pd.DataFrame(rows)


def bracketed_lr_sweep(
    base: dict[str, Any],
    variants: Sequence[str],
    grid: Sequence[float],
    prefix: str,
    seed: int = 0,
    reuse: bool = True,
    ledger: Ledger | None = None,
    seeds: int = 1,
    evaluations: int | None = None,
) -> tuple[pd.DataFrame, dict[str, LrStatus]]:
    """:func:`lr_sweep`, extended while an optimum sits at an edge (an ``-as-learned`` variant's new point
    trains its source's point at that lr too); with ``seeds`` > 1 the best lr and the tried lrs next to it
    run ``seeds`` seeds (``seed``, ``seed + 1``, ...: a point of a later seed is named with it) and each lr
    is judged by its mean over seeds, until the best is bracketed and seeded; ``evaluations``: each point's
    whole-split evaluations (:func:`lr_sweep`). Returns (points; ``LrStatus``)."""
    if not (isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"sweep seeds must be a whole number >= 1, got {seeds!r}")
    every = list(range(seed, seed + seeds))
    sweep = lr_sweep(base, variants, grid, prefix, seed, reuse, ledger, evaluations)
    while True:
        todo = [(v, more, seed) for v, more in analysis.extend_lr_grid(sweep, grid).items()]
        if not todo and seeds > 1:
            points = analysis.unseeded_points(sweep, grid, every)
            todo = [(v, [lr], s) for (v, lr), missing in points.items() for s in missing]
        if not todo:
            break
        for variant, more, one in todo:
            rows = lr_sweep(base, [variant], more, prefix, one, reuse, ledger, evaluations)
            sweep = pd.concat([sweep, rows], ignore_index=True).drop_duplicates("run", ignore_index=True)
    status = analysis.lr_status(sweep, grid)
    failed = [v for v, s in status.items() if not math.isfinite(s.lr)]
    if failed:
        raise ValueError(
            f"every lr tried diverged for {failed} ({', '.join(f'{x:g}' for x in status[failed[0]].tried)}) "
            "down to the sweep's bound: lower the grid"
        )
    return sweep, status
