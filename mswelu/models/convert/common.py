"""What every conversion shares: the fields that make our model a reference Mamba LM, the fields our config
and transformers' Mamba configs have in common, the strict load, the renaming between our block names and the
other implementations' layer names, and the conversions themselves, given each mixer's own fields
(:mod:`.mamba1`, :mod:`.mamba2`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mswelu.models.configuration import MsweluConfig
from mswelu.models.modeling import MsweluForCausalLM

__all__ = [
    "check_reference",
    "config_from_hf",
    "config_from_mamba_ssm_cfg",
    "from_hf",
    "from_mamba_ssm_state_dict",
    "load_strict",
    "reference_arch",
    "rename_layers",
    "to_hf",
]

#: our mixer name -> its name in messages
LABELS = {"mamba1": "Mamba-1", "mamba2": "Mamba-2"}
#: our config field -> transformers' field, for the fields ``MambaConfig`` and ``Mamba2Config`` share
HF_FIELDS = {
    "vocab_size": "vocab_size",
    "d_model": "hidden_size",
    "d_state": "state_size",
    "d_conv": "conv_kernel",
    "expand": "expand",
    "dt_min": "time_step_min",
    "dt_max": "time_step_max",
    "dt_init_floor": "time_step_floor",
    "conv_bias": "use_conv_bias",
    "proj_bias": "use_bias",
    "layer_norm_epsilon": "layer_norm_epsilon",
    "tie_word_embeddings": "tie_word_embeddings",
    "eos_token_id": "eos_token_id",
    "bos_token_id": "bos_token_id",
    "pad_token_id": "pad_token_id",
}


def reference_arch(**overrides: Any) -> dict[str, Any]:
    """Config fields that make our model the reference Mamba-1 LM (``mixer="mamba2"``: Mamba-2's)."""
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


def check_reference(config: MsweluConfig, mixer: str) -> None:
    """A ValueError listing what keeps ``config`` from being the reference LM of ``mixer``."""
    problems = [
        f"{k}={getattr(config, k)!r} (need {v!r})"
        for k, v in reference_arch(mixer=mixer).items()
        if k not in ("init_scheme", "pad_vocab_size_multiple") and getattr(config, k) != v
    ]
    if config.conv_mode != "learned":  # transformers' and mamba-ssm's Mambas have the learned conv only
        problems.append(f"conv_mode={config.conv_mode!r} (need 'learned')")
    if set(config.layer_mixers()) != {mixer}:
        problems.append(
            f"layer_pattern={config.layer_pattern!r} with mixer={config.mixer!r} (need only {mixer} blocks)"
        )
    if problems:
        raise ValueError(f"model is not the reference {LABELS[mixer]} architecture: " + ", ".join(problems))


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict load; the tied head may be absent from the source."""
    tied = model.config.tie_word_embeddings
    if tied:
        state_dict = {k: v for k, v in state_dict.items() if k != "lm_head.weight"}
    result = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and tied)]
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


# ------------------------------------------------------------------------------------------ transformers
def config_from_hf(hf_config: Any, mixer: str, **own: Any) -> MsweluConfig:
    """Our config for a transformers Mamba config of ``mixer``, with that mixer's ``own`` fields."""
    if hf_config.hidden_act != "silu":
        raise ValueError(
            f"only hidden_act='silu' {LABELS[mixer]} models convert, got {hf_config.hidden_act!r}"
        )
    shared = {ours: getattr(hf_config, theirs) for ours, theirs in HF_FIELDS.items()}
    layers = "M" * hf_config.num_hidden_layers
    return MsweluConfig(**reference_arch(mixer=mixer, layer_pattern=layers, **shared, **own))


def from_hf(
    hf_model_or_state_dict: Any,
    hf_config: Any,
    hf_class: type,
    config_from: Callable[[Any], MsweluConfig],
) -> MsweluForCausalLM:
    """Our model with the weights of a transformers ``hf_class`` model (or its state dict + config);
    ``config_from``: our config for its config."""
    if isinstance(hf_model_or_state_dict, hf_class):
        hf_config = hf_config or hf_model_or_state_dict.config
        state_dict = hf_model_or_state_dict.state_dict()
    else:
        if hf_config is None:
            raise ValueError(f"{hf_class.__name__}: pass hf_config together with a state dict")
        state_dict = hf_model_or_state_dict
    model = MsweluForCausalLM(config_from(hf_config))
    names = rename_layers(state_dict, "layers", "blocks", ("embeddings", "embeddings"))
    load_strict(model, names, f"transformers {hf_class.__name__}")
    return model.to(next(iter(state_dict.values())).dtype)


def to_hf(model: MsweluForCausalLM, mixer: str, config_class: type, hf_class: type, **own: Any) -> Any:
    """A transformers ``hf_class`` model with our weights (the reference arrangement of ``mixer``, SiLU);
    ``own``: the mixer's transformers fields."""
    c = model.config
    check_reference(c, mixer)
    shared = {theirs: getattr(c, ours) for ours, theirs in HF_FIELDS.items()}
    hf_config = config_class(**shared, num_hidden_layers=c.n_layer, hidden_act="silu", **own)
    hf = hf_class(hf_config)
    state_dict = rename_layers(model.state_dict(), "blocks", "layers", ("embeddings", "embeddings"))
    result = hf.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and c.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"weights do not fit {hf_class.__name__}: missing {missing}, unexpected {result.unexpected_keys}"
        )
    if c.tie_word_embeddings:
        hf.tie_weights()
    return hf.to(model.dtype)


