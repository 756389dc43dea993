"""The run folder: its layout, how the trainer writes it, and how everything else reads it back.

    <run>/config.json        the resolved TrainConfig (plus ``_``-prefixed derived values), written at start
    <run>/metrics.jsonl      one record per logged step / evaluation (truncated to the resumed step on resume)
    <run>/tb/                TensorBoard events (optional)
    <run>/wandb/             the wandb run (``trackers: [wandb]``; ``offline-run-*`` under WANDB_MODE=offline)
    <run>/trackers.json      how to reopen the run's wandb / trackio runs (:mod:`mswelu.training.trackers`)
    <run>/checkpoints/step_XXXXXXX/   atomic checkpoints (:mod:`mswelu.training.checkpoint`)
    <run>/final/             the trained model (``save_pretrained``, tokenizer, generation config, model
                             card: loads with ``AutoModelForCausalLM``), written atomically at the end
    <run>/summary.json       the run's final figures, written last
    <run>/notebook.ipynb     the executed notebook of its first finished execution (notebook 03 under
                             papermill), so that a later execution's output path cannot lose it
    <run>/tasks.json         downstream task scores (``python -m mswelu.evaluate tasks``), any time after
    <run>/eval_documents.json  the final whole-split evaluation per document and per window (loss sum,
                             tokens, bytes: the text bootstrap's units), written with the final evaluation

Nothing else in the package spells these names. The trainer writes the folder through
:class:`mswelu.runs.writer.RunWriter`; the model of a run (``final/``, or else its newest complete checkpoint)
is loaded by :mod:`mswelu.runs.model`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mswelu import analysis
from mswelu.base.errors import with_nearest
from mswelu.base.fs import (
    LOCK_NAME,
    atomic_write_text,
)
from mswelu.base.paths import runs_dir
from mswelu.base.run_names import check_run_name
from mswelu.modules.activations import shape_param_names
from mswelu.modules.slots import ShapeSlot, slot_records
from mswelu.training import checkpoint as ckpt

__all__ = [
    "CHECKPOINTS",
    "CONFIG",
    "DOCUMENTS",
    "FINAL",
    "METRICS",
    "NOTEBOOK",
    "SUMMARY",
    "RunData",
    "last_written",
    "is_empty",
    "keep_notebook",
    "list_runs",
    "load_run",
    "looks_like_run",
    "model_source",
    "newest_run",
    "read_jsonl",
    "resolve_run",
]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
DOCUMENTS = "eval_documents.json"
FINAL = "final"
CHECKPOINTS = "checkpoints"
NOTEBOOK = "notebook.ipynb"
TENSORBOARD = "tb"
TRACKER_STATE = "trackers.json"
TASK_SCORES = "tasks.json"
MODEL_CARD = "README.md"  # inside final/
_MARKERS = (CONFIG, METRICS, CHECKPOINTS, SUMMARY)


def looks_like_run(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds any of a run folder's files (the trainer never deletes anything else)."""
    return any((Path(path) / m).exists() for m in _MARKERS)


def is_empty(path: str | os.PathLike[str]) -> bool:
    """No files but a writer's lock."""
    path = Path(path)
    return not path.is_dir() or all(p.name == LOCK_NAME for p in path.iterdir())


def read_jsonl(path: str | os.PathLike[str], report_torn: bool = False) -> Any:
    """Records of a JSON-lines file; a truncated last line (a run still writing, or a crash mid-write) is
    skipped, a corrupt line elsewhere raises ``ValueError`` naming it. With ``report_torn``: (records,
    whether a torn last line was skipped)."""
    path = Path(path)
    out: list[dict[str, Any]] = []
    torn = False
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                torn = True
                break
            raise ValueError(f"{path}:{i + 1}: not valid JSON ({exc})") from exc
    return (out, torn) if report_torn else out


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


