"""Benchmarks: speed and memory goals live here and print numbers; tests never time anything.

Run ``python -m mswelu.bench NAME [--json]`` with NAME one of :data:`BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from mswelu.base.errors import plain_text, positive_int

BENCHMARKS = {
    "scan": "mswelu.bench.scan",
    "model": "mswelu.bench.model",
    "swelu": "mswelu.bench.swelu",
    "tokenizer": "mswelu.bench.tokenizer",
    "gpu": "mswelu.bench.gpu",
    "train": "mswelu.bench.train",
    "dtype": "mswelu.bench.dtype",
    "mamba2": "mswelu.bench.mamba2",
    "throughput": "mswelu.bench.throughput",
}


def bench_parser(name: str, doc: str, full: bool = False, **sizes: int) -> argparse.ArgumentParser:
    """The parser of ``python -m mswelu.bench NAME``: its description (the first line of ``doc``, or with
    ``full`` all of it as written), ``--json`` and a count option (>= 1) per size, with its default
    (``seq_len=512``: ``--seq-len``, default 512)."""
    p = argparse.ArgumentParser(
        prog=f"python -m mswelu.bench {name}",
        description=plain_text(doc if full else doc.split("\n")[0]),
        formatter_class=argparse.RawDescriptionHelpFormatter if full else argparse.HelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    for key, default in sizes.items():
        option = f"--{key.replace('_', '-')}"
        p.add_argument(option, type=positive_int(option), default=default)
    return p


def best_times(
    calls: Mapping[str, Callable[[], object]], repeats: int, warmup: bool = True
) -> dict[str, dict[str, float]]:
    """Best-of-``repeats`` wall-clock and process CPU ``seconds`` / ``cpu_seconds`` per call, after one
    untimed call each (``warmup``). The calls take turns, so that load from other processes on a shared
    machine hits all alike (with one thread the CPU time leaves out the time others held the cores)."""
    if warmup:
        for call in calls.values():
            call()
    best = {name: {"seconds": float("inf"), "cpu_seconds": float("inf")} for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            call()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[name] = {
                "seconds": min(best[name]["seconds"], wall),
                "cpu_seconds": min(best[name]["cpu_seconds"], cpu),
            }
    return best


def finish(compute: Callable[[], Any], as_json: bool, show: Callable[[Any], None]) -> int:
    """A benchmark command's ending: ``compute()``'s result printed as one JSON object (``--json``) or by
    ``show``, exit status 0; a ValueError (bad options) one line on stderr, exit status 2."""
    try:
        result = compute()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(result))
    else:
        show(result)
    return 0
