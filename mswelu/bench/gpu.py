"""GPU training throughput: our models on the CUDA kernels vs the official Mamba and GPT-2.

One process, one GPU, every model trained the same way: bf16 autocast, fused AdamW (lr 6e-4,
betas (0.9, 0.95), decay 0.1 on tensors with >= 2 dims), batch 8 x 1024 tokens of random ids,
next-token cross-entropy in fp32 on the logits; ``--warmup`` steps (CUDA init, cuDNN/Triton
autotuning, torch.compile) are excluded from the timing. The models:

    a  mamba_ssm      mamba-ssm's own MambaLMHeadModel, 24 x 768, SiLU, fused mamba_inner_fn path
    b  mamba130m_silu our ``mamba-130m`` preset, activation silu, kernel backend
    c  mamba130m_swelu the same with swelu (kernels + SWELU between them)
    d  seed124m_swelu our ``seed-124m`` preset (6 Mamba blocks + dense SWELU stack)
    e  gpt2_compiled  transformers GPT2LMHeadModel(GPT2Config()), sdpa attention, torch.compile

Reported per model: ``tokens_per_s``, ``mfu`` (6 x params x tokens/s / peak bf16 dense FLOP/s;
H100 / H200: 989e12, A100: 312e12, else ``--peak-tflops``), ``peak_gib``
(``torch.cuda.max_memory_allocated`` over warm-up + timed steps), ``params`` and for ours the
backend actually used. Ratios of tokens/s: ``b/a`` (goal >= 1.0), ``c/b`` (goal >= 0.9), ``d/e``.
The JSON goes to ``benchmarks/results/<gpu-name-slug>.json`` (written atomically) and, with
``--json``, to stdout. ``--profile NAME`` prints a torch.profiler table of a few steps of model NAME
(to stderr with ``--json``). Without a GPU it exits with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mswelu.base.errors import unknown_choice
from mswelu.base.fs import atomic_write_json
from mswelu.bench import bench_parser

#: model key -> (short name, description)
MODELS: dict[str, tuple[str, str]] = {
    "a": ("mamba_ssm", "mamba-ssm MambaLMHeadModel 24x768 SiLU, fused path"),
    "b": ("mamba130m_silu", "mswelu mamba-130m preset, silu, kernel backend"),
    "c": ("mamba130m_swelu", "mswelu mamba-130m preset, swelu, kernel backend"),
    "d": ("seed124m_swelu", "mswelu seed-124m preset, swelu, kernel backend"),
    "e": ("gpt2_compiled", "transformers GPT-2 124M, sdpa, torch.compile"),
}
OUR_MODELS = {"b": ("mamba-130m", "silu"), "c": ("mamba-130m", "swelu"), "d": ("seed-124m", "swelu")}
RATIOS = (("b/a", "b", "a", 1.0), ("c/b", "c", "b", 0.9), ("d/e", "d", "e", None))
#: dense bf16 tensor-core peak FLOP/s by GPU-name substring (first match wins)
PEAK_FLOPS = (("H200", 989e12), ("H100", 989e12), ("GH200", 989e12), ("A100", 312e12), ("L40S", 362e12))


def gpu_slug(name: str) -> str:
    """File-name form of a GPU name: ``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown-gpu"


def peak_flops_for(name: str) -> float | None:
    """bf16 dense peak of a known GPU (by name), else None."""
    upper = name.upper()
    for key, flops in PEAK_FLOPS:
        if key in upper:
            return flops
    return None


