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
chunk, in x's own memory layout. Matmuls are what a CPU runs near its peak (in bf16 faster still), where
the recurrence is elementwise work on a (p, n) state per head and step.

Precision: dt, its cumulative sums, every decay and the states handed between chunks are fp32 (fp64 for
fp64 input, so that gradcheck can check the backward); the matmul operands are bf16 when x is bf16 (the
CPU's bf16 matmuls accumulate in fp32 and round their output once; a product that only feeds a matmul,
such as x times its step and decay, is formed in bf16), fp32 otherwise, and y is summed in fp32. Autocast
is turned off inside: the function picks its own dtypes.

The chunk size does not change the result (the algorithm is exact for any chunk size, up to rounding), so
on a CPU it is an implementation detail: :data:`DEFAULT_CHUNK_SIZE` is the fastest measured at the
``mamba2-130m`` shape (``python -m mswelu.bench mamba2 --chunk-sizes 32 64 128 256`` times others).

Gradients: :class:`ChunkedSSDFn` has an analytic backward. It keeps the inputs, the state at each chunk's
start, the decay matrices and ``C @ state``, and recomputes the rest. Measured at the ``mamba2-130m`` mixer
shape (2 x 512 tokens, one thread) against plain autograd over the same chunked computation: a mixer
stack's peak memory grows by 85 instead of 130 MiB a layer (bf16 autocast), and the SSD's forward +
backward takes the same time in bf16 and about 10% more in fp32.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["DEFAULT_CHUNK_SIZE", "ChunkedSSDFn", "discretize_dt", "ssd_chunk_scan", "ssd_ref"]

DEFAULT_CHUNK_SIZE = 64
# Decay factors below exp(-80) ~ 2e-35 are taken as 0: torch.exp is several times slower on a CPU where its
# result underflows (long decays of fast heads), and such factors change no fp32 sum.
_LOG_TINY = -80.0
_NO_LIMIT = (0.0, math.inf)


def expect_shape(name: str, t: Tensor | None, what: str, *shapes: tuple[int, ...]) -> None:
    """A ValueError ``"<name> must <what>, got <shape>"`` unless ``t`` is None or has one of ``shapes``:
    the shape checks of the scans' arguments (:mod:`mswelu.ops.selective_scan` and this module)."""
    if t is not None and tuple(t.shape) not in shapes:
        raise ValueError(f"{name} must {what}, got {tuple(t.shape)}")


def _check_args(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D, dt_bias, initial_states) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be (batch, length, nheads, headdim), got shape {tuple(x.shape)}")
    b, length, h, p = x.shape
    expect_shape("dt", dt, f"be (batch, length, nheads) = {(b, length, h)}", (b, length, h))
    expect_shape("A", A, f"be (nheads={h},)", (h,))
    if B.dim() != 4 or B.shape[:2] != (b, length) or h % B.shape[2] != 0:
        raise ValueError(
            f"B must be (batch, length, ngroups, dstate), ngroups dividing nheads={h}; got {tuple(B.shape)}"
        )
    expect_shape("C", C, f"have B's shape {tuple(B.shape)}", tuple(B.shape))
    expect_shape("D", D, f"be (nheads,) or (nheads, headdim) = {(h,)} or {(h, p)}", (h,), (h, p))
    expect_shape("dt_bias", dt_bias, f"be (nheads={h},)", (h,))
    shape = (b, h, p, B.shape[3])
    expect_shape("initial_states", initial_states, f"be (batch, nheads, headdim, dstate) = {shape}", shape)


