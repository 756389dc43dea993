"""The pre-norm block around a state-space mixer: ``x + dropout(post_act(mixer(norm(x))))`` (the seeds'
LayerNorm -> Mamba -> SWELU -> residual), with O(1)-per-token decoding from the mixer's own states.

The mixer is a :class:`~mswelu.modules.ssm_mixer.SSMMixer` (Mamba-1's, Mamba-2's, or a new one): an
``in_proj`` (``d_model -> in_width``), a depthwise causal conv over ``conv_channels`` channels followed by
``act_conv``, its state-space part, a gate ``act_gate`` over ``d_inner`` channels and an ``out_proj``
(``d_inner -> d_model``). A subclass of :class:`SSMBlock` names the mixer class, the config fields it reads
beyond the shared ones (:attr:`mixer_fields`), and the parameters, FLOPs and saved activations of its own
part; what every state-space block shares (projections, conv, norm, activations,
their counts, the decoding) is here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from mswelu.modules.mixers.common import (
    activation_for,
    activation_parameter_count,
    block_flops,
    mixer_activation_parameter_count,
    mixer_activations,
    norm_for,
)
from mswelu.modules.norms import norm_parameter_count
from mswelu.modules.ssm_mixer import SSMMixer

__all__ = ["SHARED_FIELDS", "SSMBlock"]

#: the constructor arguments every state-space mixer takes, and the config fields they are read from
SHARED_FIELDS = {
    **{f: f for f in ("d_model", "d_state", "d_conv", "expand", "dt_min", "dt_max", "dt_init_floor")},
    **{"conv_bias": "conv_bias", "bias": "proj_bias", "backend": "backend"},
}


class SSMBlock(nn.Module):
    """``x + dropout(post_act(mixer(norm(x))))``; see the module docstring for what a subclass declares."""

    residual_writes: ClassVar[int] = 1
    mixer_name: ClassVar[str] = ""
    #: the mixer module it builds
    mixer_class: ClassVar[type[SSMMixer]]

    def __init__(self, config: Any, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.norm = norm_for(config)
        act_conv, act_gate = mixer_activations(config)
        self.mixer = self.build_mixer(config, layer_idx, act_conv, act_gate)
        self.mixer.out_proj._residual_out = True
        conv = dict(act_conv.named_parameters())  # a shape parameter both in-mixer slots hold: saved once
        tied = {
            f"mixer.act_gate.{n}": f"mixer.act_conv.{n}"
            for n, p in act_gate.named_parameters()
            if conv.get(n) is p
        }
        if tied:
            self._tied_weights_keys = tied
        self.post_act = activation_for(config) if config.post_mixer_act else nn.Identity()
        self.drop = nn.Dropout(config.dropout)

    # ------------------------------------------------------------------ what a subclass declares
    #: the mixer's own constructor arguments and the config fields they are read from (beyond
    #: :data:`SHARED_FIELDS`)
    mixer_fields: ClassVar[dict[str, str]] = {}

    @staticmethod
    def own_parameter_count(config: Any) -> int:
        """Parameters of the mixer beyond ``in_proj``, the conv and ``out_proj``."""
        raise NotImplementedError

    @staticmethod
    def own_flops_per_token(config: Any, seq_len: int) -> float:
        """Forward FLOPs of the mixer per token beyond ``in_proj``, the conv and ``out_proj`` (its state-space
        part; 2 per multiply-add, see :mod:`mswelu.models.flops`)."""
        raise NotImplementedError

    @staticmethod
    def own_activation_bytes(config: Any, autocast_bytes: int) -> float:
        """Bytes per token the mixer keeps for the backward beyond the block's input and normed input (the
        activations of :mod:`mswelu.plan`; ``autocast_bytes`` is 2 under bf16 autocast, else 4)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ built from those
    @classmethod
    def settings(cls, config: Any) -> dict[str, Any]:
        """The mixer's constructor arguments from the config (the shared ones and its own)."""
        return {arg: getattr(config, field) for arg, field in {**SHARED_FIELDS, **cls.mixer_fields}.items()}

    @classmethod
    def build_mixer(cls, config: Any, layer_idx: int, act_conv: nn.Module, act_gate: nn.Module) -> nn.Module:
        return cls.mixer_class(
            **cls.settings(config), act_conv=act_conv, act_gate=act_gate, layer_idx=layer_idx
        )

    @classmethod
    def widths(cls, config: Any) -> tuple[int, int]:
        """``(in_width, conv_channels)``: ``in_proj``'s output rows and the conv's (and ``act_conv``'s)
        channels, as the mixer class computes them."""
        return cls.mixer_class.input_widths(**cls.settings(config))

    @classmethod
    def check_config(cls, config: Any) -> None:
        """The mixer's own checks of these settings (a ValueError naming the setting), without building it."""
        cls.mixer_class.check_settings(**cls.settings(config))

    @classmethod
    def mixer_parameter_count(cls, config: Any) -> int:
        """The mixer's own weights (activations not included)."""
        d, di, bias = config.d_model, config.d_inner, int(config.proj_bias)
        in_width, channels = cls.widths(config)
        io = in_width * (d + bias) + channels * (config.d_conv + int(config.conv_bias)) + d * di + d * bias
        return io + cls.own_parameter_count(config)

    @classmethod
    def mixer_flops_per_token(cls, config: Any, seq_len: int) -> float:
        """Forward FLOPs of the mixer per token without its activations: in_proj, depthwise conv, out_proj and
        its own part."""
        in_width, channels = cls.widths(config)
        io = (
            2 * config.d_model * in_width + 2 * channels * config.d_conv + 2 * config.d_inner * config.d_model
        )
        return float(io + cls.own_flops_per_token(config, seq_len))

    @classmethod
    def flops_per_token(cls, config: Any, seq_len: int) -> dict[str, float]:
        """Forward and training FLOPs per token of the block: its mixer's and its activations' (``act_conv``
        on the conv's channels, ``act_gate`` on d_inner, ``post_act`` on d_model)."""
        elements = cls.widths(config)[1] + config.d_inner + (config.d_model if config.post_mixer_act else 0)
        return block_flops(config, cls.mixer_flops_per_token(config, seq_len), elements)

    @classmethod
    def activation_bytes(cls, config: Any, autocast_bytes: int) -> float:
        """Bytes per token a training step keeps for this block's backward: the fp32 input and the normed
        input, the mixer's, and the post-mixer activation's fp32 input."""
        d = config.d_model
        post = 4 * d if config.post_mixer_act else 0
        return (4 + autocast_bytes) * d + cls.own_activation_bytes(config, autocast_bytes) + post

    @classmethod
    def parameter_count(cls, config: Any) -> int:
        n_act = activation_parameter_count(config)
        in_mixer = mixer_activation_parameter_count(config)
        post = n_act if config.post_mixer_act else 0
        return (
            norm_parameter_count(config.norm, config.d_model)
            + cls.mixer_parameter_count(config)
            + in_mixer
            + post
        )

    # ------------------------------------------------------------------ the module
    def forward(self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``state``: None, or the block's decoding state (the mixer's: see :meth:`SSMMixer.forward`)."""
        return x + self.drop(self.post_act(self.mixer(self.norm(x), state)))

    def activation_slots(self) -> list[tuple[str, nn.Module, str, str]]:
        slots = [
            (f"mixer.{path}", module, "in-mixer", slot)
            for path, module, slot in self.mixer.activation_slots()
        ]
        return [*slots, ("post_act", self.post_act, "post-mixer", "")]
