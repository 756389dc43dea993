"""Mamba-1 selective scan in pure PyTorch: a fast, memory-lean CPU path and a reference loop.

Both take the arguments of mamba_ssm's ``selective_scan_fn`` / ``selective_scan_ref``::

    u, delta: (b, d, l)       A: (d, n)       B, C: (b, n, l) (input dependent)
    D: (d,)   z: (b, d, l)    delta_bias: (d,)

    delta <- softplus(delta + delta_bias)          (bias / softplus optional)
    h_t    = exp(delta_t A) * h_{t-1} + delta_t u_t B_t       h_0 = 0, h: (b, d, n)
    y_t    = <h_t, C_t> + D u_t
    out    = y * act(z)                                      (if z is given; act: SiLU, or ``gate``'s)

and return ``out`` in u's dtype (plus the fp32 last state ``h_l`` if ``return_last_state``). The arithmetic
is fp32 whatever the input dtype or autocast (fp64 inputs stay fp64, for gradcheck).

Why a custom autograd function: plain autograd over the recurrence keeps several (b, d, l, n) fp32 tensors
per layer alive (exp(delta A), delta B u, every state), which dominates CPU memory; a parallel scan (mambapy)
does more work than the recurrence, and on a CPU the work, not the depth, sets the time.
:class:`SelectiveScanFn` therefore does what the CUDA kernel does: it walks the sequence in chunks of
``chunk_size`` steps, keeps only the state at each chunk boundary (plus the (b, d, l) inputs), and in
backward recomputes one chunk's states at a time and runs the adjoint recurrence analytically. Within a chunk
everything except the two length-``chunk`` recurrences is batched tensor work, each recurrence step one
in-place ``addcmul`` on a contiguous (b, d, n) slice (``python -m mswelu.bench scan`` measures it).

The same algorithm as one C++ loop per (batch row, vector of channels) with the state in registers is
:mod:`mswelu.ops.cpu_kernels` (:mod:`mswelu.ops.scan_cpu`); :func:`selective_scan` runs it on CPU tensors
where it is built (``impl="auto"``) and this file's PyTorch code elsewhere (``impl="torch"``), its reference
in the tests. The gate's activation is SiLU (mamba_ssm's) or ``gate``, an activation's kernel form
(:class:`~mswelu.ops.causal_conv.Epilogue`), which the kernel applies in its output epilogue and the PyTorch
code by PyTorch ops (:meth:`~mswelu.ops.causal_conv.Epilogue.reference`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mswelu.base.errors import unknown_choice
from mswelu.ops import cpu_kernels
from mswelu.ops.causal_conv import EPILOGUES, Epilogue
from mswelu.ops.scan_cpu import CpuSelectiveScanFn
from mswelu.ops.ssd import compute_dtype, expect_shape, no_autocast

__all__ = [
    "selective_scan",
    "selective_scan_ref",
    "resolve_impl",
    "SelectiveScanFn",
    "DEFAULT_CHUNK_SIZE",
    "SCAN_IMPLS",
]

DEFAULT_CHUNK_SIZE = 16
SCAN_IMPLS = ("auto", "torch", "cpu")


def _check_shapes(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, d_inner, length), got shape {tuple(u.shape)}")
    b, d, length = u.shape
    expect_shape("delta", delta, f"have u's shape {tuple(u.shape)}", tuple(u.shape))
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d_inner={d}, d_state), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        ok = t.dim() == 4 and t.shape[0] == b and t.shape[2:] == (n, length) and d % t.shape[1] == 0
        what = "be (d_inner, d_state), (batch, d_state, length) or (batch, groups, d_state, length)"
        if not ok:  # the grouped layout, or one of the two plain ones
            expect_shape(name, t, f"{what} for d_inner={d}, d_state={n}, batch={b}, length={length}", (d, n),
                         (b, n, length))  # fmt: skip
    expect_shape("D", D, f"be (d_inner={d},)", (d,))
    expect_shape("delta_bias", delta_bias, f"be (d_inner={d},)", (d,))
    expect_shape("z", z, f"have u's shape {tuple(u.shape)}", tuple(u.shape))


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    gate: Epilogue | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The recurrence written as plainly as possible (one time step per loop turn, fp32).

    Slow and memory-hungry under autograd; it exists to check :func:`selective_scan` against.
    Accepts every B / C layout of mamba_ssm's reference: (d, n), (b, n, l), (b, g, n, l). ``gate``: the
    activation of z (None: SiLU), by PyTorch ops.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    _check_gate(gate)
    dtype_in = u.dtype
    ct = compute_dtype(u)
    u = u.to(ct)
    delta = delta.to(ct)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, length = u.shape
    A = A.to(ct)

    def per_channel(t: Tensor) -> Tensor:
        # -> (b, d, n, l) or (d, n) so that step t reads t[..., i]
        t = t.to(ct)
        if t.dim() == 4:
            return t.repeat_interleave(d // t.shape[1], dim=1)
        if t.dim() == 3:
            return t[:, None]
        return t

    Bx, Cx = per_channel(B), per_channel(C)
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for i in range(length):
        dA = torch.exp(delta[:, :, i, None] * A)
        b_i = Bx[..., i] if Bx.dim() == 4 else Bx
        c_i = Cx[..., i] if Cx.dim() == 4 else Cx
        h = dA * h + delta[:, :, i, None] * b_i * u[:, :, i, None]
        ys.append((h * c_i).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.to(ct)[None, :, None]
    act = F.silu if gate is None else gate.reference
    out = y if z is None else y * act(z.to(ct))
    out = out.to(dtype_in)
    return (out, h) if return_last_state else out


def _check_gate(gate: Epilogue | None) -> None:
    if gate is not None and gate.act not in EPILOGUES:
        raise ValueError(f"selective_scan: {unknown_choice('gate activation', gate.act, EPILOGUES)}")


class SelectiveScanFn(torch.autograd.Function):
    """Chunked recurrence with analytic backward for input-dependent B, C of shape (b, n, l).

    Internally time-major: per chunk, ``a = exp(delta A)`` and the states live in (T, b, d, n)
    buffers so that one time step is one contiguous (b, d, n) slice. Saved for backward: the inputs
    and one (b, d, n) state per chunk boundary.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size):
        with no_autocast(u.device.type):
            out, last, starts = _scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, starts)
        ctx.delta_softplus = delta_softplus
        ctx.chunk_size = chunk_size
        ctx.mark_non_differentiable(last)
        return out, last

    @staticmethod
    def backward(ctx, gout, _glast):
        with no_autocast(gout.device.type):
            grads = _scan_backward(gout, *ctx.saved_tensors, ctx.delta_softplus, ctx.chunk_size)
        return (*grads, None, None)


