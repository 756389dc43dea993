"""Whether a study's ledger records are the ones it asks for (file and run name, variant, seed, kind,
settings, one data key) before a report is rebuilt from them; anything else is refused with one line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mswelu.base.run_names import parse_run_name, run_name
from mswelu.training.variants import variant_overrides
from mswelu.workbook.compare import time_run_name
from mswelu.workbook.ledger import Record
from mswelu.workbook.ledger_files import REBUILD, LedgerError

__all__ = ["check_study_records", "variant_settings"]

#: the study parameters that are TrainConfig settings every main run of the study has
STUDY_SETTINGS = ("max_steps", "batch_size", "seq_len", "optimizer")


def variant_settings(variant: str, preset: str) -> dict[str, Any]:
    """The settings every run of ``variant`` has: its overrides of the study's base config."""
    overrides = dict(variant_overrides(variant, preset))
    model = overrides.pop("model", None) or {}
    return {**overrides, **{f"model.{k}": v for k, v in model.items()}}


def split_labels(params: Mapping[str, Any]) -> list[str | None]:
    """The labels of a study's splits (``fold<j>``, as :func:`mswelu.workbook.profiles.split_data` names
    them), or ``[None]`` for a study on one split."""
    return [f"fold{int(s['fold'])}" for s in params.get("splits") or []] or [None]


def _expect(record: Record, file: Path, settings: Mapping[str, Any], **fields: Any) -> None:
    flat = dict(record.config)
    for key, value in (flat.pop("model", None) or {}).items():
        flat[f"model.{key}"] = value
    probe = Record(**{**record.__dict__, "key": {**record.key, "settings": flat}})
    probe.check(file, settings=settings, **fields)


def check_study_records(
    study: str, params: Mapping[str, Any], records: Mapping[str, Record], folder: Path
) -> None:
    """LedgerError for the first record in ``folder`` that is not what ``study`` names by its file name."""
    variants = list(params["variants"])
    base = {k: params[k] for k in STUDY_SETTINGS if k in params}
    preset = str(params.get("preset", "small"))
    # timed: the schedule-matched equal-time runs (their steps are checked against the throughput later)
    runs: dict[str, tuple] = {}
    timed: dict[str, tuple] = {}
    for label in split_labels(params):
        for v in variants:
            for s in params["seeds"]:
                runs[run_name(study, label, v, seed=int(s))] = (v, int(s), label)
                if params.get("equal_time"):
                    timed[time_run_name(study, label, v, int(s))] = (v, int(s), label)
    sweeps = {run_name(study, "tune", v): v for v in variants}
    sweep_seeds = range(int(params.get("sweep_seeds") or 1))  # later seeds' points are named with theirs
    data_keys: dict[tuple[str, str | None], Counter] = {}
    labels: dict[str, str | None] = {}
    for name, record in records.items():
        file = folder / f"{name}.json"
        parsed = parse_run_name(name)
        label = None
        if name in runs:
            variant, seed, label = runs[name]
            settings = {**variant_settings(variant, preset), **base, "seed": seed}
            _expect(record, file, settings, variant=variant, seed=seed, kind="run")
        elif name in timed:
            variant, seed, label = timed[name]
            same = {k: v for k, v in base.items() if k != "max_steps"}
            settings = {**variant_settings(variant, preset), **same, "seed": seed}
            _expect(record, file, settings, variant=variant, seed=seed, kind="time")
        elif parsed.stem in sweeps and parsed.lr is not None and (parsed.seed or 0) in sweep_seeds:
            variant = sweeps[parsed.stem]
            settings = {**variant_settings(variant, preset), "lr": parsed.lr}
            _expect(record, file, settings, variant=variant, kind="sweep", seed=parsed.seed or 0)
        else:
            raise LedgerError(
                f"{file} is refused: the study names no run {name!r} (its variants {variants}, seeds "
                f"{list(params['seeds'])}, sweep runs {run_name(study, 'tune', 'VARIANT', lr=0.001)}...) "
                f"({REBUILD})"
            )
        labels[name] = label
        data_keys.setdefault((record.kind, label), Counter())[record.key.get("data_fingerprint")] += 1
    for (kind, label), counts in data_keys.items():  # one data key per kind of record and split
        if len(counts) > 1:
            common = counts.most_common(1)[0][0]
            odd = next(
                n
                for n, r in records.items()
                if r.kind == kind and labels[n] == label and r.key.get("data_fingerprint") != common
            )
            got = records[odd].key.get("data_fingerprint")
            raise LedgerError(
                f"{folder / f'{odd}.json'} is refused: its data key {got!r} "
                f"is not the {common!r} of the study's other {kind} records (other data; {REBUILD})"
            )