@dataclass
class RunData:
    """One training run as notebooks and reports see it."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    reused: bool = False  # loaded as a finished run instead of trained now (see workbook.train_or_load)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        """``complete``, ``interrupted`` (checkpointed; the same command continues it) or ``running`` (no
        summary yet: training now, or stopped without one: its checkpoints say how far it got)."""
        if not self.summary:
            return "running"
        return "interrupted" if self.summary.get("interrupted") else "complete"

    @property
    def train(self) -> pd.DataFrame:
        """Training steps (step, tokens, loss, lr, grad_norm, tokens_per_s)."""
        return analysis.train_frame(self.records)

    @property
    def eval(self) -> pd.DataFrame:
        """Evaluations (step, tokens, val_loss, val_ppl, val_bpb)."""
        return analysis.eval_frame(self.records)

    def shape(self, param: str = "k") -> pd.DataFrame:
        """One shape parameter (``k``, ``beta``, ``lambda``, ...) per logged step, one column per slot."""
        return analysis.shape_trajectories(self.records, param)

    def shape_params(self) -> list[str]:
        """The shape parameters this run logged, those that learned first (``["k", "lambda"]`` for SWELU)."""
        learned = [p for slot in self.slots.values() for p in slot.learnable]
        logged = [
            p
            for p in shape_param_names()
            if any(isinstance(r.get(p), Mapping) and r[p] for r in self.records)
        ]
        return list(dict.fromkeys([*[p for p in learned if p in logged], *logged]))

    @property
    def slots(self) -> dict[str, ShapeSlot]:
        """Where each logged shape value sits (:class:`ShapeSlot` by slot name): the run's own records, or
        for a run from before them, read from the names it logged."""
        names = {
            n
            for r in self.records[-1:]
            for p in shape_param_names()
            if isinstance(r.get(p), Mapping)
            for n in r[p]
        }
        names |= {n for p in shape_param_names() for n in ((self.summary or {}).get(p) or {})}
        return slot_records(self.config.get("_shape_slots"), sorted(names))

    @property
    def documents(self) -> dict[str, Any] | None:
        """The final evaluation per document and per window (``eval_documents.json``), or None for a run
        written before it existed (or not finished)."""
        return read_json(self.path / DOCUMENTS)

    @property
    def model_dir(self) -> Path | None:
        """Where the run's model is (see :func:`model_source`), or None when it has none."""
        try:
            return model_source(self.path)[1]
        except ValueError:
            return None

    def final_shape(self, param: str = "k") -> dict[str, float]:
        """The last value of one shape parameter per slot: from the summary if it has them, else the last
        logged step."""
        if self.summary:
            val = self.summary.get(param)
            if isinstance(val, Mapping) and val:
                return {n: float(v[param]) if isinstance(v, Mapping) else float(v) for n, v in val.items()}
        traj = self.shape(param)
        return {} if traj.empty else {str(c): float(v) for c, v in traj.iloc[-1].items()}

    def final_shape_values(self) -> dict[str, dict[str, float]]:
        """``{slot: {param: value}}``: every shape parameter's last value, slot by slot (for curves)."""
        out: dict[str, dict[str, float]] = {}
        for param in self.shape_params():
            for slot, value in self.final_shape(param).items():
                out.setdefault(slot, {})[param] = value
        return out

    def final_k(self) -> dict[str, float]:
        """The last k of every slot (:meth:`final_shape` of ``"k"``)."""
        return self.final_shape("k")

    def final_metrics(self) -> dict[str, Any]:
        """Key figures for reports: final train/val loss, val bpb, tokens, tokens/s, steps."""
        tr, ev = self.train, self.eval
        s = self.summary or {}

        def pick(key: str, fallback: Any) -> Any:
            return s[key] if s.get(key) is not None else fallback

        out: dict[str, Any] = {
            "steps": pick("steps", int(tr.step.iloc[-1]) if not tr.empty else None),
            "tokens": pick("tokens", int(tr.tokens.iloc[-1]) if not tr.empty else None),
            "final_train_loss": pick("train_loss", float(tr.loss.iloc[-1]) if not tr.empty else None),
            "final_val_loss": pick("val_loss", float(ev.val_loss.iloc[-1]) if not ev.empty else None),
            "val_bpb": pick("val_bpb", float(ev.val_bpb.iloc[-1]) if not ev.empty else None),
            "tokens_per_s": pick("tokens_per_s", float(tr.tokens_per_s.median()) if not tr.empty else None),
        }
        if s.get("wall_time_s") is not None:
            out["wall_time_s"] = s["wall_time_s"]
        if s.get("parameters") is not None:
            out["params"] = s["parameters"]
        return out


