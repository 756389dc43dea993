"""The pre-norm block around a state-space mixer: ``x + dropout(post_act(mixer(norm(x))))`` (the seeds'
LayerNorm -> Mamba -> SWELU -> residual), with O(1)-per-token decoding from the mixer's own states.

A state-space mixer module (Mamba-1's :class:`~mswelu.modules.mamba_mixer.MambaMixer`, Mamba-2's) offers
``forward``, ``forward_with_states`` (prefill: the output and the conv and SSM states after the last token),
``step`` (one token, states updated in place), ``activation_slots()`` and an ``out_proj``; a subclass of
:class:`SSMBlock` says how to build it from the config and how many parameters it has.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from mswelu.modules.mixers.common import (
    activation_for,
    activation_parameter_count,
    mixer_activation_parameter_count,
    mixer_activations,
    norm_for,
)
from mswelu.modules.norms import norm_parameter_count

__all__ = ["SSMBlock"]


class SSMBlock(nn.Module):
    """``x + dropout(post_act(mixer(norm(x))))``; subclasses implement :meth:`build_mixer`,
    :meth:`mixer_parameter_count` and :meth:`mixer_flops_per_token`."""

    residual_writes: ClassVar[int] = 1
    mixer_name: ClassVar[str] = ""

    def __init__(self, config: Any, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.norm = norm_for(config)
        act_conv, act_gate = mixer_activations(config)
        self.mixer = self.build_mixer(config, layer_idx, act_conv, act_gate)
        self.mixer.out_proj._residual_out = True
        if self.tied_activation_keys():  # a shape parameter both in-mixer slots hold, saved once
            self._tied_weights_keys = self.tied_activation_keys()
        self.post_act = activation_for(config) if config.post_mixer_act else nn.Identity()
        self.drop = nn.Dropout(config.dropout)

    @staticmethod
    def build_mixer(config: Any, layer_idx: int, act_conv: nn.Module, act_gate: nn.Module) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def mixer_parameter_count(config: Any) -> int:
        """The mixer's own weights (activations not included)."""
        raise NotImplementedError

    @staticmethod
    def mixer_flops_per_token(config: Any, seq_len: int) -> float:
        """Forward FLOPs of the mixer per token (matmuls, conv and scan; see :mod:`mswelu.flops`)."""
        raise NotImplementedError

    @classmethod
    def flops_per_token(cls, config: Any, seq_len: int) -> float:
        """Forward model FLOPs per token of the block: its mixer's (norms and activations are elementwise
        and not counted, see :mod:`mswelu.flops`)."""
        return float(cls.mixer_flops_per_token(config, seq_len))

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

    def forward(self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        h = self.norm(x)
        if state is None:
            y = self.mixer(h)
        elif not state:  # prefill from an empty state
            y, state["conv"], state["ssm"] = self.mixer.forward_with_states(h)
        else:  # continue from the state, one token at a time (O(1) each)
            conv, ssm = state["conv"], state["ssm"]
            y = torch.cat([self.mixer.step(h[:, t : t + 1], conv, ssm) for t in range(h.shape[1])], dim=1)
        return x + self.drop(self.post_act(y))

    def activation_slots(self) -> list[tuple[str, nn.Module, str, str]]:
        slots = [
            (f"mixer.{path}", module, "in-mixer", slot)
            for path, module, slot in self.mixer.activation_slots()
        ]
        return [*slots, ("post_act", self.post_act, "post-mixer", "")]

    def tied_activation_keys(self) -> dict[str, str]:
        """``{alias: owner}`` of parameters one shared in-mixer activation holds under both slot names."""
        return {f"mixer.{k}": f"mixer.{v}" for k, v in self.mixer.tied_activation_keys().items()}
