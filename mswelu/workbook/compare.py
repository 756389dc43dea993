"""Comparisons (notebook 05): every variant x seed on the same data and token budget, each at the lr it
won in the same sweep on a tuning split, and a study's runs read back by variant and seed (notebook 04)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mswelu import analysis
from mswelu.analysis.equal_time import MATCHED_COLUMNS, TimeMatch
from mswelu.analysis.tuning import LrStatus
from mswelu.base.paths import runs_dir
from mswelu.base.progress import log, say
from mswelu.base.run_names import parse_run_name, run_name
from mswelu.data import load_meta, prepare, resolve_source, split_documents, tokenizer_name
from mswelu.runs.folder import SUMMARY, RunData, list_runs, load_run
from mswelu.training.config import TrainConfig, merge_overrides
from mswelu.training.variants import learned_source, variant_overrides, with_learned_shape
from mswelu.workbook import throughput as speed
from mswelu.workbook.ledger import Ledger, Record, run_key, speed_key, study_ledger
from mswelu.workbook.profiles import schedule_settings
from mswelu.workbook.prologue import require_list
from mswelu.workbook.reuse import as_run, train_or_load

__all__ = [
    "bracketed_lr_sweep",
    "lr_sweep",
    "run_or_record",
    "run_variants",
    "side_by_side_throughput",
    "study_runs",
    "time_matched_runs",
    "time_run_name",
    "tuning_data",
    "variant_config",
]


def variant_config(base: dict[str, Any], variant: str) -> dict[str, Any]:
    """``base`` turned into ``variant``; a Transformer baseline keeps only its own ``model`` settings."""
    over = variant_overrides(variant, base.get("preset", "small"))
    return merge_overrides(base, over, replace_model="preset" in over)


def run_or_record(
    cfg: dict[str, Any], name: str, variant: str, seed: int, kind: str, reuse: bool, ledger: Ledger | None
) -> RunData | Record:
    """The finished run of ``cfg``: its matching ``ledger`` record, else trained (or reused) and recorded."""
    if ledger is not None and reuse:
        record, why = ledger.lookup(name, cfg)
        if record is not None:
            _announce(name, record, "from the study's record")
            return record
        if why is not None:
            log(f"{name}: its ledger record is not used ({why}); training it", source="mswelu.workbook")
    run = train_or_load(cfg, reuse=reuse)
    if not run.reused:  # a reused run has said so (announce_reuse)
        _announce(name, run, "trained")
    if ledger is None:
        return run
    path = ledger.write(Record.from_run(run, variant, seed, kind, run_key(cfg)))
    record = Record.from_dict(json.loads(path.read_text()))  # what a later sitting will read: the same
    record.reused = bool(run.reused)
    return record


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _announce(name: str, run: RunData | Record, how: str) -> None:
    """One line per model on the notebook's terminal (a study runs for hours with training progress off)."""
    m = run.final_metrics()
    bpb, loss, wall = m.get("val_bpb"), m.get("final_val_loss"), m.get("wall_time_s")
    if _finite(bpb):
        figures = f"val {bpb:.4f} bits/byte"
    else:  # a synthetic task has no bytes: its answers' loss
        figures = f"val loss {loss:.4f}" if _finite(loss) else "no val figure"
    took = f" in {wall:,.0f} s" if how == "trained" and isinstance(wall, (int, float)) else ""
    say(f"[{time.strftime('%H:%M:%S')} {name}] {how}{took}: {m.get('steps')} steps, {figures}")


def _sources_first(variants: Sequence[str]) -> list[str]:
    """``variants``, each ``-as-learned`` one after the variant it is frozen from (which must be there)."""
    missing = {v: s for v in variants if (s := learned_source(v)) and s not in variants}
    if missing:
        v, s = next(iter(missing.items()))
        raise ValueError(f"variant {v!r} is frozen at what {s!r} learns: list {s!r} among the variants too")
    return sorted(variants, key=lambda v: learned_source(v) is not None)


