"""The CUDA kernel path of the mixer (mswelu.ops.mamba_kernels), run on CPU.

The four kernel entry points are bound to mamba-ssm's and causal-conv1d's own pure-PyTorch
reference functions (same signatures; see tests/kernel_refs.py), wrapped in the real kernels'
input checks. Outputs and all gradients must equal the pure-PyTorch mixer within the upstream
kernel-vs-reference tolerances (BRIEF 3): fp32 rtol 6e-4 / atol 2e-3, gradients 5-10x looser.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from kernel_refs import bind_refs, decode_on_kernels, refs_installed, upstream_mamba
from torch import nn

from mswelu.modules.activations import ACTIVATIONS, make_activation
from mswelu.modules.mamba_mixer import MambaMixer
from mswelu.modules.swelu import SWELU
from mswelu.ops import mamba_kernels

D_MODEL, D_STATE, BATCH, SEQLEN = 16, 8, 2, 12
FP32 = {"rtol": 6e-4, "atol": 2e-3}
FP32_GRAD = {"rtol": 3e-3, "atol": 1e-2}
BF16 = {"rtol": 3e-2, "atol": 5e-2}
BF16_GRAD = {"rtol": 1e-1, "atol": 1e-1}

KINDS = ("silu", "swelu-shared", "swelu-separate")
HAVE_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture
def refs(monkeypatch: pytest.MonkeyPatch):
    return bind_refs(monkeypatch)


def make_mixer(kind: str, **kwargs) -> MambaMixer:
    """A small mixer on the torch backend with non-default parameters (so that a dropped bias, a
    swapped activation or a wrong D cannot go unnoticed)."""
    torch.manual_seed(1)
    if kind == "silu":
        acts = {}
    elif kind == "swelu-shared":
        shared = SWELU(k_init=0.8)
        acts = {"act_conv": shared, "act_gate": shared}
    elif kind == "swelu-separate":
        acts = {
            "act_conv": SWELU(k_init=0.7),
            "act_gate": SWELU(k_init=1.4, learnable_lambda=True, lambda_init=1.3),
        }
    else:
        raise ValueError(kind)
    mixer = MambaMixer(D_MODEL, d_state=D_STATE, backend="torch", **acts, **kwargs)
    with torch.no_grad():
        mixer.A_log.add_(0.3 * torch.randn_like(mixer.A_log))
        mixer.D.uniform_(0.5, 1.5)
        mixer.dt_proj.bias.add_(2.0)  # larger steps: the state matters more
        for p in (mixer.in_proj.bias, mixer.out_proj.bias, mixer.conv1d.bias):
            if p is not None:
                p.normal_(0, 0.2)
    return mixer


def run(mixer: nn.Module, forward, x: torch.Tensor, grad_out: torch.Tensor):
    """Output and the gradients of <out, grad_out> w.r.t. the input and every trainable parameter."""
    mixer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = forward(x)
    out.backward(grad_out.to(out.dtype))
    grads = {"input": x.grad}
    grads.update({name: p.grad for name, p in mixer.named_parameters() if p.requires_grad})
    missing = [name for name, g in grads.items() if g is None]
    assert not missing, f"no gradient for {missing}"
    return out.detach(), grads


def assert_close_scaled(got: torch.Tensor, want: torch.Tensor, tol: dict, what: str = "") -> None:
    """assert_close after dividing both by max|want|: the upstream tolerances are for unit-scale
    tensors, and an absolute 2e-3 on outputs of size 0.03 would hide real mistakes."""
    scale = want.detach().float().abs().max().clamp_min(1e-12)
    torch.testing.assert_close(
        got.detach().float() / scale, want.detach().float() / scale, **tol, msg=lambda m: f"{what}: {m}"
    )


def assert_grads_close(got: dict, want: dict, tol: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert_close_scaled(got[name], want[name], tol, what=f"gradient of {name}")


def inputs(dtype=torch.float32):
    torch.manual_seed(2)
    return torch.randn(BATCH, SEQLEN, D_MODEL, dtype=dtype), torch.randn(BATCH, SEQLEN, D_MODEL, dtype=dtype)


@pytest.mark.parametrize(
    ("kind", "fuse_silu"),
    [("silu", True), ("silu", False), ("swelu-shared", True), ("swelu-separate", True)],
    ids=["silu-fused", "silu-separate-module", "swelu-shared-k", "swelu-separate-k"],
)
def test_fp32_outputs_and_gradients_match_torch_path(refs, kind: str, fuse_silu: bool) -> None:
    mixer = make_mixer(kind)
    x, g = inputs()
    want_out, want = run(mixer, mixer, x, g)
    got_out, got = run(mixer, lambda h: mixer.forward_cuda(h, fuse_silu=fuse_silu), x, g)
    assert_close_scaled(got_out, want_out, FP32, "output")
    assert_grads_close(got, want, FP32_GRAD)
    if kind != "silu":
        assert sum(name.endswith("k_raw") for name in got) == (1 if kind == "swelu-shared" else 2)


def test_projection_biases_and_no_conv_bias(refs) -> None:
    mixer = make_mixer("swelu-separate", bias=True, conv_bias=False)
    x, g = inputs()
    want_out, want = run(mixer, mixer, x, g)
    got_out, got = run(mixer, lambda h: mixer.forward_cuda(h), x, g)
    assert_close_scaled(got_out, want_out, FP32, "output")
    assert_grads_close(got, want, FP32_GRAD)


def test_silu_matches_upstream_mamba_module(refs, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same weights in mamba-ssm's own ``Mamba`` (unfused path on the references): same forward and
    same decoding steps; this pins parameter names, shapes and layout to upstream's."""
    mixer = make_mixer("silu")
    upstream = upstream_mamba(monkeypatch, d_model=D_MODEL, d_state=D_STATE)
    upstream.load_state_dict(mixer.state_dict(), strict=False)
    assert set(upstream.state_dict()) == {k for k in mixer.state_dict() if not k.startswith("act_")}
    x, _ = inputs()
    with torch.no_grad():
        assert_close_scaled(mixer.forward_cuda(x), upstream(x), FP32)
        ours, conv_state, ssm_state = decode_on_kernels(mixer, x[:, :4])
        up_conv, up_ssm = upstream.allocate_inference_cache(BATCH, SEQLEN)
        for t in range(4):
            theirs, _, _ = upstream.step(x[:, t : t + 1], up_conv, up_ssm)
            assert_close_scaled(ours[:, t : t + 1], theirs, FP32)
        assert_close_scaled(ssm_state, up_ssm.float(), FP32)


