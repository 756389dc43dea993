"""The fast selective scan against the plain loop, third-party references and finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_refs import load_refs, refs_installed

from mswelu.ops.selective_scan import selective_scan, selective_scan_ref

# every test here runs with the compiled CPU kernels and with the pure-PyTorch code (conftest)
pytestmark = pytest.mark.usefixtures("kernels_or_torch")


def make_args(b=2, d=5, length=11, n=3, dtype=torch.float32, z=True, D=True, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_()

    return {
        "u": r(b, d, length),
        "delta": r(b, d, length, scale=0.5),
        "A": (-torch.rand(d, n, generator=g, dtype=torch.float64) * 2 - 0.1).to(dtype).requires_grad_(),
        "B": r(b, n, length),
        "C": r(b, n, length),
        "D": r(d) if D else None,
        "z": r(b, d, length) if z else None,
        "delta_bias": r(d, scale=0.3) if bias else None,
    }


def leaves(args):
    return [v for v in args.values() if v is not None]


def naive_scan(u, delta, A, B, C, D, z, delta_bias, softplus):
    """The recurrence spelled out scalar-free but without any of the module's code (float64)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if softplus:
        delta = torch.log1p(torch.exp(delta))
    b, d, length = u.shape
    h = torch.zeros(b, d, A.shape[1], dtype=torch.float64)
    out = torch.zeros(b, d, length, dtype=torch.float64)
    for t in range(length):
        dA = torch.exp(delta[:, :, t, None] * A[None])
        dBu = delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        h = dA * h + dBu
        out[:, :, t] = torch.einsum("bdn,bn->bd", h, C[:, :, t])
    if D is not None:
        out = out + D.double()[:, None] * u
    if z is not None:
        out = out * z.double() * torch.sigmoid(z.double())
    return out, h


@pytest.mark.parametrize(
    "length,chunk", [(1, 4), (3, 4), (4, 4), (11, 4), (17, 16), (33, 8), (12, 1)], ids=lambda v: str(v)
)
@pytest.mark.parametrize("options", ["all", "bare"])
def test_forward_matches_naive(length, chunk, options):
    full = options == "all"
    args = make_args(length=length, z=full, D=full, bias=full)
    out, last = selective_scan(**args, delta_softplus=full, return_last_state=True, chunk_size=chunk)
    ref_out, ref_last = naive_scan(*args.values(), softplus=full)
    assert out.shape == (2, 5, length) and last.shape == (2, 5, 3)
    assert out.dtype == torch.float32 and last.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length,chunk", [(1, 4), (13, 4), (16, 16), (40, 32)])
def test_gradients_match_reference_loop(length, chunk):
    args = make_args(length=length)
    grad_out = torch.randn(2, 5, length)
    out = selective_scan(**args, delta_softplus=True, chunk_size=chunk)
    ref = selective_scan_ref(**args, delta_softplus=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out, leaves(args), grad_out)
    ref_grads = torch.autograd.grad(ref, leaves(args), grad_out)
    for name, g, rg in zip([k for k, v in args.items() if v is not None], grads, ref_grads, strict=True):
        assert g.shape == rg.shape, name
        torch.testing.assert_close(g, rg, rtol=1e-4, atol=1e-4 * rg.abs().max().item(), msg=name)


@pytest.mark.parametrize("options", ["all", "no_z_no_bias"])
def test_gradcheck_float64(options):
    full = options == "all"
    args = make_args(b=2, d=3, length=7, n=2, dtype=torch.float64, z=full, D=True, bias=full)
    names = [k for k, v in args.items() if v is not None]

    def f(*xs):
        kw = dict(zip(names, xs, strict=True))
        return selective_scan(**kw, delta_softplus=full, chunk_size=3)

    assert torch.autograd.gradcheck(f, tuple(leaves(args)), eps=1e-6, atol=1e-6)


def test_matches_transformers_scan():
    """transformers' own pure-PyTorch ``mamba_selective_scan`` (what its slow MambaMixer runs)."""
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan

    args = make_args(length=19)
    with torch.no_grad():
        out, last = selective_scan(**args, delta_softplus=True, return_last_state=True, chunk_size=8)
        rest = {k: v for k, v in args.items() if k not in ("u", "delta")}
        ref_out, ref_last = mamba_selective_scan(
            args["u"], args["delta"], **rest, delta_softplus=True, return_last_state=True
        )
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, ref_last, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not refs_installed(), reason="mamba-ssm not installed")
def test_matches_mamba_ssm_reference():
    ref_fn = load_refs().selective_scan_fn
    args = make_args(length=21)
    out, last = selective_scan(**args, delta_softplus=True, return_last_state=True, chunk_size=8)
    ref_out, ref_last = ref_fn(**args, delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, ref_last, rtol=1e-5, atol=1e-5)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves(args), grad_out)
    ref_grads = torch.autograd.grad(ref_out, leaves(args), grad_out)
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, rg, rtol=1e-4, atol=1e-4 * rg.abs().max().item())