def run_variants(
    base: dict[str, Any],
    variants: Sequence[str],
    seeds: Sequence[int],
    prefix: str,
    reuse: bool = True,
    lrs: Mapping[str, float] | None = None,
    ledger: Ledger | None = None,
    splits: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, RunData | Record]]:
    """Train (or load) every variant x seed on the same data and budget, each at its lr in ``lrs`` (else
    ``base``'s). With a ``ledger`` every model comes from its record, so a study's figures are its records'
    alone. ``splits`` (label -> prepared data, :func:`~mswelu.workbook.profiles.split_data`): every variant
    and seed on each split (seeds nested in splits), named ``<prefix>-<label>-...``, in a ``split`` column.
    Returns (results, one row per model; long-form eval curves; runs or records by name)."""
    require_list("variants", variants)
    require_list("seeds", seeds)
    if not variants or not seeds:
        raise ValueError("need at least one variant and one seed")
    rows, curves, runs = [], [], {}
    for label, data in (splits or {None: base.get("data")}).items():
        for variant in _sources_first(variants):
            for seed in seeds:
                name = run_name(prefix, label, variant, seed=seed)
                cfg = as_run(variant_config({**base, "data": data}, variant), name, seed=int(seed))
                if lrs is not None:
                    cfg["lr"] = float(lrs[variant])
                if source := learned_source(variant):  # frozen at what the same seed's source run learned
                    cfg = with_learned_shape(cfg, runs[run_name(prefix, label, source, seed=seed)])
                run = run_or_record(cfg, name, variant, int(seed), "run", reuse, ledger)
                runs[name] = run
                row = _result_row(run, variant, int(seed), float(cfg.get("lr", TrainConfig.lr)), name)
                rows.append(row if label is None else {**row, "split": label})
                ev = run.eval.assign(variant=variant, seed=int(seed))
                if not ev.empty:
                    curves.append(ev if label is None else ev.assign(split=label))
    return pd.DataFrame(rows), _curve_frame(curves), runs


def time_matched_runs(
    base: dict[str, Any],
    matches: Sequence[TimeMatch],
    seeds: Sequence[int],
    prefix: str,
    lrs: Mapping[str, float],
    reuse: bool = True,
    ledger: Ledger | None = None,
    splits: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, RunData | Record]]:
    """Equal wall-clock time, schedule-matched (:mod:`mswelu.analysis.equal_time`): the slower variant of
    each match trains again for every seed (and split) at its lr, on its own complete schedule over
    ``match.steps``, named ``<prefix>[-<split>]-<variant>-time-s<seed>`` (a study's ledger kind ``time``).
    Returns (one row per model, :data:`~mswelu.analysis.equal_time.MATCHED_COLUMNS`; runs by name)."""
    evaluations = max(1, round(int(base["max_steps"]) / int(base["eval_every"])))
    if derived := [m.slower for m in matches if learned_source(m.slower)]:
        raise ValueError(
            f"equal-time runs of {derived[0]!r} (frozen at another run's values) are not supported"
        )
    rows, runs = [], {}
    for label, data in (splits or {None: base.get("data")}).items():
        for match in matches:
            for seed in seeds:
                name = time_run_name(prefix, label, match.slower, seed)
                budget = {"max_steps": match.steps, **schedule_settings(match.steps, evaluations)}
                cfg = {**variant_config({**base, "data": data}, match.slower), **budget}
                cfg = as_run(cfg, name, seed=int(seed), lr=float(lrs[match.slower]))
                run = runs[name] = run_or_record(cfg, name, match.slower, int(seed), "time", reuse, ledger)
                rows.append(matched_row(run, match, int(seed), label, name))
    return pd.DataFrame(rows, columns=[*MATCHED_COLUMNS, *(["split"] if splits else [])]), runs


def time_run_name(prefix: str, label: str | None, variant: str, seed: int) -> str:
    """A schedule-matched equal-time run's name: ``<prefix>[-<split>]-<variant>-time-s<seed>``."""
    return run_name(prefix, label, variant, "time", seed=int(seed))


def matched_row(
    run: RunData | Record, match: TimeMatch, seed: int, label: str | None, name: str
) -> dict[str, Any]:
    """One schedule-matched model as a row of a study's ``matched`` frame."""
    m = run.final_metrics()
    row = {
        "variant": match.slower,
        "seed": seed,
        "matched_to": match.faster,
        "steps": m["steps"],
        "steps_lo": match.steps_lo,
        "steps_hi": match.steps_hi,
        "ratio": match.ratio,
        "val_loss": m["final_val_loss"],
        "val_bpb": m["val_bpb"],
        "tokens": m["tokens"],
        "run": name,
    }
    return row if label is None else {**row, "split": label}


def _result_row(run: RunData | Record, variant: str, seed: int, lr: float, name: str) -> dict[str, Any]:
    m = run.final_metrics()
    return {
        "variant": variant,
        "seed": seed,
        "lr": lr,
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


def _curve_frame(curves: list[pd.DataFrame]) -> pd.DataFrame:
    columns = ["step", "tokens", "val_loss", "val_ppl", "val_bpb", "val_scope", "variant", "seed"]
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=columns)


