"""Per-parameter settings of an activation's shape parameters, checked against what the activation
registered, and the one migration from the settings that named SWELU's parameters.

A model config's ``shape`` maps a shape parameter's name to its settings, each optional::

    shape: {k: {init: 0.8, learnable: true, lr_scale: 2.0, sharing: separate}}

- ``init``: the initial (or, when frozen, the fixed) effective value; default: the registered ``init``; or
  one value per slot, ``{slot name: value}`` naming every slot of the model (``blocks.0.mixer.act``, ...: the
  names its ``shape_slots()`` and a run's logs use), e.g. to freeze each layer at the values another run
  learned (:func:`apply_slot_inits`, which the model runs once it is built);
- ``learnable``: whether it trains; default: the registered ``learnable`` (a parameter the ``-fixed`` twin
  freezes cannot be made learnable: use the learnable activation);
- ``lr_scale``: multiplier of the learning rate of its raw parameter (the optimizer's ``shape`` group);
- ``sharing``: ``shared`` (one value for both in-mixer slots, the default) or ``separate`` (one each).

A name the activation did not register, or a setting not among these, is a one-line error with the nearest
name. :func:`migrate_shape_settings` turns the older flat settings (``k_init``, ``learnable_lambda``,
``mixer_k_sharing``, ``k_lr_scale``) into this mapping, in this one place.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mswelu.base.errors import unknown_choice, with_nearest
from mswelu.modules.activations.registry import ACTIVATIONS, Activation, spec_of

__all__ = [
    "OLD_SHAPE_SETTINGS",
    "SETTING_NAMES",
    "SHARING",
    "ShapeSetting",
    "activation_pair",
    "apply_slot_inits",
    "make_activation",
    "migrate_shape_settings",
    "resolve_shape",
    "shape_parameters",
]

#: how the two in-mixer slots hold a shape parameter: one value for both, or one each
SHARING = ("shared", "separate")
SETTING_NAMES = ("init", "learnable", "lr_scale", "sharing")
#: the flat settings of configs written before ``shape`` (each applied to a parameter by its name)
OLD_SHAPE_SETTINGS = ("k_init", "learnable_lambda", "mixer_k_sharing", "k_lr_scale")


@dataclass(frozen=True)
class ShapeSetting:
    """The resolved settings of one shape parameter (every field filled in)."""

    init: float | dict[str, float]  # one value, or one per slot name
    learnable: bool
    lr_scale: float = 1.0
    sharing: str = "shared"


def _spec(activation: str) -> Activation:
    if activation not in ACTIVATIONS:
        raise ValueError(unknown_choice("activation", activation, ACTIVATIONS))
    return ACTIVATIONS[activation]


def resolve_shape(activation: str, shape: Mapping[str, Any] | None = None) -> dict[str, ShapeSetting]:
    """``{param: ShapeSetting}`` for every shape parameter ``activation`` registered: the registered
    defaults with ``shape``'s settings applied; ValueError (one line, nearest name) for a parameter the
    activation lacks, an unknown setting or a bad value."""
    spec = _spec(activation)
    shape = shape or {}
    if not isinstance(shape, Mapping):
        raise ValueError(f"shape must be a mapping {{parameter: {{setting: value}}}}, got {shape!r}")
    names = spec.param_names()
    unknown = [n for n in shape if n not in names]
    if unknown:
        has = ", ".join(names) if names else "none"
        raise ValueError(
            f"unknown shape parameter {with_nearest(unknown, names)} of activation {activation!r} "
            f"(its shape parameters: {has})"
        )
    out = {}
    for p in spec.params:
        given = shape.get(p.name) or {}
        if not isinstance(given, Mapping):
            raise ValueError(f"shape.{p.name} must be a mapping of {', '.join(SETTING_NAMES)}, got {given!r}")
        bad = [s for s in given if s not in SETTING_NAMES]
        if bad:
            raise ValueError(
                f"unknown setting {with_nearest(bad, SETTING_NAMES)} of shape.{p.name}: "
                f"expected {', '.join(SETTING_NAMES)}"
            )
        setting = ShapeSetting(
            init=given.get("init", p.init),
            learnable=given.get("learnable", p.learnable),
            lr_scale=given.get("lr_scale", 1.0),
            sharing=given.get("sharing", "shared"),
        )
        _check(activation, p.name, p.frozen, setting)
        init = (
            {str(k): float(v) for k, v in setting.init.items()}
            if isinstance(setting.init, Mapping)
            else float(setting.init)
        )
        out[p.name] = ShapeSetting(init, setting.learnable, float(setting.lr_scale), setting.sharing)
    return out


def _check(activation: str, name: str, frozen: bool, s: ShapeSetting) -> None:
    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    per_slot = (
        isinstance(s.init, Mapping)
        and s.init
        and all(isinstance(k, str) and number(v) for k, v in s.init.items())
    )
    if not (number(s.init) or per_slot):
        raise ValueError(
            f"shape.{name}.init must be a finite number or {{slot name: finite number}}, got {s.init!r}"
        )
    if not isinstance(s.learnable, bool):
        raise ValueError(f"shape.{name}.learnable must be true or false, got {s.learnable!r}")
    if frozen and s.learnable:
        base = activation.removesuffix("-fixed")
        raise ValueError(f"shape.{name} is frozen in {activation!r}: use {base!r} to learn it")
    if not (number(s.lr_scale) and s.lr_scale > 0):
        raise ValueError(f"shape.{name}.lr_scale must be a number > 0, got {s.lr_scale!r}")
    if s.sharing not in SHARING:
        raise ValueError(f"shape.{name}: {unknown_choice('sharing', s.sharing, SHARING)}")


def activation_pair(activation: str, shape: Mapping[str, Any] | None = None) -> tuple[nn.Module, nn.Module]:
    """The two in-mixer slots' modules (after the conv, on the gate): one module twice when every shape
    parameter is ``shared`` (or there is none), else two modules whose ``shared`` parameters are one
    tensor."""
    settings = resolve_shape(activation, shape)
    first = make_activation(activation, shape)
    if all(s.sharing == "shared" for s in settings.values()):
        return first, first
    second = make_activation(activation, shape)
    for p in _spec(activation).params:
        raw = getattr(first, p.attribute, None)
        if settings[p.name].sharing == "shared" and isinstance(raw, nn.Parameter):
            setattr(second, p.attribute, raw)
    return first, second


def make_activation(name: str, shape: Mapping[str, Any] | None = None) -> nn.Module:
    """A new module of activation ``name`` with the shape settings ``shape`` (see the module doc), carrying
    its parameters' lr scales. Built on the CPU inside a ``meta`` device context (``from_pretrained``):
    shape parameters need real initial values, since checkpoints converted from other code may not carry
    them."""
    settings = resolve_shape(name, shape)
    defaults = {p.name: p.init for p in _spec(name).params}  # a per-slot init: apply_slot_inits sets it
    init = {n: defaults[n] if isinstance(s.init, dict) else s.init for n, s in settings.items()}
    learn = {n: s.learnable for n, s in settings.items()}
    if torch.empty(0).device.type == "meta":
        with torch.device("cpu"):
            module = _spec(name).build(init, learn)
    else:
        module = _spec(name).build(init, learn)
    module.shape_lr_scales = {p.attribute: settings[p.name].lr_scale for p in _spec(name).params}
    return module


def apply_slot_inits(slots: Sequence[Any], activation: str, shape: Mapping[str, Any] | None) -> None:
    """Give each slot its own initial value of every shape parameter whose ``init`` is ``{slot name:
    value}`` (``slots``: the built model's :class:`~mswelu.modules.slots.ShapeSlot` records). Every slot must
    be named and every name must be a slot; the value goes into the slot's raw parameter as the activation's
    own ``build`` maps it, so it must be one (SWELU's ``k`` always is; a frozen ``lambda`` is a constant)."""
    per_slot = {n: s.init for n, s in resolve_shape(activation, shape).items() if isinstance(s.init, dict)}
    names = [slot.name for slot in slots]
    written: dict[int, tuple[str, float]] = {}
    for param, values in per_slot.items():
        unknown, missing = [n for n in values if n not in names], [n for n in names if n not in values]
        if unknown:
            raise ValueError(f"shape.{param}.init names no slot {with_nearest(unknown, names)}")
        if missing:
            raise ValueError(f"shape.{param}.init has no value for slot(s) {', '.join(missing)}")
        attribute = next(p.attribute for p in _spec(activation).params if p.name == param)
        for slot in slots:
            raw = getattr(slot.module, attribute, None)
            if not isinstance(raw, torch.Tensor):
                raise ValueError(f"shape.{param}: {activation!r} keeps no parameter for it; give one init")
            value = values[slot.name]
            if written.get(id(raw), (slot.name, value))[1] != value:
                raise ValueError(
                    f"shape.{param}: slots {written[id(raw)][0]} and {slot.name} share one {param} "
                    "(sharing: shared) but were given different values"
                )
            written[id(raw)] = (slot.name, value)
            one = {**(shape or {}), param: {**(shape or {}).get(param, {}), "init": value}}
            fresh = make_activation(activation, one)
            if raw.device.type != "meta":  # from_pretrained builds on meta, then loads the saved values
                with torch.no_grad():
                    raw.copy_(getattr(fresh, attribute))


def shape_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter, float]]:
    """``(name, parameter, lr scale)`` of every parameter owned by an activation module, each once: the
    optimizer's ``shape`` group, without weight decay. The scale is the one its shape parameter's settings
    gave (1.0 for a module not built by :func:`make_activation`); a parameter no registered
    :class:`ShapeParam` names (``raw``) is an error, since no setting could reach it."""
    seen: set[int] = set()
    for mname, module in model.named_modules():
        spec = spec_of(module)
        if spec is None:
            continue
        scales = getattr(module, "shape_lr_scales", {})
        attributes = {p.attribute for p in spec.params}
        for pname, p in module.named_parameters(recurse=False):
            if pname not in attributes:
                raise ValueError(
                    f"activation {spec.name!r}: its module's parameter {pname!r} is no registered shape "
                    f"parameter's raw attribute ({', '.join(sorted(attributes)) or 'none'}): name it in "
                    "ShapeParam(raw=...)"
                )
            if id(p) not in seen:
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p, float(scales.get(pname, 1.0))