@pytest.mark.parametrize("kind", KINDS)
def test_decoding_steps_match_full_forward(refs, kind: str) -> None:
    mixer = make_mixer(kind)
    x, _ = inputs()
    prefix = 5
    with torch.no_grad():
        full = mixer(x)
        # prefill on the kernel path, then one token at a time through the update kernels
        out, conv_state, ssm_state = mixer.forward_cuda(return_states=True, hidden_states=x[:, :prefix])
        steps = [mixer.step_cuda(x[:, t : t + 1], conv_state, ssm_state) for t in range(prefix, SEQLEN)]
        assert_close_scaled(torch.cat([out, *steps], dim=1), full, FP32)
        # the states after the last token equal the torch path's prefill over the whole sequence
        _, want_conv, want_ssm = mixer.forward_with_states(x)
        assert_close_scaled(conv_state, want_conv, FP32)
        assert_close_scaled(ssm_state, want_ssm, FP32)
        # decoding from the first token on, every later token through the step kernels
        assert_close_scaled(decode_on_kernels(mixer, x)[0], full, FP32)


def test_prefill_shorter_than_conv_width(refs) -> None:
    mixer = make_mixer("swelu-separate")
    x, _ = inputs()
    with torch.no_grad():
        out, conv_state, ssm_state = mixer.forward_cuda(return_states=True, hidden_states=x[:, :2])
        want_out, want_conv, want_ssm = mixer.forward_with_states(x[:, :2])
    assert conv_state.shape == (BATCH, mixer.d_inner, mixer.d_conv) and ssm_state.dtype == torch.float32
    assert_close_scaled(out, want_out, FP32)
    assert_close_scaled(conv_state, want_conv, FP32)
    assert_close_scaled(ssm_state, want_ssm, FP32)


