"""The one place that knows how the supported transformers releases differ: 5.24 renamed every model's cache
(keyword and output field) from ``past_key_values`` / ``cache_params`` to ``cache``. Everything that passes or
reads a cache goes through here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from transformers.generation import utils as _generation_utils
from transformers.utils import logging as _hf_logging

__all__ = ["CACHE_NAMES", "CACHE_RENAMED", "cache_kwarg", "output_cache", "pick_cache", "quiet_progress_bars"]

#: Every name a cache travels under, newest first.
CACHE_NAMES = ("cache", "cache_params", "past_key_values")

#: True from transformers 5.24 on: ``generate`` and the output classes know the cache only as ``cache``.
CACHE_RENAMED: bool = "cache" in getattr(_generation_utils, "ALL_CACHE_NAMES", ())


def cache_kwarg(model: Any) -> str:
    """The keyword under which ``model.forward`` takes its cache on the installed transformers."""
    if CACHE_RENAMED:
        return "cache"
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    stateful = ("mamba_swelu", "mamba", "mamba2", "falcon_mamba")
    return "cache_params" if model_type in stateful else "past_key_values"


def output_cache(output: Any) -> Any:
    """The cache a model output carries, whatever the installed transformers calls it (None if none)."""
    keys = output.keys() if hasattr(output, "keys") else ()
    for name in CACHE_NAMES:
        if name in keys:
            return output[name]
    return None


def pick_cache(**named: Any) -> Any:
    """The one cache among keywords named any of :data:`CACHE_NAMES`; ValueError for two different ones."""
    given = {name: value for name, value in named.items() if value is not None}
    distinct = {id(v) for v in given.values()}
    if len(distinct) > 1:
        raise ValueError(f"pass the cache once, as `cache` (got {', '.join(sorted(given))})")
    return next(iter(given.values()), None)


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """No transformers 5 "Loading weights" / "Writing model shards" bars inside the block."""
    was_enabled = _hf_logging.is_progress_bar_enabled()
    _hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            _hf_logging.enable_progress_bar()