def mfu(params: int, tokens_per_s: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation with the 6 N D rule (attention / scan FLOPs not counted)."""
    if not peak_flops:
        return None
    return 6.0 * params * tokens_per_s / peak_flops


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Tokens/s ratios b/a, c/b, d/e (None where either side is missing)."""
    out: dict[str, float | None] = {}
    for label, num, den, _ in RATIOS:
        a, b = results.get(MODELS[num][0], {}), results.get(MODELS[den][0], {})
        ta, tb = a.get("tokens_per_s"), b.get("tokens_per_s")
        out[label] = round(ta / tb, 4) if ta and tb else None
    return out


# ----------------------------------------------------------------------------- models


@dataclass
class Built:
    model: nn.Module
    vocab: int  # ids are drawn from [0, vocab)
    logits: Callable[[torch.Tensor], torch.Tensor]
    backend: str | None = None


def build(key: str, device: torch.device, compile_ours: bool) -> Built:
    """Model ``key`` on ``device`` in fp32 (autocast makes the bf16 compute)."""
    if key == "a":
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        cfg = MambaConfig(
            d_model=768,
            n_layer=24,
            vocab_size=50277,
            ssm_cfg={"layer": "Mamba1"},
            rms_norm=True,
            residual_in_fp32=True,
            fused_add_norm=True,
            pad_vocab_size_multiple=8,
        )
        model = MambaLMHeadModel(cfg, device=device)
        return Built(model, 50277, lambda ids: model(ids).logits, backend="mamba_ssm")
    if key in "bcd":
        from mswelu.models.configuration import MsweluConfig
        from mswelu.models.modeling import MsweluForCausalLM

        preset, act = OUR_MODELS[key]
        config = MsweluConfig.from_preset(preset, activation=act)
        model = MsweluForCausalLM(config).to(device)
        backend = model.backend_in_use()
        fwd = torch.compile(model) if compile_ours else model
        return Built(model, config.vocab_size, lambda ids: fwd(ids).logits, backend=backend)
    if key == "e":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config()
        config._attn_implementation = "sdpa"
        model = GPT2LMHeadModel(config).to(device)
        compiled = torch.compile(model)
        return Built(model, config.vocab_size, lambda ids: compiled(ids).logits)
    raise ValueError(unknown_choice("model", key, sorted(MODELS)))


def make_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The same fused AdamW for every model: decay on >= 2-dim tensors only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), fused=device.type == "cuda")