def migrate_shape_settings(settings: Mapping[str, Any], activation: str | None) -> dict[str, Any]:
    """``settings`` (a model config's, or a TrainConfig's with its ``model`` merged in) with the flat names
    of older configs (:data:`OLD_SHAPE_SETTINGS`) turned into ``shape`` entries of ``activation``'s
    parameters. They applied to any activation with a parameter of that name and were ignored by the
    others, so a value for a parameter ``activation`` lacks (or for no activation: a baseline) is dropped;
    ``mixer_k_sharing`` and ``k_lr_scale`` applied to every shape parameter."""
    out = {k: v for k, v in settings.items() if k not in OLD_SHAPE_SETTINGS}
    old = {k: settings[k] for k in OLD_SHAPE_SETTINGS if k in settings}
    if not old:
        return out
    spec = ACTIVATIONS.get(activation or "")
    names = spec.param_names() if spec is not None else ()
    shape = {name: dict(entry) for name, entry in (out.get("shape") or {}).items()}

    def put(name: str, setting: str, value: Any, default: Any) -> None:
        if name in names and value != default:
            shape.setdefault(name, {}).setdefault(setting, value)

    put("k", "init", old.get("k_init", 1.0), 1.0)
    put("lambda", "learnable", old.get("learnable_lambda", False), False)
    for name in names:
        put(name, "sharing", old.get("mixer_k_sharing", "shared"), "shared")
        put(name, "lr_scale", old.get("k_lr_scale", 1.0), 1.0)
    if shape:
        out["shape"] = shape
    return out
