"""The variants a comparison trains, by name: each is a set of TrainConfig overrides of one base config.

Every activation of :data:`mswelu.modules.activations.ACTIVATIONS` is a variant (the same architecture
with that activation in every slot), every Transformer family of :data:`mswelu.baselines.BASELINES` is one
(sized to the base preset), and ``hybrid`` puts attention in every second block. Data, tokens, optimizer,
schedule and learning rate are never part of a variant: they stay the base config's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mswelu.baselines import BASELINES
from mswelu.configuration import PRESETS
from mswelu.modules.activations import ACTIVATIONS

__all__ = ["VARIANTS", "hybrid_pattern", "variant_overrides"]


def hybrid_pattern(layer_pattern: str) -> str:
    """The same depth with attention in every second block ("MMMM" -> "MAMA")."""
    if not layer_pattern:
        raise ValueError("empty layer_pattern")
    return "".join("A" if i % 2 else "M" for i in range(len(layer_pattern)))


def _activation(name: str) -> Callable[[str], dict[str, Any]]:
    return lambda preset: {"activation": name}


def _baseline(name: str) -> Callable[[str], dict[str, Any]]:
    return lambda preset: {"preset": f"{name}:{preset}", "activation": None}


def _hybrid(preset: str) -> dict[str, Any]:
    return {
        "activation": "swelu",
        "model": {"layer_pattern": hybrid_pattern(PRESETS[preset].get("layer_pattern", "MMMMMM"))},
    }


VARIANTS: dict[str, Callable[[str], dict[str, Any]]] = {
    **{name: _activation(name) for name in ACTIVATIONS},
    **{name: _baseline(name) for name in BASELINES},
    "hybrid": _hybrid,
}


def variant_overrides(variant: str, preset: str) -> dict[str, Any]:
    """TrainConfig overrides that turn a base config on ``preset`` into ``variant`` (see :data:`VARIANTS`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: expected one of {tuple(VARIANTS)}")
    if preset not in PRESETS:
        raise ValueError(f"variants apply to one of our presets {sorted(PRESETS)}, got {preset!r}")
    return VARIANTS[variant](preset)
