"""Downstream task scores of a notebook's runs (lm-eval, through :mod:`mswelu.evaluate`), each task once per
run: a score with the same ``limit`` is read from the run's ``tasks.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mswelu.runs.folder import RunData

__all__ = ["task_scores"]

_METRICS = ("acc", "acc_norm", "perplexity", "word_perplexity", "n")


def task_scores(
    runs: Mapping[str, RunData],
    tasks: Sequence[str] = (),
    limit: int | float | None = None,
    batch_size: int = 8,
) -> pd.DataFrame:
    """One row per run and task with lm-eval's main metrics; empty when no run has scores."""
    from mswelu import evaluate

    rows: list[dict[str, Any]] = []
    for name, run in runs.items():
        scored = evaluate.read_task_scores(run.path)
        todo = [t for t in tasks if t not in scored or scored[t].get("limit") != limit]
        if todo:
            evaluate.run_tasks(run.path, todo, limit=limit, batch_size=batch_size)
            scored = evaluate.read_task_scores(run.path)
        for task, metrics in scored.items():
            rows.append({"run": name, "task": task, **{m: metrics[m] for m in _METRICS if m in metrics}})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index(["run", "task"])
