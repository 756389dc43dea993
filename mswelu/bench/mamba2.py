"""Mamba-2 benchmark on CPU: our Mamba2Mixer stack vs transformers' Mamba2ForCausalLM torch path.

What it measures, at the ``mamba2-130m`` mixer shape (d_model 768, d_state 128, headdim 64, expand 2,
n_groups 1, chunk 256, d_conv 4; SiLU in both activation slots; ``--d-model`` only for quick checks):

- ``stack``: forward + backward (gradients of mean(out^2) w.r.t. the input and every parameter) through
  ``--layers`` pre-norm residual blocks, ``x + mixer(RMSNorm(x))``. transformers' side is the block list
  of a ``Mamba2ForCausalLM`` of that many layers (``backbone.layers``: its ``Mamba2Block`` = RMSNorm, its
  ``Mamba2Mixer`` torch path, residual in fp32); ours is mswelu's RMSNorm and :class:`Mamba2Mixer` holding
  the same weights (checked: equal outputs before timing). The embedding, final norm and LM head are left
  out: they are the same matmuls on both sides and would only dilute the mixers' ratio (the whole model
  is measured below). Two modes: ``fp32``, and ``bf16`` autocast, which is what training uses on CPUs
  with native bf16 (``dtype="auto"``).
- ``ssd``: the SSD scan alone (x, dt, A, B, C, D, dt_bias, softplus; forward + backward) at the same
  shape: :func:`mswelu.ops.ssd.ssd_chunk_scan` at each ``--chunk-sizes`` against transformers'
  ``mamba2_chunk_scan`` torch path at its chunk size 256 (our chunk size is an implementation detail:
  the result does not depend on it).

Time: best of ``--repeats`` warm runs, both sides taking turns, so that load from other processes on a
shared machine hits both alike; ``--threads`` intra-op threads. The speedup is in wall-clock time;
``cpu_speedup`` is the same in process CPU time, the steadier figure with ``--threads 1`` on a loaded
machine (with more threads it also counts threads spinning at barriers).

Peak memory (``peak_mib``): each side runs once more in a fresh spawned process that builds the stack,
runs a tiny warm-up (lazy initialisation, parameter gradients allocated), resets the kernel's peak-RSS
counter and runs forward + backward once: the most extra resident memory needed at any moment (as
``bench scan`` measures it).

The whole model (``model``): ``--model-layers`` (default 24: the ``mamba2-130m`` model itself) blocks with
the embedding and tied head, against transformers' ``Mamba2ForCausalLM`` torch path and against the measured
matmul peak of each mode's dtype, as ``python -m mswelu.bench model --preset mamba2-130m`` measures it (same
``--batch``, ``--seq-len``, ``--repeats``, ``--profile``); ``--model-layers 0`` skips it.

Subnormal floats are flushed (``torch.set_flush_denormal(True)``, as the trainer does on CPUs) unless
``--keep-denormals``. Goal (printed, never asserted): our stack at least 3x faster than transformers'.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mswelu.base.errors import positive_int
from mswelu.bench import bench_parser, best_times, finish
from mswelu.bench import model as whole
from mswelu.bench.memory import extra_peak_mib, in_fresh_process

GOAL = 3.0
SHAPE = {
    "d_model": 768,
    "d_state": 128,
    "headdim": 64,
    "expand": 2,
    "n_groups": 1,
    "chunk_size": 256,
    "d_conv": 4,
}
MODES = ("fp32", "bf16")


class _Block(nn.Module):
    """``x + mixer(norm(x))``: the pre-norm residual block of both sides."""

    def __init__(self, norm: nn.Module, mixer: nn.Module) -> None:
        super().__init__()
        self.norm, self.mixer = norm, mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))


def build_stacks(layers: int, shape: dict[str, int], seed: int = 0) -> dict[str, nn.Module]:
    """``{"mswelu": ours, "transformers": theirs}``, the same weights, training mode."""
    from transformers import Mamba2Config, Mamba2ForCausalLM

    from mswelu.models.modeling import RMSNorm
    from mswelu.modules.mamba2_mixer import Mamba2Mixer

    torch.manual_seed(seed)
    s = shape
    config = Mamba2Config(
        vocab_size=16, hidden_size=s["d_model"], state_size=s["d_state"], head_dim=s["headdim"],
        num_heads=s["expand"] * s["d_model"] // s["headdim"], expand=s["expand"], n_groups=s["n_groups"],
        chunk_size=s["chunk_size"], conv_kernel=s["d_conv"], num_hidden_layers=layers,
    )  # fmt: skip
    theirs = Mamba2ForCausalLM(config).backbone.layers  # ModuleList of Mamba2Block (norm, mixer)
    ours = nn.Sequential(
        *[
            _Block(
                RMSNorm(s["d_model"], eps=config.layer_norm_epsilon),
                Mamba2Mixer(
                    s["d_model"],
                    d_state=s["d_state"],
                    d_conv=s["d_conv"],
                    expand=s["expand"],
                    headdim=s["headdim"],
                    n_groups=s["n_groups"],
                    chunk_size=s["chunk_size"],
                    norm_eps=config.layer_norm_epsilon,
                    backend="torch",
                ),  # fmt: skip
            )
            for _ in range(layers)
        ]
    )
    ours.load_state_dict(theirs.state_dict())  # transformers' init, our layout: same names and shapes
    return {"mswelu": ours.train(), "transformers": nn.Sequential(*theirs).train()}


def _step(stack: nn.Module, x: torch.Tensor, mode: str) -> float:
    """One forward + backward; returns the loss."""
    stack.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
        out = stack(x)
    loss = out.float().square().mean()
    loss.backward()
    return float(loss.detach())


def _inputs(batch: int, seq_len: int, d_model: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, seq_len, d_model, generator=torch.Generator().manual_seed(seed))


def check_agreement(stacks: dict[str, nn.Module], d_model: int) -> float:
    """Largest relative difference of the two stacks' outputs (fp32, a short input): they must agree."""
    x = _inputs(2, 80, d_model)
    with torch.no_grad():
        ours, theirs = (stacks[name](x) for name in ("mswelu", "transformers"))
    diff = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    if not diff < 1e-4:
        raise RuntimeError(f"the stacks disagree before timing: max relative difference {diff:.2e}")
    return diff


