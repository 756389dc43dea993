"""The Mamba-2 GPU kernel path (mswelu.ops.mamba2_kernels), run on CPU.

Its five entry points are bound to the upstream packages' own pure-PyTorch references (see
tests/kernel_refs.py for how they import without the compiled modules), wrapped in the real kernels'
input checks: causal-conv1d's ``causal_conv1d_ref`` / ``causal_conv1d_update_ref``, mamba-ssm's
``ssd_minimal_discrete`` (the SSD paper's listing, wrapped to ``mamba_chunk_scan_combined``'s signature),
``selective_state_update_ref`` and ``rms_norm_ref``. Outputs and every gradient (the activations' k
included) must equal the PyTorch mixer within the upstream kernel-vs-reference tolerances (BRIEF 3).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from kernel_refs import decode_on_kernels, load_refs, refs_installed
from torch import nn

from mswelu.modules.mamba2_mixer import Mamba2Mixer
from mswelu.modules.swelu import SWELU
from mswelu.ops import backends, mamba2_kernels

D_MODEL, D_STATE, HEADDIM, CHUNK = 16, 8, 4, 8  # d_inner 32, 8 heads
BATCH, SEQLEN = 2, 13  # 13: not a multiple of the kernel's chunk size
FP32 = {"rtol": 6e-4, "atol": 2e-3}
FP32_GRAD = {"rtol": 3e-3, "atol": 1e-2}
BF16 = {"rtol": 3e-2, "atol": 5e-2}
BF16_GRAD = {"rtol": 1e-1, "atol": 1e-1}
KINDS = ("silu", "swelu-shared", "swelu-separate")
HAVE_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _strict_refs() -> SimpleNamespace:
    """The references behind the real kernels' input checks (causal_conv1d.cpp's TORCH_CHECKs, the
    asserts of mamba-ssm's Triton wrappers), which the references themselves do not make."""
    refs = load_refs()  # skips the test where the upstream packages are not installed
    from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete
    from mamba_ssm.ops.triton.layernorm_gated import rms_norm_ref

    def conv(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
             final_states_out=None, activation=None):  # fmt: skip
        assert x.dtype in _FLOATS and weight.dtype in _FLOATS and activation in (None, "silu")
        assert weight.dim() == 2 and 2 <= weight.shape[1] <= 4, tuple(weight.shape)
        assert bias is None or bias.dtype == weight.dtype, "bias dtype must equal weight dtype"
        assert x.stride(2) == 1 or x.stride(1) == 1, x.stride()
        if x.stride(2) != 1:  # channels-last
            assert x.shape[1] % 8 == 0 and x.stride(0) % 8 == 0 and x.stride(2) % 8 == 0, x.stride()
        assert seq_idx is None and initial_states is None and not return_final_states
        return refs.causal_conv1d_fn(x, weight, bias, activation=activation)

    def conv_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None):
        assert conv_state.dtype == x.dtype, (conv_state.dtype, x.dtype)
        assert 2 <= weight.shape[1] <= 4 and conv_state.shape[-1] >= weight.shape[1] - 1
        assert bias is None or bias.dtype == weight.dtype, "bias dtype must equal weight dtype"
        return refs.causal_conv1d_update(x, conv_state, weight, bias, activation, cache_seqlens)

    def chunk_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                   seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, math.inf),
                   return_final_states=False, return_varlen_states=False):  # fmt: skip
        b, length, h, p = x.shape
        g = B.shape[2]
        assert z is None and seq_idx is None and cu_seqlens is None and not return_varlen_states
        assert dt.shape == (b, length, h) and A.shape == (h,) and C.shape == B.shape and h % g == 0
        assert A.dtype == torch.float32 and (D is None or D.shape in ((h,), (h, p)))
        assert x.stride(-1) == 1 or x.stride(1) == 1, x.stride()
        dt = dt.float() + (0 if dt_bias is None else dt_bias.float())
        dt = (F.softplus(dt) if dt_softplus else dt).clamp(*dt_limit)
        pad = -length % chunk_size  # the listing takes whole chunks: pad with dt = 0 (no decay, no input)
        xp, dtp, Bp, Cp = (
            F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x.float(), dt, B.float(), C.float())
        )
        y, final = ssd_minimal_discrete(
            xp * dtp[..., None], A * dtp, Bp.repeat_interleave(h // g, 2), Cp.repeat_interleave(h // g, 2),
            chunk_size, None if initial_states is None else initial_states.float()[:, None],
        )  # fmt: skip
        y = y[:, :length]
        if D is not None:
            y = y + x.float() * (D[:, None] if D.dim() == 1 else D).float()
        return (y.to(x.dtype), final) if return_final_states else y.to(x.dtype)

    def state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
        assert state.dim() == 4 and A.dtype == torch.float32 and state.dtype == torch.float32
        if A.stride(-1) == 0 and A.stride(-2) == 0 and dt.stride(-1) == 0:  # the wrapper's tie_hdim check
            assert dt_bias is not None and dt_bias.stride(-1) == 0, "mamba-ssm 2.3.2 reads dt_bias's strides"
        return refs.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)

    def rmsnorm(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
        assert z is not None and z.shape == x.shape and not norm_before_gate and bias is None
        assert x.shape[-1] % group_size == 0
        return rms_norm_ref(x, weight, bias, z=z, eps=eps, group_size=group_size, norm_before_gate=False)

    return SimpleNamespace(
        causal_conv1d_fn=conv,
        causal_conv1d_update=conv_update,
        mamba_chunk_scan_combined=chunk_scan,
        selective_state_update=state_update,
        rmsnorm_fn=rmsnorm,
    )


@pytest.fixture
def refs(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    bound = _strict_refs()
    for name, fn in vars(bound).items():
        monkeypatch.setattr(mamba2_kernels, name, fn)
    return bound


def make_mixer(kind: str, n_groups: int = 2, **kwargs) -> Mamba2Mixer:
    """A small mixer on the torch backend with every parameter moved off its init."""
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
    mixer = Mamba2Mixer(
        D_MODEL, d_state=D_STATE, headdim=HEADDIM, n_groups=n_groups, chunk_size=CHUNK, backend="torch",
        **acts, **kwargs,
    )  # fmt: skip
    with torch.no_grad():
        mixer.A_log.add_(0.3 * torch.randn_like(mixer.A_log))
        mixer.D.uniform_(0.5, 1.5)
        mixer.dt_bias.add_(2.0)
        mixer.norm.weight.uniform_(0.5, 1.5)
        for p in (mixer.in_proj.bias, mixer.out_proj.bias, mixer.conv1d.bias):
            if p is not None:
                p.normal_(0, 0.2)
    return mixer


def inputs():
    torch.manual_seed(2)
    return torch.randn(BATCH, SEQLEN, D_MODEL), torch.randn(BATCH, SEQLEN, D_MODEL)


def run(mixer: nn.Module, forward, x: torch.Tensor, grad_out: torch.Tensor):
    """Output and the gradients of <out, grad_out> w.r.t. the input and every trainable parameter."""
    mixer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = forward(x)
    out.backward(grad_out.to(out.dtype))
    grads = {"input": x.grad, **{n: p.grad for n, p in mixer.named_parameters() if p.requires_grad}}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    return out.detach(), grads


def assert_close_scaled(got: torch.Tensor, want: torch.Tensor, tol: dict, what: str = "") -> None:
    """assert_close after dividing both by max|want| (the upstream tolerances are for unit-scale tensors)."""
    scale = want.detach().float().abs().max().clamp_min(1e-12)
    torch.testing.assert_close(
        got.detach().float() / scale, want.detach().float() / scale, **tol, msg=lambda m: f"{what}: {m}"
    )


def assert_grads_close(got: dict, want: dict, tol: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert_close_scaled(got[name], want[name], tol, f"gradient of {name}")


@pytest.mark.parametrize(
    ("kind", "fuse_silu", "n_groups"),
    [("silu", True, 1), ("silu", False, 2), ("swelu-shared", True, 2), ("swelu-separate", True, 1)],
    ids=["silu-fused", "silu-separate-module-2-groups", "swelu-shared-k-2-groups", "swelu-separate-k"],
)
def test_fp32_outputs_and_gradients_match_torch_path(refs, kind: str, fuse_silu: bool, n_groups: int) -> None:
    mixer = make_mixer(kind, n_groups=n_groups, bias=True)
    x, g = inputs()
    want_out, want = run(mixer, mixer, x, g)
    got_out, got = run(mixer, lambda h: mixer.forward_cuda(h, fuse_silu=fuse_silu), x, g)
    assert_close_scaled(got_out, want_out, FP32, "output")
    assert_grads_close(got, want, FP32_GRAD)
    if kind != "silu":
        assert sum(name.endswith("k_raw") for name in got) == (1 if kind == "swelu-shared" else 2)


@pytest.mark.parametrize(("d_state", "channels_last"), [(8, True), (6, False)])
def test_conv_input_layout_follows_the_kernel_rule(
    refs, monkeypatch, d_state: int, channels_last: bool
) -> None:
    """d_model 32, headdim 8: with d_state 8, conv_dim (80) and in_proj's row (152) are multiples of 8 and
    the conv reads xBC in place, channels-last; with d_state 6 (76, 148) it gets a contiguous copy. The
    strict reference checks causal_conv1d's layout rule either way."""
    torch.manual_seed(3)
    mixer = Mamba2Mixer(32, d_state=d_state, headdim=8, chunk_size=CHUNK, backend="torch")
    x, g = torch.randn(2, 9, 32), torch.randn(2, 9, 32)
    seen = []

    def conv(x, *args, **kwargs):
        seen.append(x.stride(1) == 1)
        return refs.causal_conv1d_fn(x, *args, **kwargs)

    monkeypatch.setattr(mamba2_kernels, "causal_conv1d_fn", conv)
    got_out, got = run(mixer, lambda h: mixer.forward_cuda(h), x, g)
    want_out, want = run(mixer, mixer, x, g)
    assert seen == [channels_last]
    assert_close_scaled(got_out, want_out, FP32, "output")
    assert_grads_close(got, want, FP32_GRAD)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dt_limit", [(0.0, math.inf), (0.05, 1.5)], ids=["no-limit", "limit"])
def test_decoding_steps_match_the_full_forward(refs, kind: str, dt_limit) -> None:
    mixer = make_mixer(kind, dt_limit=dt_limit)
    x, _ = inputs()
    prefix = 5
    with torch.no_grad():
        full = mixer(x)
        out, conv_state, ssm_state = mixer.forward_cuda(x[:, :prefix], return_states=True)
        steps = [mixer.step_cuda(x[:, t : t + 1], conv_state, ssm_state) for t in range(prefix, SEQLEN)]
        assert_close_scaled(torch.cat([out, *steps], dim=1), full, FP32)
        _, want_conv, want_ssm = mixer.forward_with_states(x)
        assert_close_scaled(conv_state, want_conv, FP32)
        assert_close_scaled(ssm_state, want_ssm, FP32)
        assert_close_scaled(decode_on_kernels(mixer, x)[0], full, FP32)


@pytest.mark.parametrize("kind", ["silu", "swelu-separate"])
def test_bf16_autocast_matches_torch_path(refs, kind: str) -> None:
    mixer = make_mixer(kind)
    x, g = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want_out, want = run(mixer, mixer, x, g)
        got_out, got = run(mixer, lambda h: mixer.forward_cuda(h), x, g)
    assert got_out.dtype == want_out.dtype == torch.bfloat16
    assert_close_scaled(got_out, want_out, BF16, "output")
    assert_grads_close(got, want, BF16_GRAD)


def test_fused_silu_matches_separate_silu(refs) -> None:
    mixer = make_mixer("silu")
    x, _ = inputs()
    with torch.no_grad():
        fused, separate = mixer.forward_cuda(x, fuse_silu=True), mixer.forward_cuda(x, fuse_silu=False)
    torch.testing.assert_close(fused, separate, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- bad input


def test_unsupported_settings_are_rejected_naming_them(refs) -> None:
    with pytest.raises(ValueError, match="float64"):
        make_mixer("silu").double().forward_cuda(torch.randn(1, 4, D_MODEL, dtype=torch.float64))
    with pytest.raises(ValueError, match="autocast"):
        make_mixer("silu").forward_cuda(torch.randn(1, 4, D_MODEL, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="d_conv between 2 and 4"):
        Mamba2Mixer(D_MODEL, headdim=HEADDIM, d_conv=5).forward_cuda(torch.randn(1, 4, D_MODEL))
    mixer = make_mixer("silu")
    mixer.act_gate = nn.Softmax(dim=-1)
    with pytest.raises(ValueError, match="act_gate is Softmax"):
        mixer.forward_cuda(torch.randn(1, 4, D_MODEL))
    mixer = make_mixer("silu")
    _, conv_state, ssm_state = mixer.forward_cuda(torch.randn(1, 3, D_MODEL), return_states=True)
    with pytest.raises(ValueError, match="one token"):
        mixer.step_cuda(torch.randn(1, 2, D_MODEL), conv_state, ssm_state)
    with pytest.raises(ValueError, match="ssm_state has shape"):
        mixer.step_cuda(torch.randn(1, 1, D_MODEL), conv_state, ssm_state[..., :-1])


def test_missing_kernels_give_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing bound and no working kernels (this CPU machine): the error names each missing entry point."""
    if torch.cuda.is_available():
        pytest.skip("a GPU machine may have the real kernels")
    for name in ("causal_conv1d_fn", "causal_conv1d_update", "mamba_chunk_scan_combined",
                 "selective_state_update", "rmsnorm_fn"):  # fmt: skip
        monkeypatch.setattr(mamba2_kernels, name, None)
    with pytest.raises(RuntimeError, match="Mamba-2 kernel path.*causal_conv1d_fn.*backend='torch'") as info:
        make_mixer("silu").forward_cuda(torch.randn(1, 4, D_MODEL))
    assert "causal_conv1d_cuda" in str(info.value) or "mamba_ssm" in str(info.value)


def test_package_kernels_refuse_cpu_tensors(refs, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry points that came from the packages need GPU tensors: a clear error, not a Triton crash."""
    monkeypatch.setattr(mamba2_kernels.KERNELS, "package_fns", {id(mamba2_kernels.mamba_chunk_scan_combined)})
    with pytest.raises(ValueError, match="need tensors on a GPU"):
        make_mixer("silu").forward_cuda(torch.randn(1, 4, D_MODEL))


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
def test_interpreted_upstream_state_update_and_gated_norm_kernels(refs, monkeypatch) -> None:
    """The kernel path with two of mamba-ssm's real Triton kernels instead of references: the per-head
    ``selective_state_update`` (A, D, dt and the zero dt_bias as stride-0 views: its tie_hdim branch) and
    the fused SiLU-gated ``rmsnorm_fn`` (forward and backward). (Its chunk scan needs a GPU driver even
    when interpreted.)"""
    from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update

    # the upstream wrappers enter torch.cuda.device(x.device.index) (None for CPU tensors), and the norm's
    # backward sizes its grid by the GPU's multiprocessor count
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda d: SimpleNamespace(multi_processor_count=4)
    )
    monkeypatch.setattr(mamba2_kernels, "selective_state_update", selective_state_update)
    monkeypatch.setattr(mamba2_kernels, "rmsnorm_fn", rmsnorm_fn)
    mixer = make_mixer("silu", dt_limit=(0.05, 1.5))
    x, g = inputs()
    want_out, want = run(mixer, mixer, x, g)
    got_out, got = run(mixer, lambda h: mixer.forward_cuda(h), x, g)
    assert_close_scaled(got_out, want_out, FP32, "output")
    assert_grads_close(got, want, FP32_GRAD)
    with torch.no_grad():
        steps = decode_on_kernels(mixer, x)[0]
    assert_close_scaled(steps, want_out, FP32, "decoding")


# ----------------------------------------------------------------------------- real kernels


def _gpu_kernels() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        backends.import_kernels("Mamba-2")
    except RuntimeError:
        return False
    return True


@pytest.mark.skipif(not _gpu_kernels(), reason="needs a GPU with the mamba-ssm / causal-conv1d kernels")
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("kind", KINDS)
def test_real_kernels_on_gpu_match_torch_path(kind: str, autocast: bool) -> None:
    """On a GPU session: the kernels themselves, against our PyTorch path on the same GPU."""
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
