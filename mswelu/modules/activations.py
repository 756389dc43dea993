"""The activations a model can put in its slots, by name: the one table config, CLI, model, kernel path,
optimizer routing and plots all read.

Adding an activation is one :func:`register` call (a factory, whether it has learnable shape parameters,
its curve for plots) plus a test; ``gelu`` below is such an addition in five lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mswelu.modules.swelu import SWELU

__all__ = ["ACTIVATIONS", "Activation", "make_activation", "register", "shape_parameters", "spec_of"]


@dataclass(frozen=True)
class Activation:
    """One activation kind.

    Attributes:
        name: the value of ``activation`` in configs (``MambaSWELUConfig``, ``TrainConfig``, CLI).
        build: ``build(k_init, learnable_lambda) -> nn.Module``; one call per slot (or per shared slot).
        module_type: the class ``build`` returns (how a module in a model is recognised).
        learnable: its modules hold trainable shape parameters (own optimizer group, logged as k).
        elementwise: a pointwise function, so the CUDA mixer path may apply it on its (B, D, L) layout.
        curve: ``curve(z, k, lam) -> y`` in float64, for plots of learned shapes.
        description: one line for docs and reports.
    """

    name: str
    build: Callable[[float, bool], nn.Module]
    module_type: type[nn.Module]
    learnable: bool
    elementwise: bool
    curve: Callable[[np.ndarray, float, float], np.ndarray]
    description: str


ACTIVATIONS: dict[str, Activation] = {}


def register(spec: Activation) -> Activation:
    if spec.name in ACTIVATIONS:
        raise ValueError(f"activation {spec.name!r} is already registered")
    ACTIVATIONS[spec.name] = spec
    return spec


def _swelu_curve(z: np.ndarray, k: float, lam: float = 1.0) -> np.ndarray:
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    z = np.asarray(z, dtype=np.float64)
    return lam * np.sign(z) * -np.expm1(-(np.abs(z) ** k))


def _silu_curve(z: np.ndarray, k: float = 1.0, lam: float = 1.0) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return z / (1.0 + np.exp(-z))


def _gelu_curve(z: np.ndarray, k: float = 1.0, lam: float = 1.0) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * z * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


register(
    Activation(
        "swelu",
        lambda k, lam: SWELU(k_init=k, learnable_k=True, learnable_lambda=lam),
        SWELU,
        learnable=True,
        elementwise=True,
        curve=_swelu_curve,
        description="sign(z) (1 - exp(-|z|^k)), k learnable",
    )
)
register(
    Activation(
        "swelu-fixed",
        lambda k, lam: SWELU(k_init=k, learnable_k=False, learnable_lambda=lam),
        SWELU,
        learnable=False,
        elementwise=True,
        curve=_swelu_curve,
        description="SWELU with k frozen at k_init",
    )
)
register(
    Activation(
        "silu",
        lambda k, lam: nn.SiLU(),
        nn.SiLU,
        learnable=False,
        elementwise=True,
        curve=_silu_curve,
        description="z sigmoid(z), Mamba's own activation",
    )
)
register(
    Activation(
        "gelu",
        lambda k, lam: nn.GELU(),
        nn.GELU,
        learnable=False,
        elementwise=True,
        curve=_gelu_curve,
        description="z Phi(z), the Transformer MLP's activation",
    )
)


def make_activation(name: str, k_init: float = 1.0, learnable_lambda: bool = False) -> nn.Module:
    """A new module of activation ``name`` (see :data:`ACTIVATIONS`). Built on the CPU inside a
    ``meta`` device context (``from_pretrained``): shape parameters need real initial values."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: expected one of {tuple(ACTIVATIONS)}")
    build = ACTIVATIONS[name].build
    if torch.empty(0).device.type == "meta":
        with torch.device("cpu"):
            return build(k_init, learnable_lambda)
    return build(k_init, learnable_lambda)


def spec_of(module: nn.Module) -> Activation | None:
    """The registered kind a module is an instance of (a subclass counts as its base), or None."""
    for spec in ACTIVATIONS.values():
        if isinstance(module, spec.module_type):
            return spec
    return None


def shape_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every parameter owned by an activation module (SWELU's ``k_raw`` /
    ``lambda_raw``), each once: the optimizer's own group, without weight decay."""
    seen: set[int] = set()
    for mname, module in model.named_modules():
        if spec_of(module) is None:
            continue
        for pname, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p


def curve(name: str, z: np.ndarray, values: Mapping[str, float] | float | None = None) -> np.ndarray:
    """Activation ``name`` on ``z`` at shape ``values`` (``{"k": .., "lambda": ..}`` or a bare k)."""
    if isinstance(values, Mapping):
        k, lam = float(values.get("k", 1.0)), float(values.get("lambda") or 1.0)
    else:
        k, lam = (1.0 if values is None else float(values)), 1.0
    return ACTIVATIONS[name].curve(z, k, lam)