def compute_dtype(x: Tensor) -> torch.dtype:
    """fp32 for the scans' decays and states, except that fp64 stays fp64 (gradcheck)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def no_autocast(device_type: str):
    """The scans choose their dtypes themselves: keep autocast from recasting their matmuls."""
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
    ct = compute_dtype(x)
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
    with no_autocast(x.device.type):
        ct = compute_dtype(x)
        dt = discretize_dt(dt, dt_bias, dt_softplus, dt_limit, ct)
        D = None if D is None else (D[:, None] if D.dim() == 1 else D).to(ct)  # (h, 1) or (h, p)
        out, final = ChunkedSSDFn.apply(x, dt, A.to(ct), B, C, D, initial_states, min(chunk, x.shape[1]))
    return (out, final) if return_final_states else out


class _Chunks:
    """The inputs cut into c chunks of Q steps (the last padded with dt = 0, which neither decays nor adds
    to the state), and what forward and backward both derive from them. k = h / g heads per group.

    Layouts: ``x`` (b, c, Q, h, p) in the matmul dtype ``mm``; ``dt``, ``acum`` (the log-decay from the
    chunk's start) and ``to_end`` (the decay to the chunk's end) (b, c, Q, h) in the compute dtype ``ct``;
    ``Bc``, ``Cc`` (b, c, g, Q, n) in ``mm``; ``L`` (b, c, g, k, Q, Q) = exp(acum_t - acum_s) for s <= t,
    else 0, and ``scores`` (b, c, g, Q, Q) = C_t . B_s (shared by the group's heads) in ``ct``. States are
    (n, k p) per group and chunk: the layout in which ``C @ state`` and ``B^T @ x`` are one matmul over the
    group's heads. dt multiplies x only inside matmul operands (folded into the diagonal block's columns and
    into the end-state weights), so no (b, l, h, p) tensor of dt x is ever made.
    """

    def __init__(
        self, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, Q: int, L: Tensor | None = None
    ) -> None:
        b, length, h, p = x.shape
        g, n = B.shape[2:]
        c = -(-length // Q)
        self.shape = (b, c, Q, h, p, g, h // g, n)
        self.length = length
        self.ct = dt.dtype
        self.mm = torch.bfloat16 if x.dtype == torch.bfloat16 else self.ct
        self.x = self.chunked(x).to(self.mm)
        self.dt = self.chunked(dt)
        self.acum = (self.dt * A).cumsum(2)
        self.to_end = (self.acum[:, :, -1:] - self.acum).exp()
        self.Bc = self.chunked(B).transpose(2, 3).to(self.mm, memory_format=torch.contiguous_format)
        self.Cc = self.chunked(C).transpose(2, 3).to(self.mm, memory_format=torch.contiguous_format)
        if L is None:
            a_h = self.acum.unflatten(-1, (g, h // g)).permute(0, 1, 3, 4, 2)  # (b, c, g, k, Q)
            causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
            seg = (a_h[..., :, None] - a_h[..., None, :]).masked_fill_(~causal, -math.inf)
            L = seg.masked_fill_(seg < _LOG_TINY, -math.inf).exp_()
        self.L = L
        self.scores = (self.Cc @ self.Bc.transpose(-1, -2)).to(self.ct)

    def chunked(self, t: Tensor) -> Tensor:
        """(b, l, ...) -> (b, c, Q, ...), zero-padded at the end."""
        b, c, Q = self.shape[:3]
        if c * Q != self.length:
            t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, c * Q - self.length))
        return t.view(b, c, Q, *t.shape[2:])

    def unpad(self, t: Tensor) -> Tensor:
        """(b, c, Q, ...) -> (b, l, ...)."""
        return t.flatten(1, 2)[:, : self.length]

    def dt_columns(self) -> Tensor:
        """dt as (b, c, g, k, 1, Q): the factor of the diagonal block's column s."""
        b, c, Q, h, p, g, k, n = self.shape
        return self.dt.unflatten(-1, (g, k)).permute(0, 1, 3, 4, 2)[..., None, :]

    def diagonal_block(self) -> Tensor:
        """M[t, s] = (C_t . B_s) exp(acum_t - acum_s) dt_s per head: (b, c, g, k, Q, Q), matmul dtype."""
        return (self.scores[:, :, :, None] * self.L * self.dt_columns()).to(self.mm)

    def x_to_end(self) -> Tensor:
        """x_s dt_s exp(acum_end - acum_s), grouped (b, c, g, Q, k p) in the matmul dtype: B^T of it is the
        chunk's own end state."""
        return self.grouped(self.x * (self.dt * self.to_end).to(self.mm)[..., None])

    def grouped(self, t: Tensor) -> Tensor:
        """(b, c, Q, h, p) -> (b, c, g, Q, k p), contiguous, in the matmul dtype."""
        b, c, Q, h, p, g, k, n = self.shape
        return t.view(b, c, Q, g, k * p).transpose(2, 3).to(self.mm, memory_format=torch.contiguous_format)

    def heads(self, t: Tensor) -> Tensor:
        """(b, c, Q, h, p) -> (b, c, g, k, Q, p), contiguous, in the matmul dtype."""
        b, c, Q, h, p, g, k, n = self.shape
        return (
            t.unflatten(3, (g, k))
            .permute(0, 1, 3, 4, 2, 5)
            .to(self.mm, memory_format=torch.contiguous_format)
        )

    def from_heads(self, t: Tensor) -> Tensor:
        """(b, c, g, k, Q, p) -> (b, c, Q, h, p) in the compute dtype."""
        return t.permute(0, 1, 4, 2, 3, 5).flatten(3, 4).to(self.ct)

    def from_group(self, t: Tensor) -> Tensor:
        """(b, c, g, Q, k p) -> (b, c, Q, h, p) in the compute dtype."""
        b, c, Q, h, p, g, k, n = self.shape
        return t.unflatten(-1, (k, p)).transpose(2, 3).flatten(3, 4).to(self.ct)

    def per_head(self, t: Tensor) -> Tensor:
        """(b, c, g, k, Q) -> (b, c, Q, h)."""
        return t.permute(0, 1, 4, 2, 3).flatten(3)

    def states(self, t: Tensor) -> Tensor:
        """(b, c, g, n, k, p) states -> (b, c, g, n, k p) in the matmul dtype."""
        return t.flatten(-2).to(self.mm)


