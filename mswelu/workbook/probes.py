"""Notebook 07's synthetic probes: every task x level x variant x seed trained by the real trainer (a task is
a data source, :mod:`mswelu.data.tasks`), the lr bracketed per task and variant, and the hypotheses judged by
the one evaluator. Accuracy enters it as an error rate (``1 - val_accuracy``), so a ``gain`` is the relative
error reduction paired by seed; each task and level is its own row (variants named
``<variant>@<task>:<level>``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from mswelu import analysis
from mswelu.analysis.claims import Claim
from mswelu.analysis.schema import StudyData
from mswelu.analysis.tuning import LrStatus
from mswelu.base import stats
from mswelu.base.run_names import run_name
from mswelu.data.tasks import IGNORE, TaskSource
from mswelu.runs.folder import RunData
from mswelu.workbook.compare import run_or_record, variant_config
from mswelu.workbook.ledger import Ledger, Record
from mswelu.workbook.prologue import require_list
from mswelu.workbook.reuse import as_run

__all__ = [
    "accuracy_table",
    "majority_accuracy",
    "plot_accuracy_by_level",
    "plot_accuracy_curves",
    "probe_claims",
    "probe_config",
    "probe_lr_sweep",
    "probe_study",
    "run_probes",
    "unit",
]


def unit(variant: str, task: str, level: str) -> str:
    """The name of one variant on one task and level in the study data the claims read."""
    return f"{variant}@{task}:{level}"


def probe_config(
    base: dict[str, Any], task: str, level: str, variant: str, test_examples: int, tune: bool = False
) -> dict[str, Any]:
    """``base`` as ``variant`` trained on ``task`` at ``level`` (``tune``: scored on the tuning set)."""
    text = f"task:{task}?level={level}&test={int(test_examples)}" + ("&eval=tune" if tune else "")
    source = TaskSource(text)
    return {**variant_config(base, variant), "data": source.text, "seq_len": source.seq_len}


def majority_accuracy(task: str, level: str, test_examples: int) -> float:
    """The share of ``task``'s test-set answers at ``level`` (scored tokens, as ``val_accuracy`` counts them)
    that equal its most common answer: what always giving that one answer would score. An accuracy near it
    shows nothing learned beyond the answers' distribution."""
    source = TaskSource(f"task:{task}?level={level}&test={int(test_examples)}")
    answers = torch.cat([y[y != IGNORE] for y in (b[:, 1] for b in source.test_batches(256))])
    return float(torch.bincount(answers).max()) / answers.numel() if answers.numel() else math.nan


def accuracy_table(results: pd.DataFrame, test_examples: int) -> pd.DataFrame:
    """Mean, sd and seeds of the accuracy per task, level and variant, beside the level's
    :func:`majority_accuracy` (``most_common_answer``)."""
    table = (
        results.groupby(["task", "level", "variant"], sort=False)
        .val_accuracy.agg(["mean", "std", "count"])
        .reset_index()
    )
    levels = list(zip(table.task, table.level, strict=True))
    floors = {(t, lv): majority_accuracy(t, lv, test_examples) for t, lv in dict.fromkeys(levels)}
    return table.assign(most_common_answer=[floors[one] for one in levels])


def _accuracies(run: RunData | Record) -> list[dict[str, Any]]:
    """Every evaluation of a run (or its study record) on a task: step, tokens, val_loss, val_accuracy (the
    final one last)."""
    rows = [
        r
        for r in (run.curve if isinstance(run, Record) else run.records)
        if r.get("val_accuracy") is not None
    ]
    keep = ("step", "tokens", "val_loss", "val_accuracy")
    return list({int(r["step"]): {k: r.get(k) for k in keep} for r in rows}.values())


def _train(
    cfg: dict[str, Any], reuse: bool, ledger: Ledger | None, variant: str, seed: int, kind: str
) -> tuple[RunData | Record, list[dict[str, Any]]]:
    """The run of ``cfg``: from a study's ``ledger`` record when it holds this run, else trained (and recorded
    there)."""
    run = run_or_record(cfg, cfg["run_name"], variant, seed, kind, reuse, ledger)
    evals = _accuracies(run)
    if not evals:
        raise ValueError(f"run {cfg['run_name']} logged no accuracy: is its data a task?")
    return run, evals


