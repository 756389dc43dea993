"""The activation registry: one :class:`Activation` spec per kind, which everything else reads.

A spec says how to build the module for one slot, which *shape parameters* it has (SWELU's k and lambda,
Swish's beta: name, initial value, constraint, whether it learns), how to read their effective values off a
module, its curve for plots, and whether the CUDA mixer path may apply it elementwise. Config validation,
the model's slots, the optimizer's no-decay group, the metrics log, TensorBoard, reports, notebook 04 and the
claims all go through the functions here; none of them names a particular activation's parameters.

Learnability belongs to the spec: registering a kind with learnable shape parameters also registers its
``<name>-fixed`` twin (the same module with every shape parameter frozen at its initial value; ``swelu-fixed``
is SWELU at k = k_init).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mswelu.errors import unknown_choice

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ShapeParam",
    "curve",
    "effective_shape",
    "make_activation",
    "register",
    "shape_param_names",
    "shape_parameters",
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
        frozen: held at ``init`` whatever the overrides say (the parameters a ``-fixed`` twin freezes).
    """

    name: str
    init: float
    learnable: bool = True
    constraint: str = ""
    frozen: bool = False


@dataclass(frozen=True)
class Activation:
    """One activation kind.

    Attributes:
        name: the value of ``activation`` in configs (``MambaSWELUConfig``, ``TrainConfig``, CLI).
        build: ``build(init, learnable) -> nn.Module``: ``init`` / ``learnable`` map every shape parameter
            name to its initial value / whether it trains (complete: defaults already filled in).
        module_type: the class ``build`` returns (how a module in a model is recognised).
        params: its shape parameters, in display order (empty for a fixed function such as SiLU).
        elementwise: a pointwise function, so the CUDA mixer path may apply it on its (B, D, L) layout.
        curve: ``curve(z, values) -> y`` in float64 for plots, ``values`` the effective shape values.
        values: ``values(module) -> {param: tensor}``: the effective shape values of a module, as 0-dim
            tensors differentiable with respect to the module's parameters.
        description: one line for docs and reports.
    """

    name: str
    build: Callable[[Mapping[str, float], Mapping[str, bool]], nn.Module]
    module_type: type[nn.Module]
    params: tuple[ShapeParam, ...]
    elementwise: bool
    curve: Callable[[np.ndarray, Mapping[str, float]], np.ndarray]
    values: Callable[[nn.Module], dict[str, Tensor]] = lambda module: {}
    description: str = ""

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

    def settings(
        self, init: Mapping[str, float] | None = None, learnable: Mapping[str, bool] | None = None
    ) -> tuple[dict[str, float], dict[str, bool]]:
        """The spec's defaults with the overrides that name one of its parameters applied (others are
        ignored: an initial k means nothing to SiLU); a frozen parameter stays frozen, one that is off by
        default (SWELU's lambda) may be switched on."""
        init, learnable = init or {}, learnable or {}
        values = {p.name: float(init.get(p.name, p.init)) for p in self.params}
        learn = {p.name: not p.frozen and bool(learnable.get(p.name, p.learnable)) for p in self.params}
        return values, learn


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


def make_activation(
    name: str, init: Mapping[str, float] | None = None, learnable: Mapping[str, bool] | None = None
) -> nn.Module:
    """A new module of activation ``name`` with shape overrides ``init`` / ``learnable`` (by parameter name).
    Built on the CPU inside a ``meta`` device context (``from_pretrained``): shape parameters need real
    initial values, since checkpoints converted from other code may not carry them."""
    spec = _spec(name)
    values, learn = spec.settings(init, learnable)
    if torch.empty(0).device.type == "meta":
        with torch.device("cpu"):
            return spec.build(values, learn)
    return spec.build(values, learn)


def spec_of(module: nn.Module) -> Activation | None:
    """The registered kind a module is an instance of (a subclass counts as its base; a ``-fixed`` twin is
    never returned: learnability is read off the module), or None."""
    for spec in ACTIVATIONS.values():
        if not spec.name.endswith(FIXED_SUFFIX) and isinstance(module, spec.module_type):
            return spec
    return None


def effective_shape(module: nn.Module) -> dict[str, Tensor]:
    """``{param: 0-dim tensor}``: the effective shape values of an activation module (differentiable with
    respect to its raw parameters; empty for a module without shape parameters or not registered)."""
    spec = spec_of(module)
    return spec.values(module) if spec is not None else {}


def shape_values(module: nn.Module) -> dict[str, float]:
    """``{param: value}`` of an activation module, as Python floats (logs, reports, plots)."""
    with torch.no_grad():
        return {name: float(v) for name, v in effective_shape(module).items()}


def shape_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every parameter owned by an activation module, each once: the optimizer's
    own group, without weight decay."""
    seen: set[int] = set()
    for mname, module in model.named_modules():
        if spec_of(module) is None:
            continue
        for pname, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p


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
