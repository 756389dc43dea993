"""The next-token loss, once for every caller (model ``labels``, trainer, evaluation, analysis).

A training window ``w`` of shape (B, L+1) holds inputs ``w[:, :-1]`` and targets ``w[:, 1:]``: the only
shift. The cross-entropy is computed in fp32 whatever the logits' dtype (bf16 logits lose the small
probabilities the loss is made of).

Two ways to the same number:

- :func:`next_token_loss` from full logits (every model, every caller that needs the logits);
- :func:`linear_cross_entropy` from the head's *input*: the LM head and the loss fused, a chunk of rows
  at a time, so that the (tokens x vocabulary) fp32 logits never exist at once. Each chunk's logits are
  made, turned into the loss and into the gradients of the hidden states and the head weight, and
  dropped: the backward pass only scales what the forward already computed. With a 50k vocabulary the
  full logits, their log-softmax and its gradient are most of a small model's training memory (B=8,
  L=128: 1,024 x 50,257 fp32 logits are 206 MB each); chunked, one chunk buffer of at most
  :data:`CHUNK_BYTES` is reused.

On a CPU where mswelu's kernels are built (:mod:`mswelu.ops.cpu_kernels`) a chunk's logits stay in the
matmul dtype and one kernel turns each row into its loss and, in place, its gradient (three passes over a
row that stays in cache, fp32 arithmetic); elsewhere the same steps run as PyTorch ops on an fp32 copy.
Under bf16 autocast both round the logits to bf16 first, as ``nn.Linear`` under autocast does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mswelu.ops import cpu_kernels

__all__ = ["CHUNK_BYTES", "linear_cross_entropy", "linear_token_losses", "next_token_loss", "split_window"]

#: the most bytes of one chunk of logits in :func:`linear_cross_entropy` (50,257-way: 333 rows of fp32
#: logits, 667 of bf16).
CHUNK_BYTES = 64 * 2**20


def split_window(window: Tensor) -> tuple[Tensor, Tensor]:
    """(inputs, targets) of a (B, L+1) token window; of a (B, 2, L) batch of a synthetic task
    (:mod:`mswelu.data.tasks`), its inputs and targets as they are (``-100`` where not scored)."""
    if window.dim() == 3 and window.size(1) == 2:
        return window[:, 0], window[:, 1]
    if window.dim() != 2 or window.size(1) < 2:
        raise ValueError(
            f"a token window must be (batch, length+1 >= 2) or a task's (batch, 2, length), got shape "
            f"{tuple(window.shape)}"
        )
    return window[:, :-1], window[:, 1:]


def next_token_loss(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean cross-entropy (nats) of ``logits`` (..., V) against ``targets`` (...), in fp32; targets equal
    to ``ignore_index`` are not scored (fp64 logits stay fp64, for gradient checks)."""
    return F.cross_entropy(
        logits.to(torch.promote_types(logits.dtype, torch.float32)).reshape(-1, logits.size(-1)),
        targets.reshape(-1).to(torch.long),
        ignore_index=ignore_index,
    )


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    ignore_index: int = -100,
    chunk_rows: int | None = None,
) -> Tensor:
    """``next_token_loss(hidden @ weight.T, targets)`` without the full logits (see the module docstring).

    ``hidden`` (..., d), ``weight`` (V, d) (the LM head; tied or not), ``targets`` (...). Under autocast
    the head's matmuls run in the autocast dtype, as ``nn.Linear`` would; the softmax and the loss are
    fp32. Gradients flow to ``hidden`` and ``weight`` (to the embedding through a tied weight).
    ``chunk_rows``: rows per chunk; by default as many as fit in :data:`CHUNK_BYTES`, in equal chunks.
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} do not match")
    if weight.dim() != 2 or weight.size(1) != hidden.size(-1):
        raise ValueError(f"weight must be (vocab, {hidden.size(-1)}), got {tuple(weight.shape)}")
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    grad_on = torch.is_grad_enabled()  # (inside the Function's forward it is always off)
    wants = (grad_on and hidden.requires_grad, grad_on and weight.requires_grad)
    flat = hidden.reshape(-1, hidden.size(-1))
    mm_dtype, kernel, planned = _plan(flat, weight)
    chunk_rows = planned if chunk_rows is None else chunk_rows
    return _LinearCrossEntropy.apply(
        flat, weight, targets.reshape(-1), ignore_index, chunk_rows, mm_dtype, wants, kernel
    )


@torch.no_grad()
def linear_token_losses(hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """The per-token terms of :func:`linear_cross_entropy` (fp32, ``targets``' shape, 0 where ignored): the
    same chunks of head logits in the autocast dtype and the same row loss (the CPU kernel's where it is
    built), so an evaluation's per-token sums add up to its mean loss. No gradients."""
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} do not match")
    flat, tgt = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1).to(torch.long)
    mm_dtype, kernel, rows = _plan(flat, weight)
    w = weight.to(mm_dtype)
    out = []
    with torch.autocast(hidden.device.type, enabled=False):
        for start in range(0, flat.size(0), rows):
            logits = flat[start : start + rows].to(mm_dtype) @ w.T
            t = tgt[start : start + rows].contiguous()
            if kernel:
                out.append(
                    cpu_kernels.load().cross_entropy_rows_(logits, t, 1.0, ignore_index, False).float()
                )
            else:
                out.append(
                    F.cross_entropy(
                        logits.to(torch.promote_types(mm_dtype, torch.float32)),
                        t,
                        ignore_index=ignore_index,
                        reduction="none",
                    )
                )
    return torch.cat(out).view(targets.shape) if out else hidden.new_zeros(targets.shape, dtype=torch.float32)


