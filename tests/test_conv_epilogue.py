"""The mixer's conv with its activation in the kernel's epilogue (mswelu/ops/causal_conv.causal_conv1d_act):
bit for bit the conv kernel followed by the activation's own kernel (what training computed before it, so the
committed studies' records stay valid), close to the F.conv1d + formula reference in fp64 / fp32 / bf16, and
chosen by the mixers exactly where an activation registers a kernel form and the kernels are built."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mswelu.modules.activations import epilogue_of, make_activation
from mswelu.modules.activations.swish import Swish
from mswelu.modules.mamba2_mixer import Mamba2Mixer
from mswelu.modules.mamba_mixer import MambaMixer
from mswelu.modules.swelu import SWELU
from mswelu.ops import causal_conv, cpu_kernels
from mswelu.ops.causal_conv import Epilogue, causal_conv1d, causal_conv1d_act, causal_conv1d_act_ref
from mswelu.ops.swelu import swelu, swelu_reference

pytestmark = pytest.mark.skipif(
    not cpu_kernels.available()[0], reason="no C++ toolchain to build the kernels"
)


def conv_inputs(b, d, length, width=4, dtype=torch.float32, seed=0):
    """x as the mixer has it (a transposed slice of a wider channels-last tensor), weight, bias; leaves."""
    g = torch.Generator().manual_seed(seed)
    wide = torch.randn(b, length, 2 * d, generator=g).to(dtype)
    x = wide[..., :d].transpose(1, 2).requires_grad_()  # (b, d, length), unit channel stride
    wdtype = torch.float64 if dtype == torch.float64 else torch.float32  # fp32 parameters under autocast
    weight = (torch.randn(d, width, generator=g) * 0.5).to(wdtype).requires_grad_()
    bias = (torch.randn(d, generator=g) * 0.1).to(wdtype).requires_grad_()
    return x, weight, bias


def swelu_module(k: float, learnable_lambda: bool = False) -> SWELU:
    module = SWELU(k_init=k, learnable_lambda=learnable_lambda, lambda_init=1.3 if learnable_lambda else 1.0)
    return module


def outputs_and_grads(fn, x, weight, bias, module):
    """fn's output and the gradients of x, weight, bias and the module's parameters."""
    y = fn()
    # channels-last, as the mixer's gradient is (ATen's silu backward takes its vector code on that layout)
    gy = torch.linspace(-2, 2, y.numel()).reshape(y.transpose(1, 2).shape).to(y.dtype).transpose(1, 2)
    leaves = [x, weight, bias, *[p for p in module.parameters() if p.requires_grad]]
    return [y, *torch.autograd.grad(y, leaves, gy)]


def unfused(x, weight, bias, module):
    """The conv kernel, then the activation module (on its own CPU kernel): what the mixer ran before."""
    return module(causal_conv1d(x, weight, bias, impl="cpu").transpose(1, 2)).transpose(1, 2)


# Channel counts around the vector width (partial vectors), lengths across the kernel's 64-step work items.
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("d, length", [(64, 64), (37, 70), (5, 131)])
@pytest.mark.parametrize("act", ["swelu-0.6", "swelu-1.4-lambda", "silu"])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_is_bit_identical_to_conv_then_activation(dtype, d, length, act, threads):
    if act == "silu" and (2 * d * length) % 64:
        # ATen's silu runs a scalar loop (libm's exp) on the last elements of a tensor whose size is not a
        # multiple of its double vector (64 bf16 / 32 fp32 lanes); the epilogue is its vector code everywhere
        pytest.skip("silu's scalar tail")
    module = nn.SiLU() if act == "silu" else swelu_module(float(act.split("-")[1]), act.endswith("lambda"))
    x, weight, bias = conv_inputs(2, d, length, dtype=dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fused = outputs_and_grads(
            lambda: causal_conv1d_act(x, weight, bias, epilogue_of(module)), x, weight, bias, module
        )
        apart = outputs_and_grads(lambda: unfused(x, weight, bias, module), x, weight, bias, module)
    finally:
        torch.set_num_threads(before)
    assert len(fused) == len(apart)
    for f, a in zip(fused, apart, strict=True):
        assert f.dtype == a.dtype and f.shape == a.shape
        assert torch.equal(f, a), (f - a).abs().max()


@pytest.mark.parametrize(
    "dtype, rtol, atol",
    [
        # fp64: the same formula in another order (conv by F.conv1d, SWELU's closed form vs autograd)
        (torch.float64, 1e-10, 1e-12),
        # fp32: a few ulps per element; the k gradient sums 2 * 37 * 50 terms in another order
        (torch.float32, 1e-4, 1e-5),
        # bf16: the conv output is rounded to bf16 (8 bits) before the activation, and the activation's
        # output and gradient again; the reference keeps fp32 in between: a few bf16 ulps (2^-8 = 0.4%)
        (torch.bfloat16, 3e-2, 3e-2),
    ],
)
@pytest.mark.parametrize("act", ["swelu", "silu"])
def test_fused_matches_the_formula_reference(dtype, rtol, atol, act):
    x, weight, bias = conv_inputs(2, 37, 50, dtype=dtype, seed=1)
    k = torch.tensor(
        0.7, dtype=torch.float64 if dtype == torch.float64 else torch.float32, requires_grad=True
    )
    lam = torch.tensor(1.2, dtype=k.dtype, requires_grad=True)
    if act == "swelu":
        fused = causal_conv1d_act(x, weight, bias, Epilogue("swelu", k, lam))
        # the formula's gradient is NaN only at z = 0 exactly, which these inputs do not hit
        ref = causal_conv1d_act_ref(
            x.double(), weight.double(), bias.double(), lambda z: swelu_reference(z, k, lam)
        )
        leaves = (x, weight, bias, k, lam)
    else:
        fused = causal_conv1d_act(x, weight, bias, Epilogue("silu"))
        ref = causal_conv1d_act_ref(x.double(), weight.double(), bias.double(), F.silu)
        leaves = (x, weight, bias)
    gy = torch.linspace(-1, 1, fused.numel()).reshape(fused.shape)
    grads = torch.autograd.grad(fused, leaves, gy.to(fused.dtype))
    ref_grads = torch.autograd.grad(ref, leaves, gy.double())
    torch.testing.assert_close(fused.double(), ref.double(), rtol=rtol, atol=atol)
    for g, r in zip(grads, ref_grads, strict=True):
        scale = r.abs().max().item()
        torch.testing.assert_close(g.double(), r.double(), rtol=rtol, atol=atol * max(scale, 1.0))


@pytest.mark.parametrize(
    "dtype, rtol, atol",
    # fp64: another order of the same formula; fp32: a few ulps, beta's gradient summed in another order;
    # bf16: the module rounds beta z, sigmoid and the product to bf16 (8 bits) where the epilogue keeps fp32
    [(torch.float64, 1e-10, 1e-12), (torch.float32, 1e-4, 1e-5), (torch.bfloat16, 3e-2, 3e-2)],
)
def test_swish_epilogue_matches_the_module(dtype, rtol, atol):
    x, weight, bias = conv_inputs(2, 37, 50, dtype=dtype, seed=3)
    module = Swish(1.3).to(torch.float64 if dtype == torch.float64 else torch.float32)
    fused = causal_conv1d_act(x, weight, bias, epilogue_of(module))
    ref_module = Swish(1.3).double()
    ref = causal_conv1d_act_ref(x.double(), weight.double(), bias.double(), ref_module)
    gy = torch.linspace(-1, 1, fused.numel()).reshape(fused.shape)
    grads = torch.autograd.grad(fused, (x, weight, bias, module.beta_raw), gy.to(fused.dtype))
    ref_grads = torch.autograd.grad(ref, (x, weight, bias, ref_module.beta_raw), gy.double())
    torch.testing.assert_close(fused.double(), ref, rtol=rtol, atol=atol)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(
            g.double(), r.double(), rtol=rtol, atol=atol * max(r.abs().max().item(), 1.0)
        )


def test_fused_gradcheck_float64():
    x, weight, bias = conv_inputs(2, 19, 9, dtype=torch.float64, seed=2)
    k = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: causal_conv1d_act(*a[:3], Epilogue("swelu", a[3], a[4])), (x, weight, bias, k, lam)
    )
    assert torch.autograd.gradcheck(lambda *a: causal_conv1d_act(*a, Epilogue("silu")), (x, weight, bias))
    beta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: causal_conv1d_act(*a[:3], Epilogue("swish", a[3])), (x, weight, bias, beta)
    )


def test_bad_epilogue_arguments():
    x, weight, bias = conv_inputs(1, 4, 6)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        causal_conv1d_act(x, weight, bias, Epilogue("gelu"))
    with pytest.raises(ValueError, match="k must be a scalar"):
        causal_conv1d_act(x, weight, bias, Epilogue("swelu", torch.ones(4)))
    with pytest.raises(ValueError, match="width of at most"):
        causal_conv1d_act(x, torch.ones(4, 9), bias, Epilogue("silu"))


def test_kernel_forms_are_registered_per_activation():
    assert epilogue_of(nn.SiLU()) == Epilogue("silu")
    form = epilogue_of(make_activation("swelu"))
    assert form.act == "swelu" and form.k.item() == 1.0 and form.lam is None
    assert epilogue_of(
        make_activation("swelu", {"lambda": {"learnable": True, "init": 2.0}})
    ).lam.requires_grad
    # no kernel form: the activation runs as itself after the conv
    assert epilogue_of(nn.GELU()) is None
    swish = epilogue_of(Swish(1.5))
    assert swish.act == "swish" and abs(swish.k.item() - 1.5) < 1e-6 and not swish.exact
    assert epilogue_of(SWELU(impl="torch")) is None  # pinned to another implementation

    class Shifted(SWELU):  # a subclass may compute something else
        def forward(self, z):
            return super().forward(z) + 1

    assert epilogue_of(Shifted()) is None


def mixer_step(mixer, h, bf16):
    """The mixer's output and every parameter's gradient (and the input's) for one forward and backward."""
    h = h.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = mixer(h)
    out.float().square().mean().backward()
    grads = [h.grad] + [p.grad.clone() for p in mixer.parameters() if p.grad is not None]
    mixer.zero_grad(set_to_none=True)
    return [out, *grads]


@pytest.mark.parametrize("mixer_cls", [MambaMixer, Mamba2Mixer])
@pytest.mark.parametrize("act", ["silu", "swelu", "swelu-shared"])
@pytest.mark.parametrize("bf16", [False, True])
def test_mixers_use_the_epilogue_with_the_same_bits(monkeypatch, mixer_cls, act, bf16):
    torch.manual_seed(0)
    kw = {"headdim": 16, "d_state": 8} if mixer_cls is Mamba2Mixer else {"d_state": 4}
    acts = {}
    if act.startswith("swelu"):
        conv = SWELU(k_init=0.8)
        acts = {"act_conv": conv, "act_gate": conv if act == "swelu-shared" else SWELU(k_init=1.2)}
    mixer = mixer_cls(32, expand=2, **kw, **acts)
    h = torch.randn(2, 64, 32)
    calls = []
    real = causal_conv.causal_conv1d_act
    monkeypatch.setattr(
        "mswelu.modules.ssm_mixer.causal_conv1d_act", lambda *a: calls.append(a[3].act) or real(*a)
    )
    fused = mixer_step(mixer, h, bf16)
    assert calls == [act.split("-")[0]]
    monkeypatch.setattr("mswelu.modules.ssm_mixer.epilogue_of", lambda module: None)
    apart = mixer_step(mixer, h, bf16)
    for f, a in zip(fused, apart, strict=True):
        assert torch.equal(f, a), (f - a).abs().max()


@pytest.mark.parametrize(
    "mode, fused", [("", ["silu"]), ("exact", ["silu"]), ("all", ["silu", "swish"]), ("off", [])]
)
def test_the_environment_chooses_which_epilogues_run(monkeypatch, mode, fused):
    calls = []
    real = causal_conv.causal_conv1d_act
    monkeypatch.setattr(
        "mswelu.modules.ssm_mixer.causal_conv1d_act", lambda *a: calls.append(a[3].act) or real(*a)
    )
    monkeypatch.setenv(causal_conv.EPILOGUE_ENV, mode)
    h = torch.randn(2, 8, 32)
    for act in (nn.SiLU(), Swish()):  # Swish's epilogue sums beta's gradient in another order: on request
        MambaMixer(32, d_state=4, act_conv=act)(h)
    assert calls == fused
    monkeypatch.setenv(causal_conv.EPILOGUE_ENV, "fast")
    with pytest.raises(ValueError, match="MSWELU_CONV_EPILOGUE: unknown mode 'fast'"):
        MambaMixer(32, d_state=4)(h)


def test_mixers_fall_back_without_the_kernels(monkeypatch):
    torch.manual_seed(0)
    mixer = MambaMixer(32, d_state=4, act_conv=SWELU(k_init=0.8))
    h = torch.randn(2, 16, 32)
    calls = []
    monkeypatch.setattr("mswelu.modules.ssm_mixer.causal_conv1d_act", lambda *a: calls.append(a))
    monkeypatch.setenv(cpu_kernels.ENV_VAR, "0")
    out = mixer(h)
    assert calls == []
    # the pure-PyTorch path: F.conv1d, then SWELU's closed form
    x = mixer.in_proj(h).chunk(2, dim=-1)[0].transpose(1, 2)
    ref = causal_conv1d_act_ref(
        x,
        mixer.conv1d.weight.squeeze(1),
        mixer.conv1d.bias,
        lambda z: swelu(z, mixer.act_conv.k, impl="torch"),
    )
    torch.testing.assert_close(mixer._conv_act(x), ref, rtol=0, atol=0)
    assert out.shape == h.shape
    # the residual conv control and activations without a kernel form take the conv, then the module
    monkeypatch.delenv(cpu_kernels.ENV_VAR)
    for m in (MambaMixer(32, d_state=4, conv_mode="residual"), MambaMixer(32, d_state=4, act_conv=nn.GELU())):
        m(h)
    assert calls == []
