"""Helpers the notebooks call: find and load runs, plot them, keep checked outputs deterministic.

A run folder (written by :mod:`mswelu.train`) holds ``config.json``, ``metrics.jsonl``, ``summary.json`` and
``final/``; :func:`load_run` reads it into a :class:`RunData` whose frames come from :mod:`mswelu.analysis`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mswelu import analysis
from mswelu.paths import runs_dir

__all__ = [
    "RunData",
    "list_runs",
    "load_run",
    "newest_run",
    "plot_activation_shapes",
    "plot_k_trajectories",
    "plot_loss",
    "plot_tokens_per_s",
    "read_jsonl",
    "rounded",
]


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a truncated last line (a run still writing) is skipped, a corrupt
    line elsewhere raises ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not valid JSON ({exc})") from exc
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


@dataclass
class RunData:
    """One training run as the notebooks see it."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def train(self) -> pd.DataFrame:
        """Training steps (step, tokens, loss, lr, grad_norm, tokens_per_s)."""
        return analysis.train_frame(self.records)

    @property
    def eval(self) -> pd.DataFrame:
        """Evaluations (step, tokens, val_loss, val_ppl, val_bpb)."""
        return analysis.eval_frame(self.records)

    @property
    def k(self) -> pd.DataFrame:
        """k per logged step, one column per activation."""
        return analysis.k_trajectories(self.records)

    @property
    def model_dir(self) -> Path | None:
        """``final/`` if present, else the newest ``checkpoints/step_*/`` holding a model, else None."""
        final = self.path / "final"
        if (final / "config.json").is_file():
            return final
        ckpts = sorted((self.path / "checkpoints").glob("step_*"))
        for ckpt in reversed(ckpts):
            for cand in (ckpt, ckpt / "model"):
                if (cand / "config.json").is_file():
                    return cand
        return None

    def final_k(self) -> dict[str, float]:
        """The last k of every activation: from the summary if it has them, else the last logged step."""
        if self.summary:
            for key in ("k", "k_values", "swelu"):
                val = self.summary.get(key)
                if isinstance(val, Mapping) and val:
                    return {n: float(v["k"]) if isinstance(v, Mapping) else float(v) for n, v in val.items()}
        traj = self.k
        return {} if traj.empty else {str(c): float(v) for c, v in traj.iloc[-1].items()}

    def final_metrics(self) -> dict[str, Any]:
        """Key figures for reports: final train/val loss, val bpb, tokens, tokens/s, steps."""
        tr, ev = self.train, self.eval
        s = self.summary or {}
        out: dict[str, Any] = {
            "steps": _first(s, "steps", default=int(tr.step.iloc[-1]) if not tr.empty else None),
            "tokens": _first(s, "tokens", default=int(tr.tokens.iloc[-1]) if not tr.empty else None),
            "final_train_loss": _first(s, "final_train_loss", "train_loss",
                                       default=float(tr.loss.iloc[-1]) if not tr.empty else None),
            "final_val_loss": _first(s, "final_val_loss", "val_loss",
                                     default=float(ev.val_loss.iloc[-1]) if not ev.empty else None),
            "val_bpb": _first(s, "val_bpb", "final_val_bpb",
                              default=float(ev.val_bpb.iloc[-1]) if not ev.empty else None),
            "tokens_per_s": _first(s, "tokens_per_s",
                                   default=float(tr.tokens_per_s.median()) if not tr.empty else None),
        }
        if s.get("wall_time_s") is not None:
            out["wall_time_s"] = s["wall_time_s"]
        if _first(s, "parameters", "params") is not None:
            out["params"] = _first(s, "parameters", "params")
        return out


