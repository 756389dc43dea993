"""mswelu: train and study Mamba language models with the learnable SWELU activation.

Public names are imported lazily, so ``import mswelu`` stays cheap and needs no GPU kernels. It is also the
one registration of ``mamba_swelu`` with transformers' Auto classes, whichever of the two is imported first
(an import hook waits for transformers' Auto modules), so a run's ``final/`` loads like any Hub model.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

# without ipywidgets tqdm.auto falls back to text bars (what the workbook wants), but warns in every notebook
warnings.filterwarnings("ignore", message="IProgress not found")

_EXPORTS = {
    "SWELU": "mswelu.modules.swelu",
    "swelu": "mswelu.ops.swelu",
    "MambaMixer": "mswelu.modules.mamba_mixer",
    "MsweluConfig": "mswelu.models.configuration",
    "MsweluForCausalLM": "mswelu.models.modeling",
    "PRESETS": "mswelu.models.configuration",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mswelu' has no attribute {name!r}")


_AUTO_CONFIG = "transformers.models.auto.configuration_auto"
_AUTO_MODEL = "transformers.models.auto.modeling_auto"


def _register(name: str, module: ModuleType) -> None:
    """Add ``mamba_swelu`` to transformers' Auto module ``name`` (``AutoConfig``, or
    ``AutoModelForCausalLM``: the model's module is imported then, and with it torch)."""
    try:
        from mswelu.models.configuration import MsweluConfig

        if name == _AUTO_CONFIG:
            module.AutoConfig.register(MsweluConfig.model_type, MsweluConfig, exist_ok=True)
        else:
            from mswelu.models.modeling import MsweluForCausalLM

            module.AutoModelForCausalLM.register(MsweluConfig, MsweluForCausalLM, exist_ok=True)
    except Exception as exc:  # noqa: BLE001 - never break transformers' own import
        warnings.warn(f"mswelu could not register its model with transformers: {exc!r}", stacklevel=2)


class _Loader(importlib.abc.Loader):
    """Runs an Auto module with its own loader, then :func:`_register`."""

    def __init__(self, inner: importlib.abc.Loader, name: str) -> None:
        self.inner, self.name = inner, name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _register(self.name, module)


class _AutoHook(importlib.abc.MetaPathFinder):
    """Finds transformers' two Auto modules through the other finders and gives them a :class:`_Loader`."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name not in (_AUTO_CONFIG, _AUTO_MODEL):
            return None
        for finder in sys.meta_path:
            spec = (
                None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            )
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, name)
                return spec
        return None


if not any(isinstance(f, _AutoHook) for f in sys.meta_path):
    sys.meta_path.insert(0, _AutoHook())
for _name in (_AUTO_CONFIG, _AUTO_MODEL):  # transformers was imported before mswelu
    if _name in sys.modules:
        _register(_name, sys.modules[_name])