def _peak_child(
    name: str, mode: str, layers: int, shape: dict, batch: int, seq_len: int, threads: int, flush: bool
) -> tuple[float, str]:
    """Runs in a fresh process: extra peak RSS (MiB) of one forward + backward of one stack."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush)
    stack = build_stacks(layers, shape)[name]
    _step(stack, _inputs(1, 8, shape["d_model"]), mode)  # lazy init, parameter gradients: not measured
    x = _inputs(batch, seq_len, shape["d_model"])
    return extra_peak_mib(lambda: _step(stack, x, mode))


def peak_memory(*args: Any) -> tuple[float, str]:
    return in_fresh_process(_peak_child, *args)


def time_ssd(
    shape: dict, batch: int, seq_len: int, mode: str, chunk_sizes: list[int], repeats: int
) -> dict[str, float]:
    """Best-of-``repeats`` seconds of the SSD alone, ours at each chunk size and transformers' at 256."""
    from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan

    from mswelu.ops.ssd import ssd_chunk_scan

    g = torch.Generator().manual_seed(2)
    h, p, n = shape["expand"] * shape["d_model"] // shape["headdim"], shape["headdim"], shape["d_state"]
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    x = torch.randn(batch, seq_len, h, p, generator=g).to(dtype)
    dt = (torch.randn(batch, seq_len, h, generator=g) * 0.5).to(dtype)
    B, C = (torch.randn(batch, seq_len, shape["n_groups"], n, generator=g).to(dtype) for _ in range(2))
    A = -torch.arange(1.0, h + 1)
    D, dt_bias = torch.ones(h), torch.log(torch.expm1(torch.full((h,), 0.01)))
    leaves = [t.requires_grad_() for t in (x, dt, B, C, A, D, dt_bias)]
    kw = {"D": D, "dt_bias": dt_bias, "dt_softplus": True}
    fns = {f"mswelu_chunk{q}": (lambda q=q: ssd_chunk_scan(x, dt, A, B, C, q, **kw)) for q in chunk_sizes}
    fns[f"transformers_chunk{shape['chunk_size']}"] = lambda: mamba2_chunk_scan(
        x, dt, A, B, C, shape["chunk_size"], **kw
    )

    def fwd_bwd(fn) -> None:
        for t in leaves:
            t.grad = None
        fn().float().square().mean().backward()

    timed = best_times({name: (lambda fn=fn: fwd_bwd(fn)) for name, fn in fns.items()}, repeats)
    return {name: t["seconds"] for name, t in timed.items()}