def train_step(built: Built, opt: torch.optim.Optimizer, window: torch.Tensor, device: torch.device) -> None:
    x, y = window[:, :-1], window[:, 1:]
    with torch.autocast(device.type, dtype=torch.bfloat16):
        logits = built.logits(x)
    # padded vocabularies (mamba: 50280) keep their extra logits: targets are all < vocab
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(key: str, args: argparse.Namespace, device: torch.device, peak: float | None) -> dict[str, Any]:
    """Build, warm up, time ``args.steps`` training steps; free everything afterwards."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    built = build(key, device, args.compile_ours)
    opt = make_optimizer(built.model, device)
    params = sum(p.numel() for p in built.model.parameters())
    windows = torch.randint(
        0, built.vocab, (args.steps + args.warmup, args.batch_size, args.seq_len + 1), device=device
    )
    for i in range(args.warmup):
        train_step(built, opt, windows[i], device)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        train_step(built, opt, windows[i], device)
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens_per_s = args.steps * args.batch_size * args.seq_len / seconds
    out = {
        "description": MODELS[key][1],
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu": None if (m := mfu(params, tokens_per_s, peak)) is None else round(m, 4),
        "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
        "params": params,
        "step_ms": round(1000 * seconds / args.steps, 2),
    }
    if built.backend is not None:
        out["backend"] = built.backend
    if args.profile == key or args.profile == MODELS[key][0]:
        out_stream = sys.stderr if args.json else sys.stdout
        print(profile_table(built, opt, windows[0], device, args.profile_rows), file=out_stream)
    del built, opt, windows
    return out


def profile_table(
    built: Built, opt: torch.optim.Optimizer, window: torch.Tensor, device: torch.device, rows: int
) -> str:
    """Where the time of 3 training steps goes (after the warm-up), by operator."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as prof:
        for _ in range(3):
            train_step(built, opt, window, device)
        _sync(device)
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort_by, row_limit=rows)


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = bench_parser("gpu", __doc__, batch_size=8, seq_len=1024, steps=20)
    p.add_argument("--only", default="a,b,c,d,e", help="comma-separated subset of a,b,c,d,e (default: all)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (includes compilation)")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak of this GPU, TFLOP/s")
    p.add_argument("--compile-ours", action="store_true", help="torch.compile our models (b, c, d) too")
    p.add_argument("--profile", default=None, help="print a torch.profiler table for one model (a..e)")
    p.add_argument("--profile-rows", type=int, default=25)
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/<gpu>.json)")
    p.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # "cpu": smoke-test the loop only
    args = p.parse_args(argv)
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    bad = [k for k in keys if k not in MODELS]
    if bad or not keys:
        p.error(f"--only takes a comma-separated subset of {','.join(MODELS)}; got {args.only!r}")
    args.keys = keys
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    names = [v[0] for v in MODELS.values()]
    if args.profile is not None and args.profile not in MODELS and args.profile not in names:
        p.error(f"--profile: {unknown_choice('profile', args.profile, [*MODELS, *names])}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "bench gpu: no CUDA GPU is visible to PyTorch (torch.cuda.is_available() is False); "
            "this benchmark needs one GPU with the mamba-ssm / causal-conv1d kernels (docs/gpus.md)",
            file=sys.stderr,
        )
        if args.json:
            payload = {"benchmark": "gpu", "error": "no CUDA GPU", "gpu": None, "results": {}, "ratios": {}}
            print(json.dumps(payload))
        return 2
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops_for(gpu)
    log = sys.stderr if args.json else sys.stdout
    if peak is None:
        print(f"bench gpu: unknown peak FLOP/s for {gpu!r}; pass --peak-tflops to get MFU", file=log)

    results: dict[str, dict[str, Any]] = {}
    failed = []
    for key in args.keys:
        name = MODELS[key][0]
        try:
            results[name] = measure(key, args, device, peak)
        except Exception as exc:  # one model failing (OOM, missing package) must not lose the others
            failed.append(name)
            results[name] = {"description": MODELS[key][1], "error": f"{type(exc).__name__}: {exc}"}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        r = results[name]
        if "error" in r:
            print(f"{key} {name:18s} FAILED: {r['error']}", file=log)
        else:
            mfu_txt = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
            print(
                f"{key} {name:18s} {r['tokens_per_s']:>11,.0f} tok/s  MFU {mfu_txt:>6}  "
                f"peak {r['peak_gib']} GiB  {r['params'] / 1e6:.1f}M params"
                + (f"  backend={r['backend']}" if "backend" in r else ""),
                file=log,
            )

    ratio = ratios(results)
    goals = {
        f"{label} >= {goal}": (ratio[label] >= goal if ratio[label] is not None else None)
        for label, _, _, goal in RATIOS
        if goal is not None
    }
    d = results.get(MODELS["d"][0], {})
    if d.get("mfu") is not None:
        goals["d mfu >= 0.25"] = d["mfu"] >= 0.25
    payload = {
        "benchmark": "gpu",
        "gpu": gpu,
        "results": results,
        "ratios": ratio,
        "goals": goals,
        "setup": {
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "steps": args.steps,
            "warmup": args.warmup,
            "autocast": "bfloat16",
            "optimizer": "AdamW(fused)",
            "peak_flops": peak,
            "compile_ours": args.compile_ours,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
        },
    }
    for label, value in ratio.items():
        print(f"ratio {label}: {value}", file=log)
    if not args.no_write and device.type == "cuda":
        from mswelu.base.paths import project_root

        path = args.out or project_root() / "benchmarks" / "results" / f"{gpu_slug(gpu)}.json"
        atomic_write_json(path, payload)
        print(f"wrote {path}", file=log)
    if args.json:
        print(json.dumps(payload))
    return 1 if failed else 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
