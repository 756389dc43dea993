"""The next-token loss, once for every caller (model ``labels``, trainer, evaluation, analysis).

A training window ``w`` of shape (B, L+1) holds inputs ``w[:, :-1]`` and targets ``w[:, 1:]``: the only
shift. The cross-entropy is computed in fp32 whatever the logits' dtype (bf16 logits lose the small
probabilities the loss is made of).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["next_token_loss", "split_window"]


def split_window(window: Tensor) -> tuple[Tensor, Tensor]:
    """(inputs, targets) of a (B, L+1) token window."""
    if window.dim() != 2 or window.size(1) < 2:
        raise ValueError(f"a token window must be (batch, length+1 >= 2), got shape {tuple(window.shape)}")
    return window[:, :-1], window[:, 1:]


def next_token_loss(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean cross-entropy (nats) of ``logits`` (..., V) against ``targets`` (...), in fp32; targets equal
    to ``ignore_index`` are not scored."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        targets.reshape(-1).to(torch.long),
        ignore_index=ignore_index,
    )
