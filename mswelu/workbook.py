"""Helpers the notebooks call: profiles, training or reusing runs, variant comparisons, launch plans,
plots, and deterministic outputs for checked cells.

Runs are read through :mod:`mswelu.runs` (re-exported here: ``wb.load_run``, ``wb.RunData``, ...).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mswelu import analysis
from mswelu.launch import resolve_mode
from mswelu.paths import reports_dir, runs_dir
from mswelu.runs import (
    CONFIG,
    FINAL,
    SUMMARY,
    RunData,
    is_empty,
    list_runs,
    load_run,
    newest_run,
    read_json,
    read_jsonl,
    resolve_run,
)
from mswelu.train_config import TrainConfig
from mswelu.variants import VARIANTS, hybrid_pattern, variant_overrides

__all__ = [
    "PROFILES",
    "VARIANTS",
    "RunData",
    "ensure_run",
    "data_for",
    "execute_plan",
    "format_samples",
    "k_gradients_for_run",
    "plan_launch",
    "hybrid_pattern",
    "resolve_profile",
    "run_variants",
    "smoke_checks",
    "study_runs",
    "plot_study_k",
    "train_or_load",
    "variant_config",
    "variant_overrides",
    "list_runs",
    "lr_sweep",
    "tuning_data",
    "load_run",
    "newest_run",
    "plot_activation_shapes",
    "plot_k_trajectories",
    "plot_loss",
    "plot_tokens_per_s",
    "read_jsonl",
    "reusable",
    "rounded",
    "start",
    "notebook_parameters",
    "check_parameters",
    "plot_variant_curves",
]


# --------------------------------------------------------------------------- notebook prologue
_NOT_PARAMETERS = {"In", "Out", "get_ipython", "exit", "quit", "open"}


#: the folder of ``reports/`` whose reports are committed: a study's (see ``notebooks/studies/``)
STUDIES = "studies"


def _plain_names(namespace: Mapping[str, Any]) -> list[str]:
    """Names holding plain values (what a parameters cell or papermill's injected cell sets)."""
    plain = (str, int, float, bool, list, dict, tuple, type(None))
    return [
        n
        for n, v in namespace.items()
        if not n.startswith("_") and n not in _NOT_PARAMETERS and isinstance(v, plain)
    ]


def _declared(notebook: str) -> list[str] | None:
    """The names ``notebook``'s parameters cell declares (read with papermill from the checkout's
    ``notebooks/``), or None where that file is not found."""
    path = Path(__file__).resolve().parent.parent / "notebooks" / notebook
    if not path.is_file():
        return None
    import papermill

    return list(papermill.inspect_notebook(str(path)))


def notebook_parameters(notebook: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``notebook``'s parameters in ``namespace`` (a notebook's ``globals()``): the names its
    parameters cell declares, or, where the notebook file is not found, every plain value defined so far."""
    names = _declared(notebook)
    return {
        n: namespace[n] for n in (names if names is not None else _plain_names(namespace)) if n in namespace
    }


def check_parameters(notebook: str, namespace: Mapping[str, Any]) -> None:
    """ValueError for values set in ``namespace`` that ``notebook`` does not declare (a misspelt
    ``papermill -p presett small`` would otherwise run the default and report "complete"). Meant for the
    start of a run, when only the parameters cell and papermill's injected cell have run."""
    from mswelu.errors import with_nearest

    declared = _declared(notebook)
    if declared is None:
        return
    unknown = [n for n in _plain_names(namespace) if n not in declared]
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {with_nearest(unknown, declared)} for {notebook}; it takes: "
            f"{', '.join(declared)}"
        )


