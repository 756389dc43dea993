"""SWELU benchmark: autograd on the formula vs the fused function (closed-form backward).

On a realistic activation tensor (CPU default (4, 256, 1536) fp32; CUDA default (8, 1024, 1536)
bf16), with a learnable scalar k, forward + backward (gradients w.r.t. z and k) of:

- ``reference``: :func:`mswelu.ops.swelu.swelu_reference`, plain autograd on the formula;
- ``fused``: :func:`mswelu.ops.swelu.swelu` with ``impl="torch"`` (eager closed form);
- ``cpu``: the compiled CPU kernel (``impl="cpu"``, :mod:`mswelu.ops.cpu_kernels`; CPU, where it is built);
- ``compiled``: the same with the elementwise math under ``torch.compile`` (CPU default; compile
  time reported separately and excluded from the timing);
- ``triton``: the fused Triton kernels (CUDA with triton installed).

Inputs hold no exact zeros (autograd on the formula is NaN there) so every variant's gradients are
compared with the reference's before timing (``max_rel_diff``).

Memory: ``saved_mib`` is the size of the distinct tensors autograd keeps for backward, measured
with ``torch.autograd.graph.saved_tensors_hooks`` (allocator-independent; includes z itself when
a variant saves it). On CUDA also ``peak_mib`` (extra peak allocated memory over forward +
backward) and ``held_mib`` (memory still allocated after forward: output + saved tensors).
Time: best of ``--repeats`` warm forward + backward runs. Ratios: ``memory_<v>_over_reference``
(goal <= 0.5) and ``speed_<v>_over_reference`` (reference time / variant time; goal >= 3 on GPU).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import torch

from mswelu.base.errors import choice
from mswelu.bench import bench_parser, best_times
from mswelu.bench.memory import saved_mib
from mswelu.ops import cpu_kernels
from mswelu.ops.swelu import swelu, swelu_reference, triton_available

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIB = 2**20


def variants(device: torch.device, compile_cpu: bool) -> dict[str, Callable]:
    out: dict[str, Callable] = {
        "reference": swelu_reference,
        "fused": lambda z, k: swelu(z, k, impl="torch"),
    }
    if device.type == "cpu" and cpu_kernels.available()[0]:
        out["cpu"] = lambda z, k: swelu(z, k, impl="cpu")
    if device.type == "cpu" and compile_cpu:
        out["compiled"] = lambda z, k: swelu(z, k, impl="compiled")
    if device.type == "cuda" and triton_available():
        out["triton"] = lambda z, k: swelu(z, k, impl="triton")
    return out


def make_inputs(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g) * 1.5
    z = torch.where(z == 0, torch.full_like(z, 1e-3), z)
    grad_out = torch.randn(shape, generator=g)
    return z.to(device, dtype), grad_out.to(device, dtype)


def _leaves(z0: torch.Tensor, k_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    return z0.detach().requires_grad_(), torch.tensor(k_value, device=z0.device, requires_grad=True)


def fwd_bwd(fn: Callable, z0: torch.Tensor, grad_out: torch.Tensor, k_value: float):
    z, k = _leaves(z0, k_value)
    y = fn(z, k)
    y.backward(grad_out)
    return y.detach(), z.grad, k.grad


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_memory(fn: Callable, z0, grad_out, k_value: float, device: torch.device) -> dict[str, float]:
    z, k = _leaves(z0, k_value)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    y = fn(z, k)
    held = torch.cuda.memory_allocated(device) - base
    y.backward(grad_out)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    return {"peak_mib": peak / MIB, "held_mib": held / MIB}


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def run(
    device: torch.device, shape: tuple[int, ...], dtype: torch.dtype, repeats: int, compile_cpu: bool
) -> dict:
    k_value = 0.8
    z0, grad_out = make_inputs(shape, dtype, device)
    fns = variants(device, compile_cpu)
    results: dict[str, dict] = {}
    ref_out = fwd_bwd(fns["reference"], z0, grad_out, k_value)
    for name, fn in fns.items():
        t0 = time.perf_counter()
        out = fwd_bwd(fn, z0, grad_out, k_value)  # warm-up (compilation, kernel build, allocator)
        sync(device)
        warmup_s = time.perf_counter() - t0
        call = {name: lambda fn=fn: (fwd_bwd(fn, z0, grad_out, k_value), sync(device))}
        res = {
            "fwd_bwd_ms": 1e3 * best_times(call, repeats)[name]["seconds"],
            "saved_mib": saved_mib(fn, *_leaves(z0, k_value)),
            "max_rel_diff": {
                part: rel_diff(mine, ref)
                for part, mine, ref in zip(("y", "dz", "dk"), out, ref_out, strict=True)
            },
        }
        if name == "compiled":
            res["first_call_s"] = warmup_s
        if device.type == "cuda":
            res.update(cuda_memory(fn, z0, grad_out, k_value, device))
        results[name] = res
    ref = results["reference"]
    ratios: dict[str, float] = {}
    for name, res in results.items():
        if name == "reference":
            continue
        ratios[f"memory_{name}_over_reference"] = res["saved_mib"] / ref["saved_mib"]
        if "peak_mib" in res:
            ratios[f"peak_{name}_over_reference"] = res["peak_mib"] / ref["peak_mib"]
        ratios[f"speed_{name}_over_reference"] = ref["fwd_bwd_ms"] / res["fwd_bwd_ms"]
    return {"results": results, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("swelu", __doc__, repeats=5)
    parser.add_argument(
        "--device", default="auto", type=choice("device", ("auto", "cpu", "cuda")), metavar="{auto,cpu,cuda}"
    )
    parser.add_argument(
        "--shape", type=int, nargs="+", default=None, help="activation shape (default per device)"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        type=choice("dtype", DTYPES),
        metavar="{" + ",".join(DTYPES) + "}",
        help="default float32 CPU, bfloat16 CUDA",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant on CPU")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    shape = (
        tuple(args.shape) if args.shape else ((8, 1024, 1536) if device.type == "cuda" else (4, 256, 1536))
    )
    dtype = DTYPES[args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    if any(s < 1 for s in shape):
        parser.error("--shape entries must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    out = run(device, shape, dtype, args.repeats, compile_cpu=not args.no_compile)
    config = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "shape": list(shape),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "torch": torch.__version__,
    }
    report = {"benchmark": "swelu", "config": config, **out}
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"SWELU fwd+bwd on {config['device']}, shape {shape}, {config['dtype']}, {config['threads']} threads"
    )
    print(f"{'variant':<10} {'ms':>9} {'saved MiB':>10} {'peak MiB':>9}  max rel diff (y, dz, dk)")
    for name, res in out["results"].items():
        diffs = ", ".join(f"{v:.1e}" for v in res["max_rel_diff"].values())
        peak = f"{res['peak_mib']:9.1f}" if "peak_mib" in res else f"{'-':>9}"
        print(f"{name:<10} {res['fwd_bwd_ms']:9.2f} {res['saved_mib']:10.1f} {peak}  {diffs}")
    if "first_call_s" in out["results"].get("compiled", {}):
        print(f"(compiled: first call incl. compilation {out['results']['compiled']['first_call_s']:.1f} s)")
    for key, value in out["ratios"].items():
        goal = " (goal <= 0.5)" if key.startswith(("memory", "peak")) else ""
        if key.startswith("speed"):
            goal = " (goal >= 3 on GPU)"
        print(f"{key}: {value:.3f}{goal}")
    return 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
