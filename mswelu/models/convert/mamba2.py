"""Move Mamba-2 language-model weights between our model and other implementations.

Our model with ``mixer: mamba2`` and the reference arrangement (SiLU, RMSNorm pre-norm blocks, no positions,
no post-mixer activation, no dense stack) is the Mamba-2 LM, and its mixer has the names and shapes of
transformers' ``Mamba2Mixer`` and mamba-ssm's ``Mamba2`` (``in_proj``, ``conv1d``, ``dt_bias``, ``A_log``,
``D``, ``norm.weight``, ``out_proj``), so weights map one to one onto:

- transformers' ``Mamba2ForCausalLM`` (:func:`from_hf_mamba2`, :func:`to_hf_mamba2`);
- mamba-ssm's ``MambaLMHeadModel`` with ``ssm_cfg.layer = "Mamba2"`` (:func:`from_mamba_ssm2`, and
  :func:`mswelu.models.convert.load_mamba_ssm_checkpoint`, which reads the layer kind from the checkpoint).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from transformers import Mamba2Config, Mamba2ForCausalLM

from mswelu.models.configuration import MsweluConfig
from mswelu.models.convert import common
from mswelu.models.modeling import MsweluForCausalLM

__all__ = [
    "config_from_hf_mamba2",
    "config_from_mamba_ssm2",
    "from_hf_mamba2",
    "from_mamba_ssm2",
    "to_hf_mamba2",
]


def config_from_hf_mamba2(hf_config: Mamba2Config) -> MsweluConfig:
    """Our config for the architecture of a transformers ``Mamba2Config``."""
    d_inner = int(hf_config.expand * hf_config.hidden_size)
    if hf_config.num_heads * hf_config.head_dim != d_inner:
        raise ValueError(
            f"num_heads ({hf_config.num_heads}) x head_dim ({hf_config.head_dim}) must equal expand x "
            f"hidden_size = {d_inner} (the whole inner width is SSM)"
        )
    _check_groups(int(hf_config.n_groups))
    return common.config_from_hf(
        hf_config,
        "mamba2",
        headdim=hf_config.head_dim,
        n_groups=hf_config.n_groups,
        chunk_size=hf_config.chunk_size,
        dt_limit=tuple(hf_config.time_step_limit),
    )


def hf_norm_is_grouped() -> bool:
    """Whether the installed transformers' Mamba-2 normalises the gated output group by group, as mamba-ssm
    and this package do. Older releases (5.4, for one) normalise over all groups at once, which is the same
    only with ``n_groups`` 1."""
    from transformers.models.mamba2 import modeling_mamba2

    # named MambaRMSNormGated up to transformers 5.24, Mamba2RMSNormGated from 5.25
    norm = getattr(modeling_mamba2, "Mamba2RMSNormGated", None) or modeling_mamba2.MambaRMSNormGated
    return "group_size" in inspect.signature(norm.__init__).parameters


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
) -> MsweluForCausalLM:
    """Our model with the weights of a transformers ``Mamba2ForCausalLM`` (or its state dict + config)."""
    return common.from_hf(hf_model_or_state_dict, hf_config, Mamba2ForCausalLM, config_from_hf_mamba2)


def to_hf_mamba2(model: MsweluForCausalLM) -> Mamba2ForCausalLM:
    """A transformers ``Mamba2ForCausalLM`` with our weights (the reference Mamba-2 arrangement, SiLU)."""
    c = model.config
    _check_groups(c.n_groups)
    return common.to_hf(
        model,
        "mamba2",
        Mamba2Config,
        Mamba2ForCausalLM,
        n_groups=c.n_groups,
        head_dim=c.headdim,
        num_heads=c.d_inner // c.headdim,
        chunk_size=c.chunk_size,
        time_step_limit=tuple(c.dt_limit),
    )


def config_from_mamba_ssm2(cfg: dict[str, Any]) -> MsweluConfig:
    """Our config from a mamba-ssm ``config.json`` whose ``ssm_cfg.layer`` is ``Mamba2`` (the whole inner
    width SSM: ``d_ssm`` unset; RMSNorm; no MLP)."""
    ssm = dict(cfg.get("ssm_cfg") or {})
    if ssm.get("layer") != "Mamba2":
        raise ValueError(f"not a Mamba-2 checkpoint: ssm_cfg.layer={ssm.get('layer')!r}")
    if ssm.get("d_ssm") is not None:
        raise ValueError("Mamba-2 checkpoints with d_ssm set (an MLP-gated part) do not convert")
    if ssm.get("norm_before_gate", False) or not ssm.get("rmsnorm", True):
        raise ValueError("only Mamba-2 checkpoints with rmsnorm=True, norm_before_gate=False convert")
    return common.config_from_mamba_ssm_cfg(
        cfg,
        "mamba2",
        d_state=128,
        headdim=int(ssm.get("headdim", 64)),
        n_groups=int(ssm.get("ngroups", 1)),
        chunk_size=int(ssm.get("chunk_size", 256)),
        dt_limit=tuple(float(v) for v in ssm.get("dt_limit", (0.0, math.inf))),
    )


def from_mamba_ssm2(
    state_dict: dict[str, torch.Tensor], config: MsweluConfig | dict[str, Any]
) -> MsweluForCausalLM:
    """Our model from a mamba-ssm ``MambaLMHeadModel`` state dict of ``Mamba2`` layers and its config."""
    return common.from_mamba_ssm_state_dict(state_dict, config, "mamba2", config_from_mamba_ssm2)
