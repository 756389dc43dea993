"""What the analysis notebooks check and start from: smoke checks, the run to analyse, shape gradients."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mswelu import analysis
from mswelu.data import TokenLoader, default_dataset
from mswelu.models.build import max_context
from mswelu.models.shape_gradients import shape_gradients
from mswelu.runs.folder import RunData, load_run, newest_run, resolve_run
from mswelu.runs.model import load_model
from mswelu.workbook.profiles import data_for, resolve_profile
from mswelu.workbook.reuse import as_run, train_or_load

__all__ = ["ensure_run", "shape_gradients_for_run", "smoke_checks"]

#: the smoke run :func:`ensure_run` trains when there is no run to analyse
SMOKE_RUN = "smoke-auto"


def smoke_checks(run: RunData, expect_k: bool | None = None) -> dict[str, Any]:
    """Sanity checks of a short run (finite, falling loss, token count, a validation loss, every learnable
    shape parameter moved), an AssertionError naming what is off. ``expect_k`` None: check shapes when the run
    has learnable ones; False: never; True: it must have some."""
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
    learnable = list(dict.fromkeys(p for slot in run.slots.values() for p in slot.learnable))
    recorded = bool(learnable)  # a run from before the slot records: every logged shape value counts
    learnable = learnable or run.shape_params()
    count = moved = 0
    for param in learnable:
        logged = run.shape(param)  # every slot logged per step; the last step's values
        last = {} if logged.empty else {str(c): float(v) for c, v in logged.iloc[-1].items()}
        table = analysis.final_shape_table(last, run.slots, param)
        table = table[table.learnable] if recorded else table
        count += len(table)
        moved += int((table.deviation.abs() > 1e-6).sum())
    expect = bool(learnable) if expect_k is None else expect_k
    if expect and count == 0:
        problems.append("no learnable shape parameter (k, beta, ...) logged")
    elif expect and moved == 0:
        problems.append(f"no learnable shape parameter moved from its init ({', '.join(learnable)})")
    if problems:
        raise AssertionError("smoke run failed: " + "; ".join(problems))
    return {
        "steps": int(tr.step.iloc[-1]),
        "tokens": int(tr.tokens.iloc[-1]),
        "num_k": count,
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
    data = data_for(None, settings["preset"], tokenizer)
    return train_or_load(as_run(settings, SMOKE_RUN, data=data, progress=False, tensorboard=False)).path


def shape_gradients_for_run(
    run: RunData, batch_size: int = 4, seq_len: int = 32
) -> dict[str, dict[str, float]]:
    """``{slot: {param: |dL/dparam|}}`` of the run's model on the first validation batch of its data."""
    model, _ = load_model(run.path)
    if not hasattr(model, "shape_slots"):
        return {}
    data = run.config.get("data") or default_dataset()
    limit = max_context(model)
    seq_len = min(seq_len, limit - 1) if limit else seq_len
    loader = TokenLoader(data, split="val", batch_size=batch_size, seq_len=seq_len, mode="sequential")
    batch = next(iter(loader.iter_eval_batches(max_batches=1)))
    return shape_gradients(model, batch)
