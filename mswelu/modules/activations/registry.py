"""The activation registry: one :class:`Activation` spec per kind, which everything else reads.

A spec says how to build the module for one slot, which *shape parameters* it has (SWELU's k and lambda,
Swish's beta: name, initial value, constraint, whether it learns), how to read their effective values off a
module, its curve for plots, and whether the CUDA mixer path may apply it elementwise. Config validation,
the model's slots, the optimizer's no-decay group, the metrics log, TensorBoard, reports, notebook 04 and the
claims all go through the functions here; none of them names a particular activation's parameters.

Learnability belongs to the spec: registering a kind with learnable shape parameters also registers its
``<name>-fixed`` twin (the same module with every shape parameter frozen at its initial value; ``swelu-fixed``
is SWELU with k frozen at its initial value). Per-parameter settings (initial value, learnable, lr scale,
sharing) and building a module with them: :mod:`.settings`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mswelu.base.errors import unknown_choice
from mswelu.ops.causal_conv import Epilogue

__all__ = [
    "ACTIVATIONS",
    "TRANSCENDENTAL_FLOPS",
    "Activation",
    "ActivationFlops",
    "ShapeParam",
    "activation_flops",
    "curve",
    "effective_shape",
    "epilogue_of",
    "register",
    "shape_param_names",
    "shape_values",
    "spec_of",
]

FIXED_SUFFIX = "-fixed"


@dataclass(frozen=True)
class ShapeParam:
    """One shape parameter of an activation.

    Attributes:
        name: its name in logs, reports and overrides (``k``, ``lambda``, ``beta``).
        init: the initial (or, when frozen, the fixed) effective value.
        learnable: whether it trains by default (an override or the ``-fixed`` twin can freeze it).
        constraint: how the module keeps it valid, for docs and reports (e.g. ``k = 0.05 + softplus(k_raw)``).
        frozen: held at ``init`` whatever the settings say (the parameters a ``-fixed`` twin freezes).
        raw: the module attribute holding its raw ``nn.Parameter`` when it learns (default
            ``<name>_raw``): what the optimizer gives its lr scale and what ``sharing`` ties.
    """

    name: str
    init: float
    learnable: bool = True
    constraint: str = ""
    frozen: bool = False
    raw: str = ""

    @property
    def attribute(self) -> str:
        return self.raw or f"{self.name}_raw"


#: FLOPs one transcendental function (exp, expm1, log, pow, erf) counts for: about the multiply-adds of
#: the range reduction and polynomial a vectorised implementation evaluates (a convention, not a measurement)
TRANSCENDENTAL_FLOPS = 10


@dataclass(frozen=True)
class ActivationFlops:
    """The work of an activation per element, by its formula (intermediate values reused): 1 FLOP per add,
    multiply, divide, compare, abs or sign, :data:`TRANSCENDENTAL_FLOPS` per transcendental function.

    Attributes:
        forward: the forward pass.
        backward: the gradient with respect to the input (the backward recomputes from the saved input).
        shape: per shape parameter name, its gradient's work per element (its reduction included), counted
            when that parameter learns.
    """

    forward: float
    backward: float
    shape: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @staticmethod
    def ops(basic: int, transcendental: int = 0) -> float:
        """FLOPs of ``basic`` elementary operations and ``transcendental`` transcendental functions."""
        return float(basic + TRANSCENDENTAL_FLOPS * transcendental)


@dataclass(frozen=True)
class Activation:
    """One activation kind.

    Attributes:
        name: the value of ``activation`` in configs (``MsweluConfig``, ``TrainConfig``, CLI).
        build: ``build(init, learnable) -> nn.Module``: ``init`` / ``learnable`` map every shape parameter
            name to its initial value / whether it trains (complete: the settings resolved by
            :func:`mswelu.modules.activations.settings.resolve_shape`).
        module_type: the class ``build`` returns (how a module in a model is recognised).
        params: its shape parameters, in display order (empty for a fixed function such as SiLU).
        elementwise: a pointwise function, so the CUDA mixer path may apply it on its (B, D, L) layout.
        curve: ``curve(z, values) -> y`` in float64 for plots, ``values`` the effective shape values.
        values: ``values(module) -> {param: tensor}``: the effective shape values of a module, as 0-dim
            tensors differentiable with respect to the module's parameters.
        description: one line for docs and reports.
        flops: its work per element (:class:`ActivationFlops`, for :mod:`mswelu.models.flops`); None: not
            declared (counting a model's FLOPs with it is then an error).
        kernel: ``kernel(module) -> Epilogue | None``: its form in the CPU kernels' epilogues (the mixer's
            conv applies it in the same pass: :func:`mswelu.ops.causal_conv.causal_conv1d_act`), None where
            this module must run as itself; no ``kernel``: the mixer runs the module after the conv.
    """

    name: str
    build: Callable[[Mapping[str, float], Mapping[str, bool]], nn.Module]
    module_type: type[nn.Module]
    params: tuple[ShapeParam, ...]
    elementwise: bool
    curve: Callable[[np.ndarray, Mapping[str, float]], np.ndarray]
    values: Callable[[nn.Module], dict[str, Tensor]] = lambda module: {}
    description: str = ""
    flops: ActivationFlops | None = None
    kernel: Callable[[nn.Module], Epilogue | None] | None = None

    @property
    def learnable(self) -> bool:
        """Some shape parameter trains by default."""
        return any(p.learnable for p in self.params)

    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def fixed(self) -> Activation:
        """The same activation with every shape parameter frozen at its initial value."""
        params = tuple(dataclasses.replace(p, learnable=False, frozen=p.learnable) for p in self.params)
        frozen = ", ".join(p.name for p in params if p.frozen)
        return dataclasses.replace(
            self,
            name=self.name + FIXED_SUFFIX,
            params=params,
            description=f"{self.name} with {frozen} frozen at the initial value",
        )


ACTIVATIONS: dict[str, Activation] = {}


def register(spec: Activation) -> Activation:
    """Add ``spec`` (and, when it learns, its ``-fixed`` twin) to :data:`ACTIVATIONS`."""
    specs = [spec, spec.fixed()] if spec.learnable else [spec]
    for s in specs:
        if s.name in ACTIVATIONS:
            raise ValueError(f"activation {s.name!r} is already registered")
    for s in specs:
        ACTIVATIONS[s.name] = s
    return spec


def _spec(name: str) -> Activation:
    if name not in ACTIVATIONS:
        raise ValueError(unknown_choice("activation", name, ACTIVATIONS))
    return ACTIVATIONS[name]


def spec_of(module: nn.Module) -> Activation | None:
    """The registered kind a module is an instance of (a subclass counts as its base; a ``-fixed`` twin is
    never returned: learnability is read off the module), or None."""
    for spec in ACTIVATIONS.values():
        if not spec.name.endswith(FIXED_SUFFIX) and isinstance(module, spec.module_type):
            return spec
    return None


def epilogue_of(module: nn.Module) -> Epilogue | None:
    """The kernel form of an activation module (:attr:`Activation.kernel`), or None: unregistered, no form, or
    a subclass (which may compute something else than the kind it extends)."""
    spec = spec_of(module)
    if spec is None or spec.kernel is None or type(module) is not spec.module_type:
        return None
    return spec.kernel(module)


def effective_shape(module: nn.Module) -> dict[str, Tensor]:
    """``{param: 0-dim tensor}``: the effective shape values of an activation module (differentiable with
    respect to its raw parameters; empty for a module without shape parameters or not registered)."""
    spec = spec_of(module)
    return spec.values(module) if spec is not None else {}


def shape_values(module: nn.Module) -> dict[str, float]:
    """``{param: value}`` of an activation module, as Python floats (logs, reports, plots)."""
    with torch.no_grad():
        return {name: float(v) for name, v in effective_shape(module).items()}


def activation_flops(module: nn.Module) -> tuple[float, float]:
    """``(forward, training)`` FLOPs per element of an activation module: its forward, and forward +
    backward + the gradient of each shape parameter that learns in the module (its value needs a gradient)."""
    spec = spec_of(module)
    if spec is None or spec.flops is None:
        name = spec.name if spec is not None else type(module).__name__
        raise ValueError(f"activation {name!r} declares no FLOPs: give its spec flops=ActivationFlops(...)")
    cost = spec.flops
    with torch.enable_grad():
        learning = {name for name, value in spec.values(module).items() if value.requires_grad}
    shape = sum(v for name, v in cost.shape.items() if name in learning)
    return cost.forward, cost.forward + cost.backward + shape


def shape_param_names() -> tuple[str, ...]:
    """Every shape parameter name any registered activation has (``k``, ``lambda``, ``beta``, ...): the keys
    of the per-slot value tables in ``metrics.jsonl`` and ``summary.json``."""
    names: dict[str, None] = {}
    for spec in ACTIVATIONS.values():
        names.update(dict.fromkeys(spec.param_names()))
    return tuple(names)


def curve(name: str, z: np.ndarray, values: Mapping[str, float] | float | None = None) -> np.ndarray:
    """Activation ``name`` on ``z`` (float64) at effective shape ``values`` (missing: the spec's init; a
    bare number is the value of its first shape parameter, e.g. SWELU's k)."""
    spec = _spec(name)
    full = {p.name: float(p.init) for p in spec.params}
    if values is not None and not isinstance(values, Mapping):
        values = {spec.params[0].name: float(values)} if spec.params else {}
    full.update({k: float(v) for k, v in (values or {}).items() if k in full and v is not None})
    return spec.curve(np.asarray(z, dtype=np.float64), full)
