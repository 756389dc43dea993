"""Selective-scan benchmark on CPU: ours vs transformers' slow-path loop vs mambapy's parallel scan.

Every approach computes the same Mamba-1 scan, forward + backward (gradients w.r.t. u, delta, A,
B, C, D and the delta bias), from the same (b, d, l) inputs at B=2, L=256, d_inner=1536, N=16,
fp32, ``torch.set_num_threads(2)``:

- ``mswelu``: :func:`mswelu.ops.selective_scan.selective_scan` as a model runs it (``impl="auto"``: the
  compiled CPU kernel of :mod:`mswelu.ops.cpu_kernels` where it is built);
- ``mswelu_torch``: the same with ``impl="torch"`` (chunked PyTorch code, analytic backward);
- ``transformers_loop``: the recurrent branch of ``transformers.models.mamba.modeling_mamba.
  mamba_selective_scan`` (what ``MambaMixer`` runs without kernels), reproduced line by line:
  discretise the whole sequence, then a Python loop indexing ``[:, :, index]``, plain autograd;
- ``mambapy_pscan``: mambapy's ``MambaBlock.selective_scan`` formulation around ``mambapy.pscan``.

Outputs and gradients of the three are compared before timing (``max_rel_diff`` in the JSON).

Time: best of ``--repeats`` warm runs in this process, ours and mambapy's interleaved run by run so
that load from other processes hits both alike (the slow loop: ``--slow-repeats``, default 1).

Peak memory (``peak_mib``): each approach runs once more in a fresh spawned process, after a tiny warm-up:
the most extra resident memory it needed at any moment (:mod:`mswelu.bench.memory`, which also says how,
as ``memory_method``). ``saved_mib``: the distinct tensors autograd keeps for backward.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mswelu.base.errors import positive_int
from mswelu.bench import bench_parser, best_times
from mswelu.bench.memory import extra_peak_mib, in_fresh_process, saved_mib
from mswelu.ops.selective_scan import selective_scan

APPROACHES = ("mswelu", "mswelu_torch", "transformers_loop", "mambapy_pscan")


def make_inputs(b: int, d: int, length: int, n: int, seed: int = 0) -> dict[str, Tensor]:
    """Mamba-like inputs in mamba_ssm's layout; every tensor that gets a gradient is a leaf."""
    g = torch.Generator().manual_seed(seed)
    dt_bias = torch.log(torch.expm1(torch.exp(torch.rand(d, generator=g) * math.log(100) + math.log(1e-3))))
    tensors = {
        "u": torch.randn(b, d, length, generator=g),
        "delta": torch.randn(b, d, length, generator=g) * 0.5,
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
        "B": torch.randn(b, n, length, generator=g),
        "C": torch.randn(b, n, length, generator=g),
        "D": torch.ones(d),
        "delta_bias": dt_bias,
    }
    return {k: v.requires_grad_() for k, v in tensors.items()}


def scan_mswelu(u, delta, A, B, C, D, delta_bias) -> Tensor:
    return selective_scan(u, delta, A, B, C, D, delta_bias=delta_bias, delta_softplus=True)


def scan_mswelu_torch(u, delta, A, B, C, D, delta_bias) -> Tensor:
    return selective_scan(u, delta, A, B, C, D, delta_bias=delta_bias, delta_softplus=True, impl="torch")


