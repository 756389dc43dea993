"""MambaSWELUForCausalLM: the seed architecture with a real Mamba-1 mixer, as a Hugging Face model.

Layout (``backbone`` is :class:`MambaSWELUModel`)::

    backbone.embeddings (+ backbone.pos_embeddings)  -> dropout
    backbone.blocks[i]:  M: x + dropout(post_act(mixer(norm(x))))
                         A: x + dropout(attn(norm(x)))  [+ x + dropout(mlp(norm2(x)))]
    backbone.norm_f
    backbone.dense[j]:   fc -> act (-> dropout between layers), d -> h1 -> h2 -> d; replaces the
                         hidden state as in the seeds, or is added to it with ``dense_residual=True``
    lm_head              tied to backbone.embeddings by default

Generation keeps a :class:`MambaSWELUCache`: per Mamba layer a conv state and an SSM state (O(1)
per token), per attention layer its keys and values. ``generate`` (HF GenerationMixin) creates it
on the first forward and passes it back under the cache name of the installed transformers (``cache``
from 5.24 on, ``cache_params`` before: see :mod:`mswelu.hf_compat`).

Init (``init_scheme``): ``gpt2`` draws every Linear/Embedding from N(0, initializer_range) and the
projections that write into the residual stream (mixer out_proj, attention out_proj, MLP fc_out)
from N(0, initializer_range / sqrt(n_residual)); ``mamba`` is mamba-ssm's ``_init_weights``
(embedding N(0, 0.02), Linear biases zeroed, out_proj kaiming-uniform / sqrt(n_residual), other
Linear weights keep PyTorch's default). Both leave the mixer's own Mamba-1 init alone: dt_proj
(weight and the ``_no_reinit`` bias), conv1d, A_log and D are never re-initialised (the seed
code's init routine zeroed dt_proj.bias).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.models.mamba.modeling_mamba import MambaCausalLMOutput

from mswelu.configuration import MambaSWELUConfig
from mswelu.hf_compat import CACHE_NAMES, pick_cache
from mswelu.modules.activations import make_activation
from mswelu.modules.attention import MLP, CausalSelfAttention
from mswelu.modules.mamba_mixer import MambaMixer
from mswelu.modules.swelu import SWELU
from mswelu.ops.backends import BACKENDS, resolve_backend
from mswelu.ops.lm_loss import linear_cross_entropy, next_token_loss

__all__ = [
    "MambaSWELUCache",
    "MambaSWELUCausalLMOutput",
    "MambaSWELUForCausalLM",
    "MambaSWELUModel",
    "MambaSWELUPreTrainedModel",
    "RMSNorm",
    "parameter_count",
]


class RMSNorm(nn.Module):
    """RMSNorm as in Mamba / transformers' MambaRMSNorm (fp32 statistics, weight applied in input dtype)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _norm(config: MambaSWELUConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
    return nn.LayerNorm(config.d_model, eps=config.layer_norm_epsilon)


def _act(config: MambaSWELUConfig) -> nn.Module:
    return make_activation(config.activation, k_init=config.k_init, learnable_lambda=config.learnable_lambda)