def _fresh_kernel() -> bool:
    """True in a kernel that has run at most three cells, this one included (the parameters cell,
    papermill's injected cell, the prologue): the start of a run, before the user defined anything."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    history = shell.user_ns.get("In") if shell is not None else None
    return isinstance(history, list) and len(history) - 1 <= 3  # In[0] is ""


def start(notebook: str, namespace: Mapping[str, Any], check: bool | None = None) -> Any:
    """Every notebook's prologue: the parameters checked (``check``; by default at the start of a
    kernel's run, see :func:`check_parameters`), Hugging Face's progress bars off (tqdm's missing-widgets
    warning is silenced by ``import mswelu``), and the run's :class:`mswelu.report.Report` with the
    notebook's parameters. ``namespace`` is the notebook's ``globals()``; its ``run_name`` names the
    report, in ``reports/studies/`` when its ``study`` is true (a study's report is committed)."""
    from transformers.utils import logging as hf_logging

    from mswelu.report import Report

    if check if check is not None else _fresh_kernel():
        check_parameters(notebook, namespace)
    hf_logging.disable_progress_bar()
    root = reports_dir() / STUDIES if namespace.get("study") else None
    return Report(namespace["run_name"], notebook, notebook_parameters(notebook, namespace), root=root)


def rounded(value: Any, digits: int = 2) -> Any:
    """Round floats (recursively) so that checked notebook outputs do not depend on the last bits."""
    if isinstance(value, Mapping):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(rounded(v, digits) for v in value)
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else value
    return value


def format_samples(prompts: Sequence[str], texts: Sequence[str], max_newlines: int = 2) -> str:
    """Prompt + continuation pairs as plain text for a notebook or report, one block each under a
    ``--- sample N ---`` line, with whitespace made visible: a run of more than ``max_newlines`` newlines
    becomes ``[N newlines]`` and a continuation of nothing but whitespace says so (a greedy model that
    emits only newlines would otherwise show a large blank box)."""
    if len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts but {len(texts)} continuations")
    limit = max(1, int(max_newlines))

    def shown(text: str) -> str:
        if text and not text.strip():
            return f"[{len(text)} whitespace characters: {text.count(chr(10))} newlines]"
        return re.sub(f"\n{{{limit + 1},}}", lambda m: f"\n[{len(m.group())} newlines]\n", text)

    pairs = enumerate(zip(prompts, texts, strict=True), 1)
    blocks = [f"--- sample {i} ---\n{p}{shown(t)}" for i, (p, t) in pairs]
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------- plots
def _figure_and_axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """``ax`` and its figure, or a new figure of ``figsize`` when ``ax`` is None (every plot helper takes
    an optional ``ax`` so notebooks can put several plots side by side)."""
    import matplotlib.pyplot as plt

    if ax is None:
        return plt.subplots(figsize=figsize)
    return ax.figure, ax


def plot_loss(
    runs: Mapping[str, RunData] | RunData,
    x: str = "tokens",
    val: bool = True,
    smooth: int = 1,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Training loss (and validation loss, dashed, with markers) against ``x`` ("tokens" or "step")."""

    if isinstance(runs, RunData):
        runs = {runs.name: runs}
    fig, ax = _figure_and_axes(ax, (7, 4))
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


def plot_k_trajectories(
    k: pd.DataFrame, ax: Any = None, title: str = "SWELU k during training", slots: Any = None
) -> Any:
    """One line per activation; colour by group (in-mixer, post-mixer, dense: from ``slots``, the run's
    slot records; None for a run from before them), shade by depth."""
    import matplotlib.pyplot as plt

    fig, ax = _figure_and_axes(ax, (7, 4))
    cmaps = {
        "in-mixer": "Blues",
        "post-mixer": "Greens",
        "dense": "Oranges",
        "attention": "Purples",
        "other": "Greys",
    }
    groups: dict[str, list[str]] = {}
    group_of = analysis.slot_groups(list(k.columns), slots)
    for col in k.columns:
        groups.setdefault(group_of[str(col)], []).append(col)
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


_K_COLOURS = {"in-mixer": "C0", "post-mixer": "C2", "dense": "C1", "attention": "C4", "other": "C7"}


def plot_study_k(runs_by_variant: Mapping[str, Mapping[int, RunData]]) -> Any:
    """One panel per variant: k per step averaged over layers per slot type, one line per seed, with the
    seeds' claimed final range per slot type as a band of the same colour."""
    import matplotlib.pyplot as plt

    variants = [v for v, runs in runs_by_variant.items() if runs]
    fig, axes = plt.subplots(1, max(1, len(variants)), figsize=(5 * max(1, len(variants)), 4), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=False):
        shown: set[str] = set()
        for _, run in sorted(runs_by_variant[variant].items()):
            slots = analysis.shape_group_trajectories(run.k, run.slots)
            for group in slots.columns:
                label = group if group not in shown else None
                ax.plot(slots.index, slots[group], color=_K_COLOURS.get(group, "C7"), lw=1.2, label=label)
                shown.add(group)
        for group in shown:
            lo, hi = analysis.SEED_K_RANGES.get(group, (None, None))
            if lo is not None:
                ax.axhspan(lo, hi, color=_K_COLOURS.get(group, "C7"), alpha=0.12)
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set(
            xlabel="step",
            ylabel="mean k over layers",
            title=f"{variant} ({len(runs_by_variant[variant])} seeds)",
        )
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=8, title="slot (band: seeds' claim)", title_fontsize=8)
    fig.tight_layout()
    return fig


def plot_activation_shapes(
    k_values: Mapping[str, Any],
    z: Sequence[float] | None = None,
    ax: Any = None,
    title: str = "learned activations vs SiLU",
    slots: Any = None,
) -> Any:
    """Each learned SWELU over z (colour by group as in :func:`plot_k_trajectories`) with SiLU in black."""
    import matplotlib.pyplot as plt

    curves = analysis.activation_curves(k_values, slots, z)
    group_of = analysis.slot_groups(list(k_values), slots)
    fig, ax = _figure_and_axes(ax, (7, 4))
    cmaps = {"in-mixer": "Blues", "post-mixer": "Greens", "dense": "Oranges"}
    names = [c for c in curves.columns if c != "silu"]
    for j, col in enumerate(names):
        group = group_of[col]
        cmap = plt.get_cmap(cmaps.get(group, "Greys"))
        k = k_values[col]["k"] if isinstance(k_values[col], Mapping) else k_values[col]
        ax.plot(
            curves.index,
            curves[col],
            color=cmap(0.5 + 0.4 * (j + 1) / (len(names) + 1)),
            lw=1.1,
            label=f"{col} (k={float(k):.2f})",
        )
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

    if isinstance(runs, RunData):
        runs = {runs.name: runs}
    fig, ax = _figure_and_axes(ax, (7, 3))
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


def plot_variant_curves(curves: pd.DataFrame, results: pd.DataFrame) -> Any:
    """Notebook 05's figure: validation loss against tokens per variant (mean over seeds, band min-max)
    beside each variant's training tokens/s."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 4))
    for i, (variant, part) in enumerate(curves.groupby("variant", sort=False)):
        band = part.groupby("tokens").val_loss.agg(["mean", "min", "max"])
        axes[0].plot(band.index, band["mean"], color=f"C{i}", marker="o", ms=3, label=variant)
        axes[0].fill_between(band.index, band["min"], band["max"], color=f"C{i}", alpha=0.2)
    axes[0].set(xlabel="tokens", ylabel="val loss", title="validation loss (band: min-max over seeds)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    results.boxplot(column="tokens_per_s", by="variant", ax=axes[1])
    axes[1].set(title="training tokens/s", xlabel="", ylabel="tokens/s")
    fig.suptitle("")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- training orchestration
# Notebook profiles: "nbval" is the default of every notebook (seconds on a 2-core CPU, so that
# `pytest --nbval-lax` can run it); "cpu-10min" is the README's main job on a machine without a GPU: the
# `small` shape with the dense stack's residual, on the embedded corpus with a 4,096-token BPE trained on its
# training split, tuned for the lowest validation bits per byte after ten minutes on 2 cores (the sweep:
# benchmarks/results/cpu-10min-sweep.md); "gpu" is the seeds' architecture, a starting point for GPUs.
PROFILES: dict[str, dict[str, Any]] = {
    "nbval": {
        "preset": "tiny",
        "tokenizer": "gpt2",
        "max_steps": 12,
        "batch_size": 4,
        "seq_len": 32,
        "lr": 3e-3,
        "warmup": 2,
        "eval_every": 6,
        "eval_batches": 2,
        "log_every": 2,
        "ckpt_every": 0,
    },
    "cpu-10min": {
        "preset": "small",
        "tokenizer": "bpe:4096",
        "model": {"dense_residual": True, "d_state": 4},
        "optimizer": "muon",
        "max_steps": 950,
        "batch_size": 16,
        "seq_len": 256,
        "lr": 1.3e-2,
        "weight_decay": 0.5,
        "min_lr_ratio": 0.0,
        "warmup": 30,
        "eval_every": 100,
        "eval_batches": 4,
        "log_every": 5,
        "ckpt_every": 100,
    },
    "gpu": {
        "preset": "seed-124m",
        "tokenizer": "gpt2",
        "max_steps": 5000,
        "batch_size": 16,
        "seq_len": 1024,
        "lr": 6e-4,
        "warmup": 200,
        "eval_every": 500,
        "eval_batches": 20,
        "log_every": 20,
        "ckpt_every": 1000,
    },
}

# The embedded corpus for `tiny` runs (smoke tests, the notebooks' defaults): a capped slice, so that the
# final evaluation over the whole validation split takes a second, not half a minute. Scores of tiny
# models are never compared with anything; every other preset gets the whole corpus.
SMOKE_DATA_TOKENS = 200_000


def study_runs(study: str, variant: str) -> dict[int, RunData]:
    """The finished runs of one variant of a study (notebook 05's ``<run_name>-<variant>-s<seed>``), by
    seed. A ValueError when there are none (the study has not run here, or not that variant)."""
    pattern = re.compile(rf"^{re.escape(f'{study}-{variant}')}-s(\d+)$")
    found = {
        int(m.group(1)): load_run(path)
        for path in sorted(runs_dir().glob(f"{study}-{variant}-s*"))
        if (m := pattern.match(path.name)) and (path / SUMMARY).is_file()
    }
    if not found:
        raise ValueError(
            f"no finished runs of variant {variant!r} of study {study!r} in {runs_dir()}: run the study "
            f"first (notebooks/studies/{study}.yaml)"
        )
    return found


def data_for(data: str | os.PathLike[str] | None, preset: str | None, tokenizer: str = "gpt2") -> str:
    """``data``, or the embedded corpus prepared for ``preset`` with ``tokenizer`` (``gpt2`` or a corpus
    BPE ``bpe:N``): all of it, or a slice of :data:`SMOKE_DATA_TOKENS` tokens for the ``tiny`` preset (and
    baselines sized to it)."""
    if data is not None:
        return str(data)
    from mswelu.data import default_dataset

    tiny = preset is not None and str(preset).split(":")[-1] == "tiny"
    return str(default_dataset(max_tokens=SMOKE_DATA_TOKENS if tiny else None, tokenizer=tokenizer))


def resolve_profile(profile: str, **overrides: Any) -> dict[str, Any]:
    """A profile's settings with every non-None override applied on top: training settings (a
    :class:`TrainConfig` dict, ``model`` overrides included) and ``tokenizer``, the embedded corpus'
    tokenizer for :func:`data_for` (take it out before building the config)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(PROFILES)}")
    out = dict(PROFILES[profile])
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def reusable(cfg: dict[str, Any], out: Path) -> str | None:
    """None when ``out`` holds a finished run of exactly ``cfg``: every setting (runtime switches such as
    progress bars aside), a dataset with the same fingerprint (not merely the same path) and the same
    package code (:func:`mswelu.provenance.code_version`); else why it cannot be reused."""
    from mswelu.provenance import code_version

    summary = read_json(out / SUMMARY)
    if summary is None or not (out / FINAL).is_dir():
        return "no finished run there"
    if summary.get("interrupted"):
        return "the run there was interrupted"
    why = _differs(cfg, out)
    if why:
        return why
    if (read_json(out / CONFIG) or {}).get("_code_version") != code_version():
        return "trained by other code"
    return None


