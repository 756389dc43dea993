"""The Mamba-1 gate's activation in the CPU scan kernel's output epilogue (``selective_scan(..., gate=...)``,
mswelu/ops/scan_cpu.py): bit for bit the scan followed by the activation's own CPU kernel and the product
where the mixer uses it by default (SWELU: what training computed before, so the committed studies' records
stay valid), close to the PyTorch reference elsewhere, finite differences in fp64, and chosen by the mixer
exactly where the activation registers a kernel form and MSWELU_CONV_EPILOGUE allows it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mswelu.modules.activations import epilogue_of
from mswelu.modules.activations.swish import Swish
from mswelu.modules.mamba_mixer import MambaMixer
from mswelu.modules.swelu import SWELU
from mswelu.ops import causal_conv, cpu_kernels, scan_cpu
from mswelu.ops.causal_conv import Epilogue
from mswelu.ops.selective_scan import selective_scan, selective_scan_ref

pytestmark = pytest.mark.skipif(
    not cpu_kernels.available()[0], reason="no C++ toolchain to build the kernels"
)


def scan_inputs(b, d, length, n, dtype=torch.float32, seed=0):
    """The scan's inputs as the mixer has them: u, delta and z transposed views of channels-last tensors (z a
    slice of a wider one, like in_proj's output), B and C (b, n, l) views, fp32 A, D and delta bias;
    leaves."""
    g = torch.Generator().manual_seed(seed)
    ct = torch.float64 if dtype == torch.float64 else torch.float32

    def r(*shape, scale=1.0, to=dtype):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(to)

    wide = r(b, length, 2 * d)
    return {
        "u": r(b, length, d).transpose(1, 2).requires_grad_(),
        "delta": r(b, length, d, scale=0.5).transpose(1, 2).requires_grad_(),
        "A": (-torch.rand(d, n, generator=g, dtype=torch.float64) * 2 - 0.1).to(ct).requires_grad_(),
        "B": r(b, length, n, to=ct).transpose(1, 2).requires_grad_(),
        "C": r(b, length, n, to=ct).transpose(1, 2).requires_grad_(),
        "D": r(d, to=ct).requires_grad_(),
        "z": wide[..., d:].requires_grad_(),  # (b, l, d) with row stride 2d: the mixer's gate
        "delta_bias": r(d, scale=0.3, to=ct).requires_grad_(),
    }


def gate_module(act: str, dtype: torch.dtype) -> nn.Module:
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32
    if act == "silu":
        return nn.SiLU()
    if act == "swish":
        return Swish(1.3).to(pdtype)
    module = SWELU(k_init=float(act.split("-")[1]), learnable_lambda=act.endswith("lambda"), lambda_init=1.3)
    return module.to(pdtype)


def run(args, module, fused, chunk=16, threads=1):
    """(out, every gradient: the scan's inputs and the module's parameters), fused in the scan's epilogue or
    the scan (z=None) followed by ``y * module(z)``, as the mixer ran it before."""
    z = args["z"]
    scan_args = {k: v for k, v in args.items() if k != "z"}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if fused:
            y = selective_scan(**scan_args, z=z.transpose(1, 2), delta_softplus=True, chunk_size=chunk,
                               impl="cpu", gate=epilogue_of(module))  # fmt: skip
            out = y.transpose(1, 2)
        else:
            y = selective_scan(**scan_args, delta_softplus=True, chunk_size=chunk, impl="cpu")
            out = y.transpose(1, 2) * module(z)
        gout = torch.linspace(-2, 2, out.numel()).reshape(out.shape).to(out.dtype)
        leaves = [*args.values(), *[p for p in module.parameters() if p.requires_grad]]
        return [out, *torch.autograd.grad(out, leaves, gout)]
    finally:
        torch.set_num_threads(before)


# Channel counts around the vector width (16 fp32 lanes with AVX-512: partial vectors), lengths over several
# chunks with a partial last one, the state sizes the kernel specialises (4, 8, 16) and another (5).
SHAPES = [(2, 64, 40, 4), (3, 37, 70, 8), (3, 5, 33, 16), (2, 21, 17, 5)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("b, d, length, n", SHAPES)
@pytest.mark.parametrize("act", ["swelu-0.6", "swelu-1.4-lambda"])
@pytest.mark.parametrize("threads", [1, 2])
def test_swelu_gate_is_bit_identical_to_scan_then_activation(dtype, b, d, length, n, act, threads):
    args = scan_inputs(b, d, length, n, dtype=dtype)
    module = gate_module(act, dtype)
    fused = run(args, module, True, threads=threads)
    apart = run(args, module, False, threads=threads)
    assert len(fused) == len(apart) == 9 + (2 if act.endswith("lambda") else 1)
    for i, (f, a) in enumerate(zip(fused, apart, strict=True)):
        assert f.dtype == a.dtype and f.shape == a.shape, i
        assert torch.equal(f, a), (i, (f.double() - a.double()).abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("b, d, threads", [(1, 100, 4), (3, 37, 2), (2, 70, 3)])
def test_swelu_sums_do_not_depend_on_how_the_work_is_split(dtype, b, d, threads):
    # the scan's work items (batch row, channel block) split between threads inside a batch row: one row's
    # blocks on two, three or four threads (the k and lam sums still take swelu_bwd's order)
    args = scan_inputs(b, d, 20, 4, dtype=dtype, seed=5)
    module = gate_module("swelu-0.9-lambda", dtype)
    fused = run(args, module, True, threads=threads)
    apart = run(args, module, False, threads=threads)
    for f, a in zip(fused[-2:], apart[-2:], strict=True):
        assert torch.equal(f, a), (f - a).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("threads", [1, 2])
def test_silu_gate_is_bit_identical_where_aten_has_no_scalar_tail(dtype, threads):
    # 64 channels: every row of the strided gate is whole vectors of ATen's silu (no libm tail)
    args = scan_inputs(2, 64, 40, 4, dtype=dtype, seed=1)
    fused = run(args, nn.SiLU(), True, threads=threads)
    apart = run(args, nn.SiLU(), False, threads=threads)
    for f, a in zip(fused, apart, strict=True):
        assert torch.equal(f, a), (f.double() - a.double()).abs().max()


@pytest.mark.parametrize(
    "dtype, rtol, atol",
    [
        # fp64: the same formulas in another order (SWELU's closed form against autograd on the reference)
        (torch.float64, 1e-9, 1e-11),
        # fp32: a few ulps per element; the shape gradients sum b * l * d terms in another order
        (torch.float32, 1e-4, 1e-5),
        # bf16: y and act(z) rounded to bf16 (8 bits) before the product, then the product, and the gradients
        # the same way; the module's Swish rounds beta z and the sigmoid too: a few bf16 ulps (2^-8 = 0.4%)
        (torch.bfloat16, 4e-2, 4e-2),
    ],
)
@pytest.mark.parametrize("b, d, length, n", [(2, 37, 70, 8), (2, 21, 17, 5)])
@pytest.mark.parametrize("act", ["silu", "swish", "swelu-0.8-lambda"])
def test_gate_matches_the_reference(dtype, rtol, atol, b, d, length, n, act):
    args = scan_inputs(b, d, length, n, dtype=dtype, seed=2)
    module = gate_module(act, dtype)
    fused = run(args, module, True)
    ref_module = gate_module(act, torch.float64)
    ref_module.load_state_dict(module.state_dict())
    ref_args = {k: v.detach().double().requires_grad_() for k, v in args.items()}
    z = ref_args["z"]
    out = selective_scan_ref(**{k: v for k, v in ref_args.items() if k != "z"}, z=z.transpose(1, 2),
                             delta_softplus=True, gate=epilogue_of(ref_module)).transpose(1, 2)  # fmt: skip
    gout = torch.linspace(-2, 2, out.numel()).reshape(out.shape).double()  # run()'s
    leaves = [*ref_args.values(), *[p for p in ref_module.parameters() if p.requires_grad]]
    ref = [out, *torch.autograd.grad(out, leaves, gout)]
    for i, (f, r) in enumerate(zip(fused, ref, strict=True)):
        scale = max(r.abs().max().item(), 1.0)
        torch.testing.assert_close(
            f.double(), r, rtol=rtol, atol=atol * scale, msg=lambda m, i=i: f"{i}: {m}"
        )


def test_torch_path_takes_the_same_gate():
    args = scan_inputs(2, 21, 17, 5, dtype=torch.float64, seed=3)
    module = gate_module("swelu-0.7-lambda", torch.float64)
    scan_args = {k: v for k, v in args.items() if k != "z"}
    z = args["z"].transpose(1, 2)
    outs = [
        selective_scan(
            **scan_args, z=z, delta_softplus=True, chunk_size=8, impl=impl, gate=epilogue_of(module)
        )
        for impl in ("cpu", "torch")
    ]
    ref = selective_scan_ref(**scan_args, z=z, delta_softplus=True, gate=epilogue_of(module))
    for out in outs:
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act", ["silu", "swish", "swelu"])
def test_gate_gradcheck_float64(act):
    args = scan_inputs(2, 19, 9, 3, dtype=torch.float64, seed=4)
    names = list(args)
    k = torch.tensor(0.9 if act == "swish" else 1.3, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)

    def f(*xs):
        kw = dict(zip(names, xs[: len(names)], strict=True))
        gate = Epilogue(act, *xs[len(names) :])
        z = kw.pop("z").transpose(1, 2)
        return selective_scan(**kw, z=z, delta_softplus=True, chunk_size=4, impl="cpu", gate=gate)

    shape = {"silu": (), "swish": (k,), "swelu": (k, lam)}[act]
    assert torch.autograd.gradcheck(f, (*args.values(), *shape))


def mixer_step(mixer, h, bf16):
    """The mixer's output and every parameter's gradient (and the input's) for one forward and backward."""
    h = h.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = mixer(h)
    out.float().square().mean().backward()
    grads = [h.grad] + [p.grad.clone() for p in mixer.parameters() if p.grad is not None]
    mixer.zero_grad(set_to_none=True)
    return [out, *grads]


def count_gates(monkeypatch) -> list[str]:
    """The gate activations the mixer runs in the scan's epilogue from now on."""
    calls = []
    real = scan_cpu.CpuSelectiveScanFn.apply

    def spy(*a):
        calls.append(a[-1])
        return real(*a)

    monkeypatch.setattr(scan_cpu.CpuSelectiveScanFn, "apply", spy)
    return calls


@pytest.mark.parametrize("act", ["swelu", "swelu-shared", "swelu-lambda"])
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_mixer_runs_the_swelu_gate_fused_with_the_same_bits(monkeypatch, act, bf16, threads):
    torch.manual_seed(0)
    conv = SWELU(k_init=0.8)
    gate = conv if act == "swelu-shared" else SWELU(k_init=1.2, learnable_lambda=act == "swelu-lambda")
    mixer = MambaMixer(48, expand=2, d_state=4, act_conv=conv, act_gate=gate)
    h = torch.randn(2, 40, 48)
    calls = count_gates(monkeypatch)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fused = mixer_step(mixer, h, bf16)
        assert calls == ["swelu"]
        monkeypatch.setenv(causal_conv.EPILOGUE_ENV, "off")
        apart = mixer_step(mixer, h, bf16)
        assert calls == ["swelu", None]
    finally:
        torch.set_num_threads(before)
    for f, a in zip(fused, apart, strict=True):
        assert torch.equal(f, a), (f - a).abs().max()


@pytest.mark.parametrize(
    "mode, fused",
    [("", [None, "swelu", None]), ("exact", [None, "swelu", None]), ("all", ["silu", "swelu", "swish"]),
     ("off", [None, None, None])],
)  # fmt: skip
def test_the_environment_chooses_which_gates_run_fused(monkeypatch, mode, fused):
    calls = count_gates(monkeypatch)
    monkeypatch.setenv(causal_conv.EPILOGUE_ENV, mode)
    h = torch.randn(2, 8, 32)
    for act in (nn.SiLU(), SWELU(), Swish()):  # SiLU and Swish: not the unfused bits everywhere, on request
        MambaMixer(32, d_state=4, act_gate=act)(h)
    assert calls == fused


def test_other_activations_and_paths_keep_the_gate_apart(monkeypatch):
    calls = count_gates(monkeypatch)
    h = torch.randn(2, 8, 32)
    MambaMixer(32, d_state=4, act_gate=nn.GELU())(h)  # no kernel form
    MambaMixer(32, d_state=4, act_gate=SWELU(impl="torch"))(h)  # pinned to another implementation
    assert calls == [None, None]
    monkeypatch.setenv(cpu_kernels.ENV_VAR, "0")  # no kernels: the PyTorch scan, then the gate
    MambaMixer(32, d_state=4, act_gate=SWELU())(h)
    assert calls == [None, None]


def test_bad_gate_arguments():
    args = scan_inputs(1, 4, 6, 2)
    z = args.pop("z").transpose(1, 2)
    with pytest.raises(ValueError, match="unknown gate activation 'gelu'"):
        selective_scan(**args, z=z, gate=Epilogue("gelu"))
    with pytest.raises(ValueError, match="the gate: k must be a scalar"):
        selective_scan(**args, z=z, impl="cpu", gate=Epilogue("swelu", torch.ones(4)))
