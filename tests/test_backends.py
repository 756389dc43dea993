"""Backend selection (mswelu.ops.backends) and the dispatch of mixer and model to the kernel path.

On a CPU-only machine ``auto`` must fall back to PyTorch and forcing ``cuda`` (config or the
``MSWELU_BACKEND`` environment variable) must fail with an error naming the missing kernels. The
dispatch itself is checked by pretending the kernels resolve, with the upstream references bound.
"""

from __future__ import annotations

import json

import pytest
import torch
from kernel_refs import bind_refs, load_refs, refs_installed

from mswelu.models.configuration import MsweluConfig
from mswelu.models.modeling import MsweluForCausalLM
from mswelu.modules import ssm_mixer
from mswelu.modules.mamba_mixer import MambaMixer
from mswelu.modules.swelu import SWELU
from mswelu.ops import backends, mamba_kernels

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


_probe = backends.kernels_available  # the cached probe (some tests replace the module attribute)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    _probe.cache_clear()
    yield
    _probe.cache_clear()


def test_environment_variable_wins_over_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert backends.requested_backend("cuda") == "cuda"
    monkeypatch.setenv(backends.ENV_VAR, " Torch ")
    assert backends.requested_backend("cuda") == "torch"
    assert backends.resolve_backend("cuda", torch.zeros(1)) == "torch"


def test_unknown_backend_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="'triton'.*expected one of"):
        backends.requested_backend("triton")
    monkeypatch.setenv(backends.ENV_VAR, "gpu")
    with pytest.raises(ValueError, match="MSWELU_BACKEND.*'gpu'"):
        backends.resolve_backend("auto", torch.zeros(1))


@no_gpu
def test_cpu_machine_has_no_kernels_even_after_the_reference_stand_ins() -> None:
    """The test helper's stand-in modules must not leak into the probe."""
    if refs_installed():
        load_refs()
    ok, why = backends.kernels_available()
    assert not ok and "_cuda" in why


@no_gpu
def test_auto_falls_back_to_torch_and_forced_cuda_names_the_missing_kernels(monkeypatch) -> None:
    assert backends.resolve_backend("auto", torch.zeros(1)) == "torch"
    with pytest.raises(RuntimeError, match="selective_scan_cuda, causal_conv1d_cuda"):
        backends.resolve_backend("cuda", torch.zeros(1))
    monkeypatch.setenv(backends.ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="kernels .* do not import"):
        backends.resolve_backend("auto", torch.zeros(1))


def test_kernels_present_but_tensor_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "kernels_available", lambda: (True, ""))
    assert backends.resolve_backend("auto", torch.zeros(1)) == "torch"
    with pytest.raises(RuntimeError, match="input is on cpu"):
        backends.resolve_backend("cuda", torch.zeros(1))


@no_gpu
def test_describe_reports_backend_and_forcing_error(monkeypatch: pytest.MonkeyPatch) -> None:
    info = backends.describe()
    assert info["backend"] == "torch" and info["kernels_available"] is False and "error" not in info
    monkeypatch.setenv(backends.ENV_VAR, "cuda")
    info = backends.describe()
    assert info["requested"] == "cuda" and info["backend"] is None and "do not import" in info["error"]


# ----------------------------------------------------------------------------- mixer / model


@no_gpu
def test_mixer_forced_cuda_raises_and_auto_runs_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    mixer = MambaMixer(16, d_state=4, backend="cuda")
    x = torch.randn(1, 5, 16)
    with pytest.raises(RuntimeError, match="causal_conv1d_cuda"):
        mixer(x)
    mixer.backend = "auto"
    out = mixer(x)
    monkeypatch.setenv(backends.ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="causal_conv1d_cuda"):
        mixer(x)
    monkeypatch.setenv(backends.ENV_VAR, "torch")
    mixer.backend = "cuda"
    torch.testing.assert_close(mixer(x), out)