def _differs(cfg: dict[str, Any], out: Path) -> str | None:
    """Why the run in ``out`` is not a run of ``cfg``'s settings on ``cfg``'s data, or None."""
    from mswelu.data import load_meta

    tc = TrainConfig.coerce(dict(cfg))
    old = read_json(out / CONFIG) or {}
    want = json.loads(json.dumps(tc.to_dict()))
    runtime = {"progress", "tensorboard", "overwrite", "resume", "out", "run_name", "data", "device"}
    changed = sorted(k for k in set(want) - runtime if old.get(k) != want.get(k))
    if changed:
        return f"settings differ: {', '.join(changed)}"
    if tc.data is not None and old.get("_data_fingerprint") != load_meta(tc.data).get("fingerprint"):
        return "trained on other data"
    return None


def run_decision(cfg: dict[str, Any]) -> str:
    """What notebook 03 does with ``cfg``'s run folder, never replacing work it was not asked to:
    ``"train"`` (empty folder, or ``overwrite=True``), ``"reuse"`` (a finished run of these settings, data
    and code), ``"resume"`` (an unfinished run of these settings and data: continued from its newest
    checkpoint). A folder holding anything else is a ValueError naming the difference."""
    tc = TrainConfig.coerce(dict(cfg))
    out = tc.out_dir()
    if is_empty(out) or tc.overwrite:
        return "train"
    if reusable(cfg, out) is None:
        return "reuse"
    finished = (read_json(out / SUMMARY) or {}).get("interrupted") is False and (out / FINAL).is_dir()
    why = _differs(cfg, out) or ("trained by other code" if finished else None)
    if why is None:
        return "resume"
    raise ValueError(
        f"run_name {out.name!r} already holds a run ({why}); nothing was changed: pick another run_name, "
        "or pass overwrite=True to replace it"
    )


