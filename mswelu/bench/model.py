"""Whole-model training step on CPU: ours against transformers' best CPU path and against the machine.

(``python -m mswelu.bench mamba2`` runs the same at the ``mamba2-130m`` shape beside its mixer benchmark)

Both sides are the preset's architecture (RMSNorm pre-norm blocks, SiLU, tied head, the preset's vocabulary;
``--layers`` / ``--d-model`` shrink it for quick checks) with the same weights: transformers' model is built
from ours (:mod:`mswelu.models.convert`: ``MambaForCausalLM``, ``Mamba2ForCausalLM``) and the fp32 losses are
checked equal before timing. One step = forward + cross-entropy loss (labels = inputs) + backward, training
mode, ``torch.set_num_threads(threads)``, in each ``--modes`` (``fp32``; ``bf16``: bf16 autocast, as training
on a CPU with native bf16), no GPU kernels installed:

- ``mswelu``: our model (its CPU kernels where built);
- Mamba-1: ``transformers_mambapy`` (``use_mambapy=True``, mambapy's parallel scan: transformers' fastest
  CPU path) and, with ``--slow``, ``transformers_slow`` (the default loop over time steps: minutes a step);
- Mamba-2: ``transformers_torch`` (``Mamba2ForCausalLM``'s chunked torch path).

Each side runs one warm-up step, then the best of ``--repeats`` timed steps, the sides taking turns.
Against the machine: the model's training FLOPs per token (:mod:`mswelu.models.flops`: matmuls, the scan,
the activations) times our tokens/s, as a share of the matmul peak of the mode's dtype measured in the same
run (:func:`mswelu.bench.peak.matmul_peak`). ``--profile N`` prints the N ops with the most self CPU time
of one of our steps per mode. Subnormal floats are flushed (``torch.set_flush_denormal(True)``, as the trainer
does on a CPU; the scan's backward makes them) unless ``--keep-denormals``.
"""

from __future__ import annotations

from typing import Any

import torch

from mswelu.base.errors import choice, positive_int
from mswelu.bench import bench_parser, best_times, finish

GOAL = 1.5  # x the fastest transformers path
PRESETS = ("mamba-130m", "mamba2-130m")
MODES = ("fp32", "bf16")


