"""Mamba2Mixer: transformers' Mamba2Mixer layout, init and numbers (SiLU), recurrent decoding, the two
activation slots (shared or separate SWELU) and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Mamba2Config
from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer as HFMamba2Mixer

from mswelu.modules.gated_rms_norm import GatedRMSNorm
from mswelu.modules.mamba2_mixer import Mamba2Mixer
from mswelu.modules.swelu import SWELU

D_MODEL, D_STATE, HEADDIM, CHUNK = 16, 8, 4, 8  # d_inner 32, 8 heads
BATCH, SEQLEN = 2, 13  # 13: not a multiple of the chunk size


def make_mixer(n_groups: int = 1, acts: str = "silu", seed: int = 1, **kwargs) -> Mamba2Mixer:
    """A small mixer on the torch backend with every parameter moved off its init (so that a dropped
    bias, a swapped slot or a wrong D cannot go unnoticed)."""
    torch.manual_seed(seed)
    if acts == "silu":
        slots = {}
    elif acts == "swelu-shared":
        shared = SWELU(k_init=0.8)
        slots = {"act_conv": shared, "act_gate": shared}
    elif acts == "swelu-separate":
        slots = {"act_conv": SWELU(k_init=0.8), "act_gate": SWELU(k_init=1.3)}
    else:
        raise ValueError(acts)
    mixer = Mamba2Mixer(
        D_MODEL, d_state=D_STATE, headdim=HEADDIM, n_groups=n_groups, chunk_size=CHUNK, backend="torch",
        **slots, **kwargs,
    )  # fmt: skip
    with torch.no_grad():
        mixer.A_log.add_(0.3 * torch.randn_like(mixer.A_log))
        mixer.D.uniform_(0.5, 1.5)
        mixer.dt_bias.add_(2.0)  # larger steps: the state matters more
        mixer.norm.weight.uniform_(0.5, 1.5)
        for p in (mixer.in_proj.bias, mixer.out_proj.bias, mixer.conv1d.bias):
            if p is not None:
                p.normal_(0, 0.2)
    return mixer


def hf_mixer(ours: Mamba2Mixer) -> HFMamba2Mixer:
    """transformers' Mamba2Mixer of the same shape holding our weights (its torch path, SiLU)."""
    config = Mamba2Config(
        hidden_size=ours.d_model, state_size=ours.d_state, head_dim=ours.headdim, num_heads=ours.nheads,
        expand=ours.expand, n_groups=ours.n_groups, chunk_size=ours.chunk_size, conv_kernel=ours.d_conv,
        num_hidden_layers=1, layer_norm_epsilon=ours.norm.eps, time_step_limit=ours.dt_limit,
        use_bias=ours.in_proj.bias is not None, use_conv_bias=ours.conv1d.bias is not None,
    )  # fmt: skip
    theirs = HFMamba2Mixer(config, layer_idx=0)
    theirs.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("act_")})
    return theirs.eval()  # eval: no attempt at the fused kernel, which is absent here anyway


