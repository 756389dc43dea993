"""Causal self-attention as a registered mixer (letter ``A`` in ``layer_pattern``): the block of a hybrid
model. Pre-norm attention plus, by default, a pre-norm MLP (``attn_mlp_expand`` > 0) for the channel mixing
that a Mamba block performs through its gate and projections. Decoding keeps keys and values (O(t) per
token; the Mamba blocks of a hybrid stay O(1))."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from mswelu.modules.attention import MLP, CausalSelfAttention
from mswelu.modules.mixers.common import activation_for, activation_parameter_count, block_flops, norm_for
from mswelu.modules.mixers.registry import Mixer, register_mixer
from mswelu.modules.norms import norm_parameter_count


class AttentionBlock(nn.Module):
    """``x + drop(attn(norm(x)))`` then ``x + drop(mlp(norm2(x)))`` (MLP when ``attn_mlp_expand`` > 0)."""

    mixer_name: ClassVar[str] = "attention"

    def __init__(self, config: Any, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.norm = norm_for(config)
        self.attn = CausalSelfAttention(
            config.d_model, config.n_head, bias=config.proj_bias, dropout=config.dropout
        )
        self.attn.out_proj._residual_out = True
        self.drop = nn.Dropout(config.dropout)
        if config.attn_mlp_expand > 0:
            self.norm2 = norm_for(config)
            self.mlp = MLP(
                config.d_model, config.attn_mlp_expand, activation_for(config), bias=config.proj_bias
            )
            self.mlp.fc_out._residual_out = True
        else:
            self.norm2 = self.mlp = None

    @property
    def residual_writes(self) -> int:
        return 2 if self.mlp is not None else 1

    @classmethod
    def parameter_count(cls, config: Any) -> int:
        d, bias = config.d_model, int(config.proj_bias)
        count = norm_parameter_count(config.norm, d) + 3 * d * d + 3 * d * bias + d * d + d * bias
        if config.attn_mlp_expand > 0:
            h = config.attn_mlp_expand * d
            count += norm_parameter_count(config.norm, d) + 2 * d * h + (h + d) * bias
            count += activation_parameter_count(config)
        return count

    @classmethod
    def flops_per_token(cls, config: Any, seq_len: int, causal: bool = True) -> dict[str, float]:
        """q, k, v and out projections, the scores and the weighted sum over the context (causal: a query
        at position t sees t + 1 keys, (seq_len + 1) / 2 on average; ``causal=False`` counts seq_len, the
        convention of MFU figures), and the MLP with its activation; 2 FLOPs per multiply-add."""
        d, h = config.d_model, config.attn_mlp_expand * config.d_model
        ctx = (seq_len + 1) / 2 if causal else seq_len
        return block_flops(config, float(2 * 4 * d * d + 4 * d * ctx + 2 * 2 * d * h), h)

    @classmethod
    def activation_bytes(cls, config: Any, autocast_bytes: int) -> float:
        """The fp32 input and normed input, q, k, v, the attention output and out_proj's input, the
        log-sum-exp per head; with the MLP its input, normed input, fc_out's input and the hidden layer."""
        s, d, h = autocast_bytes, config.d_model, config.attn_mlp_expand * config.d_model
        attn = (4 + s) * d + 3 * d * s + d * s + d * s + 4 * config.n_head / max(1, d) * d
        return attn + (((4 + s) * d + d * s + 2 * h * s) if h else 0)

    @classmethod
    def check_config(cls, config: Any) -> None:
        if config.d_model % config.n_head:
            raise ValueError(
                f"d_model ({config.d_model}) must be divisible by n_head ({config.n_head}) for attention "
                "blocks"
            )
        if config.attn_mlp_expand < 0:
            raise ValueError(f"attn_mlp_expand must be >= 0, got {config.attn_mlp_expand}")

    def forward(self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        kv = None if state is None else [state.get("k"), state.get("v")]
        x = x + self.drop(self.attn(self.norm(x), kv_cache=kv))
        if state is not None:
            state["k"], state["v"] = kv
        if self.mlp is not None:
            x = x + self.drop(self.mlp(self.norm2(x)))
        return x

    def activation_slots(self) -> list[tuple[str, nn.Module, str, str]]:
        return [("mlp.act", self.mlp.act, "attention", "")] if self.mlp is not None else []


ATTENTION = register_mixer(
    Mixer(
        "attention",
        "A",
        AttentionBlock,
        description="causal multi-head self-attention (+ MLP), the A blocks of a hybrid",
        bounded_context=True,
    )
)
