"""What the CPU benchmarks hold a step to: the machine's measured matmul peak, and where a step's time goes.

The peak is a large square matmul in the dtype, timed in the same process at the same thread count as the
step it is compared with (on a shared machine, a peak measured at another time measures another load).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mswelu.bench import best_times

__all__ = ["matmul_peak", "top_ops"]


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` (best of ``repeats``, after a warm-up)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / best_times({"matmul": lambda: a @ b}, repeats)["matmul"]["seconds"] / 1e9


def top_ops(step: Callable[[], object], k: int = 12) -> list[dict[str, float | str]]:
    """The ``k`` ops of one ``step()`` with the most self CPU time (``torch.profiler``): name, milliseconds
    and share of the step's total self time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    rows = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    whole = sum(t for _, t in rows) or 1.0
    rows.sort(key=lambda r: -r[1])
    return [{"op": name, "ms": t / 1e3, "share": t / whole} for name, t in rows[:k]]
