"""Training throughput on the CPU, and where a training step's time goes.

A step is the trainer's step: forward, the next-token loss, backward, gradient clipping at 1.0, and an
optimizer step with the project's AdamW routing, on random tokens (the speed does not depend on the
data). The paths, each measured in the same run on the same model:

- ``fp32-logits``: fp32, full logits, then the loss, the pure-PyTorch scan and SWELU, F.conv1d, and AdamW's
  per-tensor loop (the path before the speed-ups; the reference);
- ``fp32``: fp32 with the fused head + loss (:func:`mswelu.ops.lm_loss.linear_cross_entropy`), the
  compiled CPU kernels for the scan, the causal conv, SWELU and the head's softmax
  (:mod:`mswelu.ops.cpu_kernels`) and torch's fused AdamW, as the trainer runs with ``dtype="fp32"``;
- ``bf16-torch``: bf16 autocast (fp32 master weights, scan and loss in fp32) with the fused head and fused
  AdamW, the kernels turned off (``MSWELU_CPU_KERNELS=0``): what the kernels add on top of bf16;
- ``bf16``: ``bf16-torch`` with the kernels, as the trainer runs with ``dtype="bf16"`` (and ``auto`` on a
  CPU with bf16 support).

Paths with the kernels need them built (``python -m mswelu.ops.cpu_kernels``); where they cannot be, those
paths are reported as not measured, with the reason.

``--set KEY=VALUE`` overrides the model config for every path (e.g. ``--set d_state=8``), as the trainer's
``--set`` does.

For each path:

- ``tokens_per_s``: batch x seq_len over the best of ``--steps`` timed steps, after one warm-up step;
- ``model_gflops``: 6 x parameters x tokens per second (the usual estimate: forward and backward of every
  weight once, the tied head counted once), and its share of the fp32 and bf16 matmul peaks, measured in
  the same process at the same thread count (a square matmul, best of 5);
- ``components``: the share of one profiled step (``torch.profiler``, self CPU time of every op) spent in
  the selective scan (forward and its backward), SWELU (forward and backward), the mixer's causal conv
  (the CPU kernel or F.conv1d, forward and backward), the LM head + loss (every
  op with an input whose last dimension is the vocabulary, or a matrix whose first is: the head's matmuls,
  the softmax and loss; the fused head's Function with everything under it; the embedding and its
  gradient), the
  other matmuls, the optimizer (clipping and step), and everything else. (The head is recognised by the
  vocabulary size, so a ``--vocab-size`` equal to a hidden width of the preset would blur the split.)

``speedup`` is each path's tokens/s over ``fp32-logits``'s (when both are measured).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import torch

from mswelu.base.errors import positive_int, with_nearest
from mswelu.bench import bench_parser, finish
from mswelu.bench.peak import matmul_peak

MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv", "aten::dot"}
_SCAN = "mswelu::selective_scan"
_OPTIMIZER = "mswelu::optimizer"


def _build(
    preset: str, vocab_size: int, seq_len: int, fused_adamw: bool = True, **overrides: Any
) -> tuple[torch.nn.Module, Any]:
    from mswelu.models.build import build_model
    from mswelu.training.optim import build_optimizer

    torch.manual_seed(0)
    if vocab_size <= 50256:  # GPT-2's end-of-text id does not exist: any id will do on random tokens
        overrides = {"eos_token_id": vocab_size - 1, **overrides}
    model = build_model(preset, vocab_size, seq_len, **overrides)
    return model.train(), build_optimizer(model, "adamw", lr=1e-3, fused=fused_adamw)


#: path name -> (bf16 autocast, fused head + loss, compiled CPU kernels, torch's fused AdamW)
PATHS = {
    "fp32-logits": (False, False, False, False),
    "fp32": (False, True, True, True),
    "bf16-torch": (True, True, False, True),
    "bf16": (True, True, True, True),
}
REFERENCE_PATH = "fp32-logits"


def _step(model: torch.nn.Module, optimizer: Any, window: torch.Tensor, path: str) -> float:
    from mswelu.models.build import lm_loss
    from mswelu.ops.lm_loss import next_token_loss, split_window

    bf16, fused, kernels, _ = PATHS[path]
    x, y = split_window(window)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with _cpu_kernels(kernels), autocast:
        loss = lm_loss(model, x, y) if fused else next_token_loss(model(input_ids=x).logits, y)
    loss.backward()
    with torch.profiler.record_function(_OPTIMIZER):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


@contextlib.contextmanager
def _cpu_kernels(on: bool) -> Any:
    """The compiled CPU kernels on or off for this block (``MSWELU_CPU_KERNELS``, read at each call)."""
    from mswelu.ops import cpu_kernels

    before = os.environ.get(cpu_kernels.ENV_VAR)
    os.environ[cpu_kernels.ENV_VAR] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[cpu_kernels.ENV_VAR]
        else:
            os.environ[cpu_kernels.ENV_VAR] = before


@contextlib.contextmanager
def _labelled_scan() -> Any:
    """The mixer's selective scan inside a profiler label (its backward is labelled by autograd)."""
    from mswelu.modules import mamba_mixer

    real = mamba_mixer.selective_scan

    def labelled(*args: Any, **kwargs: Any) -> Any:
        with torch.profiler.record_function(_SCAN):
            return real(*args, **kwargs)

    mamba_mixer.selective_scan = labelled
    try:
        yield
    finally:
        mamba_mixer.selective_scan = real