class MambaSWELUCache:
    """Decoding state: Mamba conv/SSM states and attention keys/values per layer, and the offset.

    Not a ``transformers.Cache``: it holds recurrent states, which HF's cache classes model per
    architecture. It offers what ``generate`` touches (``get_seq_length``, ``reorder_cache``,
    ``is_compileable``).
    """

    is_compileable = False

    def __init__(self, config: MambaSWELUConfig) -> None:
        self.layer_pattern = config.layer_pattern
        n = config.n_layer
        self.conv_states: list[torch.Tensor | None] = [None] * n
        self.ssm_states: list[torch.Tensor | None] = [None] * n
        self.kv: list[list[torch.Tensor | None]] = [[None, None] for _ in range(n)]
        self.seqlen_offset = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seqlen_offset

    def _map(self, fn) -> None:
        self.conv_states = [None if t is None else fn(t) for t in self.conv_states]
        self.ssm_states = [None if t is None else fn(t) for t in self.ssm_states]
        self.kv = [[None if t is None else fn(t) for t in pair] for pair in self.kv]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select batch rows (beam search)."""
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))


class MambaSWELUCausalLMOutput(MambaCausalLMOutput):
    """``loss`` (with labels), ``logits`` (B, L, vocab) fp32, the cache, ``hidden_states``.

    The fields of transformers' own Mamba output, so the cache field has the name ``generate`` expects on
    the installed release (``cache`` from 5.24 on, ``cache_params`` before); read it with
    :func:`mswelu.hf_compat.output_cache`. Build it positionally: the cache's keyword differs by release.
    """


class MambaBlock(nn.Module):
    """``x + dropout(post_act(mixer(norm(x))))``; the seeds' LayerNorm -> Mamba -> SWELU -> residual."""

    def __init__(self, config: MambaSWELUConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.norm = _norm(config)
        if config.mixer_k_sharing == "shared":
            act_conv = act_gate = _act(config)
        else:
            act_conv, act_gate = _act(config), _act(config)
        self.mixer = MambaMixer(
            config.d_model,
            d_state=config.d_state,
            d_conv=config.d_conv,
            expand=config.expand,
            dt_rank=config.dt_rank,
            dt_min=config.dt_min,
            dt_max=config.dt_max,
            dt_init_floor=config.dt_init_floor,
            conv_bias=config.conv_bias,
            bias=config.proj_bias,
            act_conv=act_conv,
            act_gate=act_gate,
            backend=config.backend,
            layer_idx=layer_idx,
        )
        self.mixer.out_proj._residual_out = True
        if act_conv is act_gate and any(True for _ in act_conv.parameters()):  # the shared k, saved once
            self._tied_weights_keys = {
                f"mixer.act_gate.{n}": f"mixer.act_conv.{n}" for n, _ in act_conv.named_parameters()
            }
        self.post_act = _act(config) if config.post_mixer_act else nn.Identity()
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: MambaSWELUCache | None = None) -> torch.Tensor:
        h = self.norm(x)
        i = self.layer_idx
        if cache is None:
            y = self.mixer(h)
        elif cache.conv_states[i] is None:  # prefill from an empty state
            y, cache.conv_states[i], cache.ssm_states[i] = self.mixer.forward_with_states(h)
        else:  # continue from the state, one token at a time (O(1) each)
            conv, ssm = cache.conv_states[i], cache.ssm_states[i]
            y = torch.cat([self.mixer.step(h[:, t : t + 1], conv, ssm) for t in range(h.shape[1])], dim=1)
        return x + self.drop(self.post_act(y))


