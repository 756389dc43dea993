"""Benchmarks: speed and memory goals live here and print numbers; tests never time anything.

Run ``python -m mswelu.bench NAME [--json]`` with NAME one of :data:`BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from mswelu.base.errors import plain_text

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


def bench_parser(name: str, doc: str, **sizes: int) -> argparse.ArgumentParser:
    """The parser of ``python -m mswelu.bench NAME``: its description (the first line of ``doc``), ``--json``
    and an integer option per size, with its default (``seq_len=512``: ``--seq-len``, default 512)."""
    p = argparse.ArgumentParser(
        prog=f"python -m mswelu.bench {name}", description=plain_text(doc.split("\n")[0])
    )
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    for key, default in sizes.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=default)
    return p


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
