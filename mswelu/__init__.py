"""mswelu: train and study Mamba language models with the learnable SWELU activation.

Public names are imported lazily so that ``import mswelu`` stays cheap and never fails on a
machine without the optional GPU kernels.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SWELU": "mswelu.modules.swelu",
    "swelu": "mswelu.ops.swelu",
    "MambaMixer": "mswelu.modules.mamba_mixer",
    "MambaSWELUConfig": "mswelu.configuration",
    "MambaSWELUForCausalLM": "mswelu.modeling",
    "PRESETS": "mswelu.configuration",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mswelu' has no attribute {name!r}")
