"""Choosing between the CUDA kernels (mamba-ssm / causal-conv1d) and the pure-PyTorch path.

Nothing here imports the kernel packages at module import time: a CPU-only machine must be able
to import every part of mswelu. The probe runs once, on first use.

``python -m mswelu.ops.backends`` prints what is installed, which backend a forward would use, and
whether mswelu's own CPU kernels (:mod:`mswelu.ops.cpu_kernels`) are built.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any

import torch

from mswelu.errors import unknown_choice
from mswelu.ops import cpu_kernels

BACKENDS = ("auto", "torch", "cuda")
ENV_VAR = "MSWELU_BACKEND"


def import_kernels() -> dict[str, Any]:
    """The four kernel entry points of mamba-ssm / causal-conv1d by name (``selective_scan_fn``,
    ``causal_conv1d_fn``, ``causal_conv1d_update``, ``selective_state_update``); RuntimeError saying what
    is missing otherwise. The compiled extensions are imported by name: the Python wrappers of both
    packages import without them in some situations and would fail only when called."""
    try:
        import causal_conv1d_cuda  # noqa: F401
        import selective_scan_cuda  # noqa: F401
        from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    except Exception as exc:  # ImportError, or an undefined-symbol OSError from a mismatched build
        raise RuntimeError(
            "the mamba-ssm and causal-conv1d kernels (selective_scan_cuda, causal_conv1d_cuda) do not "
            f"import: {type(exc).__name__}: {exc}. Install them (README, 'GPU') or use backend='torch'"
        ) from exc
    return {
        "selective_scan_fn": selective_scan_fn,
        "causal_conv1d_fn": causal_conv1d_fn,
        "causal_conv1d_update": causal_conv1d_update,
        "selective_state_update": selective_state_update,
    }


@functools.lru_cache(maxsize=1)
def kernels_available() -> tuple[bool, str]:
    """(True, "") when the kernel path can import everything it calls, else (False, why); probed once."""
    try:
        import_kernels()
    except RuntimeError as exc:
        return False, str(exc)
    return True, ""


def requested_backend(config_value: str = "auto") -> str:
    """The backend asked for: the ``MSWELU_BACKEND`` environment variable wins over the config."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or config_value
    if value not in BACKENDS:
        source = f"environment variable {ENV_VAR}" if os.environ.get(ENV_VAR, "").strip() else "backend"
        raise ValueError(unknown_choice(f"{source} value", value, BACKENDS))
    return value


def resolve_backend(
    config_value: str, tensor: torch.Tensor, available: Callable[[], tuple[bool, str]] | None = None
) -> str:
    """``"cuda"`` or ``"torch"`` for a forward on ``tensor``; forcing ``cuda`` where it cannot run raises.
    ``available`` is the mixer's kernel probe (default: Mamba-1's, :func:`kernels_available`)."""
    want = requested_backend(config_value)
    if want == "torch":
        return "torch"
    ok, why = (available or kernels_available)()
    if want == "cuda":
        if not ok:
            raise RuntimeError(f"backend 'cuda' was forced but {why} (or unset {ENV_VAR})")
        if not tensor.is_cuda:
            raise RuntimeError(
                f"backend 'cuda' was forced but the input is on {tensor.device}: the kernels need a GPU "
                f"(move the model to 'cuda' or use backend='torch' / unset {ENV_VAR})"
            )
        return "cuda"
    return "cuda" if ok and tensor.is_cuda else "torch"


def describe(config_value: str = "auto") -> dict[str, Any]:
    """What is installed and which backend a forward takes, on the GPU if there is one, else on CPU."""
    ok, why = kernels_available()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    info: dict[str, Any] = {
        "env": {ENV_VAR: os.environ.get(ENV_VAR)},
        "requested": None,
        "kernels_available": ok,
        "kernels_error": why or None,
        "cuda_device": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "device": str(device),
        "backend": None,
        "cpu_kernels": cpu_kernels.describe(),  # the scan, SWELU and loss kernels of CPU runs
    }
    try:
        info["requested"] = requested_backend(config_value)
        info["backend"] = resolve_backend(config_value, torch.empty(0, device=device))
    except (ValueError, RuntimeError) as exc:
        info["error"] = str(exc)
    return info


def main() -> int:
    """Print :func:`describe` as JSON; exit status 1 if the requested backend cannot run here."""
    info = describe()
    print(json.dumps(info, indent=2))
    return 1 if "error" in info else 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
