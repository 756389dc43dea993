"""Functional SWELU: ``lam * sign(z) * (1 - exp(-|z|^k))``.

* :func:`swelu_reference` is the formula written out for autograd, what tests and benchmarks compare against:
  exact wherever it is finite, but autograd stores several fp32 intermediates and its gradients are NaN at
  ``z = 0`` (``d|z|^k/dz`` is infinite there for ``k < 1`` and ``|z|^k ln|z|`` is ``0 * -inf``).
* :func:`swelu` is a fused :class:`torch.autograd.Function` with a closed-form backward. It saves only its
  inputs (``z``, ``k``, ``lam``) and recomputes ``|z|^k`` and ``exp(-|z|^k)`` in backward, so it holds one
  activation-sized tensor (in the input dtype) instead of several fp32 ones.

Numerics (why the guards are what they are):

* All math runs in fp32 (fp64 for fp64 inputs, so ``gradcheck`` works), the result cast back to ``z``'s
  dtype. ``1 - exp(-p)`` is ``-expm1(-p)``: in bf16/fp16, and in fp32 for small ``p``, 1 - x cancels.
* ``d/dz`` near ``z = 0``: the slope ``k |z|^(k-1) exp(-|z|^k)`` is infinite at 0 for ``k < 1``. Inside the
  cell ``|z| < ZERO_EPS`` the backward uses the *chord* slope ``(1 - exp(-ZERO_EPS^k)) / ZERO_EPS``, the mean
  of the true derivative over ``[0, ZERO_EPS]``: finite for every ``k > 0``, the true value in the limit for
  ``k >= 1``, and exactly what a central finite difference of step ``ZERO_EPS`` measures at 0 (so
  ``gradcheck(eps=ZERO_EPS)`` holds at exact zeros). Outside the cell the exact derivative is used.
* ``d/dk = lam * sign(z) * exp(-p) * p * ln|z|``: its limit at ``z -> 0`` is 0 (``p ln|z| -> 0``), which is
  what we return; where ``exp(-p)`` underflows to 0 (huge ``|z|``, ``inf``) the derivatives are exactly 0.
* Half-precision gradients saturate at the dtype's largest finite value instead of overflowing (the chord
  slope at ``k = 0.05`` is ~4e5, beyond fp16's 65504).

``k`` and ``lam`` are scalars (per layer) or tensors that broadcast against ``z``; their gradients are reduced
back to their own shapes. ``k`` must be positive; :class:`mswelu.modules.swelu.SWELU` guarantees that by
construction (checking a tensor here would cost a device sync per call).

Implementations (``impl``): ``"torch"`` (closed form, eager), ``"compiled"`` (the same math under
``torch.compile``), ``"cpu"`` (the CPU kernel of :mod:`mswelu.ops.cpu_kernels`: one vectorised pass forward
and one backward, scalar ``k``/``lam``), ``"triton"`` (Triton kernels, CUDA tensors; CPU tensors under
``TRITON_INTERPRET=1`` for testing) and ``"auto"``: with scalar ``k`` and ``lam``, Triton for CUDA tensors
when ``triton`` imports and the CPU kernel for CPU tensors where it is built; the eager closed form otherwise.
The environment variable ``MSWELU_SWELU_IMPL`` overrides ``"auto"``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

from mswelu.base.errors import unknown_choice
from mswelu.ops import cpu_kernels

ZERO_EPS = 1e-6
IMPLS = ("auto", "torch", "compiled", "cpu", "triton")
ENV_VAR = "MSWELU_SWELU_IMPL"
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def swelu_reference(
    z: torch.Tensor, k: torch.Tensor | float, lam: torch.Tensor | float | None = None
) -> torch.Tensor:
    """The SWELU formula for plain autograd (fp32 compute via ``expm1``, result in ``z``'s dtype).

    Unguarded on purpose: this is "autograd on the formula", the baseline the fused function is measured
    against. Its gradient is NaN at ``z = 0``.
    """
    zc = z.to(_compute_dtype(z.dtype))
    y = torch.sign(zc) * -torch.expm1(-zc.abs().pow(k))
    if lam is not None:
        y = y * lam
    return y.to(z.dtype)


def _forward_math(z: torch.Tensor, k: torch.Tensor, lam: torch.Tensor | None) -> torch.Tensor:
    """``lam * sign(z) * -expm1(-|z|^k)`` in the dtype of the (already upcast) inputs."""
    y = torch.sign(z) * -torch.expm1(-z.abs().pow(k))
    return y if lam is None else y * lam


def _backward_math(
    z: torch.Tensor,
    k: torch.Tensor,
    lam: torch.Tensor | None,
    g: torch.Tensor,
    need_k: bool,
    need_lam: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Closed-form gradients (elementwise; k/lam grads not yet reduced) from the saved input ``z``.

    Written to make few passes over memory (in-place where the value is not needed again).
    """
    a = z.abs()
    p = a.pow(k)  # exactly 0 at z = 0 and inf at |z| = inf
    e = torch.exp(-p)
    # p * e; where exp(-p) underflowed (huge |z|, inf) every derivative is exactly 0, not inf * 0.
    pe = (p * e).masked_fill_(e == 0, 0.0)
    glam = g if lam is None else g * lam
    # d/dz = k |z|^(k-1) e^-p = k (p e) / |z| outside the zero cell; inside it the chord slope
    # (mean slope over [0, eps]).
    chord = -torch.expm1(-torch.exp(k * math.log(ZERO_EPS))) / ZERO_EPS
    slope = torch.where(a < ZERO_EPS, chord, (pe / a.clamp_min(ZERO_EPS)).mul_(k))
    grad_z = slope.mul_(glam)
    grad_k = None
    if need_k:
        # lam * sign(z) * e * p * ln|z|; p ln|z| -> 0 at z = 0, and p e = 0 at |z| = inf: clamping
        # |z| to the finite normal range keeps ln|z| finite so those products are exactly 0.
        finfo = torch.finfo(z.dtype)
        log_a = a.clamp_(finfo.tiny, finfo.max).log_()
        grad_k = log_a.mul_(pe).mul_(torch.sign(z)).mul_(glam)
    grad_lam = None
    if need_lam:
        grad_lam = torch.expm1(-p).mul_(torch.sign(z)).mul_(g).neg_()
    return grad_z, grad_k, grad_lam


@functools.lru_cache(maxsize=1)
def _compiled() -> tuple[Callable, Callable]:
    """``torch.compile`` of the elementwise math (lazy: compiling costs seconds, done once)."""
    return (
        torch.compile(_forward_math, dynamic=True, fullgraph=True),
        torch.compile(_backward_math, dynamic=True, fullgraph=True),
    )


def _to_input_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype in _HALF_DTYPES:  # saturate rather than overflow to inf
        t = t.clamp(-torch.finfo(dtype).max, torch.finfo(dtype).max)
    return t.to(dtype)


# ----------------------------------------------------------------------------- triton (lazy)


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when ``triton`` imports (it is an optional dependency)."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def _scalars(k: torch.Tensor, lam: torch.Tensor | None) -> bool:
    return k.numel() == 1 and (lam is None or lam.numel() == 1)


def _triton_ok(z: torch.Tensor, k: torch.Tensor, lam: torch.Tensor | None) -> bool:
    return z.dtype in (torch.float32, *_HALF_DTYPES) and _scalars(k, lam) and triton_available()


_TRITON_BLOCK = 1024


@functools.lru_cache(maxsize=1)
def _triton_kernels() -> tuple[Callable, Callable]:
    """Build the Triton kernels on first use (importing triton costs ~1 s and is optional).

    Triton resolves the names a kernel uses through its module's globals, so the lazily imported
    ``tl`` and the helper are published there. No libdevice: the interpreter (``TRITON_INTERPRET=1``,
    used by the CPU tests) has none, so ``-expm1(-p)`` is a short Taylor polynomial for small ``p``.
    """
    import triton
    import triton.language as tl

    globals()["tl"] = tl

    @triton.jit
    def _tt_one_minus_exp_neg(p):
        # -expm1(-p), p >= 0: Horner form of p - p^2/2! + ... - p^10/10! below 0.5 (truncation
        # < 1e-9 relative), 1 - exp(-p) above it (exp(-p) < 0.61: no cancellation).
        t = 1.0 - p * (1.0 / 10.0)
        for i in tl.static_range(9, 1, -1):
            t = 1.0 - p * (1.0 / i) * t
        return tl.where(p < 0.5, p * t, 1.0 - tl.exp(-p))

    globals()["_tt_one_minus_exp_neg"] = _tt_one_minus_exp_neg

    @triton.jit
    def swelu_fwd_kernel(z_ptr, k_ptr, lam_ptr, out_ptr, n, HAS_LAM: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        k = tl.load(k_ptr).to(tl.float32)
        p = tl.exp2(k * tl.log2(tl.abs(z)))  # |z|^k; log2(0) = -inf gives 0
        sgn = tl.where(z > 0, 1.0, tl.where(z < 0, -1.0, 0.0))
        y = sgn * _tt_one_minus_exp_neg(p)
        if HAS_LAM:
            y = y * tl.load(lam_ptr).to(tl.float32)
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def swelu_bwd_kernel(
        z_ptr, g_ptr, k_ptr, lam_ptr, gz_ptr, part_k_ptr, part_lam_ptr, n, eps, out_max,
        HAS_LAM: tl.constexpr, NEED_K: tl.constexpr, NEED_LAM: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        k = tl.load(k_ptr).to(tl.float32)
        lam = 1.0
        if HAS_LAM:
            lam = tl.load(lam_ptr).to(tl.float32)
        a = tl.abs(z)
        p = tl.exp2(k * tl.log2(a))
        e = tl.exp(-p)
        alive = e > 0.0
        slope = k * tl.exp2((k - 1.0) * tl.log2(tl.maximum(a, eps))) * e
        chord = _tt_one_minus_exp_neg(tl.exp2(k * tl.log2(eps))) / eps
        slope = tl.where(a < eps, chord, tl.where(alive, slope, 0.0))
        glam = g * lam
        gz = tl.minimum(tl.maximum(glam * slope, -out_max), out_max)
        tl.store(gz_ptr + offs, gz.to(gz_ptr.dtype.element_ty), mask=mask)
        sgn = tl.where(z > 0, 1.0, tl.where(z < 0, -1.0, 0.0))
        if NEED_K:
            ln_a = tl.log(tl.maximum(a, 1.1754943508222875e-38))
            dk = glam * sgn * tl.where(alive, e * p * ln_a, 0.0)
            tl.store(part_k_ptr + pid, tl.sum(tl.where(mask, dk, 0.0), axis=0))
        if NEED_LAM:
            dlam = g * sgn * _tt_one_minus_exp_neg(p)
            tl.store(part_lam_ptr + pid, tl.sum(tl.where(mask, dlam, 0.0), axis=0))

    return swelu_fwd_kernel, swelu_bwd_kernel


def _triton_launch(kernel: Callable, z: torch.Tensor, *args, **meta) -> None:
    n_blocks = -(-z.numel() // _TRITON_BLOCK)
    if n_blocks == 0:
        return
    with torch.cuda.device(z.device) if z.is_cuda else contextlib.nullcontext():
        kernel[(n_blocks,)](*args, BLOCK=_TRITON_BLOCK, **meta)


def _triton_forward(z: torch.Tensor, k: torch.Tensor, lam: torch.Tensor | None) -> torch.Tensor:
    zc, k = z.contiguous(), k.to(z.device)
    out = torch.empty_like(zc)
    lam_arg = k if lam is None else lam.to(z.device)
    _triton_launch(_triton_kernels()[0], zc, zc, k, lam_arg, out, zc.numel(), HAS_LAM=lam is not None)
    return out


def _triton_backward(
    z: torch.Tensor, k: torch.Tensor, lam: torch.Tensor | None, g: torch.Tensor, need_k: bool, need_lam: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Gradients from one pass over (z, g); k/lam gradients come back already reduced to their shapes."""
    zc, gc, k_dev = z.contiguous(), g.contiguous(), k.to(z.device)
    lam_dev = k_dev if lam is None else lam.to(z.device)
    grad_z = torch.empty_like(zc)
    n_blocks = -(-zc.numel() // _TRITON_BLOCK)
    part_k, part_lam = (torch.zeros(n_blocks if need else 1, device=z.device) for need in (need_k, need_lam))
    out_max = torch.finfo(z.dtype).max if z.dtype in _HALF_DTYPES else math.inf  # saturate, as torch's path
    _triton_launch(
        _triton_kernels()[1], zc, zc, gc, k_dev, lam_dev, grad_z, part_k, part_lam, zc.numel(), ZERO_EPS,
        out_max, HAS_LAM=lam is not None, NEED_K=need_k, NEED_LAM=need_lam,
    )  # fmt: skip
    grad_k = part_k.sum().reshape(k.shape).to(k.device) if need_k else None
    grad_lam = part_lam.sum().reshape(lam.shape).to(lam.device) if need_lam else None
    return grad_z, grad_k, grad_lam


# ----------------------------------------------------------------------------- autograd function


class _SWELUFunction(torch.autograd.Function):
    """Fused SWELU: saves only (z, k, lam); backward recomputes ``|z|^k`` and ``exp(-|z|^k)``."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, k: torch.Tensor, lam: torch.Tensor | None, impl: str):
        ctx.impl = impl
        ctx.save_for_backward(z, k, lam)
        if impl == "triton":
            return _triton_forward(z, k, lam)
        if impl == "cpu":
            y = cpu_kernels.load().swelu_fwd(
                cpu_kernels.rows(z), float(k), 1.0 if lam is None else float(lam)
            )
            return y.view(z.shape)
        cdt = _compute_dtype(z.dtype)
        fwd = _compiled()[0] if impl == "compiled" else _forward_math
        y = fwd(z.to(cdt), k.to(cdt), None if lam is None else lam.to(cdt))
        return y.to(z.dtype)

    @staticmethod
    @once_differentiable  # the backward is closed-form code, not itself differentiable
    def backward(ctx, grad_out: torch.Tensor):
        z, k, lam = ctx.saved_tensors
        need_z, need_k, need_lam = ctx.needs_input_grad[:3]
        need_lam = need_lam and lam is not None
        if ctx.impl == "triton":
            gz, gk, glam = _triton_backward(z, k, lam, grad_out, need_k, need_lam)
        elif ctx.impl == "cpu":
            lam_f = 1.0 if lam is None else float(lam)
            gz, gk, glam = cpu_kernels.load().swelu_bwd(
                cpu_kernels.rows(z),
                cpu_kernels.rows(grad_out.to(z.dtype)),
                float(k),
                lam_f,
                ZERO_EPS,
                need_k,
                need_lam,
            )
            # k and lam have one element each
            gz, gk, glam = (
                gz.view(z.shape),
                gk.reshape(k.shape),
                None if lam is None else glam.reshape(lam.shape),
            )
        else:
            cdt = _compute_dtype(z.dtype)
            bwd = _compiled()[1] if ctx.impl == "compiled" else _backward_math
            inputs = (None if t is None else t.to(cdt) for t in (z, k, lam, grad_out))
            gz, gk, glam = bwd(*inputs, need_k, need_lam)
            gz = _to_input_dtype(gz, z.dtype)
        return (
            gz if need_z else None,
            gk.sum_to_size(k.shape).to(k.dtype) if need_k else None,  # a broadcast k's gradient, reduced
            glam.sum_to_size(lam.shape).to(lam.dtype) if need_lam else None,
            None,
        )


def _as_tensor(value: torch.Tensor | float, z: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise ValueError(f"swelu: {name} must be a floating-point tensor, got {value.dtype}")
        try:
            fits = torch.broadcast_shapes(value.shape, z.shape) == z.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"swelu: {name} of shape {tuple(value.shape)} does not broadcast to z {tuple(z.shape)}"
            )
        return value
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"swelu: {name} must be a positive finite number, got {value}")
    return torch.tensor(value, dtype=_compute_dtype(z.dtype), device=z.device)


def _requested(impl: str) -> str:
    """``impl``, with ``"auto"`` replaced by what ``MSWELU_SWELU_IMPL`` names, if anything."""
    return (os.environ.get(ENV_VAR, "").strip().lower() or "auto") if impl == "auto" else impl


def runs_cpu_kernel(impl: str) -> bool:
    """Whether ``impl`` runs the CPU kernel on CPU tensors with scalar k and lam where it is built."""
    return _requested(impl) in ("auto", "cpu")


def resolve_impl(impl: str, z: torch.Tensor, k: torch.Tensor, lam: torch.Tensor | None) -> str:
    """The implementation that will run for these inputs (see module docstring)."""
    impl = _requested(impl)
    if impl not in IMPLS:
        raise ValueError(f"swelu: {unknown_choice('impl', impl, IMPLS)}")
    cpu_ok = z.device.type == "cpu" and _scalars(k, lam)
    if impl == "auto":
        if z.is_cuda:
            return "triton" if _triton_ok(z, k, lam) else "torch"
        return "cpu" if cpu_ok and cpu_kernels.usable() else "torch"
    if impl == "cpu":
        if not cpu_ok:
            raise ValueError(
                "swelu: impl='cpu' takes CPU tensors with scalar k and lam; "
                f"got z on {z.device}, k shape {tuple(k.shape)}"
            )
        cpu_kernels.load()  # raises, saying why, where the kernels cannot be built
    if impl == "triton":
        if not triton_available():
            raise ValueError("swelu: impl='triton' needs the optional package `triton` (pip install triton)")
        if not (z.is_cuda or os.environ.get("TRITON_INTERPRET", "") == "1"):
            raise ValueError(
                f"swelu: impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1); z is on {z.device}"
            )
        if not _triton_ok(z, k, lam):
            lam_shape = None if lam is None else tuple(lam.shape)
            raise ValueError(
                "swelu: impl='triton' supports fp32/fp16/bf16 z with scalar k and lam; "
                f"got z {z.dtype}, k shape {tuple(k.shape)}, lam shape {lam_shape}"
            )
    return impl


def swelu(
    z: torch.Tensor, k: torch.Tensor | float, lam: torch.Tensor | float | None = None, *, impl: str = "auto"
) -> torch.Tensor:
    """SWELU ``lam * sign(z) * (1 - exp(-|z|^k))``, fused, finite with finite gradients everywhere.

    Computed in fp32 (fp64 for fp64 ``z``) and returned in ``z``'s dtype. ``k`` and ``lam`` may be Python
    numbers or tensors broadcastable to ``z`` (typically 0-dim, one per layer); gradients flow to every tensor
    argument that requires them. ``impl``: see the module docstring.
    """
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise ValueError(f"swelu: z must be a floating-point tensor, got {getattr(z, 'dtype', type(z))}")
    k_t = _as_tensor(k, z, "k")
    lam_t = None if lam is None else _as_tensor(lam, z, "lam")
    return _SWELUFunction.apply(z, k_t, lam_t, resolve_impl(impl, z, k_t, lam_t))
