"""Choosing between the CUDA kernels (mamba-ssm / causal-conv1d) and the pure-PyTorch path.

Nothing here imports the kernel packages at module import time: a CPU-only machine must be able
to import every part of mswelu. The probe runs once, on first use.
"""

from __future__ import annotations

import functools
import os

import torch

BACKENDS = ("auto", "torch", "cuda")
ENV_VAR = "MSWELU_BACKEND"


@functools.lru_cache(maxsize=1)
def kernels_available() -> tuple[bool, str]:
    """(True, "") when both kernel packages import, else (False, why)."""
    try:
        import causal_conv1d  # noqa: F401
        import mamba_ssm  # noqa: F401
        import selective_scan_cuda  # noqa: F401
    except Exception as exc:  # ImportError, or an undefined-symbol OSError from a mismatched build
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def requested_backend(config_value: str = "auto") -> str:
    """The backend asked for: the ``MSWELU_BACKEND`` environment variable wins over the config."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or config_value
    if value not in BACKENDS:
        raise ValueError(f"unknown backend {value!r}: expected one of {BACKENDS}")
    return value


def resolve_backend(config_value: str, tensor: torch.Tensor) -> str:
    """``"cuda"`` or ``"torch"`` for a forward on ``tensor``; forcing ``cuda`` where it cannot run raises."""
    want = requested_backend(config_value)
    if want == "torch":
        return "torch"
    ok, why = kernels_available()
    if want == "cuda":
        if not ok:
            raise RuntimeError(
                "backend 'cuda' was forced but the mamba-ssm / causal-conv1d kernels do not import "
                f"({why}); install them (see README, 'GPU') or use backend='torch'"
            )
        if not tensor.is_cuda:
            raise RuntimeError(f"backend 'cuda' was forced but the input is on {tensor.device}")
        return "cuda"
    return "cuda" if ok and tensor.is_cuda else "torch"