def run_probes(
    base: dict[str, Any],
    tasks: Mapping[str, Sequence[str]],
    variants: Sequence[str],
    seeds: Sequence[int],
    prefix: str,
    test_examples: int = 512,
    lrs: Mapping[str, float] | None = None,
    reuse: bool = True,
    ledger: Ledger | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or reuse) every task x level x variant x seed, each at its lr in ``lrs`` (by :func:`unit`);
    with a study's ``ledger`` every model comes from its record. Returns (rows; evaluations)."""
    require_list("variants", variants)
    require_list("seeds", seeds)
    rows, curves = [], []
    for task, levels in tasks.items():
        require_list(f"levels of {task}", levels)
        for level in levels:
            for variant in variants:
                for seed in seeds:
                    name = run_name(prefix, task.replace("_", ""), level, variant, seed=int(seed))
                    one = probe_config(base, task, level, variant, test_examples)
                    cfg = as_run(one, name, seed=int(seed))
                    if lrs is not None:
                        cfg["lr"] = float(lrs[unit(variant, task, "*")])
                    run, evals = _train(cfg, reuse, ledger, variant, int(seed), "run")
                    m = run.final_metrics()
                    ids = {"task": task, "level": level, "variant": variant, "seed": int(seed)}
                    final = evals[-1]
                    rows.append(
                        {
                            **ids,
                            "lr": float(cfg.get("lr", base.get("lr", math.nan))),
                            "val_accuracy": final["val_accuracy"],
                            "val_error": 1.0 - final["val_accuracy"],
                            "val_loss": final["val_loss"],
                            "params": m.get("params"),
                            "tokens": m.get("tokens"),
                            "run": name,
                        }
                    )
                    curves += [{**ids, **e} for e in evals]
    return pd.DataFrame(rows), pd.DataFrame(curves)


def probe_lr_sweep(
    base: dict[str, Any],
    tasks: Mapping[str, str],
    variants: Sequence[str],
    grid: Sequence[float],
    prefix: str,
    test_examples: int = 512,
    seed: int = 0,
    reuse: bool = True,
    ledger: Ledger | None = None,
) -> tuple[pd.DataFrame, dict[str, LrStatus]]:
    """A bracketed lr sweep per variant and task on its tuning set. Returns (points; statuses)."""
    require_list("lr_grid", grid)
    rows: list[dict[str, Any]] = []

    def point(task: str, variant: str, lr: float) -> None:
        level = tasks[task]
        name = run_name(f"{prefix}-tune", task.replace("_", ""), level, variant, lr=lr)
        cfg = as_run(probe_config(base, task, level, variant, test_examples, tune=True), name, seed=seed)
        _, evals = _train({**cfg, "lr": float(lr)}, reuse, ledger, variant, seed, "sweep")
        loss = evals[-1]["val_loss"]
        loss = math.inf if loss is None or not math.isfinite(loss) else float(loss)
        key = unit(variant, task, "*")
        rows.append({"variant": key, "lr": float(lr), "tune_val_loss": loss, "diverged": math.isinf(loss)})

    for task in tasks:
        for variant in variants:
            for lr in grid:
                point(task, variant, lr)
    while todo := analysis.extend_lr_grid(pd.DataFrame(rows), grid):
        for key, more in todo.items():
            variant, task = key.split("@")[0], key.split("@")[1].split(":")[0]
            for lr in more:
                point(task, variant, lr)
    sweep = pd.DataFrame(rows)
    return sweep, analysis.lr_status(sweep, grid)


def probe_study(
    results: pd.DataFrame,
    name: str,
    tasks: Mapping[str, Sequence[str]],
    test_examples: int,
    lr: Mapping[str, LrStatus] | None = None,
    lr_grid: Sequence[float] = (),
    primary: str = "",
) -> StudyData:
    """The study data the claims read: a "variant" per variant, task and level, with error rates; its
    context says what every row was scored on and names the pre-registered ``primary`` claim, if any."""
    triples = list(zip(results.variant, results.task, results.level, strict=True))
    runs = results.assign(variant=[unit(v, t, lv) for v, t, lv in triples])
    status = {}
    for v, t, lv in triples:
        if lr and unit(v, t, "*") in lr:
            status[unit(v, t, lv)] = lr[unit(v, t, "*")]
    evaluated_on = (
        f"on its task and level's fixed test set ({test_examples:,} examples from a random stream of their "
        "own, not training's or the tuning set's; from held-out inputs where the task's paper holds some "
        "out): the interval covers seeds (init and training examples), not other test sets"
    )
    context = {
        "name": name,
        "compare": {},
        "lr_grid": list(lr_grid),
        "tasks": {t: list(levels) for t, levels in tasks.items()},
        "evaluated_on": evaluated_on,
        "primary": primary,
    }
    return StudyData(context=context, runs=runs, lr=status)


