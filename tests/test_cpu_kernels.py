"""mswelu's compiled CPU kernels (mswelu/ops/csrc/cpu_kernels.cpp) against their PyTorch references,
finite differences, and the fallback where they cannot be built."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from test_selective_scan import leaves, make_args, naive_scan

from mswelu.ops import cpu_kernels
from mswelu.ops.causal_conv import causal_conv1d
from mswelu.ops.selective_scan import selective_scan
from mswelu.ops.swelu import ZERO_EPS, resolve_impl, swelu

pytestmark = pytest.mark.skipif(
    not cpu_kernels.available()[0], reason="no C++ toolchain to build the kernels"
)


def scan_both(args, **kw):
    """(kernel, torch) results of the same scan: (out, last, gradients of every input)."""
    results = []
    for impl in ("cpu", "torch"):
        out, last = selective_scan(**args, return_last_state=True, impl=impl, **kw)
        grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
        results.append((out, last, torch.autograd.grad(out, leaves(args), grad_out)))
    return results


# Channel counts around the vector width (16 fp32 lanes with AVX-512, 8 with AVX2): partial vectors.
@pytest.mark.parametrize("d", [1, 5, 16, 21, 37])
@pytest.mark.parametrize("options", ["all", "bare", "gate-only"])
def test_scan_kernel_matches_naive_loop_and_torch_path(d, options):
    full = options == "all"
    args = make_args(b=3, d=d, length=23, n=4, z=options != "bare", D=full, bias=full)
    (out, last, grads), (t_out, t_last, t_grads) = scan_both(args, delta_softplus=full, chunk_size=8)
    naive_out, naive_last = naive_scan(*(args[k] for k in ("u", "delta", "A", "B", "C", "D", "z")),
                                       args["delta_bias"], full)  # fmt: skip
    # fp32 recurrences summed in different orders: differences scale with the largest value.
    torch.testing.assert_close(out.double(), naive_out, rtol=1e-4, atol=1e-5 * naive_out.abs().max().item())
    torch.testing.assert_close(
        last.double(), naive_last, rtol=1e-4, atol=1e-5 * naive_last.abs().max().item()
    )
    torch.testing.assert_close(out, t_out, rtol=1e-5, atol=1e-5 * t_out.abs().max().item())
    for g, tg in zip(grads, t_grads, strict=True):
        torch.testing.assert_close(g, tg, rtol=1e-4, atol=1e-5 * tg.abs().max().item())


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_scan_kernel_gradcheck_float64(chunk):
    args = make_args(b=2, d=19, length=9, n=3, dtype=torch.float64)

    def f(*xs):
        kw = dict(zip([k for k, v in args.items() if v is not None], xs, strict=True))
        return selective_scan(**kw, delta_softplus=True, chunk_size=chunk, impl="cpu")

    assert torch.autograd.gradcheck(f, leaves(args))


def test_scan_kernel_takes_strided_B_C_and_low_precision_inputs():
    """B and C as slices of the mixer's x_proj output (not contiguous), and bf16 inputs under autocast:
    computed in fp32, the same numbers as the PyTorch path."""
    args = make_args(b=2, d=24, length=13, n=4, z=False)
    wide = torch.randn(2, 13, 11)
    args["B"] = wide[..., 1:5].transpose(1, 2).requires_grad_()
    args["C"] = wide[..., 6:10].transpose(1, 2).requires_grad_()
    args = {
        k: (v.detach().clone().requires_grad_() if v is not None and not v.is_leaf else v)
        for k, v in args.items()
    }
    (out, last, grads), (t_out, _, t_grads) = scan_both(args, delta_softplus=True)
    torch.testing.assert_close(out, t_out, rtol=1e-5, atol=1e-6)
    for g, tg in zip(grads, t_grads, strict=True):
        torch.testing.assert_close(g, tg, rtol=1e-4, atol=1e-5)
    low = {k: (None if v is None else v.detach().bfloat16().requires_grad_()) for k, v in args.items()}
    (out, last, grads), (t_out, t_last, t_grads) = scan_both(low, delta_softplus=True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    torch.testing.assert_close(out, t_out, rtol=1e-2, atol=1e-2)
    for g, tg in zip(grads, t_grads, strict=True):
        assert g.dtype == tg.dtype
        torch.testing.assert_close(g.float(), tg.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("gate", [False, True])
def test_scan_kernel_bf16_io_equals_fp32_kernel_rounded(gate):
    """u and delta in bf16 (the mixer under autocast; A, B, C, D in fp32) are read by the kernel as they
    are: y, du and ddelta equal the fp32 kernel's on the same values rounded to bf16, every other gradient
    is the fp32 kernel's exactly (channel counts around the vector width exercise the tails)."""
    for d in (16, 37):
        args = make_args(b=2, d=d, length=19, n=4, z=gate)
        low = {
            k: (
                None
                if v is None
                else (v.detach().bfloat16() if k in ("u", "delta") else v.detach()).requires_grad_()
            )
            for k, v in args.items()
        }
        up = {k: (None if v is None else v.detach().float().requires_grad_()) for k, v in low.items()}
        grad_out = torch.linspace(-1, 1, 2 * d * 19).reshape(2, d, 19).bfloat16()
        results = []
        for a in (low, up):
            out = selective_scan(**a, delta_softplus=True, impl="cpu", chunk_size=8)
            results.append((out, torch.autograd.grad(out, leaves(a), grad_out.to(out.dtype))))
        (out, grads), (f_out, f_grads) = results
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, f_out.bfloat16())
        for name, g, fg in zip([k for k, v in low.items() if v is not None], grads, f_grads, strict=True):
            assert g.dtype == low[name].dtype, name
            assert torch.equal(g, fg.to(g.dtype)), name


