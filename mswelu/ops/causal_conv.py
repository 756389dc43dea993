"""The Mamba mixer's depthwise causal convolution over time, and its compiled CPU kernel.

``causal_conv1d(x, weight, bias)`` takes ``x`` as (batch, channels, length) and ``weight`` as (channels,
width), as ``causal_conv1d.causal_conv1d_fn`` does (without its fused activation):

    y[b, c, t] = bias[c] + sum_j weight[c, j] * x[b, c, t - (width - 1) + j]     (x = 0 before t = 0)

The reference is ``F.conv1d`` with ``groups=channels`` and ``width - 1`` zeros of padding on the left. On a
CPU the kernel in ``csrc/cpu_kernels.cpp`` (``impl="auto"``) works channels-last: it reads ``x`` where its
channels have unit stride (the mixer's ``x`` is a transposed view of in_proj's (batch, length, 2 d_inner)
output) and returns ``y`` as a transposed view of a contiguous (batch, length, channels) tensor, the layout
the activation, x_proj and the scan read next. F.conv1d needs (batch, channels, length) contiguous input, so
the PyTorch path copies ``x`` into that layout and the mixer copies back (four transposing copies a layer,
forward and backward). The kernel keeps the weight and the arithmetic in fp32 (fp64 for fp64 input) and
reads and writes ``x`` and ``y`` in their own dtype (bf16 under autocast); F.conv1d under autocast rounds
the weight to bf16 as well, so the two paths agree to bf16 rounding, not bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mswelu.base.errors import unknown_choice
from mswelu.ops import cpu_kernels

__all__ = ["CONV_IMPLS", "causal_conv1d", "causal_conv1d_ref"]

CONV_IMPLS = ("auto", "cpu", "torch")
MAX_KERNEL_WIDTH = 8  # the CPU kernel's limit (kMaxConvWidth); wider convolutions take F.conv1d


def causal_conv1d_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """(batch, channels, length) -> the same shape, by F.conv1d (the reference)."""
    width = weight.shape[-1]
    out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=weight.shape[0])
    return out[..., : x.shape[-1]]


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, impl: str = "auto") -> Tensor:
    """Depthwise causal convolution (see the module docstring). ``impl``: ``"auto"`` (the CPU kernel for
    CPU tensors where it is built, else F.conv1d), ``"cpu"`` (the kernel, or an error saying why not) or
    ``"torch"``."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"causal_conv1d: {unknown_choice('impl', impl, CONV_IMPLS)}")
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(
            f"causal_conv1d: x must be (batch, channels, length) and weight (channels, width), got "
            f"{tuple(x.shape)} and {tuple(weight.shape)}"
        )
    fits = x.device.type == "cpu" and weight.shape[1] <= MAX_KERNEL_WIDTH and x.dtype in _KERNEL_DTYPES
    if impl == "cpu":
        if not fits:
            raise ValueError(
                f"causal_conv1d: impl='cpu' needs CPU tensors in {_KERNEL_DTYPES} and a width of at most "
                f"{MAX_KERNEL_WIDTH}"
            )
        cpu_kernels.load()  # raises, saying why, where the kernels cannot be built
    elif impl == "torch" or not (fits and cpu_kernels.usable()):
        return causal_conv1d_ref(x, weight, bias)
    return _CpuCausalConv1d.apply(x, weight, bias)


_KERNEL_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


class _CpuCausalConv1d(torch.autograd.Function):
    """The compiled kernel, channels-last: saves x (as the kernel read it) and the fp32 weight."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        x_l = x.detach().transpose(1, 2)  # (batch, length, channels)
        if x_l.shape[2] > 1 and x_l.stride(2) != 1:
            x_l = x_l.contiguous()
        w_t = weight.detach().to(ct).t().contiguous()  # (width, channels)
        b = None if bias is None else bias.detach().to(ct).contiguous()
        y = cpu_kernels.load().causal_conv1d_fwd(x_l, w_t, b)
        ctx.save_for_backward(x_l, w_t, b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return y.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x_l, w_t, b = ctx.saved_tensors
        g = grad_out.transpose(1, 2).to(x_l.dtype)
        if g.shape[2] > 1 and g.stride(2) != 1:
            g = g.contiguous()
        gx, gw_t, gb = cpu_kernels.load().causal_conv1d_bwd(g, x_l, w_t, b)
        w_dtype, b_dtype = ctx.dtypes
        return (
            gx.transpose(1, 2) if ctx.needs_input_grad[0] else None,
            gw_t.t().to(w_dtype) if ctx.needs_input_grad[1] else None,
            gb.to(b_dtype) if b is not None and ctx.needs_input_grad[2] else None,
        )
