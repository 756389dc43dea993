"""The sequence mixers a model's blocks can hold, by name: the one table the config, the model, the
decoding cache, the kernel probe and the parameter counts read.

A mixer is registered with the block class that wraps it (:class:`Mixer`). The block owns its parameters,
its CPU and CUDA forward, its decoding state (a dict of tensors it fills on the prompt and updates one token
at a time), the names of its weights, its activation slots and its closed-form parameter count;
``modeling.py`` only stacks blocks. A block class implements:

- ``__init__(config, layer_idx)``;
- ``forward(x, state)``: ``x`` (B, L, d_model) -> (B, L, d_model), residual included; ``state`` is None (no
  cache), an empty dict (prefill: fill it) or a filled dict (continue from it);
- ``activation_slots()``: ``[(path, module, group, slot)]``, ``path`` relative to the block;
- ``residual_writes``: how many projections write into the residual stream (for the scaled init);
- classmethods of the config: ``parameter_count(config)`` (its parameters in closed form),
  ``flops_per_token(config, seq_len)`` (``{"forward", "training"}``, its activations' work included:
  :func:`~mswelu.modules.mixers.common.block_flops`), ``activation_bytes(config, autocast_bytes)`` (what a
  training step keeps per token for its backward, the estimate :mod:`mswelu.plan` uses) and
  ``check_config(config)`` (a ValueError naming a bad setting of the ones it reads).

A state-space mixer's block subclasses :class:`~mswelu.modules.mixers.ssm_block.SSMBlock`, which implements
all of that from a few declarations.

In ``layer_pattern`` a letter stands for a mixer: ``M`` for the config's ``mixer`` (any mixer registered with
letter ``M``), other letters (``A``: attention) for the one mixer registered with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from mswelu.base.errors import unknown_choice

__all__ = ["MIXERS", "SEQUENCE_LETTER", "Mixer", "layer_mixers", "mixer_spec", "register_mixer"]

#: the layer-pattern letter of the config's own sequence mixer (``config.mixer``)
SEQUENCE_LETTER = "M"


@dataclass(frozen=True)
class Mixer:
    """One registered mixer.

    Attributes:
        name: its name in configs (``mixer: mamba2``) and records.
        letter: its letter in ``layer_pattern``: ``M`` for a sequence mixer that ``config.mixer`` can choose,
            another letter for a mixer always named by it (``A``).
        block: the block class (see the module docstring).
        description: one line for docs and reports.
        bounded_context: its context is limited to ``max_position_embeddings`` (attention's is).
        kernels_available: ``() -> (ok, why)``: whether its CUDA kernel path can import what it calls; None
            for a mixer without one.
    """

    name: str
    letter: str
    block: type[nn.Module]
    description: str = ""
    bounded_context: bool = False
    kernels_available: Callable[[], tuple[bool, str]] | None = None


MIXERS: dict[str, Mixer] = {}


def register_mixer(spec: Mixer) -> Mixer:
    if spec.name in MIXERS:
        raise ValueError(f"mixer {spec.name!r} is already registered")
    if spec.letter != SEQUENCE_LETTER and any(m.letter == spec.letter for m in MIXERS.values()):
        raise ValueError(f"layer-pattern letter {spec.letter!r} is taken")
    MIXERS[spec.name] = spec
    return spec


def mixer_spec(name: str) -> Mixer:
    if name not in MIXERS:
        raise ValueError(unknown_choice("mixer", name, MIXERS))
    return MIXERS[name]


def sequence_mixers() -> tuple[str, ...]:
    """The mixers ``config.mixer`` can name (those behind the letter ``M``)."""
    return tuple(n for n, m in MIXERS.items() if m.letter == SEQUENCE_LETTER)


def pattern_letters() -> tuple[str, ...]:
    return tuple(dict.fromkeys(m.letter for m in MIXERS.values()))


def layer_mixers(layer_pattern: str, mixer: str) -> list[str]:
    """The mixer name of each block: ``M`` -> ``mixer``, any other letter -> the mixer registered with it."""
    by_letter = {m.letter: n for n, m in MIXERS.items() if m.letter != SEQUENCE_LETTER}
    out = []
    for letter in layer_pattern:
        if letter == SEQUENCE_LETTER:
            out.append(mixer)
        elif letter in by_letter:
            out.append(by_letter[letter])
        else:
            raise ValueError(unknown_choice("layer-pattern letter", letter, pattern_letters()))
    return out


def build_block(config: Any, layer_idx: int, mixer: str) -> nn.Module:
    return mixer_spec(mixer).block(config, layer_idx)
