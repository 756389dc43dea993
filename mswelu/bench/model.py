"""Whole-model training-step benchmark on CPU: our model vs transformers' MambaForCausalLM.

``python -m mswelu.bench model [--json] [--layers 4] [--d-model 256] [--seq-len 256] [--batch 4]
[--vocab-size 50280] [--repeats 3] [--slow-repeats 1] [--threads 2]``

Both sides are the ``mamba-130m`` architecture (RMSNorm pre-norm Mamba-1 blocks, SiLU, tied head,
vocabulary 50280) scaled to 4 layers x d_model 256, with the same weights: transformers' model is
built from our weights by :func:`mswelu.models.convert.to_hf_mamba`, and the losses are checked equal
before timing. One step = forward + cross-entropy loss (labels = inputs, shifted inside) +
backward, fp32, ``torch.set_num_threads(threads)``, training mode, no kernels installed:

- ``mswelu``: our model (the scan owner's chunked selective scan);
- ``transformers_slow``: ``MambaForCausalLM`` default CPU path (a Python loop over time steps);
- ``transformers_mambapy``: the same with ``use_mambapy=True`` (mambapy's parallel scan).

Each side runs one warm-up step (excluded), then the best of ``--repeats`` timed steps, ours and
mambapy's taking turns (``--slow-repeats`` for the slow loop, default 1: a step takes minutes).
Goal: ``mswelu`` at least 1.5x the tokens/s of the faster transformers variant.

Subnormal floats: the scan's backward produces subnormal numbers, which x86 CPUs can process
much more slowly. On the shared, loaded 2-core machine our step went from 11 s to 4.5 s with
flushing (mambapy's from ~8 s to ~6-8 s); on the same machine when quiet it made no difference
(1.07 s vs 1.25 s). The benchmark runs every side with ``torch.set_flush_denormal(True)`` (harmless
for training) unless ``--keep-denormals`` is given, and restores the default afterwards.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch
from transformers import MambaForCausalLM

from mswelu.bench import bench_parser
from mswelu.models.configuration import MsweluConfig
from mswelu.models.convert import to_hf_mamba
from mswelu.models.modeling import MsweluForCausalLM

GOAL = 1.5


def _step(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """One forward + backward; returns the loss."""
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return float(loss.detach())


def _time(models: dict[str, torch.nn.Module], ids: torch.Tensor, repeats: int) -> dict[str, dict[str, float]]:
    """Best-of-``repeats`` step time per model; the models take turns, so a change in machine load
    between repeats hits all of them alike."""
    for model in models.values():
        _step(model, ids)  # warm-up: lazy init, allocator, thread pool
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            t0 = time.perf_counter()
            _step(model, ids)
            times[name].append(time.perf_counter() - t0)
    return {
        name: {"seconds": min(ts), "tokens_per_s": ids.numel() / min(ts), "repeats": repeats}
        for name, ts in times.items()
    }


def run(**kwargs: Any) -> dict:
    """:func:`_run` with the process-wide thread count and denormal mode restored afterwards
    (flush-denormal back to PyTorch's default, off)."""
    threads = torch.get_num_threads()
    try:
        return _run(**kwargs)
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def _run(
    layers: int = 4,
    d_model: int = 256,
    seq_len: int = 256,
    batch: int = 4,
    vocab_size: int = 50280,
    repeats: int = 3,
    slow_repeats: int = 1,
    threads: int = 2,
    seed: int = 0,
    slow: bool = True,
    flush_denormal: bool = True,
) -> dict:
    torch.set_num_threads(threads)
    flushed = torch.set_flush_denormal(flush_denormal) and flush_denormal
    torch.manual_seed(seed)
    config = MsweluConfig.from_preset(
        "mamba-130m",
        d_model=d_model,
        layer_pattern="M" * layers,
        vocab_size=vocab_size,
        pad_vocab_size_multiple=1,
    )
    ours = MsweluForCausalLM(config).train()
    slow_model = to_hf_mamba(ours).train()
    fast = MambaForCausalLM(
        slow_model.config.__class__(**{**slow_model.config.to_dict(), "use_mambapy": True})
    )
    fast.load_state_dict(slow_model.state_dict())
    fast.train()
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(seed))

    with torch.no_grad():
        losses = {
            name: float(m(input_ids=ids, labels=ids).loss) for name, m in [("mswelu", ours), ("fast", fast)]
        }
    if abs(losses["mswelu"] - losses["fast"]) > 1e-4 * abs(losses["mswelu"]):
        raise RuntimeError(f"the models disagree before timing: losses {losses}")

    results = _time({"mswelu": ours, "transformers_mambapy": fast}, ids, repeats)
    if slow:
        results.update(_time({"transformers_slow": slow_model}, ids, slow_repeats))
    results["config"] = {
        "layers": layers,
        "d_model": d_model,
        "seq_len": seq_len,
        "batch": batch,
        "vocab_size": config.vocab_size,
        "threads": threads,
        "flush_denormal": flushed,
        "params": sum(p.numel() for p in ours.parameters()),
        "loss_at_init": losses["mswelu"],
    }
    ours_tps = results["mswelu"]["tokens_per_s"]
    hf_names = [n for n in ("transformers_slow", "transformers_mambapy") if n in results]
    ratios = {f"mswelu_vs_{n}": ours_tps / results[n]["tokens_per_s"] for n in hf_names}
    ratios["mswelu_vs_best_transformers"] = ours_tps / max(results[n]["tokens_per_s"] for n in hf_names)
    results["goal"] = {
        "min_ratio_vs_best_transformers": GOAL,
        "met": ratios["mswelu_vs_best_transformers"] >= GOAL,
    }
    return {"benchmark": "model", "results": results, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    sizes = {"layers": 4, "d_model": 256, "seq_len": 256, "batch": 4, "vocab_size": 50280, "repeats": 3}
    parser = bench_parser("model", __doc__, **sizes, slow_repeats=1, threads=2)
    parser.add_argument("--no-slow", action="store_true", help="skip the slow loop (diagnostics only)")
    parser.add_argument("--keep-denormals", action="store_true", help="do not flush subnormal floats to zero")
    args = parser.parse_args(argv)
    for name in ("layers", "d_model", "seq_len", "batch", "vocab_size", "repeats", "slow_repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    out = run(
        layers=args.layers,
        d_model=args.d_model,
        seq_len=args.seq_len,
        batch=args.batch,
        vocab_size=args.vocab_size,
        repeats=args.repeats,
        slow_repeats=args.slow_repeats,
        threads=args.threads,
        slow=not args.no_slow,
        flush_denormal=not args.keep_denormals,
    )
    if args.json:
        print(json.dumps(out))
        return 0
    res, cfg = out["results"], out["results"]["config"]
    print(
        f"model benchmark: {cfg['layers']} x d_model {cfg['d_model']}, vocab {cfg['vocab_size']}, "
        f"B={cfg['batch']} L={cfg['seq_len']}, {cfg['threads']} threads, fwd+bwd, {cfg['params']:,} params, "
        f"flush denormals {cfg['flush_denormal']}"
    )
    for name in ("mswelu", "transformers_mambapy", "transformers_slow"):
        if name not in res:
            continue
        r = res[name]
        timing = f"{r['seconds']:.3f} s/step, best of {r['repeats']}"
        print(f"  {name:22s} {r['tokens_per_s']:10.0f} tokens/s  ({timing})")
    for name, value in out["ratios"].items():
        print(f"  {name:32s} {value:6.2f}x")
    print(f"  goal >= {GOAL}x the faster transformers path: {'met' if res['goal']['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
