"""How a model is spread over processes: DDP (a full replica per rank) or FSDP2 (PyTorch's ``fully_shard``:
weights, gradients and optimizer state sharded over ranks, each block gathered only while it runs).

``parallel="ddp"`` is today's data parallelism: every rank holds the whole model, gradients are all-reduced.
``parallel="fsdp"`` shards each block, then the root (embeddings, final norm, dense stack, the tied LM head,
which shares the embedding's parameter and so its shard), as torchtitan does:

- parameters become ``DTensor`` shards (dim 0 over ranks); a block is all-gathered for its forward and its
  backward and freed after (``reshard_after_forward``), so only about one block is whole at a time;
- gradients are reduce-scattered in fp32 (``MixedPrecisionPolicy(reduce_dtype=float32)``); compute follows the
  run's dtype: bf16 autocast over fp32 parameters by default (the numbers of the single-process path), or
  ``fsdp_param_dtype="bf16"`` to gather bf16 copies (half the all-gather traffic and unsharded memory; Mamba's
  A_log and dt bias are then rounded to bf16 in the forward);
- 0-dim parameters (the activations' shape parameters, SWELU's k) cannot be sharded: they stay whole and
  replicated on every rank (``ignored_params``), and :func:`sync_replicated_grads` averages their gradients;
- ``cpu_offload`` keeps the sharded parameters, gradients and optimizer state in host memory (the optimizer
  steps on the CPU), for models whose state does not fit even sharded.

Muon needs whole matrices (its orthogonalisation is not elementwise):
:class:`mswelu.training.optim.GatheredMuon`
gathers each sharded matrix's update, orthogonalises it whole and keeps this rank's rows.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mswelu.base import distributed as du

__all__ = [
    "FSDP_PARAM_DTYPES",
    "PARALLEL",
    "ModelHandles",
    "clip_grad_norm",
    "clip_gradients",
    "full_state_dict",
    "grad_sync",
    "handles",
    "is_fsdp",
    "replicated_parameters",
    "sync_replicated_grads",
    "unsharded",
    "wrap",
]

PARALLEL = ("ddp", "fsdp")
FSDP_PARAM_DTYPES = ("fp32", "bf16")


def is_fsdp(model: nn.Module) -> bool:
    """True when ``model`` has been sharded with ``fully_shard``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def replicated_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters FSDP leaves whole on every rank: the 0-dim ones (activation shape parameters)."""
    return [p for p in model.parameters() if p.ndim == 0]


def wrap(
    model: nn.Module,
    info: du.DistInfo,
    parallel: str = "ddp",
    param_dtype: str = "fp32",
    cpu_offload: bool = False,
) -> nn.Module:
    """``model`` ready for training over ``info``'s ranks: unchanged in one process, in
    ``DistributedDataParallel`` under ``ddp``, sharded in place under ``fsdp`` (the same object is returned:
    ``fully_shard`` changes its class and parameters)."""
    if parallel not in PARALLEL:
        from mswelu.base.errors import unknown_choice

        raise ValueError(unknown_choice("parallel", parallel, PARALLEL))
    if not info.enabled:
        return model
    if parallel == "ddp":
        return du.wrap_ddp(model, info)
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mp = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if param_dtype == "bf16" else None, reduce_dtype=torch.float32
    )
    kwargs: dict[str, Any] = {
        "mp_policy": mp,
        "offload_policy": CPUOffloadPolicy() if cpu_offload else OffloadPolicy(),
        "ignored_params": set(replicated_parameters(model)),
    }
    for block in _blocks(model):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


@dataclass(frozen=True)
class ModelHandles:
    """The run's model under three handles, and the one rule for which is used where:

    ============  ===============================================  ===========================================
    handle        what it is                                       used for
    ============  ===============================================  ===========================================
    ``built``     the module as built (under FSDP: sharded in      the optimizer, gradient sync and clipping,
                  place, so the same object)                       checkpoints, ``final/``, shape values, the
                                                                   parameter count, the config record
    ``compiled``  ``torch.compile(built)`` with ``compile``,       evaluation
                  else ``built``
    ``training``  DDP around ``compiled`` (several processes,      the training forward and backward
                  ``parallel="ddp"``), else ``compiled``
    ============  ===============================================  ===========================================
    """

    built: nn.Module
    compiled: nn.Module
    training: nn.Module


def handles(
    model: nn.Module, info: du.DistInfo, parallel: str, compile: bool, param_dtype: str, cpu_offload: bool
) -> ModelHandles:
    """The :class:`ModelHandles` of a run's freshly built ``model`` (sharded in place under ``fsdp``)."""
    sharding = parallel == "fsdp" and info.enabled
    built = wrap(model, info, "fsdp", param_dtype, cpu_offload) if sharding else model
    compiled = torch.compile(built) if compile else built
    return ModelHandles(built, compiled, compiled if sharding else wrap(compiled, info, "ddp"))