def inputs(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.randn(BATCH, SEQLEN, D_MODEL), torch.randn(BATCH, SEQLEN, D_MODEL)


def run(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    """Output, and the gradients of <out, grad_out> w.r.t. the input and every trainable parameter."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = module(x)
    out.backward(grad_out)
    grads = {"input": x.grad, **{name: p.grad for name, p in module.named_parameters() if p.requires_grad}}
    assert all(g is not None for g in grads.values()), [k for k, g in grads.items() if g is None]
    return out.detach(), grads


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()


# ----------------------------------------------------------------------------- layout and init


def test_parameter_names_and_shapes_are_transformers_and_mamba_ssm() -> None:
    ours = make_mixer(n_groups=2)
    theirs = hf_mixer(ours)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items() if not k.startswith("act_")}
    assert ours_shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    d_inner, conv_dim = 2 * D_MODEL, 2 * D_MODEL + 2 * 2 * D_STATE
    assert ours_shapes == {
        "in_proj.weight": (d_inner + conv_dim + 8, D_MODEL),
        "conv1d.weight": (conv_dim, 1, 4),
        "conv1d.bias": (conv_dim,),
        "dt_bias": (8,),
        "A_log": (8,),
        "D": (8,),
        "norm.weight": (d_inner,),
        "out_proj.weight": (D_MODEL, d_inner),
    }
    assert all(getattr(p, "_no_weight_decay", False) for p in (ours.A_log, ours.D, ours.dt_bias))
    assert Mamba2Mixer(D_MODEL, headdim=HEADDIM, bias=True).in_proj.bias is not None
    assert Mamba2Mixer(D_MODEL, headdim=HEADDIM, conv_bias=False).conv1d.bias is None
    assert ours.norm.group_size == d_inner // 2


def test_init_follows_the_reference() -> None:
    torch.manual_seed(0)
    m = Mamba2Mixer(64, d_state=16, headdim=2, dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4)  # 64 heads
    torch.testing.assert_close(m.A_log, torch.log(torch.arange(1.0, 65.0)))
    assert torch.equal(m.D, torch.ones(64)) and torch.equal(m.norm.weight, torch.ones(128))
    dt = F.softplus(m.dt_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert dt.log().std() > 0.5  # log-uniform over two decades, not a constant
    floored = Mamba2Mixer(16, headdim=2, dt_min=1e-6, dt_max=1e-5, dt_init_floor=1e-3)
    torch.testing.assert_close(F.softplus(floored.dt_bias), torch.full((16,), 1e-3))


# ----------------------------------------------------------------------------- equal to transformers


@pytest.mark.parametrize("n_groups", [1, 2])
@pytest.mark.parametrize("dt_limit", [(0.0, math.inf), (0.05, 1.5)], ids=["no-limit", "limit"])
def test_equals_transformers_mamba2_mixer(n_groups: int, dt_limit) -> None:
    ours = make_mixer(n_groups=n_groups, dt_limit=dt_limit, bias=True)
    theirs = hf_mixer(ours)
    x, g = inputs()
    want_out, want = run(theirs, x, g)
    got_out, got = run(ours, x, g)
    torch.testing.assert_close(got_out, want_out, rtol=1e-4, atol=1e-4)
    assert set(got) == set(want)
    for name in want:
        assert rel_err(got[name], want[name]) < 1e-3, name


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("acts", ["silu", "swelu-separate"])
@pytest.mark.parametrize("n_groups", [1, 2])
def test_decoding_equals_the_full_forward(acts: str, n_groups: int) -> None:
    mixer = make_mixer(n_groups=n_groups, acts=acts, dt_limit=(0.05, 1.5))
    x, _ = inputs()
    prefix = 5
    with torch.no_grad():
        full = mixer(x)
        out, conv_state, ssm_state = mixer.forward_with_states(x[:, :prefix])
        assert conv_state.shape == (BATCH, mixer.conv_dim, 4) and conv_state.dtype == x.dtype
        assert ssm_state.shape == (BATCH, mixer.nheads, HEADDIM, D_STATE) and ssm_state.dtype == torch.float32
        steps = [mixer.step(x[:, t : t + 1], conv_state, ssm_state) for t in range(prefix, SEQLEN)]
        torch.testing.assert_close(torch.cat([out, *steps], dim=1), full, rtol=1e-5, atol=1e-5)
        # the states after the last step equal a prefill over the whole sequence
        _, want_conv, want_ssm = mixer.forward_with_states(x)
        torch.testing.assert_close(conv_state, want_conv)
        torch.testing.assert_close(ssm_state, want_ssm, rtol=1e-5, atol=1e-5)
        # and from an empty decoding state, one token at a time
        state = {}
        steps = [mixer(x[:, t : t + 1], state) for t in range(SEQLEN)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_prefill_shorter_than_the_conv_width() -> None:
    mixer = make_mixer()
    x, _ = inputs()
    with torch.no_grad():
        full = mixer(x[:, :6])
        out, conv_state, ssm_state = mixer.forward_with_states(x[:, :2])
        steps = [mixer.step(x[:, t : t + 1], conv_state, ssm_state) for t in range(2, 6)]
    torch.testing.assert_close(torch.cat([out, *steps], dim=1), full, rtol=1e-5, atol=1e-5)


def test_decoding_under_bf16_autocast() -> None:
    mixer = make_mixer(acts="swelu-shared")
    x, _ = inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = mixer(x)
        state = {}
        steps = torch.cat([mixer(x[:, t : t + 1], state) for t in range(SEQLEN)], dim=1)
    assert full.dtype == steps.dtype == state["conv"].dtype == torch.bfloat16
    assert state["ssm"].dtype == torch.float32
    assert rel_err(steps.float(), full.float()) < 3e-2


def test_decoding_state_protocol() -> None:
    """The model's cache protocol: an empty dict takes the prompt, a filled one continues (any length)."""
    mixer = make_mixer(layer_idx=3)
    x, _ = inputs()
    state = {}
    with torch.no_grad():
        full = mixer(x)
        outs = [mixer(x[:, :4], state)]
        assert set(state) == {"conv", "ssm"}
        outs += [mixer(x[:, t : t + 1], state) for t in range(4, SEQLEN - 2)]
        outs.append(mixer(x[:, SEQLEN - 2 :], state))  # two tokens at once: stepped one at a time
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-5, atol=1e-5)


def test_causal() -> None:
    """The output at t does not depend on later tokens."""
    mixer = make_mixer(acts="swelu-separate")
    x, _ = inputs()
    changed = x.clone()
    changed[:, 7:] += torch.randn_like(changed[:, 7:])
    with torch.no_grad():
        torch.testing.assert_close(mixer(changed)[:, :7], mixer(x)[:, :7])


# ----------------------------------------------------------------------------- activation slots


def test_shared_activation_is_one_parameter_set_used_in_both_slots() -> None:
    shared = make_mixer(acts="swelu-shared")
    assert shared.act_conv is shared.act_gate
    assert [n for n, _ in shared.named_parameters() if "k_raw" in n] == ["act_conv.k_raw"]
    sd = shared.state_dict()
    assert sd["act_conv.k_raw"].data_ptr() == sd["act_gate.k_raw"].data_ptr()
    # the shared k's gradient is the sum of the gradients two separate k of the same value would get
    separate = make_mixer(acts="swelu-separate")
    separate.load_state_dict({k: v for k, v in shared.state_dict().items()})
    assert separate.act_conv is not separate.act_gate
    assert [n for n, _ in separate.named_parameters() if "k_raw" in n] == ["act_conv.k_raw", "act_gate.k_raw"]
    x, g = inputs()
    out_shared, grads_shared = run(shared, x, g)
    out_separate, grads_separate = run(separate, x, g)
    torch.testing.assert_close(out_separate, out_shared)
    torch.testing.assert_close(
        grads_shared["act_conv.k_raw"], grads_separate["act_conv.k_raw"] + grads_separate["act_gate.k_raw"]
    )


def test_each_slot_is_where_upstream_puts_its_silu() -> None:
    """act_conv acts on x, B and C after the conv, act_gate on z inside the norm: replacing either
    changes the output, and replacing act_gate changes it exactly as a hand-written gated norm says."""
    x, _ = inputs()
    base = make_mixer()
    ref = base(x)
    conv_changed = make_mixer(act_conv=nn.Tanh())
    gate_changed = make_mixer(act_gate=nn.Tanh())
    assert not torch.allclose(conv_changed(x), ref) and not torch.allclose(gate_changed(x), ref)
    y = torch.randn(3, 32)
    z = torch.randn(3, 32)
    norm = GatedRMSNorm(32, group_size=16, eps=1e-5)
    g = (y * torch.tanh(z)).view(3, 2, 16)
    want = (g * torch.rsqrt(g.square().mean(-1, keepdim=True) + 1e-5)).view(3, 32)
    torch.testing.assert_close(norm(y, z, torch.tanh), want)


def test_learnable_swelu_k_gets_finite_gradients() -> None:
    for acts in ("swelu-shared", "swelu-separate"):
        mixer = make_mixer(acts=acts)
        x, g = inputs()
        _, grads = run(mixer, x, g)
        ks = {n: v for n, v in grads.items() if n.endswith("k_raw")}
        assert ks and all(torch.isfinite(v) and v.abs() > 0 for v in ks.values()), ks


def test_extra_repr_names_the_sharing() -> None:
    assert "shared_act=True" in repr(make_mixer(acts="swelu-shared"))
    assert "shared_act=False" in repr(make_mixer(acts="swelu-separate"))
    assert "nheads=8" in repr(make_mixer())


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"headdim": 5}, "headdim \\(5\\) must divide d_inner"),
        ({"n_groups": 3}, "n_groups \\(3\\) must divide nheads"),
        ({"d_state": 0}, "d_state must be an integer >= 1"),
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1"),
        ({"dt_limit": (0.5, 0.1)}, "dt_limit must be"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min <= dt_max"),
        ({"norm_eps": 0.0}, "norm_eps must be > 0"),
        ({"expand": 0}, "expand must be > 0"),
    ],
)
def test_bad_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Mamba2Mixer(D_MODEL, **{"headdim": HEADDIM, **kwargs})


def test_bad_input_is_named() -> None:
    mixer = make_mixer()
    with pytest.raises(ValueError, match="d_model=16"):
        mixer(torch.randn(1, 4, D_MODEL + 1))
    with pytest.raises(ValueError, match="at least one token"):
        mixer(torch.randn(1, 0, D_MODEL))
    _, conv_state, ssm_state = mixer.forward_with_states(torch.randn(1, 3, D_MODEL))
    with pytest.raises(ValueError, match="one token at a time"):
        mixer.step(torch.randn(1, 2, D_MODEL), conv_state, ssm_state)
