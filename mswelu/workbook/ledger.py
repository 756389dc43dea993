"""A study's results ledger: one small committed record per finished run and sweep point
(``reports/studies/<study>/runs/<run>.json``), so a study can span sittings and machines and its report be
rebuilt from the records alone.

A record holds its key (settings, :func:`data_content`, the training-path code digest with each file's hash),
its evaluation curve and final figures, its shape slots and values, and its bootstrap units;
``throughput.json`` keeps the side-by-side speeds. A rerun reuses a record whose key matches and trains only
what is missing (:meth:`Ledger.lookup` says why a record is not used). A damaged or misnamed file is refused
with one line (:meth:`Ledger.read`, :meth:`Record.check`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mswelu.analysis.bootstrap import bootstrap_units
from mswelu.base.fs import atomic_write_json
from mswelu.data import load_meta
from mswelu.data.tasks import TaskSource, is_task_source
from mswelu.modules.slots import ShapeSlot, slot_records
from mswelu.runs.folder import RunData
from mswelu.training.code_digest import changed_files, training_code
from mswelu.training.config import RUNTIME_SETTINGS, TrainConfig, changed_settings
from mswelu.workbook.ledger_files import REBUILD, LedgerError, read_ledger_json

__all__ = [
    "FORMAT",
    "Ledger",
    "LedgerError",
    "Record",
    "data_content",
    "read_ledger_json",
    "record_code",
    "run_key",
    "speed_key",
    "study_ledger",
]

FORMAT = 1


def _round(x: Any, digits: int = 7) -> Any:
    """Floats to ``digits`` significant digits, recursively (records stay small and diff well)."""
    if isinstance(x, float):
        return float(f"{x:.{digits}g}") if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _round(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v, digits) for v in x]
    return x


#: settings that do not change a step's speed (left out of a throughput measurement's key)
_NOT_SPEED = (
    "lr",
    "seed",
    "max_steps",
    "max_tokens",
    "warmup",
    "eval_every",
    "eval_batches",
    "eval_fractions",
)


def speed_key(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a run's key that shapes a step's speed (lr, seed, budget, evaluations aside)."""
    key = run_key(cfg)
    settings = {k: v for k, v in key["settings"].items() if k not in _NOT_SPEED}
    return {"settings": settings, "code": key["code"]["digest"]}


