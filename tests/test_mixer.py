"""MambaMixer: Mamba-1 layout and init, the recurrence against an independent reference, transformers'
MambaMixer, recurrent decoding, causality and custom (SWELU) activations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mswelu.modules import ssm_mixer
from mswelu.modules.activations import make_activation
from mswelu.modules.mamba_mixer import MambaMixer
from mswelu.modules.swelu import SWELU

D_MODEL, D_STATE, D_CONV = 16, 4, 4


def reference_mixer(m: MambaMixer, h: torch.Tensor) -> torch.Tensor:
    """Mamba-1 written out step by step from the paper's equations (no code shared with the module)."""
    b, length, _ = h.shape
    d_inner, n, k = m.d_inner, m.d_state, m.d_conv
    xz = h @ m.in_proj.weight.t()
    x, z = xz[..., :d_inner], xz[..., d_inner:]  # (b, L, d_inner)
    w = m.conv1d.weight[:, 0, :]  # (d_inner, k); tap k-1 multiplies the current step
    xc = []
    for t in range(length):
        acc = m.conv1d.bias.expand(b, d_inner)
        for j in range(k):
            s = t - (k - 1) + j
            if s >= 0:
                acc = acc + w[:, j] * x[:, s]
        xc.append(acc)
    xa = m.act_conv(torch.stack(xc, dim=1))
    dt_raw, B, C = torch.split(xa @ m.x_proj.weight.t(), [m.dt_rank, n, n], dim=-1)
    dt = F.softplus(dt_raw @ m.dt_proj.weight.t() + m.dt_proj.bias)  # (b, L, d_inner)
    A = -torch.exp(m.A_log)
    state = torch.zeros(b, d_inner, n)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t, :, None] * A)
        state = decay * state + dt[:, t, :, None] * B[:, t, None, :] * xa[:, t, :, None]
        ys.append((state * C[:, t, None, :]).sum(-1) + m.D * xa[:, t])
    y = torch.stack(ys, dim=1) * m.act_gate(z)
    return y @ m.out_proj.weight.t()


def randomize_ssm(m: MambaMixer) -> MambaMixer:
    """Move A_log, D and conv away from their structured init so the test sees every parameter."""
    with torch.no_grad():
        m.A_log.add_(torch.randn_like(m.A_log) * 0.3)
        m.D.add_(torch.randn_like(m.D) * 0.5)
        m.dt_proj.bias.add_(torch.randn_like(m.dt_proj.bias))
    return m


