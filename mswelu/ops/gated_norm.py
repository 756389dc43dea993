"""Mamba-2's gated RMSNorm as a function of tensors: ``weight * rmsnorm_groups(y * act(z))`` in fp32.

transformers' ``MambaRMSNormGated`` and mamba-ssm's ``RMSNormGated(norm_before_gate=False)`` compute, in
fp32, ``g = y * silu(z)`` and then an RMSNorm of ``g`` over groups of ``group_size`` channels (``d_inner /
n_groups``: one statistic per group of heads, so that the result does not depend on how many groups a
tensor-parallel shard holds), scaled by ``weight``. Here the SiLU is any activation (the Mamba-2 mixer's
``act_gate`` slot). The layer is :class:`mswelu.modules.gated_rms_norm.GatedRMSNorm`; the GPU kernel path
calls this function too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gated_rms_norm"]


def gated_rms_norm(
    y: Tensor,
    gate: Tensor,
    weight: Tensor,
    group_size: int,
    eps: float,
    act: Callable[[Tensor], Tensor] = F.silu,
) -> Tensor:
    """``weight * rmsnorm_groups(y * act(gate))`` computed in fp32 (fp64 stays fp64), returned in y's dtype.

    The activation sees the gate in fp32, as upstream's SiLU does (so it runs in fp32 whatever the
    autocast setting); ``group_size`` must divide the last dimension."""
    d = y.shape[-1]
    if group_size < 1 or d % group_size != 0:
        raise ValueError(f"group_size ({group_size}) must divide the last dimension ({d})")
    ct = torch.float64 if y.dtype == torch.float64 else torch.float32
    g = y.to(ct) * act(gate.to(ct)).to(ct)
    groups = g.unflatten(-1, (d // group_size, group_size))
    groups = groups * torch.rsqrt(groups.square().mean(-1, keepdim=True) + eps)
    return (groups.flatten(-2) * weight.to(ct)).to(y.dtype)
