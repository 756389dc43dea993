"""The sequence mixers, by name (:data:`MIXERS`; the registry and the block interface: :mod:`.registry`).

Adding a mixer is one file in this folder that defines its block and calls :func:`register_mixer`, imported
below, plus its tests; ``mamba1`` and ``attention`` were the first entries, ``mamba2`` was added this way.
"""

from mswelu.modules.mixers import attention, mamba1, mamba2  # noqa: F401  (they register themselves)
from mswelu.modules.mixers.registry import (
    MIXERS,
    SEQUENCE_LETTER,
    Mixer,
    build_block,
    layer_mixers,
    mixer_spec,
    pattern_letters,
    register_mixer,
    sequence_mixers,
)

__all__ = [
    "MIXERS",
    "SEQUENCE_LETTER",
    "Mixer",
    "build_block",
    "layer_mixers",
    "mixer_spec",
    "pattern_letters",
    "register_mixer",
    "sequence_mixers",
]
