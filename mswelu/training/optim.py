"""Optimizers: AdamW with weight decay only where it belongs, and the Muon + AdamW hybrid.

Routing rules (one place, so the report, the tests and the trainer agree), first match wins:

1. Activation shape parameters (SWELU's k and lambda, Swish's beta, as
   :func:`mswelu.modules.activations.shape_parameters` finds them): own group ``shape``, AdamW, no weight
   decay (decay would pull k towards 0, which is what the seed runs did), lr scaled by each parameter's
   ``lr_scale`` setting (the model config's ``shape``; one ``shape`` group per distinct scale).
2. Embeddings (every ``nn.Embedding``, learned positional tables, hence the LM head when it is tied):
   AdamW, no decay.
3. Parameters flagged ``_no_weight_decay`` (Mamba's ``A_log`` and ``D``) and any ``A_log`` / ``D`` by
   name: AdamW, no decay. ``A_log`` is 2-D but is a per-channel decay-rate table, not a linear map, so it
   never goes to Muon.
4. Tensors with fewer than 2 dims (biases, norm weights, ``dt_proj.bias``): AdamW, no decay.
5. ``dt_proj.weight``: AdamW with decay. It is a (d_inner x dt_rank) low-rank factor whose scale is set
   by a special init (uniform +-dt_rank^-0.5) and, with ``dt_proj.bias``, controls the timestep; it is
   not one of the hidden projections that Muon's orthogonalised update is meant for, so it stays on
   AdamW (Muon is for the hidden projections: in_proj, x_proj, out_proj, dense and attention).
6. Other 2-D matrices (in_proj, x_proj, out_proj, dense layers, attention projections, an untied LM
   head under AdamW): decay; under ``muon`` they go to ``torch.optim.Muon`` -- except an untied LM head
   / output embedding, which stays on AdamW as in every Muon recipe.
7. Tensors with more than 2 dims (``conv1d.weight``, depthwise (d_inner, 1, d_conv)): AdamW with decay.
   This follows mamba-ssm practice, whose only no-decay flags are on ``A_log`` and ``D``; the conv
   kernel is an ordinary weight.

Muon runs with ``adjust_lr_fn="match_rms_adamw"`` so that it reuses the AdamW lr and weight decay
(with ``torch.optim.Muon``'s default scaling, an AdamW-sized lr is about 20x too small for it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mswelu.base.errors import check_choice
from mswelu.modules.activations import shape_parameters

OPTIMIZERS = ("adamw", "muon")
_POS_EMBED_HINTS = ("pos_emb", "wpe", "position_embedding", "pos_embedding", "embed_positions")


@dataclass(frozen=True)
class ParamRoute:
    """Where one parameter goes: ``optimizer`` in {adamw, muon}, ``group`` in {decay, no_decay, shape,
    muon}, why, and its lr as a multiple of the run's (an activation shape parameter's ``lr_scale``)."""

    name: str
    param: nn.Parameter
    optimizer: str
    group: str
    reason: str
    lr_scale: float = 1.0


def _embedding_ids(model: nn.Module) -> tuple[set[int], set[int]]:
    """(ids of input/positional embedding tables, ids of an untied output embedding)."""
    emb: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            emb.add(id(module.weight))
    for name, p in model.named_parameters():
        if any(h in name for h in _POS_EMBED_HINTS):
            emb.add(id(p))
    out: set[int] = set()
    get_out = getattr(model, "get_output_embeddings", None)
    if callable(get_out):
        head = get_out()
        if head is not None and getattr(head, "weight", None) is not None and id(head.weight) not in emb:
            out.add(id(head.weight))
    return emb, out


def route_parameters(model: nn.Module, optimizer_name: str = "adamw") -> list[ParamRoute]:
    """Apply the routing rules (module docstring) to every trainable parameter, in registration order.
    Tied parameters appear once (``named_parameters`` deduplicates)."""
    check_choice("optimizer", optimizer_name, OPTIMIZERS)
    muon = optimizer_name == "muon"
    emb_ids, out_ids = _embedding_ids(model)
    shape_scales = {id(p): scale for _, p, scale in shape_parameters(model)}
    routes = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if id(p) in shape_scales:
            routes.append(
                ParamRoute(
                    name, p, "adamw", "shape", "activation shape parameter: no decay", shape_scales[id(p)]
                )
            )
            continue
        if id(p) in emb_ids:
            r = ("adamw", "no_decay", "embedding table (tied LM head included)")
        elif getattr(p, "_no_weight_decay", False) or leaf in ("A_log", "D"):
            r = ("adamw", "no_decay", "flagged _no_weight_decay (A_log / D)")
        elif p.ndim < 2:
            r = ("adamw", "no_decay", "bias / norm / vector")
        elif name.endswith("dt_proj.weight"):
            r = ("adamw", "decay", "dt_proj.weight: timestep factor, kept on AdamW")
        elif p.ndim == 2 and id(p) in out_ids:
            r = ("adamw", "decay", "untied LM head: AdamW")
        elif p.ndim == 2:
            r = ("muon", "muon", "hidden matrix: Muon") if muon else ("adamw", "decay", "hidden matrix")
        else:
            r = ("adamw", "decay", f"{p.ndim}-D weight (conv kernel): AdamW with decay as in mamba-ssm")
        routes.append(ParamRoute(name, p, *r))
    return routes


class HybridOptimizer:
    """Several optimizers stepped as one (Muon for hidden matrices + AdamW for the rest).

    Exposes the small surface the trainer and the schedule use: ``param_groups`` (concatenated, each group
    keeps a ``name``), ``step``, ``zero_grad``, ``state_dict`` / ``load_state_dict``.
    """

    def __init__(
        self, optimizers: Iterable[torch.optim.Optimizer], lr_scales: dict[int, float] | None = None
    ) -> None:
        self.optimizers = list(optimizers)
        self.lr_scales = dict(lr_scales or {})  # id(parameter) -> its lr scale, where not 1

    def lr_scale(self, group: dict[str, Any]) -> float:
        """The lr scale of a group's parameters (one per group, 1 outside the ``shape`` groups): read off the
        parameters, so it holds after a checkpoint's groups are loaded."""
        return self.lr_scales.get(id(group["params"][0]), 1.0) if group["params"] else 1.0

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        if closure is not None:
            raise ValueError("HybridOptimizer.step does not take a closure")
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "kinds": [type(opt).__name__ for opt in self.optimizers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kinds = [type(opt).__name__ for opt in self.optimizers]
        if state.get("kinds") != kinds or len(state["optimizers"]) != len(self.optimizers):
            raise ValueError(f"optimizer state holds {state.get('kinds')}, this run uses {kinds}")
        for opt, s in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(s)

    def __repr__(self) -> str:
        return "HybridOptimizer(\n" + "\n".join(f"  {opt!r}" for opt in self.optimizers) + "\n)"


class GatheredMuon(torch.optim.Muon):
    """``torch.optim.Muon`` for FSDP-sharded matrices: the same update, with the orthogonalisation on the
    whole matrix.

    Muon's momentum, Nesterov blend, weight decay and step are elementwise, so they run on this rank's shard
    as they are. Newton-Schulz is not: run on a shard it would orthogonalise a block of rows, a different
    update (measured: ~1e-3 off one-process training after one step). So each update is all-gathered,
    orthogonalised whole (every rank computes the same result) and this rank keeps its rows. Plain
    (unsharded) parameters take torch's own path.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        from torch.distributed.tensor import DTensor, distribute_tensor
        from torch.optim._muon import _adjust_lr, _zeropower_via_newtonschulz

        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, momentum = float(group["lr"]), group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                whole = update.full_tensor() if isinstance(update, DTensor) else update
                ortho = _zeropower_via_newtonschulz(
                    whole, group["ns_coefficients"], group["ns_steps"], group["eps"]
                )
                if isinstance(p, DTensor):  # this rank's rows of the whole result (no communication)
                    ortho = distribute_tensor(ortho, p.device_mesh, p.placements, src_data_rank=None)
                p.mul_(1 - lr * wd)
                p.add_(ortho, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


def build_optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 6e-4,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    muon_momentum: float = 0.95,
    fused: bool | None = None,
) -> HybridOptimizer:
    """The optimizer for ``model``: ``adamw`` (one AdamW: decay, no_decay and one ``shape`` group per lr
    scale) or ``muon`` (Muon on hidden matrices + AdamW on the rest). Always returned as a
    :class:`HybridOptimizer` so that checkpoints and the trainer handle both the same way. Every group
    carries ``name`` and ``base_lr``."""
    check_choice("optimizer", name, OPTIMIZERS)
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    routes = route_parameters(model, name)
    by_group: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "muon": []}
    shape: dict[float, list[nn.Parameter]] = {}
    for r in routes:
        (shape.setdefault(r.lr_scale, []) if r.group == "shape" else by_group[r.group]).append(r.param)
    groups = [
        {"params": by_group["decay"], "weight_decay": weight_decay, "name": "decay", "base_lr": lr, "lr": lr},
        {"params": by_group["no_decay"], "weight_decay": 0.0, "name": "no_decay", "base_lr": lr, "lr": lr},
    ]
    for scale, params in shape.items():
        label = "shape" if len(shape) == 1 else f"shape x{scale:g}"
        groups.append(
            {"params": params, "weight_decay": 0.0, "name": label, "base_lr": lr * scale, "lr": lr * scale}
        )
    groups = [g for g in groups if g["params"]]
    if fused is None:
        # torch's fused AdamW (one kernel for every tensor: ~8x the per-tensor loop on a CPU) where every
        # parameter is on one kind of device it supports
        kinds = {p.device.type for g in groups for p in g["params"]}
        fused = len(kinds) == 1 and kinds <= {"cpu", "cuda"}
    opts: list[torch.optim.Optimizer] = []
    if by_group["muon"]:
        sharded = any(type(p).__name__ == "DTensor" for p in by_group["muon"])
        opts.append(
            (GatheredMuon if sharded else torch.optim.Muon)(
                [{"params": by_group["muon"], "name": "muon", "base_lr": lr, "lr": lr}],
                lr=lr,
                weight_decay=weight_decay,
                momentum=muon_momentum,
                nesterov=True,
                adjust_lr_fn="match_rms_adamw",
            )
        )
    if groups:
        opts.append(torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None))
    if not opts:
        raise ValueError("the model has no trainable parameters")
    scales = {id(r.param): r.lr_scale for r in routes if r.lr_scale != 1.0}
    return HybridOptimizer(opts, scales)


def set_hyperparameters(optimizer: HybridOptimizer, lr: float, weight_decay: float) -> None:
    """Set every group's ``base_lr`` and weight decay as :func:`build_optimizer` would for these values
    (a resumed run takes the current config's, not the checkpoint's)."""
    for group in optimizer.param_groups:
        group["base_lr"] = lr * optimizer.lr_scale(group)
        if group.get("name") in ("decay", "muon"):
            group["weight_decay"] = weight_decay
