"""SWELU numerics (functional and module) against the formula, finite differences and autograd."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from torch import nn

from mswelu.modules.activations import make_activation, shape_values
from mswelu.modules.swelu import K_MIN, SWELU
from mswelu.ops.swelu import ZERO_EPS, swelu, swelu_reference

# every test here runs with the compiled CPU kernels and with the pure-PyTorch code (conftest)
pytestmark = pytest.mark.usefixtures("kernels_or_torch")

KS = (0.3, 1.0, 1.9)
# Exact zeros, tiny and huge magnitudes, and ordinary values, both signs.
EXTREME = [0.0, -0.0, 1e-30, -1e-30, 1e-300, 0.37, -0.8, 1.5, -2.5, 4.0, 1e30, -1e30, 1e300]


def formula64(z: torch.Tensor, k: float, lam: float = 1.0) -> torch.Tensor:
    """The definition, evaluated independently in float64."""
    z = z.double()
    return lam * torch.sign(z) * (-torch.expm1(-(z.abs() ** k)))


def dz64(z: torch.Tensor, k: float, lam: float = 1.0) -> torch.Tensor:
    a = z.double().abs()
    return lam * k * a ** (k - 1) * torch.exp(-(a**k))


def dk64(z: torch.Tensor, k: float, lam: float = 1.0) -> torch.Tensor:
    z = z.double()
    a = z.abs()
    return lam * torch.sign(z) * torch.exp(-(a**k)) * a**k * torch.log(a)


def ordinary(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Values spread over |z| in [1e-3, 1e1] (outside the zero cell), both signs, float64."""
    g = torch.Generator().manual_seed(seed)
    mag = 10 ** (torch.rand(n, generator=g, dtype=torch.float64) * 4 - 3)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    return mag * sign


