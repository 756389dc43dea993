"""Benchmarks: speed and memory goals live here and print numbers; tests never time anything.

Run ``python -m mswelu.bench NAME [--json]`` with NAME one of :data:`BENCHMARKS`.
"""

from __future__ import annotations

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