def zero_states(m: MambaMixer, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """States of the right shapes for calls whose kernels are stubbed out or that fail before reading them."""
    return torch.zeros(batch, m.d_inner, m.d_conv), torch.zeros(batch, m.d_inner, m.d_state)


def test_parameter_names_and_shapes():
    m = MambaMixer(D_MODEL, d_state=D_STATE, d_conv=D_CONV)
    d_inner, dt_rank = 2 * D_MODEL, math.ceil(D_MODEL / 16)
    assert {k: tuple(v.shape) for k, v in m.named_parameters()} == {
        "in_proj.weight": (2 * d_inner, D_MODEL),
        "conv1d.weight": (d_inner, 1, D_CONV),
        "conv1d.bias": (d_inner,),
        "x_proj.weight": (dt_rank + 2 * D_STATE, d_inner),
        "dt_proj.weight": (d_inner, dt_rank),
        "dt_proj.bias": (d_inner,),
        "A_log": (d_inner, D_STATE),
        "D": (d_inner,),
        "out_proj.weight": (D_MODEL, d_inner),
    }
    assert m.A_log._no_weight_decay and m.D._no_weight_decay and m.dt_proj.bias._no_reinit
    assert MambaMixer(D_MODEL, bias=True).in_proj.bias is not None
    assert MambaMixer(D_MODEL, conv_bias=False).conv1d.bias is None
    assert MambaMixer(40, dt_rank=7).dt_rank == 7 and MambaMixer(40).dt_rank == 3


def test_init_statistics():
    torch.manual_seed(1)
    m = MambaMixer(512, d_state=16)  # d_inner = 1024 samples of dt
    assert torch.equal(m.A_log, torch.log(torch.arange(1, 17, dtype=torch.float32)).repeat(1024, 1))
    assert torch.equal(m.D, torch.ones(1024))
    dt = F.softplus(m.dt_proj.bias.detach().double())
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    log_dt = dt.log()
    # log-uniform on [log 1e-3, log 0.1]: mean log(1e-2), std log(100) / sqrt(12)
    assert abs(log_dt.mean().item() - math.log(1e-2)) < 0.15
    assert abs(log_dt.std().item() - math.log(100) / math.sqrt(12)) < 0.15
    bound = m.dt_rank**-0.5
    assert m.dt_proj.weight.abs().max() <= bound and m.dt_proj.weight.abs().max() > 0.9 * bound
    assert m.in_proj.weight.abs().max() <= 512**-0.5  # nn.Linear default init
    # the floor: dt drawn in [1e-5, 1e-3] is clamped to >= 1e-4
    floored = F.softplus(MambaMixer(64, dt_min=1e-5, dt_max=1e-3, dt_init_floor=1e-4).dt_proj.bias.double())
    assert floored.min() >= 1e-4 * (1 - 1e-5) and (floored - 1e-4).abs().lt(1e-9).sum() > 10


@pytest.mark.parametrize("length", [1, 5, 37])
def test_silu_mixer_equals_reference_recurrence(length):
    m = randomize_ssm(MambaMixer(D_MODEL, d_state=D_STATE, d_conv=D_CONV))
    h = torch.randn(2, length, D_MODEL)
    with torch.no_grad():
        torch.testing.assert_close(m(h), reference_mixer(m, h), rtol=0, atol=1e-5)


def test_gradients_equal_reference():
    act = SWELU(k_init=0.8)
    m = randomize_ssm(MambaMixer(D_MODEL, d_state=D_STATE, act_conv=act, act_gate=act))
    h = torch.randn(2, 11, D_MODEL, requires_grad=True)
    w = torch.randn(2, 11, D_MODEL)
    params = [h, *m.parameters()]
    grads = torch.autograd.grad((m(h) * w).sum(), params)
    ref_grads = torch.autograd.grad((reference_mixer(m, h) * w).sum(), params)
    names = ["input", *(n for n, _ in m.named_parameters())]
    assert "act_conv.k_raw" in names and not any(n.startswith("act_gate") for n in names)
    for name, g, rg in zip(names, grads, ref_grads, strict=True):
        torch.testing.assert_close(g, rg, rtol=1e-4, atol=1e-5 + 1e-4 * rg.abs().max().item(), msg=name)


def test_matches_transformers_mamba_mixer():
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer as HFMambaMixer

    m = randomize_ssm(MambaMixer(D_MODEL, d_state=D_STATE, d_conv=D_CONV))
    cfg = MambaConfig(
        hidden_size=D_MODEL,
        state_size=D_STATE,
        conv_kernel=D_CONV,
        expand=2,
        time_step_rank=m.dt_rank,
        use_conv_bias=True,
        use_bias=False,
        num_hidden_layers=1,
        hidden_act="silu",
    )
    hf = HFMambaMixer(cfg, layer_idx=0).eval()
    hf.load_state_dict(m.state_dict(), strict=True)  # identical state-dict names and shapes
    h = torch.randn(2, 13, D_MODEL)
    with torch.no_grad():
        torch.testing.assert_close(m(h), hf(h), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["silu", "swelu"])
def test_step_decoding_equals_forward(kind):
    act = make_activation(kind, {"k": {"init": 1.4}} if kind == "swelu" else None)
    m = randomize_ssm(MambaMixer(D_MODEL, d_state=D_STATE, act_conv=act, act_gate=act))
    h = torch.randn(3, 9, D_MODEL)
    with torch.no_grad():
        full = m(h)
        state = {}  # the decoding API: the first token fills it, each next one continues from it
        steps = torch.cat([m(h[:, t : t + 1], state) for t in range(9)], dim=1)
        conv_state, ssm_state = state["conv"], state["ssm"]
        assert conv_state.shape == (3, m.d_inner, D_CONV) and ssm_state.shape == (3, m.d_inner, D_STATE)
        assert ssm_state.dtype == torch.float32
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prefix", [1, 3, 4, 8])
def test_prefill_states_then_steps_equal_forward(prefix):
    m = randomize_ssm(MambaMixer(D_MODEL, d_state=D_STATE, d_conv=D_CONV))
    h = torch.randn(2, 12, D_MODEL)
    with torch.no_grad():
        full = m(h)
        out, conv_state, ssm_state = m.forward_with_states(h[:, :prefix])
        # the same states as decoding the prefix token by token
        ref = {}
        for t in range(prefix):
            m(h[:, t : t + 1], ref)
        torch.testing.assert_close(conv_state, ref["conv"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ssm_state, ref["ssm"], rtol=1e-5, atol=1e-6)
        rest = [m.step(h[:, t : t + 1], conv_state, ssm_state) for t in range(prefix, 12)]
    torch.testing.assert_close(torch.cat([out, *rest], dim=1), full, rtol=1e-5, atol=1e-6)


def test_decoding_state_protocol():
    """The model's cache protocol: an empty dict takes the prompt, a filled one continues (any length)."""
    m = MambaMixer(D_MODEL, d_state=D_STATE, layer_idx=3)
    h = torch.randn(2, 9, D_MODEL)
    state = {}
    with torch.no_grad():
        full = m(h)
        outs = [m(h[:, :5], state)]
        assert set(state) == {"conv", "ssm"}
        for t in (5, 6):
            outs.append(m(h[:, t : t + 1], state))
        outs.append(m(h[:, 7:], state))  # two tokens at once: stepped one at a time
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-5, atol=1e-6)


def test_causal():
    m = randomize_ssm(MambaMixer(D_MODEL, d_state=D_STATE))
    h = torch.randn(2, 20, D_MODEL)
    h2 = h.clone()
    h2[:, 11:] = torch.randn(2, 9, D_MODEL)
    with torch.no_grad():
        a, b = m(h), m(h2)
    torch.testing.assert_close(a[:, :11], b[:, :11], rtol=0, atol=1e-7)
    assert (a[:, 11] - b[:, 11]).abs().max() > 1e-3


def test_shared_and_separate_activations():
    act = SWELU(k_init=0.5)
    shared = MambaMixer(D_MODEL, act_conv=act, act_gate=act)
    assert shared.act_conv is shared.act_gate
    assert [n for n, _ in shared.named_parameters() if "k_raw" in n] == ["act_conv.k_raw"]
    sd = shared.state_dict()
    assert "act_conv.k_raw" in sd and "act_gate.k_raw" in sd  # stable keys, one storage
    separate = MambaMixer(D_MODEL, act_conv=SWELU(), act_gate=SWELU())
    assert {n for n, _ in separate.named_parameters() if "k_raw" in n} == {"act_conv.k_raw", "act_gate.k_raw"}
    default = MambaMixer(D_MODEL)
    assert isinstance(default.act_conv, nn.SiLU) and isinstance(default.act_gate, nn.SiLU)
    # a SWELU mixer really uses its k: changing k changes the output
    h = torch.randn(1, 6, D_MODEL)
    with torch.no_grad():
        before = shared(h)
        act.k_raw.add_(1.0)
        assert (shared(h) - before).abs().max() > 1e-4


def test_backend_dispatch(monkeypatch):
    from mswelu.ops import mamba_kernels

    m = MambaMixer(D_MODEL, d_state=D_STATE)
    h = torch.randn(1, 4, D_MODEL)
    calls = []
    monkeypatch.setattr(ssm_mixer, "resolve_backend", lambda value, t, probe: "cuda")
    monkeypatch.setattr(mamba_kernels, "mixer_fn", lambda x, w, *acts: calls.append("fwd") or x)
    monkeypatch.setattr(mamba_kernels, "step_fn", lambda x, c, s, w, *acts: calls.append("step") or x)
    m(h)
    m.step(h[:, :1], *zero_states(m, 1))
    assert calls == ["fwd", "step"]
    monkeypatch.undo()
    m.backend = "cuda"  # forced, on a CPU tensor: a clear error, not a silent fallback
    with pytest.raises(RuntimeError, match="cuda"):
        m(h)
    m.backend = "torch"
    assert m(h).shape == h.shape


def test_bad_input_raises_value_error():
    for kwargs, word in (
        ({"d_model": 0}, "d_model"),
        ({"d_model": 8, "d_state": 0}, "d_state"),
        ({"d_model": 8, "d_conv": 0}, "d_conv"),
        ({"d_model": 8, "expand": 0}, "expand"),
        ({"d_model": 8, "dt_rank": 0}, "dt_rank"),
        ({"d_model": 8, "dt_min": 0.5, "dt_max": 0.1}, "dt_min"),
    ):
        with pytest.raises(ValueError, match=word):
            MambaMixer(**kwargs)
    m = MambaMixer(D_MODEL)
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(2, 5, D_MODEL + 1))
    with pytest.raises(ValueError, match="batch, length"):
        m(torch.randn(5, D_MODEL))
    with pytest.raises(ValueError, match="one token"):
        m.step(torch.randn(1, 2, D_MODEL), *zero_states(m, 1))


def test_bfloat16_weights_run_forward_backward_and_decoding():
    m32 = randomize_ssm(MambaMixer(D_MODEL, d_state=D_STATE))
    m16 = MambaMixer(D_MODEL, d_state=D_STATE)
    m16.load_state_dict(m32.state_dict())
    m16 = m16.to(torch.bfloat16)
    h = torch.randn(2, 10, D_MODEL)
    out = m16(h.bfloat16())
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        ref = m32(h)
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=3e-2 * ref.abs().max().item())
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad.float()).all() for p in m16.parameters())
    with torch.no_grad():
        state = {}
        steps = torch.cat([m16(h[:, t : t + 1].bfloat16(), state) for t in range(10)], 1)
        assert state["conv"].dtype == torch.bfloat16 and state["ssm"].dtype == torch.float32
    torch.testing.assert_close(steps.float(), ref, rtol=0, atol=3e-2 * ref.abs().max().item())
