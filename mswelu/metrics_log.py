"""The training metrics log: one JSON line per record in ``metrics.jsonl`` and, optionally, the same
scalars in TensorBoard. Only rank 0 holds one."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mswelu.progress import log
from mswelu.runs import RunWriter

__all__ = ["MetricsLog"]

_SCALARS = ("loss", "grad_norm", "tokens_per_s", "val_loss", "val_ppl", "val_bpb")


class MetricsLog:
    """Append records to a run's metrics (truncated to ``resume_step`` when resuming)."""

    def __init__(
        self, run: RunWriter, resume_step: int | None, tensorboard: bool, shape_scalars: Iterable[str] = ()
    ) -> None:
        """``shape_scalars``: the activation shape parameters that learn (``k``, ``beta``, ...): their
        per-slot tables go to TensorBoard as ``<param>/<slot>`` (frozen ones would draw flat lines)."""
        self.file = run.open_metrics(resume_step)
        self.shape_scalars = tuple(shape_scalars)
        self.tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # a declared dependency; keep training without it
                log(f"TensorBoard disabled ({exc})")
            else:
                self.tb = SummaryWriter(str(run.tensorboard), purge_step=resume_step)

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is None:
            return
        step = record["step"]
        for key in _SCALARS:
            if record.get(key) is not None:
                self.tb.add_scalar(f"{'val' if key.startswith('val') else 'train'}/{key}", record[key], step)
        for group in ("lr", *self.shape_scalars):
            values = record.get(group)
            for name, value in values.items() if isinstance(values, dict) else ():
                self.tb.add_scalar(f"{group}/{name}", value, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