def _plan(flat: Tensor, weight: Tensor) -> tuple[torch.dtype, bool, int]:
    """(matmul dtype, whether the CPU kernel scores the rows, rows per chunk) for the (rows, d) head input
    ``flat``: the autocast dtype if autocast is on; chunks of equal size whose logits fit in
    :data:`CHUNK_BYTES` (the kernel keeps them in the matmul dtype, the PyTorch path makes an fp32 copy)."""
    device = flat.device.type
    mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else flat.dtype
    kernel = device == "cpu" and cpu_kernels.usable()
    logits_dtype = mm_dtype if kernel else torch.promote_types(mm_dtype, torch.float32)
    max_rows = max(1, CHUNK_BYTES // (weight.size(0) * logits_dtype.itemsize))
    chunks = -(-flat.size(0) // max_rows)
    return mm_dtype, kernel, max(1, -(-flat.size(0) // max(1, chunks)))


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and, when a gradient is wanted, both gradients for a unit output
    gradient; backward multiplies them by the real one (a scalar)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk_rows, mm_dtype, wants, kernel):
        targets = targets.to(torch.long)
        count = int((targets != ignore_index).sum())
        with torch.autocast(hidden.device.type, enabled=False):
            step = _kernel_chunks if kernel else _torch_chunks
            total, grad_hidden, grad_weight = step(
                hidden, weight, targets, ignore_index, chunk_rows, mm_dtype, wants, count
            )
        ctx.wants = wants  # which of the two gradients exist (the other is saved as an empty tensor)
        ctx.save_for_backward(
            grad_hidden if grad_hidden is not None else hidden.new_empty(0),
            grad_weight.to(weight.dtype) if grad_weight is not None else weight.new_empty(0),
        )
        return total / max(count, 1)

    @staticmethod
    def backward(ctx, grad_out):
        grad_hidden, grad_weight = ctx.saved_tensors
        want_hidden, want_weight = ctx.wants
        # the usual case on a CPU: skip two full passes over the gradients (on a GPU, reading the value
        # back would stall the stream, so the multiply stays)
        if grad_out.device.type == "cpu" and bool(grad_out == 1):
            return (grad_hidden if want_hidden else None), (grad_weight if want_weight else None), *[None] * 6
        gh = grad_hidden * grad_out if want_hidden else None
        gw = grad_weight * grad_out if want_weight else None
        return gh, gw, None, None, None, None, None, None


def _torch_chunks(hidden, weight, targets, ignore_index, chunk_rows, mm_dtype, wants, count):
    """(loss sum, grad of hidden, grad of weight) for a unit gradient of the mean, in PyTorch ops."""
    valid = targets != ignore_index
    w = weight.to(mm_dtype)
    acc = torch.promote_types(mm_dtype, torch.float32)  # fp32, or fp64 for gradcheck
    total = torch.zeros((), dtype=acc, device=hidden.device)
    grad_hidden = torch.zeros_like(hidden) if wants[0] else None
    grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if wants[1] else None
    for start in range(0, hidden.size(0), chunk_rows):
        rows = slice(start, start + chunk_rows)
        h = hidden[rows].to(mm_dtype)
        logits = (h @ w.T).to(acc)
        t, ok = targets[rows].clamp(min=0)[:, None], valid[rows]
        picked = logits.gather(1, t).squeeze(1)
        top = logits.amax(dim=1, keepdim=True)
        e = logits.sub_(top).exp_()  # in place: one chunk-sized buffer for the whole step
        norm = e.sum(dim=1, keepdim=True)
        lse = (top + norm.log()).squeeze(1)
        total += ((lse - picked) * ok).sum()
        if not any(wants):
            continue
        # d loss / d logits for a mean over `count` tokens: (softmax - onehot) / count, 0 if ignored
        scale = ok.to(acc)[:, None] / max(count, 1)
        g = e.mul_(scale / norm)
        g.scatter_add_(1, t, -scale)
        g = g.to(mm_dtype)
        if grad_hidden is not None:
            grad_hidden[rows] = (g @ w).to(hidden.dtype)
        if grad_weight is not None:
            grad_weight += (g.T @ h).to(acc)
    return total, grad_hidden, grad_weight


def _kernel_chunks(hidden, weight, targets, ignore_index, chunk_rows, mm_dtype, wants, count):
    """:func:`_torch_chunks` with the softmax and its gradient done in place on the matmul-dtype logits by
    the CPU kernel (:mod:`mswelu.ops.cpu_kernels`): one chunk buffer, three passes per row."""
    kernels = cpu_kernels.load()
    w = weight.to(mm_dtype)
    acc = torch.promote_types(mm_dtype, torch.float32)
    n = hidden.size(0)
    buffer = torch.empty(min(chunk_rows, n), weight.size(0), dtype=mm_dtype, device=hidden.device)
    total = torch.zeros((), dtype=acc, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if wants[0] else None
    grad_weight = None
    for start in range(0, n, chunk_rows):
        rows = slice(start, start + chunk_rows)
        h = hidden[rows].to(mm_dtype)
        logits = torch.mm(h, w.T, out=buffer[: h.size(0)])
        losses = kernels.cross_entropy_rows_(
            logits, targets[rows].contiguous(), 1.0 / max(count, 1), ignore_index, any(wants)
        )
        total += losses.sum()
        g = logits  # overwritten by the gradient
        if grad_hidden is not None:
            grad_hidden[rows] = (g @ w).to(hidden.dtype)
        if wants[1]:
            part = g.T @ h
            grad_weight = part.to(acc) if grad_weight is None else grad_weight.add_(part)
    if wants[1] and grad_weight is None:  # no rows
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
    return total, grad_hidden, grad_weight