def _scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size):
    """Forward of :class:`SelectiveScanFn`: (out in u's dtype, last state, chunk-start states)."""
    b, d, length = u.shape
    n = A.shape[1]
    ct = compute_dtype(u)
    # time-major copies in the compute dtype: (l, b, d) and (l, b, n)
    ut = u.detach().permute(2, 0, 1).to(ct).contiguous()
    dt = _delta_time_major(delta.detach(), delta_bias, delta_softplus, ct)
    Bt = B.detach().permute(2, 0, 1).to(ct).contiguous()
    Ct = C.detach().permute(2, 0, 1).to(ct).contiguous()
    Af = A.detach().to(ct)
    Df = None if D is None else D.detach().to(ct)
    dtu = dt * ut

    n_chunks = (length + chunk_size - 1) // chunk_size
    starts = u.new_empty(n_chunks, b, d, n, dtype=ct)
    y = torch.empty(length, b, d, dtype=ct, device=u.device)
    h = u.new_zeros(b, d, n, dtype=ct)
    T_max = min(chunk_size, length)
    H = u.new_empty(T_max + 1, b, d, n, dtype=ct)
    a = u.new_empty(T_max, b, d, n, dtype=ct)
    for c in range(n_chunks):
        s, e = c * chunk_size, min((c + 1) * chunk_size, length)
        starts[c] = h
        Hc = _chunk_states(H, a, h, dt[s:e], dtu[s:e], Af, Bt[s:e])
        torch.matmul(Ct[s:e, :, None, :], Hc[1:].transpose(-1, -2), out=y[s:e, :, None, :])
        h = Hc[-1].clone()
    if Df is not None:
        y.addcmul_(ut, Df)
    y = y.permute(1, 2, 0)  # (b, d, l), a view
    out = y if z is None else y * F.silu(z.detach().to(ct))
    return out.to(u.dtype), h, starts


