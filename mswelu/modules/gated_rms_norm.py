"""Mamba-2's gated RMSNorm layer, ``weight * rmsnorm_groups(y * act(z))``, with the gate's activation
passed in (the computation: :func:`mswelu.ops.gated_norm.gated_rms_norm`).

The activation is an argument of :meth:`GatedRMSNorm.forward`, not a submodule: the mixer owns it (one
module for both of its slots, or one per slot), so its parameters keep their ``act_gate.*`` names and this
layer's state dict is upstream's alone: ``weight`` (``norm.weight`` in transformers' and mamba-ssm's mixers).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mswelu.ops.gated_norm import gated_rms_norm

__all__ = ["GatedRMSNorm"]


class GatedRMSNorm(nn.Module):
    """``weight * RMSNorm_groups(y * act(z))`` in fp32; ``group_size`` channels share one statistic
    (default: all of them). Parameter: ``weight`` (hidden_size,), initialised to ones."""

    def __init__(self, hidden_size: int, group_size: int | None = None, eps: float = 1e-5) -> None:
        super().__init__()
        group_size = hidden_size if group_size is None else group_size
        if not 1 <= group_size <= hidden_size or hidden_size % group_size != 0:
            raise ValueError(f"group_size ({group_size}) must divide hidden_size ({hidden_size})")
        self.hidden_size = hidden_size
        self.group_size = group_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, y: Tensor, gate: Tensor, act: Callable[[Tensor], Tensor] = F.silu) -> Tensor:
        """(..., hidden_size) twice -> (..., hidden_size) in y's dtype."""
        return gated_rms_norm(y, gate, self.weight, self.group_size, self.eps, act)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, group_size={self.group_size}, eps={self.eps:g}"
