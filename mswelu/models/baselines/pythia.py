"""Pythia-style GPT-NeoX (``transformers.GPTNeoXForCausalLM``): rotary positions (25% of each head),
parallel residual, 4x MLP, no dropout. The head is tied to the input embedding like ours (real Pythia
unties it; ``tie_word_embeddings=False`` restores that)."""

from __future__ import annotations

from typing import Any

from torch import nn

#: Config keys that fix the size (given any of them, no size matching happens).
SIZE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def parameter_count(d: int, n_layer: int, vocab_size: int, n_ctx: int, tied: bool = True) -> int:
    """Closed form: 12 d^2 + 13 d per block, the token table (no position table: rotary), the final norm,
    and the head when untied. Checked against real builds in the tests."""
    n = vocab_size * d + n_layer * (12 * d * d + 13 * d) + 2 * d
    return n + (0 if tied else vocab_size * d)


def flops_per_token(config: Any, seq_len: int, causal: bool = True) -> float:
    """Forward model FLOPs per token of a built model's config: per block the q/k/v/out projections, the
    scores and weighted sum over the context (causal: (seq_len + 1) / 2 keys on average) and the MLP, then
    the LM head; 2 per multiply-add (see :mod:`mswelu.models.flops`)."""
    d, n_layer = config.hidden_size, config.num_hidden_layers
    ff = getattr(config, "intermediate_size", None) or 4 * d
    ctx = (seq_len + 1) / 2 if causal else seq_len
    block = 2 * 4 * d * d + 4 * d * ctx + 2 * 2 * d * ff
    return float(n_layer * block + 2 * d * config.vocab_size)


def config_keys() -> set[str]:
    """Every key of the family's config (what ``model`` overrides may set)."""
    from transformers import GPTNeoXConfig

    return set(GPTNeoXConfig().to_dict())


def build(vocab_size: int, n_ctx: int, width: int, depth: int, heads: int, **overrides: Any) -> nn.Module:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=width,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=4 * width,
        max_position_embeddings=n_ctx,
        rotary_pct=0.25,
        use_parallel_residual=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=True,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
    )
    return GPTNeoXForCausalLM(GPTNeoXConfig(**{**kwargs, **overrides}))
