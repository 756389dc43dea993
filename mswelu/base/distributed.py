"""torch.distributed plumbing for the trainer: torchrun detection, process-group setup (NCCL on CUDA, else
gloo), small collectives. Every helper is a no-op in a single process, so the trainer has one code path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from mswelu.base.errors import unknown_choice

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's CUDA device if one exists, else CPU; ``cuda`` without a GPU -> ValueError."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(unknown_choice("device", device, ("auto", "cpu", "cuda", "cuda:N")))
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if device == "auto":
            return torch.device("cpu")
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if device.startswith("cuda:"):
        return torch.device(device)
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group when launched by torchrun (idempotent), pick this rank's device."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local)
    if world <= 1:
        return DistInfo(0, 1, 0, dev, None)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s), **kwargs)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dev, backend)


def cleanup() -> None:
    """Leave the process group, after a barrier: tearing gloo down while another rank has FSDP collectives
    in flight aborts the process (torch 2.13, CPU)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over ranks (returns a new tensor; the input is untouched)."""
    if not info.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def any_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on any rank (a stop request, a bad step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj: object, info: DistInfo, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank (validation errors found on rank 0 reach all ranks)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def run_on_main(fn: Callable[[], T], info: DistInfo) -> T:
    """``fn()`` on rank 0, its result (or its ValueError) on every rank."""
    result, error = None, None
    if info.is_main:
        try:
            result = fn()
        except ValueError as exc:
            error = str(exc)
    result, error = broadcast_object((result, error), info)  # type: ignore[misc]
    if error is not None:
        raise ValueError(error)
    return result  # type: ignore[return-value]


def all_gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not info.enabled:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """``model`` in DistributedDataParallel under torchrun, unchanged in a single process."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[info.device] if info.device.type == "cuda" else None)
