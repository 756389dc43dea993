"""mswelu: train and study Mamba language models with the learnable SWELU activation.

Public names are imported lazily so that ``import mswelu`` stays cheap and never fails on a
machine without the optional GPU kernels.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__version__ = "0.1.0"

# In a notebook without ipywidgets, tqdm.auto warns on import and falls back to text bars, which is what
# the workbook wants; the warning (with the venv's path in it) would land in every notebook's output.
warnings.filterwarnings("ignore", message="IProgress not found")

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