@pytest.mark.parametrize("kind", ["silu", "swelu-separate"])
def test_bf16_autocast_matches_torch_path(refs, kind: str) -> None:
    """bf16 autocast (the training set-up): the strict references check that u, delta, B, C (and z)
    reach the scan in one dtype with A, D, delta_bias in fp32."""
    mixer = make_mixer(kind)
    x, g = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want_out, want = run(mixer, mixer, x, g)
        got_out, got = run(mixer, lambda h: mixer.forward_cuda(h), x, g)
    assert got_out.dtype == want_out.dtype == torch.bfloat16
    assert_close_scaled(got_out, want_out, BF16, "output")
    assert_grads_close(got, want, BF16_GRAD)


def test_bf16_parameters_forward_and_step(refs) -> None:
    mixer = make_mixer("swelu-separate")
    x, _ = inputs()
    with torch.no_grad():
        want = mixer(x)
        mixer = mixer.to(torch.bfloat16)
        xb = x.to(torch.bfloat16)
        got = mixer.forward_cuda(xb)
        steps = decode_on_kernels(mixer, xb)[0]
    assert got.dtype == steps.dtype == torch.bfloat16
    assert_close_scaled(got.float(), want, BF16)
    assert_close_scaled(steps.float(), want, BF16)


class _UpcastingSWELU(SWELU):
    """A SWELU whose output comes back in fp32 (as some activations do under autocast)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z.float())


def test_activation_that_upcasts_is_cast_back(refs) -> None:
    mixer = make_mixer("silu")
    mixer.act_conv, mixer.act_gate = _UpcastingSWELU(k_init=0.9), _UpcastingSWELU(k_init=1.2)
    x, g = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = run(mixer, lambda h: mixer.forward_cuda(h), x, g)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert all(torch.isfinite(v).all() for v in grads.values())


# ----------------------------------------------------------------------------- bad input


def test_float64_is_rejected_naming_the_dtype(refs) -> None:
    mixer = make_mixer("silu").double()
    with pytest.raises(ValueError, match="float64"):
        mixer.forward_cuda(torch.randn(1, 4, D_MODEL, dtype=torch.float64))


def test_mixed_dtypes_without_autocast_are_rejected(refs) -> None:
    mixer = make_mixer("silu")
    with pytest.raises(ValueError, match="autocast"):
        mixer.forward_cuda(torch.randn(1, 4, D_MODEL, dtype=torch.bfloat16))


@pytest.mark.parametrize("slot", ["act_conv", "act_gate"])
def test_unsupported_activation_is_rejected_naming_it(refs, slot: str) -> None:
    """The mixer sends only registered elementwise activations down the kernel path."""
    mixer = make_mixer("silu")
    setattr(mixer, slot, nn.Softmax(dim=-1))  # not elementwise: it would mix the (B, D, L) layout's L
    with pytest.raises(ValueError, match=f"{slot} is Softmax"):
        mixer.forward_cuda(torch.randn(1, 4, D_MODEL))


@pytest.mark.parametrize("slot", ["act_conv", "act_gate"])
@pytest.mark.parametrize("name", [n for n, spec in ACTIVATIONS.items() if spec.elementwise])
def test_every_registered_activation_runs_on_the_kernel_path(refs, slot: str, name: str) -> None:
    """Each elementwise activation of the registry (SWELU, Swish-beta, GELU, ...) goes through the kernel
    path and matches PyTorch, values and every gradient (its shape parameters included)."""
    mixer = make_mixer("silu")
    init = {p.name: p.init * 0.8 for p in ACTIVATIONS[name].params}  # away from SiLU-like defaults
    setattr(mixer, slot, make_activation(name, {n: {"init": v} for n, v in init.items()}))
    x, g = inputs()
    want_out, want = run(mixer, mixer, x, g)
    got_out, got = run(mixer, lambda h: mixer.forward_cuda(h, fuse_silu=False), x, g)
    assert_close_scaled(got_out, want_out, FP32, "output")
    assert_grads_close(got, want, FP32_GRAD)


def test_unsupported_shapes_are_rejected(refs) -> None:
    with pytest.raises(ValueError, match="d_conv between 2 and 4"):
        MambaMixer(D_MODEL, d_conv=5).forward_cuda(torch.randn(1, 4, D_MODEL))
    mixer = make_mixer("silu")
    with pytest.raises(ValueError, match="d_model=16"):
        mixer.forward_cuda(torch.randn(1, 4, D_MODEL + 1))
    _, conv_state, ssm_state = mixer.forward_cuda(torch.randn(1, 3, D_MODEL), return_states=True)
    with pytest.raises(ValueError, match="one token"):
        mixer.step_cuda(torch.randn(1, 2, D_MODEL), conv_state, ssm_state)
    with pytest.raises(ValueError, match="ssm_state has shape"):
        mixer.step_cuda(torch.randn(1, 1, D_MODEL), conv_state, ssm_state[..., :-1])


def test_missing_kernels_give_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing bound and no compiled kernels (a CPU machine): the error names the missing kernels."""
    if torch.cuda.is_available():
        pytest.skip("a GPU machine may have the real kernels")
    for name in ("selective_scan_fn", "causal_conv1d_fn", "causal_conv1d_update", "selective_state_update"):
        monkeypatch.setattr(mamba_kernels, name, None)
    with pytest.raises(RuntimeError, match="selective_scan_cuda.*causal_conv1d_cuda|causal_conv1d_cuda"):
        make_mixer("silu").forward_cuda(torch.randn(1, 4, D_MODEL))