def _sweep_row(loss: float | None, variant: str, lr: float, name: str) -> dict[str, Any]:
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
) -> pd.DataFrame:
    """The same lr grid for every variant on :func:`tuning_data`: one row per point (the choice of each
    variant's lr is :func:`mswelu.analysis.lr_status`'s)."""
    require_list("variants", variants)
    require_list("lr_grid", lrs)
    if not lrs or any(not isinstance(x, (int, float)) or x <= 0 for x in lrs):
        raise ValueError(f"lrs must be a non-empty list of positive numbers, got {lrs!r}")
    tune = tuning_data(base["data"])
    rows = []
    named = None if seed == 0 else seed  # the first seed's points keep their names from before seeds
    for variant in _sources_first(variants) if len(variants) > 1 else variants:
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
                        rows.append(_sweep_row(from_run.final_metrics()["final_val_loss"], source, lr, point))
                    cfg = with_learned_shape(cfg, from_run)
                run = run_or_record(cfg, name, variant, int(seed), "sweep", reuse, ledger)
                loss = run.final_metrics()["final_val_loss"]
            except FloatingPointError:  # the trainer stops a run whose steps keep going non-finite
                loss = None
            rows.append(_sweep_row(loss, variant, lr, name))
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
) -> tuple[pd.DataFrame, dict[str, LrStatus]]:
    """:func:`lr_sweep`, extended while an optimum sits at an edge (an ``-as-learned`` variant's new point
    trains its source's point at that lr too); with ``seeds`` > 1 the best lr and the tried lrs next to it
    run ``seeds`` seeds (``seed``, ``seed + 1``, ...: a point of a later seed is named with it) and each lr
    is judged by its mean over seeds, until the best is bracketed and seeded. Returns (points;
    ``LrStatus``)."""
    if not (isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"sweep seeds must be a whole number >= 1, got {seeds!r}")
    every = list(range(seed, seed + seeds))
    sweep = lr_sweep(base, variants, grid, prefix, seed, reuse, ledger)
    while True:
        todo = [(v, more, seed) for v, more in analysis.extend_lr_grid(sweep, grid).items()]
        if not todo and seeds > 1:
            points = analysis.unseeded_points(sweep, grid, every)
            todo = [(v, [lr], s) for (v, lr), missing in points.items() for s in missing]
        if not todo:
            break
        for variant, more, one in todo:
            rows = lr_sweep(base, [variant], more, prefix, one, reuse, ledger)
            sweep = pd.concat([sweep, rows], ignore_index=True).drop_duplicates("run", ignore_index=True)
    status = analysis.lr_status(sweep, grid)
    failed = [v for v, s in status.items() if not math.isfinite(s.lr)]
    if failed:
        raise ValueError(
            f"every lr tried diverged for {failed} ({', '.join(f'{x:g}' for x in status[failed[0]].tried)}) "
            "down to the sweep's bound: lower the grid"
        )
    return sweep, status


def side_by_side_throughput(
    base: dict[str, Any],
    variants: Sequence[str],
    ledger: Ledger | None = None,
    reuse: bool = True,
    **measure: Any,
) -> pd.DataFrame:
    """Every variant's tokens/s measured interleaved here at the study's shape (options ``measure``), or the
    ledger's measurement of the same variants, shapes and code (unless ``reuse`` is False), and its FLOPs per
    token: the equal-compute view's inputs."""
    configs = {v: {**variant_config(base, v), "seed": 0} for v in variants}
    keys = {v: speed_key(cfg) for v, cfg in configs.items()}
    if ledger is not None and reuse:
        saved = ledger.throughput(keys)
        if saved is not None:
            return saved
    table = speed.measure_throughput(configs, **measure)
    if ledger is not None:
        ledger.write_throughput(keys, table)
    return table


def study_runs(study: str, variant: str) -> dict[int, RunData | Record]:
    """One variant's finished runs of a study by seed: run folders, else (a fresh clone) ledger records."""
    stem = run_name(study, variant)
    found: dict[int, RunData | Record] = {}
    for path in list_runs():
        name = parse_run_name(path.name)
        if path.parent == runs_dir() and (name.stem, name.lr) == (stem, None) and name.seed is not None:
            if (path / SUMMARY).is_file():
                found[name.seed] = load_run(path)
    if not found:
        for record in study_ledger(study).records().values():
            if record.kind == "run" and record.variant == variant:
                found[record.seed] = record
    if not found:
        raise ValueError(
            f"no finished runs of variant {variant!r} of study {study!r} in {runs_dir()} nor records in "
            f"{study_ledger(study).folder}: run the study first (notebooks/studies/{study}.yaml)"
        )
    return dict(sorted(found.items()))