def _scan_backward(gout, u, delta, A, B, C, D, z, delta_bias, starts, delta_softplus, chunk_size):
    """Gradients w.r.t. (u, delta, A, B, C, D, z, delta_bias), recomputing states chunk by chunk."""
    b, d, length = u.shape
    n = A.shape[1]
    ct = compute_dtype(u)
    ut = u.permute(2, 0, 1).to(ct).contiguous()
    draw = delta.permute(2, 0, 1).to(ct)
    if delta_bias is not None:
        draw = draw + delta_bias.to(ct)
    dt = (F.softplus(draw) if delta_softplus else draw).contiguous()
    Bt = B.permute(2, 0, 1).to(ct).contiguous()
    Ct = C.permute(2, 0, 1).to(ct).contiguous()
    Af = A.to(ct)
    Df = None if D is None else D.to(ct)
    dtu = dt * ut
    gout_t = gout.permute(2, 0, 1).to(ct)
    if z is not None:
        zt = z.permute(2, 0, 1).to(ct)
        sig_z = torch.sigmoid(zt)
        gy = (gout_t * zt * sig_z).contiguous()  # d out / d y = silu(z)
        gz = torch.empty_like(zt)
    else:
        gy = gout_t.contiguous()
        gz = None

    g_u = torch.empty_like(ut)
    g_dt = torch.empty_like(ut)
    g_B = torch.empty_like(Bt)
    g_C = torch.empty_like(Ct)
    g_A = torch.zeros_like(Af)
    T_max = min(chunk_size, length)
    H = u.new_empty(T_max + 1, b, d, n, dtype=ct)
    a = u.new_empty(T_max, b, d, n, dtype=ct)
    G = u.new_empty(T_max, b, d, n, dtype=ct)
    carry = None  # a_{e} * dL/dh_{e} handed from the chunk after this one
    n_chunks = starts.shape[0]
    for c in reversed(range(n_chunks)):
        s, e = c * chunk_size, min((c + 1) * chunk_size, length)
        T = e - s
        Hc = _chunk_states(H, a, starts[c], dt[s:e], dtu[s:e], Af, Bt[s:e])
        ac = a[:T]
        if gz is not None:
            # y recomputed from the states: gz = gout * y * silu'(z)
            yc = torch.matmul(Ct[s:e, :, None, :], Hc[1:].transpose(-1, -2)).squeeze(-2)
            if Df is not None:
                yc.addcmul_(ut[s:e], Df)
            sz = sig_z[s:e]
            gz[s:e] = gout_t[s:e] * yc * sz * (1 + zt[s:e] * (1 - sz))
        gyc = gy[s:e]
        # adjoint of the states: g_t = gy_t C_t + a_{t+1} g_{t+1}
        Gc = G[:T]
        torch.mul(gyc[..., None], Ct[s:e, :, None, :], out=Gc)
        if carry is not None:
            Gc[T - 1] += carry
        gs, as_ = Gc.unbind(0), ac.unbind(0)
        for t in range(T - 2, -1, -1):
            gs[t].addcmul_(as_[t + 1], gs[t + 1])
        carry = as_[0] * gs[0]
        # C: sum_d gy h ; B: sum_d g delta u ; u, delta: through delta u B
        torch.matmul(gyc[:, :, None, :], Hc[1:], out=g_C[s:e, :, None, :])
        torch.matmul(dtu[s:e, :, None, :], Gc, out=g_B[s:e, :, None, :])
        SB = torch.matmul(Bt[s:e, :, None, :], Gc.transpose(-1, -2)).squeeze(-2)  # sum_n g B
        torch.mul(dt[s:e], SB, out=g_u[s:e])
        torch.mul(ut[s:e], SB, out=g_dt[s:e])
        # through a_t = exp(delta_t A): dL/da_t * a_t = g_t * h_{t-1} * a_t
        M = ac.mul_(Gc).mul_(Hc[:-1])
        g_dt[s:e] += (M * Af).sum(-1)
        g_A += (M * dt[s:e, :, :, None]).sum((0, 1))
    if Df is not None:
        g_u.addcmul_(gy, Df)
        g_D = (gy * ut).sum((0, 1))
    else:
        g_D = None
    if delta_softplus:
        g_dt.mul_(torch.sigmoid(draw))
    g_bias = None if delta_bias is None else g_dt.sum((0, 1))

    def back(t: Tensor | None, like: Tensor | None) -> Tensor | None:  # (l, b, x) -> like's layout and dtype
        return None if t is None else (t.permute(1, 2, 0) if t.dim() == 3 else t).to(like.dtype)

    grads = (g_u, g_dt, g_A, g_B, g_C, g_D, gz, g_bias)
    return tuple(back(t, like) for t, like in zip(grads, (u, delta, A, B, C, D, z, delta_bias), strict=True))


