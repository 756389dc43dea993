"""Every variant's training tokens/s, measured side by side in one process, interleaved, at one shape:
the throughput that the equal-time view of a study uses (:mod:`mswelu.analysis.curves`).

Timing each variant in its own run measures it under whatever else the machine was doing then; here every
variant's model and optimizer are built at the study's shape (its preset, activation, model settings,
optimizer, dtype, batch and sequence length), then rounds of a few optimizer steps each, in an order that
rotates every round, so that a slow spell of the machine falls on every variant alike. Each variant's figure
is the median over rounds (the spread over rounds is kept). Random tokens: speed does not depend on them.

``python -m mswelu.bench throughput --variants mamba,mamba-swelu --preset small --seq-len 256``
prints the table (``--json`` for the records). Speed is printed here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from mswelu.base.errors import plain_text

__all__ = ["main", "measure_throughput"]


def _build(cfg: Any, vocab_size: int, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """Model and optimizer as the trainer builds them (the data's end-of-text id is the last token)."""
    from mswelu.models.build import build_model, parse_model_name
    from mswelu.training.optim import build_optimizer

    _, ref = parse_model_name(cfg.preset)
    eos = vocab_size - 1
    overrides = {k: v for k, v in cfg.model.items() if k != "vocab_size"}
    overrides = {"eos_token_id": eos, **({} if ref is None else {"bos_token_id": eos}), **overrides}
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.preset, vocab_size, cfg.seq_len, cfg.activation, **overrides).to(device)
    return model.train(), build_optimizer(model, cfg.optimizer, **cfg.optimizer_kwargs())


def measure_throughput(
    configs: Mapping[str, Mapping[str, Any]],
    vocab_size: int,
    rounds: int = 5,
    steps: int = 3,
    warmup: int = 2,
    device: str | None = None,
) -> pd.DataFrame:
    """Training tokens/s of every variant, interleaved (see the module docstring).

    Args:
        configs: variant -> its ``TrainConfig`` fields (notebook 05: ``workbook.variant_config(base, v)``;
            ``data`` and ``out`` are not used).
        vocab_size: the data's vocabulary.
        rounds, steps: rounds of ``steps`` timed optimizer steps per variant, after ``warmup`` untimed ones.
        device: default: CUDA when available, else the CPU.

    Returns:
        One row per variant: ``tokens_per_s`` (median over rounds), ``tokens_per_s_min`` / ``_max``,
        ``rounds``, ``flops_per_token`` (training, :mod:`mswelu.models.flops`), ``flop_per_s``, ``vs_first``
        (tokens/s relative to the first variant), ``batch_size``, ``seq_len``, ``dtype``, ``device``.
    """
    from mswelu.models.build import lm_loss
    from mswelu.models.flops import model_flops_per_token
    from mswelu.ops.lm_loss import split_window
    from mswelu.training.config import TrainConfig

    if not configs or rounds < 1 or steps < 1:
        raise ValueError("need at least one variant, one round and one step")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cpu":
        torch.set_flush_denormal(True)  # as the trainer does
    known = set(TrainConfig.__dataclass_fields__)
    parts = {}
    for variant, fields in configs.items():
        cfg = TrainConfig(**{k: v for k, v in fields.items() if k in known})
        model, opt = _build(cfg, vocab_size, dev)
        bf16 = cfg.uses_bf16(dev.type)
        flops = model_flops_per_token(model, cfg.seq_len)["training"]
        parts[variant] = (cfg, model, opt, bf16, flops)

    def step(variant: str) -> None:
        cfg, model, opt, bf16, _ = parts[variant]
        window = torch.randint(0, vocab_size, (cfg.batch_size, cfg.seq_len + 1), device=dev)
        x, y = split_window(window)
        ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = lm_loss(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        )
        opt.step()
        opt.zero_grad(set_to_none=True)

    names = list(parts)
    for variant in names:
        for _ in range(warmup):
            step(variant)
    timed: dict[str, list[float]] = {v: [] for v in names}
    for r in range(rounds):
        for variant in names[r % len(names) :] + names[: r % len(names)]:
            cfg = parts[variant][0]
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            for _ in range(steps):
                step(variant)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            timed[variant].append(steps * cfg.batch_size * cfg.seq_len / (time.perf_counter() - t0))
    first = float(np.median(timed[names[0]]))
    rows = []
    for variant in names:
        cfg, _, _, bf16, flops = parts[variant]
        tps = float(np.median(timed[variant]))
        rows.append(
            {
                "variant": variant,
                "tokens_per_s": tps,
                "tokens_per_s_min": float(min(timed[variant])),
                "tokens_per_s_max": float(max(timed[variant])),
                "rounds": [float(x) for x in timed[variant]],
                "flops_per_token": flops,
                "flop_per_s": flops * tps,
                "vs_first": tps / first,
                "batch_size": cfg.batch_size,
                "seq_len": cfg.seq_len,
                "dtype": "bf16" if bf16 else "fp32",
                "device": str(dev),
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mswelu.bench throughput", description=plain_text(__doc__))
    p.add_argument("--variants", default="mamba,mamba-swelu,mamba-swelu-fixed")
    p.add_argument("--preset", default="small")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--optimizer", default="muon")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        from mswelu.training.variants import variant_overrides

        base = {"preset": args.preset, "batch_size": args.batch_size, "seq_len": args.seq_len}
        base["optimizer"] = args.optimizer
        configs = {}
        for v in (x.strip() for x in args.variants.split(",") if x.strip()):
            over = variant_overrides(v, args.preset)
            configs[v] = {**base, **over, "model": dict(over.get("model") or {})}
        table = measure_throughput(configs, args.vocab_size, args.rounds, args.steps)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(table.to_dict("records")))
    else:
        print(table.drop(columns=["rounds"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
