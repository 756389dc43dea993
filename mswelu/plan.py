"""What fits on which GPUs, before a run starts (``python -m mswelu.plan --preset P --gpus N --gpu-memory
24GB``).

Per GPU: parameters, gradients and optimizer state (exact, from the meta-device model, sharded as FSDP2 shards
them), activation memory per sequence (each block class's estimate, with and without checkpointing;
``--measure`` checks it on this CPU), the largest micro-batch that fits, the accumulation a global batch
needs, and the ``torchrun`` command. It recommends DDP, else FSDP2, else FSDP2 with checkpointing, then with
CPU offload, and says why. ``24GB``, ``24GiB`` and ``24`` all mean 24 GiB.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from mswelu.base.errors import choice, plain_text, positive_int
from mswelu.models.build import activation_bytes, build_model, measure_activation_bytes, parse_model_name
from mswelu.training.optim import route_parameters

__all__ = ["Plan", "main", "make_plan", "state_bytes"]

GiB = 2**30
#: held back on every GPU: the CUDA context, the allocator's fragmentation and NCCL buffers
RESERVED = 1.5 * GiB
#: the share of the rest a plan leaves free
MARGIN = 0.10
PARALLEL = ("auto", "ddp", "fsdp")
OPTIMIZERS = ("adamw", "muon")


def parse_memory(text: str | float) -> float:
    """``24GB`` / ``24GiB`` / ``24`` -> bytes (GiB), ``512MB`` -> 512 MiB."""
    m = re.fullmatch(r"\s*([\d.]+)\s*(gib|gb|g|mib|mb|m)?\s*", str(text).lower())
    if not m:
        raise ValueError(f"cannot read the memory size {text!r}: write e.g. 24GB or 80GiB")
    unit = m.group(2) or "gib"
    return float(m.group(1)) * (2**20 if unit.startswith("m") else GiB)


def _meta_model(preset: str, vocab_size: int | None, seq_len: int, model: dict[str, Any]) -> torch.nn.Module:
    from mswelu.models.configuration import PRESETS

    base, ref = parse_model_name(preset)
    vocab = vocab_size or PRESETS[ref or base].get("vocab_size", 50257)
    with torch.device("meta"):
        return build_model(preset, vocab, seq_len, **model)


def _shard_numel(shape: torch.Size, world: int) -> int:
    """Elements of rank 0's FSDP2 shard (dim 0 in ``ceil(rows / world)`` pieces; 0-dim: whole)."""
    if len(shape) == 0:
        return 1
    rows = math.ceil(shape[0] / world)
    return min(rows, shape[0]) * math.prod(shape[1:])


def state_bytes(model: torch.nn.Module, world: int, parallel: str, optimizer: str) -> dict[str, int]:
    """Bytes per GPU of the fp32 parameters, gradients and optimizer state, whole or sharded (``fsdp``)."""
    routes = route_parameters(model, optimizer)
    sharded = parallel == "fsdp" and world > 1
    params = grads = opt = 0
    for r in routes:
        n = _shard_numel(r.param.shape, world) if sharded else r.param.numel()
        params += 4 * n
        grads += 4 * n
        opt += 4 * n if r.optimizer == "muon" else 8 * n + 4
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    params += 4 * frozen  # frozen shape parameters (k of a -fixed activation): 0-dim, whole
    return {"params": params, "grads": grads, "optimizer": opt}


@dataclass
class Plan:
    """A plan for one preset on ``gpus`` GPUs of ``gpu_memory`` bytes (see :func:`make_plan`)."""

    preset: str
    parameters: int
    gpus: int
    nodes: int
    gpu_memory: float
    seq_len: int
    optimizer: str
    parallel: str
    activation_checkpointing: bool
    cpu_offload: bool
    state: dict[str, int]
    working: float
    activations_per_sequence: float
    activations_per_sequence_checkpointed: float
    micro_batch: int
    grad_accum: int
    global_batch: int
    tokens_per_step: int
    fits: bool
    why: str
    command: str
    notes: list[str] = field(default_factory=list)


