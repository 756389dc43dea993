"""Peak host memory of one benchmark step, measured in a fresh process (what the CPU benchmarks share).

In the child, ``echo 5 > /proc/self/clear_refs`` (Linux) resets the peak-RSS counter, so ``VmHWM`` after the
step minus ``VmRSS`` before it is the most extra resident memory the step needed; where clear_refs is not
available the process-lifetime ``ru_maxrss`` is used instead, and the method is returned beside the number.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

__all__ = ["extra_peak_mib", "in_fresh_process", "saved_mib"]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def extra_peak_mib(step: Callable[[], object]) -> tuple[float, str]:
    """(extra peak RSS in MiB of ``step()`` in this process, how it was measured)."""
    import resource

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _status_kib("VmRSS")
        step()
        return (_status_kib("VmHWM") - before) / 1024, "VmHWM after clear_refs"
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, "ru_maxrss"


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a newly spawned process (its allocations cannot hide another measurement's)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def saved_mib(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """MiB of the distinct storages autograd saves for the backward of ``fn(*args, **kwargs)`` (an
    allocator-independent view of a step's memory)."""
    import torch

    storages: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[(storage.data_ptr(), str(t.device))] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args, **kwargs)
    return sum(storages.values()) / 2**20
