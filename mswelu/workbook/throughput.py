"""Every variant's training tokens/s, measured side by side in one process, interleaved: what a study's
equal-time and equal-compute rows read (:func:`mswelu.workbook.side_by_side_throughput` records it;
``python -m mswelu.bench throughput`` prints it at a study's shape).

Each variant's model and optimizer are built as the trainer builds them; then rounds of a few optimizer steps
per variant, in an order that rotates every round, so that a slow spell of the machine falls on every variant
alike, until every variant has had at least ``rounds`` rounds and ``seconds`` of timing. Each variant's figure
is the median over rounds with its spread, and its ratio to its mixer's SiLU reference when that was measured
beside it. Random tokens: speed does not depend on them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["measure_throughput", "rotation", "silu_reference", "spread"]


def spread(values: Sequence[float]) -> dict[str, float]:
    """The median of ``values`` with its spread: min, max and the quartiles (linear interpolation)."""
    if not len(values):
        raise ValueError("no values")
    q1, median, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return {"median": float(median), "min": float(min(values)), "max": float(max(values)), "q1": q1, "q3": q3}


def rotation(names: Sequence[str], round_: int) -> list[str]:
    """The order of round ``round_``: ``names`` rotated left by ``round_`` places."""
    k = round_ % len(names)
    return list(names[k:]) + list(names[:k])


def silu_reference(cfg: Mapping[str, Any]) -> str | None:
    """The variant that is ``cfg``'s mixer with SiLU (:mod:`mswelu.training.variants`: ``mamba`` for Mamba-1,
    ``mamba2`` for Mamba-2), or None for a Transformer baseline."""
    from mswelu.models.build import parse_model_name
    from mswelu.models.configuration import PRESETS

    base, ref = parse_model_name(str(cfg.get("preset", "small")))
    if ref is not None:
        return None
    mixer = (cfg.get("model") or {}).get("mixer") or PRESETS[base].get("mixer", "mamba1")
    return "mamba" if mixer == "mamba1" else str(mixer)


def _build(cfg: Any, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """Model and optimizer as the trainer builds them for ``cfg`` (a TrainConfig) on its data."""
    from mswelu.runs.preflight import plan_run
    from mswelu.trainer import build_run_model
    from mswelu.training.optim import build_optimizer

    plan = plan_run(cfg, 1)
    torch.manual_seed(cfg.seed)
    model = build_run_model(cfg, plan).to(device).train()
    return model, build_optimizer(model, cfg.optimizer, **cfg.optimizer_kwargs())


def measure_throughput(
    configs: Mapping[str, Mapping[str, Any]],
    rounds: int = 5,
    steps: int = 3,
    warmup: int = 2,
    seconds: float = 0.0,
    device: str | None = None,
) -> pd.DataFrame:
    """Training tokens/s of every variant, interleaved (see the module docstring).

    Args:
        configs: variant -> its TrainConfig dict with its ``data`` (notebook 05:
            ``workbook.variant_config(base, v)``; ``out`` is not used).
        rounds, steps: at least ``rounds`` rounds of ``steps`` timed optimizer steps per variant, after
            ``warmup`` untimed ones; more rounds until every variant has been timed for ``seconds``.
        device: default: CUDA when available, else the CPU.

    Returns:
        One row per variant: ``tokens_per_s`` (median over rounds), ``tokens_per_s_min`` / ``_max`` /
        ``_q1`` / ``_q3``, ``rounds`` (each round's tokens/s), ``seconds`` (timed), ``flops_per_token``
        (training, :mod:`mswelu.models.flops`), ``flop_per_s``, ``silu_reference`` and ``vs_silu`` (tokens/s
        relative to it; NaN where it was not measured), ``batch_size``, ``seq_len``, ``dtype``, ``device``.
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
    parts = {}
    for variant, fields in configs.items():
        cfg = TrainConfig.from_dict({k: v for k, v in fields.items() if k != "out"})
        model, opt = _build(cfg, dev)
        flops = model_flops_per_token(model, cfg.seq_len)["training"]
        parts[variant] = (cfg, model, opt, cfg.uses_bf16(dev.type), flops)

    def step(variant: str) -> None:
        cfg, model, opt, bf16, _ = parts[variant]
        vocab = model.get_input_embeddings().num_embeddings
        x, y = split_window(torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len + 1), device=dev))
        with torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
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
    spent = dict.fromkeys(names, 0.0)
    r = 0
    while r < rounds or min(spent.values()) < seconds:
        for variant in rotation(names, r):
            cfg = parts[variant][0]
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            for _ in range(steps):
                step(variant)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            took = time.perf_counter() - t0
            spent[variant] += took
            timed[variant].append(steps * cfg.batch_size * cfg.seq_len / took)
        r += 1
    medians = {v: spread(timed[v])["median"] for v in names}
    rows = []
    for variant in names:
        cfg, _, _, bf16, flops = parts[variant]
        s = spread(timed[variant])
        ref = silu_reference(configs[variant])
        rows.append(
            {
                "variant": variant,
                "tokens_per_s": s["median"],
                **{f"tokens_per_s_{k}": s[k] for k in ("min", "max", "q1", "q3")},
                "rounds": [float(x) for x in timed[variant]],
                "seconds": spent[variant],
                "flops_per_token": flops,
                "flop_per_s": flops * s["median"],
                "silu_reference": ref,
                "vs_silu": s["median"] / medians[ref] if ref in medians else float("nan"),
                "batch_size": cfg.batch_size,
                "seq_len": cfg.seq_len,
                "dtype": "bf16" if bf16 else "fp32",
                "device": str(dev),
            }
        )
    return pd.DataFrame(rows)