def _fit(budget: float, fixed: float, per_seq: float) -> int:
    free = budget - fixed
    return max(0, int(free // per_seq)) if per_seq > 0 else 0


def make_plan(
    preset: str,
    gpus: int,
    gpu_memory: float,
    seq_len: int | None = None,
    parallel: str = "auto",
    global_batch_tokens: int = 524_288,
    optimizer: str = "adamw",
    bf16: bool = True,
    nodes: int = 1,
    vocab_size: int | None = None,
    model: dict[str, Any] | None = None,
) -> Plan:
    """The plan; ``parallel`` ``auto`` recommends, ``ddp`` or ``fsdp`` say whether that choice fits."""
    from mswelu.models.configuration import PRESETS, MsweluConfig

    if gpus < 1 or nodes < 1:
        raise ValueError(f"need at least one GPU and one node, got gpus={gpus}, nodes={nodes}")
    base, ref = parse_model_name(preset)
    shape = PRESETS[ref or base]
    if seq_len is not None and not int(seq_len) >= 1:  # a value given is never replaced by the default
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    seq_len = int(seq_len if seq_len is not None else shape.get("max_position_embeddings", 1024))
    meta = _meta_model(preset, vocab_size, seq_len, model or {})
    n_params = sum(p.numel() for p in {id(p): p for p in meta.parameters()}.values())
    world = gpus * nodes
    config = meta.config if ref is None else MsweluConfig.for_run(ref, meta.config.vocab_size, seq_len)
    act = activation_bytes(config, seq_len, bf16)["total"]
    act_ckpt = activation_bytes(config, seq_len, bf16, checkpointing=True)["total"]
    if ref is not None:  # a Transformer baseline: full logits in fp32 instead of the fused loss
        act += seq_len * meta.config.vocab_size * 4
        act_ckpt += seq_len * meta.config.vocab_size * 4
    budget = gpu_memory * (1 - MARGIN) - RESERVED
    blocks = [b for b in getattr(getattr(meta, "backbone", None), "blocks", [])]
    largest_block = max((sum(p.numel() for p in b.parameters()) for b in blocks), default=n_params)

    def option(mode: str, ckpt: bool, offload: bool) -> tuple[dict[str, int], float, int]:
        st = state_bytes(meta, world, mode, optimizer)
        held = 0 if offload else sum(st.values())
        # FSDP: two blocks whole at a time (this one and the prefetched next) and their fp32 gradients
        # before the reduce-scatter; DDP: the gradient buckets (a second copy of the gradients)
        working = 2 * largest_block * (4 + 4) if mode == "fsdp" and world > 1 else st["grads"]
        per_seq = act_ckpt if ckpt else act
        return st, working, _fit(budget, held + working, per_seq)

    choices = [("ddp", False, False), ("fsdp", False, False), ("fsdp", True, False), ("fsdp", True, True)]
    if parallel != "auto":
        choices = [c for c in choices if c[0] == parallel]
    if world == 1:
        choices = [c for c in choices if c[0] == "ddp"] + [("ddp", True, False)]
    chosen, notes = None, []
    for mode, ckpt, offload in choices:
        st, working, micro = option(mode, ckpt, offload)
        if micro >= 1:
            chosen = (mode, ckpt, offload, st, working, micro)
            break
        notes.append(
            f"{mode}{' + activation checkpointing' if ckpt else ''}{' + CPU offload' if offload else ''}: "
            "does not fit"
        )
    fits = chosen is not None
    if chosen is None:
        mode, ckpt, offload = choices[-1]
        st, working, micro = option(mode, ckpt, offload)
        chosen = (mode, ckpt, offload, st, working, 0)
    mode, ckpt, offload, st, working, micro = chosen
    seqs = max(1, math.ceil(global_batch_tokens / seq_len))  # the target global batch, in sequences
    if fits:  # the fewest accumulation steps, then the micro-batch that comes closest to the target
        accum = math.ceil(seqs / (micro * world))
        micro = math.ceil(seqs / (accum * world))
        if mode == "fsdp" and not ckpt and not offload:
            alt = option("fsdp", True, False)[2]
            if alt > micro:
                notes.append(
                    f"with activation checkpointing up to {alt} sequences per GPU fit (about a third more "
                    "compute per step, fewer accumulation steps)"
                )
    else:
        accum = 0
    global_batch = micro * accum * world
    why = _why(mode, ckpt, offload, fits, st, act, budget, world, asked=parallel != "auto")
    command = _command(preset, mode, ckpt, offload, gpus, nodes, seq_len, global_batch, micro, optimizer)
    return Plan(
        preset=preset,
        parameters=n_params,
        gpus=gpus,
        nodes=nodes,
        gpu_memory=gpu_memory,
        seq_len=seq_len,
        optimizer=optimizer,
        parallel=mode,
        activation_checkpointing=ckpt,
        cpu_offload=offload,
        state=st,
        working=working,
        activations_per_sequence=act,
        activations_per_sequence_checkpointed=act_ckpt,
        micro_batch=micro,
        grad_accum=accum,
        global_batch=global_batch,
        tokens_per_step=global_batch * seq_len,
        fits=fits,
        why=why,
        command=command,
        notes=notes,
    )


def _gib(x: float) -> str:
    return f"{x / GiB:.2f} GiB"


def _why(mode, ckpt, offload, fits, st, act, budget, world, asked: bool) -> str:
    whole = sum(st.values())
    if not fits and asked:
        return (
            f"{mode} as asked does not fit one sequence in {_gib(budget)} usable per GPU "
            "(--parallel auto tries every mode)"
        )
    if not fits:
        return (
            f"even sharded over {world} GPUs with activation checkpointing and CPU offload one sequence does "
            f"not fit in {_gib(budget)} usable per GPU: use more or larger GPUs, or a shorter seq_len"
        )
    if mode == "ddp":
        return (
            f"a whole replica ({_gib(whole)} of weights, gradients, optimizer state) fits beside the "
            "activations"
        )
    reason = (
        f"asked for (--parallel fsdp); sharded over {world} GPUs the state is {_gib(whole)} per GPU"
        if asked
        else f"a whole replica does not fit with one sequence per GPU; sharded over {world} GPUs it is "
        f"{_gib(whole)}"
    )
    if ckpt:
        reason += ", and only with activation checkpointing do the activations fit"
    if offload:
        reason += "; the sharded state goes to host memory (CPU offload: the optimizer steps on the CPU)"
    return reason


def _command(preset, mode, ckpt, offload, gpus, nodes, seq_len, global_batch, micro, optimizer) -> str:
    if nodes > 1:
        launcher = (
            f"torchrun --nnodes {nodes} --nproc_per_node {gpus} --rdzv-backend c10d "
            "--rdzv-endpoint $MASTER_HOST:29500 --rdzv-id mswelu"
        )
    else:
        launcher = f"torchrun --standalone --nproc_per_node {gpus}"
    if nodes * gpus == 1:
        launcher = "python"
    args = f"-m mswelu.train --preset {preset} --seq-len {seq_len} --batch-size {max(1, global_batch)}"
    args += f" --micro-batch-size {max(1, micro)} --optimizer {optimizer}"
    if nodes * gpus > 1:
        args += f" --parallel {mode}"
    if ckpt:
        args += " --activation-checkpointing true"
    if offload:
        args += " --cpu-offload true"
    return f"{launcher} {args} --data data/<your dataset>"


def render(plan: Plan) -> str:
    """The plan as the text ``python -m mswelu.plan`` prints."""
    st = plan.state
    lines = [
        f"{plan.preset}: {plan.parameters:,} parameters; {plan.nodes} x {plan.gpus} GPUs of "
        f"{_gib(plan.gpu_memory)}, "
        f"seq_len {plan.seq_len}, {plan.optimizer}",
        "per GPU (exact, fp32 master weights):",
        f"  parameters {_gib(st['params'])}, gradients {_gib(st['grads'])}, "
        f"optimizer state {_gib(st['optimizer'])}"
        + (" (in host memory: CPU offload)" if plan.cpu_offload else ""),
        f"  working memory {_gib(plan.working)} "
        f"({'two blocks gathered' if plan.parallel == 'fsdp' else 'DDP buckets'})",
        "activations per sequence (estimate, bf16 autocast):",
        f"  {_gib(plan.activations_per_sequence)} without, "
        f"{_gib(plan.activations_per_sequence_checkpointed)} with "
        "activation checkpointing",
    ]
    if plan.fits:
        lines += [
            f"plan: {plan.parallel}"
            + (" + activation checkpointing" if plan.activation_checkpointing else "")
            + (" + CPU offload" if plan.cpu_offload else ""),
            f"  micro-batch {plan.micro_batch} sequences per GPU (the largest that fits with a "
            f"{MARGIN:.0%} margin and {_gib(RESERVED)} reserved), gradient accumulation {plan.grad_accum}, "
            f"global batch {plan.global_batch} sequences = {plan.tokens_per_step:,} tokens per step",
            f"  why: {plan.why}",
            "command:",
            f"  {plan.command}",
        ]
    else:
        lines += [f"does not fit: {plan.why}"]
    lines += [f"  ({note})" for note in plan.notes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mswelu.plan", description=plain_text(__doc__.split("\n\n")[0])
    )
    p.add_argument("--preset", help="a preset (mswelu.PRESETS) or a baseline such as gpt2:seed-124m")
    p.add_argument("--gpus", type=positive_int("gpus"), default=1, help="GPUs per node")
    p.add_argument("--nodes", type=positive_int("nodes"), default=1)
    p.add_argument("--gpu-memory", default="24GB", help="memory of one GPU, e.g. 24GB, 80GiB")
    p.add_argument("--seq-len", type=positive_int("seq_len"), help="default: the preset's positions")
    p.add_argument("--parallel", default="auto", type=choice("parallel", PARALLEL), metavar="{auto,ddp,fsdp}")
    p.add_argument("--global-batch-tokens", type=positive_int("global_batch_tokens"), default=524_288)
    p.add_argument(
        "--optimizer", default="adamw", type=choice("optimizer", OPTIMIZERS), metavar="{adamw,muon}"
    )
    p.add_argument("--dtype", default="bf16", type=choice("dtype", ("bf16", "fp32")), metavar="{bf16,fp32}")
    p.add_argument("--measure", action="store_true", help="also measure activations on this CPU (slow)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not args.preset:
        p.error("--preset is required")
    try:
        memory = parse_memory(args.gpu_memory)
        options = (args.parallel, args.global_batch_tokens, args.optimizer, args.dtype == "bf16", args.nodes)
        plan = make_plan(args.preset, args.gpus, memory, args.seq_len, *options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.measure:
        from mswelu.models.configuration import MsweluConfig

        measured = measure_activation_bytes(args.preset, plan.seq_len)
        config = MsweluConfig.for_run(args.preset, 512, plan.seq_len, eos_token_id=None)  # stand-in vocab
        fp32 = activation_bytes(config, plan.seq_len, bf16=False)["total"]
        plan.notes.append(
            f"measured on this CPU (fp32, the CPU path): {_gib(measured)} per sequence; the fp32 estimate "
            f"is {_gib(fp32)}"
        )
    print(json.dumps(asdict(plan), indent=2) if args.json else render(plan))
    return 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
