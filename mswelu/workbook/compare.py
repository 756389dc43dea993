"""Comparisons (notebook 05): every variant x seed on the same data and token budget, each at the lr it
won in the same sweep on a tuning split, and a study's runs read back by variant and seed (notebook 04)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mswelu.analysis.equal_time import MATCHED_COLUMNS, TimeMatch
from mswelu.base.paths import runs_dir
from mswelu.base.progress import log, say
from mswelu.base.run_names import parse_run_name, run_name
from mswelu.runs.folder import SUMMARY, RunData, list_runs, load_run
from mswelu.training.config import TrainConfig, merge_overrides
from mswelu.training.variants import learned_source, variant_overrides, with_learned_shape
from mswelu.workbook import throughput as speed
from mswelu.workbook.ledger import Ledger, Record, run_key, speed_key, study_ledger
from mswelu.workbook.profiles import schedule_settings
from mswelu.workbook.prologue import require_list
from mswelu.workbook.reuse import as_run, train_or_load

__all__ = [
    "run_or_record",
    "run_variants",
    "side_by_side_throughput",
    "study_runs",
    "time_matched_runs",
    "time_run_name",
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


def _sources_first(variants: Sequence[str], require_sources: bool = True) -> list[str]:
    """``variants``, each ``-as-learned`` one after the variant it is frozen from (which must be there, unless
    not ``require_sources``: the lr sweep trains a missing source's point itself)."""
    missing = {v: s for v in variants if (s := learned_source(v)) and s not in variants}
    if missing and require_sources:
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