# ----------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("k", KS)
def test_gradcheck_z_k_lambda_with_zeros_and_extremes(k: float) -> None:
    z = torch.tensor(EXTREME, dtype=torch.float64, requires_grad=True)
    kt = torch.tensor(k, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    # eps = ZERO_EPS: at z = 0 the backward returns the chord slope over the zero cell, which is
    # exactly the central difference of that step (see mswelu.ops.swelu).
    assert torch.autograd.gradcheck(swelu, (z, kt, lam), eps=ZERO_EPS, atol=1e-5, rtol=1e-3)
    assert torch.autograd.gradcheck(lambda a, b: swelu(a, b), (z, kt), eps=ZERO_EPS, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("k", KS)
def test_gradcheck_ordinary_values_default_step(k: float) -> None:
    z = ordinary(32).requires_grad_()
    kt = torch.tensor(k, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(swelu, (z, kt, lam))


def test_gradcheck_broadcast_per_channel_k() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 4, generator=g, dtype=torch.float64) * 2
    z[0, 0, 0] = 0.0
    z = z.requires_grad_()
    k = torch.tensor([0.3, 0.9, 1.4, 2.2], dtype=torch.float64, requires_grad=True)
    lam = torch.tensor([[1.0], [1.5], [0.5]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(swelu, (z, k, lam), eps=ZERO_EPS, atol=1e-5, rtol=1e-3)


def test_gradgrad_not_required_but_first_order_grads_have_param_shapes() -> None:
    z = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    k = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor([1.2], dtype=torch.float64, requires_grad=True)
    swelu(z, k, lam).sum().backward()
    assert z.grad.shape == z.shape and k.grad.shape == k.shape and lam.grad.shape == lam.shape


# ----------------------------------------------------------------------------- formula agreement


@pytest.mark.parametrize("k", (0.05, 0.3, 1.0, 1.9, 5.0))
def test_forward_and_gradients_match_formula_float64(k: float) -> None:
    z = ordinary(200, seed=2)
    lam = 1.7
    zr = z.clone().requires_grad_()
    kt = torch.tensor(k, dtype=torch.float64, requires_grad=True)
    lt = torch.tensor(lam, dtype=torch.float64, requires_grad=True)
    y = swelu(zr, kt, lt)
    torch.testing.assert_close(y, formula64(z, k, lam), rtol=1e-14, atol=1e-15)
    g = torch.linspace(-1, 1, z.numel(), dtype=torch.float64)
    (y * g).sum().backward()
    torch.testing.assert_close(zr.grad, g * dz64(z, k, lam), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kt.grad, (g * dk64(z, k, lam)).sum(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lt.grad, (g * formula64(z, k)).sum(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", (torch.float64, torch.float32))
@pytest.mark.parametrize("k", KS)
def test_matches_autograd_reference_where_reference_is_finite(dtype: torch.dtype, k: float) -> None:
    z = ordinary(300, seed=3).to(dtype)
    grads = []
    for fn in (swelu, swelu_reference):
        zr = z.clone().requires_grad_()
        kt = torch.tensor(k, dtype=dtype, requires_grad=True)
        lt = torch.tensor(0.9, dtype=dtype, requires_grad=True)
        y = fn(zr, kt, lt)
        (y * torch.cos(z)).sum().backward()
        grads.append((y.detach(), zr.grad, kt.grad, lt.grad))
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 1e-5}
    for ours, ref in zip(*grads, strict=True):
        assert torch.isfinite(ref).all()
        torch.testing.assert_close(ours, ref, **tol)


def test_reference_is_nan_at_zero_and_fused_is_not() -> None:
    """Documents why the fused backward exists: autograd on the formula gives NaN at z = 0."""
    z = torch.zeros(3, requires_grad=True)
    swelu_reference(z, 0.5).sum().backward()
    assert torch.isnan(z.grad).all()
    z.grad = None
    swelu(z, 0.5).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_zero_cell_gradient_is_chord_slope_and_k_gradient_is_its_limit() -> None:
    for k in (0.05, 0.3, 1.0, 1.9, 5.0):
        z = torch.tensor([0.0, 1e-30, -1e-12, 0.5 * ZERO_EPS], dtype=torch.float64, requires_grad=True)
        kt = torch.tensor(k, dtype=torch.float64, requires_grad=True)
        swelu(z, kt).sum().backward()
        chord = -math.expm1(-(ZERO_EPS**k)) / ZERO_EPS
        torch.testing.assert_close(z.grad, torch.full_like(z, chord), rtol=1e-12, atol=0)
        assert math.isfinite(kt.grad.item())
        z0 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        k0 = torch.tensor(k, dtype=torch.float64, requires_grad=True)
        swelu(z0, k0).sum().backward()
        assert k0.grad.item() == 0.0  # |z|^k ln|z| -> 0
    # k = 1: the chord slope is the true slope 1 to O(eps).
    assert abs(-math.expm1(-ZERO_EPS) / ZERO_EPS - 1.0) < 1e-6


def test_odd_symmetry_and_bound() -> None:
    z = torch.cat([ordinary(500, seed=4), torch.tensor(EXTREME, dtype=torch.float64)])
    for k in (0.05, 0.3, 1.0, 1.9, 5.0):
        for lam in (None, 0.5, 2.0):
            y = swelu(z, k, lam)
            assert torch.equal(swelu(-z, k, lam), -y)
            bound = 1.0 if lam is None else lam
            assert (y.abs() <= bound).all()
            moderate = z.abs() ** k < 30  # below where 1 - exp(-p) rounds to 1 in float64
            assert (y[moderate].abs() < bound).all()
            assert torch.equal(torch.sign(y), torch.sign(z) * (y != 0))


# ----------------------------------------------------------------------------- dtypes and finiteness


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16))
@pytest.mark.parametrize("k", (0.05, 0.3, 1.0, 1.9, 5.0))
def test_no_nan_or_inf_in_outputs_or_gradients(dtype: torch.dtype, k: float) -> None:
    special = [0.0, -0.0, 1e-30, -1e-30, 1e-8, 1e30, -1e30, math.inf, -math.inf]
    z = torch.cat([torch.tensor(special), ordinary(100, seed=5).float() * 10]).to(dtype)
    zr = z.clone().requires_grad_()
    kt = torch.tensor(k, requires_grad=True)
    lt = torch.tensor(1.1, requires_grad=True)
    y = swelu(zr, kt, lt)
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    y.float().square().sum().backward()
    for grad in (zr.grad, kt.grad, lt.grad):
        assert grad is not None and torch.isfinite(grad).all()
    assert zr.grad.dtype == dtype and kt.grad.dtype == torch.float32


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16, torch.float64))
def test_output_dtype_and_shape_follow_input(dtype: torch.dtype) -> None:
    z = torch.randn(3, 4, 5).to(dtype)
    y = swelu(z, torch.tensor(0.7), 1.2)
    assert y.dtype == dtype and y.shape == z.shape


def test_bf16_uses_fp32_internal_compute() -> None:
    z = torch.cat([ordinary(400, seed=6), torch.tensor([1e-3, -2e-3, 5e-3])]).to(torch.bfloat16)
    for k in KS:
        y = swelu(z, k).double()
        expected = formula64(z.double(), k)  # exact result for the bf16-rounded input
        # One final rounding to bf16: relative error <= 2^-8.
        assert ((y - expected).abs() <= expected.abs() * 2**-8 + 1e-30).all()
    # Computing 1 - exp(-p) in bf16 would give exactly 0 for p = 1e-3; expm1 in fp32 does not.
    small = torch.tensor([1e-3], dtype=torch.bfloat16)
    assert (1 - torch.exp(-small)).item() == 0.0
    assert abs(swelu(small, 1.0).item() - small.double().item()) < small.double().item() * 2**-7


def test_fp16_gradient_saturates_instead_of_overflowing() -> None:
    z = torch.zeros(4, dtype=torch.float16, requires_grad=True)
    swelu(z, 0.05).sum().backward()  # chord slope ~4e5 > fp16 max
    assert torch.isfinite(z.grad).all() and (z.grad == torch.finfo(torch.float16).max).all()


# ----------------------------------------------------------------------------- memory and errors


def saved_bytes(fn, *args) -> int:
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sum(seen.values())


def test_fused_saves_only_its_input() -> None:
    z = torch.randn(64, 128, dtype=torch.bfloat16, requires_grad=True)
    k = torch.tensor(0.9, requires_grad=True)
    fused = saved_bytes(swelu, z, k)
    reference = saved_bytes(swelu_reference, z, k)
    assert fused == z.nbytes + k.nbytes
    assert fused * 4 < reference  # autograd keeps fp32 intermediates


def test_python_number_arguments_and_no_grad_inputs() -> None:
    z = torch.randn(10, dtype=torch.float64)
    torch.testing.assert_close(swelu(z, 0.6, 2.0), formula64(z, 0.6, 2.0))
    zr = z.clone().requires_grad_()
    swelu(zr, 0.6).sum().backward()
    assert zr.grad is not None


def test_bad_arguments_raise_value_error() -> None:
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match="floating-point"):
        swelu(torch.arange(3), 1.0)
    with pytest.raises(ValueError, match="positive"):
        swelu(z, -1.0)
    with pytest.raises(ValueError, match="positive"):
        swelu(z, 1.0, 0.0)
    with pytest.raises(ValueError, match="broadcast"):
        swelu(z, torch.ones(3))
    with pytest.raises(ValueError, match="impl"):
        swelu(z, 1.0, impl="cuda-magic")


def test_autocast_bf16_keeps_activation_dtype_and_fp32_k_grad() -> None:
    lin = nn.Linear(8, 8)
    k = torch.tensor(0.9, requires_grad=True)
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(x)
        y = swelu(h, k)
    assert h.dtype == torch.bfloat16 and y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert k.grad.dtype == torch.float32 and torch.isfinite(k.grad)
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MSWELU_TEST_COMPILE") != "1",
    reason="torch.compile takes 30-100 s on 2 CPU cores; set MSWELU_TEST_COMPILE=1 to run",
)
def test_compiled_impl_matches_closed_form() -> None:
    z = torch.cat([torch.tensor([0.0, 1e-30, -1e30, math.inf]), ordinary(200, seed=9).float()])
    outs = []
    for impl in ("torch", "compiled"):
        zr = z.clone().requires_grad_()
        k = torch.tensor(0.6, requires_grad=True)
        lam = torch.tensor(1.2, requires_grad=True)
        y = swelu(zr, k, lam, impl=impl)
        (y * torch.cos(z.nan_to_num(posinf=0.0))).sum().backward()
        outs.append((y.detach(), zr.grad, k.grad, lam.grad))
    for ours, ref in zip(*outs, strict=True):
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_benchmark_json_reports_memory_ratio(capsys: pytest.CaptureFixture[str], kernels_or_torch) -> None:
    from mswelu.bench.swelu import main

    assert (
        main(["--json", "--device", "cpu", "--shape", "2", "8", "32", "--repeats", "1", "--no-compile"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    kernel = {"cpu"} if kernels_or_torch == "cpu-kernels" else set()
    assert report["benchmark"] == "swelu" and set(report["results"]) == {"reference", "fused"} | kernel
    # Saved-for-backward bytes are deterministic: the fused function keeps only z (and k).
    assert report["ratios"]["memory_fused_over_reference"] <= 0.5
    assert report["results"]["fused"]["saved_mib"] * 2**20 == 2 * 8 * 32 * 4 + 4
    for name in ("fused", *kernel):
        assert max(report["results"][name]["max_rel_diff"].values()) < 1e-5


# ----------------------------------------------------------------------------- module


@pytest.mark.parametrize("k_init", (1.0, 0.3, 0.5, 1.9, 3.0))
def test_module_init_gives_k_init(k_init: float) -> None:
    m = SWELU(k_init=k_init)
    if k_init != 3.0:  # 3.0 is not reachable as 0.05 + softplus(fp32): nearest is one ulp off
        assert m.k.item() == torch.tensor(k_init).item()
    assert abs(m.k.item() - k_init) <= 2.5e-7
    assert m.lam.item() == 1.0
    assert set(dict(m.named_parameters())) == {"k_raw"}
    assert m.k_raw.shape == ()


def test_module_default_k_is_one_and_forward_is_swelu() -> None:
    m = SWELU()
    assert m.k.item() == 1.0
    z = torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(m.double()(z), formula64(z, 1.0))


def test_module_built_under_meta_device_has_real_k() -> None:
    with torch.device("meta"):
        m = SWELU(k_init=0.6, learnable_lambda=True, lambda_init=1.2)
        lin = nn.Linear(2, 2)
    assert lin.weight.is_meta and not m.k_raw.is_meta
    assert abs(m.k.item() - 0.6) < 1e-7 and abs(m.lam.item() - 1.2) < 1e-6


def test_k_stays_positive_for_very_negative_raw() -> None:
    m = SWELU()
    with torch.no_grad():
        m.k_raw.fill_(-1e4)
    assert m.k.item() >= K_MIN > 0
    z = torch.randn(16)
    y = m(z)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(m.k_raw.grad)


def test_k_gradient_flows_through_softplus() -> None:
    m = SWELU(k_init=0.7).double()
    z = ordinary(50, seed=7)
    m(z).sum().backward()
    expected = dk64(z, m.k.item()).sum() * torch.sigmoid(m.k_raw.detach())
    torch.testing.assert_close(m.k_raw.grad, expected)


def test_frozen_k_gets_no_grad_but_is_reported() -> None:
    m = make_activation("swelu-fixed", {"k": {"init": 0.4}})
    assert isinstance(m, SWELU) and not m.learnable_k
    z = torch.randn(8, requires_grad=True)
    m(z).sum().backward()
    assert m.k_raw.grad is None and z.grad is not None
    assert abs(shape_values(m)["k"] - 0.4) < 1e-7
    assert "k=0.4" in repr(m) and "k_raw" in m.state_dict()


def test_learnable_lambda() -> None:
    m = SWELU(k_init=1.2, learnable_lambda=True, lambda_init=1.5).double()
    assert abs(m.lam.item() - 1.5) < 1e-6
    assert set(dict(m.named_parameters())) == {"k_raw", "lambda_raw"}
    z = ordinary(30, seed=8)
    y = m(z)
    torch.testing.assert_close(y, formula64(z, m.k.item(), m.lam.item()))
    y.sum().backward()
    expected = formula64(z, m.k.item()).sum() * torch.sigmoid(m.lambda_raw.detach())
    torch.testing.assert_close(m.lambda_raw.grad, expected)
    assert "lambda=1.5" in repr(m)


def test_fixed_lambda_scales_output() -> None:
    m = SWELU(lambda_init=2.0)
    z = torch.randn(10)
    torch.testing.assert_close(m(z), 2.0 * SWELU()(z))
    assert "lambda_raw" not in m.state_dict()


def test_module_rejects_bad_arguments() -> None:
    for kwargs in ({"k_init": 0.0}, {"k_init": K_MIN}, {"k_init": math.nan}, {"lambda_init": -1.0}):
        with pytest.raises(ValueError):
            SWELU(**kwargs)


def test_make_activation_kinds_and_error() -> None:
    assert isinstance(make_activation("silu"), nn.SiLU)
    learn = make_activation("swelu", {"k": {"init": 0.8}, "lambda": {"learnable": True}})
    assert isinstance(learn, SWELU) and learn.learnable_k and learn.learnable_lambda
    assert abs(learn.k.item() - 0.8) < 1e-7
    assert isinstance(make_activation("gelu"), nn.GELU)
    with pytest.raises(ValueError, match=r"expected one of .*swelu, swelu-fixed"):
        make_activation("relu6")
