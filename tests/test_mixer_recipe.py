"""The "Add a mixer" recipe of ARCHITECTURE.md, followed entirely inside this file (no package file
edited): a new state-space mixer, a diagonal linear recurrence (S4D-like: per channel and state
``s_t = a s_{t-1} + b x_t``, ``y_t = sum_n c_n s_t + D x_t``), is a subclass of
:class:`~mswelu.modules.ssm_mixer.SSMMixer` with its block a subclass of
:class:`~mswelu.modules.mixers.ssm_block.SSMBlock`, registered with ``register_mixer``. Then a model with it
builds from ``mixer: diagonal``, counts its parameters (equal to the real build) and its FLOPs (the matmuls
equal to torch's FLOP counter, the activations' work as their specs declare), trains a few steps, decodes
through ``generate()`` in O(1) per token (one prefill, then forwards of length 1) with the logits of a full
recomputation, and gets a memory plan from :mod:`mswelu.plan` out of the block's own declaration (within 2x
of a measurement)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from mswelu.base.hf_compat import output_cache
from mswelu.models.build import activation_bytes, lm_loss, measure_activation_bytes
from mswelu.models.configuration import MsweluConfig
from mswelu.models.flops import config_flops
from mswelu.models.modeling import MsweluForCausalLM, parameter_count
from mswelu.modules.activations import activation_flops, make_activation
from mswelu.modules.mixers import MIXERS
from mswelu.modules.mixers.registry import Mixer, register_mixer
from mswelu.modules.mixers.ssm_block import SSMBlock
from mswelu.modules.ssm_mixer import SSMMixer
from mswelu.plan import GiB, make_plan

L = 16


class DiagonalMixer(SSMMixer):
    """``x, z = in_proj(h)``; ``x = act_conv(conv(x))``; the recurrence above with ``a = exp(-exp(A_log))``;
    ``out = out_proj(y * act_gate(z))``. Written plainly (a loop over time): the base supplies the rest."""

    @classmethod
    def input_widths(cls, *, d_model: int, expand: float, **_: Any) -> tuple[int, int]:
        d_inner = int(expand * d_model)
        return 2 * d_inner, d_inner  # in_proj: x, z

    d_state_default = 4

    def build(self) -> None:  # its own parameters (the base builds in_proj, the conv, out_proj)
        di, n = self.d_inner, self.d_state
        self.A_log = nn.Parameter(torch.log(torch.linspace(0.1, 2.0, n)).repeat(di, 1))
        self.B = nn.Parameter(torch.randn(di, n) / n**0.5)
        self.C = nn.Parameter(torch.randn(di, n) / n**0.5)
        self.D = nn.Parameter(torch.ones(di))

    def _forward_torch(self, hidden_states: Tensor, want_states: bool = False) -> tuple[Any, Any, Any]:
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        x_in = x.transpose(1, 2)  # (B, d_inner, L), the conv's input (and state)
        x = self.act_conv(self.conv1d(x_in)[..., : hidden_states.shape[1]].transpose(1, 2))
        a = torch.exp(-torch.exp(self.A_log))
        state = x.new_zeros(x.shape[0], self.d_inner, self.d_state)
        ys = []
        for t in range(x.shape[1]):
            state = a * state + self.B * x[:, t, :, None]
            ys.append((state * self.C).sum(-1))
        out = self.out_proj((torch.stack(ys, dim=1) + self.D * x) * self.act_gate(z))
        return (out, self._conv_state(x_in), state.detach().float()) if want_states else (out, None, None)

    def _step_torch(self, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        x, z = self.in_proj(hidden_states.squeeze(1)).chunk(2, dim=-1)
        x = self._conv_step(x, conv_state, hidden_states.dtype)
        ssm_state.copy_(torch.exp(-torch.exp(self.A_log)) * ssm_state + self.B * x[..., None])
        y = (ssm_state * self.C).sum(-1) + self.D * x
        return self.out_proj(y * self.act_gate(z)).unsqueeze(1)


class DiagonalBlock(SSMBlock):
    mixer_name = "diagonal"
    mixer_class = DiagonalMixer

    @staticmethod
    def own_parameter_count(config: Any) -> int:
        return 3 * config.d_inner * config.d_state + config.d_inner  # A_log, B, C; D

    @staticmethod
    def own_flops_per_token(config: Any, seq_len: int) -> float:
        """Per channel and state: a s, b x, their sum, c s and the sum over states (5); the D skip (2)."""
        return float(5 * config.d_inner * config.d_state + 2 * config.d_inner)

    @staticmethod
    def own_activation_bytes(config: Any, autocast_bytes: int) -> float:
        """x and z, the conv's and act_conv's outputs, every step's state (fp32), y, the gate, its product."""
        di, n = config.d_inner, config.d_state
        return 2 * di * autocast_bytes + 2 * di * 4 + 2 * di * n * 4 + 3 * di * 4