# ------------------------------------------------------------------------------------------ mamba-ssm
def config_from_mamba_ssm_cfg(cfg: dict[str, Any], mixer: str, d_state: int, **own: Any) -> MsweluConfig:
    """Our config from a mamba-ssm ``config.json`` (``d_model, n_layer, vocab_size, ssm_cfg, rms_norm,
    pad_vocab_size_multiple, tie_embeddings``) of RMSNorm blocks without an MLP; ``d_state``: the layer's
    default, ``own``: the mixer's fields read from ``ssm_cfg``."""
    ssm = dict(cfg.get("ssm_cfg") or {})
    if not cfg.get("rms_norm", True) or cfg.get("d_intermediate", 0):
        raise ValueError(
            f"only rms_norm=True {LABELS[mixer]} checkpoints without an MLP (d_intermediate 0) convert"
        )
    return MsweluConfig(
        **reference_arch(
            mixer=mixer,
            vocab_size=int(cfg["vocab_size"]),
            pad_vocab_size_multiple=int(cfg.get("pad_vocab_size_multiple", 8)),
            d_model=int(cfg["d_model"]),
            layer_pattern="M" * int(cfg["n_layer"]),
            d_state=int(ssm.get("d_state", d_state)),
            d_conv=int(ssm.get("d_conv", 4)),
            expand=int(ssm.get("expand", 2)),
            conv_bias=bool(ssm.get("conv_bias", True)),
            proj_bias=bool(ssm.get("bias", False)),
            tie_word_embeddings=bool(cfg.get("tie_embeddings", True)),
            eos_token_id=0,
            bos_token_id=0,
            pad_token_id=0,
            **own,
        )
    )


def from_mamba_ssm_state_dict(
    state_dict: dict[str, torch.Tensor],
    config: MsweluConfig | dict[str, Any],
    mixer: str,
    config_from: Callable[[dict[str, Any]], MsweluConfig],
) -> MsweluForCausalLM:
    """Our model from a mamba-ssm ``MambaLMHeadModel`` state dict (``backbone.embedding.weight``,
    ``backbone.layers.i.{norm,mixer}.*``, ``backbone.norm_f.weight``) of ``mixer`` layers, and our config or
    the checkpoint's ``config.json`` (read by ``config_from``)."""
    if not isinstance(config, MsweluConfig):
        config = config_from(config)
    check_reference(config, mixer)
    model = MsweluForCausalLM(config)
    names = rename_layers(state_dict, "layers", "blocks", ("embedding", "embeddings"))
    load_strict(model, names, "mamba-ssm")
    return model
