"""Learning-rate schedules: linear warmup, then cosine decay or warmup-stable-decay (WSD).

The schedule is a pure function of the optimizer step, so resuming needs no scheduler state beyond the
step itself, and every parameter group keeps its own base lr (e.g. a ``shape`` group's ``lr_scale``):
the trainer sets ``group["lr"] = group["base_lr"] * lr_factor(step)`` before each update.
"""

from __future__ import annotations

import math
from typing import Any

from mswelu.base.errors import check_choice

SCHEDULES = ("cosine", "wsd", "constant")


def lr_factor(
    step: int,
    total_steps: int,
    warmup: int = 0,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.1,
    decay_fraction: float = 0.2,
) -> float:
    """Multiplier of the base lr for optimizer step ``step`` (0-based: the update about to be taken).

    - warmup: linear from ``1/warmup`` to 1 over the first ``warmup`` steps (never 0, so step 0 learns);
    - ``cosine``: from 1 at the end of warmup to ``min_lr_ratio`` at ``total_steps``;
    - ``wsd``: flat at 1, then a linear decay to ``min_lr_ratio`` over the last ``decay_fraction`` of the
      steps (Hägele et al. 2024 "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations");
    - ``constant``: 1 after warmup.
    Past ``total_steps`` the factor stays at its final value.
    """
    check_choice("schedule", schedule, SCHEDULES)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if not 0.0 <= decay_fraction <= 1.0:
        raise ValueError(f"decay_fraction must be in [0, 1], got {decay_fraction}")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    step = min(step, total_steps)
    if schedule == "cosine":
        span = max(1, total_steps - warmup)
        progress = (step - warmup) / span
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    # wsd
    decay_steps = max(1, round(decay_fraction * (total_steps - warmup))) if decay_fraction > 0 else 0
    decay_start = total_steps - decay_steps
    if decay_steps == 0 or step < decay_start:
        return 1.0
    progress = (step - decay_start) / decay_steps
    return 1.0 - (1.0 - min_lr_ratio) * progress


class LRSchedule:
    """Applies :func:`lr_factor` to every parameter group (of one optimizer or a hybrid)."""

    def __init__(
        self,
        optimizer: Any,
        total_steps: int,
        warmup: int = 0,
        schedule: str = "cosine",
        min_lr_ratio: float = 0.1,
        decay_fraction: float = 0.2,
    ) -> None:
        self.optimizer = optimizer
        self.shape = dict(total_steps=total_steps, warmup=warmup, schedule=schedule)
        self.shape.update(min_lr_ratio=min_lr_ratio, decay_fraction=decay_fraction)
        lr_factor(0, **self.shape)  # validate now
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])

    def apply(self, step: int) -> list[float]:
        """Set every group's lr for optimizer step ``step``; returns the lrs (group order)."""
        f = lr_factor(step, **self.shape)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * f
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The schedule's shape, recorded in checkpoints for the reader. A resumed run rebuilds its
        schedule from its own config (it may extend ``max_steps`` on purpose), so nothing loads this."""
        return dict(self.shape)
