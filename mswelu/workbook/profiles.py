"""What the notebooks train (profiles, data per preset, smoke and comparison settings), built here, not in
cells.
"""

from __future__ import annotations

import os
from typing import Any

from mswelu.base.errors import check_choice
from mswelu.data import dataset_from_settings, default_dataset
from mswelu.workbook.reuse import as_run

__all__ = [
    "PROFILES",
    "SMOKE_DATA_TOKENS",
    "comparison_config",
    "data_for",
    "resolve_profile",
    "schedule_settings",
    "smoke_config",
    "split_data",
]

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


def data_for(
    data: str | os.PathLike[str] | dict[str, Any] | None, preset: str | None, tokenizer: str = "gpt2"
) -> str:
    """``data`` (a folder or settings) prepared with ``tokenizer``, or the corpus for ``preset``."""
    if isinstance(data, dict):
        return str(dataset_from_settings(data, tokenizer))
    if data is not None:
        return str(data)
    tiny = preset is not None and str(preset).split(":")[-1] == "tiny"
    return str(default_dataset(max_tokens=SMOKE_DATA_TOKENS if tiny else None, tokenizer=tokenizer))


def split_data(splits: list[dict[str, Any]], preset: str | None, tokenizer: str = "gpt2") -> dict[str, str]:
    """A study's disjoint splits (``splits``: data settings of one fold scheme, e.g. ``[{"folds": 4, "fold":
    1}, {"folds": 4, "fold": 2}, ...]``) prepared: each fold's label (``fold<j>``) and folder. Fold 0 is the
    scheme's tuning split, disjoint from every fold's validation: the lr sweep's, never a reported split."""
    schemes = {(str(s.get("source", "default")), s.get("folds")) for s in splits if isinstance(s, dict)}
    if not splits or len(schemes) != 1 or not all(isinstance(s, dict) and s.get("folds") for s in splits):
        raise ValueError(
            "splits must be data settings of one fold scheme, e.g. [{'folds': 4, 'fold': 1}, ...]; "
            f"got {splits!r}"
        )
    labels = [f"fold{int(s['fold'])}" for s in splits]
    if "fold0" in labels:
        raise ValueError("fold 0 is the fold scheme's tuning split: report folds 1 to folds - 1")
    if len(set(labels)) != len(labels):
        raise ValueError(f"splits name a fold twice: {labels}")
    return {label: data_for(s, preset, tokenizer) for label, s in zip(labels, splits, strict=True)}


def data_label(data: str | os.PathLike[str] | dict[str, Any] | None) -> str:
    """What claims compare data by: the corpus' description, the recorded source, else the path as given."""
    from mswelu.analysis.reader import EMBEDDED
    from mswelu.data import load_meta

    if data is None:
        return EMBEDDED
    if isinstance(data, list):  # a study's splits: the corpus and which folds
        folds = ", ".join(str(s["fold"]) for s in data)
        return (
            data_label({k: v for k, v in data[0].items() if k != "fold"})
            + f" (folds {folds} of {data[0]['folds']})"
        )
    if isinstance(data, dict):  # data settings: the source, and the fold when there is one
        source = str(data.get("source", "default"))
        label = EMBEDDED if source in ("default", "shakespeare") else source
        return label + (f" (fold {data['fold']} of {data['folds']})" if data.get("fold") is not None else "")
    try:
        source = str(load_meta(data).get("source") or data)
    except ValueError:  # not prepared here (a fresh clone rebuilding a study from its records)
        return str(data)
    return EMBEDDED if source == "default" else source


def resolve_profile(profile: str, **overrides: Any) -> dict[str, Any]:
    """A profile's settings with every non-None override on top (``mixer`` with its own shape settings)."""
    check_choice("profile", profile, PROFILES)
    mixer = overrides.pop("mixer", None)
    out = dict(PROFILES[profile])
    out.update({k: v for k, v in overrides.items() if v is not None})
    if mixer is not None:  # another sequence mixer, with its own shape settings over the profile's
        from mswelu.training.variants import MIXER_SETTINGS

        out["model"] = {**(out.get("model") or {}), "mixer": mixer, **MIXER_SETTINGS.get(mixer, {})}
    return out


def smoke_config(
    run_name: str,
    *,
    preset: str,
    activation: str | None,
    data: str | os.PathLike[str],
    max_steps: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    seed: int,
    device: str,
) -> dict[str, Any]:
    """Notebook 02's check run: every step logged, two evaluations, no checkpoints, replaced on rerun."""
    settings = {
        "preset": preset,
        "activation": activation,
        "data": str(data),
        "max_steps": max_steps,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "lr": lr,
        "warmup": max(1, max_steps // 10),
        "seed": seed,
        "eval_every": max(1, max_steps // 2),
        "eval_batches": 2,
        "log_every": 1,
        "ckpt_every": 0,
        "device": device,
        "overwrite": True,
        "tensorboard": False,
        "progress": False,
    }
    return as_run(settings, run_name)


def schedule_settings(max_steps: int, evaluations: int) -> dict[str, int]:
    """What scales with a comparison run's budget of ``max_steps``: the warmup (a tenth) and the spacing of
    its ``evaluations``."""
    return {"warmup": max(1, max_steps // 10), "eval_every": max(1, max_steps // max(1, evaluations))}


def comparison_config(
    *,
    preset: str,
    data: str | os.PathLike[str],
    max_steps: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    optimizer: str,
    model: dict[str, Any],
    ckpt_every: int,
    device: str,
    overwrite: bool,
    evaluations: int = 10,
) -> dict[str, Any]:
    """Notebook 05's base: one data, budget, optimizer and schedule, whole-split evaluations."""
    return {
        "preset": preset,
        "data": str(data),
        "max_steps": max_steps,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "lr": lr,
        "optimizer": optimizer,
        "model": model,
        **schedule_settings(max_steps, evaluations),
        "eval_batches": 0,
        "log_every": 1,
        "ckpt_every": ckpt_every,
        "device": device,
        "tensorboard": False,
        "progress": False,
        "overwrite": overwrite,
    }
