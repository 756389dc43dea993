"""Move Mamba-1 language-model weights between our model and other implementations.

Our ``mamba-130m`` architecture with ``activation="silu"`` is the reference Mamba-1 LM, so its
weights map one to one (same mixer names and shapes) onto:

- transformers' ``MambaForCausalLM``: ``backbone.embeddings``, ``backbone.layers.i.{norm,mixer}``,
  ``backbone.norm_f``, ``lm_head`` (:func:`from_hf_mamba`, :func:`to_hf_mamba`);
- mamba-ssm's ``MambaLMHeadModel`` (state-spaces/* checkpoints): ``backbone.embedding``,
  ``backbone.layers.i.{norm,mixer}``, ``backbone.norm_f``, ``lm_head``
  (:func:`from_mamba_ssm`, :func:`load_mamba_ssm_checkpoint`).

Ours: ``backbone.embeddings``, ``backbone.blocks.i.{norm,mixer}``, ``backbone.norm_f``, ``lm_head``.
A converted model can then be switched to SWELU only by re-building it (the SiLU slots have no k).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import MambaConfig, MambaForCausalLM

from mswelu.configuration import MambaSWELUConfig
from mswelu.convert.common import load_strict, reference_arch, rename_layers
from mswelu.modeling import MambaSWELUForCausalLM

__all__ = [
    "config_from_hf_mamba",
    "config_from_mamba_ssm",
    "from_hf_mamba",
    "from_mamba_ssm",
    "load_mamba_ssm_checkpoint",
    "to_hf_mamba",
]


def config_from_hf_mamba(hf_config: MambaConfig) -> MambaSWELUConfig:
    """Our config for the architecture of a transformers ``MambaConfig``."""
    if hf_config.hidden_act != "silu":
        raise ValueError(f"only hidden_act='silu' Mamba models convert, got {hf_config.hidden_act!r}")
    return MambaSWELUConfig(
        **reference_arch(
            vocab_size=hf_config.vocab_size,
            d_model=hf_config.hidden_size,
            layer_pattern="M" * hf_config.num_hidden_layers,
            d_state=hf_config.state_size,
            d_conv=hf_config.conv_kernel,
            expand=hf_config.expand,
            dt_rank=int(hf_config.time_step_rank),
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
    problems = [
        f"{k}={getattr(config, k)!r} (need {v!r})"
        for k, v in reference_arch().items()
        if k not in ("init_scheme", "pad_vocab_size_multiple") and getattr(config, k) != v
    ]
    if config.conv_mode != "learned":  # transformers' and mamba-ssm's Mamba have the learned conv only
        problems.append(f"conv_mode={config.conv_mode!r} (need 'learned')")
    if set(config.layer_mixers()) != {"mamba1"}:
        problems.append(
            f"layer_pattern={config.layer_pattern!r} with mixer={config.mixer!r} (need only mamba1 blocks)"
        )
    if problems:
        raise ValueError("model is not the reference Mamba-1 architecture: " + ", ".join(problems))


def from_hf_mamba(
    hf_model_or_state_dict: MambaForCausalLM | dict[str, torch.Tensor], hf_config: MambaConfig | None = None
) -> MambaSWELUForCausalLM:
    """Our model with the weights of a transformers ``MambaForCausalLM`` (or its state dict + config)."""
    if isinstance(hf_model_or_state_dict, MambaForCausalLM):
        hf_config = hf_config or hf_model_or_state_dict.config
        state_dict = hf_model_or_state_dict.state_dict()
    else:
        if hf_config is None:
            raise ValueError("from_hf_mamba: pass hf_config together with a state dict")
        state_dict = hf_model_or_state_dict
    model = MambaSWELUForCausalLM(config_from_hf_mamba(hf_config))
    load_strict(
        model,
        rename_layers(state_dict, "layers", "blocks", ("embeddings", "embeddings")),
        "transformers Mamba",
    )
    return model.to(next(iter(state_dict.values())).dtype)


def to_hf_mamba(model: MambaSWELUForCausalLM) -> MambaForCausalLM:
    """A transformers ``MambaForCausalLM`` with our weights (reference architecture with SiLU only)."""
    c = model.config
    _check_reference(c)
    hf_config = MambaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        state_size=c.d_state,
        num_hidden_layers=c.n_layer,
        layer_norm_epsilon=c.layer_norm_epsilon,
        expand=c.expand,
        conv_kernel=c.d_conv,
        use_bias=c.proj_bias,
        use_conv_bias=c.conv_bias,
        hidden_act="silu",
        time_step_rank=c.resolved_dt_rank,
        time_step_min=c.dt_min,
        time_step_max=c.dt_max,
        time_step_floor=c.dt_init_floor,
        tie_word_embeddings=c.tie_word_embeddings,
        eos_token_id=c.eos_token_id,
        bos_token_id=c.bos_token_id,
        pad_token_id=c.pad_token_id,
    )
    hf = MambaForCausalLM(hf_config)
    state_dict = rename_layers(model.state_dict(), "blocks", "layers", ("embeddings", "embeddings"))
    result = hf.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and c.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"weights do not fit MambaForCausalLM: missing {missing}, unexpected {result.unexpected_keys}"
        )
    if c.tie_word_embeddings:
        hf.tie_weights()
    return hf.to(model.dtype)


def config_from_mamba_ssm(cfg: dict[str, Any]) -> MambaSWELUConfig:
    """Our config from a mamba-ssm ``config.json`` (``d_model, n_layer, vocab_size, ssm_cfg, rms_norm,
    pad_vocab_size_multiple, tie_embeddings``); only Mamba-1 LMs with RMSNorm convert."""
    ssm_cfg = dict(cfg.get("ssm_cfg") or {})
    if ssm_cfg.get("layer", "Mamba1") != "Mamba1":
        raise ValueError(f"only Mamba-1 checkpoints convert, got ssm_cfg.layer={ssm_cfg['layer']!r}")
    if not cfg.get("rms_norm", True):
        raise ValueError("only rms_norm=True mamba-ssm checkpoints convert")
    if cfg.get("d_intermediate", 0):
        raise ValueError("mamba-ssm checkpoints with an MLP (d_intermediate > 0) do not convert")
    d_model = int(cfg["d_model"])
    return MambaSWELUConfig(
        **reference_arch(
            vocab_size=int(cfg["vocab_size"]),
            pad_vocab_size_multiple=int(cfg.get("pad_vocab_size_multiple", 8)),
            d_model=d_model,
            layer_pattern="M" * int(cfg["n_layer"]),
            d_state=int(ssm_cfg.get("d_state", 16)),
            d_conv=int(ssm_cfg.get("d_conv", 4)),
            expand=int(ssm_cfg.get("expand", 2)),
            dt_rank=ssm_cfg.get("dt_rank", "auto"),
            conv_bias=bool(ssm_cfg.get("conv_bias", True)),
            proj_bias=bool(ssm_cfg.get("bias", False)),
            tie_word_embeddings=bool(cfg.get("tie_embeddings", True)),
            eos_token_id=0,
            bos_token_id=0,
            pad_token_id=0,
        )
    )


def from_mamba_ssm(
    state_dict: dict[str, torch.Tensor], config: MambaSWELUConfig | dict[str, Any]
) -> MambaSWELUForCausalLM:
    """Our model from a mamba-ssm ``MambaLMHeadModel`` state dict (``backbone.embedding.weight``,
    ``backbone.layers.i.mixer.*``, ``backbone.layers.i.norm.weight``, ``backbone.norm_f.weight``)."""
    if not isinstance(config, MambaSWELUConfig):
        config = config_from_mamba_ssm(config)
    _check_reference(config)
    model = MambaSWELUForCausalLM(config)
    load_strict(
        model, rename_layers(state_dict, "layers", "blocks", ("embedding", "embeddings")), "mamba-ssm"
    )
    return model


def load_mamba_ssm_checkpoint(path: str | Path) -> MambaSWELUForCausalLM:
    """Load a downloaded state-spaces/mamba-* or mamba2-* folder (``config.json`` + ``pytorch_model.bin`` or
    ``model.safetensors``), e.g. ``hf download state-spaces/mamba2-130m``; Mamba-1 or Mamba-2, mamba-ssm
    or transformers format, as the folder says."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: expected a mamba-ssm checkpoint folder")
    cfg = json.loads(cfg_file.read_text())
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state_dict = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").is_file():
        state_dict = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {path}")
    if "backbone.embeddings.weight" in state_dict:  # a transformers-format (*-hf) checkpoint
        if cfg.get("model_type") == "mamba2":
            from transformers import Mamba2Config

            from mswelu.convert.mamba2 import from_hf_mamba2

            return from_hf_mamba2(state_dict, Mamba2Config(**cfg))
        return from_hf_mamba(state_dict, MambaConfig(**cfg))
    if (cfg.get("ssm_cfg") or {}).get("layer") == "Mamba2":
        from mswelu.convert.mamba2 import from_mamba_ssm2

        return from_mamba_ssm2(state_dict, cfg)
    return from_mamba_ssm(state_dict, cfg)