class AttentionBlock(nn.Module):
    """Pre-norm causal self-attention, plus an MLP (``attn_mlp_expand`` > 0) for the channel mixing
    that a Mamba block performs through its gate and projections."""

    def __init__(self, config: MambaSWELUConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.norm = _norm(config)
        self.attn = CausalSelfAttention(
            config.d_model, config.n_head, bias=config.proj_bias, dropout=config.dropout
        )
        self.attn.out_proj._residual_out = True
        self.drop = nn.Dropout(config.dropout)
        if config.attn_mlp_expand > 0:
            self.norm2 = _norm(config)
            self.mlp = MLP(config.d_model, config.attn_mlp_expand, _act(config), bias=config.proj_bias)
            self.mlp.fc_out._residual_out = True
        else:
            self.norm2 = self.mlp = None

    def forward(self, x: torch.Tensor, cache: MambaSWELUCache | None = None) -> torch.Tensor:
        kv = cache.kv[self.layer_idx] if cache is not None else None
        x = x + self.drop(self.attn(self.norm(x), kv_cache=kv))
        if self.mlp is not None:
            x = x + self.drop(self.mlp(self.norm2(x)))
        return x


class DenseLayer(nn.Module):
    """One layer of the seeds' dense stack: Linear then activation."""

    def __init__(self, d_in: int, d_out: int, act: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class MambaSWELUPreTrainedModel(PreTrainedModel):
    config_class = MambaSWELUConfig
    config: MambaSWELUConfig
    base_model_prefix = "backbone"
    _no_split_modules = ["MambaBlock", "AttentionBlock"]
    _is_stateful = True
    supports_gradient_checkpointing = False

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        """HF's tied keys plus ``mixer.act_gate.* -> mixer.act_conv.*`` where one SWELU serves both
        in-mixer slots (so safetensors saves it once and loading restores the sharing)."""
        tied = super().get_expanded_tied_weights_keys(all_submodels=all_submodels)
        if not all_submodels:
            for name, module in self.named_modules():
                if isinstance(module, MambaMixer) and module.act_conv is module.act_gate:
                    for pname, _ in module.act_conv.named_parameters():
                        tied[f"{name}.act_gate.{pname}"] = f"{name}.act_conv.{pname}"
        return tied

    def _n_residual(self) -> int:
        c = self.config
        n_attn = c.layer_pattern.count("A")
        return c.layer_pattern.count("M") + n_attn * (2 if c.attn_mlp_expand > 0 else 1)

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
        # MambaMixer (A_log, D, conv1d) and SWELU (k_raw, lambda_raw) keep their constructors' init.


class MambaSWELUModel(MambaSWELUPreTrainedModel):
    """Embeddings, blocks, final norm and dense stack: returns the hidden state fed to the LM head."""

    def __init__(self, config: MambaSWELUConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_embeddings = (
            nn.Embedding(config.max_position_embeddings, config.d_model)
            if config.pos_embedding == "learned"
            else None
        )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            [
                MambaBlock(config, i) if kind == "M" else AttentionBlock(config, i)
                for i, kind in enumerate(config.layer_pattern)
            ]
        )
        self.norm_f = _norm(config)
        sizes = (config.d_model, *config.dense_sizes, config.d_model) if config.dense_sizes else ()
        self.dense = nn.ModuleList(
            [DenseLayer(a, b, _act(config)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )
        self.dense_drop = nn.Dropout(config.dropout)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: MambaSWELUCache | None = None,
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
        for block in self.blocks:
            x = block(x, cache)
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


class MambaSWELUForCausalLM(MambaSWELUPreTrainedModel, GenerationMixin):
    """Causal LM: ``logits = lm_head(backbone(input_ids))``; see the module docstring."""

    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config: MambaSWELUConfig) -> None:
        super().__init__(config)
        self.backbone = MambaSWELUModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

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
        return False  # our forward creates its own MambaSWELUCache

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: MambaSWELUCache | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The whole prompt while the cache holds nothing, then only the tokens it has not seen.

        ``generate`` passes the cache as ``cache`` (transformers >= 5.24) or ``cache_params`` (earlier);
        whether this is a decoding step is read from the cache's contents, not from its presence or from
        ``is_first_iteration``, so a fresh or pre-created cache still gets the full prompt.
        """
        cache = pick_cache(cache=cache, **{n: kwargs.pop(n, None) for n in CACHE_NAMES[1:]})
        kwargs.pop("is_first_iteration", None)
        if isinstance(cache, MambaSWELUCache) and cache.seqlen_offset > 0:
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
        targets: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: MambaSWELUCache | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = True,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> MambaSWELUCausalLMOutput | tuple:
        """Logits (fp32) for every position; ``labels`` (usually ``input_ids``) are shifted here, once.

        ``targets`` (B, L), already aligned with ``input_ids`` (the trainer's ``w[:, 1:]``), returns the
        loss alone (``logits`` None), computed by the fused head + loss
        (:func:`mswelu.ops.lm_loss.linear_cross_entropy`): the same number without the full logits.

        With ``use_cache=True`` (or a ``cache``) the returned cache continues the sequence: pass it back
        with the next token(s) as ``cache`` (the older names ``cache_params`` and ``past_key_values`` are
        accepted too). ``attention_mask`` must be all ones (no padding support: batch prompts of equal
        length). ``cache_position`` is accepted for HF compatibility and checked against the cache.
        """
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError(
                "attention_mask with padding is not supported (Mamba states would absorb pad tokens): "
                "use prompts of equal length, or generate one prompt at a time"
            )
        cache = pick_cache(cache=cache, **{n: kwargs.pop(n, None) for n in CACHE_NAMES[1:]})
        if cache is not None and not isinstance(cache, MambaSWELUCache):
            raise ValueError(f"the cache must be a MambaSWELUCache, got {type(cache).__name__}")
        if cache is None and use_cache:
            cache = MambaSWELUCache(self.config)
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
        if targets is not None:
            if labels is not None or logits_to_keep:
                raise ValueError("targets replaces labels and logits: pass one of them")
            loss = linear_cross_entropy(hidden, self.lm_head.weight, targets)
            out = MambaSWELUCausalLMOutput(loss, None, cache, all_hidden)
            return out if return_dict is not False else out.to_tuple()
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden).float()
        loss = None
        if labels is not None:  # shift the labels (not the logits: no copy of the big tensor)
            shifted = F.pad(labels[:, 1:].to(logits.device), (0, 1), value=-100)
            loss = next_token_loss(logits, shifted)
        out = MambaSWELUCausalLMOutput(loss, logits, cache, all_hidden)
        return out if return_dict is not False else out.to_tuple()

    # ---------------------------------------------------------------- research helpers
    def swelu_slots(self) -> list[tuple[str, SWELU]]:
        """Every SWELU with a readable name, in layer order; a shared in-mixer SWELU appears once as
        ``blocks.i.mixer.act``, separate ones as ``blocks.i.mixer.act_conv`` / ``act_gate``."""
        slots: list[tuple[str, nn.Module]] = []
        for i, block in enumerate(self.backbone.blocks):
            if isinstance(block, MambaBlock):
                mixer = block.mixer
                if mixer.act_conv is mixer.act_gate:
                    slots.append((f"blocks.{i}.mixer.act", mixer.act_conv))
                else:
                    slots += [
                        (f"blocks.{i}.mixer.act_conv", mixer.act_conv),
                        (f"blocks.{i}.mixer.act_gate", mixer.act_gate),
                    ]
                slots.append((f"blocks.{i}.post_act", block.post_act))
            elif block.mlp is not None:
                slots.append((f"blocks.{i}.mlp.act", block.mlp.act))
        slots += [(f"dense.{j}.act", layer.act) for j, layer in enumerate(self.backbone.dense)]
        return [(name, m) for name, m in slots if isinstance(m, SWELU)]

    def swelu_values(self) -> dict[str, dict[str, float]]:
        """``{name: {"k": k, "lambda": lam}}`` of every SWELU (effective values), in layer order."""
        return {name: m.values() for name, m in self.swelu_slots()}

    def num_k(self, learnable_only: bool = False) -> int:
        """Number of SWELU k values (frozen ones included unless ``learnable_only``)."""
        return sum(1 for _, m in self.swelu_slots() if m.learnable_k or not learnable_only)

    def backend_in_use(self, device: torch.device | str | None = None) -> str:
        """``"cuda"`` or ``"torch"``: the mixer path a forward on ``device`` (default: the model's) takes."""
        probe = torch.empty(0, device=device if device is not None else self.device)
        return resolve_backend(self.config.backend, probe)

    def set_backend(self, backend: str) -> None:
        """Switch every mixer (and the config) to ``backend`` in ("auto", "torch", "cuda")."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: expected one of {BACKENDS}")
        self.config.backend = backend
        for block in self.backbone.blocks:
            if isinstance(block, MambaBlock):
                block.mixer.backend = backend


def parameter_count(config: MambaSWELUConfig) -> int:
    """Unique parameters of the model ``config`` describes (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        model = MambaSWELUForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


AutoConfig.register(MambaSWELUConfig.model_type, MambaSWELUConfig, exist_ok=True)
AutoModelForCausalLM.register(MambaSWELUConfig, MambaSWELUForCausalLM, exist_ok=True)
