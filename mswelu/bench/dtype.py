"""Does bf16 autocast train the same model as fp32 on this CPU? Real training runs, paired by seed.

For every seed the trainer runs twice on the embedded corpus, identical but for ``dtype`` (``fp32``,
``bf16``): same data order, same initial weights. Each run is evaluated on the whole validation split at
its end (and at the fractions in ``--eval-at``), in its own dtype. Reported:

- per seed: the validation losses of both runs at every evaluation, and tokens/s;
- the paired difference bf16 - fp32 of the final validation loss: mean and its 95% t interval;
- the noise floor: the seed-to-seed standard deviation of the fp32 final losses;
- ``equal``: true when the interval of the difference contains 0 (no systematic effect of bf16 is
  detectable) and its mean is within +/- the noise floor (bf16 moves the result by less than changing
  the seed does). This is not an equivalence proof: with 3 seeds the interval is wide (t = 4.30; the
  default 5 seeds, :data:`mswelu.base.stats.DEFAULT_SEEDS`: t = 2.78), and a bias smaller than its half-width
  is not ruled out; more ``--seeds`` narrow it. (This measurement is
  why ``dtype="auto"`` uses bf16 on CPUs with native bf16: :func:`mswelu.training.config.cpu_has_native_bf16`;
  ``benchmarks/results/`` holds the committed runs.)

Speed is reported, never asserted; the numbers depend on the machine (``matmul peak`` lines of
``python -m mswelu.bench train`` show what it can do).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mswelu.base.stats import DEFAULT_SEEDS
from mswelu.bench import bench_parser, finish

DTYPES = ("fp32", "bf16")


def run(
    preset: str = "small",
    tokenizer: str = "bpe:4096",
    steps: int = 60,
    batch_size: int = 8,
    seq_len: int = 256,
    lr: float = 2e-3,
    seeds: tuple[int, ...] = tuple(range(DEFAULT_SEEDS)),
    model: dict[str, Any] | None = None,
    eval_at: tuple[float, ...] = (0.5,),
    optimizer: str = "adamw",
) -> dict[str, Any]:
    """Train every (seed, dtype) pair and compare; returns the figures described in the module docstring."""
    import torch

    from mswelu.base.stats import t_interval
    from mswelu.data import default_dataset
    from mswelu.runs.folder import load_run
    from mswelu.train import train

    if len(seeds) < 2:
        raise ValueError("the comparison needs at least 2 seeds (the noise floor is their spread)")
    data = default_dataset(tokenizer=tokenizer)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mswelu-bench-dtype-") as tmp:
        for seed in seeds:
            for dtype in DTYPES:
                out = Path(tmp) / f"{dtype}-{seed}"
                t0 = time.perf_counter()
                summary = train(
                    {
                        "preset": preset,
                        "data": str(data),
                        "out": str(out),
                        "max_steps": steps,
                        "batch_size": batch_size,
                        "seq_len": seq_len,
                        "lr": lr,
                        "optimizer": optimizer,
                        "warmup": max(1, steps // 10),
                        "seed": seed,
                        "dtype": dtype,
                        "eval_every": 0,
                        "eval_fractions": eval_at,
                        "log_every": max(1, steps // 20),
                        "ckpt_every": 0,
                        "model": dict(model or {}),
                        "device": "cpu",
                        "progress": False,
                        "tensorboard": False,
                    }
                )
                ev = load_run(out).eval
                rows.append(
                    {
                        "seed": seed,
                        "dtype": dtype,
                        "autocast": summary.get("autocast"),
                        "val_loss": float(summary["val_loss"]),
                        "val_bpb": float(summary["val_bpb"]),
                        "curve": [[int(s), float(v)] for s, v in zip(ev.step, ev.val_loss, strict=True)],
                        "tokens_per_s": float(summary["tokens_per_s"]),
                        "wall_s": round(time.perf_counter() - t0, 1),
                    }
                )
    final = {d: {r["seed"]: r["val_loss"] for r in rows if r["dtype"] == d} for d in DTYPES}
    diff = t_interval([final["bf16"][s] - final["fp32"][s] for s in seeds])
    floor = float(np.std([final["fp32"][s] for s in seeds], ddof=1))
    speed = {d: float(np.mean([r["tokens_per_s"] for r in rows if r["dtype"] == d])) for d in DTYPES}
    return {
        "settings": {
            "preset": preset,
            "tokenizer": tokenizer,
            "steps": steps,
            "batch_size": batch_size,
            "seq_len": seq_len,
            "tokens_per_run": steps * batch_size * seq_len,
            "lr": lr,
            "optimizer": optimizer,
            "seeds": list(seeds),
            "model": dict(model or {}),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "runs": rows,
        "bf16_minus_fp32": {"mean": diff.mean, "lo": diff.lo, "hi": diff.hi, "n": diff.n},
        "noise_floor_sd": floor,
        "equal": bool(math.isfinite(diff.lo) and diff.lo <= 0.0 <= diff.hi and abs(diff.mean) <= floor),
        "tokens_per_s": speed,
        "bf16_speedup": speed["bf16"] / speed["fp32"],
    }


def _print(r: dict[str, Any]) -> None:
    s = r["settings"]
    print(
        f"{s['preset']} on the embedded corpus ({s['tokenizer']}), {s['steps']} steps x {s['batch_size']} x "
        f"{s['seq_len']} = {s['tokens_per_run']:,} tokens per run, {s['optimizer']} lr {s['lr']}, "
        f"{s['threads']} threads"
    )
    print(
        f"{'seed':>4} {'dtype':>5} {'final val loss':>15} {'val bpb':>8} {'tokens/s':>9}  curve (step: loss)"
    )
    for row in r["runs"]:
        curve = "  ".join(f"{st}: {v:.3f}" for st, v in row["curve"])
        print(
            f"{row['seed']:>4} {row['dtype']:>5} {row['val_loss']:>15.4f} {row['val_bpb']:>8.4f} "
            f"{row['tokens_per_s']:>9.0f}  {curve}"
        )
    d = r["bf16_minus_fp32"]
    print(
        f"bf16 - fp32 final val loss: {d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] "
        f"(95% t, {d['n']} seeds); "
        f"noise floor (fp32 seed sd) {r['noise_floor_sd']:.4f}: "
        + ("no systematic difference, within seed noise" if r["equal"] else "NOT equal within seed noise")
    )
    print(
        f"tokens/s: fp32 {r['tokens_per_s']['fp32']:.0f}, bf16 {r['tokens_per_s']['bf16']:.0f} "
        f"({r['bf16_speedup']:.2f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("dtype", __doc__, full=True, steps=60, batch_size=8, seq_len=256)
    p.add_argument("--preset", default="small")
    p.add_argument("--tokenizer", default="bpe:4096", help="the embedded corpus' tokenizer (gpt2 | bpe:N)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--optimizer", default="adamw", help="adamw | muon")
    p.add_argument("--seeds", default=",".join(str(s) for s in range(DEFAULT_SEEDS)))
    p.add_argument("--eval-at", default="0.5", help="comma-separated fractions of training (besides the end)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model config override")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    args = p.parse_args(argv)

    def compute() -> dict[str, Any]:
        from mswelu.train import parse_model_set

        r = run(
            args.preset,
            args.tokenizer,
            args.steps,
            args.batch_size,
            args.seq_len,
            args.lr,
            tuple(int(x) for x in args.seeds.split(",") if x.strip()),
            parse_model_set(args.set),
            tuple(float(x) for x in args.eval_at.split(",") if x.strip()),
            args.optimizer,
        )
        if args.out:
            Path(args.out).write_text(json.dumps(r, indent=1) + "\n", encoding="utf-8")
        return r

    return finish(compute, args.json, _print)


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
