"""Choosing between the CUDA kernels (mamba-ssm / causal-conv1d) and the pure-PyTorch path.

Every kernel path's entry points are listed here (:data:`KERNEL_SOURCES`), with the one probe that imports
them (:func:`import_kernels`, :func:`kernels_available`). Nothing here imports the kernel packages at module
import time: a CPU-only machine must be able to import every part of mswelu. A probe runs once, on first use.

``python -m mswelu.ops.backends`` prints what is installed, which backend a forward would use, and
whether mswelu's own CPU kernels (:mod:`mswelu.ops.cpu_kernels`) are built.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from collections.abc import Callable
from typing import Any

import torch

from mswelu.base.errors import unknown_choice
from mswelu.ops import cpu_kernels

BACKENDS = ("auto", "torch", "cuda")
ENV_VAR = "MSWELU_BACKEND"


#: each kernel path's entry points: name -> (module, attribute, compiled extension it needs, or None)
KERNEL_SOURCES: dict[str, dict[str, tuple[str, str, str | None]]] = {
    "Mamba-1": {
        "selective_scan_fn": (
            "mamba_ssm.ops.selective_scan_interface",
            "selective_scan_fn",
            "selective_scan_cuda",
        ),
        "causal_conv1d_fn": ("causal_conv1d", "causal_conv1d_fn", "causal_conv1d_cuda"),
        "causal_conv1d_update": ("causal_conv1d", "causal_conv1d_update", "causal_conv1d_cuda"),
        "selective_state_update": (
            "mamba_ssm.ops.triton.selective_state_update",
            "selective_state_update",
            None,
        ),
    },
    "Mamba-2": {
        "causal_conv1d_fn": ("causal_conv1d", "causal_conv1d_fn", "causal_conv1d_cuda"),
        "causal_conv1d_update": ("causal_conv1d", "causal_conv1d_update", "causal_conv1d_cuda"),
        "mamba_chunk_scan_combined": ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined", None),
        "selective_state_update": (
            "mamba_ssm.ops.triton.selective_state_update",
            "selective_state_update",
            None,
        ),
        "rmsnorm_fn": ("mamba_ssm.ops.triton.layernorm_gated", "rmsnorm_fn", None),
    },
}


def import_kernels(path: str = "Mamba-1") -> dict[str, Any]:
    """The entry points of kernel path ``path`` (:data:`KERNEL_SOURCES`) by name, from the installed
    packages; a RuntimeError naming each one that does not import, and why, otherwise. A compiled extension
    is imported by name first: the Python wrappers import without it in some situations and would fail only
    when called."""
    sources = KERNEL_SOURCES[path]
    found, missing = {}, []
    for name, (module, attr, compiled) in sources.items():
        try:
            if compiled is not None:
                importlib.import_module(compiled)
            found[name] = getattr(importlib.import_module(module), attr)
        except Exception as exc:  # ImportError, or an undefined-symbol OSError from a mismatched build
            missing.append(f"{name} (from {module}: {type(exc).__name__}: {exc})")
    if missing:
        compiled = ", ".join(dict.fromkeys(c for _, _, c in sources.values() if c))
        raise RuntimeError(
            f"the {path} kernel path needs the mamba-ssm and causal-conv1d kernels ({compiled}); these "
            f"kernels do not import: {'; '.join(missing)}. Install them (README, 'GPU') or use "
            "backend='torch'"
        )
    return found


@functools.cache
def kernels_available(path: str = "Mamba-1") -> tuple[bool, str]:
    """(True, "") when kernel path ``path`` can import everything it calls, else (False, why); probed once."""
    try:
        import_kernels(path)
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
        "kernel_paths": {path: kernels_available(path)[0] for path in KERNEL_SOURCES},
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