def _delta_time_major(delta: Tensor, delta_bias: Tensor | None, softplus: bool, ct: torch.dtype) -> Tensor:
    dt = delta.permute(2, 0, 1).to(ct)
    if delta_bias is not None:
        dt = dt + delta_bias.to(ct)
    if softplus:
        dt = F.softplus(dt)
    return dt.contiguous()


def _chunk_states(H: Tensor, a: Tensor, h0: Tensor, dt: Tensor, dtu: Tensor, A: Tensor, B: Tensor) -> Tensor:
    """Fill ``a[:T] = exp(dt A)`` and ``H[:T+1] = (h0, h_1, ..., h_T)`` for one chunk; return H[:T+1].

    dt, dtu: (T, b, d); B: (T, b, n); h0: (b, d, n). States overwrite the delta*u*B terms in place.
    """
    T = dt.shape[0]
    ac, Hc = a[:T], H[: T + 1]
    torch.mul(dt[..., None], A, out=ac)
    ac.exp_()
    Hc[0].copy_(h0)
    torch.mul(dtu[..., None], B[:, :, None, :], out=Hc[1:])
    hs, as_ = Hc.unbind(0), ac.unbind(0)
    for t in range(T):
        hs[t + 1].addcmul_(as_[t], hs[t])
    return Hc


def resolve_impl(impl: str, u: Tensor, B: Tensor, C: Tensor) -> str:
    """``"cpu"`` or ``"torch"`` for these inputs; ``impl="cpu"`` where the kernel cannot run raises."""
    if impl not in SCAN_IMPLS:
        raise ValueError(f"selective_scan: {unknown_choice('impl', impl, SCAN_IMPLS)}")
    if impl == "torch":
        return "torch"
    fits = u.device.type == "cpu" and B.dim() == 3 and C.dim() == 3
    if impl == "cpu":
        if not fits:
            raise ValueError(
                "selective_scan: impl='cpu' needs CPU tensors and input-dependent B, C of shape (b, n, l)"
            )
        cpu_kernels.load()  # raises, saying why, where the kernels cannot be built
        return "cpu"
    return "cpu" if fits and cpu_kernels.usable() else "torch"


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    impl: str = "auto",
    gate: Epilogue | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with mamba_ssm's ``selective_scan_fn`` signature, fp32 inside (fp64 stays fp64).

    Input-dependent B and C of shape (b, n, l) (the Mamba-1 case) take the chunked fast path;
    the other layouts ((d, n) and grouped (b, g, n, l)) run :func:`selective_scan_ref`.
    ``last_state`` (fp32, (b, d, n)) carries no gradient, as in mamba_ssm.

    ``impl``: ``"auto"`` (the compiled CPU kernel for CPU tensors where it is built, else PyTorch),
    ``"torch"`` (this file's chunked PyTorch code) or ``"cpu"`` (the kernel, or an error saying why not).

    ``gate``: the activation of z, an activation's kernel form (SiLU, SWELU with k and lam, Swish with beta as
    k; scalars that may need gradients); None: SiLU as mamba_ssm's kernel applies it (the product in fp32,
    rounded once). The kernel applies a ``gate`` in its output epilogue with the roundings of the two ops
    apart (y and act(z) in z's dtype where z is in u's; :mod:`mswelu.ops.scan_cpu`); the PyTorch code
    multiplies by
    :meth:`~mswelu.ops.causal_conv.Epilogue.reference` of z.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    _check_gate(gate)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if resolve_impl(impl, u, B, C) == "cpu":
        k, lam = (None, None) if gate is None else gate.scalars("selective_scan: the gate")
        act = None if gate is None else gate.act
        out, last = CpuSelectiveScanFn.apply(
            u, delta, A, B, C, D, z, delta_bias, k, lam, bool(delta_softplus), int(chunk_size), act
        )
        return (out, last) if return_last_state else out
    if B.dim() != 3 or C.dim() != 3:
        args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
        return selective_scan_ref(*args, gate=gate)
    gated = gate is not None and z is not None  # the two ops apart: the scan, then the product by autograd
    out, last = SelectiveScanFn.apply(
        u, delta, A, B, C, D, None if gated else z, delta_bias, bool(delta_softplus), int(chunk_size)
    )
    if gated:
        out = out * gate.reference(z)
    return (out, last) if return_last_state else out
