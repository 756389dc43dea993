"""Model FLOPs per token against torch's own FLOP counter: every matmul of a forward pass counted by
``FlopCounterMode`` matches the closed forms of :mod:`mswelu.models.flops` exactly; the parts it cannot see
(the scan's elementwise work, the activations, CPU attention) are checked against their formulas: mamba and
mamba-swelu differ by exactly the activations' declared work. A mixer without a count is an error, not a
zero."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mswelu.models.baselines import gpt2
from mswelu.models.build import build_model
from mswelu.models.configuration import MsweluConfig
from mswelu.models.flops import TRAINING_FACTOR, config_flops, model_flops_per_token
from mswelu.modules.activations import TRANSCENDENTAL_FLOPS as T
from mswelu.modules.activations import activation_flops, make_activation
from mswelu.training.variants import variant_overrides

B, L = 2, 32


def _counted(model: torch.nn.Module) -> dict[str, float]:
    """FLOPs per token by aten op of one forward pass."""
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(input_ids=torch.randint(0, 512, (B, L)))
    return {str(k): v / (B * L) for k, v in fc.get_flop_counts()["Global"].items()}


def test_our_model_matches_the_flop_counter(monkeypatch):
    monkeypatch.setenv("MSWELU_CPU_KERNELS", "0")  # the PyTorch code, which the counter can see into
    model = build_model("tiny", 512, L, eos_token_id=511).eval()
    c = model.config
    got = config_flops(c, L)
    counted = _counted(model)
    di, n, layers = c.d_inner, c.d_state, c.n_layer
    scan = (8 * di * n + 2 * di) * layers
    conv = 2 * di * c.d_conv * layers
    elements = (2 * di + c.d_model) * layers + sum(c.dense_sizes) + c.d_model  # every activation's input
    forward_work, training_work = activation_flops(make_activation(c.activation))
    activations = elements * forward_work
    # projections, dense stack and head: every one of them, exactly
    matmuls = got["forward"] - scan - conv - activations
    assert counted["aten.mm"] + counted["aten.addmm"] == pytest.approx(matmuls)
    # the conv (the counter includes the causal padding's extra outputs) and the scan's C.h contraction
    assert counted["aten.convolution"] == pytest.approx(conv * (L + c.d_conv - 1) / L)
    assert counted["aten.bmm"] == pytest.approx(2 * di * n * layers)
    assert got["head"] == 2 * c.d_model * c.vocab_size
    assert got["training"] == pytest.approx(
        TRAINING_FACTOR * (got["forward"] - activations) + elements * training_work
    )
    assert model_flops_per_token(model, L) == got


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_mamba_and_mamba_swelu_differ_by_the_activation_term(preset: str) -> None:
    """The two variants differ only in the activation: their FLOPs differ by the elements every activation
    sees times SWELU's minus SiLU's declared work per element, from the formulas (T FLOPs a transcendental):
    forward (5 + 2T) - (4 + T); training adds the input gradients (6 + 2T) - (8 + T) and k's gradient
    (5 + T)."""
    flops = {}
    for variant in ("mamba", "mamba-swelu", "mamba-swelu-fixed"):
        flops[variant] = config_flops(
            MsweluConfig.for_run(preset, 512, L, **variant_overrides(variant, preset)), L
        )
    c = MsweluConfig.for_run(preset, 512, L, **variant_overrides("mamba-swelu", preset))
    post = c.d_model if c.post_mixer_act else 0
    elements = (2 * c.d_inner + post) * c.n_layer + (sum(c.dense_sizes) + c.d_model if c.dense_sizes else 0)
    silu, swelu, fixed = flops["mamba"], flops["mamba-swelu"], flops["mamba-swelu-fixed"]
    assert swelu["forward"] - silu["forward"] == pytest.approx(elements * (1 + T))
    assert swelu["training"] - silu["training"] == pytest.approx(elements * ((1 + T) + (-2 + T) + (5 + T)))
    assert swelu["forward"] == fixed["forward"]  # a frozen k costs its gradient only
    assert swelu["training"] - fixed["training"] == pytest.approx(elements * (5 + T))


def test_attention_blocks_and_the_gpt2_baseline():
    model = build_model("gpt2:tiny", 512, L, eos_token_id=511, bos_token_id=511).eval()
    counted = _counted(model)
    cfg = model.config
    attention = (
        4 * cfg.n_embd * L * cfg.n_layer
    )  # scores and weighted sum, full context (CPU sdpa: uncounted)
    assert sum(counted.values()) == pytest.approx(gpt2.flops_per_token(cfg, L, causal=False) - attention)
    # causal attention sees (L + 1) / 2 keys on average
    causal = gpt2.flops_per_token(cfg, L) - gpt2.flops_per_token(cfg, L, causal=False)
    assert causal == pytest.approx(-4 * cfg.n_embd * cfg.n_layer * (L - 1) / 2)
    assert model_flops_per_token(model, L)["forward"] == gpt2.flops_per_token(cfg, L)
    hybrid = build_model("tiny", 512, L, eos_token_id=511, layer_pattern="MA")
    assert config_flops(hybrid.config, L)["mixers"] > 0


def _undeclared(config, seq_len):
    raise NotImplementedError


def test_a_mixer_without_a_count_is_an_error(monkeypatch):
    from mswelu.modules.mixers.mamba1 import Mamba1Block

    monkeypatch.setattr(Mamba1Block, "own_flops_per_token", staticmethod(_undeclared))
    model = build_model("tiny", 512, L, eos_token_id=511)
    with pytest.raises(ValueError, match="declares no FLOPs per token"):
        config_flops(model.config, L)
