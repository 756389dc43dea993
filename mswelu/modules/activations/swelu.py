"""SWELU in the registry: ``lambda sign(z) (1 - exp(-|z|^k))`` with learnable k (and an optional learnable
scale lambda, off by default); the module is :class:`mswelu.modules.swelu.SWELU`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from torch import Tensor

from mswelu.modules.activations.registry import Activation, ActivationFlops, ShapeParam, register
from mswelu.modules.swelu import K_MIN, SWELU
from mswelu.ops.causal_conv import Epilogue
from mswelu.ops.swelu import runs_cpu_kernel


def _build(init: Mapping[str, float], learnable: Mapping[str, bool]) -> SWELU:
    return SWELU(
        k_init=init["k"],
        learnable_k=learnable["k"],
        learnable_lambda=learnable["lambda"],
        lambda_init=init["lambda"],
    )


def _curve(z: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
    k, lam = values["k"], values["lambda"]
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return lam * np.sign(z) * -np.expm1(-(np.abs(z) ** k))


def _epilogue(module: SWELU) -> Epilogue | None:
    """SWELU in the conv kernel's epilogue, where the module would run the CPU kernel itself (the epilogue
    gives that kernel's bits; a module pinned to another implementation runs as itself)."""
    if not runs_cpu_kernel(module.impl):
        return None
    if module.learnable_lambda:
        return Epilogue("swelu", module.k, module.lam)
    return Epilogue("swelu", module.k, None if module.lambda_init == 1.0 else module.lambda_init)


def _values(module: SWELU) -> dict[str, Tensor]:
    return {"k": module.k, "lambda": module.lam}


SPEC = register(
    Activation(
        "swelu",
        _build,
        SWELU,
        params=(
            ShapeParam("k", 1.0, learnable=True, constraint=f"k = {K_MIN} + softplus(k_raw)"),
            ShapeParam(
                "lambda", 1.0, learnable=False, constraint="lambda = softplus(lambda_raw) when learnable"
            ),
        ),
        elementwise=True,
        curve=_curve,
        values=_values,
        description="sign(z) (1 - exp(-|z|^k)), k learnable",
        # forward: abs, two negations, sign, product; pow, expm1. d/dz = k |z|^k e^-|z|^k / |z|: abs, product,
        # quotient, times k, times the incoming gradient, the zero-cell compare; pow, exp. d/dk = sign(z)
        # |z|^k e^-|z|^k ln|z|: three products, sign, the sum over elements; log. d/dlambda: sign, product,
        # negation, sum; expm1.
        flops=ActivationFlops(
            ActivationFlops.ops(5, 2),
            ActivationFlops.ops(6, 2),
            {"k": ActivationFlops.ops(5, 1), "lambda": ActivationFlops.ops(4, 1)},
        ),
        kernel=_epilogue,
    )
)