@pytest.fixture
def diagonal(monkeypatch: pytest.MonkeyPatch) -> Mixer:
    """The mixer registered for one test (the registry is restored afterwards)."""
    spec = Mixer("diagonal", "M", DiagonalBlock, "diagonal linear recurrence")
    monkeypatch.setitem(MIXERS, "diagonal", spec)  # what register_mixer(spec) does, undone after the test
    return spec


def _model(**overrides: Any) -> MsweluForCausalLM:
    torch.manual_seed(0)
    config = MsweluConfig.from_preset("tiny", mixer="diagonal", d_state=4, **overrides)
    return MsweluForCausalLM(config)


def test_it_registers_builds_and_counts_its_parameters(diagonal: Mixer) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_mixer(diagonal)
    for overrides in ({}, {"mixer_k_sharing": "separate", "proj_bias": True, "conv_bias": False}):
        model = _model(**overrides)
        assert all(isinstance(b.mixer, DiagonalMixer) for b in model.backbone.blocks)
        unique = {id(p): p for p in model.parameters()}.values()
        assert parameter_count(model.config) == sum(p.numel() for p in unique)
    with pytest.raises(ValueError, match="d_state must be an integer >= 1"):  # its settings, checked
        MsweluConfig.from_preset("tiny", mixer="diagonal", d_state=0)


def test_it_trains(diagonal: Mixer) -> None:
    model = _model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(1, 512, (2, L + 1))
    losses = []
    for _ in range(8):
        loss = lm_loss(model, ids[:, :-1], ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    k = [b.mixer.act_conv.k for b in model.backbone.blocks]  # its SWELU slots learn too
    assert losses[-1] < 0.8 * losses[0] and all(float(v.detach()) != 1.0 for v in k)


def test_it_decodes_in_constant_time_per_token(diagonal: Mixer) -> None:
    model = _model().eval()
    lengths = []
    hook = model.register_forward_pre_hook(
        lambda mod, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    x = torch.randint(1, 512, (1, 5))
    try:
        out = model.generate(x, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    finally:
        hook.remove()
    assert lengths == [5] + [1] * 5
    with torch.no_grad():
        full = model(out).logits
        step = model(out[:, :5], use_cache=True)
        parts = [step.logits]
        for t in range(5, out.shape[1]):
            step = model(out[:, t : t + 1], cache=output_cache(step), use_cache=True)
            parts.append(step.logits)
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-5)
    states = output_cache(step).states
    assert [tuple(s["ssm"].shape) for s in states] == [(1, model.config.d_inner, 4)] * 2


def test_it_counts_its_flops(diagonal: Mixer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSWELU_CPU_KERNELS", "0")
    model = _model().eval()
    c = model.config
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(input_ids=torch.randint(0, 512, (2, L)))
    counted = {str(k): v / (2 * L) for k, v in fc.get_flop_counts()["Global"].items()}
    got = config_flops(c, L)
    di, n, d = c.d_inner, c.d_state, c.d_model
    recurrence = (5 * di * n + 2 * di) * c.n_layer
    conv = 2 * di * c.d_conv * c.n_layer
    elements = (2 * di + d) * c.n_layer + sum(c.dense_sizes) + d  # act_conv, act_gate, post_act; dense stack
    forward_per_element, training_per_element = activation_flops(make_activation(c.activation))
    activations = elements * forward_per_element
    assert counted["aten.mm"] + counted["aten.addmm"] == pytest.approx(
        got["forward"] - recurrence - conv - activations
    )
    matmuls = got["forward"] - activations
    assert got["training"] == pytest.approx(3 * matmuls + elements * training_per_element)


def test_it_gets_a_memory_plan(diagonal: Mixer) -> None:
    config = _model().config
    per_token = sum(DiagonalBlock.activation_bytes(config, 2) for _ in config.layer_mixers())
    assert activation_bytes(config, 64)["blocks"] == 64 * per_token
    plan = make_plan("tiny", 1, 24 * GiB, seq_len=64, model={"mixer": "diagonal", "d_state": 4})
    assert plan.fits and plan.activations_per_sequence == activation_bytes(config, 64)["total"]
    measured = measure_activation_bytes("tiny", 64, model={"mixer": "diagonal", "d_state": 4})
    estimate = activation_bytes(config, 64, bf16=False)["total"]
    assert 0.5 < measured / estimate < 2.0
