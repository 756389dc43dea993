"""The residual stream's norms: RMSNorm (Mamba's) and LayerNorm (the seeds'), chosen by name."""

from __future__ import annotations

import torch
from torch import nn

from mswelu.base.errors import unknown_choice

NORMS = ("layernorm", "rmsnorm")


class RMSNorm(nn.Module):
    """RMSNorm as in Mamba / transformers' MambaRMSNorm (fp32 statistics, weight applied in input dtype)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def make_norm(kind: str, hidden_size: int, eps: float = 1e-5) -> nn.Module:
    """A ``kind`` norm (one of :data:`NORMS`) over ``hidden_size`` features."""
    if kind == "rmsnorm":
        return RMSNorm(hidden_size, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(hidden_size, eps=eps)
    raise ValueError(unknown_choice("norm", kind, NORMS))


def norm_parameter_count(kind: str, hidden_size: int) -> int:
    """Parameters of :func:`make_norm` (LayerNorm has a bias, RMSNorm does not)."""
    return hidden_size * (2 if kind == "layernorm" else 1)
