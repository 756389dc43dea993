"""Continuing a run: which checkpoint, whether it fits the current config, and the trainer state a checkpoint
carries besides weights and optimizer (:class:`TrainState`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mswelu.base import distributed as du
from mswelu.runs.folder import CHECKPOINTS
from mswelu.training import checkpoint as ckpt
from mswelu.training import parallel
from mswelu.training.config import NUMERIC_CHANGES, RESUMABLE_CHANGES, changed_settings
from mswelu.training.sharded_checkpoint import load_sharded, save_sharded

__all__ = ["TrainState", "check_compatible", "find_resume", "restore", "save"]

#: the time and tokens a run has spent, summed over its sittings
SPENT = ("train_time_s", "wall_time_s", "trained_tokens")


def _nothing_spent() -> dict[str, float]:
    return {"train_time_s": 0.0, "wall_time_s": 0.0, "trained_tokens": 0}


@dataclass
class TrainState:
    """Where a run stands, saved beside the weights and restored (a fresh run starts from
    ``TrainState()``); ``earlier`` and ``sitting`` are the time and tokens spent before and in this
    sitting."""

    step: int = 0
    tokens: int = 0
    nonfinite_total: int = 0
    nonfinite_run: int = 0
    last_val: dict[str, Any] = field(default_factory=dict)
    last_train: dict[str, Any] = field(default_factory=dict)  # the last training record logged
    earlier: dict[str, float] = field(default_factory=_nothing_spent)
    sitting: dict[str, float] = field(default_factory=_nothing_spent)

    def spent(self) -> dict[str, float]:
        """Training time, wall time and tokens trained over every sitting, this one included."""
        return {k: self.earlier[k] + self.sitting[k] for k in SPENT}

    def saved(self) -> dict[str, Any]:
        """The checkpoint's counters (``trainer_state.json`` with the ranks' RNGs and loaders)."""
        out = {"step": self.step, "tokens": self.tokens, "nonfinite_total": self.nonfinite_total}
        return {**out, "last_val": self.last_val, "last_train": self.last_train, **self.spent()}

    @classmethod
    def from_saved(cls, state: dict[str, Any]) -> TrainState:
        """The state a checkpoint's ``trainer_state.json`` holds (older ones lack the later counters)."""
        return cls(
            step=int(state["step"]),
            tokens=int(state["tokens"]),
            nonfinite_total=int(state.get("nonfinite_total", 0)),
            last_val=dict(state.get("last_val") or {}),
            last_train=dict(state.get("last_train") or {}),
            earlier={
                "train_time_s": float(state.get("train_time_s") or 0.0),
                "wall_time_s": float(state.get("wall_time_s") or 0.0),
                "trained_tokens": int(state.get("trained_tokens") or 0),
            },
        )


