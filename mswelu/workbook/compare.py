"""Comparisons (notebook 05): every variant x seed on the same data and token budget, each at the lr it
won in the same sweep on a tuning split, and a study's runs read back by variant and seed (notebook 04)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mswelu.data import load_meta, prepare, split_documents, tokenizer_name
from mswelu.paths import runs_dir
from mswelu.run_names import parse_run_name, run_name
from mswelu.runs import SUMMARY, RunData, list_runs, load_run
from mswelu.train_config import TrainConfig, merge_overrides
from mswelu.variants import variant_overrides
from mswelu.workbook.prologue import require_list
from mswelu.workbook.reuse import as_run, train_or_load

__all__ = ["lr_sweep", "run_variants", "study_runs", "tuning_data", "variant_config"]


def variant_config(base: dict[str, Any], variant: str) -> dict[str, Any]:
    """``base`` (a TrainConfig dict on one of our presets) turned into ``variant``: the variant's
    settings on top, its ``model`` settings merged over the base's (a profile's shape, e.g. the dense
    residual, stays); a Transformer baseline keeps only its own, as the base's describe our architecture."""
    over = variant_overrides(variant, base.get("preset", "small"))
    return merge_overrides(base, over, replace_model="preset" in over)


def run_variants(
    base: dict[str, Any],
    variants: Sequence[str],
    seeds: Sequence[int],
    prefix: str,
    reuse: bool = True,
    lrs: Mapping[str, float] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, RunData]]:
    """Train (or load) every variant x seed on the same data and token budget, each variant at its lr in
    ``lrs`` (from :func:`lr_sweep`; else ``base``'s).

    Returns (results: one row per model with variant, seed, lr, val_loss, val_bpb, tokens, tokens_per_s,
    params, wall_time_s (of its last sitting), run, reused; curves: long-form eval curves; runs by name)."""
    require_list("variants", variants)
    require_list("seeds", seeds)
    if not variants or not seeds:
        raise ValueError("need at least one variant and one seed")
    rows, curves, runs = [], [], {}
    for variant in variants:
        for seed in seeds:
            name = run_name(prefix, variant, seed=seed)
            cfg = as_run(variant_config(base, variant), name, seed=int(seed))
            if lrs is not None:
                cfg["lr"] = float(lrs[variant])
            run = train_or_load(cfg, reuse=reuse)
            runs[name] = run
            m = run.final_metrics()
            rows.append(
                {
                    "variant": variant,
                    "seed": int(seed),
                    "lr": float(cfg.get("lr", TrainConfig.lr)),
                    "val_loss": m["final_val_loss"],
                    "val_bpb": m["val_bpb"],
                    "train_loss": m["final_train_loss"],
                    "tokens": m["tokens"],
                    "tokens_per_s": m["tokens_per_s"],
                    "params": m.get("params"),
                    "wall_time_s": m.get("wall_time_s"),
                    "run": name,
                    "reused": run.reused,
                }
            )
            ev = run.eval
            if not ev.empty:
                curves.append(ev.assign(variant=variant, seed=int(seed)))
    curve_df = (
        pd.concat(curves, ignore_index=True)
        if curves
        else pd.DataFrame(columns=["step", "tokens", "val_loss", "val_ppl", "val_bpb", "variant", "seed"])
    )
    return pd.DataFrame(rows), curve_df, runs


def tuning_data(data: str | os.PathLike[str], max_tries: int = 20) -> str:
    """A dataset for choosing hyperparameters that never scores the reported validation split: the same
    source and tokenizer, split by document with the next split seed whose validation documents share
    none with ``data``'s (its training documents may include them; the reported runs never see the
    tuning runs' weights, only the lr they pick). Prepared once next to ``data`` as ``<name>-tune``."""
    data = Path(data)
    meta = load_meta(data)
    reported = split_documents(data)
    out = data.with_name(f"{data.name}-tune")
    for offset in range(1, max_tries + 1):
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
        )
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
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The same learning-rate grid and budget for every variant, scored on :func:`tuning_data` (never
    the reported validation split). Returns (one row per variant x lr: variant, lr, tune_val_loss,
    diverged, run; the chosen lr per variant: the lowest final tuning loss, a diverged run never wins).
    With one lr in the grid that lr is every variant's choice (no sweep: the rows still show its loss)."""
    require_list("variants", variants)
    require_list("lr_grid", lrs)
    if not lrs or any(not isinstance(x, (int, float)) or x <= 0 for x in lrs):
        raise ValueError(f"lrs must be a non-empty list of positive numbers, got {lrs!r}")
    tune = tuning_data(base["data"])
    rows = []
    for variant in variants:
        for lr in lrs:
            name = run_name(prefix, "tune", variant, lr=lr)
            cfg = as_run(variant_config(base, variant), name, data=tune, lr=float(lr), seed=int(seed))
            try:
                loss = float(train_or_load(cfg, reuse=reuse).final_metrics()["final_val_loss"])
            except FloatingPointError:  # the trainer stops a run whose steps keep going non-finite
                loss = math.inf
            diverged = not math.isfinite(loss)
            row = {"variant": variant, "lr": float(lr), "tune_val_loss": loss, "diverged": diverged}
            rows.append({**row, "run": name})
    table = pd.DataFrame(rows)
    chosen = {}
    for variant, part in table.groupby("variant", sort=False):
        ok = part[~part.diverged]
        if ok.empty:
            raise ValueError(f"every lr of {list(lrs)} diverged for {variant!r}: extend the grid downwards")
        chosen[str(variant)] = float(ok.sort_values(["tune_val_loss", "lr"]).lr.iloc[0])
    return table, chosen


def study_runs(study: str, variant: str) -> dict[int, RunData]:
    """The finished runs of one variant of a study (notebook 05's ``<run_name>-<variant>-s<seed>``), by
    seed. A ValueError when there are none (the study has not run here, or not that variant)."""
    stem = run_name(study, variant)
    found = {}
    for path in list_runs():
        name = parse_run_name(path.name)
        if path.parent == runs_dir() and (name.stem, name.lr) == (stem, None) and name.seed is not None:
            if (path / SUMMARY).is_file():
                found[name.seed] = load_run(path)
    if not found:
        raise ValueError(
            f"no finished runs of variant {variant!r} of study {study!r} in {runs_dir()}: run the study "
            f"first (notebooks/studies/{study}.yaml)"
        )
    return dict(sorted(found.items()))
