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

``causal_conv1d_act(x, weight, bias, Epilogue(...))`` is the conv with the activation that follows it in the
mixer (:data:`EPILOGUES`: SiLU, SWELU) in the kernel's epilogue, forward and backward, SWELU's k and lambda
gradients summed in the same pass: the same bits as the conv kernel followed by the activation's own CPU
kernel (the conv's output rounded to x's dtype before the activation reads it, the k sum in ``swelu_bwd``'s
order), without writing the conv's output and reading it back. Its reference is ``causal_conv1d_act_ref``.
Swish-beta has an epilogue too, whose beta gradient is summed in the kernel's own order (not the unfused
ops' bits): the mixers use it only where ``MSWELU_CONV_EPILOGUE=all`` (:data:`EPILOGUE_ENV`; ``exact``, the
default, uses the bit-identical ones, ``off`` none).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mswelu.base.errors import unknown_choice
from mswelu.ops import cpu_kernels
from mswelu.ops.swelu import ZERO_EPS, swelu

__all__ = [
    "CONV_IMPLS",
    "EPILOGUES",
    "EPILOGUE_ENV",
    "Epilogue",
    "causal_conv1d",
    "causal_conv1d_act",
    "causal_conv1d_act_ref",
    "causal_conv1d_ref",
    "epilogue_allowed",
    "epilogue_fits",
]

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
    fits = _kernel_fits(x, weight)
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


def _kernel_fits(x: Tensor, weight: Tensor) -> bool:
    return x.device.type == "cpu" and weight.shape[1] <= MAX_KERNEL_WIDTH and x.dtype in _KERNEL_DTYPES