def components(
    model: torch.nn.Module, optimizer: Any, window: torch.Tensor, path: str, vocab_size: int
) -> dict[str, float]:
    """Share of one step's self CPU time per component (see the module docstring)."""
    from torch.profiler import ProfilerActivity, profile

    with _labelled_scan(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        _step(model, optimizer, window, path)
    kinds = ("scan", "swelu", "conv", "head_and_loss", "matmul", "optimizer", "other")
    totals = dict.fromkeys(kinds, 0.0)
    for event in prof.events():
        if event.name in (_SCAN, _OPTIMIZER):
            continue  # labels: their time is their children's
        ancestors = []
        parent = event.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        if any(a == _SCAN or "SelectiveScanFnBackward" in a for a in [event.name, *ancestors]):
            kind = "scan"
        elif any("_SWELUFunction" in a for a in [event.name, *ancestors]):
            kind = "swelu"
        elif any("CausalConv1d" in a or "convolution" in a for a in [event.name, *ancestors]):
            kind = "conv"
        elif _OPTIMIZER in ancestors:
            kind = "optimizer"
        elif _is_head(event, ancestors, vocab_size, window.numel() - window.size(0)):
            kind = "head_and_loss"
        elif event.name in MATMUL_OPS:
            kind = "matmul"
        else:
            kind = "other"
        totals[kind] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in totals.items()}


def _is_head(event: Any, ancestors: list[str], vocab_size: int, tokens: int) -> bool:
    """The fused head + loss (its Function and everything under it), the embedding, or an op on a tensor
    whose last dimension is the vocabulary (the logits, their gradient, the head's matmuls) or whose first
    is (the weight and its gradient; not when the vocabulary equals the batch's token count, where the
    flattened activations have that shape too)."""
    if any("_LinearCrossEntropy" in a for a in [event.name, *ancestors]) or "embedding" in event.name:
        return True
    shapes = [s for s in (event.input_shapes or []) if isinstance(s, list) and s]
    return any(s[-1] == vocab_size or (s[0] == vocab_size != tokens and len(s) == 2) for s in shapes)