def _pretend_kernels(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Route the mixer to the kernel path on CPU (references bound) and count the calls."""
    bind_refs(monkeypatch)
    monkeypatch.setattr(ssm_mixer, "resolve_backend", lambda config_value, tensor, probe: "cuda")
    calls = {"forward": 0, "forward_with_states": 0, "step": 0}
    real_forward, real_step = mamba_kernels.mixer_fn, mamba_kernels.step_fn

    def forward(*args, **kwargs):
        calls["forward_with_states" if (args[3:4] or [kwargs.get("return_states")])[0] else "forward"] += 1
        return real_forward(*args, **kwargs)

    def step(*args, **kwargs):
        calls["step"] += 1
        return real_step(*args, **kwargs)

    monkeypatch.setattr(mamba_kernels, "mixer_fn", forward)
    monkeypatch.setattr(mamba_kernels, "step_fn", step)
    return calls


def test_mixer_dispatches_every_entry_to_the_kernel_path(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    act = SWELU(k_init=0.8)
    mixer = MambaMixer(16, d_state=4, act_conv=act, act_gate=act)
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        want = mixer(x)
        want_prefill = mixer.forward_with_states(x[:, :4])
        conv_state, ssm_state = (s.clone() for s in want_prefill[1:])
        want_step = mixer.step(x[:, 4:5], conv_state, ssm_state)
        calls = _pretend_kernels(monkeypatch)
        got = mixer(x)
        got_prefill = mixer.forward_with_states(x[:, :4])
        conv_state, ssm_state = (s.clone() for s in got_prefill[1:])
        got_step = mixer.step(x[:, 4:5], conv_state, ssm_state)
    assert calls == {"forward": 1, "forward_with_states": 1, "step": 1}
    torch.testing.assert_close(got, want, rtol=6e-4, atol=1e-5)
    for g, w in zip(got_prefill, want_prefill, strict=True):
        torch.testing.assert_close(g, w, rtol=6e-4, atol=1e-5)
    torch.testing.assert_close(got_step, want_step, rtol=6e-4, atol=1e-5)


def _tiny_model(**overrides) -> MsweluForCausalLM:
    torch.manual_seed(0)
    config = MsweluConfig.from_preset("tiny", vocab_size=64, d_model=32, dense_sizes=(48, 48), **overrides)
    return MsweluForCausalLM(config).eval()


@no_gpu
def test_model_reports_backend_and_forced_cuda_fails_clearly() -> None:
    model = _tiny_model()
    assert model.backend_in_use() == "torch"
    ids = torch.randint(0, 64, (1, 6))
    model.set_backend("cuda")
    with pytest.raises(RuntimeError, match="causal_conv1d_cuda"):
        model.backend_in_use()
    with pytest.raises(RuntimeError, match="causal_conv1d_cuda"):
        model(ids)
    with pytest.raises(RuntimeError, match="causal_conv1d_cuda"):
        _tiny_model(backend="cuda")(ids)


@pytest.mark.parametrize("sharing", ["shared", "separate"])
def test_model_on_kernel_path_equals_torch_path(monkeypatch: pytest.MonkeyPatch, sharing: str) -> None:
    """Whole model, same weights: logits, every gradient (all k included) and greedy generation."""
    if not refs_installed():
        pytest.skip("upstream mamba-ssm / causal-conv1d packages are not installed")
    model = _tiny_model(mixer_k_sharing=sharing)
    ids = torch.randint(0, 64, (2, 10))

    def logits_and_grads():
        model.zero_grad(set_to_none=True)
        out = model(ids, labels=ids)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return out.logits.detach(), grads

    want_logits, want_grads = logits_and_grads()
    want_gen = model.generate(ids[:1, :4], max_new_tokens=5, do_sample=False)
    calls = _pretend_kernels(monkeypatch)
    got_logits, got_grads = logits_and_grads()
    got_gen = model.generate(ids[:1, :4], max_new_tokens=5, do_sample=False)
    assert calls["forward"] > 0 and calls["step"] > 0
    assert any("k_raw" in n for n in got_grads)
    torch.testing.assert_close(got_logits, want_logits, rtol=6e-4, atol=2e-3)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=3e-3, atol=1e-4, msg=name)
    assert torch.equal(got_gen, want_gen)


# ----------------------------------------------------------------------------- GPU benchmark helpers


def test_gpu_bench_helpers() -> None:
    from mswelu.bench import gpu

    assert gpu.gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu.peak_flops_for("NVIDIA H200") == gpu.peak_flops_for("NVIDIA H100 PCIe") == 989e12
    assert gpu.peak_flops_for("Tesla T4") is None
    # 6 N D: 124.4M params at 214,600 tokens/s on 989 TFLOP/s is about 16%
    assert gpu.mfu(124_439_808, 214_600.0, 989e12) == pytest.approx(6 * 124_439_808 * 214_600 / 989e12)
    assert gpu.mfu(1, 1.0, None) is None
    results = {
        "mamba_ssm": {"tokens_per_s": 100.0},
        "mamba130m_silu": {"tokens_per_s": 110.0},
        "mamba130m_swelu": {"error": "OOM"},
        "gpt2_compiled": {"tokens_per_s": 200.0},
    }
    assert gpu.ratios(results) == {"b/a": 1.1, "c/b": None, "d/e": None}


@no_gpu
def test_gpu_bench_without_gpu_exits_cleanly(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from mswelu.bench import gpu

    out_file = tmp_path / "r.json"
    assert gpu.main(["--json", "--out", str(out_file)]) == 2
    captured = capsys.readouterr()
    assert "no CUDA GPU" in captured.err and "Traceback" not in captured.err
    payload = json.loads(captured.out)
    assert payload["benchmark"] == "gpu" and payload["results"] == {}
    assert not out_file.exists()
    with pytest.raises(SystemExit):
        gpu.main(["--only", "a,x"])
