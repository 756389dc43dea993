"""What every block builds the same way from the model config: its norm and its activations."""

from __future__ import annotations

from typing import Any

from torch import nn

from mswelu.modules.activations import activation_pair, make_activation
from mswelu.modules.norms import make_norm

__all__ = [
    "activation_for",
    "activation_parameter_count",
    "mixer_activation_parameter_count",
    "mixer_activations",
    "norm_for",
]


def activation_for(config: Any) -> nn.Module:
    """A new module of the config's activation with its shape settings (``config.shape``)."""
    return make_activation(config.activation, config.shape)


def activation_parameter_count(config: Any) -> int:
    """Parameters of one :func:`activation_for` module (0 for SiLU, 1 for SWELU's k, ...)."""
    return sum(p.numel() for p in activation_for(config).parameters())


def mixer_activations(config: Any) -> tuple[nn.Module, nn.Module]:
    """The two in-mixer slots (after the conv, on the gate): one shared module (the same object twice) or
    two, as the shape parameters' ``sharing`` says."""
    return activation_pair(config.activation, config.shape)


def mixer_activation_parameter_count(config: Any) -> int:
    """Parameters of the two in-mixer slots together (a shared parameter counted once)."""
    unique = {id(p): p for act in mixer_activations(config) for p in act.parameters()}
    return sum(p.numel() for p in unique.values())


def norm_for(config: Any) -> nn.Module:
    return make_norm(config.norm, config.d_model, eps=config.layer_norm_epsilon)
