"""Every variant's training tokens/s, measured side by side in one process, interleaved, at a study's shape:
the throughput that the equal-time view of a study uses (:mod:`mswelu.analysis.curves`).

Timing each variant in its own run measures it under whatever else the machine was doing then. Here every
variant's model and optimizer are built as the trainer builds them (:func:`mswelu.runs.preflight.plan_run`
on the study's data), at the study's shape: notebook 05's parameters, read from a study's parameter file
(``--study notebooks/studies/activations-cpu.yaml``, the file papermill's ``-f`` reads) over the notebook's
own defaults, with any setting given on the command line on top. Then rounds of a few optimizer steps per
variant, in an order that rotates every round, so that a slow spell of the machine falls on every variant
alike, until every variant has been timed for at least ``--seconds`` (30 by default) and ``--rounds``
rounds. Each variant's figure is the median over rounds, with its spread (min-max and the quartiles), and
its ratio to its mixer's SiLU reference (``mamba`` for Mamba-1 variants, ``mamba2`` for Mamba-2's) when that
was measured beside it. Random tokens: speed does not depend on them.

``python -m mswelu.bench throughput --study notebooks/studies/activations-cpu.yaml --variants
mamba,mamba-swelu,mamba2,mamba2-swelu`` prints the table (``--json``: its rows); ``--record`` also writes it
where the study's equal-time rows read it (``reports/studies/<study>/throughput.json``, keyed by every
variant's speed settings and training-path code: notebook 05 reuses it while they match). Speed is printed
here, never asserted in tests.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mswelu.bench import bench_parser, finish

__all__ = [
    "MIN_SECONDS",
    "main",
    "measure_throughput",
    "rotation",
    "silu_reference",
    "spread",
    "study_parameters",
]

#: the command's default: every variant timed for at least this many seconds
MIN_SECONDS = 30.0
NOTEBOOK = "05_baselines.ipynb"


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


def study_parameters(study: str | Path | None = None, **given: Any) -> dict[str, Any]:
    """Notebook 05's parameters as a run of it with ``papermill -f study`` has them: the notebook's own
    defaults, the study's parameter file over them, then every ``given`` value that is not None."""
    import papermill
    import yaml

    notebook = Path(__file__).resolve().parents[2] / "notebooks" / NOTEBOOK  # the checkout's
    if not notebook.is_file():
        raise ValueError(f"{notebook} not found: the study parameters are read from a checkout")
    params = {n: ast.literal_eval(p["default"]) for n, p in papermill.inspect_notebook(str(notebook)).items()}
    if study is not None:
        path = Path(study)
        if not path.is_file():
            raise ValueError(f"study parameter file {path} not found")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} is not a mapping of notebook 05's parameters")
        unknown = sorted(set(loaded) - set(params))
        if unknown:
            raise ValueError(f"{path} sets {unknown}, which are not parameters of {NOTEBOOK}")
        params.update(loaded)
    params.update({k: v for k, v in given.items() if v is not None})
    return params


def study_base(params: Mapping[str, Any]) -> dict[str, Any]:
    """Notebook 05's base config from its parameters ``params`` (the data prepared as the notebook does)."""
    from mswelu.workbook import comparison_config, data_for

    keys = ("max_steps", "batch_size", "seq_len", "lr", "optimizer", "model", "ckpt_every", "device")
    return comparison_config(
        preset=params["preset"],
        data=data_for(params["data"], params["preset"], params["tokenizer"]),
        overwrite=params["overwrite"],
        evaluations=params["evaluations"],
        **{k: params[k] for k in keys},
    )


def _print(table: pd.DataFrame) -> None:
    first = table.iloc[0]
    print(
        f"training tokens/s side by side, interleaved: B={first['batch_size']} L={first['seq_len']} "
        f"{first['dtype']} on {first['device']}, {len(first['rounds'])} rounds (median [min-max], quartiles)"
    )
    for r in table.itertuples():
        measured = isinstance(r.vs_silu, float) and math.isfinite(r.vs_silu)  # NaN or None: no reference ran
        ratio = f"{r.vs_silu:6.3f}x {r.silu_reference}" if r.silu_reference and measured else ""
        print(
            f"  {r.variant:20s} {r.tokens_per_s:9,.0f}  [{r.tokens_per_s_min:,.0f}-{r.tokens_per_s_max:,.0f}]"
            f"  IQR {r.tokens_per_s_q1:,.0f}-{r.tokens_per_s_q3:,.0f}  {r.seconds:5.1f} s  {ratio}"
        )


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("throughput", __doc__, full=True)
    p.add_argument("--study", default=None, help="a study's parameter file (notebooks/studies/NAME.yaml)")
    p.add_argument("--variants", default=None, help="comma-separated (default: the study's)")
    p.add_argument("--preset", default=None)
    p.add_argument("--tokenizer", default=None, help="the embedded corpus' tokenizer: gpt2 | bpe:N")
    p.add_argument("--data", default=None, help="a prepared dataset folder")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--optimizer", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model setting")
    p.add_argument("--seconds", type=float, default=MIN_SECONDS, help="timed seconds per variant, at least")
    p.add_argument("--rounds", type=int, default=5, help="rounds, at least")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per variant and round")
    p.add_argument("--record", action="store_true", help="write the study's throughput.json")
    args = p.parse_args(argv)

    def compute() -> list[dict[str, Any]]:
        from mswelu.train import parse_model_set
        from mswelu.workbook import side_by_side_throughput, study_ledger

        variants = (
            None if args.variants is None else [v.strip() for v in args.variants.split(",") if v.strip()]
        )
        params = study_parameters(
            args.study,
            variants=variants,
            preset=args.preset,
            tokenizer=args.tokenizer,
            data=args.data,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            optimizer=args.optimizer,
        )
        params["model"] = parse_model_set(args.set, params.get("model"))
        if args.record and not params.get("study"):
            raise ValueError("--record writes a study's throughput.json: give a study's file (study: true)")
        ledger = study_ledger(params["run_name"]) if args.record else None
        measure = {"rounds": args.rounds, "steps": args.steps, "seconds": args.seconds}
        table = side_by_side_throughput(
            study_base(params), params["variants"], ledger=ledger, reuse=False, **measure
        )
        return json.loads(table.to_json(orient="records"))

    return finish(compute, args.json, lambda rows: _print(pd.DataFrame(rows)))


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