def probe_claims(
    hypotheses: Sequence[Mapping[str, Any]], tasks: Mapping[str, Sequence[str]], primary: str = ""
) -> list[Claim]:
    """One claim per hypothesis, task and level: ``ours`` against ``base`` on the error rate, judged at
    the study's own scale (a hypothesis of the study names no other). A ``primary`` that names none of them
    is a ValueError (call it before training, so that a misspelt primary costs nothing)."""
    claims = []
    for h in hypotheses:
        for task in [t for t in h["tasks"] if t in tasks]:
            for level in tasks[task]:
                claims.append(
                    Claim(
                        name=f"{h['name']} · {task} {level}",
                        says=h["says"],
                        measure="gain",
                        test=h["test"],
                        effect=h["effect"],
                        ours=unit(h["ours"], task, level),
                        base=unit(h["base"], task, level),
                        value="val_error",
                        note="error rate = 1 - exact-match accuracy on the answers; relative reduction",
                    )
                )
    if primary and primary not in {c.name for c in claims}:
        names = ", ".join(repr(c.name) for c in claims)
        raise ValueError(f"primary {primary!r} names none of the hypotheses' rows: {names}")
    return claims


def _axes(count: int, height: float) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, count, figsize=(4.5 * count, height), squeeze=False)
    return fig, axes[0]


def plot_accuracy_by_level(
    results: pd.DataFrame, tasks: Mapping[str, Sequence[str]], floors: pd.DataFrame | None = None
) -> Any:
    """Accuracy against difficulty per task: seeds as dots, each variant's mean with its t interval; with
    ``floors`` (an :func:`accuracy_table`), each level's most-common-answer accuracy as a dashed grey line."""
    fig, axes = _axes(len(tasks), 3.4)
    variants = list(dict.fromkeys(results.variant))
    for ax, (task, levels) in zip(axes, tasks.items(), strict=True):
        part = results[results.task == task]
        for i, variant in enumerate(variants):
            rows = part[part.variant == variant]
            shift = (i - (len(variants) - 1) / 2) * 0.08
            xs = [list(levels).index(lv) + shift for lv in rows.level]
            ax.scatter(xs, rows.val_accuracy, s=12, alpha=0.6, color=f"C{i}")
            ivs = [stats.t_interval(rows[rows.level == lv].val_accuracy.to_numpy(float)) for lv in levels]
            lo = [iv.mean - iv.lo if math.isfinite(iv.lo) else 0.0 for iv in ivs]
            hi = [iv.hi - iv.mean if math.isfinite(iv.hi) else 0.0 for iv in ivs]
            xs = [j + shift for j in range(len(levels))]
            ax.errorbar(xs, [iv.mean for iv in ivs], yerr=[lo, hi], color=f"C{i}", label=variant, capsize=3)
        if floors is not None:
            level_floor = floors[floors.task == task].groupby("level").most_common_answer.first()
            for j, lv in enumerate(levels):
                label = "most common answer" if j == 0 else None
                ax.hlines(level_floor.get(lv, math.nan), j - 0.4, j + 0.4, color="0.5", ls="--", label=label)
        ax.set_xticks(range(len(levels)), list(levels))
        ax.set(title=task, xlabel="difficulty level", ylabel="accuracy", ylim=(-0.02, 1.02))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_accuracy_curves(curves: pd.DataFrame, tasks: Mapping[str, Sequence[str]]) -> Any:
    """Learning curves per task: each model's accuracy at every evaluation, coloured by variant."""
    fig, axes = _axes(len(tasks), 3.2)
    variants = list(dict.fromkeys(curves.variant))
    for ax, task in zip(axes, tasks, strict=True):
        part = curves[curves.task == task]
        for i, variant in enumerate(variants):
            for j, (_, c) in enumerate(part[part.variant == variant].groupby(["level", "seed"], sort=False)):
                ax.plot(c.tokens, c.val_accuracy, color=f"C{i}", alpha=0.5, label=variant if j == 0 else None)
        ax.set(title=task, xlabel="training tokens", ylabel="accuracy", ylim=(-0.02, 1.02))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