def _kernel_inputs(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """(x channels-last with unit channel stride, the weight as (width, channels), the bias) as the kernel
    takes them, the weight and bias in the compute dtype."""
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    x_l = x.detach().transpose(1, 2)  # (batch, length, channels)
    if x_l.shape[2] > 1 and x_l.stride(2) != 1:
        x_l = x_l.contiguous()
    w_t = weight.detach().to(ct).t().contiguous()  # (width, channels)
    return x_l, w_t, None if bias is None else bias.detach().to(ct).contiguous()


def _grad_rows(grad_out: Tensor, like: Tensor) -> Tensor:
    """The output gradient (batch, channels, length) channels-last like the kernel's x."""
    g = grad_out.transpose(1, 2).to(like.dtype)
    return g.contiguous() if g.shape[2] > 1 and g.stride(2) != 1 else g


class _CpuCausalConv1d(torch.autograd.Function):
    """The compiled kernel, channels-last: saves x (as the kernel read it) and the fp32 weight."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        x_l, w_t, b = _kernel_inputs(x, weight, bias)
        y = cpu_kernels.load().causal_conv1d_fwd(x_l, w_t, b)
        ctx.save_for_backward(x_l, w_t, b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return y.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x_l, w_t, b = ctx.saved_tensors
        gx, gw_t, gb = cpu_kernels.load().causal_conv1d_bwd(_grad_rows(grad_out, x_l), x_l, w_t, b)
        return _conv_grads(ctx, gx, gw_t, gb)


def _conv_grads(ctx, gx: Tensor, gw_t: Tensor, gb: Tensor | None) -> tuple[Tensor | None, ...]:
    w_dtype, b_dtype = ctx.dtypes
    return (
        gx.transpose(1, 2) if ctx.needs_input_grad[0] else None,
        gw_t.t().to(w_dtype) if ctx.needs_input_grad[1] else None,
        gb.to(b_dtype) if gb is not None and ctx.needs_input_grad[2] else None,
    )


# ----------------------------------------------------------------------------- the activation epilogue

#: the activations the conv kernel applies in its epilogue: name -> its code in csrc/cpu_kernels.cpp
EPILOGUES = {"silu": 1, "swelu": 2, "swish": 3}
#: which epilogues the mixers use, the conv's and the scan's gate (:mod:`mswelu.ops.scan_cpu`): ``exact``
#: (default: those with the unfused ops' bits), ``all``, ``off``
EPILOGUE_ENV = "MSWELU_CONV_EPILOGUE"
_EPILOGUE_MODES = ("exact", "all", "off")


class Epilogue(NamedTuple):
    """An activation as the kernels' epilogues apply it (the conv's output; the scan's gate,
    :mod:`mswelu.ops.scan_cpu`): its name in :data:`EPILOGUES`, its shape values (SWELU's ``k`` and ``lam``,
    Swish's beta as ``k``: tensors that may need gradients, a number, or None for lam = 1) and whether the
    conv's epilogue gives the unfused ops' bits (``exact``). An activation opts in by registering ``kernel=``
    (``mswelu.modules.activations.registry.Activation``)."""

    act: str
    k: Tensor | None = None
    lam: Tensor | float | None = None
    exact: bool = True

    def reference(self, z: Tensor) -> Tensor:
        """The activation of z by PyTorch ops (the reference beside the kernels; SWELU's closed form)."""
        if self.act == "silu":
            return F.silu(z)
        if self.act == "swish":
            return z * torch.sigmoid(self.k * z)
        return swelu(z, self.k, self.lam, impl="torch")

    def scalars(self, where: str) -> tuple[Tensor | None, Tensor | None]:
        """(k, lam) as the kernels take them: 0-dim tensors or None (lam None for 1); a ValueError naming
        ``where`` for one that is not a scalar."""
        for name, value in (("k", self.k), ("lam", self.lam)):
            if isinstance(value, Tensor) and value.numel() != 1:
                raise ValueError(f"{where}: {name} must be a scalar, got shape {tuple(value.shape)}")
        # a number in fp64: held exactly, as the kernels read it (a double)
        k, lam = (
            v if isinstance(v, Tensor) or v is None else torch.tensor(float(v), dtype=torch.float64)
            for v in (self.k, self.lam)
        )
        return k, lam


def epilogue_allowed(exact: bool) -> bool:
    """Whether :data:`EPILOGUE_ENV` lets the mixers run an epilogue (conv or gate) that is ``exact`` (gives
    the unfused ops' bits) or not."""
    mode = os.environ.get(EPILOGUE_ENV, "").strip().lower() or "exact"
    if mode not in _EPILOGUE_MODES:
        raise ValueError(f"{EPILOGUE_ENV}: {unknown_choice('mode', mode, _EPILOGUE_MODES)}")
    return mode == "all" or (mode == "exact" and exact)


def epilogue_fits(x: Tensor, weight: Tensor, epilogue: Epilogue) -> bool:
    """Whether the mixers run :func:`causal_conv1d_act` for these inputs: :data:`EPILOGUE_ENV` allows this
    epilogue, the conv kernel fits and the CPU kernels are built (where they are not, one warning says why
    and callers run the conv and the activation apart)."""
    return epilogue_allowed(epilogue.exact) and _kernel_fits(x, weight) and cpu_kernels.usable()


def causal_conv1d_act_ref(
    x: Tensor, weight: Tensor, bias: Tensor | None, act: Callable[[Tensor], Tensor]
) -> Tensor:
    """``act(conv(x))`` by F.conv1d and the activation ``act`` (an elementwise function): the reference."""
    return act(causal_conv1d_ref(x, weight, bias))


def causal_conv1d_act(x: Tensor, weight: Tensor, bias: Tensor | None, epilogue: Epilogue) -> Tensor:
    """``act(causal_conv1d(x, weight, bias))`` in one pass of the CPU kernel (see the module docstring), x
    (batch, channels, length) -> the same shape, a transposed view of a channels-last tensor. The kernel must
    fit (:func:`epilogue_fits`); k and lam are scalars."""
    if epilogue.act not in EPILOGUES:
        raise ValueError(f"causal_conv1d_act: {unknown_choice('activation', epilogue.act, EPILOGUES)}")
    if not _kernel_fits(x, weight):
        raise ValueError(
            f"causal_conv1d_act: needs CPU tensors in {_KERNEL_DTYPES} and a width of at most "
            f"{MAX_KERNEL_WIDTH}"
        )
    k, lam = epilogue.scalars("causal_conv1d_act")
    return _CpuCausalConv1dAct.apply(x, weight, bias, k, lam, epilogue.act)


class _CpuCausalConv1dAct(torch.autograd.Function):
    """The conv kernel with the activation's epilogue: saves what the conv saves and the shape values; the
    conv's output is recomputed in the backward, where the activation's gradient is made."""

    @staticmethod
    def forward(ctx, x, weight, bias, k, lam, act):
        x_l, w_t, b = _kernel_inputs(x, weight, bias)
        ctx.values = (1.0 if k is None else float(k), 1.0 if lam is None else float(lam))
        y = cpu_kernels.load().causal_conv1d_act_fwd(x_l, w_t, b, EPILOGUES[act], *ctx.values)
        ctx.save_for_backward(x_l, w_t, b, k, lam)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        ctx.act = act
        return y.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x_l, w_t, b, k, lam = ctx.saved_tensors
        need_k, need_lam = ctx.needs_input_grad[3:5]
        gx, gw_t, gb, gk, glam = cpu_kernels.load().causal_conv1d_act_bwd(
            _grad_rows(grad_out, x_l),
            x_l,
            w_t,
            b,
            EPILOGUES[ctx.act],
            *ctx.values,
            ZERO_EPS,
            need_k,
            need_lam,
        )
        return (
            *_conv_grads(ctx, gx, gw_t, gb),
            gk.reshape(k.shape).to(k.dtype) if need_k else None,
            glam.reshape(lam.shape).to(lam.dtype) if need_lam else None,
            None,
        )
