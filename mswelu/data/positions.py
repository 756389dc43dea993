"""Where a loader stands: the one check that a saved position (a checkpoint's loader state) still
describes the batches this loader would make, shared by the token loader and the task loader."""

from __future__ import annotations

import numpy as np

__all__ = ["BATCH_SETTINGS", "resume_step"]

#: the settings that define a loader's batches: a saved position is only valid where they all match
BATCH_SETTINGS = ("seed", "mode", "split", "batch_size", "seq_len", "world_size", "fingerprint")


def resume_step(state: dict, mine: dict) -> int:
    """The step a saved loader ``state`` continues at, after checking its batch-defining settings against
    this loader's (``mine``): a ValueError where one differs or the step is not a non-negative integer."""
    for key in BATCH_SETTINGS:
        if key in state and state[key] != mine[key]:
            raise ValueError(
                f"loader state has {key}={state[key]!r} but this loader has {mine[key]!r}: "
                "resuming would not reproduce the same batches"
            )
    step = state.get("step")
    if not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"loader state needs a non-negative integer 'step', got {step!r}")
    return int(step)
