"""mswelu's compiled CPU kernels (``ops/csrc/cpu_kernels.cpp``): the selective scan, the mixer's causal
conv, SWELU and the fused LM head's cross-entropy.

On a CPU the scan and SWELU are most of a small Mamba-SWELU model's training step in pure PyTorch: the scan
is a sequential recurrence over (batch, channels, state) that PyTorch runs as many small ops, and SWELU's
closed form is a dozen elementwise passes. The kernels do each in one pass with the state in registers,
vectorised with ATen's ``Vectorized`` for the instruction set this CPU has (AVX-512, AVX2, else generic)
and parallel over torch's threads; they read bf16 activations (autocast) without converting copies, and
the conv works channels-last so that the mixer makes no transposing copies. Their references are
:mod:`mswelu.ops.selective_scan`, :mod:`mswelu.ops.causal_conv`, :mod:`mswelu.ops.swelu` and
:mod:`mswelu.ops.lm_loss`, which call them (``impl="auto"``) and which the tests hold them to.

The extension is built on first use with :func:`torch.utils.cpp_extension.load` (a C++ compiler and
``ninja``; about a minute once, then cached in torch's extensions folder, ``TORCH_EXTENSIONS_DIR``,
under a name keyed by what is built: the source's and flags' hash, so that two checkouts with other
sources do not replace each other's build, and equal ones share it).
Where it cannot be built, :func:`available` says why and callers run the pure-PyTorch code, which
computes the same numbers (one warning). ``MSWELU_CPU_KERNELS=0`` turns the kernels off;
``python -m mswelu.ops.cpu_kernels`` builds them and prints what was built.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from mswelu.base.progress import log

__all__ = ["ENV_VAR", "available", "describe", "enabled", "load", "rows", "usable", "warn_fallback"]

ENV_VAR = "MSWELU_CPU_KERNELS"
SOURCE = Path(__file__).parent / "csrc" / "cpu_kernels.cpp"

# Flags per ATen CPU capability: the same instruction sets (and CPU_CAPABILITY macros) ATen's own
# kernels for that capability are built with, so that Vectorized<T> uses them.
_CAPABILITY_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-DCPU_CAPABILITY_AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2"],
}


def enabled() -> bool:
    """False when ``MSWELU_CPU_KERNELS`` is ``0`` / ``off`` / ``false`` / ``no``."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "off", "false", "no")


def _capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # older builds / unusual platforms: the generic vector code
        return "DEFAULT"


def _build_flags(capability: str) -> tuple[list[str], list[str]]:
    # no -std: torch's own (C++20 since 2.13, and required by 2.15's headers) stays in force
    cflags = ["-O3", *_CAPABILITY_FLAGS.get(capability, [])]
    if capability in _CAPABILITY_FLAGS:
        cflags.append(f"-DCPU_CAPABILITY={capability}")
    ldflags: list[str] = []
    if platform.system() == "Linux" and "OpenMP" in torch.__config__.parallel_info():
        # at::parallel_for is inline OpenMP code: without -fopenmp it would run on one thread
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
    return cflags, ldflags


def _name(capability: str) -> str:
    """The extension's name: the capability and a hash of the source, the flags and torch's version."""
    cflags, ldflags = _build_flags(capability)
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(json.dumps([cflags, ldflags, torch.__version__]).encode())
    return f"mswelu_cpu_{capability.lower()}_{key.hexdigest()[:12]}"


def _is_built(name: str) -> bool:
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return any(Path(_get_build_directory(name, verbose=False)).glob(f"{name}*.so"))
    except Exception:
        return False


#: a build lock older than this was left by a build that was killed (a build takes about a minute)
STALE_LOCK_SECONDS = 300


def _clear_stale_lock(name: str) -> None:
    """torch's extension builder up to 2.14 (a ``FileBaton``: the lock is the file's existence) waits,
    without a time limit, for the lock file of a build in progress; a build killed half-way (Ctrl-C, a
    killed job) leaves it behind and every later run would hang. Wait for a fresh lock to go; remove one
    older than :data:`STALE_LOCK_SECONDS`, saying so. From torch 2.15 the builder locks the file through
    the OS (``filelock``), which a killed build releases, and keeps the file: nothing to clear or wait for."""
    from torch.utils import cpp_extension

    if not hasattr(cpp_extension, "FileBaton"):
        return
    try:
        from torch.utils.cpp_extension import _get_build_directory

        lock = Path(_get_build_directory(name, verbose=False)) / "lock"
        said = False
        while lock.exists():
            age = time.time() - lock.stat().st_mtime
            if not said:
                log(
                    f"waiting for another process's build of the CPU kernels to finish (its lock {lock} is "
                    f"{age:.0f} s old; one older than {STALE_LOCK_SECONDS} s is removed; if no build is "
                    "running, remove it yourself)",
                    source="mswelu",
                )
                said = True
            if age > STALE_LOCK_SECONDS:
                log(
                    f"removing a stale build lock ({age:.0f} s old, from an interrupted build): {lock}",
                    source="mswelu",
                )
                lock.unlink(missing_ok=True)
                break
            time.sleep(1.0)
    except OSError:
        pass  # the builder reports what is wrong with its folder