def find_resume(resume: str, out: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(checkpoint to resume from or None, [(skipped newer checkpoint, why)]) for ``resume``."""
    if str(resume) == "auto":
        return ckpt.latest_checkpoint(out / CHECKPOINTS)
    path = Path(resume).expanduser()
    if ckpt.CKPT_RE.match(path.name):
        try:
            ckpt.verify_checkpoint(path)
        except ckpt.CheckpointError as exc:
            raise ValueError(f"cannot resume: {exc}") from exc
        return path, []
    if path.is_dir():
        folder = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
        found, skipped = ckpt.latest_checkpoint(folder)
        if found is None:
            reasons = "; ".join(f"{p.name}: {why}" for p, why in skipped) or "no checkpoints"
            raise ValueError(f"cannot resume from {path}: no complete checkpoint ({reasons})")
        return found, skipped
    raise ValueError(f"cannot resume: {path} does not exist")


def check_compatible(path: Path, config: dict[str, Any], world_size: int, meta: dict[str, Any]) -> list[str]:
    """ValueError when the checkpoint cannot continue under ``config`` (other data, settings or process
    count); returns the changed settings that are allowed but alter the numbers."""
    state = json.loads((path / "trainer_state.json").read_text())
    try:
        seen = state["ranks"][0]["loaders"][0].get("fingerprint")
    except (KeyError, IndexError, TypeError):
        seen = None
    if seen is not None and meta.get("fingerprint") is not None and seen != meta["fingerprint"]:
        raise ValueError(
            f"cannot resume from {path}: it was trained on a dataset with fingerprint {seen!r}, "
            f"the data folder now holds {meta['fingerprint']!r}"
        )
    old = ckpt.read_checkpoint_config(path)
    diffs = changed_settings(old, config, ignore=RESUMABLE_CHANGES)
    if diffs:
        lines = ", ".join(f"{k}: checkpoint {old[k]!r} vs now {config[k]!r}" for k in diffs)
        raise ValueError(f"cannot resume from {path}: incompatible config ({lines})")
    old_world = old.get("_world_size", 1)
    resharding = ckpt.checkpoint_format(path) == "sharded" or config.get("parallel") == "fsdp"
    if old_world != world_size and not resharding:
        raise ValueError(
            f"cannot resume from {path}: it was written by {old_world} process(es), this run has "
            f"{world_size}; DDP checkpoints resume on the same number of processes (an FSDP checkpoint, "
            "parallel='fsdp', loads on any)"
        )
    numeric = {k: config.get(k) for k in NUMERIC_CHANGES}
    return changed_settings(old, numeric)


def save(
    folder: Path,
    train_state: TrainState,
    model: Any,
    optimizer: Any,
    loaders: list[Any],
    schedule: Any,
    config: dict[str, Any],
    keep: int | None,
    info: du.DistInfo,
) -> None:
    """Checkpoint ``train_state`` with weights, optimizer, schedule, RNGs and loaders (collective)."""
    local = {"rng": ckpt.rng_state(), "loaders": [ld.state_dict() for ld in loaders]}
    ranks = du.all_gather(local, info)
    counters = train_state.saved()
    state = {k: v for k, v in counters.items() if k != "step"}
    state.update(world_size=info.world_size, ranks=ranks, schedule=schedule.state_dict())
    if parallel.is_fsdp(model):  # every rank writes its shards
        save_sharded(folder, counters["step"], model, optimizer.optimizers, state, config, keep, info)
        return
    if info.is_main:
        ckpt.save_checkpoint(folder, counters["step"], model, optimizer, state, config, keep=keep)
    du.barrier(info)


def restore(
    path: Path,
    model: Any,
    optimizer: Any,
    loaders: list[Any],
    info: du.DistInfo,
    preloaded: dict[str, Any] | None = None,
) -> TrainState:
    """Load a checkpoint into ``model``, ``optimizer``, this rank's ``loaders`` and RNGs and return its
    :class:`TrainState` (``preloaded``: weights already loaded). On another process count the data still
    continue exactly; only dropout masks, if any, differ."""
    if preloaded is not None:
        state = preloaded
    elif ckpt.checkpoint_format(path) == "sharded":
        state = load_sharded(path, model, optimizer.optimizers)
    else:
        state = ckpt.load_checkpoint(path, model, optimizer, map_location=info.device)
    ranks = state["ranks"]
    if len(ranks) == info.world_size and len(ranks[info.rank]["loaders"]) == len(loaders):
        mine = ranks[info.rank]
        for loader, st in zip(loaders, mine["loaders"], strict=True):
            loader.load_state_dict(st)
    else:
        if ckpt.checkpoint_format(path) != "sharded" and preloaded is None and len(ranks) != info.world_size:
            raise ValueError(
                f"checkpoint {path} holds {len(ranks)} rank states, this run has {info.world_size}"
            )
        mine = ranks[min(info.rank, len(ranks) - 1)]
        step = int(ranks[0]["loaders"][0]["step"])  # the same on every loader: batches are global
        for loader in loaders:
            loader.load_state_dict({"step": step, "fingerprint": ranks[0]["loaders"][0].get("fingerprint")})
    ckpt.set_rng_state(mine["rng"])
    return TrainState.from_saved(state)
