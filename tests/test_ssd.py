"""Mamba-2's chunked SSD (mswelu.ops.ssd) against its per-step reference, finite differences and
transformers' own chunked torch path: values and every gradient, fp64 / fp32 / bf16."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mswelu.ops.ssd import ssd_chunk_scan, ssd_ref

FP32 = {"rtol": 1e-4, "atol": 1e-5}  # on tensors scaled to max |reference| = 1
BF16 = {"rtol": 3e-2, "atol": 3e-2}


def make_args(b=2, length=11, h=4, p=3, g=2, n=5, dtype=torch.float64, D="head", seed=0, initial=True):
    """SSD inputs as leaves: dt is raw (softplus and the bias are applied inside), A < 0, D per head,
    per channel or None."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0, shift=0.0):
        t = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift
        return t.to(dtype).requires_grad_()

    args = {
        "x": r(b, length, h, p),
        "dt": r(b, length, h, scale=0.7, shift=-0.5),
        "A": (-torch.rand(h, generator=gen, dtype=torch.float64) * 3 - 0.2).to(dtype).requires_grad_(),
        "B": r(b, length, g, n),
        "C": r(b, length, g, n),
        "D": {"head": r(h), "channel": r(h, p), None: None}[D],
        "dt_bias": r(h, scale=0.5),
        "initial_states": r(b, h, p, n) if initial else None,
    }
    return args


def leaves(args: dict) -> dict:
    return {k: v for k, v in args.items() if isinstance(v, torch.Tensor)}


def as_fp64(args: dict) -> dict:
    """The same values in fp64 (bf16 inputs stay exactly as rounded): the reference's inputs."""
    return {
        k: (v.detach().double().requires_grad_() if isinstance(v, torch.Tensor) else v)
        for k, v in args.items()
    }


def outputs_and_grads(fn, args: dict, seed: int = 1, **kwargs):
    """(y, final state) and the gradients of a random linear function of both w.r.t. every input tensor."""
    for t in leaves(args).values():
        t.grad = None
    y, final = fn(**args, dt_softplus=True, return_final_states=True, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    gf = torch.randn(final.shape, generator=gen, dtype=torch.float64)
    ((y.double() * gy).sum() + (final.double() * gf).sum()).backward()
    grads = {k: v.grad for k, v in leaves(args).items()}
    assert all(g is not None for g in grads.values()), [k for k, g in grads.items() if g is None]
    return y.detach(), final.detach(), grads


def assert_scaled_close(got: torch.Tensor, want: torch.Tensor, tol: dict, what: str) -> None:
    scale = want.detach().double().abs().max().clamp_min(1e-12)
    torch.testing.assert_close(
        got.detach().double() / scale, want.detach().double() / scale, **tol, msg=lambda m: f"{what}: {m}"
    )


def check_against_reference(args: dict, tol: dict, chunk_size: int, **kwargs) -> None:
    want_y, want_f, want_g = outputs_and_grads(ssd_ref, as_fp64(args), **kwargs)
    got_y, got_f, got_g = outputs_and_grads(ssd_chunk_scan, args, chunk_size=chunk_size, **kwargs)
    assert got_y.dtype == args["x"].dtype and got_f.dtype == (
        torch.float64 if args["x"].dtype == torch.float64 else torch.float32
    )
    assert_scaled_close(got_y, want_y, tol, "y")
    assert_scaled_close(got_f, want_f, tol, "final state")
    for name in want_g:
        assert got_g[name].dtype == args[name].dtype, name
        assert_scaled_close(got_g[name], want_g[name], tol, f"gradient of {name}")


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 64])
@pytest.mark.parametrize("D", ["head", "channel", None])
def test_fp64_values_and_gradients_equal_the_recurrence(chunk_size: int, D) -> None:
    """Length 11: chunks of 4 and 5 leave a partial last chunk; 64 is one (padded) chunk."""
    check_against_reference(make_args(D=D), {"rtol": 1e-10, "atol": 1e-10}, chunk_size=chunk_size)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_fp32_values_and_gradients_with_groups(groups: int) -> None:
    check_against_reference(make_args(dtype=torch.float32, g=groups, length=19), FP32, chunk_size=8)


