"""Run the CUDA kernel path on CPU: bind the upstream packages' own reference functions to it.

mamba-ssm and causal-conv1d install on a CPU-only machine from their sdists (``bash .ci/setup
--with-kernel-refs``), but importing them fails on the missing compiled modules
``selective_scan_cuda`` and ``causal_conv1d_cuda``. Empty stand-ins for those two names let the
pure-PyTorch reference functions import; the stand-ins are removed again right after, so nothing
else in the test session (e.g. the backend probe) mistakes them for real kernels.

The references take the same arguments as the CUDA entry points, so ``mswelu.ops.mamba_kernels``
runs unchanged with them bound in place of ``selective_scan_fn``, ``causal_conv1d_fn``,
``causal_conv1d_update`` and ``selective_state_update``.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from types import SimpleNamespace

import pytest

_COMPILED = ("selective_scan_cuda", "causal_conv1d_cuda")
_cache: SimpleNamespace | None = None

SKIP_REASON = (
    "upstream mamba-ssm / causal-conv1d packages are not installed "
    "(run `bash .ci/setup --with-kernel-refs`)"
)


def refs_installed() -> bool:
    """True when both upstream packages are installed (they need not import)."""
    return all(importlib.util.find_spec(name) is not None for name in ("mamba_ssm", "causal_conv1d"))


def load_refs() -> SimpleNamespace:
    """The upstream references (imported once); skips the calling test if the packages are missing."""
    global _cache
    if _cache is not None:
        return _cache
    if not refs_installed():
        pytest.skip(SKIP_REASON)
    added = [name for name in _COMPILED if name not in sys.modules]
    for name in added:
        sys.modules[name] = types.ModuleType(name)  # empty stand-in: only lets the module import
    try:
        from causal_conv1d.causal_conv1d_interface import causal_conv1d_ref, causal_conv1d_update_ref
        from mamba_ssm.modules import mamba_simple
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update_ref
    finally:
        for name in added:
            del sys.modules[name]
    _cache = SimpleNamespace(
        selective_scan_fn=selective_scan_ref,
        causal_conv1d_fn=causal_conv1d_ref,
        causal_conv1d_update=causal_conv1d_update_ref,
        selective_state_update=selective_state_update_ref,
        mamba_simple=mamba_simple,
    )
    return _cache


def bind_refs(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Bind the references as mamba_kernels' four entry points for one test (undone afterwards)."""
    from mswelu.ops import mamba_kernels

    refs = load_refs()
    for name in ("selective_scan_fn", "causal_conv1d_fn", "causal_conv1d_update", "selective_state_update"):
        monkeypatch.setattr(mamba_kernels, name, getattr(refs, name))
    return refs


def upstream_mamba(monkeypatch: pytest.MonkeyPatch, **kwargs) -> object:
    """mamba-ssm's own ``Mamba`` module (unfused path, references bound in its namespace) as an
    independent check of parameter layout and the SiLU forward / step."""
    refs = load_refs()
    ns = refs.mamba_simple
    for name in ("selective_scan_fn", "causal_conv1d_fn", "causal_conv1d_update", "selective_state_update"):
        monkeypatch.setattr(ns, name, getattr(refs, name))
    return ns.Mamba(use_fast_path=False, **kwargs)