def test_scan_kernel_is_deterministic_and_thread_count_changes_only_rounding():
    args = make_args(b=4, d=40, length=30, n=5)
    first = scan_both(args, delta_softplus=True)[0]
    again = scan_both(args, delta_softplus=True)[0]
    for a, b in zip([first[0], *first[2]], [again[0], *again[2]], strict=True):
        assert torch.equal(a, b)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = scan_both(args, delta_softplus=True)[0]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip([first[0], *first[2]], [single[0], *single[2]], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_scan_kernel_bad_arguments():
    args = make_args(length=4)
    with pytest.raises(ValueError, match="impl='cpu' needs CPU tensors and input-dependent"):
        selective_scan(
            args["u"], args["delta"], args["A"], torch.randn(args["A"].shape), args["C"], impl="cpu"
        )
    with pytest.raises(ValueError, match="unknown impl 'fast'"):
        selective_scan(**args, impl="fast")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k", [0.05, 0.6, 1.0, 2.5])
def test_swelu_kernel_matches_closed_form(dtype, k):
    special = [0.0, -0.0, 1e-30, 1e-8, -ZERO_EPS / 2, 1e30, float("inf"), -float("inf")]
    z = torch.cat([torch.tensor(special), torch.randn(997) * 3]).to(dtype)
    g = torch.randn(z.shape).to(dtype)
    results = []
    for impl in ("cpu", "torch"):
        zr = z.clone().requires_grad_()
        kt = torch.tensor(k, dtype=torch.promote_types(dtype, torch.float32), requires_grad=True)
        lt = torch.tensor(1.3, dtype=kt.dtype, requires_grad=True)
        y = swelu(zr, kt, lt, impl=impl)
        y.backward(g)
        results.append((y, zr.grad, kt.grad, lt.grad))
    exact = dtype == torch.float64
    for ours, ref in zip(*results, strict=True):
        assert ours.dtype == ref.dtype and torch.isfinite(ours).all()
        tol = (
            {"rtol": 1e-12, "atol": 1e-12}
            if exact
            else {"rtol": 1e-2 if dtype.itemsize == 2 else 1e-5, "atol": 1e-5}
        )
        torch.testing.assert_close(ours.double(), ref.double(), **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_swelu_kernel_propagates_nan_like_the_reference(dtype):
    """Half-precision z takes a faster exp that does not carry NaN by itself: a NaN input still gives NaN
    in y, dz, dk and dlam, and the other elements are untouched, as in the PyTorch code."""
    z = torch.tensor([float("nan"), 0.7, -1.9, 0.0, float("inf")] + [0.3] * 20).to(dtype)
    results = []
    for impl in ("cpu", "torch"):
        zr = z.clone().requires_grad_()
        k, lam = torch.tensor(1.3, requires_grad=True), torch.tensor(1.1, requires_grad=True)
        y = swelu(zr, k, lam, impl=impl)
        y.sum().backward()
        results.append((y, zr.grad, k.grad, lam.grad))
    for ours, ref in zip(*results, strict=True):
        assert torch.equal(torch.isnan(ours), torch.isnan(ref))
    assert torch.isnan(results[0][0][0]) and torch.isnan(results[0][1][0]) and torch.isnan(results[0][2])
    torch.testing.assert_close(results[0][0][1:], results[1][0][1:], rtol=1e-2, atol=1e-5)


def test_swelu_kernel_gradcheck_float64_with_zeros():
    z = torch.tensor([0.0, 1e-30, -0.37, 0.8, -1.5, 2.5, 4.0], dtype=torch.float64, requires_grad=True)
    k = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: swelu(*a, impl="cpu"), (z, k, lam), eps=ZERO_EPS, atol=1e-5, rtol=1e-3
    )


def test_swelu_auto_and_forced_impl():
    z = torch.randn(4, 3)
    assert resolve_impl("auto", z, torch.tensor(1.0), None) == "cpu"
    assert resolve_impl("auto", z, torch.ones(3), None) == "torch"  # per-channel k: the closed form
    with pytest.raises(ValueError, match="impl='cpu' takes CPU tensors with scalar k"):
        swelu(z, torch.ones(3), impl="cpu")


def test_model_training_step_equals_pytorch_path(monkeypatch):
    """A tiny MambaSWELU model: the loss and every parameter's gradient with the kernels equal the pure
    PyTorch path's."""
    from mswelu import MsweluConfig, MsweluForCausalLM

    torch.manual_seed(0)
    model = MsweluForCausalLM(MsweluConfig.from_preset("tiny", vocab_size=97, mixer_k_sharing="separate"))
    ids = torch.randint(0, 97, (3, 20))
    runs = []
    for flag in ("1", "0"):
        monkeypatch.setenv(cpu_kernels.ENV_VAR, flag)
        model.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        runs.append(
            (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    (loss, grads), (t_loss, t_grads) = runs
    torch.testing.assert_close(loss, t_loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == t_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(
            g, t_grads[name], rtol=1e-4, atol=1e-6 + 1e-4 * t_grads[name].abs().max().item(), msg=name
        )


def test_unbuildable_kernels_fall_back_with_one_warning(monkeypatch):
    """No compiler: auto runs the PyTorch code (same numbers) after one RuntimeWarning that says why;
    forcing the kernel raises with the reason; MSWELU_CPU_KERNELS=0 falls back silently."""
    monkeypatch.setattr(cpu_kernels, "_build", lambda: (None, "CalledProcessError: c++ not found"))
    cpu_kernels._warn_fallback_once.cache_clear()
    args = make_args(length=6)
    try:
        with pytest.warns(RuntimeWarning, match="could not be built .*c\\+\\+ not found"):
            out = selective_scan(**args, delta_softplus=True)
            y = swelu(args["u"], 0.7)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per process
            selective_scan(**args, delta_softplus=True)
        with pytest.raises(RuntimeError, match="not available: CalledProcessError: c\\+\\+ not found"):
            selective_scan(**args, impl="cpu")
        monkeypatch.setenv(cpu_kernels.ENV_VAR, "0")
        cpu_kernels._warn_fallback_once.cache_clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            selective_scan(**args, delta_softplus=True)
    finally:
        cpu_kernels._warn_fallback_once.cache_clear()
    torch.testing.assert_close(out, selective_scan(**args, delta_softplus=True, impl="torch"))
    torch.testing.assert_close(y, swelu(args["u"], 0.7, impl="torch"))


def test_describe_command(capsys):
    assert cpu_kernels.main() == 0
    info = json.loads(capsys.readouterr().out)
    assert info["available"] is True and info["fp32_lanes"] in (4, 8, 16)


@pytest.mark.parametrize("layout", ["slice of wider rows", "sliced length", "transposed", "0-dim"])
def test_swelu_kernel_reads_strided_layouts(layout):
    """The mixer hands SWELU views: half of in_proj's output (rows with a stride of their own) and the
    conv output cut to length. The kernel reads them in place; a layout it cannot read is copied first.
    Values and all gradients equal the PyTorch path's on the same view."""
    base = torch.randn(3, 7, 10, dtype=torch.float64)
    view = {
        "slice of wider rows": lambda t: t[..., 5:],
        "sliced length": lambda t: t[..., :6],
        "transposed": lambda t: t.transpose(1, 2),
        "0-dim": lambda t: t[0, 0, 0],
    }[layout]
    results = []
    for impl in ("cpu", "torch"):
        b = base.clone().requires_grad_()
        k = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
        lam = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
        z = view(b)
        y = swelu(z, k, lam, impl=impl)
        grad = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        results.append((y, *torch.autograd.grad(y, (b, k, lam), grad)))
    for ours, ref in zip(*results, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_a_stale_build_lock_is_removed_and_a_fresh_one_waited_for(tmp_path, monkeypatch):
    """A build killed half-way leaves torch's lock file behind; torch would wait for it forever."""
    import os
    import time

    import torch.utils.cpp_extension as ext

    monkeypatch.setattr(ext, "_get_build_directory", lambda name, verbose=False: str(tmp_path))
    monkeypatch.setattr(ext, "FileBaton", object, raising=False)  # the builder of torch <= 2.14
    lock = tmp_path / "lock"
    lock.touch()
    old = time.time() - cpu_kernels.STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    cpu_kernels._clear_stale_lock("x")
    assert not lock.exists()
    lock.touch()  # fresh: waited for, and removed only once older than the limit
    monkeypatch.setattr(cpu_kernels, "STALE_LOCK_SECONDS", 2)
    start = time.time()
    cpu_kernels._clear_stale_lock("x")
    assert not lock.exists() and 1.0 <= time.time() - start < 10


def test_an_os_held_build_lock_is_left_to_torch(tmp_path, monkeypatch):
    """torch >= 2.15 locks the build through the OS (``filelock``) and keeps the lock file after a build: a
    load must neither wait for that file to go nor remove it."""
    import time

    import torch.utils.cpp_extension as ext

    monkeypatch.setattr(ext, "_get_build_directory", lambda name, verbose=False: str(tmp_path))
    monkeypatch.delattr(ext, "FileBaton", raising=False)
    lock = tmp_path / "lock"
    lock.touch()
    start = time.time()
    cpu_kernels._clear_stale_lock("x")
    assert lock.exists() and time.time() - start < 0.5


# ------------------------------------------------------------------------------- causal conv1d


def conv_inputs(b, d, length, width, dtype=torch.float32, seed=0):
    """x as the mixer has it: a transposed view of half of a (b, length, 2d) tensor; weight, bias."""
    g = torch.Generator().manual_seed(seed)
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    wide = torch.randn(b, length, 2 * d, generator=g, dtype=torch.float64).to(dtype)
    x = wide[..., :d].transpose(1, 2)
    w = torch.randn(d, width, generator=g, dtype=torch.float64).to(ct)
    bias = torch.randn(d, generator=g, dtype=torch.float64).to(ct)
    return x, w, bias


def conv_run(x, w, bias, impl, grad_dtype=None):
    """(y, dx, dw, dbias) for one impl, with a fixed output gradient."""
    leaves_ = [t.detach().clone().requires_grad_() for t in (x, w, bias)]
    y = causal_conv1d(*leaves_, impl=impl)
    g = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape).to(grad_dtype or y.dtype)
    g = g.to(y.dtype)  # values representable in grad_dtype
    return (y, *torch.autograd.grad(y, leaves_, g))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("d", "length", "width"),
    [(37, 19, 4), (16, 3, 4), (5, 11, 2), (64, 9, 1), (3, 6, 8), (20, 150, 4), (17, 130, 3)],
)
def test_conv_kernel_matches_conv1d(dtype, d, length, width):
    """Values and every gradient equal F.conv1d's (channel counts around the vector width, lengths shorter
    than the kernel and across the kernel's blocks of 64 time steps, widths 1 to the kernel's limit); y
    comes back channels-last."""
    x, w, bias = conv_inputs(2, d, length, width, dtype)
    ours, ref = conv_run(x, w, bias, "cpu"), conv_run(x, w, bias, "torch")
    assert ours[0].shape == (2, d, length) and ours[0].transpose(1, 2).is_contiguous()
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    for a, b in zip(ours, ref, strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)


def test_conv_kernel_gradcheck_float64():
    x, w, bias = conv_inputs(2, 5, 7, 4, torch.float64)
    inputs = [t.detach().clone().requires_grad_() for t in (x.contiguous(), w, bias)]
    assert torch.autograd.gradcheck(lambda *a: causal_conv1d(*a, impl="cpu"), inputs)


def test_conv_kernel_bf16_equals_fp32_kernel_rounded():
    """bf16 x (the mixer under autocast) is read as it is: y and dx are the fp32 kernel's on the same
    values, rounded to bf16; dw and dbias (fp32, like the weights) are the fp32 kernel's exactly."""
    x, w, bias = conv_inputs(3, 37, 21, 4, torch.bfloat16)
    ours = conv_run(x, w, bias, "cpu")
    up = conv_run(x.float(), w, bias, "cpu", grad_dtype=torch.bfloat16)
    assert [t.dtype for t in ours] == [torch.bfloat16, torch.bfloat16, torch.float32, torch.float32]
    for a, b in zip(ours, up, strict=True):
        assert torch.equal(a, b.to(a.dtype))
    # and F.conv1d under autocast (which also rounds the weight to bf16) agrees to bf16 rounding
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = conv_run(x, w, bias, "torch")
    torch.testing.assert_close(ours[0].float(), ref[0].float(), rtol=2e-2, atol=3e-2)


def test_conv_kernel_thread_count_changes_only_rounding():
    x, w, bias = conv_inputs(4, 40, 30, 4)
    first = conv_run(x, w, bias, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(first, conv_run(x, w, bias, "cpu"), strict=True))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = conv_run(x, w, bias, "cpu")
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(first, single, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_conv_impl_choice_and_bad_arguments():
    x, w, bias = conv_inputs(1, 4, 5, 9)  # wider than the kernel's limit: auto takes F.conv1d
    torch.testing.assert_close(causal_conv1d(x, w, bias), causal_conv1d(x, w, bias, impl="torch"))
    with pytest.raises(ValueError, match="width of at most 8"):
        causal_conv1d(x, w, bias, impl="cpu")
    with pytest.raises(ValueError, match="unknown impl"):
        causal_conv1d(x, w[:, :4], bias, impl="fast")
    with pytest.raises(ValueError, match=r"weight \(channels, width\)"):
        causal_conv1d(x, w[:3, :4], bias)


def test_the_build_folder_is_keyed_by_the_source(tmp_path, monkeypatch) -> None:
    """Two checkouts whose kernels differ build into two folders; the same source shares one."""
    name = cpu_kernels._name("AVX2")
    assert name == cpu_kernels._name("AVX2") and name.startswith("mswelu_cpu_avx2_")
    edited = tmp_path / "cpu_kernels.cpp"
    edited.write_bytes(cpu_kernels.SOURCE.read_bytes() + b"\n// another checkout\n")
    monkeypatch.setattr(cpu_kernels, "SOURCE", edited)
    assert cpu_kernels._name("AVX2") != name


def test_a_build_whose_lock_another_process_removed_loads_again(monkeypatch):
    """A process paused past the stale-lock limit finds its lock removed by another (torch's release then
    raises FileNotFoundError after the build): it loads the built module instead of falling back to PyTorch
    for its whole life; any other missing file is a failed build."""
    import torch.utils.cpp_extension as ext

    calls = []

    def load(name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 1:
            raise FileNotFoundError(2, "No such file or directory", f"/cache/{name}/lock")
        return "module"

    monkeypatch.setattr(ext, "load", load)
    monkeypatch.setattr(cpu_kernels, "_clear_stale_lock", lambda name: None)
    assert cpu_kernels._build.__wrapped__() == ("module", "") and len(calls) == 2

    def missing_header(name, *args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "/usr/include/vec.h")

    monkeypatch.setattr(ext, "load", missing_header)
    module, why = cpu_kernels._build.__wrapped__()
    assert module is None and why.startswith("FileNotFoundError")
