"""Fixed activations without shape parameters: SiLU (Mamba's own) and GELU (the Transformer MLP's)."""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from mswelu.modules.activations.registry import Activation, ActivationFlops, register
from mswelu.ops.causal_conv import Epilogue


def _silu_curve(z: np.ndarray, values: object = None) -> np.ndarray:
    return z / (1.0 + np.exp(-z))


def _gelu_curve(z: np.ndarray, values: object = None) -> np.ndarray:
    return 0.5 * z * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


SILU = register(
    Activation(
        "silu",
        lambda init, learnable: nn.SiLU(),
        nn.SiLU,
        params=(),
        elementwise=True,
        curve=_silu_curve,
        description="z sigmoid(z), Mamba's own activation",
        # forward z / (1 + e^-z): negation, addition, quotient, product; exp. backward s (1 + z (1 - s)) g
        # with s recomputed (negation, addition, quotient; exp), then subtract, multiply, add, multiply twice
        flops=ActivationFlops(ActivationFlops.ops(4, 1), ActivationFlops.ops(8, 1)),
        kernel=lambda module: Epilogue("silu"),
    )
)
GELU = register(
    Activation(
        "gelu",
        lambda init, learnable: nn.GELU(),
        nn.GELU,
        params=(),
        elementwise=True,
        curve=_gelu_curve,
        description="z Phi(z), the Transformer MLP's activation",
        # forward 0.5 z (1 + erf(z / sqrt 2)): quotient, addition, two products; erf. backward (Phi(z) + z
        # phi(z)) g: Phi as in the forward (3; erf), phi = exp(-z^2 / 2) / sqrt(2 pi) (3; exp), product,
        # addition, product by g
        flops=ActivationFlops(ActivationFlops.ops(4, 1), ActivationFlops.ops(9, 2)),
    )
)
