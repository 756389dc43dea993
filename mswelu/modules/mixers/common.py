"""What every block builds the same way from the model config: its norm and its activations, and the count of
its FLOPs with the activations' work in it."""

from __future__ import annotations

from typing import Any

from torch import nn

from mswelu.modules.activations import activation_flops, activation_pair, make_activation
from mswelu.modules.norms import make_norm

__all__ = [
    "TRAINING_FACTOR",
    "activation_for",
    "activation_parameter_count",
    "block_flops",
    "mixer_activation_parameter_count",
    "mixer_activations",
    "norm_for",
]

#: training FLOPs per forward FLOP of a matmul (the forward and the backward's two matmuls)
TRAINING_FACTOR = 3.0


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


def block_flops(config: Any, matmuls: float, activation_elements: int) -> dict[str, float]:
    """``{"forward", "training"}`` FLOPs per token of a part whose matmul (and scan) work is ``matmuls`` and
    whose activations see ``activation_elements`` values per token: the matmuls once forward and
    :data:`TRAINING_FACTOR` times in training, plus the config's activation at its declared cost per element
    (forward; forward + backward + its learnable shape gradients in training: :func:`activation_flops`)."""
    forward, training = activation_flops(activation_for(config))
    return {
        "forward": matmuls + forward * activation_elements,
        "training": TRAINING_FACTOR * matmuls + training * activation_elements,
    }