def run(
    preset: str = "small",
    batch_size: int = 8,
    seq_len: int = 128,
    steps: int = 5,
    paths: tuple[str, ...] = tuple(PATHS),
    threads: int | None = None,
    vocab_size: int = 50257,
    profile_components: bool = True,
    model_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The measurements of the module docstring, as a dict."""
    from mswelu.models.build import count_parameters
    from mswelu.ops import cpu_kernels

    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as the trainer does on CPU
    peaks = {"fp32": matmul_peak(torch.float32, 1024), "bf16": matmul_peak(torch.bfloat16, 1024)}
    tokens = batch_size * seq_len
    result: dict[str, Any] = {
        "preset": preset,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "vocab_size": vocab_size,
        "threads": torch.get_num_threads(),
        "model_overrides": dict(model_overrides or {}),
        "matmul_peak_gflops": peaks,
        "paths": {},
    }
    unknown = [path for path in paths if path not in PATHS]
    if unknown:
        raise ValueError(
            f"unknown path(s) {with_nearest(unknown, PATHS)}: expected some of {', '.join(PATHS)}"
        )
    kernels_ok, why_not = cpu_kernels.available()
    for path in paths:
        if PATHS[path][2] and not kernels_ok:
            result["paths"][path] = {"not_measured": f"the CPU kernels are not available: {why_not}"}
            continue
        model, optimizer = _build(preset, vocab_size, seq_len, PATHS[path][3], **(model_overrides or {}))
        result["parameters"] = count_parameters(model)
        window = torch.randint(0, vocab_size, (batch_size, seq_len + 1))
        losses = [_step(model, optimizer, window, path)]  # warm-up
        best = float("inf")
        for _ in range(steps):
            t0 = time.perf_counter()
            losses.append(_step(model, optimizer, window, path))
            best = min(best, time.perf_counter() - t0)
        gflops = 6 * result["parameters"] * tokens / best / 1e9
        entry = {
            "step_seconds": best,
            "tokens_per_s": tokens / best,
            "model_gflops": gflops,
            "share_of_fp32_peak": gflops / peaks["fp32"],
            "share_of_bf16_peak": gflops / peaks["bf16"],
            "loss_first_last": [losses[0], losses[-1]],
        }
        if profile_components:
            entry["components"] = components(model, optimizer, window, path, vocab_size)
        result["paths"][path] = entry
    measured = {p: e for p, e in result["paths"].items() if "tokens_per_s" in e}
    if REFERENCE_PATH in measured:
        ref = measured[REFERENCE_PATH]["tokens_per_s"]
        for entry in measured.values():
            entry["speedup"] = entry["tokens_per_s"] / ref
    return result


def _print(r: dict[str, Any]) -> None:
    peaks = r["matmul_peak_gflops"]
    print(
        f"{r['preset']}: {r['parameters'] / 1e6:.2f}M parameters, batch {r['batch_size']} x {r['seq_len']}, "
        f"{r['threads']} threads{_overrides(r)}; "
        f"matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f}"
    )
    for path, e in r["paths"].items():
        if "not_measured" in e:
            print(f"  {path:>11}: not measured ({e['not_measured']})")
            continue
        speedup = f"  {e['speedup']:.2f}x {REFERENCE_PATH}" if "speedup" in e else ""
        print(
            f"  {path:>11}: {e['tokens_per_s']:8.0f} tokens/s  {e['model_gflops']:6.1f} GFLOP/s "
            f"({e['share_of_fp32_peak']:.0%} of fp32 peak, {e['share_of_bf16_peak']:.0%} of bf16){speedup}"
        )
        if "components" in e:
            print("               " + "  ".join(f"{k} {v:.0%}" for k, v in e["components"].items()))


def _overrides(r: dict[str, Any]) -> str:
    return "".join(f", {k}={v}" for k, v in r.get("model_overrides", {}).items())


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("train", __doc__, full=True, batch_size=8, seq_len=128)
    p.add_argument(
        "--steps", type=positive_int("--steps"), default=5, help="timed steps (best of), after one warm-up"
    )
    p.add_argument("--preset", default="small")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--vocab-size", type=int, default=50257)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model config override")
    p.add_argument("--no-components", action="store_true", help="skip the profiled step")
    args = p.parse_args(argv)
    paths = tuple(x.strip() for x in args.paths.split(",") if x.strip())

    def compute() -> dict[str, Any]:
        from mswelu.train import parse_model_set

        overrides = parse_model_set(args.set)
        return run(
            args.preset,
            args.batch_size,
            args.seq_len,
            args.steps,
            paths,
            args.threads,
            args.vocab_size,
            not args.no_components,
            overrides,
        )

    return finish(compute, args.json, _print)


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