def test_low_precision_inputs_compute_in_fp32():
    args32 = make_args(length=9)
    args16 = {k: None if v is None else v.detach().bfloat16().requires_grad_() for k, v in args32.items()}
    out = selective_scan(**args16, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    ref = selective_scan_ref(
        **{k: None if v is None else v.detach().float() for k, v in args16.items()}, delta_softplus=True
    )
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    for k, v in args16.items():
        if v is not None:
            assert v.grad is not None and v.grad.dtype == torch.bfloat16, k
            assert torch.isfinite(v.grad.float()).all(), k


def test_other_B_C_layouts_fall_back_to_reference():
    args = make_args(length=6, n=3)
    b, d, length = args["u"].shape
    # (d, n): input-independent B; grouped (b, g, n, l) with one group equals the (b, n, l) layout
    B_const = torch.randn(d, 3)
    out = selective_scan(args["u"], args["delta"], args["A"], B_const, args["C"], delta_softplus=True)
    expanded = B_const[None, :, :, None].expand(b, d, 3, length)
    # the same recurrence with per-channel B written out
    delta = F.softplus(args["delta"]).detach().double()
    h = torch.zeros(b, d, 3, dtype=torch.float64)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * args["A"].detach().double()) * h + (
            delta[:, :, t, None] * expanded[..., t].double() * args["u"].detach().double()[:, :, t, None]
        )
        ys.append((h * args["C"].detach().double()[:, None, :, t]).sum(-1))
    torch.testing.assert_close(out.detach().double(), torch.stack(ys, -1), rtol=1e-5, atol=1e-5)
    grouped = selective_scan(
        args["u"], args["delta"], args["A"], args["B"][:, None], args["C"][:, None], delta_softplus=True
    )
    plain = selective_scan(args["u"], args["delta"], args["A"], args["B"], args["C"], delta_softplus=True)
    torch.testing.assert_close(grouped, plain, rtol=1e-5, atol=1e-5)


def test_last_state_carries_no_gradient_and_output_does():
    args = make_args(length=5)
    out, last = selective_scan(**args, return_last_state=True)
    assert out.requires_grad and not last.requires_grad


def test_saves_no_per_step_state_for_backward():
    """Memory-lean: autograd keeps the inputs plus one (b, d, n) state per chunk, never (b, d, l, n)."""
    b, d, length, n, chunk = 2, 64, 128, 16, 32
    args = make_args(b=b, d=d, length=length, n=n)
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = selective_scan(**args, delta_softplus=True, chunk_size=chunk)
    inputs = sum(v.numel() * 4 for v in leaves(args))
    boundary_states = (length // chunk) * b * d * n * 4
    assert sum(saved.values()) <= inputs + boundary_states
    assert sum(saved.values()) < b * d * length * n * 4 / 2  # well under one full state tensor
    out.sum().backward()


def test_bad_shapes_raise_value_error():
    args = make_args(length=6)
    with pytest.raises(ValueError, match="delta"):
        selective_scan(args["u"], args["delta"][..., :-1], args["A"], args["B"], args["C"])
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(args["u"], args["delta"], args["A"][:-1], args["B"], args["C"])
    with pytest.raises(ValueError, match="C must be"):
        selective_scan(args["u"], args["delta"], args["A"], args["B"], args["C"][..., :-1])
    with pytest.raises(ValueError, match="u must be"):
        selective_scan(args["u"][0], args["delta"][0], args["A"], args["B"], args["C"])
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan(args["u"], args["delta"], args["A"], args["B"], args["C"], chunk_size=0)


def test_autocast_does_not_lower_the_scan_precision():
    args = make_args(length=20, d=8, n=4)
    expected = selective_scan(**args, delta_softplus=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = selective_scan(**args, delta_softplus=True)
        grads = torch.autograd.grad(out.sum(), leaves(args))
    ref_grads = torch.autograd.grad(expected.sum(), leaves(args))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, rg, rtol=1e-6, atol=1e-6)


def test_benchmark_json_output(capsys):
    import json

    from mswelu.bench import scan as bench

    args = ["--json", "--length", "8", "--d-inner", "16", "--d-state", "4", "--repeats", "1", "--no-memory"]
    assert bench.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "scan"
    assert set(report["results"]) == {"mswelu", "mswelu_torch", "transformers_loop", "mambapy_pscan"}
    assert report["results"]["mswelu"]["max_rel_diff_vs_transformers_loop"] < 1e-4
    assert report["results"]["mswelu_torch"]["max_rel_diff_vs_transformers_loop"] < 1e-4
    assert report["results"]["mambapy_pscan"]["max_rel_diff_vs_transformers_loop"] < 1e-4
    assert report["ratios"]["speedup_vs_mambapy_pscan"] > 0
