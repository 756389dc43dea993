"""The selective scan on the compiled CPU kernel (:mod:`mswelu.ops.cpu_kernels`), with the gate's activation
in its output epilogue.

``out = y * act(z)``: mamba_ssm's gate is SiLU; the mixers' gate is any activation, and the ones that register
a kernel form (:class:`~mswelu.ops.causal_conv.Epilogue`: SiLU, SWELU, Swish-beta) run inside the scan's pass,
forward and backward, the shape parameters' gradients summed in the same pass: no activation-sized ``act(z)``
written and read back, no separate product and activation passes. Given as an Epilogue, the gate gives the
bits of the scan followed by the activation's own CPU kernel and the product (y and act(z) rounded to z's
dtype before the product, SWELU's k and lam summed in ``swelu_bwd``'s order), which is what the mixer
computed before: :func:`gate_fits` says where the mixer uses it
(:data:`~mswelu.ops.causal_conv.EPILOGUE_ENV`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mswelu.ops import cpu_kernels
from mswelu.ops.causal_conv import EPILOGUES, Epilogue, epilogue_allowed
from mswelu.ops.ssd import compute_dtype, no_autocast
from mswelu.ops.swelu import ZERO_EPS

__all__ = ["CpuSelectiveScanFn", "EXACT_GATES", "gate_fits", "io_dtype"]

#: the gate epilogues that give the unfused ops' bits for every shape: those whose unfused op is mswelu's own
#: vector kernel (SWELU). SiLU's unfused op is ATen's silu, which runs libm's scalar exp on the last elements
#: of each row of the strided gate (a row not a multiple of its double vector): the same bits only where no
#: row has such a tail, so its gate epilogue runs on request (``all``), as Swish's does (another beta sum
#: order).
EXACT_GATES = ("swelu",)


def io_dtype(u: Tensor, delta: Tensor) -> torch.dtype:
    """The dtype the kernel reads u and delta in and writes y in: bf16 where both are, else the compute
    dtype."""
    return torch.bfloat16 if u.dtype == delta.dtype == torch.bfloat16 else compute_dtype(u)


def gate_fits(u: Tensor, delta: Tensor, z: Tensor, gate: Epilogue) -> bool:
    """Whether the mixer runs its gate in the scan's epilogue (the scan itself on the CPU kernel, which the
    caller checks): :data:`~mswelu.ops.causal_conv.EPILOGUE_ENV` allows this gate (``exact``:
    :data:`EXACT_GATES` with an exact epilogue) and z comes in the kernel's IO dtype, as u and delta do (the
    unfused ops' roundings)."""
    exact = gate.exact and gate.act in EXACT_GATES
    return epilogue_allowed(exact) and z.dtype == u.dtype == delta.dtype == io_dtype(u, delta)


class CpuSelectiveScanFn(torch.autograd.Function):
    """The scan (:class:`~mswelu.ops.selective_scan.SelectiveScanFn`'s computation) by the compiled CPU
    kernel.

    The kernel takes (b, l, d) layouts with unit channel stride (the mixer's dt already is one). u and delta
    in bf16 (the mixer under bf16 autocast) go in as they are, and y, du and ddelta come back in bf16: the
    kernel reads and rounds them itself. Other inputs are converted once to the compute dtype and saved as
    converted, with the chunk-start states. The gate: mamba_ssm's SiLU of fp32 z where ``gate`` is None; else
    the Epilogue's activation of z in u's dtype (a view of in_proj's output, no copy), or in fp32 where it is
    in another dtype.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, k, lam, delta_softplus, chunk_size, act):
        ct = compute_dtype(u)
        io = io_dtype(u, delta)
        z_dtype = io if act is not None and z is not None and z.dtype == io else ct
        with no_autocast(u.device.type):
            args = (
                _channels_last(u, io),
                _channels_last(delta, io),
                A.detach().to(ct).t().contiguous(),  # (n, d)
                B.detach().to(ct).transpose(1, 2),  # (b, l, n), any strides
                C.detach().to(ct).transpose(1, 2),
                None if D is None else D.detach().to(ct).contiguous(),
                None if z is None else _channels_last(z, z_dtype),
                None if delta_bias is None else delta_bias.detach().to(ct).contiguous(),
            )
            ctx.gate = (
                EPILOGUES[act or "silu"],
                1.0 if k is None else float(k),
                1.0 if lam is None else float(lam),
            )
            out, last, states = cpu_kernels.load().selective_scan_fwd(
                *args, delta_softplus, chunk_size, *ctx.gate
            )
        ctx.save_for_backward(*args, states, k, lam)
        ctx.dtypes = [None if t is None else t.dtype for t in (u, delta, A, B, C, D, z, delta_bias, k, lam)]
        ctx.delta_softplus, ctx.chunk_size = delta_softplus, chunk_size
        last = last.transpose(1, 2)  # (b, d, n)
        ctx.mark_non_differentiable(last)
        return out.transpose(1, 2).to(u.dtype), last

    @staticmethod
    def backward(ctx, gout, _glast):
        *args, states, _k, _lam = ctx.saved_tensors
        need_k, need_lam = ctx.needs_input_grad[8:10]
        with no_autocast(gout.device.type):
            g = _channels_last(gout, args[0].dtype)
            gu, gdelta, gAt, gB, gC, gD, gz, gbias, gk, glam = cpu_kernels.load().selective_scan_bwd(
                g, *args, states, ctx.delta_softplus, ctx.chunk_size, *ctx.gate, ZERO_EPS, need_k, need_lam
            )
        grads = [
            None if g is None else (g.transpose(1, 2) if g.dim() == 3 else g).to(dtype)
            for g, dtype in zip((gu, gdelta, gAt.t(), gB, gC, gD, gz, gbias), ctx.dtypes[:8], strict=True)
        ]
        k_dtype, lam_dtype = ctx.dtypes[8:10]
        return (
            *grads,
            gk.reshape(_k.shape).to(k_dtype) if need_k else None,
            glam.reshape(_lam.shape).to(lam_dtype) if need_lam else None,
            None,
            None,
            None,
        )


def _channels_last(x: Tensor, dtype: torch.dtype) -> Tensor:
    """(b, d, l) -> (b, l, d) with unit channel stride, in ``dtype`` (a view where it already is one)."""
    x = x.detach().transpose(1, 2).to(dtype)
    return x if x.shape[2] == 1 or x.stride(2) == 1 else x.contiguous()