def _first(d: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if d.get(key) is not None:
            return d[key]
    return default


def load_run(path: str | os.PathLike[str]) -> RunData:
    """Read a run folder (``config.json``, ``summary.json``, ``metrics.jsonl``)."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"run folder {path} does not exist")
    if not any((path / f).exists() for f in ("config.json", "metrics.jsonl", "summary.json")):
        raise ValueError(f"{path} is not a run folder (no config.json, metrics.jsonl or summary.json)")
    return RunData(path=path, config=_read_json(path / "config.json") or {},
                   summary=_read_json(path / "summary.json"), records=read_jsonl(path / "metrics.jsonl"))


def _run_time(path: Path) -> float:
    times = [p.stat().st_mtime for p in (path / "summary.json", path / "metrics.jsonl", path / "config.json")
             if p.exists()]
    return max(times) if times else 0.0


def list_runs(root: str | os.PathLike[str] | None = None, require_model: bool = False) -> list[Path]:
    """Run folders under ``root`` (default ``runs/``), newest first; ``require_model`` keeps only runs
    with a saved model (``final/`` or a checkpoint). Runs of ``launch=independent`` (sub-folders) are
    included."""
    root = Path(root) if root is not None else runs_dir()
    if not root.is_dir():
        return []
    found = []
    for cand in [*root.iterdir(), *root.glob("*/*")]:
        if cand.is_dir() and ((cand / "config.json").is_file() or (cand / "metrics.jsonl").is_file()):
            if not require_model or load_run(cand).model_dir is not None:
                found.append(cand)
    return sorted(found, key=_run_time, reverse=True)


def newest_run(root: str | os.PathLike[str] | None = None, require_model: bool = False) -> Path | None:
    """The most recently written run folder, or None."""
    runs = list_runs(root, require_model=require_model)
    return runs[0] if runs else None


def rounded(value: Any, digits: int = 2) -> Any:
    """Round floats (recursively) so that checked notebook outputs do not depend on the last bits."""
    if isinstance(value, Mapping):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(rounded(v, digits) for v in value)
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else value
    return value


# --------------------------------------------------------------------------- plots
def plot_loss(runs: Mapping[str, RunData] | RunData, x: str = "tokens", val: bool = True, smooth: int = 1,
              ax: Any = None, title: str | None = None) -> Any:
    """Training loss (and validation loss, dashed, with markers) against ``x`` ("tokens" or "step")."""
    import matplotlib.pyplot as plt

    if isinstance(runs, RunData):
        runs = {runs.name: runs}
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    for i, (label, run) in enumerate(runs.items()):
        color = f"C{i % 10}"
        tr = run.train
        if not tr.empty:
            y = tr.loss.rolling(max(1, smooth), min_periods=1).mean()
            ax.plot(tr[x], y, color=color, lw=1.2, label=f"{label} train")
        ev = run.eval
        if val and not ev.empty:
            ax.plot(ev[x], ev.val_loss, color=color, ls="--", marker="o", ms=3, label=f"{label} val")
    ax.set_xlabel(x)
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_k_trajectories(k: pd.DataFrame, ax: Any = None, title: str = "SWELU k during training") -> Any:
    """One line per activation; colour by group (in-mixer, post-mixer, dense), shade by depth."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    cmaps = {"in-mixer": "Blues", "post-mixer": "Greens", "dense": "Oranges", "attention": "Purples",
             "other": "Greys"}
    groups: dict[str, list[str]] = {}
    for col in k.columns:
        groups.setdefault(analysis.classify_k(col)[0], []).append(col)
    for group, cols in groups.items():
        cmap = plt.get_cmap(cmaps.get(group, "Greys"))
        for j, col in enumerate(cols):
            shade = 0.45 + 0.5 * (j + 1) / (len(cols) + 1)
            ax.plot(k.index, k[col], color=cmap(shade), lw=1.2, label=col)
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.set_xlabel("step")
    ax.set_ylabel("k")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(k.columns):
        ax.legend(fontsize=7, ncol=2 if len(k.columns) > 8 else 1)
    fig.tight_layout()
    return fig


def plot_activation_shapes(k_values: Mapping[str, Any], z: Sequence[float] | None = None,
                           ax: Any = None, title: str = "learned activations vs SiLU") -> Any:
    """Each learned SWELU over z (colour by group as in :func:`plot_k_trajectories`) with SiLU in black."""
    import matplotlib.pyplot as plt

    curves = analysis.activation_curves(k_values, z)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    cmaps = {"in-mixer": "Blues", "post-mixer": "Greens", "dense": "Oranges"}
    names = [c for c in curves.columns if c != "silu"]
    for j, col in enumerate(names):
        group = analysis.classify_k(col)[0]
        cmap = plt.get_cmap(cmaps.get(group, "Greys"))
        k = k_values[col]["k"] if isinstance(k_values[col], Mapping) else k_values[col]
        ax.plot(curves.index, curves[col], color=cmap(0.5 + 0.4 * (j + 1) / (len(names) + 1)), lw=1.1,
                label=f"{col} (k={float(k):.2f})")
    ax.plot(curves.index, curves["silu"], color="k", lw=1.8, label="SiLU")
    ax.axhline(0, color="k", lw=0.4)
    ax.axvline(0, color="k", lw=0.4)
    ax.set_xlabel("z")
    ax.set_ylabel("activation(z)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(names) > 8 else 1)
    fig.tight_layout()
    return fig


def plot_tokens_per_s(runs: Mapping[str, RunData] | RunData, ax: Any = None) -> Any:
    """Training throughput per logged step."""
    import matplotlib.pyplot as plt

    if isinstance(runs, RunData):
        runs = {runs.name: runs}
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3))
    else:
        fig = ax.figure
    for i, (label, run) in enumerate(runs.items()):
        tr = run.train
        if not tr.empty:
            ax.plot(tr.step, tr.tokens_per_s, color=f"C{i % 10}", lw=1, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("tokens/s")
    ax.set_title("throughput")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
