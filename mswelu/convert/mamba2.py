"""Move Mamba-2 language-model weights between our model and other implementations.

Our model with ``mixer: mamba2`` and the reference arrangement (SiLU, RMSNorm pre-norm blocks, no positions,
no post-mixer activation, no dense stack) is the Mamba-2 LM, and its mixer has the names and shapes of
transformers' ``Mamba2Mixer`` and mamba-ssm's ``Mamba2`` (``in_proj``, ``conv1d``, ``dt_bias``, ``A_log``,
``D``, ``norm.weight``, ``out_proj``), so weights map one to one onto:

- transformers' ``Mamba2ForCausalLM`` (:func:`from_hf_mamba2`, :func:`to_hf_mamba2`);
- mamba-ssm's ``MambaLMHeadModel`` with ``ssm_cfg.layer = "Mamba2"`` (:func:`from_mamba_ssm2`, and
  :func:`mswelu.convert.load_mamba_ssm_checkpoint`, which reads the layer kind from the checkpoint).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from transformers import Mamba2Config, Mamba2ForCausalLM

from mswelu.configuration import MambaSWELUConfig
from mswelu.convert.common import load_strict, reference_arch, rename_layers
from mswelu.modeling import MambaSWELUForCausalLM

__all__ = [
    "config_from_hf_mamba2",
    "config_from_mamba_ssm2",
    "from_hf_mamba2",
    "from_mamba_ssm2",
    "to_hf_mamba2",
]


def config_from_hf_mamba2(hf_config: Mamba2Config) -> MambaSWELUConfig:
    """Our config for the architecture of a transformers ``Mamba2Config``."""
    if hf_config.hidden_act != "silu":
        raise ValueError(f"only hidden_act='silu' Mamba-2 models convert, got {hf_config.hidden_act!r}")
    d_inner = int(hf_config.expand * hf_config.hidden_size)
    if hf_config.num_heads * hf_config.head_dim != d_inner:
        raise ValueError(
            f"num_heads ({hf_config.num_heads}) x head_dim ({hf_config.head_dim}) must equal expand x "
            f"hidden_size = {d_inner} (the whole inner width is SSM)"
        )
    return MambaSWELUConfig(
        **reference_arch(
            mixer="mamba2",
            vocab_size=hf_config.vocab_size,
            d_model=hf_config.hidden_size,
            layer_pattern="M" * hf_config.num_hidden_layers,
            d_state=hf_config.state_size,
            d_conv=hf_config.conv_kernel,
            expand=hf_config.expand,
            headdim=hf_config.head_dim,
            n_groups=hf_config.n_groups,
            chunk_size=hf_config.chunk_size,
            dt_limit=tuple(hf_config.time_step_limit),
            dt_min=hf_config.time_step_min,
            dt_max=hf_config.time_step_max,
            dt_init_floor=hf_config.time_step_floor,
            conv_bias=hf_config.use_conv_bias,
            proj_bias=hf_config.use_bias,
            layer_norm_epsilon=hf_config.layer_norm_epsilon,
            tie_word_embeddings=hf_config.tie_word_embeddings,
            eos_token_id=hf_config.eos_token_id,
            bos_token_id=hf_config.bos_token_id,
            pad_token_id=hf_config.pad_token_id,
        )
    )


def _check_reference(config: MambaSWELUConfig) -> None:
    want = reference_arch(mixer="mamba2")
    problems = [
        f"{k}={getattr(config, k)!r} (need {v!r})"
        for k, v in want.items()
        if k not in ("init_scheme", "pad_vocab_size_multiple") and getattr(config, k) != v
    ]
    if set(config.layer_mixers()) != {"mamba2"}:
        problems.append(f"layer_pattern={config.layer_pattern!r} (need only mamba2 blocks)")
    if problems:
        raise ValueError("model is not the reference Mamba-2 architecture: " + ", ".join(problems))


def hf_norm_is_grouped() -> bool:
    """Whether the installed transformers' Mamba-2 normalises the gated output group by group, as mamba-ssm
    and this package do. Older releases (5.4, for one) normalise over all groups at once, which is the same
    only with ``n_groups`` 1."""
    from transformers.models.mamba2.modeling_mamba2 import MambaRMSNormGated

    return "group_size" in inspect.signature(MambaRMSNormGated.__init__).parameters


def _check_groups(n_groups: int) -> None:
    if n_groups > 1 and not hf_norm_is_grouped():
        import transformers

        raise ValueError(
            f"n_groups={n_groups}: transformers {transformers.__version__}'s Mamba2 normalises the gated "
            "output over all groups at once, mamba-ssm and mswelu group by group, so the two models would "
            "not compute the same thing; upgrade transformers (newer releases normalise per group) or use "
            "n_groups=1"
        )


def from_hf_mamba2(
    hf_model_or_state_dict: Mamba2ForCausalLM | dict[str, torch.Tensor], hf_config: Mamba2Config | None = None
) -> MambaSWELUForCausalLM:
    """Our model with the weights of a transformers ``Mamba2ForCausalLM`` (or its state dict + config)."""
    if isinstance(hf_model_or_state_dict, Mamba2ForCausalLM):
        hf_config = hf_config or hf_model_or_state_dict.config
        state_dict = hf_model_or_state_dict.state_dict()
    else:
        if hf_config is None:
            raise ValueError("from_hf_mamba2: pass hf_config together with a state dict")
        state_dict = hf_model_or_state_dict
    _check_groups(int(hf_config.n_groups))
    model = MambaSWELUForCausalLM(config_from_hf_mamba2(hf_config))
    names = rename_layers(state_dict, "layers", "blocks", ("embeddings", "embeddings"))
    load_strict(model, names, "transformers Mamba2")
    return model.to(next(iter(state_dict.values())).dtype)


def to_hf_mamba2(model: MambaSWELUForCausalLM) -> Mamba2ForCausalLM:
    """A transformers ``Mamba2ForCausalLM`` with our weights (the reference Mamba-2 arrangement, SiLU)."""
    c = model.config
    _check_reference(c)
    _check_groups(c.n_groups)
    hf_config = Mamba2Config(
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        state_size=c.d_state,
        num_hidden_layers=c.n_layer,
        layer_norm_epsilon=c.layer_norm_epsilon,
        expand=c.expand,
        conv_kernel=c.d_conv,
        n_groups=c.n_groups,
        head_dim=c.headdim,
        num_heads=c.d_inner // c.headdim,
        chunk_size=c.chunk_size,
        use_bias=c.proj_bias,
        use_conv_bias=c.conv_bias,
        hidden_act="silu",
        time_step_min=c.dt_min,
        time_step_max=c.dt_max,
        time_step_floor=c.dt_init_floor,
        time_step_limit=tuple(c.dt_limit),
        tie_word_embeddings=c.tie_word_embeddings,
        eos_token_id=c.eos_token_id,
        bos_token_id=c.bos_token_id,
        pad_token_id=c.pad_token_id,
    )
    hf = Mamba2ForCausalLM(hf_config)
    state_dict = rename_layers(model.state_dict(), "blocks", "layers", ("embeddings", "embeddings"))
    result = hf.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and c.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"weights do not fit Mamba2ForCausalLM: missing {missing}, unexpected {result.unexpected_keys}"
        )
    if c.tie_word_embeddings:
        hf.tie_weights()
    return hf.to(model.dtype)


def config_from_mamba_ssm2(cfg: dict[str, Any]) -> MambaSWELUConfig:
    """Our config from a mamba-ssm ``config.json`` whose ``ssm_cfg.layer`` is ``Mamba2`` (the whole inner
    width SSM: ``d_ssm`` unset; RMSNorm; no MLP)."""
    ssm = dict(cfg.get("ssm_cfg") or {})
    if ssm.get("layer") != "Mamba2":
        raise ValueError(f"not a Mamba-2 checkpoint: ssm_cfg.layer={ssm.get('layer')!r}")
    if not cfg.get("rms_norm", True) or cfg.get("d_intermediate", 0):
        raise ValueError("only rms_norm=True Mamba-2 checkpoints without an MLP (d_intermediate 0) convert")
    if ssm.get("d_ssm") is not None:
        raise ValueError("Mamba-2 checkpoints with d_ssm set (an MLP-gated part) do not convert")
    if ssm.get("norm_before_gate", False) or not ssm.get("rmsnorm", True):
        raise ValueError("only Mamba-2 checkpoints with rmsnorm=True, norm_before_gate=False convert")
    limit = ssm.get("dt_limit", (0.0, math.inf))
    return MambaSWELUConfig(
        **reference_arch(
            mixer="mamba2",
            vocab_size=int(cfg["vocab_size"]),
            pad_vocab_size_multiple=int(cfg.get("pad_vocab_size_multiple", 8)),
            d_model=int(cfg["d_model"]),
            layer_pattern="M" * int(cfg["n_layer"]),
            d_state=int(ssm.get("d_state", 128)),
            d_conv=int(ssm.get("d_conv", 4)),
            expand=int(ssm.get("expand", 2)),
            headdim=int(ssm.get("headdim", 64)),
            n_groups=int(ssm.get("ngroups", 1)),
            chunk_size=int(ssm.get("chunk_size", 256)),
            dt_limit=tuple(float(v) for v in limit),
            conv_bias=bool(ssm.get("conv_bias", True)),
            proj_bias=bool(ssm.get("bias", False)),
            tie_word_embeddings=bool(cfg.get("tie_embeddings", True)),
            eos_token_id=0,
            bos_token_id=0,
            pad_token_id=0,
        )
    )


def from_mamba_ssm2(
    state_dict: dict[str, torch.Tensor], config: MambaSWELUConfig | dict[str, Any]
) -> MambaSWELUForCausalLM:
    """Our model from a mamba-ssm ``MambaLMHeadModel`` state dict of ``Mamba2`` layers
    (``backbone.embedding.weight``, ``backbone.layers.i.{norm,mixer}.*``, ``backbone.norm_f.weight``)."""
    if not isinstance(config, MambaSWELUConfig):
        config = config_from_mamba_ssm2(config)
    _check_reference(config)
    model = MambaSWELUForCausalLM(config)
    load_strict(
        model, rename_layers(state_dict, "layers", "blocks", ("embedding", "embeddings")), "mamba-ssm"
    )
    return model
