"""Validation: loss, perplexity and bits per byte over exactly the tokens scored.

Scored: every window of the val split, or ``sample`` windows spread evenly over it; the same windows every
time and for every run with the same ``seq_len``, however the batch is split over ranks. Bits per byte
are the scored tokens' summed loss / ln 2 / the UTF-8 bytes those tokens stand for (a per-token lookup,
:func:`byte_table`).

With ``per_document`` (the trainer's final whole-split evaluation) the same pass also sums loss, tokens and
bytes per document of the split (documents end at the data's end-of-text token; a target token belongs to
the document it continues) and per evaluation window, from per-token losses
(:func:`mswelu.models.build.token_losses`): what the text bootstrap of :mod:`mswelu.analysis.bootstrap`
resamples. Its figures then come from those sums, so they add up exactly to the reported loss.
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

from mswelu.base import distributed as du
from mswelu.base.progress import log
from mswelu.models.build import lm_loss, token_losses
from mswelu.ops.lm_loss import split_window
from mswelu.training import parallel

__all__ = ["Evaluator", "byte_table", "document_index", "evaluate", "evaluate_task"]


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


def document_index(data: Path, meta: dict[str, Any]) -> np.ndarray:
    """The document of every token position of the val split (int64): the number of end-of-text tokens
    before it, so that a document's closing end-of-text token is scored as part of it."""
    from mswelu.data import TokenLoader

    ids = np.asarray(TokenLoader(data, "val", batch_size=1, seq_len=1, mode="sequential").data)
    ends = ids[:-1] == int(meta["eos_id"])
    return np.concatenate([[0], np.cumsum(ends, dtype=np.int64)])


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
    documents: np.ndarray | None = None,
) -> dict[str, Any]:
    """``val_loss``, ``val_ppl``, ``val_bpb``, ``val_tokens`` and ``val_scope`` ("whole split" or
    "sample") of ``model`` on the val split of ``data``; collective under DDP (every rank calls it). With
    ``documents`` (:func:`document_index`) also ``documents`` and ``windows``: ``{"loss", "tokens",
    "bytes"}`` lists per document and per evaluation window."""
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
    chosen = loader.eval_windows(seq_len, sample)
    if documents is not None:  # per document and per window: loss sum, tokens, bytes
        per_doc = torch.zeros(int(documents[-1]) + 1, 3, dtype=torch.float64)
        per_window = torch.zeros(len(chosen), 3, dtype=torch.float64)
    # the loader's order: global batch i holds windows [i * batch_size, (i + 1) * batch_size) of `chosen`,
    # and this rank yields the batches i = rank, rank + world_size, ...
    batches = range(info.rank, math.ceil(len(chosen) / batch_size), info.world_size)
    for i, window in zip(batches, loader.iter_eval_batches(sample=sample), strict=True):
        x, y = split_window(window.to(device))
        n = y.numel()
        nbytes = lengths[y.cpu()].double() * calibration
        if documents is None:
            with autocast():
                loss = lm_loss(model, x, y)
            total[0] += float(loss) * n
        else:
            with autocast():
                tok = token_losses(model, x, y).double().cpu()
            total[0] += float(tok.sum())
            rows = slice(i * batch_size, i * batch_size + y.size(0))
            positions = chosen[rows][:, None] * seq_len + 1 + np.arange(y.size(1))  # the targets' positions
            doc = torch.from_numpy(documents[positions].reshape(-1))
            per_doc.index_add_(
                0,
                doc,
                torch.stack([tok.reshape(-1), torch.ones(n, dtype=torch.float64), nbytes.reshape(-1)], dim=1),
            )
            per_window[rows] = torch.stack(
                [tok.sum(1), torch.full((y.size(0),), float(y.size(1)), dtype=torch.float64), nbytes.sum(1)],
                dim=1,
            )
        total[1] += n
        total[2] += float(nbytes.sum())
        mine += 1
    if info.enabled and parallel.is_fsdp(model):
        # a sharded forward is collective: a rank with one batch fewer runs one more, discarded
        pad_x, pad_y = split_window(torch.zeros(1, seq_len + 1, dtype=torch.long, device=device))
        for _ in range(math.ceil(len(chosen) / batch_size / info.world_size) - mine):
            with autocast():
                lm_loss(model, pad_x, pad_y)
    model.train(was_training)
    total = du.all_reduce_sum(total, info)
    val_loss = float(total[0] / total[1])
    out = {
        "val_loss": val_loss,
        "val_ppl": math.exp(min(val_loss, 700.0)),
        "val_bpb": float(total[0] / total[2] / math.log(2)) if total[2] > 0 else None,
        "val_tokens": int(total[1]),
        "val_scope": "sample"
        if sample is not None and sample < len(loader.eval_windows())
        else "whole split",
    }
    if documents is not None:
        for key, sums in (("documents", per_doc), ("windows", per_window)):
            sums = du.all_reduce_sum(sums.to(device), info).cpu()
            out[key] = {
                "loss": sums[:, 0].tolist(),
                "tokens": sums[:, 1].long().tolist(),
                "bytes": sums[:, 2].tolist(),
            }
    return out