def run_key(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The key of a run of ``cfg``: settings, data fingerprint and training-path code."""
    tc = TrainConfig.coerce(dict(cfg))
    settings = {k: v for k, v in json.loads(json.dumps(tc.to_dict())).items() if k not in RUNTIME_SETTINGS}
    fingerprint = data_content(tc.data) if tc.data else None
    key = {"settings": settings, "data_fingerprint": fingerprint, "code": training_code(tc.to_dict())}
    if is_task_source(tc.data):  # a task is named by its text (no machine path), which a migration retrains
        key["task"] = str(tc.data)
    return key


def record_code(key: Mapping[str, Any]) -> dict[str, Any]:
    """The training-path code a record's ``key`` names on today's code, as :func:`run_key` computes it (a
    task's settings keep no data path, so the task's text stands in for it)."""
    settings = dict(key["settings"])
    if key.get("task"):
        settings["data"] = key["task"]
    return training_code(settings)


def data_content(data: str | Path) -> str:
    """What a prepared dataset holds (splits, vocabulary, eos, dtype), equal in two clones; a synthetic task's
    (generated, not stored): its task, knobs and test-set size."""
    if is_task_source(data):
        return TaskSource(str(data)).fingerprint
    meta = load_meta(data)
    splits = {
        name: {"sha256": s.get("sha256"), "bytes": s.get("bytes")} for name, s in meta["splits"].items()
    }
    doc = {
        "splits": splits,
        "vocab_size": meta.get("vocab_size"),
        "eos_id": meta.get("eos_id"),
        "dtype": meta.get("dtype"),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Record:
    """One finished run as its ledger record holds it, read as a study reads a run."""

    name: str
    variant: str
    seed: int
    kind: str  # "run", "sweep" or "time" (a schedule-matched equal-time run)
    key: dict[str, Any]
    final: dict[str, Any]
    curve: list[dict[str, Any]]
    slot_list: list[dict[str, Any]] = field(default_factory=list)
    shapes: dict[str, dict[str, float]] = field(default_factory=dict)  # param -> slot -> final value
    trajectory: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # param -> step -> ...
    unit_rows: list[dict[str, Any]] = field(default_factory=list)
    reused: bool = True

    def final_metrics(self) -> dict[str, Any]:
        keys = ("steps", "tokens", "final_train_loss", "final_val_loss", "val_bpb", "tokens_per_s")
        out = {k: self.final.get(k) for k in keys}
        out.update({k: self.final[k] for k in ("wall_time_s", "params") if self.final.get(k) is not None})
        return out

    @property
    def eval(self) -> pd.DataFrame:
        return pd.DataFrame(self.curve, columns=["step", "tokens", "val_loss", "val_bpb", "val_scope"])

    @property
    def slots(self) -> dict[str, ShapeSlot]:
        return slot_records(self.slot_list, [])

    def shape_params(self) -> list[str]:
        return list(self.shapes)

    def final_shape(self, param: str = "k") -> dict[str, float]:
        return dict(self.shapes.get(param) or {})

    def final_shape_values(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for param, values in self.shapes.items():
            for slot, value in values.items():
                out.setdefault(slot, {})[param] = value
        return out

    def final_k(self) -> dict[str, float]:
        return self.final_shape("k")

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.key.get("settings") or {})

    def shape(self, param: str = "k") -> pd.DataFrame:
        rows = self.trajectory.get(param) or {}
        return pd.DataFrame.from_dict({int(s): v for s, v in rows.items()}, orient="index").sort_index()

    @property
    def units(self) -> pd.DataFrame:
        return pd.DataFrame(self.unit_rows)

    def check(self, file: Path, **expected: Any) -> None:
        """LedgerError unless each of ``expected`` (and each of its ``settings``) is this record's."""
        want_settings = expected.pop("settings", {})
        for what, want in expected.items():
            got = getattr(self, what)
            if got != want:
                raise LedgerError(
                    f"{file} is refused: its {what} is {got!r}, the study expects {want!r} there ({REBUILD})"
                )
        settings = self.config
        for key, want in want_settings.items():
            got = settings.get(key, "(none)")
            if _plain(got) != _plain(want):
                raise LedgerError(
                    f"{file} is refused: its setting {key} is {got!r}, the study's {self.variant} runs have "
                    f"{want!r} ({REBUILD})"
                )

    def to_dict(self) -> dict[str, Any]:
        return _round(
            {
                "format": FORMAT,
                "name": self.name,
                "variant": self.variant,
                "seed": self.seed,
                "kind": self.kind,
                "key": self.key,
                "final": self.final,
                "curve": self.curve,
                "slots": self.slot_list,
                "shapes": self.shapes,
                "trajectory": self.trajectory,
                "units": self.unit_rows,
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], file: Path | None = None) -> Record:
        """The record in ``d`` (read from ``file``, which errors name); LedgerError when it is not one."""
        where = file if file is not None else f"ledger record {d.get('name')!r}"
        if not isinstance(d, Mapping):
            raise LedgerError(f"{where} holds {type(d).__name__}, not a record: {REBUILD}")
        try:
            fmt = int(d.get("format", 0))
        except (TypeError, ValueError):
            fmt = None
        if fmt != FORMAT:
            raise LedgerError(f"{where} has format {d.get('format')!r}, not {FORMAT}: {REBUILD}")
        try:
            return cls._from_fields(d)
        except (KeyError, TypeError, ValueError) as exc:
            what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
            raise LedgerError(f"{where} is not a complete record ({what}): {REBUILD}") from None

    @classmethod
    def _from_fields(cls, d: Mapping[str, Any]) -> Record:
        return cls(
            name=str(d["name"]),
            variant=str(d["variant"]),
            seed=int(d["seed"]),
            kind=str(d["kind"]),
            key=dict(d["key"]),
            final=dict(d["final"]),
            curve=list(d.get("curve") or []),
            slot_list=list(d.get("slots") or []),
            shapes=dict(d.get("shapes") or {}),
            trajectory=dict(d.get("trajectory") or {}),
            unit_rows=list(d.get("units") or []),
        )

    @classmethod
    def from_run(cls, run: RunData, variant: str, seed: int, kind: str, key: dict[str, Any]) -> Record:
        """The record of a finished run folder."""
        m = run.final_metrics()
        summary = run.summary or {}
        final = {**m, "train_time_s": summary.get("train_time_s")}
        ev = run.eval
        evals = [r for r in run.records if r.get("val_loss") is not None]
        keep = ("step", "tokens", "val_loss", "val_bpb", "val_scope", "val_tokens")
        curve = [  # a run on a synthetic task also keeps its exact-match accuracy
            {k: r.get(k) for k in keep} | _accuracy(r) for r in evals
        ]
        final.update(val_tokens=evals[-1].get("val_tokens") if evals else None)
        final.update(val_scope=evals[-1].get("val_scope") if evals else None)
        eval_steps = {int(s) for s in ev.step} if not ev.empty else set()
        params = run.shape_params()
        trajectory = {}
        for p in params:
            traj = run.shape(p)
            kept = traj[traj.index.isin(eval_steps)] if not traj.empty else traj
            trajectory[p] = {str(step): dict(row) for step, row in kept.iterrows()}
        docs = run.documents or {}
        units = bootstrap_units(docs.get("documents"), docs.get("windows")) if docs else pd.DataFrame()
        return cls(
            name=run.name,
            variant=variant,
            seed=int(seed),
            kind=kind,
            key=key,
            final=final,
            curve=curve,
            slot_list=[s.to_dict() for s in run.slots.values()],
            shapes={p: run.final_shape(p) for p in params},
            trajectory=trajectory,
            unit_rows=units.to_dict("records"),
            reused=False,
        )


class Ledger:
    """The records of one study (``folder``: ``reports/studies/<study>/runs``)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def read(self, path: Path) -> Record:
        """The record in ``path``; LedgerError when damaged or not the run its file names."""
        record = Record.from_dict(read_ledger_json(path), path)
        if record.name != path.stem:
            raise LedgerError(
                f"{path} is refused: it holds the record of {record.name!r}, not of {path.stem!r} ({REBUILD})"
            )
        return record

    def records(self) -> dict[str, Record]:
        """Every record, by run name."""
        if not self.folder.is_dir():
            return {}
        return {p.stem: self.read(p) for p in sorted(self.folder.glob("*.json"))}

    def lookup(self, name: str, cfg: Mapping[str, Any]) -> tuple[Record | None, str | None]:
        """(run ``name``'s record if its key matches ``cfg``'s, else why not); (None, None) without
        one."""
        path = self.path(name)
        if not path.is_file():
            return None, None
        record = self.read(path)
        want = run_key(cfg)
        changed = changed_settings(record.key["settings"], want["settings"])
        missing = sorted(set(want["settings"]) - set(record.key["settings"]))
        if changed or missing:
            return None, f"settings differ: {', '.join(changed + missing)}"
        if record.key.get("data_fingerprint") != want["data_fingerprint"]:
            return None, "other data"
        files = changed_files(record.key.get("code"), want["code"])
        if files:
            return None, f"training code changed: {', '.join(files)}"
        return record, None

    def throughput(self, keys: Mapping[str, Any]) -> pd.DataFrame | None:
        """The side-by-side throughput measured for exactly these variants' speed ``keys``, or None."""
        path = self.folder.parent / "throughput.json"
        if not path.is_file():
            return None
        saved = read_ledger_json(path)
        return self.throughput_table(path, saved) if _round(dict(keys)) == saved.get("keys") else None

    @staticmethod
    def throughput_table(path: Path, saved: Mapping[str, Any]) -> pd.DataFrame:
        """The table of a read ``throughput.json``; LedgerError when it has none."""
        table = saved.get("table")
        if not isinstance(table, list) or not all(isinstance(r, dict) for r in table):
            raise LedgerError(f"{path} holds no throughput table: {REBUILD}")
        return pd.DataFrame(table)

    def write_throughput(self, keys: Mapping[str, Any], table: pd.DataFrame) -> Path:
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        path = self.folder.parent / "throughput.json"
        rows = json.loads(table.to_json(orient="records"))
        atomic_write_json(path, _round({"keys": dict(keys), "table": rows}))
        return path

    def write(self, record: Record) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path(record.name), record.to_dict())
        return self.path(record.name)


def _accuracy(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"val_accuracy": row["val_accuracy"]} if row.get("val_accuracy") is not None else {}


def _plain(x: Any) -> Any:
    """``x`` as JSON gives it back (tuples as lists), for comparing a setting with a record's."""
    return json.loads(json.dumps(x, default=str))


def study_ledger(study: str) -> Ledger:
    """The ledger of the committed study ``study`` (``reports/studies/<study>/runs``)."""
    from mswelu.base.paths import reports_dir

    return Ledger(reports_dir() / "studies" / study / "runs")
