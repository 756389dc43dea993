"""The Triton SWELU kernels, run on CPU tensors under ``TRITON_INTERPRET=1``.

The interpreter flag must be set before triton is imported, so the checks run in a child pytest
process (``test_triton_kernels_under_interpreter``) and never touch the parent's triton state.
Skipped when the optional ``triton`` package is missing.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

from mswelu.ops.swelu import ZERO_EPS, resolve_impl, swelu

HAVE_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
child_only = pytest.mark.skipif(
    not (HAVE_TRITON and INTERPRETING), reason="runs in the TRITON_INTERPRET child"
)

SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 1e-8, 3e-7, 1e-3, -0.3, 1e30, -1e30, math.inf, -math.inf]
KS = (0.05, 0.3, 1.0, 1.9, 5.0)
# One ulp relative: the interpreter truncates fp32 -> bf16 (GPUs round to nearest, half an ulp).
ULP = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}


@pytest.mark.skipif(not HAVE_TRITON, reason="optional dependency triton is not installed")
@pytest.mark.skipif(INTERPRETING, reason="this is the child run")
def test_triton_kernels_under_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "interpreted"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    summary = [line for line in result.stdout.splitlines() if line.strip()][-1]
    assert " passed" in summary and "skipped" not in summary and "deselected" in summary, summary


@pytest.mark.skipif(not HAVE_TRITON or INTERPRETING, reason="needs triton, outside the interpreter")
def test_forcing_triton_on_cpu_without_interpreter_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        swelu(torch.randn(4), 1.0, impl="triton")


def test_auto_never_picks_triton_on_cpu() -> None:
    """On CPU tensors auto takes the CPU kernel (scalar k) or the closed form (per-channel k), not Triton."""
    z = torch.randn(4, 3)
    assert resolve_impl("auto", z, torch.tensor(1.0), None) == "cpu"
    assert resolve_impl("auto", z, torch.ones(3), None) == "torch"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MSWELU_SWELU_IMPL", "torch")
        assert resolve_impl("auto", z, torch.tensor(1.0), None) == "torch"


# ----------------------------------------------------------------------------- child tests


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel, dtype: torch.dtype) -> None:
    """|actual - expected| <= rel * |expected| + floor; reports the worst element.

    The floor is the subnormal spacing of ``dtype`` and, since the math runs in fp32, fp32's
    smallest normal number (results there are underflow noise).
    """
    actual, expected = actual.double(), expected.double()
    floor = max(
        torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps, 4 * torch.finfo(torch.float32).tiny
    )
    excess = (actual - expected).abs() - (rel * expected.abs() + floor)
    worst = int(excess.argmax())
    assert excess[worst] <= 0, f"element {worst}: {actual[worst].item()!r} vs {expected[worst].item()!r}"


def inputs(dtype: torch.dtype, n: int = 2500) -> torch.Tensor:
    """Specials plus log-spread values; n is not a multiple of the block size (partial last block)."""
    g = torch.Generator().manual_seed(0)
    mag = 10 ** (torch.rand(n, generator=g, dtype=torch.float64) * 5 - 3)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    return torch.cat([torch.tensor(SPECIAL, dtype=torch.float64), mag * sign]).to(dtype)


def run(z: torch.Tensor, k: float, lam: float | None, impl: str, g: torch.Tensor):
    zr = z.clone().requires_grad_()
    kt = torch.tensor(k, requires_grad=True)
    lt = None if lam is None else torch.tensor(lam, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy log2(0) / inf * 0 inside the interpreter
        y = swelu(zr, kt, lt, impl=impl)
        (y.float() * g).sum().backward()
    return y, zr.grad, kt.grad, None if lt is None else lt.grad


@child_only
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16))
@pytest.mark.parametrize("k", KS)
def test_interpreted_forward_matches_formula(dtype: torch.dtype, k: float) -> None:
    z = inputs(dtype)
    lam = 1.3
    y, *_ = run(z, k, lam, "triton", torch.ones(z.numel()))
    assert y.dtype == dtype and torch.isfinite(y).all()
    zd = z.double()
    expected = lam * torch.sign(zd) * -torch.expm1(-(zd.abs() ** k))
    # fp32 math (exp2/log2 power) then one rounding to the output dtype.
    assert_rel_close(y, expected, ULP[dtype] + 4e-6, dtype)


@child_only
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16))
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("lam", (None, 0.8))
def test_interpreted_backward_matches_closed_form(dtype: torch.dtype, k: float, lam: float | None) -> None:
    z = inputs(dtype)
    g = torch.cos(torch.arange(z.numel(), dtype=torch.float32))
    tri = run(z, k, lam, "triton", g)
    ref = run(z, k, lam, "torch", g)
    for grad in tri[1:]:
        assert grad is None or torch.isfinite(grad).all()
    assert tri[1].dtype == dtype
    # grad_z elementwise: one rounding of the output dtype apart, plus fp32 exp2/log2 vs pow.
    # Powers are exp2(x * log2|z|) in fp32: relative error ~ |x log|z|| ulps, and exp(-p) amplifies
    # p's error by p. Allow a few fp32 ulps times that conditioning.
    a = z.double().abs().clamp_min(ZERO_EPS)  # the zero cell evaluates its chord at ZERO_EPS
    cond = 1 + (a**k).clamp(max=1e4) + ((abs(k - 1) + k) * a.log().abs()).nan_to_num(posinf=0.0)
    assert_rel_close(tri[1], ref[1], 2 * ULP[dtype] + 4e-7 * cond, dtype)
    # Reduced k / lambda gradients: fp32 sums in a different order.
    torch.testing.assert_close(tri[2], ref[2], rtol=1e-4, atol=1e-4)
    if lam is not None:
        torch.testing.assert_close(tri[3], ref[3], rtol=1e-5, atol=1e-4)


@child_only
def test_interpreted_gradients_match_float64_derivatives() -> None:
    z = inputs(torch.float32, n=1500)[len(SPECIAL) :]
    k, lam = 0.6, 1.4
    g = torch.linspace(-1, 1, z.numel())
    _, gz, gk, glam = run(z, k, lam, "triton", g)
    zd, gd = z.double(), g.double()
    a = zd.abs()
    e = torch.exp(-(a**k))
    torch.testing.assert_close(gz.double(), gd * lam * k * a ** (k - 1) * e, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(
        gk.double(), (gd * lam * torch.sign(zd) * e * a**k * a.log()).sum(), rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(
        glam.double(), (gd * torch.sign(zd) * -torch.expm1(-(a**k))).sum(), rtol=1e-5, atol=1e-5
    )


@child_only
def test_interpreted_zero_cell_and_saturation() -> None:
    z = torch.zeros(5)
    _, gz, gk, _ = run(z, 0.3, None, "triton", torch.ones(5))
    chord = -math.expm1(-(ZERO_EPS**0.3)) / ZERO_EPS
    torch.testing.assert_close(gz, torch.full_like(gz, chord), rtol=1e-5, atol=0)
    assert gk.item() == 0.0
    _, gz16, _, _ = run(torch.zeros(3, dtype=torch.float16), 0.05, None, "triton", torch.ones(3))
    assert (gz16 == torch.finfo(torch.float16).max).all()


@child_only
def test_interpreted_non_contiguous_and_shapes() -> None:
    base = torch.randn(6, 40, 33)
    z = base.transpose(0, 2)  # non-contiguous view
    g = torch.randn(z.shape)
    y, gz, gk, _ = run(z, 1.7, None, "triton", g)
    y_ref, gz_ref, gk_ref, _ = run(z, 1.7, None, "torch", g)
    assert y.shape == z.shape and gz.shape == z.shape
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gz, gz_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gk, gk_ref, rtol=1e-4, atol=1e-4)


@child_only
def test_interpreted_triton_rejects_per_channel_k() -> None:
    with pytest.raises(ValueError, match="scalar k"):
        swelu(torch.randn(3, 4), torch.ones(4), impl="triton")
    assert resolve_impl("auto", torch.randn(3), torch.tensor(1.0), None) != "triton"  # auto needs CUDA


@pytest.mark.skipif(not (HAVE_TRITON and torch.cuda.is_available()), reason="needs a CUDA GPU and triton")
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_cuda_auto_dispatch_uses_triton_and_matches_closed_form(dtype: torch.dtype) -> None:
    z = inputs(dtype).cuda()
    assert resolve_impl("auto", z, torch.tensor(1.0, device="cuda"), None) == "triton"
    g = torch.cos(torch.arange(z.numel(), dtype=torch.float32, device="cuda"))
    tri = run(z, 0.7, 1.1, "auto", g)
    ref = run(z, 0.7, 1.1, "torch", g)
    a = z.double().abs().clamp_min(ZERO_EPS)
    cond = 1 + (a**0.7).clamp(max=1e4) + (1.0 * a.log().abs()).nan_to_num(posinf=0.0)
    assert_rel_close(tri[0], ref[0], 2 * ULP[dtype] + 1e-6, dtype)
    assert_rel_close(tri[1], ref[1], 2 * ULP[dtype] + 1e-6 * cond, dtype)
    torch.testing.assert_close(tri[2], ref[2], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tri[3], ref[3], rtol=1e-4, atol=1e-4)
