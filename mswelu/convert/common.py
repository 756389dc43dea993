"""What every conversion shares: the fields that make our model a reference Mamba LM, the strict load, and
the renaming between our block names and the other implementations' layer names."""

from __future__ import annotations

import re
from typing import Any

import torch

from mswelu.modeling import MambaSWELUForCausalLM

__all__ = ["load_strict", "reference_arch", "rename_layers"]


def reference_arch(**overrides: Any) -> dict[str, Any]:
    """Config fields that make our model the reference Mamba-1 LM."""
    arch = {
        "mixer": "mamba1",
        "activation": "silu",
        "post_mixer_act": False,
        "dense_sizes": (),
        "pos_embedding": "none",
        "norm": "rmsnorm",
        "init_scheme": "mamba",
        "pad_vocab_size_multiple": 1,
    }
    arch.update(overrides)
    return arch


def load_strict(model: MambaSWELUForCausalLM, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict load; the tied head may be absent from the source."""
    if model.config.tie_word_embeddings:
        state_dict = {k: v for k, v in state_dict.items() if k != "lm_head.weight"}
    result = model.load_state_dict(state_dict, strict=False)
    missing = [
        k for k in result.missing_keys if not (k == "lm_head.weight" and model.config.tie_word_embeddings)
    ]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{source} weights do not fit: missing {missing}, unexpected {list(result.unexpected_keys)}"
        )


def rename_layers(state_dict: dict[str, torch.Tensor], src: str, dst: str, embedding: tuple[str, str]):
    out = {}
    pattern = re.compile(rf"^backbone\.{src}\.(\d+)\.(norm\.weight|mixer\..+)$")
    for key, value in state_dict.items():
        m = pattern.match(key)
        if m:
            key = f"backbone.{dst}.{m.group(1)}.{m.group(2)}"
        elif key == f"backbone.{embedding[0]}.weight":
            key = f"backbone.{embedding[1]}.weight"
        out[key] = value
    return out
