"""Swish-beta (Ramachandran et al. 2017), ``z * sigmoid(beta z)`` with beta learnable: the "learnable SiLU".

At beta = 1 it is SiLU exactly, so a model with it starts as the SiLU model and can only learn a shape. That
makes it the control for the workbook's question "does SWELU help because of its shape, or because a shape is
learned?". beta is kept positive the way SWELU keeps k positive: ``beta = softplus(beta_raw)`` (beta -> 0 is
the line z / 2, large beta approaches ReLU); ``beta_raw`` is initialised so that beta equals its initial value
(1.0: ``log(e - 1)``), where ``dbeta / dbeta_raw = 1 - 1/e ~ 0.63``, about SWELU's 0.61 for k.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mswelu.modules.activations.registry import Activation, ActivationFlops, ShapeParam, register
from mswelu.ops.causal_conv import Epilogue


class Swish(nn.Module):
    """``z * sigmoid(beta z)``, ``beta = softplus(beta_raw)`` (0-dim; frozen when ``learnable`` is False)."""

    def __init__(self, beta_init: float = 1.0, learnable: bool = True) -> None:
        super().__init__()
        if not (math.isfinite(beta_init) and beta_init > 0):
            raise ValueError(f"Swish: beta_init must be finite and > 0, got {beta_init}")
        raw = beta_init + math.log(-math.expm1(-beta_init))  # inverse softplus
        device = torch.empty(0).device
        device = torch.device("cpu") if device.type == "meta" else device
        self.beta_raw = nn.Parameter(
            torch.tensor(raw, dtype=torch.float32, device=device), requires_grad=learnable
        )

    @property
    def beta(self) -> Tensor:
        return F.softplus(self.beta_raw)

    def forward(self, z: Tensor) -> Tensor:
        return z * torch.sigmoid(self.beta.to(z.dtype) * z)

    def extra_repr(self) -> str:
        with torch.no_grad():
            return f"beta={float(self.beta):.4g}, learnable={self.beta_raw.requires_grad}"


def _curve(z: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
    return z / (1.0 + np.exp(-values["beta"] * z))


SPEC = register(
    Activation(
        "swish",
        lambda init, learnable: Swish(init["beta"], learnable["beta"]),
        Swish,
        params=(ShapeParam("beta", 1.0, learnable=True, constraint="beta = softplus(beta_raw)"),),
        elementwise=True,
        curve=_curve,
        values=lambda module: {"beta": module.beta},
        description="z sigmoid(beta z), beta learnable from 1 (SiLU at init)",
        # forward: beta z, negation, 1 + e, quotient, product; exp. d/dz = s + beta z s (1 - s): SiLU's
        # backward (sigmoid recomputed) and the product by beta; exp. d/dbeta = z^2 s (1 - s): four
        # products, a subtraction, the sum over elements (s reused).
        flops=ActivationFlops(
            ActivationFlops.ops(5, 1), ActivationFlops.ops(9, 1), {"beta": ActivationFlops.ops(6)}
        ),
        # in fp32 with beta's gradient summed in the kernel's order: not the module's bits (used on request)
        kernel=lambda module: Epilogue("swish", module.beta, exact=False),
    )
)
