"""GPT-2 (``transformers.GPT2LMHeadModel``): learned positions, 4x MLP, tied head, no dropout."""

from __future__ import annotations

from typing import Any

from torch import nn

#: Config keys that fix the size (given any of them, no size matching happens).
SIZE_KEYS = ("n_embd", "n_layer", "n_head")


def parameter_count(d: int, n_layer: int, vocab_size: int, n_ctx: int, tied: bool = True) -> int:
    """Closed form: 12 d^2 + 13 d per block (attention, 4x MLP, biases, two LayerNorms), token and
    position tables, the final norm, and the head when untied. Checked against real builds in the tests."""
    n = vocab_size * d + n_ctx * d + n_layer * (12 * d * d + 13 * d) + 2 * d
    return n + (0 if tied else vocab_size * d)


def flops_per_token(config: Any, seq_len: int, causal: bool = True) -> float:
    """Forward model FLOPs per token of a built model's config: per block the q/k/v/out projections, the
    scores and weighted sum over the context (causal: (seq_len + 1) / 2 keys on average) and the MLP, then
    the LM head; 2 per multiply-add (see :mod:`mswelu.models.flops`)."""
    d, n_layer = config.n_embd, config.n_layer
    ff = getattr(config, "n_inner", None) or 4 * d
    ctx = (seq_len + 1) / 2 if causal else seq_len
    block = 2 * 4 * d * d + 4 * d * ctx + 2 * 2 * d * ff
    return float(n_layer * block + 2 * d * config.vocab_size)


def config_keys() -> set[str]:
    """Every key of the family's config (what ``model`` overrides may set)."""
    from transformers import GPT2Config

    return set(GPT2Config().to_dict())


def build(vocab_size: int, n_ctx: int, width: int, depth: int, heads: int, **overrides: Any) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        n_positions=n_ctx,
        n_embd=width,
        n_layer=depth,
        n_head=heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
    )
    return GPT2LMHeadModel(GPT2Config(**{**kwargs, **overrides}))