def test_bf16_values_and_gradients() -> None:
    """bf16 inputs: matmuls in bf16 (fp32 accumulation), decays and states in fp32; against the fp64
    recurrence on the same (bf16-rounded) values."""
    check_against_reference(make_args(dtype=torch.bfloat16, length=37, p=8, n=16), BF16, chunk_size=16)


def test_bf16_error_is_bf16_sized_not_larger() -> None:
    """The bf16 path is as accurate as rounding its inputs and outputs allows: within a few bf16 ulps of
    the fp64 result, i.e. well inside BF16 but far outside FP32 (so the tolerance test above can fail)."""
    args = make_args(dtype=torch.bfloat16, length=40, p=8, n=16, initial=False)
    want = ssd_ref(**as_fp64(args), dt_softplus=True)
    got = ssd_chunk_scan(**args, dt_softplus=True, chunk_size=16)
    err = ((got.double() - want).abs().max() / want.abs().max()).item()
    assert 1e-4 < err < 1.5e-2, err


def test_dt_limit_clamps_the_step_and_its_gradient() -> None:
    args = make_args(dtype=torch.float64)
    check_against_reference(args, {"rtol": 1e-10, "atol": 1e-10}, chunk_size=4, dt_limit=(0.2, 0.6))
    free = ssd_chunk_scan(**args, dt_softplus=True, chunk_size=4)
    clamped = ssd_chunk_scan(**args, dt_softplus=True, chunk_size=4, dt_limit=(0.2, 0.6))
    assert not torch.allclose(free, clamped)


def test_gradcheck_of_the_analytic_backward() -> None:
    """Finite differences, independent of the reference's autograd; partial last chunk, 2 groups."""
    args = make_args(b=1, length=7, h=4, p=2, g=2, n=3, D="channel")

    def fn(*tensors):
        kw = dict(zip(leaves(args), tensors, strict=True))
        return ssd_chunk_scan(**kw, dt_softplus=True, chunk_size=3, return_final_states=True)

    assert torch.autograd.gradcheck(fn, tuple(leaves(args).values()))


def test_chunk_size_only_changes_rounding() -> None:
    args = make_args(dtype=torch.float32, length=50, initial=False)
    with torch.no_grad():
        results = [ssd_chunk_scan(**args, dt_softplus=True, chunk_size=q) for q in (1, 7, 16, 50, 256)]
    for other in results[1:]:
        assert_scaled_close(other, results[0], {"rtol": 1e-5, "atol": 1e-6}, "chunk sizes")


def test_the_final_state_continues_the_sequence() -> None:
    """Scanning the first part, then the rest from its final state, equals scanning the whole."""
    args = make_args(dtype=torch.float64, length=20, initial=False)
    whole, whole_final = ssd_chunk_scan(**args, dt_softplus=True, return_final_states=True)
    first = {k: (v[:, :9] if k in ("x", "dt", "B", "C") else v) for k, v in args.items()}
    rest = {k: (v[:, 9:] if k in ("x", "dt", "B", "C") else v) for k, v in args.items()}
    y1, state = ssd_chunk_scan(**first, dt_softplus=True, chunk_size=4, return_final_states=True)
    rest["initial_states"] = state
    y2, final = ssd_chunk_scan(**rest, dt_softplus=True, chunk_size=4, return_final_states=True)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), whole)
    torch.testing.assert_close(final, whole_final)


def test_long_decays_give_zero_not_nan() -> None:
    """Fast heads (A dt far below -80 within a chunk) decay to exactly nothing, forward and backward."""
    args = make_args(dtype=torch.float32, length=64, initial=False)
    with torch.no_grad():
        args["A"].fill_(-300.0)
        args["dt_bias"].fill_(3.0)
    check_against_reference(args, FP32, chunk_size=64)