@torch.no_grad()
def evaluate_task(
    model: nn.Module,
    source: Any,
    info: du.DistInfo,
    batch_size: int,
    sample: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, Any]:
    """A synthetic task's test set (:class:`mswelu.data.tasks.TaskSource`, its first ``sample`` examples
    when given): ``val_loss`` / ``val_ppl`` over the answers only, ``val_accuracy`` (exact match of the
    most likely token at each answer), ``val_tokens`` (answers scored), ``val_scope``; ``val_bpb`` is None
    (task tokens stand for no text). Collective under DDP: rank ``r`` scores batches ``r, r + world, ...``."""
    from mswelu.data.tasks import IGNORE

    was_training = model.training
    model.eval()
    total = torch.zeros(3, dtype=torch.float64, device=info.device)  # loss sum, answers, correct
    mine = 0
    for i, batch in enumerate(source.test_batches(batch_size, sample)):
        if i % info.world_size != info.rank:
            continue
        mine += 1
        x, y = split_window(batch.to(info.device))
        with autocast():
            logits = model(input_ids=x).logits
        scored = y != IGNORE
        loss = torch.nn.functional.cross_entropy(logits[scored].float(), y[scored], reduction="sum")
        total += torch.stack(
            [loss.double(), scored.sum().double(), (logits[scored].argmax(-1) == y[scored]).sum().double()]
        )
    if info.enabled and parallel.is_fsdp(model):
        # a sharded forward is collective: a rank with one batch fewer runs one more, discarded
        count = source.test_examples if sample is None else min(int(sample), source.test_examples)
        pad = torch.zeros(1, source.seq_len, dtype=torch.long, device=info.device)
        for _ in range(math.ceil(math.ceil(count / batch_size) / info.world_size) - mine):
            with autocast():
                model(input_ids=pad)
    model.train(was_training)
    total = du.all_reduce_sum(total, info)
    val_loss = float(total[0] / total[1])
    return {
        "val_loss": val_loss,
        "val_ppl": math.exp(min(val_loss, 700.0)),
        "val_bpb": None,
        "val_tokens": int(total[1]),
        "val_scope": "sample" if sample is not None and sample < source.test_examples else "whole split",
        "val_accuracy": float(total[2] / total[1]),
    }


class Evaluator:
    """:func:`evaluate` on one run's data and settings; the byte table is built on first use. A task
    source (``task:...``) is scored by :func:`evaluate_task` (no per-document sums)."""

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
        self.documents: np.ndarray | None = None
        from mswelu.data.tasks import TaskSource, is_task_source

        self.task = TaskSource(str(data)) if is_task_source(str(data)) else None

    def __call__(
        self, model: nn.Module, sample: int | None = None, per_document: bool = False
    ) -> dict[str, Any]:
        if self.task is not None:
            return evaluate_task(model, self.task, self.info, self.batch_size, sample, self.autocast)
        if self.table is None:
            self.table = byte_table(self.data, self.meta, announce=self.info.is_main)
        if per_document and self.documents is None:
            self.documents = document_index(self.data, self.meta)
        return evaluate(
            model,
            self.data,
            self.seq_len,
            self.table,
            self.info,
            self.batch_size,
            sample=sample,
            autocast=self.autocast,
            documents=self.documents if per_document else None,
        )