def load_run(path: str | os.PathLike[str]) -> RunData:
    """Read a run folder (``config.json``, ``summary.json``, ``metrics.jsonl``)."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"run folder {path} does not exist")
    if not any((path / f).exists() for f in (CONFIG, METRICS, SUMMARY)):
        raise ValueError(f"{path} is not a run folder (no {CONFIG}, {METRICS} or {SUMMARY})")
    return RunData(
        path=path,
        config=read_json(path / CONFIG) or {},
        summary=read_json(path / SUMMARY),
        records=read_jsonl(path / METRICS),
    )


def keep_notebook(path: str | os.PathLike[str], notebook: str | os.PathLike[str]) -> Path | None:
    """Copy ``notebook`` (an executed notebook file) into the run folder ``path`` as its
    :data:`NOTEBOOK`, unless it holds one already (the execution that finished it first is kept; a
    retrained run starts from an empty folder); returns the copy, or None where one was kept before."""
    target = Path(path) / NOTEBOOK
    if target.exists():
        return None
    atomic_write_text(target, Path(notebook).read_text(encoding="utf-8"))
    return target


def last_written(path: Path) -> float:
    """When the run folder's config, metrics or summary was last written (its sort key)."""
    times = [p.stat().st_mtime for p in (path / SUMMARY, path / METRICS, path / CONFIG) if p.exists()]
    return max(times) if times else 0.0


def list_runs(root: str | os.PathLike[str] | None = None, require_model: bool = False) -> list[Path]:
    """Run folders under ``root`` (default ``runs/``), newest first; ``require_model`` keeps only runs
    with a model (``final/`` or a complete checkpoint). Runs of ``launch=independent`` (sub-folders)
    are included."""
    root = Path(root) if root is not None else runs_dir()
    if not root.is_dir():
        return []
    found = []
    for cand in [*root.iterdir(), *root.glob("*/*")]:
        if cand.name == FINAL or _is_model_dir(cand):  # a run's saved model, not a run
            continue
        if cand.is_dir() and ((cand / CONFIG).is_file() or (cand / METRICS).is_file()):
            if not require_model or load_run(cand).model_dir is not None:
                found.append(cand)
    return sorted(found, key=last_written, reverse=True)


def newest_run(root: str | os.PathLike[str] | None = None, require_model: bool = False) -> Path | None:
    """The most recently written run folder, or None."""
    runs = list_runs(root, require_model=require_model)
    return runs[0] if runs else None


def resolve_run(run: str | os.PathLike[str] | None, require_model: bool = False) -> Path:
    """A run folder from a path, a name under ``runs/`` (``main``, ``study/main-s0``), or None (the newest
    run, with a model if ``require_model``). A ValueError lists the runs there are."""
    if run is None:
        found = newest_run(require_model=require_model)
        if found is None:
            what = "run with a model" if require_model else "run"
            raise ValueError(
                f"no {what} under {runs_dir()}: train one first (notebook 03 or python -m mswelu.train)"
            )
        return found
    path = Path(run).expanduser()
    if not path.exists() and not path.is_absolute():  # a name under runs/
        check_run_name(str(run), "run")
        if (runs_dir() / path).exists():
            path = runs_dir() / path
    if not path.exists():
        names = [p.relative_to(runs_dir()).as_posix() for p in list_runs(require_model=require_model)]
        what = "runs with a saved model" if require_model else "runs"
        known = (
            (f"{what}: " + ", ".join(names))
            if names
            else f"there are no {what} yet: train one first (notebook 03 or python -m mswelu.train)"
        )
        where = f"neither a folder nor a run under {runs_dir()}"
        raise ValueError(f"no run {with_nearest([str(run)], names)}: {where}; {known}")
    return path


def _is_model_dir(path: Path) -> bool:
    """A ``save_pretrained`` folder: an HF config (with ``model_type``) next to safetensors weights."""
    cfg = read_json(path / "config.json")
    return bool(cfg and "model_type" in cfg and any(path.glob("*.safetensors")))


def model_source(path: str | os.PathLike[str]) -> tuple[str, Path]:
    """``("final", dir)``, ``("checkpoint", dir)`` (the newest complete one: an interrupted run, or one still
    training) or ``("model", dir)`` (``path`` is itself a saved model folder); ValueError saying why there is
    none. A ``final/`` that is there but does not look loadable is still ``"final"``: the loader says what is
    wrong with it and falls back to the newest checkpoint (never a silent "no final/")."""
    path = Path(path)
    if _is_model_dir(path):
        return "model", path
    final = path / FINAL
    if _is_model_dir(final):
        return "final", final
    complete = [p for p in ckpt.list_checkpoints(path / CHECKPOINTS) if (p / ckpt.MANIFEST).is_file()]
    if final.is_dir() and any(final.iterdir()):
        return "final", final  # the loader falls back to the newest checkpoint, saying why
    if complete:
        return "checkpoint", complete[-1]
    raise ValueError(
        f"{path} has no model: no {FINAL}/ and no complete checkpoint (the run was stopped "
        "before its first checkpoint, or has not started)"
    )
