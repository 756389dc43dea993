"""What the model hands ``generate``: the decoding state (:class:`MsweluCache`) and the output that carries it
under the installed transformers' cache name (:mod:`mswelu.base.hf_compat`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.utils import ModelOutput

from mswelu.base.hf_compat import CACHE_RENAMED
from mswelu.models.configuration import MsweluConfig

__all__ = ["MsweluCache", "MsweluCausalLMOutput", "causal_lm_output"]


class MsweluCache:
    """Decoding state: one dict of tensors per block, owned and filled by the block, and the number of tokens
    seen. Not a ``transformers.Cache`` (it holds recurrent states): it offers what ``generate`` touches."""

    is_compileable = False

    def __init__(self, config: MsweluConfig) -> None:
        self.states: list[dict[str, torch.Tensor]] = [{} for _ in range(config.n_layer)]
        self.seqlen_offset = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seqlen_offset

    def _map(self, fn) -> None:
        self.states = [{k: None if t is None else fn(t) for k, t in state.items()} for state in self.states]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select batch rows (beam search)."""
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))


@dataclass
class MsweluCausalLMOutput(ModelOutput):
    """``loss`` (with labels), ``logits`` (B, L, vocab) fp32, the cache, ``hidden_states``. The cache travels
    in the field ``generate`` reads on the installed release (``cache`` from transformers 5.24 on,
    ``cache_params`` before): build it with :func:`causal_lm_output`, read it with
    :func:`mswelu.base.hf_compat.output_cache`. Our own class, so that importing this module never imports a
    transformers model (``import mswelu`` registers this one while transformers may be importing its own).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Any = None
    cache_params: Any = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def causal_lm_output(loss: Any, logits: Any, cache: Any, hidden_states: Any) -> MsweluCausalLMOutput:
    field = "cache" if CACHE_RENAMED else "cache_params"
    return MsweluCausalLMOutput(loss=loss, logits=logits, hidden_states=hidden_states, **{field: cache})