class ChunkedSSDFn(torch.autograd.Function):
    """y = SSD(x, dt, A, B, C) + D x by chunks, and the final state, with an analytic backward.

    Takes dt already discretised (softplus, bias and clamp stay with autograd) in the compute dtype.
    Saves the inputs, the (b, c, g, n, k, p) state at each chunk's start, ``L`` and ``C @ start``; backward
    recomputes the rest. Arguments: (x, dt, A, B, C, D as (h, 1) or (h, p) or None, initial_states or None,
    Q); returns (y in x's dtype, final state (b, h, p, n) in the compute dtype).
    """

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, initial_states, Q):
        t = _Chunks(x, dt, A, B, C, Q)
        b, c, Q, h, p, g, k, n = t.shape
        # 1. within each chunk: y_t = sum_{s<=t} (C_t . B_s) exp(acum_t - acum_s) dt_s x_s
        y_diag = t.diagonal_block() @ t.heads(t.x)
        # 2. each chunk's own end state sum_s exp(acum_end - acum_s) dt_s B_s x_s^T, then the states handed
        # from chunk to chunk: start_{i+1} = exp(acum_end_i) start_i + local_i (start_c is the final state)
        local = (t.Bc.transpose(-1, -2) @ t.x_to_end()).unflatten(-1, (k, p)).to(t.ct)
        decay = t.acum[:, :, -1].exp().view(b, c, g, 1, k, 1)
        start = x.new_empty(b, c + 1, g, n, k, p, dtype=t.ct)
        if initial_states is None:
            start[:, 0] = 0
        else:  # (b, h, p, n) -> (b, g, n, k, p)
            start[:, 0] = initial_states.view(b, g, k, p, n).permute(0, 1, 4, 2, 3)
        for i in range(c):
            torch.addcmul(local[:, i], decay[:, i], start[:, i], out=start[:, i + 1])
        # 3. the start state's part: y_t += exp(acum_t) C_t start
        C_start = t.Cc @ t.states(start[:, :c])  # (b, c, g, Q, k p)
        y = (t.from_group(C_start) * t.acum.exp()[..., None]).add_(t.from_heads(y_diag))  # C_start is saved
        if D is not None:
            y.addcmul_(t.x.to(t.ct), D)
        final = start[:, c].permute(0, 1, 3, 4, 2).reshape(b, h, p, n)
        ctx.save_for_backward(x, dt, A, B, C, D, start[:, :c], t.L, C_start)
        ctx.Q, ctx.has_initial = Q, initial_states is not None
        return t.unpad(y).to(x.dtype), final

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gfinal):
        x, dt, A, B, C, D, start, L, C_start = ctx.saved_tensors
        t = _Chunks(x, dt, A, B, C, ctx.Q, L)
        b, c, Q, h, p, g, k, n = t.shape
        gy = t.chunked(gy.to(t.ct))  # (b, c, Q, h, p)
        gy_mm = gy.to(t.mm)
        # 3. y_t += exp(acum_t) C_t start: gradients of start, C and acum
        e_acum = t.acum.exp()
        gy_off = t.grouped(gy_mm * e_acum.to(t.mm)[..., None])  # (b, c, g, Q, k p)
        start_mm = t.states(start)
        g_start = (t.Cc.transpose(-1, -2) @ gy_off).unflatten(-1, (k, p)).to(t.ct)  # (b, c, g, n, k, p)
        gC = (gy_off @ start_mm.transpose(-1, -2)).to(t.ct)  # (b, c, g, Q, n)
        g_acum = (gy * t.from_group(C_start)).sum(-1).mul_(e_acum)  # (b, c, Q, h)
        # 2. the states handed on, in reverse: G_i = dLoss/d start_{i+1}, g_local_i = G_i
        decay = t.acum[:, :, -1].exp().view(b, c, g, 1, k, 1)
        G = start.new_zeros(b, g, n, k, p)
        if gfinal is not None:
            G.copy_(gfinal.view(b, g, k, p, n).permute(0, 1, 4, 2, 3))
        g_local = torch.empty_like(start, dtype=t.mm)
        g_decay = start.new_empty(b, c, g, 1, k, 1)
        for i in reversed(range(c)):
            g_local[:, i] = G
            g_decay[:, i] = (G * start[:, i]).sum((2, 4), keepdim=True)
            G = torch.addcmul(g_start[:, i], decay[:, i], G)
        g_initial = G.permute(0, 1, 3, 4, 2).reshape(b, h, p, n) if ctx.has_initial else None
        g_acum[:, :, -1] += g_decay.mul_(decay).view(b, c, h)
        # ... and each chunk's own end state: local = B^T (x w) with w = dt exp(acum_end - acum)
        g_local = g_local.flatten(-2)
        g_xw = t.from_group(t.Bc @ g_local)  # (b, c, Q, h, p)
        gB = (t.x_to_end() @ g_local.transpose(-1, -2)).to(t.ct)  # (b, c, g, Q, n)
        x32 = t.x.to(t.ct)
        g_w = (g_xw * x32).sum(-1)  # (b, c, Q, h)
        w = t.dt * t.to_end
        g_x = g_xw.mul_(w[..., None])
        g_dt = g_w * t.to_end
        u = g_w.mul_(w)  # d/d acum_end, and minus d/d acum
        g_acum -= u
        g_acum[:, :, -1] += u.sum(2)
        # 1. within each chunk: y = M @ x per head, M = scores * L * dt_columns
        gy_h = t.heads(gy_mm)
        g_x += t.from_heads(t.diagonal_block().transpose(-1, -2) @ gy_h)
        gM_L = (gy_h @ t.heads(t.x).transpose(-1, -2)).to(t.ct).mul_(t.L)  # dLoss/dM * L
        dt_cols = t.dt_columns()
        g_scores = (gM_L * dt_cols).sum(3).to(t.mm)  # (b, c, g, Q, Q)
        gC += (g_scores @ t.Bc).to(t.ct)
        gB += (g_scores.transpose(-1, -2) @ t.Cc).to(t.ct)
        g_seg = gM_L.mul_(t.scores[:, :, :, None])  # dLoss/dM * L * scores: d/d dt_s, once times dt_s ...
        g_dt += t.per_head(g_seg.sum(-2))
        g_seg.mul_(dt_cols)  # ... d/d(acum_t - acum_s)
        g_acum += t.per_head(g_seg.sum(-1) - g_seg.sum(-2))
        # acum = cumsum(dt A); y += x D
        g_a = g_acum.flip(2).cumsum(2).flip(2)
        g_dt.addcmul_(g_a, A)
        g_A = (g_a * t.dt).sum((0, 1, 2))
        g_D = None
        if D is not None:
            g_x.addcmul_(gy, D)
            g_D = (gy * x32).sum((0, 1, 2))
            g_D = g_D.sum(-1, keepdim=True) if D.shape[-1] == 1 else g_D

        def back(grad: Tensor, like: Tensor) -> Tensor:  # (b, c, Q, ...) -> (b, l, ...) in like's dtype
            return t.unpad(grad).to(like.dtype)

        gB, gC = back(gB.transpose(2, 3), B), back(gC.transpose(2, 3), C)
        return back(g_x, x), back(g_dt, dt), g_A.to(A.dtype), gB, gC, g_D, g_initial, None