def train_or_load(cfg: dict[str, Any], reuse: bool = True) -> RunData:
    """The run of ``cfg`` (a TrainConfig dict), as :func:`run_decision` decides: a finished run of exactly
    these settings, data and code is loaded (``run.reused``), an interrupted one continued, an empty folder
    trained; a folder holding another run is refused unless ``cfg`` says ``overwrite``. ``reuse=False``
    retrains even a matching run (replacing it). A run stopped by Ctrl-C / SIGTERM (checkpointed) raises
    KeyboardInterrupt instead of returning: a comparison must not go on with a half-trained model, and the
    same call again resumes it."""
    from mswelu.train import train

    tc = TrainConfig.coerce(dict(cfg))
    decision = run_decision(cfg) if reuse else "train"
    if decision == "reuse":
        run = load_run(tc.out_dir())
        run.reused = True
        return run
    if decision == "resume":
        tc = dataclasses.replace(tc, resume="auto")
    elif not reuse:
        tc = dataclasses.replace(tc, overwrite=True)
    summary = train(tc)
    if summary.get("interrupted"):
        raise KeyboardInterrupt(
            f"run {tc.out_dir().name} stopped at step {summary.get('steps')} (checkpoint written): run "
            "the same cell or command again to resume it"
        )
    return load_run(tc.out_dir())


