"""The variants a comparison trains, by name: each is a set of TrainConfig overrides of one base config.

Every activation of :data:`mswelu.modules.activations.ACTIVATIONS` is a variant (the same architecture
with that activation in every slot: ``silu`` is the all-SiLU mirror of the seed architecture, SiLU in each
of SWELU's slots), every Transformer family of :data:`mswelu.baselines.BASELINES` is one (sized to the base
preset), and ``hybrid`` puts attention in every second block. ``swelu-residual`` is the seed architecture
with the dense stack's residual (the seed's last SWELU bounds the head's input to (-1, 1); this measures
that bound apart from the activation).

The reference Mamba-1 family isolates the workbook's question, the activation inside the mixer:
``mamba`` is the base preset's blocks with SiLU in the mixer only (no post-mixer activation, no dense
stack), ``mamba-swelu`` the same with learnable SWELU in the mixer's slots, ``mamba-swelu-fixed`` with
SWELU fixed at ``k_init`` (1.0 by default). Without the dense stack they get the depth whose parameter
count is closest to the base preset's (:func:`matched_depth`; within 2% for our presets).

Data, tokens, optimizer, schedule and learning rate are never part of a variant: they stay the base
config's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mswelu.baselines import BASELINES
from mswelu.configuration import PRESETS
from mswelu.errors import unknown_choice
from mswelu.modules.activations import ACTIVATIONS

__all__ = ["VARIANTS", "hybrid_pattern", "matched_depth", "variant_overrides"]

#: the reference Mamba-1 block: the activation in the mixer only
MAMBA_REFERENCE = {"post_mixer_act": False, "dense_sizes": ()}


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


def matched_depth(preset: str, **model: Any) -> int:
    """The number of Mamba blocks whose model, ``preset`` with the ``model`` settings, is closest in
    parameter count to ``preset`` itself. The embedding is the same on both sides, so the preset's own
    vocabulary decides the same depth as any other."""
    from mswelu.models import preset_parameter_count

    vocab, ctx = PRESETS[preset].get("vocab_size", 50257), PRESETS[preset].get("max_position_embeddings", 256)
    target = preset_parameter_count(preset, vocab, ctx)
    depths = range(1, 4 * len(PRESETS[preset].get("layer_pattern", "MMMMMM")) + 1)
    gap = {
        n: abs(preset_parameter_count(preset, vocab, ctx, layer_pattern="M" * n, **model) - target)
        for n in depths
    }
    return min(gap, key=lambda n: (gap[n], n))


def _mamba_reference(activation: str) -> Callable[[str], dict[str, Any]]:
    def overrides(preset: str) -> dict[str, Any]:
        depth = matched_depth(preset, **MAMBA_REFERENCE)
        return {"activation": activation, "model": {**MAMBA_REFERENCE, "layer_pattern": "M" * depth}}

    return overrides


VARIANTS: dict[str, Callable[[str], dict[str, Any]]] = {
    **{name: _activation(name) for name in ACTIVATIONS},
    **{name: _baseline(name) for name in BASELINES},
    "hybrid": _hybrid,
    "swelu-residual": lambda preset: {"activation": "swelu", "model": {"dense_residual": True}},
    "mamba": _mamba_reference("silu"),
    "mamba-swelu": _mamba_reference("swelu"),
    "mamba-swelu-fixed": _mamba_reference("swelu-fixed"),
}


def variant_overrides(variant: str, preset: str) -> dict[str, Any]:
    """TrainConfig overrides that turn a base config on ``preset`` into ``variant`` (see :data:`VARIANTS`)."""
    if variant not in VARIANTS:
        raise ValueError(unknown_choice("variant", variant, VARIANTS))
    if preset not in PRESETS:
        raise ValueError(f"variants apply to one of our presets {sorted(PRESETS)}, got {preset!r}")
    return VARIANTS[variant](preset)
