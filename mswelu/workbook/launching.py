"""Notebook 03's launches: a plan (one entry per process group, with what happens to its run folder)
and its execution through :func:`mswelu.launch.launch`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

import mswelu.launch
from mswelu.base.errors import RunInterrupted
from mswelu.base.run_names import run_name as build_run_name
from mswelu.runs.folder import RunData, load_run
from mswelu.workbook.compare import variant_config
from mswelu.workbook.prologue import require_list
from mswelu.workbook.reuse import announce_reuse, as_run, run_decision

__all__ = ["execute_plan", "plan_launch"]


def plan_launch(
    base: dict[str, Any],
    run_name: str,
    launch: str = "auto",
    n_gpus: int | None = None,
    variants: Sequence[str] | None = None,
    visible_gpus: int | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """What notebook 03 will train: one entry per process group (name, mode, GPUs, TrainConfig dict and
    the :func:`run_decision` for its folder, so a name holding other work is refused before anything is
    written). ``independent`` gives each GPU its own model (seeds ``seed + i``); ``ddp``/``fsdp`` train one
    model on ``n_gpus``; ``auto`` follows :func:`mswelu.launch.resolve_mode`."""
    mswelu.launch.resolve_mode(launch, 0, 1)  # a bad mode fails first
    require_list("variants", variants)  # -p variants swelu: a string, not a list of one
    if visible_gpus is None:
        visible_gpus = torch.cuda.device_count()
    n = visible_gpus if n_gpus is None else int(n_gpus)
    launch = mswelu.launch.resolve_mode(launch, n, n_runs=1)
    if launch in ("ddp", "fsdp", "independent") and not 1 <= n <= visible_gpus:
        raise ValueError(f"launch={launch!r} needs 1..{visible_gpus} GPUs (visible), got n_gpus={n}")
    plan = []
    for variant in list(variants) if variants else [None]:
        name = build_run_name(run_name, variant)
        cfg = as_run(base if variant is None else variant_config(base, variant), name, overwrite=overwrite)
        if launch == "independent":  # the seeds' "6 independent models": one per GPU, seeds seed..seed+n-1
            for i in range(n):
                seed_i = int(cfg.get("seed", 0)) + i
                sub = build_run_name(name, seed=seed_i)
                sub_cfg = as_run(cfg, sub, seed=seed_i, progress=False)
                plan.append({"name": sub, "group": name, "launch": launch, "gpus": [i], "config": sub_cfg})
        else:
            gpus = list(range(n)) if launch in ("ddp", "fsdp") else []
            plan.append({"name": name, "group": name, "launch": launch, "gpus": gpus, "config": cfg})
    for entry in plan:
        entry["decision"] = run_decision(entry["config"])
    return plan


def execute_plan(
    plan: Sequence[dict[str, Any]], on_metrics: Callable[[str, dict[str, Any]], None] | None = None
) -> dict[str, RunData]:
    """Run a :func:`plan_launch` plan through :func:`mswelu.launch.launch` (single entries in turn,
    ``ddp`` as torchrun jobs, one variant's ``independent`` runs at once); ``on_metrics(run_name, record)``
    sees each metrics record. Raises if any run fails."""
    decisions = {e["name"]: run_decision(e["config"]) for e in plan}  # refuse before anything trains
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in plan:
        if decisions[entry["name"]] == "resume":
            entry = {**entry, "config": {**entry["config"], "resume": "auto"}}
        if decisions[entry["name"]] != "reuse":
            groups.setdefault((entry["launch"], entry["group"]), []).append(entry)
    for (mode, _), entries in groups.items():
        if mode == "independent":
            variants = [
                {"seed": e["config"]["seed"], "run_name": e["name"], "out": e["config"]["out"]}
                for e in entries
            ]
            _stop_if_interrupted(
                mswelu.launch.launch(
                    "independent",
                    base=entries[0]["config"],
                    variants=variants,
                    n_gpus=len(entries),
                    on_metrics=on_metrics,
                )
            )
        else:
            for e in entries:
                _stop_if_interrupted(
                    mswelu.launch.launch(
                        mode,
                        base=e["config"],
                        n_gpus=len(e["gpus"]) if mode in ("ddp", "fsdp") else None,
                        on_metrics=on_metrics,
                    )
                )
    runs: dict[str, RunData] = {}
    for e in plan:
        runs[e["name"]] = load_run(e["config"]["out"])
        runs[e["name"]].reused = decisions[e["name"]] == "reuse"
        if runs[e["name"]].reused:
            announce_reuse(e["config"]["out"])
    return runs


def _stop_if_interrupted(summaries: Sequence[dict[str, Any]]) -> None:
    """Raise :class:`RunInterrupted` when a training was stopped (the same command continues it)."""
    stopped = [s for s in summaries if s.get("interrupted")]
    if stopped:
        where = ", ".join(
            f"{s.get('run_name')} at step {s.get('steps')}/{s.get('total_steps')}" for s in stopped
        )
        raise RunInterrupted(
            f"training interrupted ({where}) after writing a checkpoint; run the same command again to "
            "continue from it"
        )