def run(
    *,
    d_model: int = SHAPE["d_model"],
    layers: int = 2,
    modes: tuple[str, ...] = MODES,
    batch: int = 2,
    seq_len: int = 512,
    chunk_sizes: tuple[int, ...] = (64,),
    repeats: int = 3,
    threads: int = 2,
    memory: bool = True,
    ssd: bool = True,
    flush_denormal: bool = True,
    model_layers: int = 0,
    profile: int = 0,
) -> dict:
    """The benchmark (see the module docstring); restores the thread count and the denormal mode."""
    shape = {**SHAPE, "d_model": d_model}
    old_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        flushed = torch.set_flush_denormal(flush_denormal) and flush_denormal
        stacks = build_stacks(layers, shape)
        agreement = check_agreement(stacks, d_model)
        x = _inputs(batch, seq_len, d_model)
        stack_results: dict[str, dict] = {}
        for mode in modes:
            calls = {name: (lambda s=stack, m=mode: _step(s, x, m)) for name, stack in stacks.items()}
            timed = best_times(calls, repeats)
            res: dict[str, Any] = {
                name: {**t, "tokens_per_s": batch * seq_len / t["seconds"]} for name, t in timed.items()
            }
            res["speedup"] = timed["transformers"]["seconds"] / timed["mswelu"]["seconds"]
            res["cpu_speedup"] = timed["transformers"]["cpu_seconds"] / timed["mswelu"]["cpu_seconds"]
            if memory:
                for name in stacks:
                    peak, method = peak_memory(
                        name, mode, layers, shape, batch, seq_len, threads, flush_denormal
                    )
                    res[name].update(peak_mib=peak, memory_method=method)
                res["peak_memory_ratio"] = res["mswelu"]["peak_mib"] / res["transformers"]["peak_mib"]
            stack_results[mode] = res
        ssd_results = (
            {m: time_ssd(shape, batch, seq_len, m, list(chunk_sizes), repeats) for m in modes} if ssd else {}
        )
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(old_threads)
    if model_layers:  # the whole model: bench model's measurement
        sizes = {"layers": model_layers, "d_model": d_model, "seq_len": seq_len, "batch": batch}
        sizes.update(modes=modes, repeats=repeats, threads=threads, profile=profile, flush_denormal=flushed)
    return {
        "benchmark": "mamba2",
        "config": {
            **shape,
            "layers": layers,
            "batch": batch,
            "seq_len": seq_len,
            "threads": threads,
            "repeats": repeats,
            "flush_denormal": flushed,
            "torch": torch.__version__,
            "max_rel_diff_fp32": agreement,
        },
        "stack": stack_results,
        "ssd": ssd_results,
        "model": whole.run("mamba2-130m", **sizes) if model_layers else None,
        "goal": {"min_speedup": GOAL, "met": {m: r["speedup"] >= GOAL for m, r in stack_results.items()}},
    }


def _text(out: dict[str, Any]) -> list[str]:
    """The lines ``main`` prints without ``--json``."""
    lines = []
    cfg = out["config"]
    lines.append(
        f"Mamba-2 mixer stack fwd+bwd: {cfg['layers']} x (RMSNorm + mixer + residual) at mamba2-130m shape "
        f"(d_model {cfg['d_model']}, N {cfg['d_state']}, headdim {cfg['headdim']}), B={cfg['batch']} "
        f"L={cfg['seq_len']}, {cfg['threads']} threads, flush denormals {cfg['flush_denormal']}; "
        f"outputs agree to {cfg['max_rel_diff_fp32']:.1e}"
    )
    for mode, res in out["stack"].items():
        for name in ("mswelu", "transformers"):
            r = res[name]
            peak = f", peak {r['peak_mib']:.0f} MiB" if "peak_mib" in r else ""
            cpu = f"(CPU {r['cpu_seconds']:.3f} s)"
            lines.append(
                f"  {mode:5s} {name:13s} {r['seconds']:7.3f} s {cpu}  {r['tokens_per_s']:8.0f} tokens/s{peak}"
            )
        memory = f", peak memory {res['peak_memory_ratio']:.2f}x" if "peak_memory_ratio" in res else ""
        goal = "met" if out["goal"]["met"][mode] else "NOT met"
        lines.append(
            f"  {mode:5s} speedup {res['speedup']:.2f}x (goal >= {GOAL}x: {goal}; in CPU time "
            f"{res['cpu_speedup']:.2f}x){memory}"
        )
    for mode, res in out["ssd"].items():
        cells = "  ".join(f"{name} {s * 1e3:.1f} ms" for name, s in res.items())
        lines.append(f"  {mode:5s} SSD alone: {cells}")
    return lines + (whole.text(out["model"]) if out.get("model") else [])


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("mamba2", __doc__, layers=2, batch=2, seq_len=512, repeats=3, threads=2)
    whole.add_arguments(p)
    p.add_argument("--model-layers", type=int, default=24, help="the whole model's blocks (0: skip it)")
    p.add_argument(
        "--chunk-sizes",
        type=positive_int("--chunk-sizes"),
        nargs="+",
        default=[64],
        help="our SSD chunk sizes",
    )
    p.add_argument(
        "--d-model",
        type=positive_int("--d-model"),
        default=SHAPE["d_model"],
        help="a multiple of 32 (quick checks)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the per-process peak-memory runs")
    p.add_argument("--no-ssd", action="store_true", help="skip the SSD-alone timing")
    args = p.parse_args(argv)
    if args.d_model % 32:
        p.error("--d-model must be a multiple of 32 (expand 2, headdim 64)")
    out = run(
        d_model=args.d_model,
        layers=args.layers,
        modes=tuple(args.modes),
        batch=args.batch,
        seq_len=args.seq_len,
        chunk_sizes=tuple(args.chunk_sizes),
        repeats=args.repeats,
        threads=args.threads,
        memory=not args.no_memory,
        ssd=not args.no_ssd,
        flush_denormal=not args.keep_denormals,
        model_layers=args.model_layers,
        profile=args.profile,
    )
    return finish(lambda: out, args.json, lambda o: print("\n".join(_text(o))))


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