def scan_transformers_loop(u, delta, A, B, C, D, delta_bias) -> Tensor:
    """transformers 5.x ``mamba_selective_scan``, recurrent branch (z=None), as written there."""
    hidden_states, dt = u, delta
    batch_size, intermediate_size, seq_len = hidden_states.shape
    input_dtype = hidden_states.dtype
    dt = dt + delta_bias.to(dt.dtype)[..., None]
    dt = F.softplus(dt)
    B = B.transpose(1, 2)
    C = C.transpose(1, 2)
    discrete_A = torch.exp(A[None, :, None, :] * dt[:, :, :, None])
    discrete_B = dt[:, :, :, None] * B[:, None, :, :].float()
    deltaB_u = discrete_B * hidden_states[:, :, :, None].float()
    ssm_state = torch.zeros(
        batch_size, intermediate_size, A.shape[-1], dtype=input_dtype, device=hidden_states.device
    )
    scan_outputs = []
    for index in range(seq_len):
        ssm_state = discrete_A[:, :, index] * ssm_state + deltaB_u[:, :, index]
        scan_output = torch.matmul(ssm_state.to(input_dtype), C[:, index, :].unsqueeze(-1))
        scan_outputs.append(scan_output[:, :, 0])
    scan_output = torch.stack(scan_outputs, dim=-1)
    scan_output = scan_output + hidden_states * D[None, :, None]
    return scan_output


def scan_mambapy_pscan(u, delta, A, B, C, D, delta_bias) -> Tensor:
    """mambapy ``MambaBlock.selective_scan`` (its (B, L, ED) layout) around ``pscan``."""
    from mambapy.pscan import pscan

    x = u.transpose(1, 2)  # (B, L, ED)
    delta = F.softplus(delta.transpose(1, 2) + delta_bias)  # mambapy: softplus(dt_proj(.)) with bias
    B, C = B.transpose(1, 2), C.transpose(1, 2)  # (B, L, N)
    deltaA = torch.exp(delta.unsqueeze(-1) * A)  # (B, L, ED, N)
    deltaB = delta.unsqueeze(-1) * B.unsqueeze(2)  # (B, L, ED, N)
    BX = deltaB * (x.unsqueeze(-1))  # (B, L, ED, N)
    hs = pscan(deltaA, BX)
    y = (hs @ C.unsqueeze(-1)).squeeze(3)  # (B, L, ED)
    y = y + D * x
    return y.transpose(1, 2)


FUNCTIONS: dict[str, Callable[..., Tensor]] = {
    "mswelu": scan_mswelu,
    "mswelu_torch": scan_mswelu_torch,
    "transformers_loop": scan_transformers_loop,
    "mambapy_pscan": scan_mambapy_pscan,
}


def fwd_bwd(name: str, inputs: dict[str, Tensor], grad_out: Tensor) -> tuple[Tensor, list[Tensor]]:
    """One forward + backward; returns the output and the input gradients."""
    for t in inputs.values():
        t.grad = None
    out = FUNCTIONS[name](**inputs)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in inputs.values()]


def _peak_child(name: str, shape: tuple[int, int, int, int], threads: int) -> tuple[float, str]:
    """Runs in a fresh process: extra peak RSS (MiB) of one forward + backward of ``name``."""
    torch.set_num_threads(threads)
    b, d, length, n = shape
    small = make_inputs(1, 8, 8, 4)
    fwd_bwd(name, small, torch.ones(1, 8, 8))  # lazy init outside the measurement
    del small
    inputs = make_inputs(b, d, length, n)
    grad_out = torch.ones(b, d, length)
    return extra_peak_mib(lambda: fwd_bwd(name, inputs, grad_out))


def peak_memory(name: str, shape: tuple[int, int, int, int], threads: int) -> tuple[float, str]:
    return in_fresh_process(_peak_child, name, shape, threads)


def check_agreement(shape: tuple[int, int, int, int]) -> dict[str, float]:
    """Largest relative difference to the transformers loop over output and all gradients (small size)."""
    b, d, length, n = shape
    inputs = make_inputs(b, d, length, n, seed=1)
    grad_out = torch.randn(b, d, length, generator=torch.Generator().manual_seed(2))
    ref_out, ref_grads = fwd_bwd("transformers_loop", inputs, grad_out)
    diffs = {}
    for name in ("mswelu", "mswelu_torch", "mambapy_pscan"):
        out, grads = fwd_bwd(name, inputs, grad_out)
        worst = 0.0
        for x, y in zip([out, *grads], [ref_out, *ref_grads], strict=True):
            worst = max(worst, ((x - y).abs().max() / y.abs().max().clamp_min(1e-12)).item())
        diffs[name] = worst
    return diffs


