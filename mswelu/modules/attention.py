"""Causal multi-head self-attention for the ``A`` blocks of a hybrid ``layer_pattern``.

nanoGPT-style: one fused qkv projection, ``F.scaled_dot_product_attention`` with a causal mask,
an output projection. For decoding it appends keys and values to a per-layer KV cache, so each new
token costs O(t) here (attention has no O(1) state) while the Mamba blocks stay O(1).
No positional encoding inside: positions come from the model's learned table (or, with
``pos_embedding="none"``, from the Mamba blocks of the hybrid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    """``(B, L, d_model) -> (B, L, d_model)``, causal; ``kv_cache`` is a 2-item list [k, v] or None."""

    def __init__(self, d_model: int, n_head: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        self.d_model, self.n_head, self.head_dim = d_model, n_head, d_model // n_head
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, n, hd)

    def forward(
        self, hidden_states: torch.Tensor, kv_cache: list[torch.Tensor | None] | None = None
    ) -> torch.Tensor:
        b, n, d = hidden_states.shape
        q, k, v = (self._heads(t) for t in self.qkv_proj(hidden_states).split(d, dim=-1))
        past = 0
        if kv_cache is not None:
            if kv_cache[0] is not None:
                past = kv_cache[0].shape[2]
                k = torch.cat([kv_cache[0], k], dim=2)
                v = torch.cat([kv_cache[1], v], dim=2)
            kv_cache[0], kv_cache[1] = k, v
        drop = self.dropout if self.training else 0.0
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        elif n == 1:  # one new token attends to everything cached
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:  # several new tokens after a prefix: query i sees keys <= past + i
            mask = torch.ones(n, past + n, dtype=torch.bool, device=q.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    """``d -> expand*d -> act -> d``: the channel mixing an attention block lacks (a Mamba block has it)."""

    def __init__(self, d_model: int, expand: int, act: nn.Module, bias: bool = False) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, expand * d_model, bias=bias)
        self.act = act
        self.fc_out = nn.Linear(expand * d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


__all__ = ["CausalSelfAttention", "MLP"]
