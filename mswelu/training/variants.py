"""The variants a comparison trains, by name: each is a set of TrainConfig overrides of one base config.

Every activation of :data:`mswelu.modules.activations.ACTIVATIONS` is a variant (the same architecture
with that activation in every slot: ``silu`` is the all-SiLU mirror of the seed architecture, SiLU in each
of SWELU's slots), every Transformer family of :data:`mswelu.models.baselines.BASELINES` is one (sized to the
base preset), and ``hybrid`` puts attention in every second block. ``swelu-residual`` is the seed architecture
with the dense stack's residual (the seed's last SWELU bounds the head's input to (-1, 1); this measures
that bound apart from the activation).

The reference families isolate the workbook's question, the activation inside the mixer. One family per
registered sequence mixer (:data:`mswelu.modules.mixers.MIXERS`), named after it (Mamba-1 keeps its first
name, ``mamba``): ``mamba`` is the base preset's blocks with SiLU in the mixer only (no post-mixer activation,
no dense stack), ``mamba-<activation>`` the same with another registered activation in the mixer's slots
(``mamba-swelu``: learnable SWELU, ``mamba-swelu-fixed``: SWELU with k frozen at its initial value,
``mamba-swish``: learnable Swish-beta, SiLU at init, ``mamba-swelu-as-learned``: SWELU frozen with each
slot at the k the same seed's ``mamba-swelu`` run learned, which separates the shape it finds from learning
it: :func:`learned_source` names that run's variant, :func:`with_learned_shape` sets its values);
likewise ``mamba2``, ``mamba2-swelu``, ... with Mamba-2 blocks, whose own shape settings
(:data:`MIXER_SETTINGS`: a state of 64 per head of 64 channels, as the ``mamba2-small`` preset) win over the
base's. Without the dense stack each family gets the depth whose
parameter count is closest to the base preset's (:func:`matched_depth`; within a few percent for our
presets).

``mamba-conv1`` and ``mamba-convres`` are ``mamba`` with its causal conv's weights fixed to one, or with a
residual around the conv (``conv_mode``): the controls of the synthetic probes (notebook 07).

Data, tokens, optimizer, schedule and learning rate are never part of a variant: they stay the base
config's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mswelu.base.errors import unknown_choice
from mswelu.models.baselines import BASELINES
from mswelu.models.configuration import PRESETS
from mswelu.modules.activations import ACTIVATIONS
from mswelu.modules.mixers import sequence_mixers

__all__ = [
    "AS_LEARNED",
    "VARIANTS",
    "hybrid_pattern",
    "learned_source",
    "matched_depth",
    "variant_overrides",
    "with_learned_shape",
]

#: the reference block: the activation in the mixer only
MAMBA_REFERENCE = {"post_mixer_act": False, "dense_sizes": ()}
#: a mixer's own shape settings in its reference family (the base preset's apply to the rest)
MIXER_SETTINGS: dict[str, dict[str, Any]] = {"mamba2": {"d_state": 64, "headdim": 64}}
#: ``<family>-<activation>`` + this: the ``-fixed`` twin, each slot at the values that variant's run learned
AS_LEARNED = "-as-learned"


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
    from mswelu.models.build import preset_parameter_count

    vocab, ctx = PRESETS[preset].get("vocab_size", 50257), PRESETS[preset].get("max_position_embeddings", 256)
    target = preset_parameter_count(preset, vocab, ctx)
    depths = range(1, 4 * len(PRESETS[preset].get("layer_pattern", "MMMMMM")) + 1)
    gap = {
        n: abs(preset_parameter_count(preset, vocab, ctx, layer_pattern="M" * n, **model) - target)
        for n in depths
    }
    return min(gap, key=lambda n: (gap[n], n))


def _reference(mixer: str, activation: str) -> Callable[[str], dict[str, Any]]:
    def overrides(preset: str) -> dict[str, Any]:
        model = {**MAMBA_REFERENCE, "mixer": mixer, **MIXER_SETTINGS.get(mixer, {})}
        depth = matched_depth(preset, **model)
        return {"activation": activation, "model": {**model, "layer_pattern": "M" * depth}}

    return overrides


def _family(mixer: str) -> dict[str, Callable[[str], dict[str, Any]]]:
    """``<mixer>`` (SiLU) and ``<mixer>-<activation>`` for every other registered activation."""
    stem = "mamba" if mixer == "mamba1" else mixer
    out = {stem: _reference(mixer, "silu")}
    out.update({f"{stem}-{name}": _reference(mixer, name) for name in ACTIVATIONS if name != "silu"})
    learnable = [n for n in ACTIVATIONS if f"{n}-fixed" in ACTIVATIONS]
    out.update({f"{stem}-{n}{AS_LEARNED}": _reference(mixer, f"{n}-fixed") for n in learnable})
    return out


VARIANTS: dict[str, Callable[[str], dict[str, Any]]] = {
    **{name: _activation(name) for name in ACTIVATIONS},
    **{name: _baseline(name) for name in BASELINES},
    "hybrid": _hybrid,
    "swelu-residual": lambda preset: {"activation": "swelu", "model": {"dense_residual": True}},
}
for _mixer in sequence_mixers():
    VARIANTS.update(_family(_mixer))


def _conv_control(mode: str) -> Callable[[str], dict[str, Any]]:
    """``mamba`` with another causal conv (``conv_mode``, one of ``mamba_mixer.CONV_MODES``)."""

    def overrides(preset: str) -> dict[str, Any]:
        out = _reference("mamba1", "silu")(preset)
        return {**out, "model": {**out["model"], "conv_mode": mode}}

    return overrides


#: the controls of "Achilles' heel of Mamba" (Chen et al. 2025): conv weights fixed to one, a residual
#: around the conv (the activation's effect on the conv's asymmetry is measured against these fixes)
VARIANTS.update({"mamba-conv1": _conv_control("ones"), "mamba-convres": _conv_control("residual")})


def learned_source(variant: str) -> str | None:
    """The variant whose learned values an ``-as-learned`` variant is frozen at (None for the others)."""
    if variant.endswith(AS_LEARNED) and variant in VARIANTS:
        return variant.removesuffix(AS_LEARNED)
    return None


def with_learned_shape(cfg: dict[str, Any], source: Any) -> dict[str, Any]:
    """``cfg`` (an ``-as-learned`` variant's) with each slot's initial value of every shape parameter that
    learned in ``source`` (a finished run or ledger record of :func:`learned_source`'s variant, same seed
    and data) set to the value it ended at: ``model.shape.<param>.init = {slot: value}``."""
    learned = sorted({p for slot in source.slots.values() for p in slot.learnable})
    if not learned:
        raise ValueError(f"{getattr(source, 'name', source)} learned no shape parameter to freeze at")
    model = dict(cfg.get("model") or {})
    shape = {name: dict(entry) for name, entry in (model.get("shape") or {}).items()}
    for param in learned:
        shape[param] = {**shape.get(param, {}), "init": source.final_shape(param)}
    return {**cfg, "model": {**model, "shape": shape}}


def variant_overrides(variant: str, preset: str) -> dict[str, Any]:
    """TrainConfig overrides that turn a base config on ``preset`` into ``variant`` (see :data:`VARIANTS`)."""
    if variant not in VARIANTS:
        raise ValueError(unknown_choice("variant", variant, VARIANTS))
    if preset not in PRESETS:
        raise ValueError(f"variants apply to one of our presets: {unknown_choice('preset', preset, PRESETS)}")
    return VARIANTS[variant](preset)
