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
  L=128: 1,024 x 50,257 fp32 logits are 206 MB each); chunked, one 51 MB chunk buffer is reused. The
  speed gain is modest: 1.07-1.44x the logits path in fp32 on ``small`` (``python -m mswelu.bench train``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DEFAULT_CHUNK_ROWS", "linear_cross_entropy", "next_token_loss", "split_window"]

#: rows (tokens) per chunk of :func:`linear_cross_entropy`: 256 x 50,257 fp32 logits are 51 MB.
DEFAULT_CHUNK_ROWS = 256


def split_window(window: Tensor) -> tuple[Tensor, Tensor]:
    """(inputs, targets) of a (B, L+1) token window."""
    if window.dim() != 2 or window.size(1) < 2:
        raise ValueError(f"a token window must be (batch, length+1 >= 2), got shape {tuple(window.shape)}")
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
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Tensor:
    """``next_token_loss(hidden @ weight.T, targets)`` without the full logits (see the module docstring).

    ``hidden`` (..., d), ``weight`` (V, d) (the LM head; tied or not), ``targets`` (...). Under autocast
    the head's matmuls run in the autocast dtype, as ``nn.Linear`` would; the softmax and the loss are
    fp32. Gradients flow to ``hidden`` and ``weight`` (to the embedding through a tied weight).
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} do not match")
    if weight.dim() != 2 or weight.size(1) != hidden.size(-1):
        raise ValueError(f"weight must be (vocab, {hidden.size(-1)}), got {tuple(weight.shape)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    device = hidden.device.type
    mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    grad_on = torch.is_grad_enabled()  # (inside the Function's forward it is always off)
    wants = (grad_on and hidden.requires_grad, grad_on and weight.requires_grad)
    flat = hidden.reshape(-1, hidden.size(-1))
    return _LinearCrossEntropy.apply(
        flat, weight, targets.reshape(-1), ignore_index, chunk_rows, mm_dtype, wants
    )


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and, when a gradient is wanted, both gradients for a unit output
    gradient; backward multiplies them by the real one (a scalar)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk_rows, mm_dtype, wants):
        grads = any(wants)
        targets = targets.to(torch.long)
        valid = targets != ignore_index
        count = int(valid.sum())
        with torch.autocast(hidden.device.type, enabled=False):
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
                if not grads:
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
        gh = grad_hidden * grad_out if want_hidden else None
        gw = grad_weight * grad_out if want_weight else None
        return gh, gw, None, None, None, None, None
