"""MsweluForCausalLM: the seed architecture with real state-space mixers, as a Hugging Face model.

Layout (``backbone`` is :class:`MsweluModel`)::

    backbone.embeddings (+ backbone.pos_embeddings)  -> dropout
    backbone.blocks[i]:  a block of the mixer its ``layer_pattern`` letter names (``modules/mixers``),
                         e.g. M: x + dropout(post_act(mixer(norm(x))))
                              A: x + dropout(attn(norm(x)))  [+ x + dropout(mlp(norm2(x)))]
    backbone.norm_f
    backbone.dense[j]:   fc -> act (-> dropout between layers), d -> h1 -> h2 -> d; replaces the
                         hidden state as in the seeds, or is added to it with ``dense_residual=True``
    lm_head              tied to backbone.embeddings by default

Generation keeps a :class:`MsweluCache`: one state per block, owned by the block (a Mamba layer's conv and
SSM states, O(1) per token; an attention layer's keys and values), passed back under the installed
transformers' cache name (:mod:`mswelu.base.hf_compat`).

Init (``init_scheme``): ``gpt2`` draws every Linear/Embedding from N(0, initializer_range), the projections
that write into the residual stream from N(0, initializer_range / sqrt(n_residual)); ``mamba`` is mamba-ssm's
``_init_weights`` (embedding N(0, 0.02), Linear biases zeroed, out_proj kaiming-uniform / sqrt(n_residual),
other Linear weights keep PyTorch's default). Both leave the mixers' own init alone (dt, conv1d, A_log, D:
the seed code's init zeroed dt_proj.bias).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init

from mswelu.base.errors import unknown_choice
from mswelu.base.hf_compat import CACHE_NAMES, pick_cache
from mswelu.models.cache import MsweluCache, MsweluCausalLMOutput, causal_lm_output
from mswelu.models.configuration import MsweluConfig
from mswelu.modules.activations import apply_slot_inits, effective_shape, spec_of
from mswelu.modules.activations import shape_values as activation_shape_values
from mswelu.modules.mixers import MIXERS, build_block, mixer_spec
from mswelu.modules.mixers.common import activation_for, norm_for
from mswelu.modules.norms import RMSNorm
from mswelu.modules.slots import ShapeSlot
from mswelu.ops.backends import BACKENDS, resolve_backend
from mswelu.ops.lm_loss import linear_cross_entropy

__all__ = [
    "MsweluForCausalLM",
    "MsweluModel",
    "MsweluPreTrainedModel",
    "RMSNorm",
    "parameter_count",
]


class DenseLayer(nn.Module):
    """One layer of the seeds' dense stack: Linear then activation."""

    def __init__(self, d_in: int, d_out: int, act: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class MsweluPreTrainedModel(PreTrainedModel):
    config_class = MsweluConfig
    config: MsweluConfig
    base_model_prefix = "backbone"
    _no_split_modules = [m.block.__name__ for m in MIXERS.values()]
    _is_stateful = True
    supports_gradient_checkpointing = True  # per block: gradient_checkpointing_enable()

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        """HF's tied keys plus each block's own ``_tied_weights_keys`` (``mixer.act_gate.* ->
        mixer.act_conv.*`` where one activation serves both in-mixer slots): transformers ties only a
        ``PreTrainedModel``'s keys, so they are added here and loading restores the sharing."""
        tied = super().get_expanded_tied_weights_keys(all_submodels=all_submodels)
        if not all_submodels:
            prefix, blocks = self._blocks()
            for i, block in enumerate(blocks):
                keys = getattr(block, "_tied_weights_keys", None) or {}
                tied.update({f"{prefix}{i}.{k}": f"{prefix}{i}.{v}" for k, v in keys.items()})
        return tied

    def post_init(self) -> None:
        super().post_init()
        self._frozen = frozenset(n for n, p in self.named_parameters() if not p.requires_grad)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """transformers' loader, which makes every floating-point weight it loads trainable: the parameters
        this model's config freezes (a fixed k, a conv fixed to one) are frozen again."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        for name, p in model.named_parameters():
            p.requires_grad_(name not in model._frozen)
        return loaded

    def _blocks(self) -> tuple[str, nn.ModuleList]:
        """(the blocks' state-dict prefix, the blocks) of this model or its backbone."""
        if isinstance(getattr(self, "backbone", None), nn.Module):
            return "backbone.blocks.", self.backbone.blocks
        return "blocks.", self.blocks

    def _n_residual(self) -> int:
        """Projections writing into the residual stream, over all blocks (for the scaled init)."""
        return sum(block.residual_writes for block in self._blocks()[1])

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """See the module docstring; ``_no_reinit`` params and the mixer's SSM/conv params are skipped."""
        c = self.config
        std = c.initializer_range
        if isinstance(module, nn.Linear):
            if module.bias is not None and getattr(module.bias, "_no_reinit", False):
                return  # dt_proj: weight and bias keep the Mamba-1 timestep init
            residual = getattr(module, "_residual_out", False)
            if c.init_scheme == "gpt2":
                init.normal_(
                    module.weight, mean=0.0, std=std / math.sqrt(self._n_residual()) if residual else std
                )
            elif residual and not getattr(module.weight, "_is_hf_initialized", False):
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
                module.weight.div_(math.sqrt(self._n_residual()))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)


class MsweluModel(MsweluPreTrainedModel):
    """Embeddings, blocks, final norm and dense stack: returns the hidden state fed to the LM head."""

    def __init__(self, config: MsweluConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_embeddings = (
            nn.Embedding(config.max_position_embeddings, config.d_model)
            if config.pos_embedding == "learned"
            else None
        )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            [build_block(config, i, mixer) for i, mixer in enumerate(config.layer_mixers())]
        )
        self.norm_f = norm_for(config)
        sizes = (config.d_model, *config.dense_sizes, config.d_model) if config.dense_sizes else ()
        self.dense = nn.ModuleList(
            [DenseLayer(a, b, activation_for(config)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )
        self.dense_drop = nn.Dropout(config.dropout)
        self.gradient_checkpointing = False  # set by gradient_checkpointing_enable(): recompute each block
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: MsweluCache | None = None,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
            inputs_embeds = self.embeddings(input_ids)
        length = inputs_embeds.shape[1]
        if length < 1:
            raise ValueError("the input holds no tokens")
        offset = cache.seqlen_offset if cache is not None else 0
        x = inputs_embeds
        if self.pos_embeddings is not None:
            n_pos = self.config.max_position_embeddings
            if offset + length > n_pos:
                raise ValueError(
                    f"sequence length {offset + length} (offset {offset} + {length} new tokens) exceeds "
                    f"max_position_embeddings={n_pos} of the learned positional table"
                )
            pos = torch.arange(offset, offset + length, device=x.device)
            x = x + self.pos_embeddings(pos)
        x = self.drop(x)
        hidden = [x] if output_hidden_states else None
        recompute = (
            self.gradient_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        )
        for i, block in enumerate(self.blocks):
            if recompute:  # keep only the block's input; rerun it in the backward
                x = self._gradient_checkpointing_func(block.__call__, x, None)
            else:
                x = block(x, cache.states[i] if cache is not None else None)
            if hidden is not None:
                hidden.append(x)
        x = self.norm_f(x)
        if len(self.dense):
            h = x
            for j, layer in enumerate(self.dense):
                h = layer(h)
                if j < len(self.dense) - 1:
                    h = self.dense_drop(h)
            x = x + h if self.config.dense_residual else h
        if cache is not None:
            cache.seqlen_offset = offset + length
        return x, (tuple(hidden) if hidden is not None else None)


class MsweluForCausalLM(MsweluPreTrainedModel, GenerationMixin):
    """Causal LM: ``logits = lm_head(backbone(input_ids))``; see the module docstring."""

    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config: MsweluConfig) -> None:
        super().__init__(config)
        self.backbone = MsweluModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()
        apply_slot_inits(self.shape_slots(), config.activation, config.shape)  # a per-slot ``shape`` init

    # ---------------------------------------------------------------- HF plumbing
    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.backbone.embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # our forward creates its own MsweluCache

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: MsweluCache | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The whole prompt while the cache holds nothing, then only the tokens it has not seen (read from the
        cache's contents, not its presence or ``is_first_iteration``: a pre-created cache gets the prompt)."""
        cache = pick_cache(cache=cache, **{n: kwargs.pop(n, None) for n in CACHE_NAMES[1:]})
        kwargs.pop("is_first_iteration", None)
        if isinstance(cache, MsweluCache) and cache.seqlen_offset > 0:
            input_ids, inputs_embeds = input_ids[:, cache.seqlen_offset :], None
        inputs = {"input_ids": input_ids if inputs_embeds is None else None, "inputs_embeds": inputs_embeds}
        inputs.update(cache=cache, attention_mask=attention_mask, use_cache=kwargs.get("use_cache", True))
        if "logits_to_keep" in kwargs:
            inputs["logits_to_keep"] = kwargs["logits_to_keep"]
        return inputs

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        shift_labels: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: MsweluCache | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = True,
        logits_to_keep: int = 0,
        cache_params: MsweluCache | None = None,
        past_key_values: MsweluCache | None = None,
    ) -> MsweluCausalLMOutput | tuple:
        """Logits (fp32) for every position, and the mean next-token loss when given targets, in the Hugging
        Face convention: ``labels`` (B, L), usually ``input_ids``, are shifted here, once (the last position
        is not scored); ``shift_labels`` (B, L) are already aligned with ``input_ids`` (the trainer's
        ``w[:, 1:]``) and return the loss alone (``logits`` None: the full logits are never materialised).
        Either way the loss is one computation, the fused head + loss
        (:func:`mswelu.ops.lm_loss.linear_cross_entropy`).

        With ``use_cache=True`` (or a ``cache``) the returned cache continues the sequence: pass it back with
        the next token(s) as ``cache`` (or ``cache_params`` / ``past_key_values``). ``attention_mask`` must be
        all ones (no padding); ``cache_position`` is checked against the cache. Any other keyword is a
        TypeError (a misspelt argument is never ignored).
        """
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError(
                "attention_mask with padding is not supported (Mamba states would absorb pad tokens): "
                "use prompts of equal length, or generate one prompt at a time"
            )
        if labels is not None and shift_labels is not None:
            raise ValueError("pass labels (shifted here) or shift_labels (already aligned), not both")
        cache = pick_cache(cache=cache, cache_params=cache_params, past_key_values=past_key_values)
        if cache is not None and not isinstance(cache, MsweluCache):
            raise ValueError(f"the cache must be a MsweluCache, got {type(cache).__name__}")
        if cache is None and use_cache:
            cache = MsweluCache(self.config)
        if cache is not None and cache_position is not None and int(cache_position[0]) != cache.seqlen_offset:
            raise ValueError(
                f"cache_position starts at {int(cache_position[0])} but the cache holds "
                f"{cache.seqlen_offset} tokens"
            )
        hidden, all_hidden = self.backbone(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            cache=cache,
            output_hidden_states=bool(output_hidden_states),
        )
        if labels is not None:  # shift the labels (not the hidden states: no copy of the big tensor)
            shift_labels = F.pad(labels[:, 1:].to(hidden.device), (0, 1), value=-100)
        loss = (
            None if shift_labels is None else linear_cross_entropy(hidden, self.lm_head.weight, shift_labels)
        )
        logits = None
        if labels is not None or shift_labels is None:
            kept = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
            logits = self.lm_head(kept).float()
        out = causal_lm_output(loss, logits, cache, all_hidden)
        return out if return_dict is not False else out.to_tuple()

    # ---------------------------------------------------------------- research helpers
    def shape_slots(self) -> list[ShapeSlot]:
        """Every activation with shape parameters (SWELU's k, Swish's beta, ...) as a :class:`ShapeSlot`
        record (name, group, layer, slot, activation, its module), in layer order. A shared in-mixer
        activation appears once as ``blocks.i.mixer.act``, separate ones as ``blocks.i.mixer.act_conv`` /
        ``act_gate``; then ``blocks.i.post_act``, ``blocks.i.mlp.act`` and ``dense.j.act``."""
        found = [
            (f"blocks.{i}.{path}", module, group, i, slot, block.mixer_name)
            for i, block in enumerate(self.backbone.blocks)
            for path, module, group, slot in block.activation_slots()
        ]
        found += [
            (f"dense.{j}.act", layer.act, "dense", j, "", "") for j, layer in enumerate(self.backbone.dense)
        ]
        slots = []
        for name, module, group, layer, slot, mixer in found:
            spec = spec_of(module)
            if spec is None or not spec.params:
                continue
            with torch.enable_grad():  # a value that learns is a function of a parameter that does
                learn = tuple(p for p, v in effective_shape(module).items() if v.requires_grad)
            slots.append(
                ShapeSlot(name, group, layer, slot, spec.name, spec.param_names(), learn, mixer, module)
            )
        return slots

    def shape_values(self) -> dict[str, dict[str, float]]:
        """``{slot name: {param: value}}`` of every shape slot (effective values), in layer order."""
        return {s.name: activation_shape_values(s.module) for s in self.shape_slots()}

    def num_shape_slots(self, learnable_only: bool = False) -> int:
        """Number of activation slots with shape parameters (with ``learnable_only``: those that learn)."""
        return sum(1 for s in self.shape_slots() if s.learnable or not learnable_only)

    def backend_in_use(self, device: torch.device | str | None = None) -> str:
        """``"cuda"`` or ``"torch"``: the path the model's sequence mixer takes on ``device`` (default: the
        model's)."""
        probe = torch.empty(0, device=device if device is not None else self.device)
        available = mixer_spec(self.config.mixer).kernels_available
        return resolve_backend(self.config.backend, probe, available) if available else "torch"

    def set_backend(self, backend: str) -> None:
        """Switch every mixer (and the config) to ``backend`` in ("auto", "torch", "cuda")."""
        if backend not in BACKENDS:
            raise ValueError(unknown_choice("backend", backend, BACKENDS))
        self.config.backend = backend
        for module in self.modules():
            if module is not self and hasattr(module, "backend"):
                module.backend = backend


def parameter_count(config: MsweluConfig) -> int:
    """Unique parameters of the model ``config`` describes (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        model = MsweluForCausalLM(config)
    return sum(p.numel() for p in model.parameters())