def _step(model: torch.nn.Module, ids: torch.Tensor, mode: str) -> float:
    """One forward + backward; returns the loss."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return float(loss.detach())


def _time(models: dict[str, torch.nn.Module], ids: torch.Tensor, mode: str, repeats: int) -> dict[str, dict]:
    """Best-of-``repeats`` step time per model, the models taking turns (:func:`best_times`)."""
    timed = best_times({name: (lambda m=m: _step(m, ids, mode)) for name, m in models.items()}, repeats)
    return {
        name: {"seconds": t["seconds"], "tokens_per_s": ids.numel() / t["seconds"], "repeats": repeats}
        for name, t in timed.items()
    }


def build(preset: str, layers: int, d_model: int, vocab_size: int | None, seed: int = 0) -> dict[str, Any]:
    """``{"mswelu": ours, <transformers path>: theirs, ...}``: the same weights, training mode (the slow loop
    under ``transformers_slow`` for Mamba-1)."""
    from mswelu.models.configuration import MsweluConfig
    from mswelu.models.convert import to_hf_mamba, to_hf_mamba2
    from mswelu.models.modeling import MsweluForCausalLM

    torch.manual_seed(seed)
    sizes = {"d_model": d_model, "layer_pattern": "M" * layers}
    if vocab_size is not None:
        sizes.update(vocab_size=vocab_size, pad_vocab_size_multiple=1)
    ours = MsweluForCausalLM(MsweluConfig.from_preset(preset, **sizes)).train()
    if preset == "mamba2-130m":
        return {"mswelu": ours, "transformers_torch": to_hf_mamba2(ours).train()}
    slow = to_hf_mamba(ours).train()
    fast = type(slow)(slow.config.__class__(**{**slow.config.to_dict(), "use_mambapy": True}))
    fast.load_state_dict(slow.state_dict())
    return {"mswelu": ours, "transformers_mambapy": fast.train(), "transformers_slow": slow}


def run(
    preset: str = "mamba-130m",
    layers: int = 24,
    d_model: int = 768,
    seq_len: int = 256,
    batch: int = 4,
    vocab_size: int | None = None,
    modes: tuple[str, ...] = MODES,
    repeats: int = 3,
    threads: int = 2,
    slow: bool = False,
    profile: int = 0,
    flush_denormal: bool = True,
    seed: int = 0,
) -> dict:
    """The benchmark of the module docstring; the thread count and the denormal mode are restored after."""
    old_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        flushed = torch.set_flush_denormal(flush_denormal) and flush_denormal
        out = _run(preset, layers, d_model, seq_len, batch, vocab_size, modes, repeats, slow, profile, seed)
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(old_threads)
    out["config"].update(threads=threads, flush_denormal=flushed)
    return out


def _run(
    preset: str,
    layers: int,
    d_model: int,
    seq_len: int,
    batch: int,
    vocab_size: int | None,
    modes: tuple[str, ...],
    repeats: int,
    slow: bool,
    profile: int,
    seed: int,
) -> dict:
    from mswelu.bench.peak import matmul_peak, top_ops
    from mswelu.models.flops import model_flops_per_token

    models = build(preset, layers, d_model, vocab_size, seed)
    if not slow:
        models.pop("transformers_slow", None)
    ours = models["mswelu"]
    vocab = ours.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        losses = {name: float(m(input_ids=ids, labels=ids).loss) for name, m in models.items()}
    for loss in losses.values():
        if abs(loss - losses["mswelu"]) > 1e-4 * abs(losses["mswelu"]):
            raise RuntimeError(f"the models disagree before timing: losses {losses}")
    flops = model_flops_per_token(ours, seq_len)["training"]
    results: dict[str, Any] = {}
    for mode in modes:
        peak = matmul_peak(torch.bfloat16 if mode == "bf16" else torch.float32)
        timed = _time(models, ids, mode, repeats)
        ours_tps = timed["mswelu"]["tokens_per_s"]
        best_hf = max((n for n in timed if n != "mswelu"), key=lambda n: timed[n]["tokens_per_s"])
        results[mode] = {
            **timed,
            "matmul_peak_gflops": peak,
            "model_gflops": flops * ours_tps / 1e9,
            "share_of_peak": flops * ours_tps / 1e9 / peak,
            "best_transformers": best_hf,
            "vs_best_transformers": ours_tps / timed[best_hf]["tokens_per_s"],
        }
        if profile:
            results[mode]["profile"] = top_ops(lambda mode=mode: _step(ours, ids, mode), profile)
    return {
        "benchmark": "model",
        "config": {
            "preset": preset,
            "layers": layers,
            "d_model": d_model,
            "seq_len": seq_len,
            "batch": batch,
            "vocab_size": vocab,
            "params": sum(p.numel() for p in ours.parameters()),
            "training_flops_per_token": flops,
            "loss_at_init": losses["mswelu"],
            "torch": torch.__version__,
        },
        "results": results,
        "goal": {"min_ratio_vs_best_transformers": GOAL},
    }


def text(out: dict[str, Any]) -> list[str]:
    """The lines printed without ``--json``."""
    c = out["config"]
    lines = [
        f"whole model fwd+bwd, {c['preset']} shape: {c['layers']} x d_model {c['d_model']}, "
        f"vocab {c['vocab_size']}, B={c['batch']} L={c['seq_len']}, {c['threads']} threads, "
        f"{c['params']:,} params, "
        f"{c['training_flops_per_token'] / 1e6:.1f} MFLOP/token (training), torch {c['torch']}"
    ]
    for mode, r in out["results"].items():
        for name, t in r.items():
            if isinstance(t, dict) and "tokens_per_s" in t:
                lines.append(
                    f"  {mode:5s} {name:22s} {t['tokens_per_s']:9.1f} tokens/s  ({t['seconds']:.3f} s/step)"
                )
        lines.append(
            f"  {mode:5s} {r['model_gflops']:.1f} GFLOP/s = {r['share_of_peak']:.0%} of the measured {mode} "
            f"matmul peak ({r['matmul_peak_gflops']:.0f} GFLOP/s); {r['vs_best_transformers']:.2f}x "
            f"{r['best_transformers']} (goal >= {GOAL}x)"
        )
        for op in r.get("profile", []):
            lines.append(f"        {op['share']:6.1%} {op['ms']:9.1f} ms  {op['op']}")
    return lines


def add_arguments(p: Any) -> None:
    """The options ``bench model`` and ``bench mamba2`` share for the whole model."""
    p.add_argument("--modes", nargs="+", type=choice("mode", MODES), default=list(MODES))
    p.add_argument(
        "--profile", type=int, default=0, metavar="N", help="print the N ops with most self CPU time"
    )
    p.add_argument("--keep-denormals", action="store_true", help="do not flush subnormal floats to zero")


def main(argv: list[str] | None = None) -> int:
    sizes = {"layers": 24, "d_model": 768, "seq_len": 256, "batch": 4, "repeats": 3, "threads": 2}
    p = bench_parser("model", __doc__, **sizes)
    p.add_argument("--preset", type=choice("preset", PRESETS), default=PRESETS[0])
    p.add_argument(
        "--vocab-size", type=positive_int("--vocab-size"), default=None, help="default: the preset's"
    )
    p.add_argument("--slow", action="store_true", help="also time transformers' slow loop (Mamba-1)")
    add_arguments(p)
    args = p.parse_args(argv)
    return finish(
        lambda: run(
            args.preset,
            args.layers,
            args.d_model,
            args.seq_len,
            args.batch,
            args.vocab_size,
            tuple(args.modes),
            args.repeats,
            args.threads,
            args.slow,
            args.profile,
            not args.keep_denormals,
        ),
        args.json,
        lambda out: print("\n".join(text(out))),
    )


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
