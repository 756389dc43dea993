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

from mswelu.models.configuration import MsweluConfig
from mswelu.models.convert import common
from mswelu.models.modeling import MsweluForCausalLM

__all__ = [
    "config_from_hf_mamba",
    "config_from_mamba_ssm",
    "from_hf_mamba",
    "from_mamba_ssm",
    "load_mamba_ssm_checkpoint",
    "to_hf_mamba",
]


def config_from_hf_mamba(hf_config: MambaConfig) -> MsweluConfig:
    """Our config for the architecture of a transformers ``MambaConfig``."""
    return common.config_from_hf(hf_config, "mamba1", dt_rank=int(hf_config.time_step_rank))


def from_hf_mamba(
    hf_model_or_state_dict: MambaForCausalLM | dict[str, torch.Tensor], hf_config: MambaConfig | None = None
) -> MsweluForCausalLM:
    """Our model with the weights of a transformers ``MambaForCausalLM`` (or its state dict + config)."""
    return common.from_hf(hf_model_or_state_dict, hf_config, MambaForCausalLM, config_from_hf_mamba)


def to_hf_mamba(model: MsweluForCausalLM) -> MambaForCausalLM:
    """A transformers ``MambaForCausalLM`` with our weights (reference architecture with SiLU only)."""
    return common.to_hf(
        model, "mamba1", MambaConfig, MambaForCausalLM, time_step_rank=model.config.resolved_dt_rank
    )


def config_from_mamba_ssm(cfg: dict[str, Any]) -> MsweluConfig:
    """Our config from a mamba-ssm ``config.json``; only Mamba-1 LMs with RMSNorm convert."""
    ssm_cfg = dict(cfg.get("ssm_cfg") or {})
    if ssm_cfg.get("layer", "Mamba1") != "Mamba1":
        raise ValueError(f"only Mamba-1 checkpoints convert, got ssm_cfg.layer={ssm_cfg['layer']!r}")
    return common.config_from_mamba_ssm_cfg(cfg, "mamba1", d_state=16, dt_rank=ssm_cfg.get("dt_rank", "auto"))


def from_mamba_ssm(
    state_dict: dict[str, torch.Tensor], config: MsweluConfig | dict[str, Any]
) -> MsweluForCausalLM:
    """Our model from a mamba-ssm ``MambaLMHeadModel`` state dict of Mamba-1 layers and its config."""
    return common.from_mamba_ssm_state_dict(state_dict, config, "mamba1", config_from_mamba_ssm)


def load_mamba_ssm_checkpoint(path: str | Path) -> MsweluForCausalLM:
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

            from mswelu.models.convert.mamba2 import from_hf_mamba2

            return from_hf_mamba2(state_dict, Mamba2Config(**cfg))
        return from_hf_mamba(state_dict, MambaConfig(**cfg))
    if (cfg.get("ssm_cfg") or {}).get("layer") == "Mamba2":
        from mswelu.models.convert.mamba2 import from_mamba_ssm2

        return from_mamba_ssm2(state_dict, cfg)
    return from_mamba_ssm(state_dict, cfg)