def _blocks(model: nn.Module) -> Iterator[nn.Module]:
    """The units sharded one by one: our blocks (``backbone.blocks``), or a Transformer baseline's layers
    (any ``nn.ModuleList`` of them: GPT-2's ``transformer.h``, GPT-NeoX's ``gpt_neox.layers``)."""
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "blocks"):
        yield from backbone.blocks
        return
    for module in model.modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module)
            and all(sum(p.numel() for p in m.parameters()) > 0 for m in module)
        ):
            yield from module
            return


@contextlib.contextmanager
def grad_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Gradient synchronisation on (the last micro-step of an accumulation) or off (the others): DDP's
    ``no_sync``, FSDP2's ``set_requires_gradient_sync`` (no reduce-scatter per micro-batch; the unsharded
    gradients accumulate until the last)."""
    if enabled:
        if is_fsdp(model):
            model.set_requires_gradient_sync(True)
        yield
    elif is_fsdp(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    elif hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield


def sync_replicated_grads(model: nn.Module, info: du.DistInfo) -> None:
    """Average the gradients of FSDP's replicated parameters over ranks (FSDP reduces only what it shards);
    nothing to do without FSDP."""
    if not info.enabled or not is_fsdp(model):
        return
    grads = [p.grad for p in replicated_parameters(model) if p.grad is not None]
    if not grads:
        return
    flat = torch.stack([g.reshape(()) for g in grads])
    flat = du.all_reduce_mean(flat, info)
    for g, v in zip(grads, flat, strict=True):
        g.copy_(v)


def clip_grad_norm(params: Iterable[nn.Parameter], max_norm: float) -> float:
    """The global gradient norm over every parameter (sharded ``DTensor`` gradients and plain ones alike),
    and the gradients scaled so that it is at most ``max_norm``. One number on every rank."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    sharded = [g for g in grads if isinstance(g, DTensor)]
    plain = [g for g in grads if not isinstance(g, DTensor)]
    squares = 0.0
    if sharded:
        norm = torch.nn.utils.get_total_norm(sharded)
        squares += float(norm.full_tensor() if isinstance(norm, DTensor) else norm) ** 2
    if plain:
        squares += float(torch.nn.utils.get_total_norm(plain)) ** 2
    total = math.sqrt(squares)
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g.mul_(scale)
    return total


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on the CPU, gathered from the shards on rank 0 (None on other ranks;
    collective: every rank calls it). Without FSDP, the model's own state dict."""
    if not is_fsdp(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd or None


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """The global gradient norm of ``model`` (FSDP's sharded and replicated gradients: one norm over all),
    the gradients scaled so that it is at most ``max_norm``."""
    params = [p for p in model.parameters() if p.grad is not None]
    if is_fsdp(model):
        return clip_grad_norm(params, max_norm)
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def unsharded(model: nn.Module, build: Any, is_main: bool) -> nn.Module | None:
    """``model`` itself without FSDP; under FSDP a fresh unsharded copy (``build()`` on the meta device, then
    the gathered weights) on rank 0 and None elsewhere (collective: every rank calls it)."""
    if not is_fsdp(model):
        return model
    state = full_state_dict(model)
    if not is_main:
        return None
    with torch.device("meta"):
        model = build()
    model.load_state_dict(state, assign=True)
    model.tie_weights()
    return model
