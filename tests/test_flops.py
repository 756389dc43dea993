"""Model FLOPs per token against torch's own FLOP counter: every matmul of a forward pass counted by
``FlopCounterMode`` matches the closed forms of :mod:`mswelu.flops` exactly; the parts it cannot see (the
scan's elementwise work, CPU attention) are checked against their formulas. A mixer without a count is an
error, not a zero."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mswelu.baselines import gpt2
from mswelu.flops import TRAINING_FACTOR, config_flops, model_flops_per_token
from mswelu.models import build_model

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
    # projections, dense stack and head: every one of them, exactly
    assert counted["aten.mm"] + counted["aten.addmm"] == pytest.approx(got["forward"] - scan - conv)
    # the conv (the counter includes the causal padding's extra outputs) and the scan's C.h contraction
    assert counted["aten.convolution"] == pytest.approx(conv * (L + c.d_conv - 1) / L)
    assert counted["aten.bmm"] == pytest.approx(2 * di * n * layers)
    assert got["head"] == 2 * c.d_model * c.vocab_size and got["training"] == TRAINING_FACTOR * got["forward"]
    assert model_flops_per_token(model, L) == got


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

    monkeypatch.setattr(Mamba1Block, "mixer_flops_per_token", staticmethod(_undeclared))
    model = build_model("tiny", 512, L, eos_token_id=511)
    with pytest.raises(ValueError, match="declares no FLOPs per token"):
        config_flops(model.config, L)