@functools.lru_cache(maxsize=1)
def _build() -> tuple[ModuleType | None, str]:
    """(module, "") or (None, why); built or loaded once per process."""
    capability = _capability()
    name = _name(capability)
    cflags, ldflags = _build_flags(capability)
    _clear_stale_lock(name)
    if not _is_built(name):
        log(f"building the CPU kernels for {capability} (once: about a minute)", source="mswelu")
    start = time.perf_counter()
    from torch.utils.cpp_extension import load as load_extension

    for attempt in (1, 2):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's notes on compiler versions
                module = load_extension(
                    name, [str(SOURCE)], extra_cflags=cflags, extra_ldflags=ldflags, verbose=False
                )
            break
        except FileNotFoundError as exc:
            # another process removed this build's lock as stale (this one was paused past the limit):
            # torch's release then fails, after the build; loading again finds the module built
            if attempt == 2 or Path(exc.filename or "").name != "lock":
                return None, _why(exc)
        except Exception as exc:  # no compiler, no ninja, a failed compile or link
            return None, _why(exc)
    if time.perf_counter() - start > 5:
        log(f"CPU kernels built in {time.perf_counter() - start:.0f} s", source="mswelu")
    return module, ""


def _why(exc: Exception) -> str:
    """The useful part of a failed build: the compiler's first error line, else the message's start."""
    text = str(exc)
    errors = [line.strip() for line in text.splitlines() if " error: " in line or "fatal error" in line]
    detail = errors[0] if errors else " ".join(text.split())
    return f"{type(exc).__name__}: {detail[:400]}"


def available() -> tuple[bool, str]:
    """(True, "") when the kernels are on and loaded (building them if needed), else (False, why)."""
    if not enabled():
        return False, f"turned off ({ENV_VAR}={os.environ.get(ENV_VAR)})"
    module, why = _build()
    return module is not None, why


def usable() -> bool:
    """:func:`available`, for callers choosing an implementation: False also warns (once) that the
    PyTorch code runs instead."""
    ok, _ = available()
    if not ok:
        warn_fallback()
    return ok


def load() -> ModuleType:
    """The extension module (whatever ``MSWELU_CPU_KERNELS`` says: an explicit request); RuntimeError
    saying why where it cannot be built."""
    module, why = _build()
    if module is None:
        raise RuntimeError(f"mswelu's CPU kernels are not available: {why}")
    return module


def warn_fallback() -> None:
    """Say once per process that the pure-PyTorch code runs instead of the kernels, and why (nothing
    when they were turned off on purpose)."""
    if enabled():
        _warn_fallback_once()


@functools.lru_cache(maxsize=1)
def _warn_fallback_once() -> None:
    _, why = _build()
    if why:
        warnings.warn(
            f"mswelu: the CPU kernels could not be built ({why}); running the pure-PyTorch scan, SWELU and "
            "loss, which compute the same numbers several times more slowly. A C++ compiler and ninja are "
            f"needed (set {ENV_VAR}=0 to silence this).",
            RuntimeWarning,
            stacklevel=4,  # the op that chose the PyTorch code (via usable)
        )


def rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as (rows, last dim), the layout of the elementwise kernels: a view where the last dimension has
    unit stride and the others merge into rows (a slice of a wider tensor, e.g. half of the mixer's in_proj
    output), else a contiguous copy."""
    cols = x.size(-1) if x.dim() else 1
    if x.dim() and (x.stride(-1) == 1 or cols == 1):
        try:
            return x.view(-1, cols)
        except RuntimeError:  # rows that do not merge into one stride
            pass
    return x.contiguous().view(-1, cols)


def describe() -> dict[str, Any]:
    """Whether the kernels are available, for which instruction set, and why not."""
    ok, why = available()
    info: dict[str, Any] = {"available": ok, "capability": _capability(), "threads": torch.get_num_threads()}
    if ok:
        info["fp32_lanes"] = load().vector_lanes()
    else:
        info["why_not"] = why
    return info


def main() -> int:
    """Build (or load) the kernels and print :func:`describe` as JSON; exit status 1 if unavailable."""
    info = describe()
    print(json.dumps(info, indent=2))
    return 0 if info["available"] else 1


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