def _text(report: dict[str, Any]) -> list[str]:
    """The lines ``main`` prints without ``--json``."""
    results, ratios, lines = report["results"], report["ratios"], []
    cfg = report["config"]
    lines.append(
        f"selective scan fwd+bwd  B={cfg['batch']} L={cfg['length']} d_inner={cfg['d_inner']} "
        f"N={cfg['d_state']} fp32, {cfg['threads']} threads"
    )
    lines.append(f"{'approach':<20}{'seconds':>10}{'peak MiB':>11}{'saved MiB':>11}{'max rel diff':>14}")
    for name, r in results.items():
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        diff = r.get("max_rel_diff_vs_transformers_loop")
        diff_s = "(ref)" if diff is None else f"{diff:.1e}"
        lines.append(f"{name:<20}{r['seconds']:>10.3f}{peak:>11}{r['saved_mib']:>11.1f}{diff_s:>14}")
    for key, value in ratios.items():
        lines.append(f"{key:<40}{'-' if value is None else f'{value:.3f}'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("scan", __doc__, threads=2, batch=2, length=256, d_inner=1536, d_state=16)
    p.add_argument(
        "--repeats",
        type=positive_int("--repeats"),
        default=7,
        help="timed runs of the fast approaches (best kept)",
    )
    p.add_argument(
        "--slow-repeats",
        type=positive_int("--slow-repeats"),
        default=1,
        help="timed runs of the transformers loop",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the per-process peak-memory runs")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    shape = (args.batch, args.d_inner, args.length, args.d_state)
    agreement = check_agreement((2, 64, 64, args.d_state))
    inputs = make_inputs(*shape)
    grad_out = torch.ones(args.batch, args.d_inner, args.length)
    calls = {name: (lambda name=name: fwd_bwd(name, inputs, grad_out)) for name in APPROACHES}
    slow = {"transformers_loop": calls.pop("transformers_loop")}
    best = {**best_times(calls, args.repeats), **best_times(slow, args.slow_repeats, warmup=False)}
    results: dict[str, dict[str, float | str | None]] = {}
    for name in APPROACHES:
        results[name] = {"seconds": best[name]["seconds"], "saved_mib": saved_mib(FUNCTIONS[name], **inputs)}
        if name != "transformers_loop":
            results[name]["max_rel_diff_vs_transformers_loop"] = agreement[name]
    for name in APPROACHES:
        peak, method = (None, "skipped") if args.no_memory else peak_memory(name, shape, args.threads)
        results[name]["peak_mib"] = peak
        results[name]["memory_method"] = method

    ours = results["mswelu"]
    ratios: dict[str, float | None] = {}
    for other in APPROACHES[1:]:
        ratios[f"speedup_vs_{other}"] = results[other]["seconds"] / ours["seconds"]
        ratios[f"peak_memory_vs_{other}"] = (
            None if args.no_memory else ours["peak_mib"] / max(results[other]["peak_mib"], 1e-9)
        )
        ratios[f"saved_memory_vs_{other}"] = ours["saved_mib"] / max(results[other]["saved_mib"], 1e-9)
    report = {
        "benchmark": "scan",
        "config": {
            "batch": args.batch,
            "length": args.length,
            "d_inner": args.d_inner,
            "d_state": args.d_state,
            "dtype": "float32",
            "threads": args.threads,
            "torch": torch.__version__,
            "repeats": args.repeats,
            "slow_repeats": args.slow_repeats,
        },
        "results": results,
        "ratios": ratios,
    }
    print(json.dumps(report) if args.json else "\n".join(_text(report)))
    return 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