def test_fused_silu_matches_separate_silu_exactly_enough(refs) -> None:
    """The kernels' fused SiLU options compute the same function as a separate nn.SiLU."""
    mixer = make_mixer("silu")
    x, _ = inputs()
    with torch.no_grad():
        fused = mixer.forward_cuda(x, fuse_silu=True)
        separate = mixer.forward_cuda(x, fuse_silu=False)
    torch.testing.assert_close(fused, separate, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- real Triton kernels


@pytest.mark.skipif(not HAVE_TRITON, reason="optional dependency triton is not installed")
@pytest.mark.skipif(INTERPRETING, reason="this is the child run")
def test_triton_kernels_in_the_kernel_path_under_interpreter() -> None:
    """``TRITON_INTERPRET=1`` must be set before triton is imported: run the check in a child."""
    if not refs_installed():
        pytest.skip("upstream mamba-ssm / causal-conv1d packages are not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "interpreted"]
    result = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(__file__)
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    summary = [line for line in result.stdout.splitlines() if line.strip()][-1]
    assert "1 passed" in summary and "skipped" not in summary, summary


@pytest.mark.skipif(not (HAVE_TRITON and INTERPRETING), reason="runs in the TRITON_INTERPRET child")
def test_interpreted_triton_swelu_and_upstream_state_update_kernel(refs, monkeypatch) -> None:
    """The kernel path with two real Triton kernels instead of references: SWELU (``impl="triton"``,
    forward and backward) and mamba-ssm's own ``selective_state_update``."""
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update

    # the upstream wrapper enters torch.cuda.device(x.device.index), which is None for CPU tensors
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(mamba_kernels, "selective_state_update", selective_state_update)
    mixer = make_mixer("swelu-separate")
    for act in (mixer.act_conv, mixer.act_gate):
        act.impl = "triton"
    x, g = inputs()
    got_out, got = run(mixer, lambda h: mixer.forward_cuda(h), x, g)
    for act in (mixer.act_conv, mixer.act_gate):
        act.impl = "torch"
    want_out, want = run(mixer, mixer, x, g)
    assert_close_scaled(got_out, want_out, FP32, "output")
    assert_grads_close(got, want, FP32_GRAD)
    with torch.no_grad():
        assert_close_scaled(decode_on_kernels(mixer, x[:, :6])[0], want_out[:, :6], FP32)


# ----------------------------------------------------------------------------- real CUDA kernels


def _gpu_kernels() -> bool:
    return torch.cuda.is_available() and mamba_kernels.kernels_available()[0]


@pytest.mark.skipif(not _gpu_kernels(), reason="needs a GPU with the mamba-ssm / causal-conv1d kernels")
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("kind", KINDS)
def test_real_kernels_on_gpu_match_torch_path(kind: str, autocast: bool) -> None:
    """On a GPU session: the compiled kernels themselves, against our PyTorch path on the same GPU."""
    mixer = make_mixer(kind).cuda()
    x, g = (t.cuda() for t in inputs())
    tol, grad_tol = (BF16, BF16_GRAD) if autocast else (FP32, FP32_GRAD)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        want_out, want = run(mixer, mixer, x, g)
        got_out, got = run(mixer, lambda h: mixer.forward_cuda(h), x, g)
        with torch.no_grad():
            steps = decode_on_kernels(mixer, x)[0]
    assert_close_scaled(got_out, want_out, tol, "output")
    assert_grads_close(got, want, grad_tol)
    assert_close_scaled(steps, want_out, tol, "decoding")