def test_reference_matches_transformers_chunked_torch_path() -> None:
    """An independent implementation: transformers' Mamba-2 ``mamba2_chunk_scan`` torch path (fp32)."""
    from transformers.models.mamba2 import modeling_mamba2

    args = make_args(dtype=torch.float32, length=21, initial=True)
    ours = ssd_ref(**args, dt_softplus=True, dt_limit=(0.0, 2.0), return_final_states=True)
    theirs = modeling_mamba2.mamba2_chunk_scan(
        args["x"], args["dt"], args["A"], args["B"], args["C"], chunk_size=8, D=args["D"],
        dt_bias=args["dt_bias"], initial_states=args["initial_states"], dt_softplus=True,
        dt_limit=(0.0, 2.0), return_final_states=True,
    )  # fmt: skip
    for a, b, what in zip(ours, theirs, ("y", "final state"), strict=True):
        assert_scaled_close(a, b, FP32, what)


def test_results_do_not_depend_on_the_thread_count() -> None:
    """Bit for bit with one thread and with two, at sizes where elementwise ops and matmuls split work."""
    args = make_args(b=2, length=300, h=8, p=16, g=2, n=32, dtype=torch.float32, D="channel")

    def run():
        return outputs_and_grads(ssd_chunk_scan, args, chunk_size=64)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run()
        torch.set_num_threads(2)
        double = run()
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single[0], double[0]) and torch.equal(single[1], double[1])
    for name in single[2]:
        assert torch.equal(single[2][name], double[2][name]), name


def test_autocast_does_not_change_the_result() -> None:
    """The function picks its own dtypes: fp32 inputs give the same numbers under bf16 autocast."""
    args = make_args(dtype=torch.float32, initial=False)
    with torch.no_grad():
        plain = ssd_chunk_scan(**args, dt_softplus=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = ssd_chunk_scan(**args, dt_softplus=True)
    assert autocast.dtype == torch.float32 and torch.equal(plain, autocast)


def test_bad_arguments_are_named() -> None:
    args = make_args(dtype=torch.float32)
    bad = [
        ({"x": args["x"][..., 0]}, "x must be"),
        ({"dt": args["dt"][:, :-1]}, "dt must be"),
        ({"A": args["A"][:-1]}, "A must be"),
        ({"B": args["B"][:, :, :, :-1]}, "C must have B's shape"),
        ({"B": torch.randn(2, 11, 3, 5), "C": torch.randn(2, 11, 3, 5)}, "ngroups dividing nheads"),
        ({"D": torch.randn(5)}, "D must be"),
        ({"dt_bias": torch.randn(3)}, "dt_bias must be"),
        ({"initial_states": torch.randn(2, 4, 3, 4)}, "initial_states must be"),
    ]
    for change, message in bad:
        for fn in (ssd_chunk_scan, ssd_ref):
            with pytest.raises(ValueError, match=message):
                fn(**{**args, **change})
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        ssd_chunk_scan(**args, chunk_size=0)


def test_reference_is_the_recurrence_written_out() -> None:
    """The reference against the equations with scalar loops (no shared code), on a tiny case."""
    args = make_args(b=1, length=4, h=2, p=2, g=1, n=2, D="head", initial=False)
    x, dt_raw, A, B, C, D, bias = (args[k].detach() for k in ("x", "dt", "A", "B", "C", "D", "dt_bias"))
    dt = F.softplus(dt_raw + bias)
    want = torch.zeros_like(x)
    for head in range(2):
        for ch in range(2):
            state = [0.0, 0.0]
            for t in range(4):
                decay = math.exp(float(dt[0, t, head] * A[head]))
                for s in range(2):
                    state[s] = decay * state[s] + float(dt[0, t, head] * x[0, t, head, ch] * B[0, t, 0, s])
                y = sum(state[s] * float(C[0, t, 0, s]) for s in range(2))
                want[0, t, head, ch] = y + float(D[head] * x[0, t, head, ch])
    torch.testing.assert_close(ssd_ref(**args, dt_softplus=True).detach(), want)
