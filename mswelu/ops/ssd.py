"""Mamba-2's SSD (state-space duality) scan in pure PyTorch: a chunked, matmul-heavy CPU path and a
per-step reference.

Both take the arguments of mamba-ssm's ``mamba_chunk_scan_combined`` without the gate ``z`` (the mixer
applies its pluggable gate activation outside) and without ``seq_idx`` / ``cu_seqlens``::

    x: (b, l, h, p)   dt: (b, l, h)   A: (h,)   B, C: (b, l, g, n), g divides h
    D: (h,) or (h, p)   dt_bias: (h,)   initial_states: (b, h, p, n)

    dt    <- clamp(softplus(dt + dt_bias), *dt_limit)         (bias / softplus optional)
    h_t    = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T            h: (b, h, p, n), one scalar decay per head
    y_t    = h_t C_t + D x_t                                   B_t, C_t: the head's group's

and return ``y`` in x's dtype (plus the fp32 final state ``h_l`` with ``return_final_states``).

Why chunks: within a chunk of ``Q`` steps the recurrence unrolls into a masked "attention" matrix,
``y_t = sum_{s<=t} (C_t . B_s) exp(Acum_t - Acum_s) dt_s x_s``, and across chunks only one (p, n) state per
head is handed on. Every term is then a matmul: ``C B^T`` per group (Q x Q), that matrix times x per head,
the chunk's end state ``B^T (decayed x)`` and the start state's contribution ``C state``. The heads of one
group share B and C, so the state terms run as one (Q, n) x (n, heads_per_group * p) matmul per group and
chunk, in x's own memory layout. A CPU does these matmuls several times faster than the recurrence's
elementwise work, and in bf16 faster still.

Precision: dt, its cumulative sums, every decay and the states handed between chunks are fp32 (fp64 for
fp64 input, so that gradcheck can check the backward); the matmul operands are bf16 when x is bf16 (the
CPU's bf16 matmuls accumulate in fp32 and round their output once), fp32 otherwise. Autocast is turned off
inside: the function picks its own dtypes.

The chunk size does not change the result (the algorithm is exact for any chunk size, up to rounding), so
on a CPU it is an implementation detail: :data:`DEFAULT_CHUNK_SIZE` is the fastest measured at the
``mamba2-130m`` shape (``python -m mswelu.bench mamba2 --chunk-sweep``). Gradients come from autograd
over the chunked computation: its saved tensors are the (Q x Q) decay and score matrices per chunk and the
chunk-start states, a few MB a layer; see the bench's note for why no custom backward.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DEFAULT_CHUNK_SIZE", "ssd_chunk_scan", "ssd_ref"]

DEFAULT_CHUNK_SIZE = 64
_NO_LIMIT = (0.0, math.inf)


def _check_args(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D, dt_bias, initial_states) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be (batch, length, nheads, headdim), got shape {tuple(x.shape)}")
    b, length, h, p = x.shape
    if dt.shape != (b, length, h):
        raise ValueError(f"dt must be (batch, length, nheads) = {(b, length, h)}, got {tuple(dt.shape)}")
    if A.shape != (h,):
        raise ValueError(f"A must be (nheads={h},), got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (b, length) or h % B.shape[2] != 0:
        raise ValueError(
            f"B must be (batch, length, ngroups, dstate), ngroups dividing nheads={h}; got {tuple(B.shape)}"
        )
    if C.shape != B.shape:
        raise ValueError(f"C must have B's shape {tuple(B.shape)}, got {tuple(C.shape)}")
    if D is not None and D.shape not in ((h,), (h, p)):
        raise ValueError(
            f"D must be (nheads,) or (nheads, headdim) = {(h,)} or {(h, p)}, got {tuple(D.shape)}"
        )
    if dt_bias is not None and dt_bias.shape != (h,):
        raise ValueError(f"dt_bias must be (nheads={h},), got {tuple(dt_bias.shape)}")
    n = B.shape[3]
    if initial_states is not None and initial_states.shape != (b, h, p, n):
        raise ValueError(
            f"initial_states must be (batch, nheads, headdim, dstate) = {(b, h, p, n)}, "
            f"got {tuple(initial_states.shape)}"
        )


def _compute_dtype(x: Tensor) -> torch.dtype:
    """fp32 for the decays and states, except that fp64 stays fp64 (gradcheck)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _no_autocast(device_type: str):
    """The function chooses its dtypes itself: keep autocast from recasting its matmuls."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def discretize_dt(
    dt: Tensor,
    dt_bias: Tensor | None,
    dt_softplus: bool,
    dt_limit: tuple[float, float],
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``clamp(softplus(dt + dt_bias), *dt_limit)`` in ``dtype``, as mamba-ssm's kernels compute the step."""
    dt = dt.to(dtype)
    if dt_bias is not None:
        dt = dt + dt_bias.to(dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    if tuple(dt_limit) != _NO_LIMIT:
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def _d_skip(x: Tensor, D: Tensor) -> Tensor:
    """D x with D per head (h,) or per channel (h, p)."""
    return x * (D[:, None] if D.dim() == 1 else D).to(x.dtype)


def ssd_ref(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = _NO_LIMIT,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The recurrence one time step per loop turn, state in fp32 (fp64 for fp64 input): the reference that
    :func:`ssd_chunk_scan` is checked against. Slow; memory grows with the length under autograd."""
    _check_args(x, dt, A, B, C, D, dt_bias, initial_states)
    ct = _compute_dtype(x)
    b, length, h, p = x.shape
    g, n = B.shape[2:]
    dt = discretize_dt(dt, dt_bias, dt_softplus, dt_limit, ct)
    xc = x.to(ct)
    Bh = B.to(ct).repeat_interleave(h // g, dim=2)  # (b, l, h, n): each head reads its group's B and C
    Ch = C.to(ct).repeat_interleave(h // g, dim=2)
    A = A.to(ct)
    state = x.new_zeros(b, h, p, n, dtype=ct) if initial_states is None else initial_states.to(ct)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]  # (b, h, 1, 1)
        state = decay * state + (dt[:, t, :, None] * xc[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append((state @ Ch[:, t, :, :, None]).squeeze(-1))  # (b, h, p)
    y = torch.stack(ys, dim=1)
    if D is not None:
        y = y + _d_skip(xc, D.to(ct))
    out = y.to(x.dtype)
    return (out, state) if return_final_states else out


def ssd_chunk_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int | None = None,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = _NO_LIMIT,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The SSD scan by chunks (see the module docstring), with ``mamba_chunk_scan_combined``'s arguments
    less ``z``. ``chunk_size`` (default :data:`DEFAULT_CHUNK_SIZE`) changes only the speed and the rounding;
    the final state (fp32, (b, h, p, n)) carries gradients like every other output."""
    _check_args(x, dt, A, B, C, D, dt_bias, initial_states)
    chunk = DEFAULT_CHUNK_SIZE if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    with _no_autocast(x.device.type):
        ct = _compute_dtype(x)
        mm = torch.bfloat16 if x.dtype == torch.bfloat16 else ct
        dt = discretize_dt(dt, dt_bias, dt_softplus, dt_limit, ct)
        y, final = _chunked(x, dt, A.to(ct), B, C, initial_states, min(chunk, x.shape[1]), ct, mm)
        if D is not None:
            y = y + _d_skip(x.to(ct), D.to(ct))
        out = y.to(x.dtype)
    return (out, final) if return_final_states else out


def _chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    initial_states: Tensor | None,
    Q: int,
    ct: torch.dtype,
    mm: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """y (b, l, h, p) in ``ct`` without the D term, and the final state (b, h, p, n) in ``ct``.

    Shapes: c chunks of Q steps (the last padded with dt = 0, which neither decays nor adds to the state),
    k = h / g heads per group. States are kept as (n, k * p) per group and chunk: the layout in which
    ``C @ state`` and ``B^T @ x`` are single matmuls over all heads of the group.
    """
    b, length, h, p = x.shape
    g, n = B.shape[2:]
    k = h // g
    c = -(-length // Q)
    pad = c * Q - length
    xdt = x.to(ct) * dt[..., None]  # (b, l, h, p)
    if pad:
        xdt = F.pad(xdt, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    acum = (dt * A).view(b, c, Q, h).cumsum(2)  # (b, c, Q, h): log-decay from the chunk's start
    Bc = B.to(mm).view(b, c, Q, g, n).transpose(2, 3)  # (b, c, g, Q, n)
    Cc = C.to(mm).view(b, c, Q, g, n).transpose(2, 3)

    # 1. within each chunk: y_t += sum_{s<=t} (C_t . B_s) exp(acum_t - acum_s) dt_s x_s
    a_h = acum.permute(0, 1, 3, 2)  # (b, c, h, Q)
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    seg = (a_h[..., :, None] - a_h[..., None, :]).masked_fill(~causal, -math.inf)  # exp(-inf) = 0 above
    scores = (Cc @ Bc.transpose(-1, -2)).to(ct)  # (b, c, g, Q, Q), shared by the group's heads
    M = (scores[:, :, :, None] * seg.exp().view(b, c, g, k, Q, Q)).to(mm)  # (b, c, g, k, Q, Q)
    x_heads = xdt.view(b, c, Q, g, k, p).permute(0, 1, 3, 4, 2, 5).to(mm)  # (b, c, g, k, Q, p)
    y = (M @ x_heads).to(ct)  # (b, c, g, k, Q, p)

    # 2. each chunk's own end state: sum_s exp(acum_end - acum_s) dt_s x_s B_s^T, as (n, k p) per group
    to_end = (acum[:, :, -1:] - acum).exp()  # (b, c, Q, h)
    x_to_end = (xdt.view(b, c, Q, h, p) * to_end[..., None]).view(b, c, Q, g, k * p).transpose(2, 3)
    local = (Bc.transpose(-1, -2) @ x_to_end.to(mm)).to(ct)  # (b, c, g, n, k p)

    # 3. hand the state from chunk to chunk (c steps): start_{i+1} = exp(acum_end_i) start_i + local_i
    chunk_decay = acum[:, :, -1].exp().view(b, c, g, 1, k, 1)
    if initial_states is None:
        state = x.new_zeros(b, g, n, k, p, dtype=ct)
    else:  # (b, h, p, n) -> (b, g, n, k, p)
        state = initial_states.to(ct).view(b, g, k, p, n).permute(0, 1, 4, 2, 3)
    starts = []
    for decay_i, local_i in zip(chunk_decay.unbind(1), local.view(b, c, g, n, k, p).unbind(1), strict=True):
        starts.append(state)
        state = decay_i * state + local_i
    start = torch.stack(starts, dim=1).view(b, c, g, n, k * p)

    # 4. the start state's contribution: y_t += exp(acum_t) C_t start
    y_off = (Cc @ start.to(mm)).to(ct).view(b, c, g, Q, k, p)  # (b, c, g, Q, k, p)
    decay_in = acum.exp().view(b, c, Q, g, k).permute(0, 1, 3, 2, 4)[..., None]  # (b, c, g, Q, k, 1)
    y = y.permute(0, 1, 4, 2, 3, 5) + (y_off * decay_in).permute(0, 1, 3, 2, 4, 5)  # (b, c, Q, g, k, p)
    y = y.reshape(b, c * Q, h, p)[:, :length]
    final = state.permute(0, 1, 3, 4, 2).reshape(b, h, p, n)
    return y, final