def variant_config(base: dict[str, Any], variant: str) -> dict[str, Any]:
    """``base`` (a TrainConfig dict on one of our presets) turned into ``variant``: the variant's
    settings on top, its ``model`` settings merged over the base's (a profile's shape, e.g. the dense
    residual, stays); a Transformer baseline keeps only its own, as the base's describe our architecture."""
    over = variant_overrides(variant, base.get("preset", "small"))
    cfg = {**base, **over}
    if "preset" in over:
        cfg["model"] = dict(over.get("model") or {})
    else:
        cfg["model"] = {**(base.get("model") or {}), **(over.get("model") or {})}
    return cfg


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
    if not variants or not seeds:
        raise ValueError("need at least one variant and one seed")
    rows, curves, runs = [], [], {}
    for variant in variants:
        for seed in seeds:
            name = f"{prefix}-{variant}-s{seed}"
            cfg = {
                **variant_config(base, variant),
                "seed": int(seed),
                "run_name": name,
                "out": str(runs_dir() / name),
            }
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
    from mswelu.data import load_meta, prepare, tokenizer_name

    data = Path(data)
    meta = load_meta(data)
    reported = _documents(data, meta)
    out = data.with_name(f"{data.name}-tune")
    for offset in range(1, max_tries + 1):
        tune = prepare(
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
        if not reported & _documents(out, tune):
            return str(out)
    raise ValueError(
        f"no split seed among the next {max_tries} gives {data} a validation split disjoint from its own; "
        "use a larger corpus or val_fraction"
    )


def _documents(data: Path, meta: dict[str, Any], split: str = "val") -> set[bytes]:
    """The token sequences of a split's documents (to compare splits of one corpus and tokenizer)."""
    ids = np.fromfile(data / f"{split}.bin", dtype=meta["dtype"])
    ends = np.flatnonzero(ids == meta["eos_id"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return {ids[s:e].tobytes() for s, e in zip(starts, ends, strict=True)}


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
    if not lrs or any(not isinstance(x, (int, float)) or x <= 0 for x in lrs):
        raise ValueError(f"lrs must be a non-empty list of positive numbers, got {lrs!r}")
    tune = tuning_data(base["data"])
    rows = []
    for variant in variants:
        for lr in lrs:
            name = f"{prefix}-tune-{variant}-lr{lr:g}"
            cfg = {
                **variant_config(base, variant),
                "data": tune,
                "lr": float(lr),
                "seed": int(seed),
                "run_name": name,
                "out": str(runs_dir() / name),
            }
            try:
                loss = float(train_or_load(cfg, reuse=reuse).final_metrics()["final_val_loss"])
            except FloatingPointError:  # the trainer stops a run whose steps keep going non-finite
                loss = math.inf
            diverged = not math.isfinite(loss)
            rows.append(
                {
                    "variant": variant,
                    "lr": float(lr),
                    "tune_val_loss": loss,
                    "diverged": diverged,
                    "run": name,
                }
            )
    table = pd.DataFrame(rows)
    chosen = {}
    for variant, part in table.groupby("variant", sort=False):
        ok = part[~part.diverged]
        if ok.empty:
            raise ValueError(f"every lr of {list(lrs)} diverged for {variant!r}: extend the grid downwards")
        chosen[str(variant)] = float(ok.sort_values(["tune_val_loss", "lr"]).lr.iloc[0])
    return table, chosen


def smoke_checks(run: RunData, expect_k: bool = True) -> dict[str, Any]:
    """Sanity checks of a short run; raises AssertionError naming what is off.

    Losses finite, the loss fell, tokens = steps x tokens per step, a validation loss exists and (for
    SWELU models) every learnable k moved from its init."""
    tr, ev = run.train, run.eval
    s = run.summary or {}
    problems = []
    if tr.empty:
        problems.append("no training steps logged")
    else:
        if not np.isfinite(tr.loss).all():
            problems.append("non-finite training loss")
        if not tr.loss.iloc[-1] < tr.loss.iloc[0]:
            problems.append(f"loss did not fall ({tr.loss.iloc[0]:.4f} -> {tr.loss.iloc[-1]:.4f})")
    if ev.empty or not np.isfinite(ev.val_loss).all():
        problems.append("no finite validation loss")
    if (
        s.get("tokens_per_step")
        and s.get("steps") is not None
        and s["tokens"] != s["steps"] * s["tokens_per_step"]
    ):
        problems.append(f"tokens {s['tokens']} != steps {s['steps']} x {s['tokens_per_step']}")
    k = run.k
    moved = 0
    if expect_k:
        if k.empty:
            problems.append("no k values logged")
        else:
            moved = int(((k.iloc[-1] - 1.0).abs() > 1e-6).sum())
            if moved == 0:
                problems.append("no k moved from its init")
    if problems:
        raise AssertionError("smoke run failed: " + "; ".join(problems))
    return {
        "steps": int(tr.step.iloc[-1]),
        "tokens": int(tr.tokens.iloc[-1]),
        "num_k": int(k.shape[1]),
        "k_moved": moved,
        "loss_fell": True,
    }


def ensure_run(run: str | os.PathLike[str] | None = None) -> Path:
    """The run to analyse: ``run`` (a path, or a name under ``runs/``), else the newest run with a saved
    model, else a fresh smoke run (profile ``nbval``) trained now into ``runs/smoke-auto``."""
    if run is not None:
        path = resolve_run(run)
        load_run(path)  # raises a clear ValueError when it is not a run
        return path
    found = newest_run(require_model=True)
    if found is not None:
        return found
    settings = resolve_profile("nbval")
    tokenizer = settings.pop("tokenizer")
    cfg = dict(
        settings,
        data=data_for(None, settings["preset"], tokenizer),
        run_name="smoke-auto",
        out=str(runs_dir() / "smoke-auto"),
        progress=False,
        tensorboard=False,
    )
    return train_or_load(cfg).path


def k_gradients_for_run(run: RunData, batch_size: int = 4, seq_len: int = 32) -> dict[str, float]:
    """|dL/d(value)| of each slot's first learnable shape parameter (k for SWELU, beta for Swish) of the
    run's saved model, on the first validation batch of the run's data (:mod:`mswelu.shape_gradients`)."""
    from mswelu.data import TokenLoader
    from mswelu.models import max_context
    from mswelu.runs import load_model
    from mswelu.shape_gradients import shape_gradients

    model, _ = load_model(run.path)
    if not hasattr(model, "shape_slots"):
        return {}
    data = run.config.get("data")
    if not data:
        from mswelu.data import default_dataset

        data = default_dataset()
    limit = max_context(model)
    seq_len = min(seq_len, limit - 1) if limit else seq_len
    loader = TokenLoader(data, split="val", batch_size=batch_size, seq_len=seq_len, mode="sequential")
    batch = next(iter(loader.iter_eval_batches(max_batches=1)))
    return {slot: next(iter(g.values())) for slot, g in shape_gradients(model, batch).items() if g}


# --------------------------------------------------------------------------- launching (notebook 03)
def plan_launch(
    base: dict[str, Any],
    run_name: str,
    launch: str = "auto",
    n_gpus: int | None = None,
    variants: Sequence[str] | None = None,
    visible_gpus: int | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """What notebook 03 will train: one entry per process group with its name, launch mode, GPUs and
    TrainConfig dict; ``overwrite`` lets it replace earlier runs of the same names (see
    :func:`run_decision`). ``independent`` gives each of ``n_gpus`` GPUs its own model (seeds ``seed + i``);
    ``ddp`` trains one model on ``n_gpus`` GPUs; ``auto`` follows :func:`mswelu.launch.resolve_mode` for
    each planned model (``ddp`` with two or more GPUs, else ``single``)."""
    resolve_mode(launch, 0, 1)  # a bad mode fails first
    if visible_gpus is None:
        import torch

        visible_gpus = torch.cuda.device_count()
    n = visible_gpus if n_gpus is None else int(n_gpus)
    launch = resolve_mode(launch, n, n_runs=1)
    if launch in ("ddp", "independent") and not 1 <= n <= visible_gpus:
        raise ValueError(f"launch={launch!r} needs 1..{visible_gpus} GPUs (visible), got n_gpus={n}")
    plan = []
    for variant in list(variants) if variants else [None]:
        name = run_name if variant is None else f"{run_name}-{variant}"
        cfg = {
            **(base if variant is None else variant_config(base, variant)),
            "run_name": name,
            "out": str(runs_dir() / name),
            "overwrite": overwrite,
        }
        if launch == "independent":  # the seeds' "6 independent models": one per GPU, seeds seed..seed+n-1
            for i in range(n):
                seed_i = int(cfg.get("seed", 0)) + i
                sub = f"{name}-s{seed_i}"
                plan.append(
                    {
                        "name": sub,
                        "group": name,
                        "launch": launch,
                        "gpus": [i],
                        "config": {
                            **cfg,
                            "seed": seed_i,
                            "run_name": sub,
                            "out": str(runs_dir() / sub),
                            "progress": False,
                        },
                    }
                )
        else:
            plan.append(
                {
                    "name": name,
                    "group": name,
                    "launch": launch,
                    "gpus": list(range(n)) if launch == "ddp" else [],
                    "config": cfg,
                }
            )
    return plan


def execute_plan(
    plan: Sequence[dict[str, Any]], on_metrics: Callable[[str, dict[str, Any]], None] | None = None
) -> dict[str, RunData]:
    """Run a :func:`plan_launch` plan through :func:`mswelu.launch.launch`, each run as :func:`run_decision`
    says (trained, continued from its checkpoint, or reused): single entries in this process one after the
    other, ``ddp`` entries as torchrun jobs, the ``independent`` runs of one variant all at once (one GPU
    each). ``on_metrics(run_name, record)`` sees each metrics record as it is written (e.g.
    ``report.live``). Raises if any run fails."""
    from mswelu.launch import launch

    decisions = {e["name"]: run_decision(e["config"]) for e in plan}  # refuse before anything trains
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in plan:
        if decisions[entry["name"]] == "resume":
            entry = {**entry, "config": {**entry["config"], "resume": "auto"}}
        if decisions[entry["name"]] != "reuse":
            groups.setdefault((entry["launch"], entry["group"]), []).append(entry)
    runs: dict[str, RunData] = {}
    for (mode, _), entries in groups.items():
        if mode == "independent":
            variants = [
                {"seed": e["config"]["seed"], "run_name": e["name"], "out": e["config"]["out"]}
                for e in entries
            ]
            launch(
                "independent",
                base=entries[0]["config"],
                variants=variants,
                n_gpus=len(entries),
                on_metrics=on_metrics,
            )
        else:
            for e in entries:
                launch(
                    mode,
                    base=e["config"],
                    n_gpus=len(e["gpus"]) if mode == "ddp" else None,
                    on_metrics=on_metrics,
                )
    for e in plan:
        runs[e["name"]] = load_run(e["config"]["out"])
        runs[e["name"]].reused = decisions[e["name"]] == "reuse"
    return {e["name"]: runs[e["name"]] for e in plan}
