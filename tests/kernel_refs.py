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
import torch

_COMPILED = ("selective_scan_cuda", "causal_conv1d_cuda")
_cache: SimpleNamespace | None = None

SKIP_REASON = (
    "upstream mamba-ssm / causal-conv1d packages are not installed (run `bash .ci/setup --with-kernel-refs`)"
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


_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _strict(refs: SimpleNamespace) -> SimpleNamespace:
    """The references behind the input checks of the CUDA kernels (``TORCH_CHECK``s in
    selective_scan.cpp and causal_conv1d.cpp), which the references themselves do not make: the
    kernel path must pass tensors the real kernels accept, dtypes and layouts included."""

    def scan(
        u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
    ):
        assert u.dtype in _FLOATS, f"u dtype {u.dtype}"
        assert A.dtype == torch.float32, f"A must be fp32, got {A.dtype}"
        for name, t in (("delta", delta), ("B", B), ("C", C), ("z", z)):
            if t is not None:
                assert t.dtype == u.dtype, f"{name} dtype {t.dtype} != u dtype {u.dtype}"
        for name, t in (("D", D), ("delta_bias", delta_bias)):
            if t is not None:
                assert t.dtype == torch.float32, f"{name} must be fp32, got {t.dtype}"
        for name, t in (("u", u), ("delta", delta), ("B", B), ("C", C), ("z", z)):
            if t is not None:
                assert t.stride(-1) == 1 or t.shape[-1] == 1, f"{name} must have stride 1 along L"
        assert A.shape[1] <= 256
        return refs.selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

    def conv(
        x,
        weight,
        bias=None,
        seq_idx=None,
        initial_states=None,
        return_final_states=False,
        final_states_out=None,
        activation=None,
    ):
        assert x.dtype in _FLOATS and weight.dtype in _FLOATS, (x.dtype, weight.dtype)
        assert weight.dim() == 2 and 2 <= weight.shape[1] <= 4, f"weight shape {tuple(weight.shape)}"
        assert bias is None or bias.dtype == weight.dtype, "bias dtype must equal weight dtype"
        assert x.stride(2) == 1 or x.stride(1) == 1, f"x strides {x.stride()}"
        assert seq_idx is None and initial_states is None and not return_final_states
        return refs.causal_conv1d_fn(x, weight, bias, activation=activation)

    def conv_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None):
        assert x.dtype in _FLOATS and weight.dtype in _FLOATS, (x.dtype, weight.dtype)
        assert conv_state.dtype == x.dtype, f"conv_state dtype {conv_state.dtype} != x dtype {x.dtype}"
        assert 2 <= weight.shape[1] <= 4 and conv_state.shape[-1] >= weight.shape[1] - 1
        assert bias is None or bias.dtype == weight.dtype, "bias dtype must equal weight dtype"
        return refs.causal_conv1d_update(x, conv_state, weight, bias, activation, cache_seqlens)

    def state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
        assert A.dtype == torch.float32, f"A must be fp32, got {A.dtype}"
        return refs.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)

    return SimpleNamespace(
        selective_scan_fn=scan,
        causal_conv1d_fn=conv,
        causal_conv1d_update=conv_update,
        selective_state_update=state_update,
    )


def bind_refs(monkeypatch: pytest.MonkeyPatch, strict: bool = True) -> SimpleNamespace:
    """Bind the references as mamba_kernels' four entry points for one test (undone afterwards);
    ``strict`` also asserts the real kernels' input checks on every call."""
    from mswelu.ops import mamba_kernels

    refs = load_refs()
    bound = _strict(refs) if strict else refs
    for name in ("selective_scan_fn", "causal_conv1d_fn", "causal_conv1d_update", "selective_state_update"):
        monkeypatch.setattr(mamba_kernels, name, getattr(bound, name))
    return bound


def upstream_mamba(monkeypatch: pytest.MonkeyPatch, **kwargs) -> object:
    """mamba-ssm's own ``Mamba`` module (unfused path, references bound in its namespace) as an
    independent check of parameter layout and the SiLU forward / step."""
    refs = load_refs()
    ns = refs.mamba_simple
    for name in ("selective_scan_fn", "causal_conv1d_fn", "causal_conv1d_update", "selective_state_update"):
        monkeypatch.setattr(ns, name, getattr(refs, name))
    return ns.Mamba(use_fast_path=False, **kwargs)


def decode_on_kernels(
    mixer: torch.nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoding on a mixer's kernel path: the first token through the prefill, every later one through the
    step kernels; (outputs, conv_state, ssm_state after the last token)."""
    out, conv_state, ssm_state = mixer.forward_cuda(x[:, :1], return_states=True)
    steps = [mixer.step_cuda(x[:, t : t + 1], conv_state, ssm_state) for t in range(1, x.shape[1])]
    return torch.cat([out, *steps], dim=1), conv_state, ssm_state
