"""Validation: loss, perplexity and bits per byte over exactly the tokens scored.

Scored: every window of the val split, or ``sample`` windows spread evenly over it; the same windows every
time and for every run with the same ``seq_len``, however the batch is split over ranks. Bits per byte
are the scored tokens' summed loss / ln 2 / the UTF-8 bytes those tokens stand for (a per-token lookup,
:func:`byte_table`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mswelu import distributed as du
from mswelu import parallel
from mswelu.models import lm_loss
from mswelu.ops.lm_loss import split_window
from mswelu.progress import log

__all__ = ["Evaluator", "byte_table", "evaluate"]


def byte_table(data: Path, meta: dict[str, Any], announce: bool = True) -> tuple[torch.Tensor, float]:
    """(UTF-8 bytes per token id, calibration). The calibration is the split's recorded bytes over the
    table's sum across the split: exactly 1 for byte-level BPE (GPT-2); it corrects tokenizers whose
    tokens do not decode one by one. An unavailable tokenizer falls back to the split's average."""
    from mswelu.data import TokenLoader, dataset_tokenizer

    val = meta["splits"]["val"]
    try:
        lengths = torch.from_numpy(dataset_tokenizer(data, meta).token_byte_lengths())
    except (ValueError, OSError) as exc:  # e.g. a Hub tokenizer while offline
        if announce:
            log(
                f"tokenizer {meta['tokenizer']!r} unavailable ({exc}); bits per byte use the val split's "
                "average bytes per token"
            )
        return torch.ones(meta["vocab_size"], dtype=torch.float64), val["bytes"] / max(1, val["tokens"])
    split = TokenLoader(data, "val", batch_size=1, seq_len=1, mode="sequential").data
    counted = int(lengths[torch.from_numpy(np.asarray(split, dtype=np.int64))].sum())
    recorded = int(val["bytes"])
    calibration = recorded / counted if counted > 0 else 1.0
    if abs(calibration - 1.0) > 1e-3 and announce:
        log(
            f"token byte lengths sum to {counted} over the val split, meta.json records {recorded}: bits "
            f"per byte scaled by {calibration:.4f}"
        )
    return lengths, calibration


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Path,
    seq_len: int,
    table: tuple[torch.Tensor, float],
    info: du.DistInfo,
    batch_size: int,
    sample: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, Any]:
    """``val_loss``, ``val_ppl``, ``val_bpb``, ``val_tokens`` and ``val_scope`` ("whole split" or
    "sample") of ``model`` on the val split of ``data``; collective under DDP (every rank calls it)."""
    from mswelu.data import TokenLoader

    was_training = model.training
    model.eval()
    loader = TokenLoader(
        data,
        "val",
        batch_size=batch_size,
        seq_len=seq_len,
        rank=info.rank,
        world_size=info.world_size,
        mode="sequential",
    )
    device = info.device
    lengths, calibration = table
    total = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, tokens, bytes
    mine = 0
    for window in loader.iter_eval_batches(sample=sample):
        x, y = split_window(window.to(device))
        with autocast():
            loss = lm_loss(model, x, y)
        n = y.numel()
        total[0] += float(loss) * n
        total[1] += n
        total[2] += float(lengths[y.cpu()].sum()) * calibration
        mine += 1
    if info.enabled and parallel.is_fsdp(model):
        # a sharded forward is collective: a rank with one batch fewer runs one more, discarded
        batches = math.ceil(len(loader.eval_windows(seq_len, sample)) / batch_size)
        pad_x, pad_y = split_window(torch.zeros(1, seq_len + 1, dtype=torch.long, device=device))
        for _ in range(math.ceil(batches / info.world_size) - mine):
            with autocast():
                lm_loss(model, pad_x, pad_y)
    model.train(was_training)
    total = du.all_reduce_sum(total, info)
    val_loss = float(total[0] / total[1])
    return {
        "val_loss": val_loss,
        "val_ppl": math.exp(min(val_loss, 700.0)),
        "val_bpb": float(total[0] / total[2] / math.log(2)) if total[2] > 0 else None,
        "val_tokens": int(total[1]),
        "val_scope": "sample"
        if sample is not None and sample < len(loader.eval_windows())
        else "whole split",
    }


class Evaluator:
    """:func:`evaluate` on one run's data and settings; the byte table is built on first use."""

    def __init__(
        self,
        data: Path,
        meta: dict[str, Any],
        seq_len: int,
        batch_size: int,
        info: du.DistInfo,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.data, self.meta, self.seq_len, self.info, self.autocast = data, meta, seq_len, info, autocast
        self.batch_size = max(batch_size, 1024 // seq_len)  # no gradients: at least 1024 tokens a batch
        self.table: tuple[torch.Tensor, float] | None = None

    def __call__(self, model: nn.Module, sample: int | None = None) -> dict[str, Any]:
        if self.table is None:
            self.table = byte_table(self.data, self.meta, announce=self.info.is_main)
        return evaluate(
            model,
            self.data,
            self.seq_len,
            self.table,
            self.info,
            self.batch_size,
            sample=sample,
            autocast=self.autocast,
        )
